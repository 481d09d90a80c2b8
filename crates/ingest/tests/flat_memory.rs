//! Memory does not grow with the file, and a parsed line allocates nothing.
//!
//! This test binary counts every heap allocation, so it holds a single test: nothing else may
//! allocate while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};

use segmart_ingest::testdata::write_realistic_file;
use segmart_ingest::{BatchItem, BatchReader, LineSource};

/// The system allocator, counting allocations and the peak of live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let grown = new_size - layout.size();
            let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Debug)]
struct Usage {
    /// Peak of live heap bytes above what was live before reading.
    peak_bytes: usize,
    allocations: usize,
    lines: u64,
}

fn measure<S: LineSource>(open: impl FnOnce() -> BatchReader<S>) -> Usage {
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut reader = open();
    let mut segments = 0usize;
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            BatchItem::Parsed { line, .. } => {
                segments += line.add().iter().count() + line.remove().iter().count();
                segments += line.resolve_user(|_| None).as_str().len();
            }
            BatchItem::Rejected(rejection) => panic!("{rejection}"),
        }
    }
    assert!(segments > 0);
    let lines = reader.counts().lines_read;
    drop(reader);
    Usage {
        peak_bytes: PEAK.load(Ordering::Relaxed) - baseline,
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations_before,
        lines,
    }
}

#[test]
fn memory_is_flat_and_lines_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.txt.gz");
    let large = dir.path().join("large.txt.gz");
    write_realistic_file(&small, 20_000, 1).unwrap();
    write_realistic_file(&large, 200_000, 2).unwrap();

    let small_serial = measure(|| BatchReader::new(File::open(&small).unwrap()));
    let large_serial = measure(|| BatchReader::new(File::open(&large).unwrap()));
    assert_eq!(large_serial.lines, 200_001);
    // The same fixed set of buffers, whatever the size: 10× the lines, not one more allocation.
    assert_eq!(
        large_serial.allocations, small_serial.allocations,
        "{small_serial:?} {large_serial:?}"
    );
    assert!(large_serial.allocations < 40, "{large_serial:?}");
    assert!(
        large_serial.peak_bytes < 2 * 1024 * 1024,
        "{large_serial:?}"
    );

    eprintln!("serial: {small_serial:?} {large_serial:?}");
    let small_parallel = measure(|| BatchReader::spawn(File::open(&small).unwrap()).unwrap());
    let large_parallel = measure(|| BatchReader::spawn(File::open(&large).unwrap()).unwrap());
    eprintln!("parallel: {small_parallel:?} {large_parallel:?}");
    // Chunks are recycled: a bounded number of them whatever the size.
    assert!(large_parallel.allocations < 200, "{large_parallel:?}");
    assert!(
        large_parallel.peak_bytes < 6 * 1024 * 1024,
        "{small_parallel:?} {large_parallel:?}"
    );
}
