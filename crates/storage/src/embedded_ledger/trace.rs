//! What the writer thread can tell about a slow group commit besides its phases: the page
//! faults it took (`getrusage(RUSAGE_THREAD)`), how long it waited on the run queue
//! (`/proc/thread-self/schedstat`), how often it was preempted, and which tables grew.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// Counters of the calling thread, cumulative since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ThreadCounters {
    pub(crate) minor_faults: u64,
    pub(crate) major_faults: u64,
    pub(crate) involuntary_switches: u64,
    /// Time spent on a CPU, and runnable but waiting for one, in nanoseconds (0 where not
    /// available).
    pub(crate) on_cpu_ns: u64,
    pub(crate) run_delay_ns: u64,
}

impl ThreadCounters {
    /// The counters of two threads together.
    pub(crate) fn plus(self, other: ThreadCounters) -> ThreadCounters {
        ThreadCounters {
            minor_faults: self.minor_faults + other.minor_faults,
            major_faults: self.major_faults + other.major_faults,
            involuntary_switches: self.involuntary_switches + other.involuntary_switches,
            on_cpu_ns: self.on_cpu_ns + other.on_cpu_ns,
            run_delay_ns: self.run_delay_ns + other.run_delay_ns,
        }
    }

    pub(crate) fn since(self, earlier: ThreadCounters) -> ThreadCounters {
        ThreadCounters {
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
            major_faults: self.major_faults.saturating_sub(earlier.major_faults),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(earlier.involuntary_switches),
            on_cpu_ns: self.on_cpu_ns.saturating_sub(earlier.on_cpu_ns),
            run_delay_ns: self.run_delay_ns.saturating_sub(earlier.run_delay_ns),
        }
    }
}

/// Reads [`ThreadCounters`] of the thread that created it.
pub(crate) struct CounterReader {
    /// `/proc/thread-self/schedstat`, opened by this thread (so it stays this thread's).
    schedstat: Option<File>,
    buffer: [u8; 96],
}

impl CounterReader {
    /// Must be called on the thread to be observed.
    pub(crate) fn for_this_thread() -> CounterReader {
        CounterReader {
            schedstat: File::open("/proc/thread-self/schedstat").ok(),
            buffer: [0; 96],
        }
    }

    pub(crate) fn read(&mut self) -> ThreadCounters {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0;
        let mut counters = ThreadCounters::default();
        if ok {
            counters.minor_faults = usage.ru_minflt as u64;
            counters.major_faults = usage.ru_majflt as u64;
            counters.involuntary_switches = usage.ru_nivcsw as u64;
        }
        if let Some(file) = &self.schedstat {
            // "<on-CPU ns> <run-queue wait ns> <time slices>"
            if let Ok(n) = file.read_at(&mut self.buffer, 0) {
                let text = std::str::from_utf8(&self.buffer[..n]).unwrap_or("");
                let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0));
                counters.on_cpu_ns = fields.next().unwrap_or(0);
                counters.run_delay_ns = fields.next().unwrap_or(0);
            }
        }
        counters
    }
}

/// One group commit that took longer than [`super::SLOW_COMMIT`], with what may explain it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowCommit {
    /// From taking its first batch to answering its last caller.
    pub total: Duration,
    pub take: Duration,
    pub frames: Duration,
    pub write: Duration,
    pub sync: Duration,
    pub apply: Duration,
    /// How long the durable group waited for the applier to finish the previous one.
    pub apply_wait: Duration,
    /// How long its first batch had waited in the queue before the writer took it.
    pub queued: Duration,
    pub records: u64,
    pub batches: u64,
    /// Page faults the writer and the applier took for this group (the counters below are
    /// for both threads: the writer's up to the `fdatasync`, the applier's for `apply`).
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Time on a CPU, and runnable but not running (the rest was blocked, mostly in
    /// `fdatasync`, or waiting for the applier).
    pub on_cpu: Duration,
    pub run_delay: Duration,
    /// Times the threads were preempted.
    pub preempted: u64,
    /// Dedup index and usage map shards that grew (rehashed) during the commit.
    pub index_growths: u64,
    pub usage_growths: u64,
    /// Time the writer spent starting a new log segment just before this group (the group's
    /// first batch waited for it; also traced when the commit itself was fast).
    pub rotation_before: Duration,
}

/// Slow commits kept for [`super::EmbeddedLedger::slow_commits`]: the first this many after
/// open (later ones are only counted).
pub(crate) const KEPT_SLOW_COMMITS: usize = 1024;
