//! `segmart bench batch`: one 1 MB profile batch parsed, resolved and applied, on one core —
//! the CPU cost of a batch POST without HTTP.
//!
//! Two figures: parse + resolve alone (the request path before the store), and parse,
//! resolve and durable write through the store. The store's log lives on the directory given by `--dir`
//! (default: a temporary directory; use a tmpfs such as /dev/shm to leave fsync latency out and
//! see the CPU cost, or a real disk to see one group commit per batch). A third figure adds up
//! the CPU time both threads spent on each batch (the request thread's own clock plus the
//! store writer's `schedstat`): the cost on one core, without the time either waited for a CPU.

use std::sync::Arc;
use std::time::Instant;

use segmart_domain::segment::SegmentDraft;
use segmart_domain::{Clock, IdType, SegmentKey, SystemClock};
use segmart_server::directory::Directory;
use segmart_server::profiles::prepare_batch;
use segmart_storage::catalog::Catalog;
use segmart_storage::embedded::{EmbeddedConfig, EmbeddedProfileStore};
use segmart_storage::sqlite::SqliteCatalog;

use super::data::{Generator, batch_body, fmt_ns, percentile, segment_name};

#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// Batches to time.
    #[arg(long, default_value_t = 300)]
    pub batches: usize,
    /// Directory for the store's log (a temporary directory when absent).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

const SEGMENTS: u32 = 1_000;

pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir)?;
    }
    let temp = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let catalog = SqliteCatalog::open(&temp.path().join("catalog.sqlite")).await?;
    let now = clock.now();
    let provider = catalog.create_provider("bench", now).await?;
    let folder = catalog
        .create_folder(provider.id, "cookies", IdType::Cookie, now)
        .await?;
    for i in 0..SEGMENTS {
        let spec = SegmentDraft {
            name: Some(segment_name(i)),
            ..SegmentDraft::default()
        }
        .validate()?;
        let key = SegmentKey::parse(&segment_name(i)).map_err(anyhow::Error::msg)?;
        catalog.create_segment(folder.id, &key, &spec, now).await?;
    }
    let directory = Directory::load(&catalog).await?;
    let store_clock = clock.clone();
    let store_dir = temp.path().join("profiles");
    let store = tokio::task::spawn_blocking(move || {
        EmbeddedProfileStore::open(EmbeddedConfig::new(store_dir), store_clock)
    })
    .await??;
    let keyer = store.keyer().clone();

    let mut generator = Generator::new(7, SEGMENTS);
    let bodies: Vec<(Vec<u8>, usize)> = (0..16)
        .map(|_| batch_body(&mut generator, 1_048_576))
        .collect();
    println!(
        "segmart bench batch — {} batches of {} bytes / {} items ({} segments per item on average)\n",
        args.batches,
        bodies[0].0.len(),
        bodies[0].1,
        6.5
    );
    let bodies_count = bodies.len();
    let writer = writer_thread_dir();
    let steal_before = super::hiccup::steal_ticks();
    let (prepare, total, cpu, faults) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut prepare = Vec::with_capacity(args.batches);
            let mut total = Vec::with_capacity(args.batches);
            let mut cpu = Vec::with_capacity(args.batches);
            let faults_before = (own_minor_faults(), writer.as_deref().and_then(minor_faults));
            for i in 0..args.batches {
                let (body, _) = &bodies[i % bodies.len()];
                let writer_before = writer.as_deref().and_then(on_cpu_ns);
                let cpu_before = thread_cpu_ns();
                let started = Instant::now();
                let now = clock.now();
                let prepared = prepare_batch(body, &folder, &directory, &keyer, now)
                    .map_err(|e| anyhow::anyhow!(e.message))?;
                prepare.push(started.elapsed().as_nanos() as u64);
                store.write_blocking(prepared.batch)?;
                total.push(started.elapsed().as_nanos() as u64);
                let own = thread_cpu_ns() - cpu_before;
                let writer_after = writer.as_deref().and_then(on_cpu_ns);
                if let (Some(before), Some(after)) = (writer_before, writer_after) {
                    cpu.push(own + after.saturating_sub(before));
                }
            }
            let faults = (
                own_minor_faults() - faults_before.0,
                faults_before
                    .1
                    .zip(writer.as_deref().and_then(minor_faults))
                    .map(|(before, after)| after.saturating_sub(before)),
            );
            store.shutdown_blocking()?;
            Ok((prepare, total, cpu, faults))
        })
        .await??;
    let steal_ms = super::hiccup::steal_ticks().saturating_sub(steal_before) * 10;
    let report = |name: &str, mut samples: Vec<u64>| {
        samples.sort_unstable();
        println!(
            "{name:<46} p50 {:>9}  p99 {:>9}  max {:>9}",
            fmt_ns(percentile(&samples, 0.5)),
            fmt_ns(percentile(&samples, 0.99)),
            fmt_ns(*samples.last().unwrap_or(&0))
        );
    };
    report("parse + resolve (request path before the store)", prepare);
    report("parse + resolve + durable apply", total);
    if !cpu.is_empty() {
        // The first pass over the bodies inserts new profiles (and grows the empty store's
        // tables); every later batch updates profiles that exist.
        let inserts = cpu.len().min(bodies_count);
        report(
            "  CPU time of the above (this thread + writer)",
            cpu.clone(),
        );
        report(
            "    of which the insert batches (new profiles)",
            cpu[..inserts].to_vec(),
        );
        report("    of which the update batches", cpu[inserts..].to_vec());
    }
    // A virtual machine's thread CPU times include what the hypervisor took while the thread
    // was scheduled; this says how much that was, machine-wide, during the batches.
    println!("steal time during the batches (both CPUs): {steal_ms} ms");
    // A first touch of fresh memory is a page fault; on a virtual machine whose host backs
    // guest memory lazily one costs microseconds (a huge page, milliseconds), so faults on
    // the request path show up in the tail.
    println!(
        "page faults during the batches: request thread {}, store writer {}",
        faults.0,
        faults
            .1
            .map_or_else(|| "unknown".to_string(), |n| n.to_string())
    );
    Ok(())
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Minor page faults of the calling thread.
fn own_minor_faults() -> u64 {
    // SAFETY: an all-zero `rusage` is valid, and the call only fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_minflt as u64
}

/// The `/proc` directory of the profile store's writer thread (Linux), found by its name.
fn writer_thread_dir() -> Option<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        (comm.trim() == segmart_storage::embedded::WRITER_THREAD).then_some(path)
    })
}

/// Minor page faults of a thread: field 10 of its `stat` (after the parenthesised name).
fn minor_faults(thread_dir: &std::path::Path) -> Option<u64> {
    let stat = std::fs::read_to_string(thread_dir.join("stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(7)?.parse().ok()
}

/// Time a thread has spent on a CPU (first field of its `schedstat`), in nanoseconds.
fn on_cpu_ns(thread_dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(thread_dir.join("schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
