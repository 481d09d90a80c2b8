//! One shard of the in-memory profile table: an ordered linear-probing hash table of 24-byte
//! slots plus an arena of membership words.
//!
//! # Layout
//!
//! - A [`Slot`] holds the profile key (16 bytes), the offset of its membership block in the
//!   arena (4 bytes) and its last-update time in Unix seconds (4 bytes). An all-zero slot is
//!   empty, so a freshly mapped table needs no initialisation.
//! - The arena is an array of `u32` words. A block is `[len][segment, expiry] * len`, sorted by
//!   segment number, expiries in Unix seconds. Word 0 is never used, so offset 0 can mean
//!   "empty slot"; [`NO_LINKS`] marks a profile that exists without any link.
//!
//! # Ordering invariant
//!
//! Keys are stored rotated so that the shard-selecting bits sit at the bottom ([`Key`]). A
//! key's home position is `top64(key) * capacity >> 64` ("fast range"), which is monotone in
//! the key, and the table is kept **sorted by key** (Robin Hood order with ties broken by the
//! key). There is no wrap-around: a spill area after the last home position absorbs the final
//! run, and its last slot stays empty as a sentinel. Consequences:
//!
//! - a lookup stops at the first empty slot or the first larger key, hits or misses alike;
//! - deletion is a backward shift, so there are no tombstones;
//! - growing or shrinking is one sequential pass (`pos = max(home, previous + 1)`), and a
//!   snapshot written in table order loads the same way, without random access;
//! - a scan can resume after the last key it saw even if the table changed in between.

use parking_lot::RwLockUpgradableReadGuard;
use segmart_domain::SegmentNum;
use segmart_domain::profile::LiveSegment;

use super::mmap::MmapVec;
use crate::profile::ProfileKey;

/// log2 of the number of shards.
pub(crate) const SHARD_BITS: u32 = 6;
/// Shards per store. 64 keeps each shard's arrays in the megabytes at millions of profiles
/// (so huge pages apply) while one shard's growth or compaction touches 1/64 of the data.
pub(crate) const SHARDS: usize = 1 << SHARD_BITS;

/// Slot `block` value of an empty slot.
const EMPTY: u32 = 0;
/// Slot `block` value of a profile that has no links.
pub(crate) const NO_LINKS: u32 = u32::MAX;

/// The table grows when more than this share of home positions hold profiles (percent).
const MAX_LOAD_PCT: usize = 85;
/// Growth factor of the slot array (percent). Below 2 so the average load stays high.
const GROW_PCT: usize = 115;
/// A slot array of fewer home positions than this (1.5 MiB) grows by [`FAST_GROW_PCT`]
/// instead: a new store's shards then reach working size in a few copies rather than dozens
/// (each growth copies the shard and maps fresh memory). Small shards' load then falls to 57 %
/// at worst rather than 74 %.
const FAST_GROW_BELOW: usize = 1 << 16;
/// Growth factor of a small slot array (percent).
const FAST_GROW_PCT: usize = 150;
/// Load a rebuilt (compacted or shrunk) table is sized for (percent).
const REBUILD_LOAD_PCT: usize = 75;
/// A table is shrunk by compaction when its load falls below this (percent).
const MIN_LOAD_PCT: usize = 35;
/// The arena is compacted when garbage exceeds this share of it (percent)…
const COMPACT_GARBAGE_PCT: usize = 22;
/// …and is at least this many words.
const COMPACT_MIN_WORDS: usize = 256;
/// Smallest number of home positions of a non-empty table.
const MIN_CAPACITY: usize = 16;

/// A profile key as the table stores and orders it: the [`ProfileKey`] rotated left by
/// [`SHARD_BITS`], as two words (keeps [`Slot`] at 8-byte alignment, 24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub(crate) struct Key(pub(crate) [u64; 2]);

impl Key {
    pub(crate) fn from_profile(key: ProfileKey) -> Key {
        let rotated = key.0.rotate_left(SHARD_BITS);
        Key([(rotated >> 64) as u64, rotated as u64])
    }

    #[cfg(test)]
    pub(crate) fn to_profile(self) -> ProfileKey {
        let rotated = ((self.0[0] as u128) << 64) | self.0[1] as u128;
        ProfileKey(rotated.rotate_right(SHARD_BITS))
    }

    pub(crate) fn shard(self) -> usize {
        (self.0[1] & (SHARDS as u64 - 1)) as usize
    }

    #[inline]
    fn home(self, capacity: usize) -> usize {
        ((self.0[0] as u128 * capacity as u128) >> 64) as usize
    }
}

/// One profile's entry in the table.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) key: Key,
    /// Arena offset of the membership block, [`EMPTY`] or [`NO_LINKS`].
    pub(crate) block: u32,
    /// Last update, Unix seconds.
    pub(crate) updated: u32,
}

const _: () = assert!(size_of::<Slot>() == 24);

impl Slot {
    #[inline]
    fn is_empty(&self) -> bool {
        self.block == EMPTY
    }
}

/// Clamps Unix seconds into the table's `u32` range (as batches and the log keep them).
pub(crate) use crate::packed::clamp_secs;

/// Whether a profile updated at `updated` is still live at `now_s`.
#[inline]
pub(crate) fn profile_live(updated: u32, expiry_secs: i64, now_s: i64) -> bool {
    (updated as i64).saturating_add(expiry_secs) > now_s
}

/// The slot array cannot take another key until it grows (its spill area is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// Reusable buffers for applying updates without allocating per mutation.
#[derive(Default)]
pub(crate) struct Scratch {
    links: Vec<[u32; 2]>,
    merged: Vec<[u32; 2]>,
    adds: Vec<[u32; 2]>,
    removes: Vec<u32>,
}

/// Sorts `adds` by segment into `out`, stably (among repeats of a segment the last add stays
/// last and wins); adds already in order are copied as they are. Up to [`RANK_SORT_MAX`] adds
/// are placed by rank — each add's position is the number of adds that sort before it — which
/// is branch-free and beats an insertion sort's mispredictions on the handful of adds an update
/// carries.
fn sort_adds(adds: &[[u32; 2]], out: &mut Vec<[u32; 2]>) {
    out.clear();
    // Batches pack their adds sorted (`packed::put_update`): then there is nothing to do.
    if adds.is_sorted_by_key(|pair| pair[0]) {
        out.extend_from_slice(adds);
        return;
    }
    if adds.len() > RANK_SORT_MAX {
        out.extend_from_slice(adds);
        out.sort_by_key(|pair| pair[0]);
        return;
    }
    out.resize(adds.len(), [0, 0]);
    crate::packed::place_by_rank(adds, |pair| pair[0], out);
}

/// Largest number of adds [`sort_adds`] ranks (quadratic); more are sorted by the library.
const RANK_SORT_MAX: usize = 32;

/// What one pass of clean-up removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cleaned {
    pub(crate) profiles: u64,
    pub(crate) links: u64,
}

/// Sizes of one shard's arrays.
pub(crate) struct MemoryDetail {
    pub(crate) slot_bytes: usize,
    pub(crate) slots: usize,
    pub(crate) arena_bytes: usize,
    pub(crate) arena_words: usize,
    pub(crate) garbage_words: usize,
}

/// One shard's table.
pub(crate) struct Table {
    /// `capacity` home positions followed by the spill area; empty when `capacity == 0`.
    slots: MmapVec<Slot>,
    /// Number of home positions (the fast-range modulus).
    capacity: usize,
    /// Membership words; word 0 is a placeholder so that offset 0 means "empty".
    arena: MmapVec<u32>,
    /// Profiles stored (live or not yet cleaned).
    profiles: usize,
    /// Links stored (live or not yet cleaned).
    links: usize,
    /// Arena words no block refers to any more; reclaimed by compaction.
    garbage: usize,
}

fn spill_for(capacity: usize) -> usize {
    (8 + capacity / 8).min(1024)
}

fn capacity_for(profiles: usize, load_pct: usize) -> usize {
    (profiles * 100)
        .div_ceil(load_pct)
        .max(MIN_CAPACITY)
        .max(profiles + 1)
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    pub(crate) fn new() -> Table {
        Table {
            slots: MmapVec::new(),
            capacity: 0,
            arena: MmapVec::new(),
            profiles: 0,
            links: 0,
            garbage: 0,
        }
    }

    pub(crate) fn profiles(&self) -> usize {
        self.profiles
    }

    pub(crate) fn links(&self) -> usize {
        self.links
    }

    pub(crate) fn memory_detail(&self) -> MemoryDetail {
        MemoryDetail {
            slot_bytes: self.slots.mapped_bytes(),
            slots: self.slots.len(),
            arena_bytes: self.arena.mapped_bytes(),
            arena_words: self.arena.len(),
            garbage_words: self.garbage,
        }
    }

    /// Bytes of memory mapped for slots and arena.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.slots.mapped_bytes() + self.arena.mapped_bytes()
    }

    /// Position of `key`, or the position where it would be inserted.
    #[inline]
    fn search(&self, key: Key) -> Result<usize, usize> {
        let slots = self.slots.as_slice();
        if slots.is_empty() {
            return Err(0);
        }
        let mut pos = key.home(self.capacity);
        // Runs average a few slots: fetch the next cache line in parallel with the first.
        prefetch_next_line(&slots[pos]);
        loop {
            let slot = &slots[pos];
            if slot.is_empty() || slot.key > key {
                return Err(pos);
            }
            if slot.key == key {
                return Ok(pos);
            }
            pos += 1;
        }
    }

    #[inline]
    fn block(&self, offset: u32) -> &[u32] {
        if offset == NO_LINKS {
            return &[];
        }
        let arena = self.arena.as_slice();
        let start = offset as usize;
        // A block of a few links usually straddles two cache lines: ask for both at once.
        prefetch_next_line(&arena[start]);
        let len = arena[start] as usize;
        &arena[start + 1..start + 1 + 2 * len]
    }

    /// Fills `out` (cleared by the caller) with the live links of `key` at `now_s`. Returns the
    /// profile's update time, or `None` when the profile is absent or expired.
    #[inline]
    pub(crate) fn lookup(
        &self,
        key: Key,
        now_s: i64,
        expiry_secs: i64,
        out: &mut Vec<LiveSegment>,
    ) -> Option<u32> {
        let slot = self.slots.as_slice()[self.search(key).ok()?];
        self.read_slot(slot, now_s, expiry_secs, out)
    }

    /// Prefetches the cache line of `key`'s home slot.
    #[inline]
    pub(crate) fn prefetch_home(&self, key: Key) {
        let slots = self.slots.as_slice();
        if !slots.is_empty() {
            prefetch(&slots[key.home(self.capacity)]);
        }
    }

    /// Prefetches the first `lines` cache lines from `key`'s home slot on: an insertion scans
    /// the run from there to its first empty slot (runs of a dozen slots and more at high
    /// load), so the writer asks for them all at once ahead of time.
    #[inline]
    pub(crate) fn prefetch_run(&self, key: Key, lines: usize) {
        let slots = self.slots.as_slice();
        if let Some(home) = slots.get(key.home(self.capacity)) {
            let address = (home as *const Slot).cast::<u8>();
            for line in 0..lines {
                prefetch_address(address.wrapping_add(64 * line));
            }
        }
    }

    /// Finds `key`'s slot and prefetches its membership block (batched lookups).
    #[inline]
    pub(crate) fn find_and_prefetch(&self, key: Key) -> Option<Slot> {
        let slot = self.slots.as_slice()[self.search(key).ok()?];
        if slot.block != NO_LINKS {
            prefetch(&self.arena.as_slice()[slot.block as usize]);
        }
        Some(slot)
    }

    /// The second half of a lookup: the live links of a slot found by
    /// [`Self::find_and_prefetch`] under the same lock hold.
    #[inline]
    pub(crate) fn read_slot(
        &self,
        slot: Slot,
        now_s: i64,
        expiry_secs: i64,
        out: &mut Vec<LiveSegment>,
    ) -> Option<u32> {
        if !profile_live(slot.updated, expiry_secs, now_s) {
            return None;
        }
        for pair in self.block(slot.block).chunks_exact(2) {
            if pair[1] as i64 > now_s {
                out.push(LiveSegment {
                    num: SegmentNum(pair[0]),
                    expires_at: segmart_domain::Timestamp::from_secs(pair[1] as i64),
                });
            }
        }
        Some(slot.updated)
    }

    /// True when inserting `extra` more profiles would pass the maximum load.
    pub(crate) fn needs_growth(&self, extra: usize) -> bool {
        (self.profiles + extra) * 100 > self.capacity * MAX_LOAD_PCT
    }

    /// Capacity to grow to so that `extra` more profiles fit.
    pub(crate) fn grown_capacity(&self, extra: usize) -> usize {
        let step = self.capacity * GROW_PCT / 100;
        let grown = if self.capacity < FAST_GROW_BELOW {
            // Fast growth stops at `FAST_GROW_BELOW`, unless one ordinary step is already past it.
            (self.capacity * FAST_GROW_PCT / 100)
                .min(FAST_GROW_BELOW)
                .max(step)
        } else {
            step
        };
        grown
            .max(capacity_for(self.profiles + extra, MAX_LOAD_PCT))
            .max(MIN_CAPACITY)
    }

    /// Builds a slot array of `capacity` home positions holding the current entries (the arena
    /// is shared, offsets unchanged). Runs under a read lock; install with [`Self::install_slots`].
    pub(crate) fn resized_slots(&self, mut capacity: usize) -> (MmapVec<Slot>, usize) {
        loop {
            if let Some(slots) = fill_sorted(
                capacity,
                self.slots
                    .as_slice()
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied(),
            ) {
                return (slots, capacity);
            }
            capacity = capacity * 11 / 10 + 1;
        }
    }

    /// Swaps in a slot array built by [`Self::resized_slots`]; returns the old one so the
    /// caller can unmap it after releasing the lock.
    pub(crate) fn install_slots(&mut self, slots: MmapVec<Slot>, capacity: usize) -> MmapVec<Slot> {
        self.capacity = capacity;
        std::mem::replace(&mut self.slots, slots)
    }

    /// True when the arena holds enough garbage, or the table is sparse enough, to rebuild.
    pub(crate) fn wants_compaction(&self) -> bool {
        let garbage_heavy = self.garbage >= COMPACT_MIN_WORDS
            && self.garbage * 100 > self.arena.len() * COMPACT_GARBAGE_PCT;
        let sparse =
            self.capacity > MIN_CAPACITY * 4 && self.profiles * 100 < self.capacity * MIN_LOAD_PCT;
        garbage_heavy || sparse
    }

    /// Builds a compacted copy: arena without garbage, slots sized for the current count.
    /// Runs under a read lock; install with [`Self::install`].
    pub(crate) fn compacted(&self) -> Table {
        let live_words = self.arena.len().saturating_sub(self.garbage).max(1);
        let mut arena = MmapVec::<u32>::new();
        arena.reserve_exact(live_words + live_words / 32);
        arena.push(0);
        let mut capacity = capacity_for(self.profiles, REBUILD_LOAD_PCT);
        let entries = self.slots.as_slice().iter().filter(|s| !s.is_empty());
        let mut moved = Vec::with_capacity(self.profiles);
        for slot in entries {
            let mut slot = *slot;
            if slot.block != NO_LINKS {
                let block = self.block(slot.block);
                slot.block = arena.len() as u32;
                arena.push((block.len() / 2) as u32);
                arena.extend_from_slice(block);
            }
            moved.push(slot);
        }
        let slots = loop {
            if let Some(slots) = fill_sorted(capacity, moved.iter().copied()) {
                break slots;
            }
            capacity = capacity * 11 / 10 + 1;
        };
        Table {
            slots,
            capacity,
            arena,
            profiles: self.profiles,
            links: self.links,
            garbage: 0,
        }
    }

    /// Replaces this table with `other` (built by [`Self::compacted`] from this one).
    pub(crate) fn install(&mut self, other: Table) -> Table {
        std::mem::replace(self, other)
    }

    /// The first empty slot at or after `pos` that an insertion at `pos` may shift the run
    /// into (never the sentinel), or `None` when the spill area is full.
    #[inline]
    fn free_slot_from(&self, pos: usize) -> Option<usize> {
        let slots = self.slots.as_slice();
        let usable = slots.len().checked_sub(1)?;
        slots
            .get(pos..usable)?
            .iter()
            .position(Slot::is_empty)
            .map(|offset| pos + offset)
    }

    /// Inserts `slot` at `pos`, shifting the run `pos..free` (found by
    /// [`Self::free_slot_from`]) up by one.
    fn insert_at(&mut self, pos: usize, free: usize, slot: Slot) {
        let slots = self.slots.as_mut_slice();
        slots.copy_within(pos..free, pos + 1);
        slots[pos] = slot;
    }

    fn remove_at(&mut self, mut pos: usize) {
        let capacity = self.capacity;
        let slots = self.slots.as_mut_slice();
        loop {
            let next = slots[pos + 1];
            if next.is_empty() || next.key.home(capacity) > pos {
                break;
            }
            slots[pos] = next;
            pos += 1;
        }
        slots[pos] = Slot::default();
    }

    fn append_block(&mut self, links: &[[u32; 2]]) -> u32 {
        if self.arena.len() == 0 {
            self.arena.push(0);
        }
        let offset = self.arena.len();
        assert!(
            offset + 1 + 2 * links.len() < NO_LINKS as usize,
            "shard arena exceeds 2^32 words"
        );
        self.arena.reserve(1 + 2 * links.len());
        self.arena.push(links.len() as u32);
        self.arena.extend_from_slice(links.as_flattened());
        offset as u32
    }

    /// Applies one update (clear, then remove, then add) at effective time `at_s`: links with
    /// an expiry `<= at_s` are dropped, and a profile whose 14-day expiry has passed at `at_s`
    /// starts empty. Returns [`Full`] (having changed nothing) when the slot array must grow.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_update(
        &mut self,
        key: Key,
        at_s: i64,
        expiry_secs: i64,
        clear: bool,
        removes: &[u32],
        adds: &[[u32; 2]],
        scratch: &mut Scratch,
    ) -> Result<(), Full> {
        let found = self.search(key);
        // Where a new profile's insertion ends its shift; found before anything changes.
        let free = match found {
            Ok(_) => 0,
            Err(pos) => self.free_slot_from(pos).ok_or(Full)?,
        };
        let old = found.ok().map(|pos| self.slots.as_slice()[pos]);
        let alive = old.is_some_and(|slot| profile_live(slot.updated, expiry_secs, at_s));

        let links = &mut scratch.links;
        links.clear();
        if let Some(slot) = old
            && alive
            && !clear
        {
            let block = self.block(slot.block);
            links.extend(
                block
                    .chunks_exact(2)
                    .filter(|pair| pair[1] as i64 > at_s)
                    .map(|pair| [pair[0], pair[1]]),
            );
        }
        if !removes.is_empty() && !links.is_empty() {
            if removes.len() <= 8 {
                links.retain(|link| !removes.contains(&link[0]));
            } else {
                scratch.removes.clear();
                scratch.removes.extend_from_slice(removes);
                scratch.removes.sort_unstable();
                links.retain(|link| scratch.removes.binary_search(&link[0]).is_err());
            }
        }
        if !adds.is_empty() {
            sort_adds(adds, &mut scratch.adds);
            let sorted_adds = &scratch.adds;
            let merged = &mut scratch.merged;
            merged.clear();
            merged.reserve(links.len() + sorted_adds.len());
            let mut old_links = links.iter().peekable();
            let mut index = 0;
            while index < sorted_adds.len() {
                let segment = sorted_adds[index][0];
                while index + 1 < sorted_adds.len() && sorted_adds[index + 1][0] == segment {
                    index += 1;
                }
                let add = sorted_adds[index];
                index += 1;
                while let Some(link) = old_links.next_if(|link| link[0] < segment) {
                    merged.push(*link);
                }
                old_links.next_if(|link| link[0] == segment);
                if add[1] as i64 > at_s {
                    merged.push(add);
                }
            }
            merged.extend(old_links);
            std::mem::swap(links, merged);
        }

        let updated = clamp_secs(at_s);
        let new_len = scratch.links.len();
        let (old_block, old_len) = match old {
            Some(slot) if slot.block != NO_LINKS => {
                (Some(slot.block), self.block(slot.block).len() / 2)
            }
            _ => (None, 0),
        };
        let old_words = old_block.map_or(0, |_| 1 + 2 * old_len);
        let block = match old_block {
            _ if new_len == 0 => {
                self.garbage += old_words;
                NO_LINKS
            }
            Some(offset) if new_len <= old_len => {
                let start = offset as usize;
                let arena = self.arena.as_mut_slice();
                arena[start] = new_len as u32;
                arena[start + 1..start + 1 + 2 * new_len]
                    .copy_from_slice(scratch.links.as_flattened());
                self.garbage += 2 * (old_len - new_len);
                offset
            }
            Some(offset) if offset as usize + old_words == self.arena.len() => {
                self.arena.set_len(offset as usize);
                self.append_block(&scratch.links)
            }
            _ => {
                self.garbage += old_words;
                let links = std::mem::take(&mut scratch.links);
                let offset = self.append_block(&links);
                scratch.links = links;
                offset
            }
        };
        self.links = self.links + new_len - old_len;
        match found {
            Ok(pos) => {
                let slot = &mut self.slots.as_mut_slice()[pos];
                slot.block = block;
                slot.updated = updated;
            }
            Err(pos) => {
                self.insert_at(
                    pos,
                    free,
                    Slot {
                        key,
                        block,
                        updated,
                    },
                );
                self.profiles += 1;
            }
        }
        Ok(())
    }

    /// Deletes a profile and its links.
    pub(crate) fn delete(&mut self, key: Key) {
        if let Ok(pos) = self.search(key) {
            self.remove_slot(pos);
        }
    }

    fn remove_slot(&mut self, pos: usize) {
        let slot = self.slots.as_slice()[pos];
        if slot.block != NO_LINKS {
            let len = self.block(slot.block).len() / 2;
            self.garbage += 1 + 2 * len;
            self.links -= len;
        }
        self.profiles -= 1;
        self.remove_at(pos);
    }

    /// Builds a table from entries sorted by key whose blocks point into `arena` (snapshot
    /// loading): one sequential pass, no probing.
    pub(crate) fn from_sorted(entries: &[Slot], arena: MmapVec<u32>, links: usize) -> Table {
        let mut capacity = capacity_for(entries.len(), REBUILD_LOAD_PCT);
        let slots = loop {
            if let Some(slots) = fill_sorted(capacity, entries.iter().copied()) {
                break slots;
            }
            capacity = capacity * 11 / 10 + 1;
        };
        Table {
            slots,
            capacity,
            arena,
            profiles: entries.len(),
            links,
            garbage: 0,
        }
    }

    /// Visits up to `limit` entries with keys greater than `after` in key order, with their
    /// links live at `now_s` and skipping profiles expired at `now_s`. Returns the last key
    /// visited (live or not), or `None` when the table has no more entries.
    pub(crate) fn scan_after(
        &self,
        after: Option<Key>,
        limit: usize,
        now_s: i64,
        expiry_secs: i64,
        mut visit: impl FnMut(Key, u32, &mut dyn Iterator<Item = [u32; 2]>),
    ) -> Option<Key> {
        let slots = self.slots.as_slice();
        if slots.is_empty() {
            return None;
        }
        let mut pos = match after {
            None => 0,
            Some(key) => match self.search(key) {
                Ok(pos) => pos + 1,
                Err(pos) => pos,
            },
        };
        let mut last = None;
        let mut seen = 0;
        while pos < slots.len() && seen < limit {
            let slot = slots[pos];
            pos += 1;
            if slot.is_empty() {
                continue;
            }
            seen += 1;
            last = Some(slot.key);
            if !profile_live(slot.updated, expiry_secs, now_s) {
                continue;
            }
            let mut links = self
                .block(slot.block)
                .chunks_exact(2)
                .filter(|pair| pair[1] as i64 > now_s)
                .map(|pair| [pair[0], pair[1]]);
            visit(slot.key, slot.updated, &mut links);
        }
        last
    }

    /// Whether the slot at `pos` holds something clean-up at `now_s` would remove.
    fn needs_cleaning(&self, pos: usize, now_s: i64, expiry_secs: i64) -> bool {
        let slot = self.slots.as_slice()[pos];
        if slot.is_empty() {
            return false;
        }
        !profile_live(slot.updated, expiry_secs, now_s)
            || self
                .block(slot.block)
                .chunks_exact(2)
                .any(|pair| pair[1] as i64 <= now_s)
    }

    fn clean_slot(&mut self, pos: usize, now_s: i64, expiry_secs: i64, cleaned: &mut Cleaned) {
        let slot = self.slots.as_slice()[pos];
        if slot.is_empty() {
            return;
        }
        if !profile_live(slot.updated, expiry_secs, now_s) {
            cleaned.profiles += 1;
            cleaned.links += (self.block(slot.block).len() / 2) as u64;
            self.remove_slot(pos);
            return;
        }
        if slot.block == NO_LINKS {
            return;
        }
        let start = slot.block as usize;
        let arena = self.arena.as_mut_slice();
        let len = arena[start] as usize;
        let mut kept = 0;
        for index in 0..len {
            let segment = arena[start + 1 + 2 * index];
            let expiry = arena[start + 2 + 2 * index];
            if expiry as i64 > now_s {
                arena[start + 1 + 2 * kept] = segment;
                arena[start + 2 + 2 * kept] = expiry;
                kept += 1;
            }
        }
        let dropped = len - kept;
        cleaned.links += dropped as u64;
        self.links -= dropped;
        if kept == 0 {
            self.garbage += 1 + 2 * len;
            self.slots.as_mut_slice()[pos].block = NO_LINKS;
        } else {
            arena[start] = kept as u32;
            self.garbage += 2 * dropped;
        }
    }
}

/// Removes expired links and profiles as of `now_s` from a shard, holding the write lock only
/// for windows of slots that need changes (readers keep going in between), then compacts the
/// shard if that left enough garbage. The caller holds the shard's upgradable lock, which
/// excludes every other mutator.
pub(crate) fn clean_shard(
    guard: &mut RwLockUpgradableReadGuard<'_, Table>,
    now_s: i64,
    expiry_secs: i64,
) -> Cleaned {
    const WINDOW: usize = 512;
    let mut cleaned = Cleaned::default();
    let mut high = guard.slots.len();
    while high > 0 {
        let low = high.saturating_sub(WINDOW);
        // Descending order: a deletion shifts only higher (already cleaned) slots.
        if (low..high).any(|pos| guard.needs_cleaning(pos, now_s, expiry_secs)) {
            guard.with_upgraded(|table| {
                for pos in (low..high).rev() {
                    table.clean_slot(pos, now_s, expiry_secs, &mut cleaned);
                }
            });
        }
        high = low;
    }
    compact_if_needed(guard);
    cleaned
}

/// Compacts the shard (built beside the live table, swapped in under a short write lock) when
/// its garbage or sparseness calls for it.
pub(crate) fn compact_if_needed(guard: &mut RwLockUpgradableReadGuard<'_, Table>) {
    if guard.wants_compaction() {
        let compacted = guard.compacted();
        let old = guard.with_upgraded(|table| table.install(compacted));
        drop(old);
    }
}

/// Places entries (sorted by key) into a fresh slot array; `None` if the spill area overflows.
fn fill_sorted(capacity: usize, entries: impl Iterator<Item = Slot>) -> Option<MmapVec<Slot>> {
    let mut slots = MmapVec::<Slot>::zeroed(capacity + spill_for(capacity));
    let last = slots.len() - 1;
    let array = slots.as_mut_slice();
    let mut next = 0;
    for slot in entries {
        let pos = slot.key.home(capacity).max(next);
        if pos >= last {
            return None;
        }
        array[pos] = slot;
        next = pos + 1;
    }
    Some(slots)
}

#[inline(always)]
fn prefetch_next_line<T>(value: &T) {
    // Prefetch hints never fault, so the address may lie past the array's end.
    prefetch_address((value as *const T).cast::<u8>().wrapping_add(64));
}

#[inline(always)]
fn prefetch<T>(value: &T) {
    prefetch_address((value as *const T).cast());
}

#[inline(always)]
pub(crate) fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::RwLock;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const EXPIRY: i64 = 1_000;

    /// The reference: profile → (updated, segment → expiry), applied by the documented rules.
    #[derive(Default, Debug)]
    struct Model {
        profiles: BTreeMap<Key, (u32, BTreeMap<u32, u32>)>,
    }

    impl Model {
        fn update(&mut self, key: Key, at_s: i64, clear: bool, removes: &[u32], adds: &[[u32; 2]]) {
            let alive = self
                .profiles
                .get(&key)
                .is_some_and(|(updated, _)| profile_live(*updated, EXPIRY, at_s));
            let mut links = match self.profiles.get(&key) {
                Some((_, links)) if alive && !clear => links
                    .iter()
                    .filter(|(_, e)| **e as i64 > at_s)
                    .map(|(s, e)| (*s, *e))
                    .collect(),
                _ => BTreeMap::new(),
            };
            for segment in removes {
                links.remove(segment);
            }
            for [segment, expiry] in adds {
                if *expiry as i64 > at_s {
                    links.insert(*segment, *expiry);
                } else {
                    links.remove(segment);
                }
            }
            self.profiles.insert(key, (clamp_secs(at_s), links));
        }

        fn lookup(&self, key: Key, now_s: i64) -> Option<Vec<(u32, u32)>> {
            let (updated, links) = self.profiles.get(&key)?;
            if !profile_live(*updated, EXPIRY, now_s) {
                return None;
            }
            Some(
                links
                    .iter()
                    .filter(|(_, e)| **e as i64 > now_s)
                    .map(|(s, e)| (*s, *e))
                    .collect(),
            )
        }

        fn live_counts(&self, now_s: i64) -> (usize, usize) {
            let mut profiles = 0;
            let mut links = 0;
            for key in self.profiles.keys() {
                if let Some(found) = self.lookup(*key, now_s) {
                    profiles += 1;
                    links += found.len();
                }
            }
            (profiles, links)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Update {
            key: usize,
            clear: bool,
            removes: Vec<u32>,
            adds: Vec<(u32, i64)>,
        },
        Delete {
            key: usize,
        },
        Advance(i64),
        Cleanup,
        Compact,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (
                0..KEYS,
                prop::bool::weighted(0.15),
                prop::collection::vec(0u32..24, 0..3),
                prop::collection::vec((0u32..24, -50i64..3_000), 0..8),
            )
                .prop_map(|(key, clear, removes, adds)| Op::Update {
                    key,
                    clear,
                    removes,
                    adds
                }),
            1 => (0..KEYS).prop_map(|key| Op::Delete { key }),
            2 => (0i64..400).prop_map(Op::Advance),
            1 => Just(Op::Cleanup),
            1 => Just(Op::Compact),
        ]
    }

    const KEYS: usize = 300;

    /// Keys with deliberately shared high bits (same home at every capacity) among random ones.
    fn keys() -> Vec<Key> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..KEYS)
            .map(|i| match i % 10 {
                0 => Key([u64::MAX - 1, i as u64]),
                1 => Key([0, i as u64]),
                2 => Key([1 << 63, i as u64]),
                _ => Key([next(), next()]),
            })
            .collect()
    }

    fn check(table: &Table, model: &Model, keys: &[Key], now_s: i64) {
        let mut out = Vec::new();
        for key in keys {
            out.clear();
            let got = table.lookup(*key, now_s, EXPIRY, &mut out).map(|_| {
                out.iter()
                    .map(|l| (l.num.0, l.expires_at.secs() as u32))
                    .collect()
            });
            assert_eq!(got, model.lookup(*key, now_s), "key {key:?} at {now_s}");
        }
        let arena_live: usize = table
            .slots
            .as_slice()
            .iter()
            .filter(|s| !s.is_empty() && s.block != NO_LINKS)
            .map(|s| 1 + table.block(s.block).len())
            .sum();
        assert_eq!(arena_live + table.garbage + 1, table.arena.len().max(1));
        let stored = table
            .slots
            .as_slice()
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        assert_eq!(stored, table.profiles);
        let sorted = table.slots.as_slice().iter().filter(|s| !s.is_empty());
        assert!(
            sorted
                .clone()
                .zip(sorted.skip(1))
                .all(|(a, b)| a.key < b.key)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn table_matches_model(ops in prop::collection::vec(op(), 1..600)) {
            let keys = keys();
            let lock = RwLock::new(Table::new());
            let mut model = Model::default();
            let mut scratch = Scratch::default();
            let mut now_s = 10_000i64;
            for op in ops {
                match op {
                    Op::Update { key, clear, removes, adds } => {
                        let adds: Vec<[u32; 2]> = adds
                            .iter()
                            .map(|(s, offset)| [*s, clamp_secs(now_s + offset)])
                            .collect();
                        let mut table = lock.write();
                        if table.needs_growth(1) {
                            let (slots, capacity) = table.resized_slots(table.grown_capacity(1));
                            drop(table.install_slots(slots, capacity));
                        }
                        while table
                            .apply_update(keys[key], now_s, EXPIRY, clear, &removes, &adds, &mut scratch)
                            .is_err()
                        {
                            let (slots, capacity) = table.resized_slots(table.grown_capacity(1));
                            drop(table.install_slots(slots, capacity));
                        }
                        drop(table);
                        model.update(keys[key], now_s, clear, &removes, &adds);
                    }
                    Op::Delete { key } => {
                        lock.write().delete(keys[key]);
                        model.profiles.remove(&keys[key]);
                    }
                    Op::Advance(secs) => now_s += secs,
                    Op::Cleanup => {
                        let mut guard = lock.upgradable_read();
                        clean_shard(&mut guard, now_s, EXPIRY);
                        drop(guard);
                        let table = lock.read();
                        prop_assert_eq!((table.profiles, table.links), model.live_counts(now_s));
                    }
                    Op::Compact => {
                        let mut guard = lock.upgradable_read();
                        let compacted = guard.compacted();
                        drop(guard.with_upgraded(|t| t.install(compacted)));
                    }
                }
                check(&lock.read(), &model, &keys, now_s);
            }
            // Sequential rebuild from a key-ordered scan (what snapshots do) keeps everything.
            let table = lock.read();
            let mut entries = Vec::new();
            let mut arena = MmapVec::new();
            arena.push(0);
            let mut links = 0;
            let mut after = None;
            while let Some(last) = table.scan_after(after, 7, i64::MIN, EXPIRY, |key, updated, found| {
                let pairs: Vec<[u32; 2]> = found.collect();
                let block = if pairs.is_empty() {
                    NO_LINKS
                } else {
                    let offset = arena.len() as u32;
                    arena.push(pairs.len() as u32);
                    arena.extend_from_slice(pairs.as_flattened());
                    offset
                };
                links += pairs.len();
                entries.push(Slot { key, block, updated });
            }) {
                after = Some(last);
            }
            let rebuilt = Table::from_sorted(&entries, arena, links);
            prop_assert_eq!(rebuilt.profiles, table.profiles);
            prop_assert_eq!(rebuilt.links, table.links);
            check(&rebuilt, &model, &keys, now_s);
        }
    }

    #[test]
    fn slot_is_24_bytes_and_keys_round_trip() {
        assert_eq!(size_of::<Slot>(), 24);
        let key = ProfileKey(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(Key::from_profile(key).to_profile(), key);
        assert_eq!(Key::from_profile(key).shard(), (key.0 >> 122) as usize);
    }
}
