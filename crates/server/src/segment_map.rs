//! A folder's segments by id, built for the resolvers' hot loops (profile batches and batch
//! file lines).
//!
//! Items and lines name about six segment ids each, drawn from pools of tens of thousands, so most lookups
//! miss the CPU caches: the cost is memory latency, not hashing. The map therefore keeps the
//! common case small and lets the resolver start a line's lookups before it needs them:
//!
//! - selectable ids of at most 8 bytes (the usual numeric or short ids) live in an
//!   open-addressing table of 16-byte slots (packed id, segment number, TTL), four to a cache
//!   line, at most three quarters full; [`SegmentMap::prefetch`] asks for an id's slot ahead of
//!   [`SegmentMap::get`], so the misses of one line overlap;
//! - every other id (non-selectable hierarchy nodes, ids of 9 to 16 bytes) is packed into a
//!   `u128` in a hash map, and longer ids use a string map.
//!
//! All use a fast hasher seeded at random per process.

use std::collections::HashMap;
use std::hash::BuildHasher;

use segmart_domain::SegmentNum;
use segmart_domain::profile::SegmentRef;

#[derive(Default, Clone)]
pub struct SegmentMap {
    len: usize,
    small: SmallIds,
    short: HashMap<u128, SegmentRef, foldhash::fast::RandomState>,
    long: HashMap<Box<str>, SegmentRef, foldhash::fast::RandomState>,
}

impl SegmentMap {
    pub fn with_capacity(capacity: usize) -> Self {
        SegmentMap {
            len: 0,
            small: SmallIds::with_capacity(capacity),
            short: HashMap::default(),
            long: HashMap::default(),
        }
    }

    /// Segment ids hold no control characters, so zero padding cannot make two ids equal, and
    /// a packed id is never zero.
    #[inline]
    fn pack_u64(id: &str) -> Option<u64> {
        let bytes = id.as_bytes();
        if bytes.len() > 8 || bytes.is_empty() {
            return None;
        }
        let mut packed = [0u8; 8];
        packed[..bytes.len()].copy_from_slice(bytes);
        Some(u64::from_le_bytes(packed))
    }

    #[inline]
    fn pack_u128(id: &str) -> Option<u128> {
        let bytes = id.as_bytes();
        if bytes.len() > 16 {
            return None;
        }
        let mut packed = [0u8; 16];
        packed[..bytes.len()].copy_from_slice(bytes);
        Some(u128::from_le_bytes(packed))
    }

    /// Adds or replaces the segment of `id`.
    pub fn insert(&mut self, id: &str, segment: SegmentRef) {
        if self.get(id).is_none() {
            self.len += 1;
        }
        if let Some(packed) = Self::pack_u64(id) {
            // The id may move between tiers when it is inserted again with other settings.
            self.short.remove(&u128::from(packed));
            self.small.remove(packed);
            if segment.selectable {
                self.small.insert(packed, segment.num, segment.ttl_minutes);
                return;
            }
        }
        match Self::pack_u128(id) {
            Some(packed) => self.short.insert(packed, segment),
            None => self.long.insert(id.into(), segment),
        };
    }

    /// Number of segment ids.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts loading the memory `get(id)` will read (a hint; does nothing for ids outside the
    /// small table).
    #[inline]
    pub fn prefetch(&self, id: &str) {
        if let Some(packed) = Self::pack_u64(id) {
            self.small.prefetch(packed);
        }
    }

    #[inline]
    pub fn get(&self, id: &str) -> Option<SegmentRef> {
        if let Some(packed) = Self::pack_u64(id) {
            if let Some(found) = self.small.get(packed) {
                return Some(found);
            }
            return self.short.get(&u128::from(packed)).copied();
        }
        match Self::pack_u128(id) {
            Some(packed) => self.short.get(&packed).copied(),
            None => self.long.get(id).copied(),
        }
    }
}

impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentMap").field("len", &self.len).finish()
    }
}

/// One slot of [`SmallIds`]: `key == 0` marks it empty.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct Slot {
    key: u64,
    num: u32,
    ttl_minutes: u32,
}

/// Linear-probing table from a packed non-zero `u64` id to a selectable segment.
#[derive(Clone)]
struct SmallIds {
    /// A power of two long, never more than three quarters full (so a probe always ends).
    slots: Box<[Slot]>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl Default for SmallIds {
    fn default() -> Self {
        SmallIds::with_capacity(0)
    }
}

impl SmallIds {
    fn with_capacity(capacity: usize) -> Self {
        let slots = (capacity.saturating_mul(4) / 3 + 1)
            .next_power_of_two()
            .max(16);
        SmallIds {
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        (self.hasher.hash_one(key) as usize) & (self.slots.len() - 1)
    }

    #[inline]
    fn find(&self, key: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut at = self.home(key);
        loop {
            let slot = &self.slots[at];
            if slot.key == key {
                return Ok(at);
            }
            if slot.key == 0 {
                return Err(at);
            }
            at = (at + 1) & mask;
        }
    }

    #[inline]
    fn prefetch(&self, key: u64) {
        let slot: *const Slot = &self.slots[self.home(key)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint and never faults; the address is a slot of the table.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast())
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    #[inline]
    fn get(&self, key: u64) -> Option<SegmentRef> {
        let at = self.find(key).ok()?;
        let slot = &self.slots[at];
        Some(SegmentRef {
            num: SegmentNum(slot.num),
            ttl_minutes: slot.ttl_minutes,
            selectable: true,
        })
    }

    fn insert(&mut self, key: u64, num: SegmentNum, ttl_minutes: u32) {
        debug_assert_ne!(key, 0);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let slot = Slot {
            key,
            num: num.0,
            ttl_minutes,
        };
        match self.find(key) {
            Ok(at) => self.slots[at] = slot,
            Err(at) => {
                self.slots[at] = slot;
                self.len += 1;
            }
        }
    }

    fn remove(&mut self, key: u64) {
        let Ok(mut hole) = self.find(key) else {
            return;
        };
        // Backward-shift deletion keeps every remaining key reachable from its home slot.
        let mask = self.slots.len() - 1;
        self.slots[hole] = Slot::default();
        self.len -= 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let slot = self.slots[at];
            if slot.key == 0 {
                return;
            }
            let home = self.home(slot.key);
            // Move the slot back when its home is not in the cyclic range (hole, at].
            let distance_to_at = at.wrapping_sub(home) & mask;
            let distance_to_hole = hole.wrapping_sub(home) & mask;
            if distance_to_hole < distance_to_at {
                self.slots[hole] = slot;
                self.slots[at] = Slot::default();
                hole = at;
            }
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        let mut grown = SmallIds {
            slots: vec![Slot::default(); (old.len() * 2).max(16)].into_boxed_slice(),
            len: 0,
            hasher: self.hasher.clone(),
        };
        for slot in old.iter().filter(|s| s.key != 0) {
            grown.insert(slot.key, SegmentNum(slot.num), slot.ttl_minutes);
        }
        *self = grown;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn segment(num: u32, ttl_minutes: u32, selectable: bool) -> SegmentRef {
        SegmentRef {
            num: SegmentNum(num),
            ttl_minutes,
            selectable,
        }
    }

    /// Every tier answers as a plain map would, through growth, re-inserts and tier moves.
    #[test]
    fn the_map_answers_as_a_plain_map() {
        let mut map = SegmentMap::default();
        let mut expected = BTreeMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000u32 {
            let length = 1 + (next() % 20) as usize;
            let id: String = (0..length)
                .map(|i| char::from(b'0' + ((next() >> (i % 8)) % 4) as u8))
                .collect();
            let value = segment(round, (next() % 100) as u32, next() % 5 != 0);
            map.insert(&id, value);
            expected.insert(id, value);
        }
        for (id, value) in &expected {
            assert_eq!(map.get(id), Some(*value), "{id}");
        }
        for missing in ["x", "0123456789x", "01234567890123456789x", "0000000000"] {
            assert_eq!(
                map.get(missing),
                expected.get(missing).copied(),
                "{missing}"
            );
        }
        assert_eq!(map.len(), expected.len());
        let small = expected.keys().filter(|id| id.len() <= 8).count();
        assert!(small > 100);
    }

    #[test]
    fn removing_keeps_colliding_keys_reachable() {
        let mut table = SmallIds::with_capacity(4);
        for key in 1..=200u64 {
            table.insert(key, SegmentNum(key as u32), 1);
        }
        for key in (1..=200u64).step_by(3) {
            table.remove(key);
        }
        for key in 1..=200u64 {
            let found = table.get(key).map(|s| s.num.0);
            let expected = (key % 3 != 1).then_some(key as u32);
            assert_eq!(found, expected, "{key}");
        }
        assert_eq!(table.len, 200 - 67);
    }
}
