//! Flat open-addressing table plus a u32 arena.
//!
//! * Slots are 24 bytes: 16-byte key, u32 arena offset, u32 `updated_at`. The key is already a
//!   keyed 128-bit hash, so its low 64 bits pick the home slot directly. An all-zero key marks
//!   an empty slot (a zero hash is stored as 1).
//! * Capacity is `profiles / load_factor`, not a power of two: the home slot is
//!   `(hash * capacity) >> 64`. Collisions probe linearly, wrapping at the end.
//! * The arena holds `[len][seg, expiry] * len` per profile. A rewrite appends a new record and
//!   leaves the old one as garbage for a later compaction (not modelled here).
//!
//! The table does not grow: it is sized for the expected profile count up front.

use super::mmap::{MmapVec, Zeroable};
use crate::data::{Batch, Link, MAX_LINKS, live_links};
use crate::store::Store;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    key: [u64; 2],
    offset: u32,
    updated_at: u32,
}
const _: () = assert!(size_of::<Slot>() == 24);
// SAFETY: four integer fields, no padding (checked above), zero = empty slot.
unsafe impl Zeroable for Slot {}

fn slot_key(key: u128) -> [u64; 2] {
    let key = key.max(1);
    [key as u64, (key >> 64) as u64]
}

pub struct FlatTable {
    slots: MmapVec<Slot>,
    arena: MmapVec<u32>,
    len: usize,
    huge_pages: bool,
}

impl FlatTable {
    /// A table for `profiles` profiles at `load_factor`, each loaded at most once.
    pub fn new(profiles: usize, load_factor: f64, huge_pages: bool) -> Self {
        let capacity = ((profiles as f64 / load_factor).ceil() as usize).max(profiles + 1);
        let arena_words = profiles * (1 + 2 * MAX_LINKS);
        FlatTable {
            slots: MmapVec::zeroed(capacity, huge_pages),
            arena: MmapVec::with_capacity(arena_words, huge_pages),
            len: 0,
            huge_pages,
        }
    }

    fn home(&self, key: &[u64; 2]) -> usize {
        ((key[0] as u128 * self.slots.len() as u128) >> 64) as usize
    }

    pub fn insert(&mut self, key: u128, updated_at: u32, links: &[Link]) {
        let key = slot_key(key);
        let offset = u32::try_from(self.arena.len()).expect("arena offset fits in u32");
        self.arena.extend_from_slice(&[links.len() as u32]);
        for &(seg, expiry) in links {
            self.arena.extend_from_slice(&[seg, expiry]);
        }
        let mut i = self.home(&key);
        let capacity = self.slots.len();
        let slots = self.slots.as_mut_slice();
        loop {
            let slot = &mut slots[i];
            if slot.key == [0, 0] {
                assert!(self.len + 1 < capacity, "flat table is full");
                *slot = Slot {
                    key,
                    offset,
                    updated_at,
                };
                self.len += 1;
                return;
            }
            if slot.key == key {
                slot.offset = offset;
                slot.updated_at = updated_at;
                return;
            }
            i += 1;
            if i == capacity {
                i = 0;
            }
        }
    }

    /// `(updated_at, [seg, expiry, seg, expiry, ...])` of a profile.
    pub fn get(&self, key: u128) -> Option<(u32, &[u32])> {
        let key = slot_key(key);
        let slots = self.slots.as_slice();
        let mut i = self.home(&key);
        loop {
            let slot = &slots[i];
            if slot.key == key {
                let arena = self.arena.as_slice();
                let start = slot.offset as usize;
                let len = arena[start] as usize;
                return Some((slot.updated_at, &arena[start + 1..start + 1 + 2 * len]));
            }
            if slot.key == [0, 0] {
                return None;
            }
            i += 1;
            if i == slots.len() {
                i = 0;
            }
        }
    }

    /// Writes table and arena to `path` and fsyncs it.
    pub fn write_snapshot(&self, path: &Path) -> std::io::Result<()> {
        let mut out = BufWriter::with_capacity(4 << 20, File::create(path)?);
        for n in [self.slots.len(), self.len, self.arena.len()] {
            out.write_all(&(n as u64).to_le_bytes())?;
        }
        out.write_all(self.slots.as_bytes())?;
        out.write_all(self.arena.as_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }

    /// Reads a snapshot written by [`Self::write_snapshot`] into fresh mappings.
    pub fn read_snapshot(path: &Path, profiles: usize, huge_pages: bool) -> std::io::Result<Self> {
        let mut input = BufReader::with_capacity(4 << 20, File::open(path)?);
        let mut header = [0u8; 24];
        input.read_exact(&mut header)?;
        let field = |n: usize| {
            u64::from_le_bytes(header[8 * n..8 * n + 8].try_into().expect("8 bytes")) as usize
        };
        let (capacity, len, arena_len) = (field(0), field(1), field(2));
        let mut slots = MmapVec::zeroed(capacity, huge_pages);
        input.read_exact(slots.as_bytes_mut())?;
        let mut arena =
            MmapVec::with_capacity(arena_len.max(profiles * (1 + 2 * MAX_LINKS)), huge_pages);
        arena.extend_zeroed(arena_len);
        input.read_exact(arena.as_bytes_mut())?;
        Ok(FlatTable {
            slots,
            arena,
            len,
            huge_pages,
        })
    }

    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }
}

impl Store for FlatTable {
    fn apply(&mut self, batch: &Batch) -> anyhow::Result<()> {
        for (key, updated_at, links) in batch.iter() {
            self.insert(key, updated_at, links);
        }
        Ok(())
    }

    fn lookup(&self, key: u128, now: u32, out: &mut Vec<Link>) -> bool {
        match self.get(key) {
            Some((updated_at, pairs)) => {
                live_links(
                    updated_at,
                    pairs.chunks_exact(2).map(|p| (p[0], p[1])),
                    now,
                    out,
                );
                true
            }
            None => {
                out.clear();
                false
            }
        }
    }

    fn own_bytes(&self) -> Option<u64> {
        Some((self.slots.as_bytes().len() + self.arena.as_bytes().len()) as u64)
    }
}
