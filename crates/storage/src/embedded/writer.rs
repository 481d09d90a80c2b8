//! The single writer thread: group commit to the WAL, then apply to the table.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread::JoinHandle;

use parking_lot::RwLock;
use tracing::{error, info};

use super::codec::{self, FRAME_HEADER, Malformed, Mutation, PayloadReader, pairs, words};
use super::table::{Key, SHARDS, Scratch, Table, compact_if_needed, prefetch_address};
use super::wal::Wal;
use super::{Padded, Shared, snapshot};
use crate::profile::{ProfileStoreError, WriteBatch};

/// Where an answer goes: an async caller's oneshot or a blocking caller's channel.
pub(crate) enum Reply<T> {
    Async(tokio::sync::oneshot::Sender<T>),
    Blocking(std::sync::mpsc::SyncSender<T>),
}

impl<T> Reply<T> {
    pub(crate) fn send(self, value: T) {
        // A caller that stopped waiting is not an error.
        match self {
            Reply::Async(sender) => drop(sender.send(value)),
            Reply::Blocking(sender) => drop(sender.send(value)),
        }
    }
}

/// What the writer thread is asked to do, in queue order.
pub(crate) enum Request {
    Write {
        batch: WriteBatch,
        reply: Reply<Result<(), ProfileStoreError>>,
    },
    /// Raise the store's clock floor to `to_ms` once everything queued before is applied
    /// (clean-up runs at that time afterwards).
    Advance { to_ms: i64, reply: Reply<()> },
    /// Rotate the WAL and write a snapshot covering everything queued before.
    Snapshot { reply: Reply<io::Result<()>> },
    /// Commit everything queued, snapshot if configured, and stop.
    Shutdown { reply: Reply<io::Result<()>> },
}

/// A mutation waiting in a shard bucket: its key (read while bucketing, so the table can be
/// prefetched before the mutation is decoded again) and where it is in the group buffer.
#[derive(Clone, Copy)]
struct Pending {
    key: Key,
    at_s: i64,
    /// Byte offset of the mutation in the group buffer.
    offset: u32,
}

/// Mutations applied per write-lock hold, so readers of a shard never wait long.
const APPLY_CHUNK: usize = 64;
/// How far ahead of the mutation being applied the applier prefetches the next mutations'
/// bytes in the group buffer and their home slots (a group is megabytes and slots are
/// random: both are cache misses otherwise, and they were half of the applier's time).
const PREFETCH_SLOTS_AHEAD: usize = 8;
/// Cache lines of slots prefetched from a coming mutation's home slot (a new profile's
/// insertion scans its run to the first empty slot).
const PREFETCH_RUN_LINES: usize = 6;
/// How far ahead the applier looks up a coming mutation's slot (by then in cache) and
/// prefetches its membership block.
const PREFETCH_BLOCKS_AHEAD: usize = 3;

/// Applies decoded WAL payloads to the tables, shard by shard. Used by the writer after each
/// group commit and by recovery, so replay runs exactly the code that applied the batch.
pub(crate) struct Applier {
    buckets: Vec<Vec<Pending>>,
    /// One per thread applying (two when recovering: shards split in halves).
    workers: Vec<ShardApplier>,
}

/// Buffers for applying mutations to one shard at a time.
struct ShardApplier {
    scratch: Scratch,
    removes: Vec<u32>,
    adds: Vec<[u32; 2]>,
    expiry_secs: i64,
}

impl Applier {
    /// `threads` > 1 applies disjoint halves of the shards in parallel (recovery, when no
    /// reader competes for the cores).
    pub(crate) fn new(expiry_secs: i64, threads: usize) -> Applier {
        Applier {
            buckets: (0..SHARDS).map(|_| Vec::new()).collect(),
            workers: (0..threads.clamp(1, 2))
                .map(|_| ShardApplier {
                    scratch: Scratch::default(),
                    removes: Vec::new(),
                    adds: Vec::new(),
                    expiry_secs,
                })
                .collect(),
        }
    }

    /// Applies the payloads at `ranges` of `buffer` in order. Returns the largest effective
    /// time seen.
    pub(crate) fn apply(
        &mut self,
        shards: &[Padded<RwLock<Table>>],
        buffer: &[u8],
        ranges: &[(usize, usize)],
    ) -> Result<i64, Malformed> {
        assert!(
            buffer.len() < u32::MAX as usize,
            "group buffer beyond 4 GiB"
        );
        let mut latest = i64::MIN;
        for &(start, end) in ranges {
            let payload = &buffer[start..end];
            let mut reader = PayloadReader::new(payload)?;
            let at_s = reader.effective_ms.div_euclid(1000);
            latest = latest.max(reader.effective_ms);
            loop {
                let offset = start + reader.position(payload);
                let Some(mutation) = reader.next_mutation()? else {
                    break;
                };
                let key = Key::from_profile(mutation.key());
                self.buckets[key.shard()].push(Pending {
                    key,
                    at_s,
                    offset: offset as u32,
                });
            }
        }
        let buckets = &mut self.buckets;
        match self.workers.as_mut_slice() {
            [single] => single.apply_buckets(shards, buckets, buffer),
            [first, second, ..] => {
                let half = SHARDS / 2;
                let (low_buckets, high_buckets) = buckets.split_at_mut(half);
                let (low_shards, high_shards) = shards.split_at(half);
                std::thread::scope(|scope| {
                    scope.spawn(|| first.apply_buckets(low_shards, low_buckets, buffer));
                    second.apply_buckets(high_shards, high_buckets, buffer);
                });
            }
            [] => unreachable!("at least one worker"),
        }
        Ok(latest)
    }
}

impl ShardApplier {
    fn apply_buckets(
        &mut self,
        shards: &[Padded<RwLock<Table>>],
        buckets: &mut [Vec<Pending>],
        buffer: &[u8],
    ) {
        for (shard, bucket) in shards.iter().zip(buckets.iter_mut()) {
            if bucket.is_empty() {
                continue;
            }
            let mut guard = shard.0.upgradable_read();
            // Grown once for the whole bucket, counting every mutation as a possible new
            // profile (at most one bucket's worth of extra room), so no chunk below needs to.
            // Built beside the live slots (readers continue), swapped in briefly.
            if guard.needs_growth(bucket.len()) {
                let (slots, capacity) = guard.resized_slots(guard.grown_capacity(bucket.len()));
                let old = guard.with_upgraded(|table| table.install_slots(slots, capacity));
                drop(old);
            }
            for ahead in bucket.iter().take(PREFETCH_SLOTS_AHEAD) {
                prefetch_pending(&guard, buffer, ahead);
            }
            let mut start = 0;
            while start < bucket.len() {
                let end = (start + APPLY_CHUNK).min(bucket.len());
                guard.with_upgraded(|table| {
                    for index in start..end {
                        if let Some(ahead) = bucket.get(index + PREFETCH_SLOTS_AHEAD) {
                            prefetch_pending(table, buffer, ahead);
                        }
                        if let Some(ahead) = bucket.get(index + PREFETCH_BLOCKS_AHEAD) {
                            table.find_and_prefetch(ahead.key);
                        }
                        self.apply_one(table, buffer, bucket[index]);
                    }
                });
                start = end;
            }
            compact_if_needed(&mut guard);
            drop(guard);
            bucket.clear();
        }
    }

    fn apply_one(&mut self, table: &mut Table, buffer: &[u8], pending: Pending) {
        let mut bytes = &buffer[pending.offset as usize..];
        let mutation = codec::decode_mutation(&mut bytes).expect("decoded once already");
        match mutation {
            Mutation::Delete { key } => table.delete(Key::from_profile(key)),
            Mutation::Update {
                key,
                clear,
                removes,
                adds,
            } => {
                self.removes.clear();
                self.removes.extend(words(removes));
                self.adds.clear();
                self.adds
                    .extend(pairs(adds).map(|(segment, expiry)| [segment, expiry]));
                debug_assert_eq!(Key::from_profile(key), pending.key);
                let key = pending.key;
                while table
                    .apply_update(
                        key,
                        pending.at_s,
                        self.expiry_secs,
                        clear,
                        &self.removes,
                        &self.adds,
                        &mut self.scratch,
                    )
                    .is_err()
                {
                    // The spill area overflowed (rare): grow in place under the write lock.
                    let (slots, capacity) = table.resized_slots(table.grown_capacity(1));
                    drop(table.install_slots(slots, capacity));
                }
            }
        }
    }
}

/// Prefetches a coming mutation's bytes in the group buffer and its home slot.
#[inline]
fn prefetch_pending(table: &Table, buffer: &[u8], pending: &Pending) {
    let offset = pending.offset as usize;
    prefetch_address(buffer[offset..].as_ptr());
    // A mutation of 6.5 adds is 77 bytes: its end is usually on the next cache line.
    prefetch_address(buffer[offset..].as_ptr().wrapping_add(64));
    table.prefetch_run(pending.key, PREFETCH_RUN_LINES);
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) receiver: Receiver<Request>,
    pub(crate) wal: Wal,
    /// The store's clock: effective time of the last batch or clean-up (milliseconds).
    pub(crate) floor_ms: i64,
    /// WAL bytes appended since the last rotation.
    pub(crate) bytes_since_rotation: u64,
    pub(crate) applier: Applier,
    /// Set after a failed WAL write: the on-disk state is unknown, so writes are refused.
    pub(crate) failed: Option<String>,
    pub(crate) snapshot: Option<JoinHandle<()>>,
    buffer: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    replies: Vec<Reply<Result<(), ProfileStoreError>>>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        receiver: Receiver<Request>,
        wal: Wal,
        floor_ms: i64,
        bytes_since_rotation: u64,
    ) -> Writer {
        let expiry = shared.config.profile_expiry_secs;
        Writer {
            shared,
            receiver,
            wal,
            floor_ms,
            bytes_since_rotation,
            applier: Applier::new(expiry, 1),
            failed: None,
            snapshot: None,
            buffer: Vec::new(),
            ranges: Vec::new(),
            replies: Vec::new(),
        }
    }

    pub(crate) fn run(mut self) {
        let mut next: Option<Request> = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => match self.receiver.recv() {
                    Ok(request) => request,
                    Err(_) => return self.finish(None),
                },
            };
            match request {
                Request::Write { batch, reply } => {
                    next = self.commit_group(batch, reply);
                    if self.bytes_since_rotation >= self.shared.config.snapshot_after_wal_bytes
                        && self.snapshot.as_ref().is_none_or(|s| s.is_finished())
                    {
                        self.start_snapshot(None);
                    }
                }
                Request::Advance { to_ms, reply } => {
                    self.floor_ms = self.floor_ms.max(to_ms);
                    reply.send(());
                }
                Request::Snapshot { reply } => self.start_snapshot(Some(reply)),
                Request::Shutdown { reply } => return self.finish(Some(reply)),
            }
        }
    }

    /// Commits `first` plus whatever writes are queued behind it (up to the group size) as one
    /// WAL append and one `fdatasync`, applies them, then answers every caller. Returns a
    /// non-write request that ended the group, if any.
    fn commit_group(
        &mut self,
        first: WriteBatch,
        reply: Reply<Result<(), ProfileStoreError>>,
    ) -> Option<Request> {
        let max_bytes = self.shared.config.max_group_commit_bytes;
        self.buffer.clear();
        self.ranges.clear();
        self.replies.clear();
        self.encode(first, reply);
        let mut next = None;
        while self.buffer.len() < max_bytes {
            match self.receiver.try_recv() {
                Ok(Request::Write { batch, reply }) => self.encode(batch, reply),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.write_and_apply();
        next
    }

    fn encode(&mut self, batch: WriteBatch, reply: Reply<Result<(), ProfileStoreError>>) {
        let effective_ms = batch.at.millis().max(self.floor_ms);
        self.floor_ms = effective_ms;
        let start = self.buffer.len();
        codec::encode_record(&batch, effective_ms, &mut self.buffer);
        self.ranges.push((start + FRAME_HEADER, self.buffer.len()));
        self.replies.push(reply);
    }

    fn write_and_apply(&mut self) {
        if let Some(reason) = &self.failed {
            for reply in self.replies.drain(..) {
                reply.send(Err(ProfileStoreError::Backend(reason.clone())));
            }
            return;
        }
        if let Err(error) = self.wal.append(&self.buffer) {
            let reason = format!("write-ahead log write failed, restart the store: {error}");
            error!(%error, "profile store write-ahead log write failed, refusing writes");
            self.failed = Some(reason.clone());
            for reply in self.replies.drain(..) {
                reply.send(Err(ProfileStoreError::Backend(reason.clone())));
            }
            return;
        }
        let written = self.buffer.len() as u64;
        self.bytes_since_rotation += written;
        self.shared.wal_bytes.fetch_add(written, Ordering::Relaxed);
        self.applier
            .apply(&self.shared.shards, &self.buffer, &self.ranges)
            .expect("records encoded by this process decode");
        self.shared
            .batches_written
            .fetch_add(self.replies.len() as u64, Ordering::Relaxed);
        for reply in self.replies.drain(..) {
            reply.send(Ok(()));
        }
        if self.buffer.capacity() > 4 * self.shared.config.max_group_commit_bytes.max(1 << 20) {
            self.buffer = Vec::new();
        }
    }

    /// Rotates the WAL and dumps the tables on a snapshot thread; the reply (if any) is sent
    /// when the snapshot is durable and the WAL it covers is deleted.
    fn start_snapshot(&mut self, reply: Option<Reply<io::Result<()>>>) {
        if let Some(running) = self.snapshot.take() {
            let _ = running.join();
        }
        if let Some(reason) = &self.failed {
            if let Some(reply) = reply {
                reply.send(Err(io::Error::other(reason.clone())));
            }
            return;
        }
        if let Err(error) = self.wal.rotate() {
            error!(%error, "profile store could not rotate its write-ahead log");
            if let Some(reply) = reply {
                reply.send(Err(error));
            }
            return;
        }
        self.bytes_since_rotation = 0;
        self.shared
            .wal_bytes
            .fetch_add(super::wal::SEGMENT_HEADER, Ordering::Relaxed);
        let seq = self.wal.seq();
        let floor_ms = self.floor_ms;
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("segmart-snapshot".into())
            .spawn(move || {
                let result = take_snapshot(&shared, seq, floor_ms);
                if let Err(error) = &result {
                    error!(%error, seq, "profile store snapshot failed; the log is kept");
                }
                if let Some(reply) = reply {
                    reply.send(result);
                }
            });
        match spawned {
            Ok(handle) => self.snapshot = Some(handle),
            Err(error) => error!(%error, "cannot start the snapshot thread"),
        }
    }

    fn finish(mut self, reply: Option<Reply<io::Result<()>>>) {
        // Writes that raced with the shutdown flag are still committed.
        loop {
            match self.receiver.try_recv() {
                Ok(Request::Write { batch, reply }) => {
                    if let Some(next) = self.commit_group(batch, reply) {
                        self.answer_after_shutdown(next);
                    }
                }
                Ok(other) => self.answer_after_shutdown(other),
                Err(_) => break,
            }
        }
        if self.bytes_since_rotation >= self.shared.config.snapshot_on_shutdown_after_wal_bytes
            && self.bytes_since_rotation > 0
            && self.failed.is_none()
        {
            let (sender, receiver) = std::sync::mpsc::sync_channel(1);
            self.start_snapshot(Some(Reply::Blocking(sender)));
            if let Ok(Err(error)) = receiver.recv() {
                error!(%error, "profile store snapshot at shutdown failed");
            }
        }
        if let Some(running) = self.snapshot.take() {
            let _ = running.join();
        }
        info!(
            wal_bytes = self.shared.wal_bytes.load(Ordering::Relaxed),
            "profile store writer stopped"
        );
        if let Some(reply) = reply {
            reply.send(match &self.failed {
                Some(reason) => Err(io::Error::other(reason.clone())),
                None => Ok(()),
            });
        }
    }

    fn answer_after_shutdown(&mut self, request: Request) {
        match request {
            Request::Write { reply, .. } => reply.send(Err(ProfileStoreError::ShuttingDown)),
            Request::Advance { reply, .. } => reply.send(()),
            Request::Snapshot { reply } | Request::Shutdown { reply } => {
                reply.send(Err(io::Error::other("profile store is shutting down")))
            }
        }
    }
}

/// Writes snapshot `seq`, then deletes the WAL segments and snapshots it supersedes.
fn take_snapshot(shared: &Shared, seq: u64, floor_ms: i64) -> io::Result<()> {
    let dir = &shared.config.dir;
    let started = std::time::Instant::now();
    let written = snapshot::write_snapshot(
        dir,
        seq,
        floor_ms,
        shared.config.profile_expiry_secs,
        &shared.shards,
    )?;
    let listing = super::files::list(dir)?;
    let mut freed = 0u64;
    for old in listing.wal_segments.iter().filter(|&&s| s < seq) {
        let path = super::files::wal_path(dir, *old);
        freed += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(path)?;
    }
    for old in listing.snapshots.iter().filter(|&&s| s < seq) {
        std::fs::remove_file(super::files::snapshot_path(dir, *old))?;
    }
    shared.wal_bytes.fetch_sub(
        freed.min(shared.wal_bytes.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    info!(
        seq,
        profiles = written.profiles,
        links = written.links,
        bytes = written.bytes,
        millis = started.elapsed().as_millis() as u64,
        "profile store snapshot written"
    );
    Ok(())
}
