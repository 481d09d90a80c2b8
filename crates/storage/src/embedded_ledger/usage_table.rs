//! The usage map: (day, member, category, segment, buyer) → sums, as an open-addressing table
//! (linear probing, one 64-byte cache line per slot) that grows incrementally.
//!
//! Keys are never removed, so probing needs no tombstones. When the table is 3/4 full a table
//! twice the size is allocated (mapped zeroed from the kernel when large, so its pages are
//! handed out as they are first touched) and every insert moves [`MIGRATE_PER_INSERT`] slots of the old table into it:
//! no insert ever copies the whole map, and the old table is gone before the new one is half
//! full. Lookups during a migration look in the new table, then in the part of the old one not
//! yet moved.
//!
//! [`UsageTable::add_staged`] updates a group's charges with the slots of the next few prefetched,
//! so their cache misses overlap instead of queueing one after the other.

use std::hash::{BuildHasher, BuildHasherDefault};

use super::{UsageHasher, UsageKey, UsageSums};
use crate::embedded::mmap::MmapVec;

/// Slots of the old table moved per insert during a migration. A migration starts when the
/// table of `c` slots is 3/4 full; at 4 slots per insert it ends after `c / 4` inserts, when
/// the new table (`2c` slots) is half full, well before it needs to grow in turn.
const MIGRATE_PER_INSERT: usize = 4;
/// Smallest table, in slots.
const MIN_SLOTS: usize = 64;
/// Charges whose slots are prefetched ahead of the one being updated.
const PREFETCH_AHEAD: usize = 8;

/// One key and its sums, packed in a cache line. `impressions` (low 63 bits) is 0 in an empty
/// slot and at least 1 in a used one; its top bit says whether the category is set.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    /// Day in the low 32 bits, segment in the high 32.
    day_segment: u64,
    member_id: i64,
    data_category_id: i64,
    buyer_id: i64,
    impressions: u64,
    data_cost: i64,
    payout: i64,
    platform_fee: i64,
}

const HAS_CATEGORY: u64 = 1 << 63;

impl Slot {
    fn is_empty(&self) -> bool {
        self.impressions & !HAS_CATEGORY == 0
    }

    fn new(key: &UsageKey) -> Slot {
        Slot {
            day_segment: u64::from(key.day as u32) | u64::from(key.segment) << 32,
            member_id: key.member_id,
            data_category_id: key.data_category_id.unwrap_or(0),
            buyer_id: key.buyer_id,
            impressions: if key.data_category_id.is_some() {
                HAS_CATEGORY
            } else {
                0
            },
            data_cost: 0,
            payout: 0,
            platform_fee: 0,
        }
    }

    fn holds(&self, key: &Slot) -> bool {
        self.day_segment == key.day_segment
            && self.member_id == key.member_id
            && self.data_category_id == key.data_category_id
            && self.buyer_id == key.buyer_id
            && self.impressions & HAS_CATEGORY == key.impressions & HAS_CATEGORY
    }

    fn key(&self) -> UsageKey {
        UsageKey {
            day: self.day_segment as u32 as i32,
            segment: (self.day_segment >> 32) as u32,
            member_id: self.member_id,
            data_category_id: (self.impressions & HAS_CATEGORY != 0)
                .then_some(self.data_category_id),
            buyer_id: self.buyer_id,
        }
    }

    fn sums(&self) -> UsageSums {
        UsageSums {
            impressions: self.impressions & !HAS_CATEGORY,
            data_cost: self.data_cost,
            payout: self.payout,
            platform_fee: self.platform_fee,
        }
    }

    fn add(&mut self, sums: &UsageSums) {
        self.impressions += sums.impressions;
        self.data_cost += sums.data_cost;
        self.payout += sums.payout;
        self.platform_fee += sums.platform_fee;
    }
}

/// Slots per 4 KiB page.
const SLOTS_PER_PAGE: usize = 4096 / size_of::<Slot>();

/// A zeroed (all empty) array of slots, mapped from the kernel in 4 KiB pages: its zero pages
/// are handed out as they are first written (as the migration reaches them), where an allocator
/// may hand back used memory and clear all of it at once, or fault in huge pages.
///
/// A page's first access is made a write ([`Slots::probe`]): had it been a read,
/// the kernel would map the shared zero page, and the write that follows would fault again
/// to replace it, flushing the other cores' TLBs with an interrupt each time.
struct Slots {
    slots: MmapVec<Slot>,
    /// One bit per page: set once the page has been written.
    touched: Vec<u64>,
}

impl Slots {
    fn zeroed(len: usize) -> Slots {
        assert!(len.is_power_of_two());
        // An all-zero `Slot` is a valid (empty) slot.
        Slots {
            slots: MmapVec::zeroed_small_pages(len),
            touched: vec![0; len.div_ceil(SLOTS_PER_PAGE).div_ceil(64)],
        }
    }

    /// Writes to the page of slot `at` if nothing has yet. A page never written holds zeros
    /// only, so writing a zero changes nothing but how the kernel maps it.
    #[inline]
    fn touch(&mut self, at: usize) {
        let page = at / SLOTS_PER_PAGE;
        let (word, bit) = (page / 64, 1u64 << (page % 64));
        if self.touched[word] & bit != 0 {
            return;
        }
        self.touched[word] |= bit;
        let first = &mut self.slots.as_mut_slice()[page * SLOTS_PER_PAGE].impressions;
        // SAFETY: a write through a valid `&mut u64`; volatile so that it is neither elided
        // (it stores what the page holds) nor moved after the reads that follow.
        unsafe { std::ptr::write_volatile(first, 0) };
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Where `key` is, or the empty slot where it would go; every page it reads is touched
    /// first (the slot may be written next).
    fn probe(&mut self, hash: u64, key: &Slot) -> (usize, bool) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            self.touch(at);
            let slot = &self.slots.as_slice()[at];
            if slot.is_empty() {
                return (at, false);
            }
            if slot.holds(key) {
                return (at, true);
            }
            at = (at + 1) & mask;
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn as_slice(&self) -> &[Slot] {
        self.slots.as_slice()
    }

    fn as_mut_slice(&mut self) -> &mut [Slot] {
        self.slots.as_mut_slice()
    }

    fn mask(&self) -> usize {
        self.len() - 1
    }

    fn prefetch(&self, hash: u64) {
        let at = hash as usize & self.mask();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is only a hint; the address is inside the allocation.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(self.as_slice().as_ptr().add(at) as *const i8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }
}

/// The key's hash, finished with MurmurHash3's 64-bit mixer: linear probing takes the slot
/// from the low bits, and a clustered hash would make probe runs long.
fn hash(key: &UsageKey) -> u64 {
    let mut h = BuildHasherDefault::<UsageHasher>::default().hash_one(key);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The usage map (see the module documentation).
pub(crate) struct UsageTable {
    table: Slots,
    /// The table being migrated and the index of its next slot to move.
    old: Option<(Slots, usize)>,
    len: usize,
    /// Migrations started since the table was created.
    growths: u64,
    /// Charges staged for [`UsageTable::add_staged`]; the buffer is reused.
    pending: Vec<(u64, UsageKey, UsageSums)>,
}

impl Default for UsageTable {
    fn default() -> Self {
        UsageTable {
            table: Slots::zeroed(MIN_SLOTS),
            old: None,
            len: 0,
            growths: 0,
            pending: Vec::new(),
        }
    }
}

impl UsageTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the slot arrays (both during a migration).
    pub(crate) fn bytes(&self) -> u64 {
        let slots = self.table.len() + self.old.as_ref().map_or(0, |(old, _)| old.len());
        (slots * size_of::<Slot>()) as u64
    }

    /// Migrations started since the table was created.
    pub(crate) fn growths(&self) -> u64 {
        self.growths
    }

    /// Adds `sums` to `key`'s (a new key starts at zero).
    #[cfg(test)]
    pub(crate) fn add(&mut self, key: UsageKey, sums: UsageSums) {
        self.add_hashed(hash(&key), &key, &sums);
    }

    /// Adds every (key, sums) of `charges`, prefetching the slots of those ahead.
    #[cfg(test)]
    pub(crate) fn add_all(&mut self, charges: impl Iterator<Item = (UsageKey, UsageSums)>) {
        for (key, sums) in charges {
            self.stage(key, sums);
        }
        self.add_staged();
    }

    /// Queues a charge for [`Self::add_staged`] (in a buffer kept from group to group).
    #[inline]
    pub(crate) fn stage(&mut self, key: UsageKey, sums: UsageSums) {
        self.pending.push((hash(&key), key, sums));
    }

    /// Adds the staged charges, prefetching the slots of those ahead.
    pub(crate) fn add_staged(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for (hash, _, _) in pending.iter().take(PREFETCH_AHEAD) {
            self.table.prefetch(*hash);
        }
        for i in 0..pending.len() {
            if let Some((ahead, _, _)) = pending.get(i + PREFETCH_AHEAD) {
                self.table.prefetch(*ahead);
            }
            let (hash, key, sums) = &pending[i];
            self.add_hashed(*hash, key, sums);
        }
        pending.clear();
        self.pending = pending;
    }

    fn add_hashed(&mut self, hash: u64, key: &UsageKey, sums: &UsageSums) {
        let probe = Slot::new(key);
        let (at, found) = self.table.probe(hash, &probe);
        if found {
            self.table.as_mut_slice()[at].add(sums);
            return;
        }
        if let Some((old, next)) = &mut self.old {
            let (old_at, in_old) = old.probe(hash, &probe);
            // Slots before `next` have moved: a key found there is in the new table already.
            if in_old && old_at >= *next {
                old.as_mut_slice()[old_at].add(sums);
                return;
            }
        }
        let mut slot = probe;
        slot.add(sums);
        assert!(!slot.is_empty(), "usage sums always count an impression");
        self.table.as_mut_slice()[at] = slot;
        self.len += 1;
        self.migrate();
        if self.old.is_none() && self.len * 4 > self.table.len() * 3 {
            let bigger = Slots::zeroed(self.table.len() * 2);
            self.old = Some((std::mem::replace(&mut self.table, bigger), 0));
            self.growths += 1;
        }
    }

    /// Moves a few slots of the old table into the new one.
    fn migrate(&mut self) {
        let Some((old, next)) = &mut self.old else {
            return;
        };
        let end = (*next + MIGRATE_PER_INSERT).min(old.len());
        for at in *next..end {
            let slot = old.as_slice()[at];
            if slot.is_empty() {
                continue;
            }
            let (to, found) = self.table.probe(hash(&slot.key()), &slot);
            debug_assert!(!found, "a key is in one table only");
            self.table.as_mut_slice()[to] = slot;
        }
        *next = end;
        if end == old.len() {
            self.old = None;
        }
    }

    /// Every key with its sums, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (UsageKey, UsageSums)> + '_ {
        let unmoved = self
            .old
            .as_ref()
            .map_or(&[][..], |(old, next)| &old.as_slice()[*next..]);
        self.table
            .as_slice()
            .iter()
            .chain(unmoved)
            .filter(|slot| !slot.is_empty())
            .map(|slot| (slot.key(), slot.sums()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn key(n: u64, category: bool) -> UsageKey {
        UsageKey {
            day: (n % 5) as i32 - 2,
            member_id: (n % 7) as i64,
            data_category_id: category.then_some((n % 3) as i64),
            segment: (n / 3) as u32,
            buyer_id: n as i64 * 31 % 101,
        }
    }

    fn sums(n: u64) -> UsageSums {
        UsageSums {
            impressions: 1,
            data_cost: n as i64,
            payout: -(n as i64),
            platform_fee: 7,
        }
    }

    fn contents(table: &UsageTable) -> HashMap<UsageKey, (u64, i64, i64, i64)> {
        let mut out = HashMap::new();
        for (key, s) in table.iter() {
            let previous = out.insert(key, (s.impressions, s.data_cost, s.payout, s.platform_fee));
            assert!(previous.is_none(), "{key:?} listed twice");
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Through any number of migrations, at any point of one, the table holds exactly the
        /// sums a plain map does, each key once.
        #[test]
        fn sums_match_a_map_through_growth(
            charges in prop::collection::vec((0u64..3000, any::<bool>()), 1..4000),
            batch in 1usize..64,
        ) {
            let mut table = UsageTable::default();
            let mut model: HashMap<UsageKey, (u64, i64, i64, i64)> = HashMap::new();
            let chunks = charges.len().div_ceil(batch);
            for (i, chunk) in charges.chunks(batch).enumerate() {
                table.add_all(chunk.iter().map(|&(n, c)| (key(n, c), sums(n))));
                for &(n, c) in chunk {
                    let s = sums(n);
                    let entry = model.entry(key(n, c)).or_default();
                    entry.0 += s.impressions;
                    entry.1 += s.data_cost;
                    entry.2 += s.payout;
                    entry.3 += s.platform_fee;
                }
                prop_assert_eq!(table.len(), model.len());
                // At points spread over the run (during migrations too) and at the end.
                if i % 7 == 0 || i + 1 == chunks {
                    prop_assert_eq!(&contents(&table), &model);
                }
            }
        }
    }

    /// Minor page faults of the calling thread so far.
    fn thread_minor_faults() -> i64 {
        // SAFETY: getrusage fills the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
            0
        );
        usage.ru_minflt
    }

    /// Inserting into a fresh table faults each page once: its first access is a write, so
    /// the kernel never maps the zero page only to replace it (and flush other cores' TLBs)
    /// at the first store.
    #[test]
    fn a_fresh_page_faults_once() {
        let pages = 2048;
        let mut slots = Slots::zeroed(pages * SLOTS_PER_PAGE);
        let before = thread_minor_faults();
        for page in 0..pages {
            let probe = Slot::new(&key(page as u64, false));
            let (at, found) = slots.probe((page * SLOTS_PER_PAGE) as u64, &probe);
            assert_eq!((at, found), (page * SLOTS_PER_PAGE, false));
            let mut slot = probe;
            slot.add(&sums(1));
            slots.as_mut_slice()[at] = slot;
        }
        let faults = thread_minor_faults() - before;
        assert!(
            faults <= pages as i64 + pages as i64 / 8,
            "{faults} faults for {pages} pages"
        );
    }

    #[test]
    fn growth_is_incremental_and_memory_follows_the_keys() {
        let mut table = UsageTable::default();
        let mut migrating = 0;
        for n in 0..200_000u64 {
            table.add(key(n, n % 2 == 0), sums(n));
            migrating += usize::from(table.old.is_some());
        }
        assert_eq!(table.len(), contents(&table).len());
        assert!(table.growths() >= 10);
        // Each migration of a table of c slots is spread over c / MIGRATE_PER_INSERT inserts
        // (about a third of them all told), never done in one.
        assert!(
            migrating > 200_000 / 5,
            "{migrating} inserts during a migration"
        );
        let per_key = table.bytes() as f64 / table.len() as f64;
        assert!(
            (64.0 * 4.0 / 3.0..=64.0 * 8.0).contains(&per_key),
            "{per_key} B per key"
        );
    }
}
