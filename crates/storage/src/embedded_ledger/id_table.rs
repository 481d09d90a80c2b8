//! One shard of the dedup index: impression-id hash → record location, as an open-addressing
//! table (linear probing, 24-byte slots, power-of-two capacity) that the writer can prefetch.
//!
//! The id hashes are keyed SipHash-1-3-128 already, so a slot's home comes from the hash's
//! low word as it is (the top bits choose the shard, so they are alike within one table). A slot holds the hash (16 bytes) and the location (8 bytes); the all-zero
//! hash marks an empty slot, and the one id in 2^128 whose hash is zero is stored as 1
//! (indistinguishable from an id hashing to 1, which the 128-bit hash already allows for).
//!
//! Against `HashMap<u128, u64>` (control bytes in one array, entries in another) a lookup or
//! an insert costs one cache miss instead of two, the address of that miss is known from the
//! hash alone (so [`IdTable::prefetch`] can start it a few records ahead), and the table holds
//! 24 bytes per slot at 43–85 % load instead of 25 at 44–88 %.
//!
//! Ids are removed only when the group that entered them could not be written (rare), by
//! backward-shift deletion, so probing needs no tombstones.

/// Load (percent) above which the table doubles.
const MAX_LOAD_PCT: usize = 85;
/// Slots of a table's first allocation.
const MIN_SLOTS: usize = 16;

/// A hash (high and low word) and a location; all zero when empty.
type Slot = [u64; 3];

#[derive(Default)]
pub(crate) struct IdTable {
    slots: Vec<Slot>,
    len: usize,
}

/// The stored form of a hash: never zero (zero marks an empty slot).
#[inline]
fn stored(hash: u128) -> (u64, u64) {
    let hash = hash.max(1);
    ((hash >> 64) as u64, hash as u64)
}

impl IdTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Ids the table holds before it doubles.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len() * MAX_LOAD_PCT / 100
    }

    /// Bytes of memory the table holds.
    pub(crate) fn bytes(&self) -> u64 {
        (self.slots.len() * size_of::<Slot>()) as u64
    }

    /// Home slot of a stored hash, from its low word.
    #[inline]
    fn home(&self, low: u64) -> usize {
        // `slots.len()` is a power of two (or zero, where the caller does not get here).
        ((u128::from(low) * self.slots.len() as u128) >> 64) as usize
    }

    /// Starts loading the cache lines of `hash`'s home slot.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u128) {
        if self.slots.is_empty() {
            return;
        }
        let slot = &self.slots[self.home(stored(hash).1)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching has no effect on memory; both addresses lie in or just past
        // the slot, and a prefetch of any address is allowed.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let at = slot.as_ptr().cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(at);
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(size_of::<Slot>() - 1));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    pub(crate) fn get(&self, hash: u128) -> Option<u64> {
        if self.slots.is_empty() {
            return None;
        }
        let (high, low) = stored(hash);
        let mask = self.slots.len() - 1;
        let mut at = self.home(low);
        loop {
            let slot = &self.slots[at];
            if slot[0] == high && slot[1] == low {
                return Some(slot[2]);
            }
            if slot[0] == 0 && slot[1] == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Enters `hash` with `location` unless it is there; `false` if it was.
    #[inline]
    pub(crate) fn insert_new(&mut self, hash: u128, location: u64) -> bool {
        if self.len >= self.capacity() {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        let (high, low) = stored(hash);
        let mask = self.slots.len() - 1;
        let mut at = self.home(low);
        loop {
            let slot = &mut self.slots[at];
            if slot[0] == high && slot[1] == low {
                return false;
            }
            if slot[0] == 0 && slot[1] == 0 {
                *slot = [high, low, location];
                self.len += 1;
                return true;
            }
            at = (at + 1) & mask;
        }
    }

    /// Doubles the table ahead of its fill limit when it holds `len * 2 * shards >= capacity *
    /// (shards + index)` (shard `index` of `shards`), so that shards filled alike by uniform
    /// hashes double at different times instead of in one long stall. `true` if it grew.
    pub(crate) fn grow_early(&mut self, index: usize, shards: usize) -> bool {
        let capacity = self.capacity();
        if capacity >= 1024 && self.len * 2 * shards >= capacity * (shards + index) {
            self.resize(self.slots.len() * 2);
            true
        } else {
            false
        }
    }

    /// Removes `hash`; `false` if it was not there.
    pub(crate) fn remove(&mut self, hash: u128) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let (high, low) = stored(hash);
        let mask = self.slots.len() - 1;
        let mut hole = self.home(low);
        loop {
            let slot = self.slots[hole];
            if slot[0] == high && slot[1] == low {
                break;
            }
            if slot[0] == 0 && slot[1] == 0 {
                return false;
            }
            hole = (hole + 1) & mask;
        }
        // Backward shift: pull each later entry of the run into the hole unless the hole lies
        // before its home (cyclically), where a lookup would no longer reach it.
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let slot = self.slots[at];
            if slot[0] == 0 && slot[1] == 0 {
                break;
            }
            let home = self.home(slot[1]);
            let distance_from_home = at.wrapping_sub(home) & mask;
            let distance_to_hole = at.wrapping_sub(hole) & mask;
            if distance_to_hole <= distance_from_home {
                self.slots[hole] = slot;
                hole = at;
            }
        }
        self.slots[hole] = [0; 3];
        self.len -= 1;
        true
    }

    /// Farthest any entry sits from its home slot.
    #[cfg(test)]
    fn max_displacement(&self) -> usize {
        let mask = self.slots.len().wrapping_sub(1);
        (0..self.slots.len())
            .filter(|&at| self.slots[at] != [0; 3])
            .map(|at| at.wrapping_sub(self.home(self.slots[at][1])) & mask)
            .max()
            .unwrap_or(0)
    }

    fn resize(&mut self, slots: usize) {
        debug_assert!(slots.is_power_of_two() && slots * MAX_LOAD_PCT / 100 > self.len);
        let old = std::mem::replace(&mut self.slots, vec![[0; 3]; slots]);
        let mask = slots - 1;
        for slot in old {
            if slot[0] == 0 && slot[1] == 0 {
                continue;
            }
            let mut at = self.home(slot[1]);
            while self.slots[at] != [0; 3] {
                at = (at + 1) & mask;
            }
            self.slots[at] = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A hash whose home comes from `home_word`, so tests can force collisions.
    fn hash(home_word: u64, rest: u64) -> u128 {
        (u128::from(rest) << 64) | u128::from(home_word)
    }

    #[test]
    fn agrees_with_a_map_through_inserts_duplicates_removals_and_growth() {
        let mut table = IdTable::default();
        let mut model: HashMap<u128, u64> = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..60_000u64 {
            // Half the ids share a few top words, so runs are long and wrap around the end;
            // the other half land anywhere.
            let id = next() % 20_000;
            let top = if id % 2 == 0 {
                (id % 64) << 58
            } else {
                id.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
            };
            let key = hash(top, id);
            match next() % 8 {
                0 => assert_eq!(table.remove(key), model.remove(&key).is_some()),
                _ => {
                    let fresh = !model.contains_key(&key);
                    assert_eq!(table.insert_new(key, round), fresh);
                    model.entry(key).or_insert(round);
                }
            }
            if round % 97 == 0 {
                table.grow_early(3, 8);
            }
        }
        assert_eq!(table.len(), model.len());
        for (&key, &location) in &model {
            assert_eq!(table.get(key), Some(location), "{key:x}");
        }
        assert_eq!(table.get(hash(7, 123_456)), None);
    }

    #[test]
    fn a_run_that_wraps_past_the_end_survives_removal_at_its_start() {
        let mut table = IdTable::default();
        let last = u64::MAX; // home: the last slot
        for rest in 1..=5 {
            assert!(table.insert_new(hash(last, rest), rest));
        }
        // One entry homed at slot 0 sits behind the wrapped run.
        assert!(table.insert_new(hash(0, 9), 9));
        assert!(table.remove(hash(last, 1)));
        for rest in 2..=5 {
            assert_eq!(table.get(hash(last, rest)), Some(rest));
        }
        assert_eq!(table.get(hash(0, 9)), Some(9));
        assert_eq!(table.get(hash(last, 1)), None);
        assert!(!table.remove(hash(last, 1)));
    }

    /// The dedup index picks a table by the top bits of the hash, so all ids of one table
    /// share them: the home must come from other bits, or every id would pile up in one run.
    #[test]
    fn ids_of_one_shard_spread_over_the_table() {
        let mut table = IdTable::default();
        let mut state = 7_u64;
        for location in 0..50_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let random = u128::from(state) << 64 | u128::from(state.rotate_left(31) ^ location);
            // Top 10 bits fixed, as in one of the index's 1 024 tables.
            let in_shard = random >> 10 | 0x2a5_u128 << 118;
            table.insert_new(in_shard, location);
        }
        assert_eq!(table.len(), 50_000);
        assert!(
            table.max_displacement() < 200,
            "longest run {} slots",
            table.max_displacement()
        );
    }

    #[test]
    fn the_zero_hash_is_stored_and_found() {
        let mut table = IdTable::default();
        assert!(table.insert_new(0, 42));
        assert!(!table.insert_new(0, 43));
        assert_eq!(table.get(0), Some(42));
        assert!(table.remove(0));
        assert_eq!(table.get(0), None);
        assert_eq!(table.len(), 0);
    }
}
