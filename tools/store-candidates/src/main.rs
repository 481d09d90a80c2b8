//! Measures candidate designs for the profile store (user → segment links with expiries):
//! bulk load, random point lookups, memory or disk per profile, durable write rate, restart.
//!
//! Each candidate runs in a child process of its own so resident-memory deltas start clean.
//! The parent prints a Markdown report on stdout; progress goes to stderr.

mod bench;
mod candidates;
mod data;
mod measure;
mod store;

use bench::{Report, Workload};
use candidates::{
    fjall_kv::FjallStore, flat::FlatTable, hashmap::HashMapStore, log, redb_kv::RedbStore,
};
use clap::{Parser, ValueEnum};
use data::Dataset;
use measure::{anon_huge_bytes, dir_bytes, loadavg, rss_bytes};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Candidate {
    /// Append-only log with group commit (the durability cost of the in-memory designs).
    Log,
    /// hashbrown::HashMap<u128, Box<[(u32, u32)]>>.
    Hashmap,
    /// Flat open-addressing table + u32 arena, 4 KiB pages.
    Flat,
    /// The same with MADV_HUGEPAGE on table and arena.
    FlatThp,
    /// fjall 3.1.13, one SyncAll write batch per batch.
    Fjall,
    /// redb 4.5.0, one durable write transaction per batch.
    Redb,
}

impl Candidate {
    fn name(self) -> &'static str {
        match self {
            Candidate::Log => "log",
            Candidate::Hashmap => "hashmap",
            Candidate::Flat => "flat",
            Candidate::FlatThp => "flat-thp",
            Candidate::Fjall => "fjall",
            Candidate::Redb => "redb",
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "Measures candidate profile-store designs on synthetic profiles.")]
struct Args {
    /// Number of profiles to load.
    #[arg(long, default_value_t = 2_000_000)]
    profiles: u64,
    /// Candidates to run, comma-separated; `log` always runs first so the in-memory
    /// candidates can time a restart by replaying it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "log,hashmap,flat,flat-thp,fjall,redb"
    )]
    candidates: Vec<Candidate>,
    /// Timed random lookups of loaded profiles (the same count again for misses).
    #[arg(long, default_value_t = 500_000)]
    lookups: usize,
    /// Load factor of the flat table.
    #[arg(long, default_value_t = 0.85)]
    load_factor: f64,
    /// Batches per log group commit (one write + fdatasync per group).
    #[arg(long, default_value_t = 1)]
    log_group: usize,
    /// Block/page cache of fjall and redb, MiB.
    #[arg(long, default_value_t = 256)]
    kv_cache_mb: u64,
    /// Directory for the log and the databases (must be on the disk being measured).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data_dir: PathBuf,
    /// Before each candidate, wait up to this many seconds for the machine to go idle.
    #[arg(long, default_value_t = 0)]
    wait_quiet_s: u64,
    /// Stop loading fjall/redb after this many seconds and measure what was loaded.
    #[arg(long)]
    kv_load_budget_s: Option<u64>,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run one candidate in this process (used by the parent for its child processes).
    #[arg(long, hide = true)]
    only: Option<Candidate>,
    /// Working directory shared by the child processes.
    #[arg(long, hide = true)]
    run_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.only {
        Some(candidate) => run_child(&args, candidate),
        None => run_parent(&args),
    }
}

fn run_parent(args: &Args) -> anyhow::Result<()> {
    let run_dir = args
        .data_dir
        .join(format!("store-candidates-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let mut order: Vec<Candidate> = Vec::new();
    for &c in &args.candidates {
        if !order.contains(&c) {
            order.push(c);
        }
    }
    order.sort_by_key(|&c| c != Candidate::Log);

    let started = Instant::now();
    let mut results = Vec::new();
    for &candidate in &order {
        eprintln!("== {} ({} profiles)", candidate.name(), args.profiles);
        let waited = wait_for_quiet(args.wait_quiet_s);
        let child_started = Instant::now();
        let (busy_before, child_cpu_before) =
            (measure::machine_busy_secs(), measure::children_cpu_secs());
        let mut child = Command::new(std::env::current_exe()?)
            .args(child_args(args, candidate, &run_dir))
            .stdout(Stdio::piped())
            .spawn()?;
        let mut report = Report::default();
        for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
            let line = line?;
            if let Some((key, value)) = line.strip_prefix("@@ ").and_then(|l| l.split_once('\t')) {
                report.set(key, value);
            }
        }
        let status = child.wait()?;
        let wall = child_started.elapsed().as_secs_f64();
        let child_cpu = measure::children_cpu_secs() - child_cpu_before;
        let others = (measure::machine_busy_secs() - busy_before - child_cpu).max(0.0);
        report.set("waited_for_quiet_s", format!("{waited:.0}"));
        report.set("wall_s", format!("{wall:.1}"));
        report.set("cpu_s", format!("{child_cpu:.1}"));
        // Cores' worth of CPU used by other processes meanwhile (the machine has nproc cores).
        report.set("other_processes_cores", format!("{:.2}", others / wall));
        if !status.success() {
            report.set("error", format!("child exited with {status}"));
        }
        eprintln!("   done in {wall:.1} s");
        results.push((candidate, report));
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    print_markdown(args, &results, started.elapsed().as_secs_f64());
    Ok(())
}

/// Waits up to `limit_s` seconds until the machine has been nearly idle (under a quarter of a
/// core busy) for two seconds; returns the seconds waited.
fn wait_for_quiet(limit_s: u64) -> f64 {
    let started = Instant::now();
    while started.elapsed().as_secs() < limit_s {
        let before = measure::machine_busy_secs();
        std::thread::sleep(Duration::from_secs(2));
        if measure::machine_busy_secs() - before < 0.5 {
            break;
        }
    }
    started.elapsed().as_secs_f64()
}

fn child_args(args: &Args, candidate: Candidate, run_dir: &Path) -> Vec<String> {
    let mut out = vec![
        format!("--profiles={}", args.profiles),
        format!("--lookups={}", args.lookups),
        format!("--load-factor={}", args.load_factor),
        format!("--log-group={}", args.log_group),
        format!("--kv-cache-mb={}", args.kv_cache_mb),
        format!("--seed={}", args.seed),
        format!("--only={}", candidate.name()),
        format!("--run-dir={}", run_dir.display()),
    ];
    if let Some(budget) = args.kv_load_budget_s {
        out.push(format!("--kv-load-budget-s={budget}"));
    }
    out
}

fn run_child(args: &Args, candidate: Candidate) -> anyhow::Result<()> {
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.clone());
    let key_value = matches!(candidate, Candidate::Fjall | Candidate::Redb);
    let w = Workload {
        data: Dataset::new(args.seed),
        profiles: args.profiles,
        lookups: args.lookups,
        seed: args.seed,
        load_budget: args
            .kv_load_budget_s
            .filter(|_| key_value)
            .map(Duration::from_secs),
    };
    let mut r = Report::default();
    r.set("loadavg_start", loadavg());
    r.set("timer_overhead_ns", measure::timer_overhead_ns());
    let outcome = match candidate {
        Candidate::Log => run_log(args, &w, &run_dir, &mut r),
        Candidate::Hashmap => run_hashmap(&w, &run_dir, &mut r),
        Candidate::Flat => run_flat(args, &w, &run_dir, false, &mut r),
        Candidate::FlatThp => run_flat(args, &w, &run_dir, true, &mut r),
        Candidate::Fjall => run_fjall(args, &w, &run_dir, &mut r),
        Candidate::Redb => run_redb(args, &w, &run_dir, &mut r),
    };
    if let Err(e) = &outcome {
        r.set("error", format!("{e:#}"));
    }
    r.set("loadavg_end", loadavg());
    for (key, value) in &r.0 {
        println!("@@ {key}\t{value}");
    }
    outcome
}

fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("profiles.log")
}

fn run_log(args: &Args, w: &Workload, run_dir: &Path, r: &mut Report) -> anyhow::Result<()> {
    let mut writer = log::LogWriter::create(&log_path(run_dir), args.log_group)?;
    let mut commit = measure::histogram();
    let mut since_commit = Duration::ZERO;
    let loaded = bench::for_each_batch(w, |batch| {
        let started = Instant::now();
        let committed = writer.append(batch)?;
        since_commit += started.elapsed();
        if committed {
            commit.saturating_record(since_commit.as_micros() as u64);
            since_commit = Duration::ZERO;
        }
        Ok(())
    })?;
    let started = Instant::now();
    writer.commit()?;
    let secs = (loaded.total + started.elapsed()).as_secs_f64();
    let memberships = loaded.memberships;
    let [p50, p99, _] = measure::percentiles(&commit);
    let batches = w.profiles.div_ceil(data::BATCH_PROFILES as u64);
    r.set("log_group", args.log_group);
    r.set("load_s", format!("{secs:.2}"));
    r.set(
        "load_memberships_per_s",
        format!("{:.0}", memberships as f64 / secs),
    );
    r.set("memberships", memberships);
    r.set("batches", batches);
    r.set("batches_per_s", format!("{:.1}", batches as f64 / secs));
    r.set(
        "commits_per_s",
        format!("{:.1}", writer.commits as f64 / secs),
    );
    r.set("commit_p50_us", p50);
    r.set("commit_p99_us", p99);
    r.set(
        "log_mb_per_s",
        format!("{:.1}", writer.bytes as f64 / secs / 1e6),
    );
    r.set("disk_bytes", writer.bytes);
    Ok(())
}

/// Resident memory before/after a load, and transparent-huge-page coverage.
fn memory(
    r: &mut Report,
    w: &Workload,
    rss_before: u64,
    huge_before: u64,
    memberships: u64,
    own: Option<u64>,
) {
    let delta = rss_bytes().saturating_sub(rss_before);
    r.set("rss_delta_bytes", delta);
    r.set(
        "rss_bytes_per_profile",
        format!("{:.1}", delta as f64 / w.profiles as f64),
    );
    r.set(
        "rss_bytes_per_membership",
        format!("{:.2}", delta as f64 / memberships as f64),
    );
    r.set(
        "anon_huge_bytes",
        anon_huge_bytes().saturating_sub(huge_before),
    );
    if let Some(own) = own {
        r.set(
            "own_bytes_per_profile",
            format!("{:.1}", own as f64 / w.profiles as f64),
        );
    }
}

/// Restart of an in-memory design: replay the log (if the `log` candidate wrote one).
fn replay_restart(
    mut fresh: impl FnMut() -> Box<dyn Store>,
    w: &Workload,
    run_dir: &Path,
    r: &mut Report,
) -> anyhow::Result<()> {
    let path = log_path(run_dir);
    if !path.exists() {
        return Ok(());
    }
    let started = Instant::now();
    let mut store = fresh();
    let replayed = log::replay(&path, store.as_mut())?;
    r.set(
        "restart_replay_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    anyhow::ensure!(
        replayed == w.profiles,
        "log holds {replayed} profiles, expected {}",
        w.profiles
    );
    bench::verify(store.as_ref(), w, 1_000)
}

fn run_hashmap(w: &Workload, run_dir: &Path, r: &mut Report) -> anyhow::Result<()> {
    let n = w.profiles as usize;
    let (rss0, huge0) = (rss_bytes(), anon_huge_bytes());
    let mut store = HashMapStore::new(n);
    let memberships = bench::load(&mut store, w, r)?.memberships;
    memory(r, w, rss0, huge0, memberships, store.own_bytes());
    bench::lookups(&store, w, r, "")?;
    drop(store);
    replay_restart(|| Box::new(HashMapStore::new(n)), w, run_dir, r)
}

fn run_flat(
    args: &Args,
    w: &Workload,
    run_dir: &Path,
    huge: bool,
    r: &mut Report,
) -> anyhow::Result<()> {
    let n = w.profiles as usize;
    let (rss0, huge0) = (rss_bytes(), anon_huge_bytes());
    let mut store = FlatTable::new(n, args.load_factor, huge);
    let memberships = bench::load(&mut store, w, r)?.memberships;
    memory(r, w, rss0, huge0, memberships, store.own_bytes());
    bench::lookups(&store, w, r, "")?;

    let snapshot = run_dir.join("flat.snapshot");
    let started = Instant::now();
    store.write_snapshot(&snapshot)?;
    r.set(
        "snapshot_write_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    r.set("snapshot_bytes", std::fs::metadata(&snapshot)?.len());
    let huge_pages = store.huge_pages();
    drop(store);
    let started = Instant::now();
    let store = FlatTable::read_snapshot(&snapshot, n, huge_pages)?;
    r.set(
        "restart_snapshot_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    bench::verify(&store, w, 1_000)?;
    drop(store);
    std::fs::remove_file(&snapshot)?;

    let load_factor = args.load_factor;
    replay_restart(
        || Box::new(FlatTable::new(n, load_factor, huge)),
        w,
        run_dir,
        r,
    )
}

fn run_fjall(args: &Args, w: &Workload, run_dir: &Path, r: &mut Report) -> anyhow::Result<()> {
    let path = run_dir.join("fjall");
    let cache = args.kv_cache_mb << 20;
    let (rss0, huge0) = (rss_bytes(), anon_huge_bytes());
    let mut store = FjallStore::open(&path, cache)?;
    let loaded = bench::load(&mut store, w, r)?;
    let (memberships, w) = (loaded.memberships, &w.with_profiles(loaded.profiles));
    let started = Instant::now();
    store.prepare_reads()?;
    r.set(
        "settle_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    memory(r, w, rss0, huge0, memberships, None);
    disk(r, w, dir_bytes(&path), memberships);
    r.set("l0_tables", store.l0_table_count());
    r.set("tables", store.table_count());
    bench::lookups(&store, w, r, "")?;
    drop(store);

    // Restart as after the load: the unflushed memtable is recovered from the journal.
    let started = Instant::now();
    let store = FjallStore::open(&path, cache)?;
    r.set(
        "restart_open_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    anyhow::ensure!(
        store.approximate_len() as u64 >= w.profiles,
        "profiles missing after reopen"
    );
    bench::verify(&store, w, 1_000)?;

    // The best case for reads: memtable flushed, everything merged into one sorted run.
    let started = Instant::now();
    store.major_compact()?;
    r.set(
        "major_compaction_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    r.set("compacted_tables", store.table_count());
    bench::lookups(&store, w, r, "compacted_")?;
    drop(store);
    std::fs::remove_dir_all(&path)?;
    Ok(())
}

fn run_redb(args: &Args, w: &Workload, run_dir: &Path, r: &mut Report) -> anyhow::Result<()> {
    let path = run_dir.join("profiles.redb");
    let cache = (args.kv_cache_mb << 20) as usize;
    let (rss0, huge0) = (rss_bytes(), anon_huge_bytes());
    let mut store = RedbStore::create(&path, cache)?;
    let loaded = bench::load(&mut store, w, r)?;
    let (memberships, w) = (loaded.memberships, &w.with_profiles(loaded.profiles));
    store.prepare_reads()?;
    memory(r, w, rss0, huge0, memberships, None);
    disk(r, w, std::fs::metadata(&path)?.len(), memberships);
    bench::lookups(&store, w, r, "")?;
    drop(store);

    let started = Instant::now();
    let mut store = RedbStore::open(&path, cache)?;
    r.set(
        "restart_open_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    store.prepare_reads()?;
    bench::verify(&store, w, 1_000)?;
    drop(store);
    std::fs::remove_file(&path)?;
    Ok(())
}

fn disk(r: &mut Report, w: &Workload, bytes: u64, memberships: u64) {
    r.set("disk_bytes", bytes);
    r.set(
        "disk_bytes_per_profile",
        format!("{:.1}", bytes as f64 / w.profiles as f64),
    );
    r.set(
        "disk_bytes_per_membership",
        format!("{:.2}", bytes as f64 / memberships as f64),
    );
}

// ---- report ---------------------------------------------------------------------------------

fn get<'a>(r: &'a Report, key: &str) -> Option<&'a str> {
    r.0.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn triple(r: &Report, prefix: &str) -> String {
    match (
        get(r, &format!("{prefix}_p50_ns")),
        get(r, &format!("{prefix}_p99_ns")),
        get(r, &format!("{prefix}_p999_ns")),
    ) {
        (Some(a), Some(b), Some(c)) => format!("{a} / {b} / {c}"),
        _ => "–".into(),
    }
}

/// Formats a plain number with thousands separators.
fn thousands(value: &str) -> String {
    let Ok(n) = value.parse::<f64>() else {
        return value.to_owned();
    };
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_markdown(args: &Args, results: &[(Candidate, Report)], total_s: f64) {
    println!("### {} profiles\n", thousands(&args.profiles.to_string()));
    println!(
        "| candidate | load, memberships/s | durable batches/s | hit p50 / p99 / p99.9 ns | miss p50 / p99 / p99.9 ns | hit mean ns (untimed) | B/profile | B/membership | restart |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (candidate, r) in results {
        let dash = || "–".to_owned();
        let load = get(r, "load_memberships_per_s").map_or_else(dash, thousands);
        let durable = match candidate {
            Candidate::Hashmap | Candidate::Flat | Candidate::FlatThp => "see log".to_owned(),
            _ => get(r, "batches_per_s").map_or_else(dash, str::to_owned),
        };
        let (per_profile, per_membership) = match candidate {
            Candidate::Log | Candidate::Fjall | Candidate::Redb => (
                get(r, "disk_bytes_per_profile").map(|v| format!("{v} disk")),
                get(r, "disk_bytes_per_membership").map(|v| format!("{v} disk")),
            ),
            _ => (
                get(r, "rss_bytes_per_profile").map(|v| format!("{v} RAM")),
                get(r, "rss_bytes_per_membership").map(|v| format!("{v} RAM")),
            ),
        };
        if candidate == &Candidate::Log {
            let bytes = get(r, "disk_bytes")
                .and_then(|b| b.parse::<f64>().ok())
                .unwrap_or(0.0);
            let members = get(r, "memberships")
                .and_then(|b| b.parse::<f64>().ok())
                .unwrap_or(1.0);
            let per_profile = format!("{:.1} disk", bytes / args.profiles as f64);
            let per_member = format!("{:.2} disk", bytes / members);
            println!(
                "| log (group {}) | {load} | {durable} | – | – | – | {per_profile} | {per_member} | – |",
                args.log_group
            );
            continue;
        }
        let mut restart = Vec::new();
        if let Some(v) = get(r, "restart_replay_s") {
            restart.push(format!("replay {v} s"));
        }
        if let Some(v) = get(r, "restart_snapshot_s") {
            restart.push(format!("snapshot {v} s"));
        }
        if let Some(v) = get(r, "restart_open_s") {
            restart.push(format!("open {v} s"));
        }
        let mut name = candidate.name().to_owned();
        if let Some(n) = get(r, "profiles_loaded").filter(|n| *n != args.profiles.to_string()) {
            name = format!("{name} (stopped at {} profiles)", thousands(n));
        }
        println!(
            "| {name} | {load} | {durable} | {} | {} | {} | {} | {} | {} |",
            triple(r, "hit"),
            triple(r, "miss"),
            get(r, "hit_mean_untimed_ns").unwrap_or("–"),
            per_profile.unwrap_or_else(dash),
            per_membership.unwrap_or_else(dash),
            if restart.is_empty() {
                "–".into()
            } else {
                restart.join("; ")
            },
        );
    }
    println!();
    for (candidate, r) in results {
        println!("#### {} — all measurements\n", candidate.name());
        println!("| measurement | value |\n|---|---:|");
        for (key, value) in &r.0 {
            println!("| {key} | {value} |");
        }
        println!();
    }
    println!(
        "Run: {} profiles, {} lookups, load factor {}, log group {}, KV cache {} MiB, seed {}; total {:.0} s.",
        args.profiles,
        args.lookups,
        args.load_factor,
        args.log_group,
        args.kv_cache_mb,
        args.seed,
        total_s
    );
}
