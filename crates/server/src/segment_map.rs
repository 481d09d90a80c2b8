//! A folder's segments by id, built for the resolvers' hot loops (profile batches and batch
//! file lines).
//!
//! Items and lines name about six segment ids each, drawn from pools of tens of thousands, so most lookups
//! miss the CPU caches: the cost is memory latency, not hashing. The map therefore keeps the
//! common case small and lets the resolver start a line's lookups before it needs them:
//!
//! - selectable ids of at most 16 bytes (the usual numeric or short ids) live in an
//!   open-addressing table of 24-byte slots (packed id, segment number, TTL), at most three
//!   quarters full; [`SegmentMap::prefetch`] asks for an id's slot ahead of
//!   [`SegmentMap::get`], so the misses of one item or line overlap, and a lookup compares
//!   two words instead of following a string pointer;
//! - non-selectable hierarchy nodes of at most 16 bytes are packed the same way into a hash
//!   map, and longer ids use a string map.
//!
//! All use a fast hasher seeded at random per process.

use std::collections::HashMap;
use std::hash::BuildHasher;

use segmart_domain::profile::{ResolvedUpdate, SegmentRef};
use segmart_domain::{SegmentNum, Timestamp};

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

    /// An id of at most 16 bytes as a little-endian number, zero-padded. Segment ids hold no
    /// control characters, so the padding cannot make two ids equal, and a packed id is never
    /// zero. Read with two overlapping loads rather than a variable-length copy (whose bytes the
    /// following wide load would wait for).
    #[inline]
    fn pack(id: &str) -> Option<u128> {
        let bytes = id.as_bytes();
        let len = bytes.len();
        let load8 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let load4 =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as u64;
        Some(match len {
            0 => return None,
            1..=3 => {
                // First, middle and last byte cover every position of 1 to 3 bytes.
                let (first, middle, last) = (bytes[0], bytes[len / 2], bytes[len - 1]);
                (first as u128)
                    | (middle as u128) << (8 * (len / 2))
                    | (last as u128) << (8 * (len - 1))
            }
            4..=8 => (load4(0) | load4(len - 4) << (8 * (len - 4))) as u128,
            9..=16 => {
                let high = load8(len - 8) >> (8 * (16 - len));
                load8(0) as u128 | (high as u128) << 64
            }
            _ => return None,
        })
    }

    /// Adds or replaces the segment of `id`.
    pub fn insert(&mut self, id: &str, segment: SegmentRef) {
        if self.get(id).is_none() {
            self.len += 1;
        }
        match Self::pack(id) {
            Some(packed) => {
                // The id may move between tiers when it is inserted again with other settings.
                self.short.remove(&packed);
                self.small.remove(packed);
                if segment.selectable {
                    self.small.insert(packed, segment.num, segment.ttl_minutes);
                } else {
                    self.short.insert(packed, segment);
                }
            }
            None => {
                self.long.insert(id.into(), segment);
            }
        }
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
        if let Some(packed) = Self::pack(id) {
            self.small.prefetch(packed);
        }
    }

    /// Packs `id` and starts loading its slot, for a [`SegmentMap::get_located`] soon after:
    /// the id is split out of its list, packed and hashed once for both.
    #[inline]
    pub fn locate(&self, id: &str) -> Located {
        match Self::pack(id) {
            Some(packed) => {
                let home = self.small.home(packed);
                self.small.prefetch_at(home);
                Located { packed, home }
            }
            None => Located::default(),
        }
    }

    /// The segment of a located id; `None` also for an id [`Located::is_packed`] says was too
    /// long to pack (look those up with [`SegmentMap::get`]).
    #[inline]
    pub fn get_located(&self, located: Located) -> Option<SegmentRef> {
        if !located.is_packed() {
            return None;
        }
        match self.small.get_from(located.packed, located.home) {
            Some(found) => Some(found),
            None if self.short.is_empty() => None,
            None => self.short.get(&located.packed).copied(),
        }
    }

    #[inline]
    pub fn get(&self, id: &str) -> Option<SegmentRef> {
        match Self::pack(id) {
            Some(packed) => match self.small.get(packed) {
                Some(found) => Some(found),
                None if self.short.is_empty() => None,
                None => self.short.get(&packed).copied(),
            },
            None => self.long.get(id).copied(),
        }
    }
}

impl SegmentMap {
    /// The common case of resolving one item or line, in one pass over its ids, each packed
    /// and hashed once: `joined` (the ids that set and add, in order) and `removed` are all
    /// short enough to pack and known, the joined ones selectable, and none of the last
    /// `added` joined ids is also removed. Fills `resolved`'s lists (its `clear` flag is the
    /// caller's) with expiries from `at`; `false` when any of that fails, and the caller then
    /// resolves by id to find the exact refusal. `located` is scratch, reused between calls.
    #[inline]
    pub fn resolve_packed<'a>(
        &self,
        joined: impl Iterator<Item = &'a str>,
        added: usize,
        removed: impl Iterator<Item = &'a str>,
        at: Timestamp,
        located: &mut Vec<Located>,
        resolved: &mut ResolvedUpdate,
    ) -> bool {
        located.clear();
        // The ids' slots are mostly not in the CPU caches: `locate` asks for all of them
        // before the first lookup waits for one.
        let mut joins = 0;
        for id in joined {
            let place = self.locate(id);
            if !place.is_packed() {
                return false;
            }
            located.push(place);
            joins += 1;
        }
        for id in removed {
            let place = self.locate(id);
            if !place.is_packed() {
                return false;
            }
            located.push(place);
        }
        resolved.add.clear();
        resolved.remove.clear();
        let (joins, removes) = located.split_at(joins);
        for &place in joins {
            match self.get_located(place) {
                Some(segment) if segment.selectable => resolved.add.push((
                    segment.num,
                    at.plus_secs(i64::from(segment.ttl_minutes) * 60),
                )),
                _ => return false,
            }
        }
        for &place in removes {
            match self.get_located(place) {
                Some(segment) => resolved.remove.push(segment.num),
                None => return false,
            }
        }
        let added = &resolved.add[resolved.add.len() - added.min(resolved.add.len())..];
        resolved.remove.is_empty() || !added.iter().any(|(num, _)| resolved.remove.contains(num))
    }
}

impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentMap")
            .field("len", &self.len)
            .finish()
    }
}

/// An id packed and hashed by [`SegmentMap::locate`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Located {
    /// The packed id, 0 for one too long to pack.
    packed: u128,
    home: usize,
}

impl Located {
    /// Whether the id was short enough to pack (at most 16 bytes): only those are found by
    /// [`SegmentMap::get_located`].
    #[inline]
    pub fn is_packed(&self) -> bool {
        self.packed != 0
    }
}

/// One slot of [`SmallIds`]: a zero key marks it empty. 24 bytes (the key as two words keeps
/// 8-byte alignment).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    key: [u64; 2],
    num: u32,
    ttl_minutes: u32,
}

impl Slot {
    #[inline]
    fn key(&self) -> u128 {
        self.key[0] as u128 | (self.key[1] as u128) << 64
    }
}

#[inline]
fn split(key: u128) -> [u64; 2] {
    [key as u64, (key >> 64) as u64]
}

/// Linear-probing table from a packed non-zero id to a selectable segment.
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
    fn home(&self, key: u128) -> usize {
        (self.hasher.hash_one(key) as usize) & (self.slots.len() - 1)
    }

    #[inline]
    fn find(&self, key: u128) -> Result<usize, usize> {
        self.find_from(key, self.home(key))
    }

    /// [`SmallIds::find`] with the key's home slot already computed.
    #[inline]
    fn find_from(&self, key: u128, home: usize) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut at = home;
        loop {
            let slot = &self.slots[at];
            if slot.key == split(key) {
                return Ok(at);
            }
            if slot.key == [0, 0] {
                return Err(at);
            }
            at = (at + 1) & mask;
        }
    }

    #[inline]
    fn prefetch(&self, key: u128) {
        self.prefetch_at(self.home(key));
    }

    #[inline]
    fn prefetch_at(&self, home: usize) {
        let slot: *const Slot = &self.slots[home];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint and never faults; the address is a slot of the table.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast())
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    #[inline]
    fn get(&self, key: u128) -> Option<SegmentRef> {
        self.get_from(key, self.home(key))
    }

    #[inline]
    fn get_from(&self, key: u128, home: usize) -> Option<SegmentRef> {
        let at = self.find_from(key, home).ok()?;
        let slot = &self.slots[at];
        Some(SegmentRef {
            num: SegmentNum(slot.num),
            ttl_minutes: slot.ttl_minutes,
            selectable: true,
        })
    }

    fn insert(&mut self, key: u128, num: SegmentNum, ttl_minutes: u32) {
        debug_assert_ne!(key, 0);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let slot = Slot {
            key: split(key),
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

    fn remove(&mut self, key: u128) {
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
            if slot.key == [0, 0] {
                return;
            }
            let home = self.home(slot.key());
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
        for slot in old.iter().filter(|s| s.key != [0, 0]) {
            grown.insert(slot.key(), SegmentNum(slot.num), slot.ttl_minutes);
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
            // Located ids answer the same, except the ones too long to pack.
            let located = map.locate(id);
            assert_eq!(located.is_packed(), id.len() <= 16, "{id}");
            if located.is_packed() {
                assert_eq!(map.get_located(located), Some(*value), "{id}");
            }
        }
        for missing in ["x", "0123456789x", "01234567890123456789x", "0000000000"] {
            assert_eq!(
                map.get(missing),
                expected.get(missing).copied(),
                "{missing}"
            );
            assert_eq!(
                map.get_located(map.locate(missing)),
                expected
                    .get(missing)
                    .copied()
                    .filter(|_| missing.len() <= 16),
                "{missing}"
            );
        }
        assert_eq!(map.len(), expected.len());
        let small = expected.keys().filter(|id| id.len() <= 8).count();
        assert!(small > 100);
    }

    #[test]
    fn packing_is_zero_padding() {
        let text = "abcdefghijklmnopq";
        for len in 1..=16 {
            let id = &text[..len];
            let mut padded = [0u8; 16];
            padded[..len].copy_from_slice(id.as_bytes());
            assert_eq!(
                SegmentMap::pack(id),
                Some(u128::from_le_bytes(padded)),
                "{id}"
            );
        }
        assert_eq!(SegmentMap::pack(""), None);
        assert_eq!(SegmentMap::pack(text), None);
    }

    #[test]
    fn removing_keeps_colliding_keys_reachable() {
        let mut table = SmallIds::with_capacity(4);
        for key in 1..=200u128 {
            table.insert(key, SegmentNum(key as u32), 1);
        }
        for key in (1..=200u128).step_by(3) {
            table.remove(key);
        }
        for key in 1..=200u128 {
            let found = table.get(key).map(|s| s.num.0);
            let expected = (key % 3 != 1).then_some(key as u32);
            assert_eq!(found, expected, "{key}");
        }
        assert_eq!(table.len, 200 - 67);
    }

    /// The one-pass resolver agrees with the by-id resolution of the profile API on every
    /// list it accepts, and declines every list that resolution refuses.
    #[test]
    fn resolve_packed_agrees_with_the_by_id_resolution() {
        use segmart_domain::profile::{ResolvedUpdate, resolve_lists_into};
        let long = "a-segment-id-longer-than-16-bytes";
        let mut map = SegmentMap::default();
        map.insert("a", segment(1, 60, true));
        map.insert("b", segment(2, 30, true));
        map.insert("node", segment(3, 60, false));
        map.insert(long, segment(4, 60, true));
        let ids = ["a", "b", "node", "unknown", long];
        let lists: Vec<Vec<&str>> = std::iter::once(vec![])
            .chain(ids.iter().map(|id| vec![*id]))
            .chain(
                ids.iter()
                    .flat_map(|x| ids.iter().map(move |y| vec![*x, *y])),
            )
            .collect();
        let now = Timestamp::from_secs(1_000_000);
        let (mut fast, mut by_id, mut located) = Default::default();
        let mut accepted = 0;
        for set in std::iter::once(None).chain(lists.iter().take(4).map(Some)) {
            for add in &lists {
                for remove in lists.iter().take(7) {
                    let set = set.map(Vec::as_slice);
                    let joined = set.unwrap_or(&[]).iter().chain(add).copied();
                    let packed = map.resolve_packed(
                        joined,
                        add.len(),
                        remove.iter().copied(),
                        now,
                        &mut located,
                        &mut fast,
                    );
                    let lookup = |id: &&str| map.get(id);
                    let outcome =
                        resolve_lists_into(false, set, add, remove, now, lookup, &mut by_id);
                    let case = format!("set {set:?}, add {add:?}, remove {remove:?}");
                    if packed {
                        assert!(outcome.is_ok(), "{case}");
                        let ResolvedUpdate { add, remove, .. } = &by_id;
                        assert_eq!((&fast.add, &fast.remove), (add, remove), "{case}");
                        accepted += 1;
                    } else {
                        let has_long = [set.unwrap_or(&[]), add, remove].concat().contains(&long);
                        assert!(outcome.is_err() || has_long, "{case}");
                    }
                }
            }
        }
        assert!(accepted > 50, "{accepted} lists resolved in one pass");
    }
}
