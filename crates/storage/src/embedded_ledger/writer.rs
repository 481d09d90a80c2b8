//! The single writer thread: dedup, group commit to the log, then apply to memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use tracing::{debug, error};

use super::codec::{self, FRAME_HEADER, PayloadHeader};
use super::log::LogWriter;
use super::trace::{CounterReader, SlowCommit};
use super::{Location, PHASES, Phase, SLOW_COMMIT, Shared};
use crate::ledger::{AppendOutcome, LedgerError, LedgerRecord};

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
    requests: Vec<(EncodedBatch, AppendReply, Vec<AppendOutcome>)>,
    entries: Vec<Entry>,
    /// The phases of the group being committed.
    phases: [Duration; PHASES],
    /// The writer thread's counters, opened on the thread (`None` until `run` starts).
    counters: Option<CounterReader>,
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
        }
    }

    fn phase(&mut self, phase: Phase, time: Duration) {
        self.phases[phase as usize] = time;
        self.shared.add_phase(phase, time);
    }

    pub(crate) fn run(mut self) {
        self.counters = Some(CounterReader::for_this_thread());
        let mut next: Option<Request> = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => match self.receiver.recv() {
                    Ok(request) => request,
                    Err(_) => return,
                },
            };
            match request {
                Request::Append { batch, reply } => next = self.commit_group(batch, reply),
                Request::Hold { held, release } => {
                    let _ = held.send(());
                    let _ = release.recv();
                }
                Request::Shutdown { reply } => return self.finish(reply),
            }
        }
    }

    /// Commits `first` plus whatever appends are queued behind it (up to the group size) with
    /// one write and one `fdatasync`, applies them, then answers every caller. Returns a
    /// request other than an append that ended the group, if any.
    fn commit_group(&mut self, first: EncodedBatch, reply: AppendReply) -> Option<Request> {
        let max_bytes = self.shared.config.max_group_bytes as u64;
        let started = Instant::now();
        let queued = started.saturating_duration_since(first.queued_at);
        let counters_before = self.counters.as_mut().map(CounterReader::read);
        let growths_before = self.shared.growths();
        self.phases = [Duration::ZERO; PHASES];
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
        let result = self.write_and_apply();
        if result.is_err() {
            // Nothing of the group is durable: its ids were never recorded.
            for entry in &self.entries {
                let hash = self.requests[entry.request].0.hashes[entry.record];
                self.shared.forget(hash);
            }
        }
        let duplicates: u64 = self
            .requests
            .iter()
            .map(|(_, _, outcomes)| {
                outcomes
                    .iter()
                    .filter(|o| **o == AppendOutcome::Duplicate)
                    .count() as u64
            })
            .sum();
        if result.is_ok() {
            self.shared
                .duplicates
                .fetch_add(duplicates, Ordering::Relaxed);
        }
        let batches = self.requests.len() as u64;
        for (batch, reply, outcomes) in self.requests.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(outcomes),
                Err(reason) => Err(LedgerError::Backend(reason.clone())),
            };
            let _ = reply.send((answer, Some(batch)));
        }
        let total = started.elapsed();
        self.shared.add_commit(total);
        if total >= SLOW_COMMIT {
            self.trace_slow(total, queued, batches, counters_before, growths_before);
        }
        next
    }

    fn trace_slow(
        &mut self,
        total: Duration,
        queued: Duration,
        batches: u64,
        counters_before: Option<super::trace::ThreadCounters>,
        growths_before: (u64, u64),
    ) {
        let counters = match (self.counters.as_mut(), counters_before) {
            (Some(reader), Some(before)) => reader.read().since(before),
            _ => Default::default(),
        };
        let growths = self.shared.growths();
        let phase = |phase: Phase| self.phases[phase as usize];
        let commit = SlowCommit {
            total,
            take: phase(Phase::Take),
            frames: phase(Phase::Frames),
            write: phase(Phase::Write),
            sync: phase(Phase::Sync),
            apply: phase(Phase::Apply),
            queued,
            records: self.entries.len() as u64,
            batches,
            minor_faults: counters.minor_faults,
            major_faults: counters.major_faults,
            on_cpu: Duration::from_nanos(counters.on_cpu_ns),
            run_delay: Duration::from_nanos(counters.run_delay_ns),
            preempted: counters.involuntary_switches,
            index_growths: growths.0 - growths_before.0,
            usage_growths: growths.1 - growths_before.1,
        };
        debug!(?commit, "slow ledger group commit");
        self.shared.add_slow_commit(commit);
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
            for (record, &hash) in batch.hashes.iter().enumerate() {
                let location = Location::new(segment, base + self.group_bytes);
                if self.shared.insert_new(hash, location) {
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

    fn write_and_apply(&mut self) -> Result<(), String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        if self.entries.is_empty() {
            return Ok(());
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
                seq: self.next_seq + index as u64,
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
        let applying = Instant::now();
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        let first_seq = self.next_seq;
        self.next_seq += u64::from(count);
        self.shared.publish_segment_len(segment, self.log.len());
        self.shared
            .log_bytes
            .fetch_add(self.buffer.len() as u64, Ordering::Relaxed);
        {
            let requests = &self.requests;
            let applied = self.entries.iter().enumerate().map(|(index, entry)| {
                let batch = &requests[entry.request].0;
                (
                    first_seq + index as u64,
                    entry.location,
                    batch.hashes[entry.record],
                    &batch.records[entry.record],
                )
            });
            self.shared.apply(applied, false);
        }
        self.phase(Phase::Apply, applying.elapsed());
        self.shared
            .visible_seq
            .store(self.next_seq - 1, Ordering::Release);
        if self.buffer.capacity() > 2 * self.shared.config.max_group_bytes.max(1 << 20) {
            self.buffer = Vec::new();
        }
        if self.log.len() >= self.shared.config.segment_bytes {
            // The group is durable and answered whatever happens here.
            self.rotate();
        }
        Ok(())
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
        let _ = reply.send(match &self.failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        });
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
