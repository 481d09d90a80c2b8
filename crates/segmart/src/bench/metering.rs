//! `segmart bench metering`: realistic priced usage records appended to the embedded billing
//! ledger by many concurrent producers, durably acknowledged; then the same records inserted
//! into PostgreSQL with `COPY … FROM STDIN`, one transaction per batch, in the same run.
//!
//! Data: UUID impression ids, 1000 buyers, 200 segments of 20 providers (FIX and RATE
//! categories in USD and RUB, some unmapped, some buyer shares with a CPM), 2–3 used segments
//! per impression and sometimes an excluded one, priced by `billing::price_event`, spread over
//! three days. Records are generated before the clock starts, deterministically from `--seed`,
//! so both sides get exactly the same records.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use segmart_domain::billing::{
    CurrencyCode, Price, Rates, SegmentRule, ShareCpm, UsageEvent, price_event,
};
use segmart_domain::pricing::CostType;
use segmart_domain::{Clock, SegmentNum, SystemClock, Timestamp};
use segmart_storage::embedded_ledger::{
    CommitProfile, EmbeddedLedger, LedgerConfig, SLOW_COMMIT, SlowCommit,
};
use segmart_storage::ledger::{AppendOutcome, Ledger, LedgerRecord, UsageFilter};
use sqlx::postgres::PgPoolOptions;

use super::hiccup::HiccupMeter;

#[derive(clap::Args, Debug, Clone)]
pub struct MeteringArgs {
    /// Usage events (impressions) to append.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    /// Concurrent producers (async tasks), each appending one batch at a time.
    #[arg(long, default_value_t = 64)]
    pub producers: usize,
    /// Events per append.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Directory for the ledger (a temporary directory when absent); put it on the disk whose
    /// fsync you want to measure.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Offered load of the paced run, events/s (0 skips it): producers send their batches on
    /// a fixed schedule and each acknowledgement is timed from its scheduled send time.
    #[arg(long, default_value_t = 500_000)]
    pub rate: u64,
    /// Seed of the generated records.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// PostgreSQL for the peer measurement (skipped with `--no-postgres`). The peer creates
    /// and drops its own tables.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        env = "SEGMART_BENCH_POSTGRES"
    )]
    pub postgres: String,
    /// Concurrent PostgreSQL connections, each copying one batch per transaction.
    #[arg(long, default_value_t = 16)]
    pub pg_connections: u32,
    /// Skip the PostgreSQL peer.
    #[arg(long)]
    pub no_postgres: bool,
    /// Print this many of the slowest traced group commits (those over 5 ms) of each run, with
    /// their phases, page faults, run-queue wait and table growths.
    #[arg(long, default_value_t = 0)]
    pub slow_commits: usize,
}

const BUYERS: i64 = 1_000;
const PROVIDERS: u32 = 20;
const SEGMENTS_PER_PROVIDER: u32 = 10;
const SEGMENTS: u32 = PROVIDERS * SEGMENTS_PER_PROVIDER;
const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-west", "ap-south"];
const DAY_MS: i64 = 86_400_000;

/// The price list: the rule of each segment (index = segment number − 1).
struct Catalog {
    rules: Vec<SegmentRule>,
    rates: Rates,
}

impl Catalog {
    fn new(seed: u64) -> Catalog {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0xC0FFEE);
        let rules = (0..SEGMENTS)
            .map(|i| {
                let provider = i / SEGMENTS_PER_PROVIDER;
                let mapping = match i % 10 {
                    9 => None,
                    0..=4 => Some(Price {
                        cost_type: CostType::Fix,
                        value: (rng.random_range(50..300u32) as f64) / 100.0,
                        currency: CurrencyCode::USD,
                    }),
                    5 | 6 => Some(Price {
                        cost_type: CostType::Fix,
                        value: rng.random_range(40..200u32) as f64,
                        currency: CurrencyCode::RUB,
                    }),
                    _ => Some(Price {
                        cost_type: CostType::Rate,
                        value: rng.random_range(5..15u32) as f64,
                        currency: CurrencyCode::USD,
                    }),
                };
                SegmentRule {
                    member_id: 1_000 + i64::from(provider),
                    mapping: mapping.map(|price| (10_000 + i64::from(i), price)),
                    revshare_pct: 20.0 + f64::from(provider % 3) * 5.0,
                }
            })
            .collect();
        let mut rates = Rates::new(CurrencyCode::USD);
        rates.to_settlement.insert(CurrencyCode::RUB, 0.011);
        Catalog { rules, rates }
    }

    fn rule(&self, segment: SegmentNum) -> Option<SegmentRule> {
        self.rules.get(segment.0.checked_sub(1)? as usize).cloned()
    }
}

/// Generates the `index`-th batch (deterministic for a seed).
fn generate_batch(
    catalog: &Catalog,
    seed: u64,
    index: usize,
    events: usize,
    now: Timestamp,
) -> Vec<LedgerRecord> {
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..events)
        .map(|_| {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes);
            let impression_id = uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string();
            let buyer_id = rng.random_range(1..=BUYERS);
            let used = rng.random_range(2..=3usize);
            let mut segments = Vec::with_capacity(used);
            while segments.len() < used {
                let s = SegmentNum(rng.random_range(1..=SEGMENTS));
                if !segments.contains(&s) {
                    segments.push(s);
                }
            }
            let excluded_segments = if rng.random_range(0..10u32) == 0 {
                let s = SegmentNum(rng.random_range(1..=SEGMENTS));
                if segments.contains(&s) {
                    vec![]
                } else {
                    vec![s]
                }
            } else {
                vec![]
            };
            let rub = rng.random_range(0..5u32) == 0;
            let event = UsageEvent {
                impression_id,
                at: Timestamp(now.millis() - rng.random_range(0..3 * DAY_MS)),
                buyer_id,
                campaign_id: buyer_id * 100 + rng.random_range(0..20i64),
                region: REGIONS[rng.random_range(0..REGIONS.len())].to_string(),
                media_cost_micros: if rub {
                    rng.random_range(50_000..400_000i64)
                } else {
                    rng.random_range(500..5_000i64)
                },
                media_currency: if rub {
                    CurrencyCode::RUB
                } else {
                    CurrencyCode::USD
                },
                segments,
                excluded_segments,
            };
            let share = |segment: SegmentNum| {
                ((buyer_id + i64::from(segment.0)) % 17 == 0).then_some(ShareCpm {
                    cpm: 0.2,
                    currency: CurrencyCode::USD,
                })
            };
            let charges = price_event(&event, |s| catalog.rule(s), share, &catalog.rates)
                .expect("every generated segment is priced");
            LedgerRecord {
                impression_id: event.impression_id,
                at: event.at,
                received_at: now,
                buyer_id: event.buyer_id,
                campaign_id: event.campaign_id,
                region: event.region,
                media_cost_micros: event.media_cost_micros,
                media_currency: event.media_currency,
                settlement_currency: CurrencyCode::USD,
                charges,
            }
        })
        .collect()
}

fn generate(args: &MeteringArgs, now: Timestamp) -> Vec<Vec<LedgerRecord>> {
    generate_from(args, now, 0)
}

/// [`generate`]'s batches, numbered from `first` (other numbers give other impression ids).
fn generate_from(args: &MeteringArgs, now: Timestamp, first: usize) -> Vec<Vec<LedgerRecord>> {
    let catalog = Catalog::new(args.seed);
    let batches = args.events.div_ceil(args.batch);
    (0..batches)
        .map(|i| {
            let n = args.batch.min(args.events - i * args.batch);
            generate_batch(&catalog, args.seed, first + i, n, now)
        })
        .collect()
}

/// One paced run into the ledger in `dir` (opened, then shut down), with its report.
async fn paced_run(
    args: &MeteringArgs,
    dir: &std::path::Path,
    batches: Vec<Vec<LedgerRecord>>,
    name: &str,
) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    let ledger = Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedLedger::open(&dir, LedgerConfig::default()))
            .await??,
    );
    let meter = HiccupMeter::start();
    let paced = run_ledger(&ledger, batches, args.producers, args.rate).await?;
    let hiccups = meter.stop();
    let (groups, write_time) = ledger.group_commits();
    let profile = ledger.commit_profile();
    ledger.shutdown().await?;
    paced.print(name);
    println!(
        "  {groups} group commits of {:.0} events, write + fdatasync {:.2} ms each; \
         load average now {}",
        paced.events as f64 / groups.max(1) as f64,
        write_time.as_secs_f64() * 1e3 / groups.max(1) as f64,
        load()
    );
    print_profile(&profile);
    println!("  {}", hiccups.summary());
    print_slow_commits(&ledger, args.slow_commits);
    Ok(())
}

/// Deals batches round-robin to `workers` lists.
fn deal<T>(batches: Vec<T>, workers: usize) -> Vec<Vec<T>> {
    let mut lists: Vec<Vec<T>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, batch) in batches.into_iter().enumerate() {
        lists[i % workers].push(batch);
    }
    for list in &mut lists {
        list.reverse();
    }
    lists
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

struct Measured {
    events: u64,
    wall: Duration,
    latency_us: Histogram<u64>,
}

impl Measured {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }

    fn print(&self, name: &str) {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<34} {:>11.0} events/s   ack p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms",
            self.events_per_sec(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        );
    }
}

/// Where the writer's time went: mean per group commit, and the slowest.
fn print_profile(profile: &CommitProfile) {
    let per = |time: Duration| time.as_secs_f64() * 1e6 / profile.commits.max(1) as f64;
    println!(
        "  per group commit: take {:.0} µs, frames {:.0} µs, write {:.0} µs, fdatasync {:.0} µs, \
         apply {:.0} µs; slowest commit {:.1} ms, slowest fdatasync {:.1} ms",
        per(profile.take),
        per(profile.frames),
        per(profile.write),
        per(profile.sync),
        per(profile.apply),
        profile.slowest_commit.as_secs_f64() * 1e3,
        profile.slowest_sync.as_secs_f64() * 1e3
    );
}

/// The slowest traced commits of a run, and what they add up to.
fn print_slow_commits(ledger: &EmbeddedLedger, show: usize) {
    let (count, mut kept) = ledger.slow_commits();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let sum = |f: fn(&SlowCommit) -> Duration| kept.iter().map(f).sum::<Duration>();
    println!(
        "  {count} group commits over {} ms; of the {} kept: total {:.0} ms = take {:.0}, \
         frames {:.0}, write {:.0}, fdatasync {:.0}, apply {:.0}; writer on CPU {:.0} ms, \
         waiting for one {:.0} ms; {} minor faults; {} index and {} usage shard growths",
        ms(SLOW_COMMIT),
        kept.len(),
        ms(sum(|c| c.total)),
        ms(sum(|c| c.take)),
        ms(sum(|c| c.frames)),
        ms(sum(|c| c.write)),
        ms(sum(|c| c.sync)),
        ms(sum(|c| c.apply)),
        ms(sum(|c| c.on_cpu)),
        ms(sum(|c| c.run_delay)),
        kept.iter().map(|c| c.minor_faults).sum::<u64>(),
        kept.iter().map(|c| c.index_growths).sum::<u64>(),
        kept.iter().map(|c| c.usage_growths).sum::<u64>(),
    );
    kept.sort_by_key(|c| std::cmp::Reverse(c.total));
    for c in kept.iter().take(show) {
        println!(
            "    {:5.1} ms, {} records in {} batches (first queued {:.1} ms): take {:.1}, \
             frames {:.1}, write {:.1}, fdatasync {:.1}, wait {:.1}, apply {:.1}; on CPU {:.1}, run queue \
             {:.1}, preempted {}×; {} minor / {} major faults; grew {} index, {} usage shards; \
             segment rotation before it {:.1} ms",
            ms(c.total),
            c.records,
            c.batches,
            ms(c.queued),
            ms(c.take),
            ms(c.frames),
            ms(c.write),
            ms(c.sync),
            ms(c.apply_wait),
            ms(c.apply),
            ms(c.on_cpu),
            ms(c.run_delay),
            c.preempted,
            c.minor_faults,
            c.major_faults,
            c.index_growths,
            c.usage_growths,
            ms(c.rotation_before),
        );
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Appends every batch from `producers` tasks. Closed loop when `rate` is 0 (each producer
/// sends its next batch when the previous one is acknowledged); otherwise batch `i` is due at
/// `i × batch / rate` seconds and its latency counts from then (no coordinated omission).
async fn run_ledger(
    ledger: &Arc<EmbeddedLedger>,
    batches: Vec<Vec<LedgerRecord>>,
    producers: usize,
    rate: u64,
) -> anyhow::Result<Measured> {
    let events: usize = batches.iter().map(Vec::len).sum();
    let batch_len = batches.first().map_or(1, Vec::len) as f64;
    let due: Vec<(Duration, Vec<LedgerRecord>)> = batches
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let at = if rate == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(i as f64 * batch_len / rate as f64)
            };
            (at, b)
        })
        .collect();
    let lists = deal(due, producers);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for mut list in lists {
        let ledger = Arc::clone(ledger);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            while let Some((at, batch)) = list.pop() {
                let n = batch.len();
                let sent = if rate == 0 {
                    tokio::time::Instant::now()
                } else {
                    tokio::time::sleep_until(started + at).await;
                    started + at
                };
                // One batch in flight per producer and a queue longer than the producers: a
                // full queue would be a bug, not back-pressure to retry.
                let outcomes = ledger.append(batch).await?;
                latency.record(sent.elapsed().as_micros().max(1) as u64)?;
                if outcomes.len() != n || outcomes.iter().any(|o| *o != AppendOutcome::Recorded) {
                    bail!("a generated impression was not recorded as new");
                }
            }
            Ok::<_, anyhow::Error>(latency)
        }));
    }
    let mut latency_us = histogram();
    for task in tasks {
        latency_us.add(task.await??)?;
    }
    Ok(Measured {
        events: events as u64,
        wall: started.elapsed(),
        latency_us,
    })
}

/// `COPY … FROM STDIN` text of one batch: (records, charges).
fn copy_text(batch: &[LedgerRecord]) -> (Vec<u8>, Vec<u8>) {
    use std::fmt::Write;
    let mut records = String::with_capacity(batch.len() * 140);
    let mut charges = String::with_capacity(batch.len() * 300);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "\\N".into());
    for r in batch {
        let _ = writeln!(
            records,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.impression_id,
            r.at.millis(),
            r.received_at.millis(),
            r.buyer_id,
            r.campaign_id,
            r.region,
            r.media_cost_micros,
            r.media_currency,
            r.settlement_currency
        );
        for c in &r.charges {
            let _ = writeln!(
                charges,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.impression_id,
                c.segment.0,
                c.member_id,
                opt(c.data_category_id.map(|v| v.to_string())),
                c.status.code(),
                opt(c.price.map(|p| p.cost_type.name().to_string())),
                opt(c.price.map(|p| p.value.to_string())),
                opt(c.price.map(|p| p.currency.to_string())),
                opt(c.share_cpm.map(|s| s.cpm.to_string())),
                opt(c.share_cpm.map(|s| s.currency.to_string())),
                c.revshare_pct,
                c.data_cost_micros,
                c.payout_micros,
                c.platform_fee_micros
            );
        }
    }
    (records.into_bytes(), charges.into_bytes())
}

async fn run_postgres(
    args: &MeteringArgs,
    batches: Vec<Vec<LedgerRecord>>,
) -> anyhow::Result<Measured> {
    let pool = PgPoolOptions::new()
        .max_connections(args.pg_connections)
        .connect(&args.postgres)
        .await
        .with_context(|| format!("connecting to {}", args.postgres))?;
    let settings: Vec<(String,)> = sqlx::query_as(
        "SELECT name || '=' || setting FROM pg_settings \
         WHERE name IN ('fsync', 'synchronous_commit', 'wal_level', 'shared_buffers', 'server_version') \
         ORDER BY name",
    )
    .fetch_all(&pool)
    .await?;
    println!(
        "PostgreSQL: {}",
        settings
            .into_iter()
            .map(|(s,)| s)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let suffix = std::process::id();
    let records_table = format!("bench_metering_records_{suffix}");
    let charges_table = format!("bench_metering_charges_{suffix}");
    for statement in [
        format!("DROP TABLE IF EXISTS {charges_table}"),
        format!("DROP TABLE IF EXISTS {records_table}"),
        format!(
            "CREATE TABLE {records_table} (impression_id text PRIMARY KEY, at_ms bigint NOT NULL, \
             received_at_ms bigint NOT NULL, buyer_id bigint NOT NULL, campaign_id bigint NOT NULL, \
             region text NOT NULL, media_cost_micros bigint NOT NULL, media_currency char(3) NOT NULL, \
             settlement_currency char(3) NOT NULL)"
        ),
        format!(
            "CREATE TABLE {charges_table} (impression_id text NOT NULL, segment integer NOT NULL, \
             member_id bigint NOT NULL, data_category_id bigint, status smallint NOT NULL, \
             cost_type text, price double precision, price_currency char(3), share_cpm double precision, \
             share_currency char(3), revshare_pct double precision NOT NULL, \
             data_cost_micros bigint NOT NULL, payout_micros bigint NOT NULL, \
             platform_fee_micros bigint NOT NULL)"
        ),
    ] {
        // Audited: the only dynamic part is the table names, built from the process id.
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await?;
    }
    // Rendering the COPY text is the client's work, done before the clock starts.
    let texts: Vec<(usize, Vec<u8>, Vec<u8>)> = batches
        .iter()
        .map(|b| {
            let (r, c) = copy_text(b);
            (b.len(), r, c)
        })
        .collect();
    drop(batches);
    let events: usize = texts.iter().map(|(n, _, _)| n).sum();
    let copy_records = Arc::new(format!("COPY {records_table} FROM STDIN"));
    let copy_charges = Arc::new(format!("COPY {charges_table} FROM STDIN"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut list in deal(texts, args.pg_connections as usize) {
        let pool = pool.clone();
        let copy_records = Arc::clone(&copy_records);
        let copy_charges = Arc::clone(&copy_charges);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            while let Some((_, records, charges)) = list.pop() {
                let sent = Instant::now();
                let mut tx = pool.begin().await?;
                let mut copy = tx.copy_in_raw(&copy_records).await?;
                copy.send(records.as_slice()).await?;
                copy.finish().await?;
                let mut copy = tx.copy_in_raw(&copy_charges).await?;
                copy.send(charges.as_slice()).await?;
                copy.finish().await?;
                tx.commit().await?;
                latency.record(sent.elapsed().as_micros().max(1) as u64)?;
            }
            Ok::<_, anyhow::Error>(latency)
        }));
    }
    let mut latency_us = histogram();
    let mut failure = None;
    for task in tasks {
        match task.await? {
            Ok(h) => latency_us.add(h)?,
            Err(error) => failure = Some(error),
        }
    }
    let wall = started.elapsed();
    let count: (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {records_table}"
    )))
    .fetch_one(&pool)
    .await?;
    for statement in [
        format!("DROP TABLE IF EXISTS {charges_table}"),
        format!("DROP TABLE IF EXISTS {records_table}"),
    ] {
        // Audited: the only dynamic part is the table names, built from the process id.
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    if let Some(error) = failure {
        return Err(error);
    }
    if count.0 as usize != events {
        bail!("PostgreSQL holds {} records, {events} were copied", count.0);
    }
    Ok(Measured {
        events: events as u64,
        wall,
        latency_us,
    })
}

pub async fn run(args: MeteringArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.batch == 0 || args.producers == 0 || args.pg_connections == 0 {
        bail!("--events, --batch, --producers and --pg-connections must be positive");
    }
    let temp = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let dir = temp.path().join("ledger");
    let now = SystemClock.now();
    println!(
        "segmart bench metering — {} events in batches of {} from {} producers; {} buyers, \
         {SEGMENTS} segments of {PROVIDERS} providers\nload average at start: {}\n",
        args.events,
        args.batch,
        args.producers,
        BUYERS,
        load()
    );
    let generated = Instant::now();
    let batches = {
        let args_seed = args.clone();
        tokio::task::spawn_blocking(move || generate(&args_seed, now)).await?
    };
    let charges: usize = batches.iter().flatten().map(|r| r.charges.len()).sum();
    println!(
        "generated in {:.1} s: {:.2} charges per event",
        generated.elapsed().as_secs_f64(),
        charges as f64 / args.events as f64
    );

    let open_dir = dir.clone();
    let ledger = Arc::new(
        tokio::task::spawn_blocking(move || {
            EmbeddedLedger::open(&open_dir, LedgerConfig::default())
        })
        .await??,
    );
    if args.producers > LedgerConfig::default().queue_capacity {
        bail!("--producers must not exceed the ledger's queue capacity");
    }
    let measured = run_ledger(&ledger, batches, args.producers, 0).await?;
    let stats = ledger.stats();
    let (groups, write_time) = ledger.group_commits();
    let profile = ledger.commit_profile();
    ledger.shutdown().await?;
    measured.print("embedded ledger (durable acks)");
    println!(
        "  {} records, {:.1} log bytes per event; {groups} group commits of {:.0} events, \
         write + fdatasync {:.2} ms each; load average now {}",
        stats.records,
        stats.log_bytes as f64 / stats.records.max(1) as f64,
        stats.records as f64 / groups.max(1) as f64,
        write_time.as_secs_f64() * 1e3 / groups.max(1) as f64,
        load()
    );
    print_profile(&profile);
    print_slow_commits(&ledger, args.slow_commits);
    drop(ledger);
    if stats.records != args.events as u64 {
        bail!(
            "the ledger holds {} records, {} were appended",
            stats.records,
            args.events
        );
    }
    let reopen_dir = dir.clone();
    let ledger = tokio::task::spawn_blocking(move || {
        EmbeddedLedger::open(&reopen_dir, LedgerConfig::default())
    })
    .await??;
    let recovery = ledger.recovery().clone();
    let memory = ledger.memory();
    let rows = ledger.usage(&UsageFilter::default()).await?.len();
    let usage_started = Instant::now();
    let buyer_rows = ledger
        .usage(&UsageFilter {
            buyer_id: Some(7),
            ..UsageFilter::default()
        })
        .await?
        .len();
    let usage_time = usage_started.elapsed();
    ledger.shutdown().await?;
    drop(ledger);
    println!(
        "  reopen: {} records replayed in {:.2} s; dedup index {:.1} B per record ({} MiB), \
         usage map {rows} rows ({} MiB); one buyer's usage ({buyer_rows} rows) in {:.1} ms",
        recovery.records,
        recovery.duration.as_secs_f64(),
        memory.index_bytes as f64 / memory.index_entries.max(1) as f64,
        memory.index_bytes >> 20,
        memory.usage_bytes >> 20,
        usage_time.as_secs_f64() * 1e3
    );

    if args.rate > 0 {
        let batches = {
            let args_seed = args.clone();
            tokio::task::spawn_blocking(move || generate(&args_seed, now)).await?
        };
        let paced_dir = temp.path().join("paced");
        let name = format!("same, paced at {} events/s", args.rate);
        paced_run(&args, &paced_dir, batches, &name).await?;
        // The same load again into that ledger, reopened with what it holds: a ledger that has
        // been running, whose tables are already at size (the run above starts empty, so its
        // tables grow through every size while it is measured).
        let batches = {
            let args_seed = args.clone();
            let first = args.events.div_ceil(args.batch);
            tokio::task::spawn_blocking(move || generate_from(&args_seed, now, first)).await?
        };
        let name = format!("paced again, ledger holding {} M", args.events as f64 / 1e6);
        paced_run(&args, &paced_dir, batches, &name).await?;
    }
    drop(temp);

    if args.no_postgres {
        return Ok(());
    }
    let batches = {
        let args_seed = args.clone();
        tokio::task::spawn_blocking(move || generate(&args_seed, now)).await?
    };
    match run_postgres(&args, batches).await {
        Ok(peer) => {
            peer.print(&format!(
                "PostgreSQL COPY ({} connections)",
                args.pg_connections
            ));
            println!(
                "  load average now {}\n\nembedded ledger / PostgreSQL COPY: {:.1}× the events/s",
                load(),
                measured.events_per_sec() / peer.events_per_sec()
            );
        }
        Err(error) => println!("PostgreSQL peer skipped: {error:#}"),
    }
    Ok(())
}
