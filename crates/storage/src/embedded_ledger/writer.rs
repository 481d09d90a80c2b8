//! The single writer thread: dedup, group commit to the log, then apply to memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error};

use super::codec::{self, FRAME_HEADER, PayloadHeader};
use super::log::LogWriter;
use super::trace::{CounterReader, SlowCommit, ThreadCounters};
use super::{Location, PHASES, Phase, SLOW_COMMIT, Shared};
use crate::ledger::{AppendOutcome, LedgerError, LedgerRecord};

/// Records whose dedup slot is prefetched ahead of the one being entered, so that their cache
/// misses overlap instead of queueing one after the other.
const PREFETCH_AHEAD: usize = 8;

/// One `append` call, encoded by the caller.
pub(crate) struct EncodedBatch {
    pub(crate) records: Vec<LedgerRecord>,
    /// Keyed hash of each record's impression id.
    pub(crate) hashes: Vec<u128>,
    /// The records' bodies, back to back; record `i` ends at `ends[i]`.
    pub(crate) bodies: Vec<u8>,
    pub(crate) ends: Vec<usize>,
    /// When it was queued for the writer.
    pub(crate) queued_at: Instant,
}

impl EncodedBatch {
    fn body(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bodies[start..self.ends[i]]
    }
}

/// The answer to an append, with its batch handed back so the caller's task (not the writer
/// thread) frees it.
pub(crate) type AppendAnswer = (
    Result<Vec<AppendOutcome>, LedgerError>,
    Option<EncodedBatch>,
);
pub(crate) type AppendReply = tokio::sync::oneshot::Sender<AppendAnswer>;

/// What the writer thread is asked to do, in queue order.
pub(crate) enum Request {
    Append {
        batch: EncodedBatch,
        reply: AppendReply,
    },
    /// Stop until `release` is dropped (after saying so on `held`): lets tests fill the queue.
    Hold {
        held: SyncSender<()>,
        release: Receiver<()>,
    },
    /// Commit everything queued and stop.
    Shutdown {
        reply: SyncSender<Result<(), String>>,
    },
}

/// A record of the group being committed: which request, which record, where it goes.
struct Entry {
    request: usize,
    record: usize,
    location: Location,
}

type Requests = Vec<(EncodedBatch, AppendReply, Vec<AppendOutcome>)>;

/// A group whose write is over (durable, or failed with nothing of it recorded), handed to
/// the applier thread, which applies it and answers its callers.
struct Written {
    requests: Requests,
    entries: Vec<Entry>,
    /// Sequence number of its first record; `Err` if the write failed.
    result: Result<u64, String>,
    /// When the writer took its first batch, and how long that batch had been queued.
    started: Instant,
    queued: Duration,
    /// The writer's phases and counters for this group.
    phases: [Duration; PHASES],
    counters: ThreadCounters,
    index_growths: u64,
    /// Time the writer spent starting a new segment just before taking this group.
    rotation: Duration,
}

enum ToApplier {
    Group(Box<Written>),
    /// Answered once every group sent before is applied and answered.
    Barrier(SyncSender<()>),
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) receiver: Receiver<Request>,
    pub(crate) log: LogWriter,
    /// Sequence number of the next record.
    pub(crate) next_seq: u64,
    /// Set after a failed log write: the on-disk state is unknown, so appends are refused.
    pub(crate) failed: Option<String>,
    buffer: Vec<u8>,
    /// Log bytes the group taken so far will occupy (frame offsets are assigned as records
    /// are taken).
    group_bytes: u64,
    requests: Requests,
    entries: Vec<Entry>,
    /// The phases of the group being committed.
    phases: [Duration; PHASES],
    /// The writer thread's counters, opened on the thread (`None` until `run` starts).
    counters: Option<CounterReader>,
    /// The applier thread, and the vectors of applied groups it hands back for reuse.
    applier: Option<(SyncSender<ToApplier>, JoinHandle<()>)>,
    spares: Option<Receiver<(Requests, Vec<Entry>)>>,
    /// How long the last segment rotation took (reported with the next group).
    rotation: Duration,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        receiver: Receiver<Request>,
        log: LogWriter,
        next_seq: u64,
    ) -> Writer {
        Writer {
            shared,
            receiver,
            log,
            next_seq,
            failed: None,
            buffer: Vec::new(),
            group_bytes: 0,
            requests: Vec::new(),
            entries: Vec::new(),
            phases: [Duration::ZERO; PHASES],
            counters: None,
            applier: None,
            spares: None,
            rotation: Duration::ZERO,
        }
    }

    fn phase(&mut self, phase: Phase, time: Duration) {
        self.phases[phase as usize] = time;
        self.shared.add_phase(phase, time);
    }

    /// Runs the writer on this thread, with an applier thread behind it.
    pub(crate) fn run(mut self) -> std::io::Result<JoinHandle<()>> {
        // One group waiting for the applier while it applies another: the writer writes and
        // syncs group n + 1 while group n is applied, and waits beyond that.
        let (to_applier, applier_queue) = sync_channel(1);
        let (spare_sender, spares) = sync_channel(2);
        let applier = Applier {
            shared: Arc::clone(&self.shared),
            queue: applier_queue,
            spares: spare_sender,
            counters: None,
        };
        let applier = std::thread::Builder::new()
            .name("ledger-applier".into())
            .spawn(move || applier.run())?;
        self.applier = Some((to_applier, applier));
        self.spares = Some(spares);
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || self.serve())
    }

    fn serve(mut self) {
        self.counters = Some(CounterReader::for_this_thread());
        let mut next: Option<Request> = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => match self.receiver.recv() {
                    Ok(request) => request,
                    Err(_) => return self.stop_applier(),
                },
            };
            match request {
                Request::Append { batch, reply } => next = self.commit_group(batch, reply),
                Request::Hold { held, release } => {
                    // Everything queued before is committed and answered first.
                    self.applier_barrier();
                    let _ = held.send(());
                    let _ = release.recv();
                }
                Request::Shutdown { reply } => return self.finish(reply),
            }
        }
    }

    /// Commits `first` plus whatever appends are queued behind it (up to the group size) with
    /// one write and one `fdatasync`, then hands the group to the applier, which applies it
    /// and answers every caller. Returns a request other than an append that ended the group,
    /// if any.
    fn commit_group(&mut self, first: EncodedBatch, reply: AppendReply) -> Option<Request> {
        let max_bytes = self.shared.config.max_group_bytes as u64;
        let started = Instant::now();
        let queued = started.saturating_duration_since(first.queued_at);
        let counters_before = self.counters.as_mut().map(CounterReader::read);
        let index_growths_before = self.shared.index_growths();
        self.phases = [Duration::ZERO; PHASES];
        if let Some((requests, entries)) = self.spares.as_ref().and_then(|s| s.try_recv().ok()) {
            self.requests = requests;
            self.entries = entries;
        }
        self.entries.clear();
        self.group_bytes = 0;
        self.take(first, reply);
        let mut next = None;
        while self.group_bytes < max_bytes {
            match self.receiver.try_recv() {
                Ok(Request::Append { batch, reply }) => self.take(batch, reply),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.phase(Phase::Take, started.elapsed());
        let result = self.write();
        if result.is_err() {
            // Nothing of the group is durable: its ids were never recorded.
            for entry in &self.entries {
                let hash = self.requests[entry.request].0.hashes[entry.record];
                self.shared.forget(hash);
            }
        }
        let counters = match (self.counters.as_mut(), counters_before) {
            (Some(reader), Some(before)) => reader.read().since(before),
            _ => ThreadCounters::default(),
        };
        let written = Written {
            requests: std::mem::take(&mut self.requests),
            entries: std::mem::take(&mut self.entries),
            result,
            started,
            queued,
            phases: self.phases,
            counters,
            index_growths: self.shared.index_growths() - index_growths_before,
            rotation: std::mem::take(&mut self.rotation),
        };
        self.send_to_applier(ToApplier::Group(Box::new(written)));
        if self.buffer.capacity() > 2 * self.shared.config.max_group_bytes.max(1 << 20) {
            self.buffer = Vec::new();
        }
        if self.failed.is_none() && self.log.len() >= self.shared.config.segment_bytes {
            // The group is durable and will be answered whatever happens here.
            let rotating = Instant::now();
            self.rotate();
            self.rotation = rotating.elapsed();
        }
        next
    }

    /// Decides each record of `batch` (new or duplicate) and queues it for the group. A new
    /// id enters the dedup index at once with its future location, so later records of the
    /// group see it; readers ignore locations beyond what is durable.
    fn take(&mut self, batch: EncodedBatch, reply: AppendReply) {
        let request = self.requests.len();
        let mut outcomes = Vec::with_capacity(batch.records.len());
        if self.failed.is_none() {
            let segment = self.log.seq();
            let base = self.log.len();
            let mut index = self.shared.index_mut();
            for &hash in batch.hashes.iter().take(PREFETCH_AHEAD) {
                index.prefetch(hash);
            }
            for (record, &hash) in batch.hashes.iter().enumerate() {
                if let Some(&ahead) = batch.hashes.get(record + PREFETCH_AHEAD) {
                    index.prefetch(ahead);
                }
                let location = Location::new(segment, base + self.group_bytes);
                if index.insert_new(hash, location) {
                    outcomes.push(AppendOutcome::Recorded);
                    self.entries.push(Entry {
                        request,
                        record,
                        location,
                    });
                    self.group_bytes +=
                        (FRAME_HEADER + codec::PAYLOAD_HEADER + batch.body(record).len()) as u64;
                } else {
                    outcomes.push(AppendOutcome::Duplicate);
                }
            }
        }
        self.requests.push((batch, reply, outcomes));
    }

    /// Writes the group's frames and makes them durable; returns the sequence number of its
    /// first record.
    fn write(&mut self) -> Result<u64, String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        let first_seq = self.next_seq;
        if self.entries.is_empty() {
            return Ok(first_seq);
        }
        let framing = Instant::now();
        let count = u32::try_from(self.entries.len()).expect("groups are bounded in bytes");
        self.buffer.clear();
        self.buffer.reserve(self.group_bytes as usize);
        let segment = self.log.seq();
        for (index, entry) in self.entries.iter().enumerate() {
            debug_assert_eq!(
                entry.location,
                Location::new(segment, self.log.len() + self.buffer.len() as u64)
            );
            let header = PayloadHeader {
                seq: first_seq + index as u64,
                group_index: index as u32,
                group_count: count,
            };
            let body = self.requests[entry.request].0.body(entry.record);
            codec::push_frame(&mut self.buffer, header, body);
        }
        self.phase(Phase::Frames, framing.elapsed());
        let (write, sync) = match self.log.append(&self.buffer) {
            Ok(times) => times,
            Err(error) => return Err(self.fail("write", error)),
        };
        self.phase(Phase::Write, write);
        self.phase(Phase::Sync, sync);
        self.shared
            .write_micros
            .fetch_add((write + sync).as_micros() as u64, Ordering::Relaxed);
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        self.next_seq += u64::from(count);
        // Durable: `get` may read these frames from now on (the usage map and `records`
        // follow once the applier is done).
        self.shared.publish_segment_len(segment, self.log.len());
        self.shared
            .log_bytes
            .fetch_add(self.buffer.len() as u64, Ordering::Relaxed);
        Ok(first_seq)
    }

    fn send_to_applier(&mut self, message: ToApplier) {
        let sent = match &self.applier {
            Some((sender, _)) => sender.send(message),
            None => Err(std::sync::mpsc::SendError(message)),
        };
        if let Err(std::sync::mpsc::SendError(message)) = sent {
            // The applier is gone (it panicked): answer here rather than leave callers waiting.
            error!("ledger applier thread is gone");
            if let ToApplier::Group(written) = message {
                for (batch, reply, _) in written.requests {
                    let answer = Err(LedgerError::Backend("ledger applier stopped".into()));
                    let _ = reply.send((answer, Some(batch)));
                }
            }
        }
    }

    /// Waits until every group handed to the applier is applied and answered.
    fn applier_barrier(&mut self) {
        let (done, wait) = sync_channel(1);
        self.send_to_applier(ToApplier::Barrier(done));
        let _ = wait.recv();
    }

    fn stop_applier(&mut self) {
        if let Some((sender, thread)) = self.applier.take() {
            drop(sender);
            let _ = thread.join();
        }
    }

    /// Starts the next segment; on failure later appends are refused.
    fn rotate(&mut self) {
        if let Err(error) = self.log.rotate() {
            self.fail("rotation", error);
        } else if let Err(error) = self.shared.add_segment(self.log.seq(), self.log.len()) {
            self.fail("rotation", error);
        } else {
            self.shared
                .log_bytes
                .fetch_add(super::log::SEGMENT_HEADER, Ordering::Relaxed);
        }
    }

    fn fail(&mut self, what: &str, error: std::io::Error) -> String {
        let reason = format!("ledger log {what} failed, restart the ledger: {error}");
        error!(%error, "ledger log {what} failed, refusing appends");
        self.failed = Some(reason.clone());
        reason
    }

    fn finish(mut self, reply: SyncSender<Result<(), String>>) {
        // Appends that raced with the shutdown flag are still committed.
        loop {
            match self.receiver.try_recv() {
                Ok(Request::Append { batch, reply }) => {
                    if let Some(other) = self.commit_group(batch, reply) {
                        answer_after_shutdown(other);
                    }
                }
                Ok(other) => answer_after_shutdown(other),
                Err(_) => break,
            }
        }
        self.stop_applier();
        let _ = reply.send(match &self.failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        });
    }
}

/// The applier thread: applies durable groups to the usage map and the sparse index, in
/// order, then answers their callers.
struct Applier {
    shared: Arc<Shared>,
    queue: Receiver<ToApplier>,
    spares: SyncSender<(Requests, Vec<Entry>)>,
    counters: Option<CounterReader>,
}

impl Applier {
    fn run(mut self) {
        self.counters = Some(CounterReader::for_this_thread());
        while let Ok(message) = self.queue.recv() {
            match message {
                ToApplier::Group(written) => self.apply(*written),
                ToApplier::Barrier(done) => drop(done.send(())),
            }
        }
    }

    fn apply(&mut self, mut written: Written) {
        let applying = Instant::now();
        let waited = applying.saturating_duration_since(written.started);
        let counters_before = self.counters.as_mut().map(CounterReader::read);
        let mut usage_growths = 0;
        if let Ok(first_seq) = written.result
            && !written.entries.is_empty()
        {
            let requests = &written.requests;
            let applied = written.entries.iter().enumerate().map(|(index, entry)| {
                let batch = &requests[entry.request].0;
                (
                    first_seq + index as u64,
                    entry.location,
                    batch.hashes[entry.record],
                    &batch.records[entry.record],
                )
            });
            usage_growths = self.shared.apply(applied, false);
            let last = first_seq + written.entries.len() as u64 - 1;
            self.shared.visible_seq.store(last, Ordering::Release);
        }
        let apply = applying.elapsed();
        if !written.entries.is_empty() && written.result.is_ok() {
            self.shared.add_phase(Phase::Apply, apply);
        }
        written.phases[Phase::Apply as usize] = apply;
        if written.result.is_ok() {
            let duplicates: u64 = written
                .requests
                .iter()
                .map(|(_, _, outcomes)| {
                    outcomes
                        .iter()
                        .filter(|o| **o == AppendOutcome::Duplicate)
                        .count() as u64
                })
                .sum();
            self.shared
                .duplicates
                .fetch_add(duplicates, Ordering::Relaxed);
        }
        let batches = written.requests.len() as u64;
        let records = written.entries.len() as u64;
        for (batch, reply, outcomes) in written.requests.drain(..) {
            let answer = match &written.result {
                Ok(_) => Ok(outcomes),
                Err(reason) => Err(LedgerError::Backend(reason.clone())),
            };
            let _ = reply.send((answer, Some(batch)));
        }
        let total = written.started.elapsed();
        self.shared.add_commit(total);
        if total >= SLOW_COMMIT || written.rotation >= SLOW_COMMIT {
            let mine = match (self.counters.as_mut(), counters_before) {
                (Some(reader), Some(before)) => reader.read().since(before),
                _ => ThreadCounters::default(),
            };
            let counters = written.counters.plus(mine);
            let phase = |phase: Phase| written.phases[phase as usize];
            let commit = SlowCommit {
                total,
                take: phase(Phase::Take),
                frames: phase(Phase::Frames),
                write: phase(Phase::Write),
                sync: phase(Phase::Sync),
                apply,
                apply_wait: waited.saturating_sub(
                    phase(Phase::Take)
                        + phase(Phase::Frames)
                        + phase(Phase::Write)
                        + phase(Phase::Sync),
                ),
                queued: written.queued,
                records,
                batches,
                minor_faults: counters.minor_faults,
                major_faults: counters.major_faults,
                on_cpu: Duration::from_nanos(counters.on_cpu_ns),
                run_delay: Duration::from_nanos(counters.run_delay_ns),
                preempted: counters.involuntary_switches,
                index_growths: written.index_growths,
                rotation_before: written.rotation,
                usage_growths,
            };
            debug!(?commit, "slow ledger group commit");
            self.shared.add_slow_commit(commit);
        }
        written.entries.clear();
        let _ = self.spares.try_send((written.requests, written.entries));
    }
}

fn answer_after_shutdown(request: Request) {
    match request {
        Request::Append { batch, reply } => {
            drop(reply.send((Err(LedgerError::ShuttingDown), Some(batch))))
        }
        Request::Hold { held, .. } => drop(held.send(())),
        Request::Shutdown { reply } => drop(reply.send(Ok(()))),
    }
}
