//! Growable arrays backed by anonymous memory mappings.
//!
//! The profile table lives in a few large arrays per shard. Two properties matter for them and
//! are why they do not use `Vec`:
//!
//! - **Transparent huge pages.** Random lookups over gigabytes are dominated by TLB misses with
//!   4 KiB pages. The machines segmart targets run THP in `madvise` mode, so every mapping is
//!   marked `MADV_HUGEPAGE` (except [`MmapVec::zeroed_small_pages`], for tables filled a few
//!   slots at a time, where one huge-page fault would clear 2 MiB at once).
//! - **Growth in place, in small steps.** A growable array reserves address space up front
//!   (`PROT_NONE`, 2 MiB-aligned, no memory committed) and grows by `mprotect`-ing the next
//!   few percent of it: no copy, no slack beyond one step, and the address stays aligned so
//!   huge pages keep working. Each 2 MiB range completed by growth is collapsed into a huge
//!   page (`MADV_COLLAPSE`), since its first pages were touched while it was still partial.
//!   An exhausted reservation moves (`mremap`, page tables only) into a larger aligned one.
//!
//! - **Small fixed arrays stay on the heap.** Below one huge page ([`HEAP_BELOW`]) a mapping
//!   buys nothing (no huge page can back it) and costs system calls: five to create one, a
//!   page fault per 4 KiB touched, and an `munmap` whose TLB shootdown interrupts the other
//!   core. A new store's shards start small and replace their slot arrays as they grow, so it
//!   created and dropped dozens of such arrays per batch. A fixed-size array
//!   ([`MmapVec::zeroed`]) smaller than that is a zeroed, page-aligned heap block instead; if
//!   it is ever grown, it moves into a mapping. Growable arrays (arenas) always map: they
//!   grow in place, where a heap block would be copied.
//!
//! The reported size ([`MmapVec::mapped_bytes`]) is the writable part, what the kernel may
//! commit; reserved address space costs nothing. Fresh mappings are zero-filled by the
//! kernel and heap blocks are allocated zeroed; the table relies on that (an all-zero slot is
//! an empty slot), so a new table costs no initialisation pass beyond the allocator's.

use std::marker::PhantomData;
use std::ptr::NonNull;

const PAGE: usize = 4096;
/// Transparent huge page size on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;
/// Address space reserved for a growable array when it is first used.
const INITIAL_RESERVATION: usize = 64 << 20;
/// Arrays of fewer bytes than this live in heap blocks rather than their own mappings.
const HEAP_BELOW: usize = HUGE_PAGE;
/// `MADV_COLLAPSE` (Linux 6.1), not yet exported by the libc crate.
const MADV_COLLAPSE: libc::c_int = 25;

/// A `Vec`-like array of plain-old-data values in its own anonymous mapping.
pub(crate) struct MmapVec<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// Writable capacity in elements.
    cap: usize,
    /// Bytes of address space reserved at `ptr` (writable part included); for a heap block,
    /// its size.
    reserved: usize,
    /// `ptr` is a heap block of `reserved` bytes aligned to [`PAGE`], not a mapping.
    heap: bool,
    _owns: PhantomData<T>,
}

// SAFETY: the mapping is owned exclusively by this value, like a `Vec`'s heap block.
unsafe impl<T: Copy + Send> Send for MmapVec<T> {}
// SAFETY: shared access only hands out shared references.
unsafe impl<T: Copy + Sync> Sync for MmapVec<T> {}

fn round_up(bytes: usize, to: usize) -> usize {
    bytes.div_ceil(to) * to
}

fn bytes_for<T>(elements: usize) -> usize {
    let bytes = elements
        .checked_mul(size_of::<T>())
        .expect("mapping size overflows usize");
    round_up(bytes, PAGE)
}

impl<T: Copy> MmapVec<T> {
    /// An empty array that owns no mapping yet.
    pub(crate) fn new() -> Self {
        assert!(size_of::<T>() > 0 && align_of::<T>() <= PAGE);
        MmapVec {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            reserved: 0,
            heap: false,
            _owns: PhantomData,
        }
    }

    /// An array of `len` zero-filled elements (all-zero must be a valid `T`) that will not
    /// grow: it reserves no spare address space.
    pub(crate) fn zeroed(len: usize) -> Self {
        let mut vec = Self::new();
        if len > 0 {
            let bytes = bytes_for::<T>(len);
            if bytes < HEAP_BELOW {
                vec.alloc_heap(bytes);
            } else {
                vec.ptr = NonNull::new(reserve_region(bytes).cast()).expect("mapping is not null");
                vec.reserved = bytes;
                vec.commit(bytes);
            }
        }
        vec.len = len;
        vec
    }

    /// Like [`Self::zeroed`], but in 4 KiB pages: for a table whose first touches are spread
    /// out on purpose (an incremental migration), where faulting a huge page would clear
    /// 2 MiB at once.
    pub(crate) fn zeroed_small_pages(len: usize) -> Self {
        let vec = Self::zeroed(len);
        if vec.reserved > 0 && !vec.heap {
            // SAFETY: advice on this value's own mapping; failure only costs speed.
            unsafe { libc::madvise(vec.ptr.as_ptr().cast(), vec.reserved, libc::MADV_NOHUGEPAGE) };
        }
        vec
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes that are writable (what the kernel may commit), reported as the store's memory.
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.cap * size_of::<T>()
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` is valid for `len` initialised elements (mapped memory is zero-filled
        // and callers only create arrays of types for which zero is valid).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and `&mut self` guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Makes room for at least `additional` more elements, growing by about 1/32 at a time.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let needed = self.len.checked_add(additional).expect("capacity overflow");
        if needed <= self.cap {
            return;
        }
        let step = (self.mapped_bytes() / 32).max(16 << 10) / size_of::<T>();
        self.reserve_exact(needed.max(self.cap + step) - self.len);
    }

    /// Makes room for exactly `additional` more elements (rounded up to whole pages).
    pub(crate) fn reserve_exact(&mut self, additional: usize) {
        let needed = self.len.checked_add(additional).expect("capacity overflow");
        if needed <= self.cap {
            return;
        }
        let bytes = bytes_for::<T>(needed);
        if self.heap {
            self.heap_to_mapping(bytes);
            return;
        }
        if self.reserved == 0 {
            let reserved = bytes.max(INITIAL_RESERVATION);
            self.ptr = NonNull::new(reserve_region(reserved).cast()).expect("mapping is not null");
            self.reserved = reserved;
        } else if bytes > self.reserved {
            self.move_to_reservation(bytes.max(self.reserved * 4));
        }
        self.commit(bytes);
    }

    fn heap_layout(bytes: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(bytes, PAGE).expect("heap block layout")
    }

    /// Makes this empty array a zeroed heap block of `bytes`.
    fn alloc_heap(&mut self, bytes: usize) {
        debug_assert!(self.reserved == 0 && bytes > 0);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::heap_layout(bytes)) };
        let Some(ptr) = NonNull::new(ptr.cast::<T>()) else {
            std::alloc::handle_alloc_error(Self::heap_layout(bytes))
        };
        self.ptr = ptr;
        self.reserved = bytes;
        self.heap = true;
        self.cap = bytes / size_of::<T>();
    }

    /// Moves a heap block's contents into a fresh mapping with `bytes` writable.
    fn heap_to_mapping(&mut self, bytes: usize) {
        let reserved = bytes.max(INITIAL_RESERVATION);
        let base = reserve_region(reserved);
        let (old, old_bytes) = (self.ptr, self.reserved);
        self.ptr = NonNull::new(base.cast()).expect("mapping is not null");
        self.reserved = reserved;
        self.heap = false;
        self.cap = 0;
        self.commit(bytes);
        // SAFETY: the block holds `old_bytes` initialised bytes, the new mapping has at least
        // that many writable, and the two do not overlap; the block is then freed with the
        // layout it was allocated with.
        unsafe {
            std::ptr::copy_nonoverlapping(
                old.as_ptr().cast::<u8>(),
                self.ptr.as_ptr().cast::<u8>(),
                old_bytes,
            );
            std::alloc::dealloc(old.as_ptr().cast(), Self::heap_layout(old_bytes));
        }
    }

    /// Makes the first `bytes` of the reservation writable and collapses completed 2 MiB
    /// ranges into huge pages.
    fn commit(&mut self, bytes: usize) {
        let old = self.mapped_bytes();
        debug_assert!(bytes > old && bytes <= self.reserved);
        let base = self.ptr.as_ptr().cast::<u8>();
        // SAFETY: the range lies inside this value's reservation.
        let status = unsafe {
            libc::mprotect(
                base.add(old).cast(),
                bytes - old,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if status != 0 {
            panic!(
                "out of memory: cannot commit {bytes} bytes: {}",
                std::io::Error::last_os_error()
            );
        }
        let first_partial = old / HUGE_PAGE * HUGE_PAGE;
        let complete_end = bytes / HUGE_PAGE * HUGE_PAGE;
        if old > first_partial && complete_end > first_partial {
            // The range holding the old end was faulted in small pages; ask for a huge one.
            // Failure (old kernels, no free huge page) only costs speed.
            // SAFETY: the range is writable memory of this mapping.
            unsafe { libc::madvise(base.add(first_partial).cast(), HUGE_PAGE, MADV_COLLAPSE) };
        }
        self.cap = bytes / size_of::<T>();
    }

    /// Moves the writable part into a fresh aligned reservation of `reserved` bytes.
    fn move_to_reservation(&mut self, reserved: usize) {
        let new_base = reserve_region(reserved);
        let old_base = self.ptr.as_ptr().cast::<libc::c_void>();
        let writable = self.mapped_bytes();
        if writable > 0 {
            // SAFETY: moves this value's writable pages onto the start of the new reservation
            // (which MREMAP_FIXED replaces); both ranges are owned here.
            let moved = unsafe {
                libc::mremap(
                    old_base,
                    writable,
                    writable,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    new_base,
                )
            };
            if moved == libc::MAP_FAILED {
                panic!(
                    "out of memory: cannot move a mapping: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        // SAFETY: the rest of the old reservation is still mapped and owned here.
        unsafe {
            libc::munmap(
                old_base.cast::<u8>().add(writable).cast(),
                self.reserved - writable,
            )
        };
        self.ptr = NonNull::new(new_base.cast()).expect("mapping is not null");
        self.reserved = reserved;
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.len == self.cap {
            self.reserve(1);
        }
        // SAFETY: `len < cap` after the reserve, so the slot is inside the mapping.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
    }

    pub(crate) fn extend_from_slice(&mut self, values: &[T]) {
        self.reserve(values.len());
        // SAFETY: the reserve made room for `values.len()` elements after `len`; the source is
        // a distinct borrow so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                values.len(),
            )
        };
        self.len += values.len();
    }

    /// Sets the length to `len`, which must be within capacity. Elements past the old length
    /// keep whatever the mapping holds (zero for never-written memory).
    pub(crate) fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "length {len} beyond capacity {}", self.cap);
        self.len = len;
    }
}

impl<T: Copy> Drop for MmapVec<T> {
    fn drop(&mut self) {
        if self.heap {
            // SAFETY: the block was allocated with the layout of its `reserved` size.
            unsafe {
                std::alloc::dealloc(self.ptr.as_ptr().cast(), Self::heap_layout(self.reserved))
            };
        } else if self.reserved > 0 {
            // SAFETY: the reservation was created by `reserve_region` with this size and is
            // owned by this value.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.reserved) };
        }
    }
}

/// Reserves `bytes` of address space aligned to 2 MiB, inaccessible and uncommitted, marked
/// for transparent huge pages.
fn reserve_region(bytes: usize) -> *mut libc::c_void {
    let padded = bytes + HUGE_PAGE;
    // SAFETY: an anonymous private mapping has no preconditions beyond valid flags.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            padded,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        panic!(
            "out of address space: cannot reserve {bytes} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
    let start = ptr as usize;
    let aligned = round_up(start, HUGE_PAGE);
    // SAFETY: trims the unaligned head and the tail of the mapping just created.
    unsafe {
        if aligned > start {
            libc::munmap(ptr, aligned - start);
        }
        let tail = start + padded - (aligned + bytes);
        if tail > 0 {
            libc::munmap((aligned + bytes) as *mut libc::c_void, tail);
        }
        // The flag stays with the range through mprotect and mremap. Failure only costs speed
        // (kernels without THP), so it is ignored.
        libc::madvise(aligned as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
    }
    aligned as *mut libc::c_void
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether each value equals its index.
    fn counts_up<T: Copy + Into<u64>>(values: &[T]) -> bool {
        values
            .iter()
            .enumerate()
            .all(|(i, &value)| value.into() == i as u64)
    }

    #[test]
    fn grows_and_keeps_contents() {
        let mut words = MmapVec::<u32>::new();
        for i in 0..100_000u32 {
            words.push(i);
        }
        assert_eq!(words.len(), 100_000);
        assert!(counts_up(words.as_slice()));
        words.extend_from_slice(&[7, 8, 9]);
        assert_eq!(&words.as_slice()[100_000..], &[7, 8, 9]);
        assert!(words.mapped_bytes() >= 100_003 * 4);
    }

    #[test]
    fn outgrows_its_reservation_and_keeps_contents() {
        let mut words = MmapVec::<u64>::new();
        let count = INITIAL_RESERVATION / 8 + 1_000;
        for i in 0..count as u64 {
            words.push(i);
        }
        assert!(counts_up(words.as_slice()));
        assert!(words.mapped_bytes() < count * 8 * 11 / 10);
    }

    #[test]
    fn small_fixed_arrays_live_on_the_heap_and_move_into_a_mapping_when_grown() {
        let mut words = MmapVec::<u32>::zeroed(1000);
        assert!(words.heap);
        assert!(words.as_slice().iter().all(|&w| w == 0));
        for (i, word) in words.as_mut_slice().iter_mut().enumerate() {
            *word = i as u32;
        }
        words.push(1000);
        words.reserve_exact(10_000);
        assert!(!words.heap, "a grown array is a mapping");
        assert!(counts_up(words.as_slice()));
        words.set_len(11_001);
        assert!(words.as_slice()[1001..].iter().all(|&w| w == 0));
        assert!(!MmapVec::<u64>::zeroed(HEAP_BELOW / 8).heap);
        let mut growable = MmapVec::<u32>::new();
        growable.push(1);
        assert!(!growable.heap, "growable arrays map from the start");
    }

    #[test]
    fn zeroed_is_zero() {
        let zeros = MmapVec::<u64>::zeroed(10_000);
        assert!(zeros.as_slice().iter().all(|&w| w == 0));
    }
}
