//! A fixed-capacity vector in its own anonymous mapping, optionally advised to use
//! transparent huge pages (`MADV_HUGEPAGE`; effective when THP is in `madvise` mode).
//!
//! Capacity is reserved up front with `MAP_NORESERVE`: pages cost memory only once touched,
//! and pushing never moves the data.

use std::marker::PhantomData;
use std::ptr::NonNull;

const HUGE_PAGE: usize = 2 << 20;

/// Types whose all-zero bit pattern is a valid value (fresh mappings are zero-filled).
///
/// # Safety
/// Implementors must be plain data with no padding and valid when zeroed.
pub unsafe trait Zeroable: Copy {}
// SAFETY: plain integers.
unsafe impl Zeroable for u32 {}

pub struct MmapVec<T: Zeroable> {
    base: NonNull<u8>,
    map_len: usize,
    data: NonNull<T>,
    cap: usize,
    len: usize,
    _owns: PhantomData<T>,
}

impl<T: Zeroable> MmapVec<T> {
    /// An empty vector that can grow to `cap` elements.
    pub fn with_capacity(cap: usize, huge_pages: bool) -> Self {
        let bytes = (cap.max(1) * size_of::<T>()).next_multiple_of(HUGE_PAGE);
        // Over-map by one huge page so the data can start on a 2 MiB boundary.
        let map_len = bytes + HUGE_PAGE;
        // SAFETY: anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(base != libc::MAP_FAILED, "mmap of {map_len} bytes failed");
        let aligned = (base as usize).next_multiple_of(HUGE_PAGE);
        if huge_pages {
            // SAFETY: the range lies inside the mapping made above.
            let rc =
                unsafe { libc::madvise(aligned as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
            assert_eq!(rc, 0, "madvise(MADV_HUGEPAGE) failed");
        }
        MmapVec {
            base: NonNull::new(base.cast()).expect("mmap returned null"),
            map_len,
            data: NonNull::new(aligned as *mut T).expect("aligned pointer is not null"),
            cap,
            len: 0,
            _owns: PhantomData,
        }
    }

    /// A vector of `len` zeroed elements.
    pub fn zeroed(len: usize, huge_pages: bool) -> Self {
        let mut v = Self::with_capacity(len, huge_pages);
        v.len = len;
        v
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn extend_from_slice(&mut self, items: &[T]) {
        assert!(
            self.len + items.len() <= self.cap,
            "MmapVec capacity {} exceeded",
            self.cap
        );
        // SAFETY: bounds checked above; source and destination cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                items.as_ptr(),
                self.data.as_ptr().add(self.len),
                items.len(),
            );
        }
        self.len += items.len();
    }

    /// Appends `n` zeroed elements. Memory past `len` was never written (there is no
    /// truncation), so it is still zero.
    pub fn extend_zeroed(&mut self, n: usize) {
        assert!(
            self.len + n <= self.cap,
            "MmapVec capacity {} exceeded",
            self.cap
        );
        self.len += n;
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised (zeroed or written).
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and `&mut self` guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Zeroable` types are plain data without padding.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast(), self.len * size_of::<T>()) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; any byte pattern written is read back as the same plain data.
        unsafe {
            std::slice::from_raw_parts_mut(self.data.as_ptr().cast(), self.len * size_of::<T>())
        }
    }
}

impl<T: Zeroable> Drop for MmapVec<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `with_capacity`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}
