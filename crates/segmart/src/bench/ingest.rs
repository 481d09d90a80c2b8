//! `segmart bench ingest`: a realistic gzip batch file (≥ 2 M lines, 6.5 segments per line,
//! cookie and mobile ids, gzip -6) applied end to end through the ingest worker's own code path
//! — inflate the whole file to check it, then inflate → parse → resolve → key → durable write
//! → visible to lookups — and the same memberships loaded into Redis with `redis-cli --pipe`
//! (SADD), timed in the same run.
//!
//! Memory: the pipeline streams, so its memory does not grow with the file. The benchmark
//! samples the process's resident memory minus the profile store's own tables (which grow
//! with the profiles, as any store's do) while a quarter-size file and then the full file are
//! applied, and prints the peak of each.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use segmart_domain::{Clock, IdType, SystemClock};
use segmart_ingest::testdata::{write_realistic_file, write_realistic_taxonomy};
use segmart_ingest::{BatchFileName, BatchItem, BatchReader};
use segmart_server::SharedState;
use segmart_server::ingest::{Arrival, new_spool_path, process, receive};
use segmart_storage::catalog::{IngestFile, IngestSource, IngestStatus};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct IngestBenchArgs {
    /// Data lines in the full-size file.
    #[arg(long, default_value_t = 2_000_000)]
    pub lines: u64,
    /// Where the files and data directories go (a temporary directory when absent).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Lines per durable profile-store write.
    #[arg(long, default_value_t = 32_768)]
    pub batch_lines: usize,
    /// Redis for the peer measurement (`host:port`; skipped when redis-cli or the server is
    /// missing). The peer loads into database 13 and empties it afterwards.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// Skip the quarter-size run that shows memory does not grow with the file.
    #[arg(long)]
    pub skip_memory_check: bool,
}

const REDIS_DB: &str = "13";

/// Resident memory of this process, from /proc.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// One measured run.
struct Run {
    file: IngestFile,
    wall: Duration,
    /// Peak of (resident memory − profile store table bytes) while applying.
    peak_overhead: u64,
    memberships_in_store: u64,
    profiles_in_store: u64,
}

/// Opens a node on `dir` with the benchmark's configuration (`base`, its data directory aside).
async fn open_data_dir(base: &Config, dir: &Path) -> anyhow::Result<SharedState> {
    let config = Config {
        data_dir: dir.to_path_buf(),
        ..base.clone()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let node = crate::node::open_node(&config, clock).await?;
    let state = node.state;
    let now = state.clock.now();
    let provider = state.catalog.create_provider("bench", now).await?;
    state
        .catalog
        .set_provider_dmp_id(provider.id, Some("bench_dmp"))
        .await?;
    for (name, id_type) in [("cookies", IdType::Cookie), ("maids", IdType::Maid)] {
        let folder = state
            .catalog
            .create_folder(provider.id, name, id_type, now)
            .await?;
        state.directory.put_folder(folder);
    }
    Ok(state)
}

async fn deliver(state: &SharedState, path: &Path) -> anyhow::Result<IngestFile> {
    let name = BatchFileName::parse(
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let provider = state
        .catalog
        .provider_by_dmp_id(name.dmp_id())
        .await?
        .context("bench provider")?;
    let spool = new_spool_path(&state.ingest.settings)?;
    std::fs::hard_link(path, &spool).or_else(|_| std::fs::copy(path, &spool).map(|_| ()))?;
    let bytes = std::fs::metadata(&spool)?.len();
    let file = receive(
        state,
        Arrival {
            name,
            provider: provider.id,
            source: IngestSource::Cli,
            spool_path: spool,
            bytes,
        },
    )
    .await?;
    let done = process(state, file)
        .await
        .map_err(|pause| anyhow::anyhow!("the file could not be applied (retry in {pause:?})"))?;
    if done.status != IngestStatus::Applied {
        bail!("{} was {}: {:?}", done.name, done.status, done.rejection);
    }
    Ok(done)
}

async fn measured_run(
    base: &Config,
    dir: &Path,
    data: &Path,
    taxonomy: &Path,
) -> anyhow::Result<Run> {
    let state = open_data_dir(base, dir).await?;
    deliver(&state, taxonomy).await?;
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (state, sampling, peak) = (state.clone(), sampling.clone(), peak.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let table = state.profiles.stats().memory_bytes;
                peak.fetch_max(rss_bytes().saturating_sub(table), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let started = Instant::now();
    let file = deliver(&state, data).await?;
    let wall = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let stats = state.profiles.stats();
    state.profiles.shutdown().await?;
    Ok(Run {
        file,
        wall,
        peak_overhead: peak.load(Ordering::Relaxed),
        memberships_in_store: stats.memberships,
        profiles_in_store: stats.profiles,
    })
}

/// Writes the Redis protocol for the same memberships: one `SADD <profile> <segment>…` per
/// applied line (cookie ids under `c:`, mobile ids under `m:`).
fn write_redis_commands(data: &Path, out: &Path) -> anyhow::Result<(u64, u64)> {
    let mut writer = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut reader = BatchReader::spawn(std::fs::File::open(data)?)?;
    let (mut commands, mut members) = (0u64, 0u64);
    while let Some(item) = reader.next_item()? {
        let BatchItem::Parsed { line, .. } = item else {
            continue;
        };
        let add = line.add();
        if add.is_empty() {
            continue;
        }
        let user = line.resolve_user(|_| None);
        let prefix = if user.as_str().starts_with("m_md5:") {
            "m:"
        } else {
            "c:"
        };
        write!(writer, "*{}\r\n$4\r\nSADD\r\n", add.len() + 2)?;
        let key_len = prefix.len() + user.as_str().len();
        write!(writer, "${key_len}\r\n{prefix}{}\r\n", user.as_str())?;
        for segment in add.iter() {
            write!(writer, "${}\r\n{segment}\r\n", segment.len())?;
        }
        commands += 1;
        members += add.len() as u64;
    }
    writer.flush()?;
    Ok((commands, members))
}

fn redis_cli(redis: &str, args: &[&str], stdin: Option<&Path>) -> anyhow::Result<String> {
    let (host, port) = redis.rsplit_once(':').unwrap_or((redis, "6379"));
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", host, "-p", port, "-n", REDIS_DB])
        .args(args);
    command.stdin(match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path)?),
        None => Stdio::null(),
    });
    let output = command
        .output()
        .context("cannot run redis-cli (apt-get install redis-tools)")?;
    if !output.status.success() {
        bail!(
            "redis-cli failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub async fn run(mut config: Config, args: IngestBenchArgs) -> anyhow::Result<()> {
    config.ingest.batch_lines = args.batch_lines;
    config.ingest.watch_drop_dir = false;
    let temp = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?
        }
        None => tempfile::tempdir()?,
    };
    let root = temp.path();
    println!(
        "segmart bench ingest — {} lines, gzip -6, batches of {} lines, {} cores\n",
        args.lines,
        args.batch_lines,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let taxonomy = root.join("bench_dmp.2026-01-01_00-00-00.bench.taxonomy.json");
    write_realistic_taxonomy(&taxonomy)?;
    let data = root.join("bench_dmp.2026-01-01_00-00-00.bench.txt.gz");
    let started = Instant::now();
    let generated = write_realistic_file(&data, args.lines, 1)?;
    println!(
        "file: {} lines, {:.1} MB text, {:.1} MB gzip (ratio {:.2}), {:.2} segment ids per line, {:.0}% mobile ids; generated in {:.1} s",
        generated.lines,
        mb(generated.uncompressed_bytes),
        mb(generated.compressed_bytes),
        generated.uncompressed_bytes as f64 / generated.compressed_bytes as f64,
        (generated.segments_to_add + generated.segments_to_remove) as f64 / generated.lines as f64,
        100.0 * generated.mobile_lines as f64 / generated.lines as f64,
        started.elapsed().as_secs_f64()
    );

    let quarter = if args.skip_memory_check {
        None
    } else {
        let small = root.join("bench_dmp.2026-01-01_00-00-00.quarter.txt.gz");
        write_realistic_file(&small, args.lines / 4, 2)?;
        Some(measured_run(&config, &root.join("data-quarter"), &small, &taxonomy).await?)
    };
    // SAFETY: as above; the generated files are written back before the timer starts.
    unsafe { libc::sync() };
    let full = measured_run(&config, &root.join("data"), &data, &taxonomy).await?;
    let counts = &full.file.counts;
    let lines = counts.lines_read as f64;
    let wall = full.wall.as_secs_f64();
    let apply_secs = wall - counts.check_millis as f64 / 1000.0;
    let memberships = (counts.memberships_added + counts.memberships_removed) as f64;
    println!(
        "\nsegmart, end to end (check + decompress → parse → resolve → apply → durable → visible):"
    );
    println!(
        "  {:.3} s for {} lines: {:.2} M lines/s, {:.1} M memberships/s ({} applied, {} rejected)",
        wall,
        counts.lines_read,
        lines / wall / 1e6,
        memberships / wall / 1e6,
        counts.lines_applied,
        counts.lines_rejected
    );
    println!(
        "  of which gzip integrity pass (full inflate, no parsing): {:.3} s ({:.0}% of the total); apply pass alone {:.2} M lines/s",
        counts.check_millis as f64 / 1000.0,
        100.0 * counts.check_millis as f64 / 1000.0 / wall,
        lines / apply_secs / 1e6
    );
    println!(
        "  store after: {} profiles, {} memberships",
        full.profiles_in_store, full.memberships_in_store
    );
    if let Some(quarter) = &quarter {
        println!(
            "  memory besides the store's tables, peak: {:.0} MB for {} lines, {:.0} MB for {} lines",
            mb(quarter.peak_overhead),
            quarter.file.counts.lines_read,
            mb(full.peak_overhead),
            counts.lines_read
        );
    }

    let commands_path = root.join("redis-sadd.resp");
    let (commands, members) = write_redis_commands(&data, &commands_path)?;
    match redis_cli(&args.redis, &["FLUSHDB"], None) {
        Err(error) => println!("\nRedis peer skipped: {error:#}"),
        Ok(_) => {
            let started = Instant::now();
            let output = redis_cli(&args.redis, &["--pipe"], Some(&commands_path))?;
            let redis_secs = started.elapsed().as_secs_f64();
            let _ = redis_cli(&args.redis, &["FLUSHDB"], None);
            println!(
                "\nRedis `redis-cli --pipe`, the same memberships as SADD ({} commands, {} members, from a prepared file):",
                commands, members
            );
            println!(
                "  {:.3} s: {:.2} M lines/s, {:.1} M memberships/s  ({})",
                redis_secs,
                commands as f64 / redis_secs / 1e6,
                members as f64 / redis_secs / 1e6,
                output.lines().last().unwrap_or_default().trim()
            );
            println!(
                "\nratio: segmart end to end is {:.2}x redis-cli --pipe (lines/s), {:.2}x counting the gzip check as free",
                (lines / wall) / (commands as f64 / redis_secs),
                (lines / apply_secs) / (commands as f64 / redis_secs)
            );
        }
    }
    Ok(())
}
