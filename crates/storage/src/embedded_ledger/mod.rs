//! The embedded billing ledger: an append-only, group-committed log of metered impressions,
//! with the dedup index and the usage aggregates kept in memory and rebuilt from the log at
//! open.
//!
//! # Shape
//!
//! - **Appends** ([`Ledger::append`]) validate and encode their records in the caller's task
//!   (the body of each frame and the keyed SipHash-128 of its impression id), then go through a
//!   bounded queue ([`LedgerConfig::queue_capacity`] batches; full → [`LedgerError::Saturated`],
//!   nothing accepted) to one writer thread. The writer takes a batch, drains what else is
//!   queued (bounded by [`LedgerConfig::max_group_bytes`]), decides which records are new
//!   (a new id enters the index at once with the location its frame will have, so the first
//!   occurrence wins, within a group too), appends their frames with one `write`,
//!   `fdatasync`s once and publishes the durable length. It then hands the group to the
//!   applier thread and goes on with the next group, so group n + 1 is written and synced
//!   while group n is applied. The applier updates the usage map and the sparse index, in
//!   order, then answers every caller (handing the batches back, so they are freed in the
//!   callers' tasks). Acknowledged means durable *and* applied, so a report read after an
//!   acknowledgement includes it; nothing is visible before it is durable: readers ignore
//!   index locations beyond the durable length. Duplicates are not logged.
//! - **Log** (`log.rs`, `codec.rs`): `ledger-<seq>.log` segments of `[len][crc32][payload]`
//!   frames, one per record, each carrying its sequence number and its place in its group
//!   commit. A new segment starts after the group that passes
//!   [`LedgerConfig::segment_bytes`]; segments are kept forever (the ledger is the billing
//!   record).
//! - **Dedup index**: 1 024 open-addressing tables (`id_table.rs`: one 24-byte slot per id,
//!   one cache miss per lookup, prefetched by the writer a few records ahead) from the id hash
//!   to the record's location (segment, offset), so one table's doubling copies 1/1 024 of the
//!   index, behind 64 locks of 16 tables each. The writer takes all 64 locks once per batch it takes (a reader waits at most
//!   that long, about 0.1 ms for 1 000 records), not one per record. An impression id counts
//!   once, forever. [`Ledger::get`] looks the location up and reads the frame back with
//!   `pread`, checking its CRC and that the id really matches.
//! - **Usage**: a map (day, member, category, segment, buyer) → (impressions, data cost,
//!   payout, platform fee), updated for every `Charged` charge as records are applied: an
//!   open-addressing table that grows incrementally (`usage_table.rs`; no insert copies the
//!   map, and a growing table's pages are faulted in as the migration reaches them).
//!   [`Ledger::usage`] filters and sorts it; its cost depends on the number of distinct keys,
//!   never on the number of impressions.
//! - **Records** ([`Ledger::records`]): a sparse index (one mark every 1024 records) from
//!   sequence numbers to locations; a page reads the log forward from the mark before the
//!   cursor. The cursor is the sequence number of the last record looked at. A page reads at
//!   most [`LedgerConfig::max_scan_bytes`] of log, so with a selective filter it may hold fewer
//!   than `limit` records (even none) while `next` is `Some`: keep reading until `None`.
//!
//! # Memory
//!
//! Per record: one index entry of 24 bytes (16-byte hash, 8-byte location) plus hashbrown's
//! control byte, at a load of 44–88 %: 28–57 B (52.4 B measured at 2 M records appended, 57 B
//! after reopening them). The maps double early at staggered fill levels, so their rehashes do
//! not all land in one group commit. The sparse index adds
//! 0.02 B. The usage map grows with distinct (day, member, category, segment, buyer) keys
//! (one 64-byte slot per key at a load of 3/8–3/4: 85–171 B per key, twice that for the old
//! table during a migration; 64 MiB measured at 600 k keys), not with impressions. Records themselves stay on disk.
//!
//! # Recovery
//!
//! Open reads every segment in order, checks that sequence numbers follow without gaps and
//! applies each group once its last record is read. Damage ends a segment's valid part: in an
//! older segment that refuses to open. In the newest segment, the group being written when the
//! process died may be torn (never acknowledged): it is cut off, back to the end of the last
//! complete group. But if a valid frame of a *later* group follows the damage, the damaged
//! group had been made durable (the writer starts a group only after the previous one's
//! `fdatasync`), so that is corruption and open refuses too — acknowledged data is never
//! dropped silently. Damage inside the newest group itself cannot be told from a torn write.
//!
//! # Files
//!
//! `LOCK` (flock, one process per ledger), `hash.key` (the 16-byte secret of the id hash,
//! mode 0600), `ledger-<seq>.log`.

mod codec;
mod id_table;
mod log;
mod trace;
mod usage_table;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::RwLock;
use segmart_domain::billing::{ChargeStatus, Micros, day_of};
use siphasher::sip128::{Hasher128, SipHasher13};
use tracing::info;

use crate::embedded::files;
use crate::ledger::{
    AppendOutcome, Ledger, LedgerError, LedgerRecord, LedgerStats, RecordPage, UsageFilter,
    UsageRow,
};
use codec::{FRAME_HEADER, MAX_PAYLOAD, MIN_PAYLOAD, PayloadHeader};
use id_table::IdTable;
pub use trace::SlowCommit;
use usage_table::UsageTable;
use writer::{EncodedBatch, Request, Writer};

/// Group commits slower than this are traced (see [`EmbeddedLedger::slow_commits`]).
pub const SLOW_COMMIT: Duration = Duration::from_millis(5);

/// Settings of an [`EmbeddedLedger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Batches that may wait for the writer; beyond it appends answer `Saturated`.
    pub queue_capacity: usize,
    /// A new log segment starts once the current one reaches this size.
    pub segment_bytes: u64,
    /// Upper bound of one group commit's log bytes (more batches wait for the next one).
    /// 1 MiB (about 6 000 records) by default: a group's records, index entries and usage
    /// slots then stay in the CPU caches while it is applied. Under overload 16 MiB groups of
    /// 35 000 records cost 2.5× more per record than small ones, which made the backlog grow.
    pub max_group_bytes: usize,
    /// Log bytes one [`Ledger::records`] call reads at most.
    pub max_scan_bytes: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            queue_capacity: 1024,
            segment_bytes: 256 << 20,
            max_group_bytes: 1 << 20,
            max_scan_bytes: 64 << 20,
        }
    }
}

/// What opening the ledger found and how long it took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerRecovery {
    pub records: u64,
    pub segments: u64,
    /// Bytes cut from the end of the newest segment (an unacknowledged torn group).
    pub truncated_bytes: u64,
    pub duration: Duration,
}

/// Memory of the in-memory structures, from their hash tables' bucket counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerMemory {
    pub index_entries: u64,
    pub index_bytes: u64,
    pub usage_keys: u64,
    pub usage_bytes: u64,
}

/// Where a record's frame starts: segment number in the high 32 bits, byte offset in the low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location(u64);

impl Location {
    fn new(segment: u64, offset: u64) -> Location {
        debug_assert!(segment <= u64::from(u32::MAX) && offset <= u64::from(u32::MAX));
        Location(segment << 32 | offset)
    }

    fn segment(self) -> u64 {
        self.0 >> 32
    }

    fn offset(self) -> u64 {
        self.0 & u64::from(u32::MAX)
    }
}

/// A multiply-rotate hash for usage keys (small integers chosen by the catalog): several
/// times cheaper than SipHash on the writer's path.
#[derive(Default)]
struct UsageHasher(u64);

impl UsageHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for UsageHasher {
    fn finish(&self) -> u64 {
        // Spread the high bits down: hashbrown takes its bucket from the low bits.
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_i32(&mut self, value: i32) {
        self.add(value as u64);
    }

    fn write_i64(&mut self, value: i64) {
        self.add(value as u64);
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_isize(&mut self, value: isize) {
        self.add(value as u64);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }
}

/// Tables of the dedup index: each doubling copies 1/1024 of it (about 4 000 entries at 4 M
/// records), so it stalls the writer for a fraction of a millisecond. Uniform hashes fill all
/// tables alike, so left alone they would all double in the same group commit; table `i`
/// doubles early instead (see [`IdTable::grow_early`]), which spreads the doublings over time.
const INDEX_SHARDS: usize = 1024;
/// The maps are locked in groups of this many: the writer takes 64 locks per batch.
const INDEX_SHARDS_PER_LOCK: usize = 16;
const INDEX_LOCKS: usize = INDEX_SHARDS / INDEX_SHARDS_PER_LOCK;

/// A group of maps of the dedup index behind one lock.
type IdGroup = [IdTable; INDEX_SHARDS_PER_LOCK];

/// The map (0..[`INDEX_SHARDS`]) an id hash belongs to, as its lock group and its place in
/// the group.
#[inline]
fn shard_of(hash: u128) -> (usize, usize) {
    let shard = (hash >> 118) as usize % INDEX_SHARDS;
    (shard / INDEX_SHARDS_PER_LOCK, shard % INDEX_SHARDS_PER_LOCK)
}
/// Largest encoded batch one append may carry (a group holds at most `max_group_bytes` plus
/// one batch, so every frame offset fits the 32 bits of a [`Location`]).
const MAX_BATCH_BYTES: usize = 1 << 30;
/// One sparse-index mark every this many records.
const MARK_EVERY: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct UsageKey {
    day: i32,
    member_id: i64,
    data_category_id: Option<i64>,
    segment: u32,
    buyer_id: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct UsageSums {
    impressions: u64,
    data_cost: Micros,
    payout: Micros,
    platform_fee: Micros,
}

/// A segment file open for reading, with the length readers may read (what is durable and
/// applied).
struct SegmentFile {
    file: File,
    committed_len: AtomicU64,
}

/// The whole dedup index, all its locks held for writing (see [`Shared::index_mut`]).
pub(crate) struct IndexWriter<'a> {
    groups: [parking_lot::RwLockWriteGuard<'a, IdGroup>; INDEX_LOCKS],
    growths: &'a AtomicU64,
}

impl IndexWriter<'_> {
    /// Enters a new id with its (future) location; `false` if the id is known.
    #[inline]
    pub(crate) fn insert_new(&mut self, hash: u128, location: Location) -> bool {
        let (group, at) = shard_of(hash);
        let shard = &mut self.groups[group][at];
        if shard.grow_early(group * INDEX_SHARDS_PER_LOCK + at, INDEX_SHARDS) {
            self.growths.fetch_add(1, Ordering::Relaxed);
        }
        shard.insert_new(hash, location.0)
    }

    /// Starts loading the slot [`IndexWriter::insert_new`] will look at for `hash`.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u128) {
        let (group, at) = shard_of(hash);
        self.groups[group][at].prefetch(hash);
    }
}

/// State shared by the ledger handle and its writer thread.
pub(crate) struct Shared {
    dir: PathBuf,
    config: LedgerConfig,
    hash_keys: (u64, u64),
    index: Box<[RwLock<IdGroup>]>,
    /// The usage map; the applier holds its write lock while it applies a group, so a report
    /// always sees whole groups.
    usage: RwLock<UsageTable>,
    segments: RwLock<BTreeMap<u64, Arc<SegmentFile>>>,
    /// (seq, location) of every MARK_EVERY-th record and of each segment's first record.
    marks: RwLock<Vec<(u64, Location)>>,
    /// The last sequence number applied (0: none).
    visible_seq: AtomicU64,
    duplicates: AtomicU64,
    log_bytes: AtomicU64,
    /// Group commits since open, and the time spent in their `write` + `fdatasync`.
    groups: AtomicU64,
    write_micros: AtomicU64,
    /// Microseconds spent in each [`Phase`] of the group commits since open.
    phase_micros: [AtomicU64; PHASES],
    /// The longest group commit (first batch taken to last caller answered) and the longest
    /// `fdatasync`, in microseconds.
    slowest_commit_micros: AtomicU64,
    slowest_sync_micros: AtomicU64,
    /// Shards of the dedup index that grew since open.
    index_growths: AtomicU64,
    /// The first [`trace::KEPT_SLOW_COMMITS`] group commits slower than [`SLOW_COMMIT`], and
    /// how many there were in all.
    slow_commits: Mutex<Vec<SlowCommit>>,
    slow_commit_count: AtomicU64,
}

/// The steps of a group commit, timed separately (see [`CommitProfile`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Take,
    Frames,
    Write,
    Sync,
    Apply,
}

pub(crate) const PHASES: usize = 5;

impl Shared {
    pub(crate) fn add_phase(&self, phase: Phase, time: Duration) {
        self.phase_micros[phase as usize].fetch_add(time.as_micros() as u64, Ordering::Relaxed);
        if let Phase::Sync = phase {
            self.slowest_sync_micros
                .fetch_max(time.as_micros() as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_commit(&self, time: Duration) {
        self.slowest_commit_micros
            .fetch_max(time.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn index_growths(&self) -> u64 {
        self.index_growths.load(Ordering::Relaxed)
    }

    pub(crate) fn add_slow_commit(&self, commit: SlowCommit) {
        self.slow_commit_count.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.slow_commits.lock().expect("not poisoned");
        if kept.len() < trace::KEPT_SLOW_COMMITS {
            kept.push(commit);
        }
    }
}

/// Where the writer's time went, summed over the group commits since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitProfile {
    pub commits: u64,
    /// Deciding new or duplicate for each record (dedup index inserts).
    pub take: Duration,
    /// Building the group's frames.
    pub frames: Duration,
    /// The `write` of the group.
    pub write: Duration,
    /// Its `fdatasync`.
    pub sync: Duration,
    /// Applying the records to the usage map and the sparse index.
    pub apply: Duration,
    /// The longest group commit, from taking its first batch to answering its last caller.
    pub slowest_commit: Duration,
    pub slowest_sync: Duration,
}

impl Shared {
    fn hash_id(&self, id: &[u8]) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
        hasher.write(id);
        hasher.finish128().as_u128()
    }

    /// The lock of `hash`'s map, and the map's place in its group.
    fn shard(&self, hash: u128) -> (&RwLock<IdGroup>, usize) {
        let (group, at) = shard_of(hash);
        (&self.index[group], at)
    }

    /// The dedup index locked for writing, all 64 locks at once: the writer enters a whole
    /// batch's ids under one hold instead of taking a lock (a full barrier, which keeps the
    /// next insert's cache misses from overlapping this one's) per record.
    pub(crate) fn index_mut(&self) -> IndexWriter<'_> {
        IndexWriter {
            groups: std::array::from_fn(|i| self.index[i].write()),
            growths: &self.index_growths,
        }
    }

    /// Removes an id whose group could not be written.
    pub(crate) fn forget(&self, hash: u128) {
        let (group, at) = self.shard(hash);
        group.write()[at].remove(hash);
    }

    fn location(&self, hash: u128) -> Option<Location> {
        let (group, at) = self.shard(hash);
        group.read()[at].get(hash).map(Location)
    }

    /// Whether the frame at `location` is durable and applied (the writer enters ids in the
    /// index before their group is written).
    fn is_committed(&self, location: Location) -> bool {
        self.segment(location.segment())
            .is_some_and(|file| location.offset() < file.committed_len.load(Ordering::Acquire))
    }

    /// Applies durable records (in sequence order) to the usage map and the marks, and to the
    /// index when `index` (recovery; the writer entered them already). Returns how many
    /// migrations of the usage map this started.
    pub(crate) fn apply<'a>(
        &self,
        records: impl Iterator<Item = (u64, Location, u128, &'a LedgerRecord)>,
        index: bool,
    ) -> u64 {
        let mut usage = self.usage.write();
        let mut marks = self.marks.write();
        let growths = usage.growths();
        // Recovery enters ids through the writer's path, so the maps double at their staggered
        // fill levels here too (filled in one go they would all be due at once afterwards).
        let mut ids = index.then(|| self.index_mut());
        for (seq, location, hash, record) in records {
            if let Some(ids) = ids.as_mut() {
                ids.insert_new(hash, location);
            }
            let day = day_of(record.at);
            let charged = record
                .charges
                .iter()
                .filter(|charge| charge.status == ChargeStatus::Charged);
            for charge in charged {
                let key = UsageKey {
                    day,
                    member_id: charge.member_id,
                    data_category_id: charge.data_category_id,
                    segment: charge.segment.0,
                    buyer_id: record.buyer_id,
                };
                let sums = UsageSums {
                    impressions: 1,
                    data_cost: charge.data_cost_micros,
                    payout: charge.payout_micros,
                    platform_fee: charge.platform_fee_micros,
                };
                usage.stage(key, sums);
            }
            let new_segment = marks
                .last()
                .is_none_or(|(_, last)| last.segment() != location.segment());
            if seq % MARK_EVERY == 1 || new_segment {
                marks.push((seq, location));
            }
        }
        usage.add_staged();
        usage.growths() - growths
    }

    fn publish_segment_len(&self, segment: u64, len: u64) {
        if let Some(file) = self.segments.read().get(&segment) {
            file.committed_len.store(len, Ordering::Release);
        }
    }

    fn add_segment(&self, segment: u64, len: u64) -> io::Result<()> {
        let file = File::open(log::segment_path(&self.dir, segment))?;
        self.segments.write().insert(
            segment,
            Arc::new(SegmentFile {
                file,
                committed_len: AtomicU64::new(len),
            }),
        );
        Ok(())
    }

    fn segment(&self, segment: u64) -> Option<Arc<SegmentFile>> {
        self.segments.read().get(&segment).cloned()
    }

    /// Reads the payload of the frame at `location` (bounded by what is committed).
    fn read_payload(&self, location: Location, out: &mut Vec<u8>) -> Result<(), LedgerError> {
        let file = self
            .segment(location.segment())
            .ok_or_else(|| corrupt(format!("segment {} is not open", location.segment())))?;
        let committed = file.committed_len.load(Ordering::Acquire);
        let offset = location.offset();
        let mut header = [0u8; FRAME_HEADER];
        if offset + FRAME_HEADER as u64 > committed {
            return Err(corrupt(format!("no frame at {offset}")));
        }
        file.file
            .read_exact_at(&mut header, offset)
            .map_err(io_error)?;
        let (len, crc) = codec::frame_header(&header);
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len)
            || offset + (FRAME_HEADER + len) as u64 > committed
        {
            return Err(corrupt(format!("bad frame length at {offset}")));
        }
        out.resize(len, 0);
        file.file
            .read_exact_at(out, offset + FRAME_HEADER as u64)
            .map_err(io_error)?;
        if crc32fast::hash(out) != crc {
            return Err(corrupt(format!(
                "CRC mismatch in segment {} at {offset}",
                location.segment()
            )));
        }
        Ok(())
    }
}

fn corrupt(what: String) -> LedgerError {
    LedgerError::Backend(format!("ledger log is damaged: {what}"))
}

fn io_error(error: io::Error) -> LedgerError {
    LedgerError::Backend(format!("ledger log read failed: {error}"))
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads frames forward from a location, across segments, up to what is committed.
struct FrameCursor<'a> {
    shared: &'a Shared,
    segment: u64,
    file: Option<Arc<SegmentFile>>,
    offset: u64,
    buffer: Vec<u8>,
    /// Log offset of `buffer[0]`.
    buffer_start: u64,
    read_bytes: u64,
}

const CURSOR_CHUNK: usize = 1 << 20;

impl<'a> FrameCursor<'a> {
    fn new(shared: &'a Shared, from: Location) -> Self {
        FrameCursor {
            shared,
            segment: from.segment(),
            file: shared.segment(from.segment()),
            offset: from.offset(),
            buffer: Vec::new(),
            buffer_start: from.offset(),
            read_bytes: 0,
        }
    }

    /// The next frame's payload, or `None` at the end of what is committed.
    fn next_payload(&mut self) -> Result<Option<&[u8]>, LedgerError> {
        loop {
            let Some(file) = self.file.clone() else {
                return Ok(None);
            };
            let committed = file.committed_len.load(Ordering::Acquire);
            if self.offset + FRAME_HEADER as u64 > committed {
                // The end of this segment: on to the next one, if there is one.
                let next = self
                    .shared
                    .segments
                    .read()
                    .range(self.segment + 1..)
                    .next()
                    .map(|(&seq, file)| (seq, Arc::clone(file)));
                let Some((seq, file)) = next else {
                    return Ok(None);
                };
                self.segment = seq;
                self.file = Some(file);
                self.offset = log::SEGMENT_HEADER;
                self.buffer.clear();
                self.buffer_start = self.offset;
                continue;
            }
            let header = self.ensure(&file, FRAME_HEADER, committed)?;
            let (len, crc) = codec::frame_header(header);
            if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len)
                || self.offset + (FRAME_HEADER + len) as u64 > committed
            {
                return Err(corrupt(format!(
                    "bad frame in segment {} at {}",
                    self.segment, self.offset
                )));
            }
            let segment = self.segment;
            let offset = self.offset;
            self.ensure(&file, FRAME_HEADER + len, committed)?;
            let start = (self.offset - self.buffer_start) as usize + FRAME_HEADER;
            self.offset += (FRAME_HEADER + len) as u64;
            let payload = &self.buffer[start..start + len];
            if crc32fast::hash(payload) != crc {
                return Err(corrupt(format!(
                    "CRC mismatch in segment {segment} at {offset}"
                )));
            }
            return Ok(Some(payload));
        }
    }

    /// Makes `buffer` hold `n` bytes from `offset` on, and returns them.
    fn ensure(
        &mut self,
        file: &SegmentFile,
        n: usize,
        committed: u64,
    ) -> Result<&[u8], LedgerError> {
        if self.offset < self.buffer_start
            || (self.offset - self.buffer_start) as usize + n > self.buffer.len()
        {
            let want = (n.max(CURSOR_CHUNK) as u64).min(committed - self.offset) as usize;
            self.buffer.resize(want, 0);
            file.file
                .read_exact_at(&mut self.buffer, self.offset)
                .map_err(io_error)?;
            self.buffer_start = self.offset;
            self.read_bytes += want as u64;
        }
        let from = (self.offset - self.buffer_start) as usize;
        Ok(&self.buffer[from..from + n])
    }
}

struct Threads {
    writer: Option<JoinHandle<()>>,
    /// The directory's flock, released at shutdown.
    lock: Option<File>,
}

/// The embedded billing ledger. See the module documentation.
pub struct EmbeddedLedger {
    shared: Arc<Shared>,
    sender: SyncSender<Request>,
    /// Set when shutdown starts; appends then answer `ShuttingDown`.
    closed: AtomicBool,
    threads: Mutex<Threads>,
    recovery: LedgerRecovery,
}

/// While held, the writer thread waits (so appends queue up); see [`EmbeddedLedger::hold_writer`].
pub struct WriterHold {
    _release: SyncSender<()>,
}

impl EmbeddedLedger {
    /// Opens (or creates) the ledger in `dir`: takes its lock, replays the log into the dedup
    /// index and the usage map, and starts the writer thread. Blocking; async callers use
    /// `spawn_blocking`.
    pub fn open(dir: &Path, config: LedgerConfig) -> Result<EmbeddedLedger, LedgerError> {
        Self::open_io(dir, config)
            .map_err(|error| LedgerError::Backend(format!("cannot open the ledger: {error}")))
    }

    fn open_io(dir: &Path, config: LedgerConfig) -> io::Result<EmbeddedLedger> {
        if config.queue_capacity == 0
            || config.max_group_bytes == 0
            || config.max_group_bytes > MAX_BATCH_BYTES
            || config.segment_bytes < log::SEGMENT_HEADER
            || config.segment_bytes > 2 << 30
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "queue_capacity must be positive, max_group_bytes 1 B–1 GiB and \
                 segment_bytes 16 B–2 GiB",
            ));
        }
        let started = Instant::now();
        std::fs::create_dir_all(dir)?;
        let lock = files::lock_dir(dir)?;
        let key = files::load_or_create_hash_key(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            hash_keys: (
                u64::from_le_bytes(key[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(key[8..].try_into().expect("8 bytes")),
            ),
            index: (0..INDEX_LOCKS)
                .map(|_| RwLock::new(std::array::from_fn(|_| IdTable::default())))
                .collect(),
            usage: RwLock::new(UsageTable::default()),
            segments: RwLock::new(BTreeMap::new()),
            marks: RwLock::new(Vec::new()),
            visible_seq: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
            phase_micros: Default::default(),
            slowest_commit_micros: AtomicU64::new(0),
            slowest_sync_micros: AtomicU64::new(0),
            index_growths: AtomicU64::new(0),
            slow_commits: Mutex::new(Vec::new()),
            slow_commit_count: AtomicU64::new(0),
        });
        let (log, recovery) = recover(&shared)?;
        let recovery = LedgerRecovery {
            duration: started.elapsed(),
            ..recovery
        };
        info!(
            dir = %dir.display(),
            records = recovery.records,
            segments = recovery.segments,
            truncated_bytes = recovery.truncated_bytes,
            millis = recovery.duration.as_millis() as u64,
            "ledger recovered"
        );
        let (sender, receiver) = sync_channel(shared.config.queue_capacity);
        let writer = Writer::new(Arc::clone(&shared), receiver, log, recovery.records + 1);
        let writer = writer.run()?;
        Ok(EmbeddedLedger {
            shared,
            sender,
            closed: AtomicBool::new(false),
            threads: Mutex::new(Threads {
                writer: Some(writer),
                lock: Some(lock),
            }),
            recovery,
        })
    }

    /// What opening the ledger found.
    pub fn recovery(&self) -> &LedgerRecovery {
        &self.recovery
    }

    /// Group commits since open and the time their `write` + `fdatasync` took in total.
    pub fn group_commits(&self) -> (u64, Duration) {
        (
            self.shared.groups.load(Ordering::Relaxed),
            Duration::from_micros(self.shared.write_micros.load(Ordering::Relaxed)),
        )
    }

    /// Where the writer's time went since open.
    pub fn commit_profile(&self) -> CommitProfile {
        let micros = |value: &AtomicU64| Duration::from_micros(value.load(Ordering::Relaxed));
        let phase = |phase: Phase| micros(&self.shared.phase_micros[phase as usize]);
        CommitProfile {
            commits: self.shared.groups.load(Ordering::Relaxed),
            take: phase(Phase::Take),
            frames: phase(Phase::Frames),
            write: phase(Phase::Write),
            sync: phase(Phase::Sync),
            apply: phase(Phase::Apply),
            slowest_commit: micros(&self.shared.slowest_commit_micros),
            slowest_sync: micros(&self.shared.slowest_sync_micros),
        }
    }

    /// Group commits slower than [`SLOW_COMMIT`] since open: how many, and the first
    /// thousand or so with their phases and what the writer thread went through meanwhile.
    pub fn slow_commits(&self) -> (u64, Vec<SlowCommit>) {
        (
            self.shared.slow_commit_count.load(Ordering::Relaxed),
            self.shared
                .slow_commits
                .lock()
                .expect("not poisoned")
                .clone(),
        )
    }

    /// Memory held by the dedup index and the usage map.
    pub fn memory(&self) -> LedgerMemory {
        let mut memory = LedgerMemory::default();
        for group in self.shared.index.iter() {
            for shard in group.read().iter() {
                memory.index_entries += shard.len() as u64;
                memory.index_bytes += shard.bytes();
            }
        }
        let usage = self.shared.usage.read();
        memory.usage_keys = usage.len() as u64;
        memory.usage_bytes = usage.bytes();
        memory
    }

    /// Makes the writer thread wait until the returned hold is dropped, once everything queued
    /// before is committed; appends meanwhile queue up (and answer `Saturated` once the queue
    /// is full). For tests of back-pressure; blocking.
    #[doc(hidden)]
    pub fn hold_writer(&self) -> Result<WriterHold, LedgerError> {
        let (held, is_held) = sync_channel(1);
        let (release, wait) = sync_channel(1);
        self.sender
            .send(Request::Hold {
                held,
                release: wait,
            })
            .map_err(|_| LedgerError::ShuttingDown)?;
        is_held.recv().map_err(|_| LedgerError::ShuttingDown)?;
        Ok(WriterHold { _release: release })
    }

    /// Stops accepting appends, commits everything queued, stops the writer and releases the
    /// directory lock. Later calls do nothing.
    pub fn shutdown_blocking(&self) -> Result<(), LedgerError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = sync_channel(1);
        let result = match self.sender.send(Request::Shutdown { reply }) {
            Ok(()) => answer
                .recv()
                .unwrap_or_else(|_| Err("ledger writer stopped".into())),
            Err(_) => Err("ledger writer thread is gone".into()),
        };
        let mut threads = self.threads.lock().expect("not poisoned");
        if let Some(writer) = threads.writer.take() {
            let _ = writer.join();
        }
        threads.lock = None;
        result.map_err(LedgerError::Backend)
    }

    fn encode(&self, records: Vec<LedgerRecord>) -> Result<EncodedBatch, LedgerError> {
        let mut batch = EncodedBatch {
            hashes: Vec::with_capacity(records.len()),
            bodies: Vec::with_capacity(records.len() * 160),
            ends: Vec::with_capacity(records.len()),
            records: Vec::new(),
            queued_at: Instant::now(),
        };
        for (i, record) in records.iter().enumerate() {
            codec::encode_body(record, &mut batch.bodies).map_err(|error| {
                LedgerError::Backend(match error {
                    codec::Unencodable::ImpressionId => {
                        format!("record {i}: the impression id must be 1–128 bytes")
                    }
                    codec::Unencodable::TooLarge => format!("record {i} is too large"),
                })
            })?;
            batch.ends.push(batch.bodies.len());
            batch
                .hashes
                .push(self.shared.hash_id(record.impression_id.as_bytes()));
            if batch.bodies.len() > MAX_BATCH_BYTES {
                return Err(LedgerError::Backend(
                    "the batch is larger than 1 GiB: split it".into(),
                ));
            }
        }
        batch.records = records;
        // Stamped when it is ready to queue: the encoding is not time spent waiting.
        batch.queued_at = Instant::now();
        Ok(batch)
    }
}

impl Drop for EmbeddedLedger {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown_blocking() {
            tracing::error!(%error, "ledger shutdown failed");
        }
    }
}

/// A group being read back at open: its frames' locations and records.
type PendingGroup = Vec<(Location, LedgerRecord)>;

/// Replays every segment into `shared`; returns the writer positioned after the last complete
/// group.
fn recover(shared: &Shared) -> io::Result<(log::LogWriter, LedgerRecovery)> {
    let dir = &shared.dir;
    let segments = log::list_segments(dir)?;
    let mut report = LedgerRecovery {
        segments: segments.len() as u64,
        ..LedgerRecovery::default()
    };
    for (index, pair) in segments.windows(2).enumerate() {
        if pair[1] != pair[0] + 1 {
            return Err(invalid_data(format!(
                "ledger segment {} is missing (after segment {}, #{index})",
                pair[0] + 1,
                pair[0]
            )));
        }
    }
    let mut next_seq = 1u64;
    // Where each segment's records end, as recovered.
    let mut lengths = Vec::with_capacity(segments.len());
    for (index, &segment) in segments.iter().enumerate() {
        if segment > u64::from(u32::MAX) {
            return Err(invalid_data(format!(
                "ledger segment {segment} out of range"
            )));
        }
        let newest = index + 1 == segments.len();
        let mut group: PendingGroup = Vec::new();
        let mut complete_end = log::SEGMENT_HEADER;
        let scan = log::scan_segment(dir, segment, |offset, payload| {
            let (header, record) = codec::decode_payload(payload).map_err(|_| {
                invalid_data(format!(
                    "ledger segment {segment} holds a record at byte {offset} that does not decode"
                ))
            })?;
            let expected = next_seq + group.len() as u64;
            if header.seq != expected || header.group_index as usize != group.len() {
                return Err(invalid_data(format!(
                    "ledger segment {segment} at byte {offset}: record {} where {expected} \
                     (index {} of its group) was expected",
                    header.seq,
                    group.len()
                )));
            }
            group.push((Location::new(segment, offset), record));
            if header.is_group_end() {
                shared.apply(
                    group.iter().enumerate().map(|(i, (location, record))| {
                        (
                            next_seq + i as u64,
                            *location,
                            shared.hash_id(record.impression_id.as_bytes()),
                            record,
                        )
                    }),
                    true,
                );
                next_seq += group.len() as u64;
                group.clear();
                complete_end = offset + (FRAME_HEADER + payload.len()) as u64;
            }
            Ok(())
        })?;
        if scan.valid_len == 0 && !(newest && scan.file_len < log::SEGMENT_HEADER) {
            return Err(invalid_data(format!(
                "ledger segment {segment} has no valid header"
            )));
        }
        // A tail of zeros is space allocated ahead that no group reached.
        let clean = (scan.valid_len == scan.file_len || scan.zero_tail) && group.is_empty();
        if !clean {
            if !newest {
                return Err(invalid_data(format!(
                    "ledger segment {segment} is damaged at byte {} and is not the newest",
                    scan.valid_len
                )));
            }
            if let Some(at) = log::later_group_after(dir, segment, scan.valid_len, next_seq)? {
                return Err(invalid_data(format!(
                    "ledger segment {segment} is damaged at byte {}, before a record committed \
                     later (at byte {at}): refusing to drop acknowledged records",
                    scan.valid_len
                )));
            }
            let cut = if scan.valid_len == 0 { 0 } else { complete_end };
            report.truncated_bytes = scan.file_len - cut;
            info!(
                segment,
                bytes = report.truncated_bytes,
                "cutting the unacknowledged torn tail of the ledger log"
            );
        }
        let len = if clean {
            scan.valid_len
        } else if scan.valid_len == 0 {
            0
        } else {
            complete_end
        };
        lengths.push(len);
    }
    report.records = next_seq - 1;
    let log = match segments.last().zip(lengths.last()) {
        Some((&segment, &len)) => log::LogWriter::reopen(dir, segment, len)?,
        None => log::LogWriter::create(dir, 1)?,
    };
    shared.visible_seq.store(report.records, Ordering::Release);
    let mut log_bytes = 0;
    for (&segment, &scanned) in segments.iter().zip(&lengths) {
        // An older segment's length is where its records end (it may end in allocated zeros).
        let len = if segment == log.seq() {
            log.len()
        } else {
            scanned
        };
        log_bytes += len;
        shared.add_segment(segment, len)?;
    }
    if segments.is_empty() {
        log_bytes = log.len();
        shared.add_segment(log.seq(), log.len())?;
    }
    shared.log_bytes.store(log_bytes, Ordering::Relaxed);
    Ok((log, report))
}

fn matches(filter: &UsageFilter, record: &LedgerRecord) -> bool {
    let day = day_of(record.at);
    filter.from_day.is_none_or(|from| day >= from)
        && filter.to_day.is_none_or(|to| day <= to)
        && filter.buyer_id.is_none_or(|buyer| record.buyer_id == buyer)
        && filter
            .member_id
            .is_none_or(|member| record.charges.iter().any(|c| c.member_id == member))
}

#[async_trait]
impl Ledger for EmbeddedLedger {
    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<AppendOutcome>, LedgerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LedgerError::ShuttingDown);
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.encode(records)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.sender.try_send(Request::Append { batch, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(LedgerError::Saturated),
            Err(TrySendError::Disconnected(_)) => return Err(LedgerError::ShuttingDown),
        }
        match answer.await {
            Ok((result, batch)) => {
                drop(batch);
                result
            }
            Err(_) => Err(LedgerError::ShuttingDown),
        }
    }

    async fn get(
        &self,
        impression_ids: &[String],
    ) -> Result<Vec<Option<LedgerRecord>>, LedgerError> {
        let mut payload = Vec::new();
        let mut out = Vec::with_capacity(impression_ids.len());
        for id in impression_ids {
            let hash = self.shared.hash_id(id.as_bytes());
            let Some(location) = self
                .shared
                .location(hash)
                .filter(|&l| self.shared.is_committed(l))
            else {
                out.push(None);
                continue;
            };
            self.shared.read_payload(location, &mut payload)?;
            if codec::impression_id(&payload).ok() != Some(id.as_bytes()) {
                // A 128-bit hash collision: the id itself was never recorded.
                out.push(None);
                continue;
            }
            let (_, record) = codec::decode_payload(&payload)
                .map_err(|_| corrupt(format!("undecodable record at {location:?}")))?;
            out.push(Some(record));
        }
        Ok(out)
    }

    async fn records(
        &self,
        filter: &UsageFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<RecordPage, LedgerError> {
        let visible = self.shared.visible_seq.load(Ordering::Acquire);
        let start = after.unwrap_or(0).saturating_add(1);
        if start > visible {
            return Ok(RecordPage {
                records: Vec::new(),
                next: None,
            });
        }
        if limit == 0 {
            return Ok(RecordPage {
                records: Vec::new(),
                next: Some(start - 1),
            });
        }
        let from = {
            let marks = self.shared.marks.read();
            let at = marks.partition_point(|(seq, _)| *seq <= start);
            match at.checked_sub(1) {
                Some(i) => marks[i].1,
                None => return Err(corrupt("no mark for the first record".into())),
            }
        };
        let mut cursor = FrameCursor::new(&self.shared, from);
        let mut records = Vec::new();
        let mut last_seen = start - 1;
        // The scan bound applies once the page has moved past the cursor, so every call
        // makes progress.
        while last_seen < visible
            && records.len() < limit
            && (last_seen < start || cursor.read_bytes < self.shared.config.max_scan_bytes)
        {
            let Some(payload) = cursor.next_payload()? else {
                break;
            };
            let header = PayloadHeader::decode(payload)
                .map_err(|_| corrupt("undecodable record header".into()))?;
            if header.seq < start {
                continue;
            }
            if header.seq > visible {
                break;
            }
            last_seen = header.seq;
            let (_, record) = codec::decode_payload(payload)
                .map_err(|_| corrupt(format!("undecodable record {}", header.seq)))?;
            if matches(filter, &record) {
                records.push(record);
            }
        }
        Ok(RecordPage {
            records,
            next: (last_seen < visible).then_some(last_seen),
        })
    }

    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, LedgerError> {
        // The applier applies a group under the write lock: a report sees whole groups.
        let usage = self.shared.usage.read();
        let mut rows: Vec<UsageRow> = usage
            .iter()
            .filter(|(key, _)| {
                filter.from_day.is_none_or(|from| key.day >= from)
                    && filter.to_day.is_none_or(|to| key.day <= to)
                    && filter.member_id.is_none_or(|m| key.member_id == m)
                    && filter.buyer_id.is_none_or(|b| key.buyer_id == b)
            })
            .map(|(key, sums)| UsageRow {
                day: key.day,
                member_id: key.member_id,
                data_category_id: key.data_category_id,
                segment: key.segment,
                buyer_id: key.buyer_id,
                impressions: sums.impressions,
                data_cost_micros: sums.data_cost,
                payout_micros: sums.payout,
                platform_fee_micros: sums.platform_fee,
            })
            .collect();
        drop(usage);
        rows.sort_unstable();
        Ok(rows)
    }

    fn stats(&self) -> LedgerStats {
        LedgerStats {
            records: self.shared.visible_seq.load(Ordering::Acquire),
            duplicates: self.shared.duplicates.load(Ordering::Relaxed),
            log_bytes: self.shared.log_bytes.load(Ordering::Relaxed),
        }
    }

    async fn shutdown(&self) -> Result<(), LedgerError> {
        // The writer needs no runtime; waiting here only holds this task's thread for as long
        // as the queue takes to drain.
        self.shutdown_blocking()
    }
}
