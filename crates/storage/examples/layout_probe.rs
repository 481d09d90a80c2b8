//! Lookup latency and memory of slot layouts for the embedded profile table, built from
//! the same synthetic profiles (1–12 links each, mean 6.5) with random 128-bit keys:
//!
//! - `slot24`: the table as built — ordered linear probing over 24-byte slots (key, arena
//!   offset, update time) plus an arena of `[len][segment, expiry]*` blocks. A hit costs two
//!   dependent cache misses (slot, then block).
//! - `line64`: one 64-byte, cache-line-aligned slot per profile — key, update time, overflow
//!   offset and the first 5 links inline — with the rest of a profile's links in an arena. A
//!   hit on a profile of up to 5 links costs one miss plus the run's next lines (prefetched
//!   together with it).
//!
//! - `paged`: key-ordered pages of 256–1024 bytes holding variable-length records (24-byte
//!   header, links inline), a record in its home page or a later one when that is full; a
//!   lookup prefetches its home page and the next. One miss when the record is in them.
//!
//! - `directory + buckets`: no slot array; a directory of 8-byte entries (offset, length), one
//!   per bucket of 2–8 profiles on average, over one arena in which each bucket's records lie
//!   together in key order. No fill slack; a hit reads the directory, then the bucket.
//!
//! `cargo run --release -p segmart-storage --example layout_probe -- [profiles] [load %]`
//!
//! A throwaway measurement to choose a layout, not a model of the store: no shards, no locks,
//! a table filled once at the given load.

use std::time::Instant;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Zeroed anonymous memory marked for transparent huge pages.
fn huge_zeroed<T: Copy>(len: usize) -> &'static mut [T] {
    let bytes = (len * size_of::<T>()).max(1).div_ceil(2 << 20) * (2 << 20);
    // SAFETY: a fresh private anonymous mapping, zero-filled, leaked for the program's life;
    // callers only use types for which all-zero bytes are valid.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED);
        libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE);
        std::slice::from_raw_parts_mut(ptr.cast(), len)
    }
}

fn home(key_hi: u64, capacity: usize) -> usize {
    ((key_hi as u128 * capacity as u128) >> 64) as usize
}

#[inline(always)]
fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast())
    };
}

struct Profile {
    key: [u64; 2],
    links: Vec<[u32; 2]>,
}

fn profiles(count: usize) -> Vec<Profile> {
    let mut all: Vec<Profile> = (0..count as u64)
        .map(|index| {
            let mut state = splitmix(index ^ 0x1234);
            let mut next = || {
                state = splitmix(state);
                state
            };
            let key = [next(), next() | 1];
            let len = 1 + next() % 12;
            let mut links: Vec<[u32; 2]> = (0..len)
                .map(|_| {
                    [
                        (next() % 20_000) as u32,
                        1_800_000_000 + (7 + next() % 54) as u32 * 86_400,
                    ]
                })
                .collect();
            links.sort_unstable();
            links.dedup_by_key(|link| link[0]);
            Profile { key, links }
        })
        .collect();
    all.sort_unstable_by_key(|p| p.key);
    all
}

trait Layout {
    fn name(&self) -> &'static str;
    fn bytes(&self) -> usize;
    /// Appends the profile's links to `out`; false when absent.
    fn lookup(&self, key: [u64; 2], out: &mut Vec<[u32; 2]>) -> bool;
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot24 {
    key: [u64; 2],
    block: u32,
    updated: u32,
}

struct Table24 {
    slots: &'static [Slot24],
    capacity: usize,
    arena: Vec<u32>,
}

impl Table24 {
    fn build(profiles: &[Profile], load_pct: usize) -> Table24 {
        let capacity = profiles.len() * 100 / load_pct;
        let slots = huge_zeroed::<Slot24>(capacity + 1024);
        let mut arena = vec![0u32];
        let mut next = 0;
        for profile in profiles {
            let pos = home(profile.key[0], capacity).max(next);
            let block = arena.len() as u32;
            arena.push(profile.links.len() as u32);
            arena.extend(profile.links.iter().flatten());
            slots[pos] = Slot24 {
                key: profile.key,
                block,
                updated: 1,
            };
            next = pos + 1;
        }
        Table24 {
            slots,
            capacity,
            arena,
        }
    }
}

impl Layout for Table24 {
    fn name(&self) -> &'static str {
        "slot24 + arena (as built)"
    }
    fn bytes(&self) -> usize {
        self.slots.len() * 24 + self.arena.len() * 4
    }
    #[inline]
    fn lookup(&self, key: [u64; 2], out: &mut Vec<[u32; 2]>) -> bool {
        let mut pos = home(key[0], self.capacity);
        prefetch(
            (&self.slots[pos] as *const Slot24)
                .cast::<u8>()
                .wrapping_add(64),
        );
        loop {
            let slot = &self.slots[pos];
            if slot.block == 0 || slot.key > key {
                return false;
            }
            if slot.key == key {
                let start = slot.block as usize;
                prefetch(
                    (&self.arena[start] as *const u32)
                        .cast::<u8>()
                        .wrapping_add(64),
                );
                let len = self.arena[start] as usize;
                for pair in self.arena[start + 1..start + 1 + 2 * len].chunks_exact(2) {
                    out.push([pair[0], pair[1]]);
                }
                return true;
            }
            pos += 1;
        }
    }
}

const INLINE: usize = 5;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line64 {
    key: [u64; 2],
    updated: u32,
    /// Arena offset of the links beyond the inline ones (0: none).
    overflow: u32,
    /// Expiry 0 marks an unused entry.
    inline: [[u32; 2]; INLINE],
}

struct Table64 {
    slots: &'static [Line64],
    capacity: usize,
    arena: Vec<u32>,
    lines_ahead: usize,
}

impl Table64 {
    fn build(profiles: &[Profile], load_pct: usize, lines_ahead: usize) -> Table64 {
        let capacity = profiles.len() * 100 / load_pct;
        let slots = huge_zeroed::<Line64>(capacity + 1024);
        let mut arena = vec![0u32];
        let mut next = 0;
        for profile in profiles {
            let pos = home(profile.key[0], capacity).max(next);
            let mut line = Line64 {
                key: profile.key,
                updated: 1,
                overflow: 0,
                inline: [[0; 2]; INLINE],
            };
            let (head, tail) = profile.links.split_at(profile.links.len().min(INLINE));
            line.inline[..head.len()].copy_from_slice(head);
            if !tail.is_empty() {
                line.overflow = arena.len() as u32;
                arena.push(tail.len() as u32);
                arena.extend(tail.iter().flatten());
            }
            slots[pos] = line;
            next = pos + 1;
        }
        Table64 {
            slots,
            capacity,
            arena,
            lines_ahead,
        }
    }
}

impl Layout for Table64 {
    fn name(&self) -> &'static str {
        "line64, 5 links inline + arena"
    }
    fn bytes(&self) -> usize {
        self.slots.len() * 64 + self.arena.len() * 4
    }
    #[inline]
    fn lookup(&self, key: [u64; 2], out: &mut Vec<[u32; 2]>) -> bool {
        let mut pos = home(key[0], self.capacity);
        let base = (&self.slots[pos] as *const Line64).cast::<u8>();
        for line in 1..=self.lines_ahead {
            prefetch(base.wrapping_add(64 * line));
        }
        loop {
            let slot = &self.slots[pos];
            if slot.updated == 0 || slot.key > key {
                return false;
            }
            if slot.key == key {
                for link in &slot.inline {
                    if link[1] != 0 {
                        out.push(*link);
                    }
                }
                if slot.overflow != 0 {
                    let start = slot.overflow as usize;
                    let len = self.arena[start] as usize;
                    for pair in self.arena[start + 1..start + 1 + 2 * len].chunks_exact(2) {
                        out.push([pair[0], pair[1]]);
                    }
                }
                return true;
            }
            pos += 1;
        }
    }
}

/// Writes a variable-length record `[key: 4 words][updated][count][segment, expiry]*` at the
/// start of `words`; returns its length in words.
fn write_record(words: &mut [u32], profile: &Profile) -> usize {
    let [high, low] = profile.key;
    let header = [
        high as u32,
        (high >> 32) as u32,
        low as u32,
        (low >> 32) as u32,
        1,
        profile.links.len() as u32,
    ];
    words[..6].copy_from_slice(&header);
    words[6..6 + 2 * profile.links.len()].copy_from_slice(profile.links.as_flattened());
    6 + 2 * profile.links.len()
}

/// Scans the key-ordered records in `words[at..end]` for `key`: `Some(true)` (its links
/// appended to `out`) when found, `Some(false)` at a larger key, `None` at `end`.
#[inline]
fn scan_records(
    words: &[u32],
    mut at: usize,
    end: usize,
    key: [u64; 2],
    out: &mut Vec<[u32; 2]>,
) -> Option<bool> {
    while at < end {
        let w = &words[at..at + 6];
        let k = [
            w[0] as u64 | (w[1] as u64) << 32,
            w[2] as u64 | (w[3] as u64) << 32,
        ];
        let count = w[5] as usize;
        if k == key {
            for pair in words[at + 6..at + 6 + 2 * count].chunks_exact(2) {
                out.push([pair[0], pair[1]]);
            }
            return Some(true);
        }
        if k > key {
            return Some(false);
        }
        at += 6 + 2 * count;
    }
    None
}

/// Key-ordered pages of `page_words` u32 words holding variable-length records
/// `[key: 4 words][updated][count][segment, expiry]*` in key order; word 0 of a page is its
/// used word count with a spill flag in the top bit (records homed at or before this page
/// continue in the next one). A record lives in its home page or, when that is full, a later
/// one; a lookup prefetches its home page and the next, then scans records.
struct Paged {
    words: &'static [u32],
    page_words: usize,
    pages: usize,
}

const SPILL: u32 = 1 << 31;

impl Paged {
    fn build(profiles: &[Profile], fill_pct: usize, page_bytes: usize) -> Paged {
        let page_words = page_bytes / 4;
        let record_words: usize = profiles.iter().map(|p| 6 + 2 * p.links.len()).sum();
        let pages = record_words * 100 / fill_pct / (page_words - 1);
        let words = huge_zeroed::<u32>((pages + pages / 4 + 1024) * page_words);
        let (mut spilled, mut longest) = (0usize, 0usize);
        let mut page = 0usize;
        for profile in profiles {
            let home = home(profile.key[0], pages);
            page = page.max(home);
            let need = 6 + 2 * profile.links.len();
            loop {
                let base = page * page_words;
                let used = (words[base] & !SPILL) as usize;
                if 1 + used + need <= page_words {
                    write_record(&mut words[base + 1 + used..], profile);
                    words[base] = (words[base] & SPILL) | (used + need) as u32;
                    break;
                }
                words[base] |= SPILL;
                page += 1;
            }
            spilled += (page > home) as usize;
            longest = longest.max(page - home);
        }
        println!(
            "  {page_bytes} B pages filled to {fill_pct} %: {:.1} % of records off their home page, farthest {longest} pages",
            100.0 * spilled as f64 / profiles.len() as f64
        );
        Paged {
            words,
            page_words,
            pages,
        }
    }
}

impl Layout for Paged {
    fn name(&self) -> &'static str {
        "paged"
    }
    fn bytes(&self) -> usize {
        self.pages * self.page_words * 4
    }
    #[inline]
    fn lookup(&self, key: [u64; 2], out: &mut Vec<[u32; 2]>) -> bool {
        let mut page = home(key[0], self.pages);
        let base = (&self.words[page * self.page_words] as *const u32).cast::<u8>();
        for line in 0..2 * self.page_words / 16 {
            prefetch(base.wrapping_add(64 * line));
        }
        loop {
            let base = page * self.page_words;
            let header = self.words[base];
            let end = base + 1 + (header & !SPILL) as usize;
            if let Some(found) = scan_records(self.words, base + 1, end, key, out) {
                return found;
            }
            if header & SPILL == 0 {
                return false;
            }
            page += 1;
        }
    }
}

/// A directory of buckets over one arena: a key's bucket is `fast range(key, buckets)`, and
/// `dir[bucket]` is where its records start in the arena and how many words they take.
/// Records (`[key: 4 words][updated][count][segment, expiry]*`) of a bucket are contiguous
/// and sorted by key. The directory (8 bytes per bucket) is small enough to stay in cache; a
/// lookup reads its entry, prefetches the bucket's lines and scans them: one miss to memory.
struct Directory {
    dir: &'static [[u32; 2]],
    arena: &'static [u32],
    buckets: usize,
}

impl Directory {
    fn build(profiles: &[Profile], per_bucket: usize) -> Directory {
        let buckets = profiles.len().div_ceil(per_bucket);
        let dir = huge_zeroed::<[u32; 2]>(buckets + 1);
        let words: usize = profiles.iter().map(|p| 6 + 2 * p.links.len()).sum();
        let arena = huge_zeroed::<u32>(words + 16);
        let mut at = 0usize;
        let mut bucket = 0usize;
        for profile in profiles {
            let home = home(profile.key[0], buckets);
            while bucket < home {
                bucket += 1;
                dir[bucket] = [at as u32, 0];
            }
            at += write_record(&mut arena[at..], profile);
            dir[bucket][1] = (at - dir[bucket][0] as usize) as u32;
        }
        Directory {
            dir,
            arena,
            buckets,
        }
    }
}

impl Layout for Directory {
    fn name(&self) -> &'static str {
        "directory + buckets"
    }
    fn bytes(&self) -> usize {
        self.buckets * 8 + self.arena.len() * 4
    }
    #[inline]
    fn lookup(&self, key: [u64; 2], out: &mut Vec<[u32; 2]>) -> bool {
        let [start, len] = self.dir[home(key[0], self.buckets)];
        let (start, end) = (start as usize, start as usize + len as usize);
        let base = (&self.arena[start.min(self.arena.len() - 1)] as *const u32).cast::<u8>();
        let first_line = base as usize & !63;
        let last_line = (base as usize + 4 * len as usize).saturating_sub(1) & !63;
        let mut line = first_line;
        while line <= last_line {
            prefetch(line as *const u8);
            line += 64;
        }
        scan_records(self.arena, start, end, key, out).unwrap_or(false)
    }
}

fn measure(
    layout: &dyn Layout,
    label: &str,
    profiles: &[Profile],
    memberships: usize,
    max_links: usize,
) {
    let lookups = 2_000_000;
    let mut state = 0xabcdefu64;
    let mut keys: Vec<[u64; 2]> = Vec::with_capacity(lookups);
    while keys.len() < lookups {
        state = splitmix(state);
        let profile = &profiles[(state % profiles.len() as u64) as usize];
        if profile.links.len() <= max_links {
            keys.push(profile.key);
        }
    }
    let mut out = Vec::with_capacity(64);
    let mut samples = Vec::with_capacity(lookups);
    let mut found = 0usize;
    for key in &keys {
        out.clear();
        let start = Instant::now();
        found += layout.lookup(*key, &mut out) as usize;
        samples.push(start.elapsed().as_nanos() as u32);
    }
    assert_eq!(found, lookups);
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let bytes = layout.bytes() as f64;
    println!(
        "{:52} hit p50 {:4} ns  p99 {:5} ns  |  {:.1} B/profile = {:.1} B overhead + 8 B/membership",
        format!("{}{label}", layout.name()),
        at(0.5),
        at(0.99),
        bytes / profiles.len() as f64,
        (bytes - 8.0 * memberships as f64) / profiles.len() as f64
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .map_or(10_000_000, |a| a.parse().expect("profiles"));
    let load: usize = args.next().map_or(85, |a| a.parse().expect("load %"));
    let profiles = profiles(count);
    let memberships: usize = profiles.iter().map(|p| p.links.len()).sum();
    println!(
        "{count} profiles, {:.2} links each, tables at {load} % load",
        memberships as f64 / count as f64
    );
    let table24 = Table24::build(&profiles, load);
    measure(&table24, "", &profiles, memberships, usize::MAX);
    for ahead in [1, 3] {
        let table = Table64::build(&profiles, load, ahead);
        let label = format!(", +{ahead} lines prefetched");
        measure(&table, &label, &profiles, memberships, usize::MAX);
    }
    for (page_bytes, fill) in [(256, 70), (512, 80), (512, 88), (1024, 88)] {
        let table = Paged::build(&profiles, fill, page_bytes);
        let label = format!(", {page_bytes} B pages at {fill} %");
        measure(&table, &label, &profiles, memberships, usize::MAX);
    }
    for per_bucket in [2, 4, 8] {
        let table = Directory::build(&profiles, per_bucket);
        let label = format!(", {per_bucket} profiles per bucket");
        measure(&table, &label, &profiles, memberships, usize::MAX);
    }
    // What a one-miss hit costs: only profiles whose links all fit inline.
    println!("hits on profiles with at most {INLINE} links only:");
    measure(&table24, "", &profiles, memberships, INLINE);
    let table64 = Table64::build(&profiles, load, 1);
    measure(&table64, ", all inline", &profiles, memberships, INLINE);
}
