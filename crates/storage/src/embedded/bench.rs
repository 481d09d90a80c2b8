//! Realistic synthetic profile data and the embedded store's benchmark (`segmart bench`).
//!
//! The data matches the performance anchors' synthetic batch file: 1–12 segments per profile
//! (mean 6.5) drawn from 20,000 segment numbers, TTLs of 7–60 days, random 128-bit keys.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use segmart_domain::profile::ResolvedUpdate;
use segmart_domain::{ManualClock, SegmentNum, Timestamp};

use super::{BatchLookup, EmbeddedConfig, EmbeddedProfileStore};
use crate::profile::{ProfileKey, ProfileStore, WriteBatch};

/// Distinct segment numbers the generator draws from.
pub const SEGMENT_POOL: u32 = 20_000;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of the `index`-th generated profile.
pub fn realistic_key(seed: u64, index: u64) -> ProfileKey {
    let base = splitmix(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
    ProfileKey(((splitmix(base) as u128) << 64) | splitmix(base ^ 0x5555) as u128)
}

/// The update of the `index`-th generated profile: 1–12 segments with TTLs of 7–60 days.
pub fn realistic_update(seed: u64, index: u64, now: Timestamp) -> ResolvedUpdate {
    let mut state = splitmix(seed.rotate_left(17) ^ index);
    let mut next = || {
        state = splitmix(state);
        state
    };
    let count = 1 + next() % 12;
    let add = (0..count)
        .map(|_| {
            let segment = SegmentNum((next() % SEGMENT_POOL as u64) as u32);
            let ttl_secs = (7 + next() % 54) * 86_400;
            (segment, now.plus_secs(ttl_secs as i64))
        })
        .collect();
    ResolvedUpdate {
        clear: false,
        remove: Vec::new(),
        add,
    }
}

/// `profiles` new profiles as batches of `batch_size` updates, generated lazily.
pub fn generate_realistic(
    profiles: u64,
    seed: u64,
    now: Timestamp,
    batch_size: usize,
) -> impl Iterator<Item = WriteBatch> {
    let batch_size = batch_size.max(1) as u64;
    (0..profiles.div_ceil(batch_size)).map(move |batch| {
        let start = batch * batch_size;
        let end = (start + batch_size).min(profiles);
        let mut batch = WriteBatch::with_capacity(now, (end - start) as usize * 80);
        for index in start..end {
            batch.push_update(
                realistic_key(seed, index),
                &realistic_update(seed, index, now),
            );
        }
        batch
    })
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Store directory; must not hold a store yet.
    pub dir: PathBuf,
    pub profiles: u64,
    /// Lookups timed one by one (and again untimed, and in batches).
    pub lookups: usize,
    pub seed: u64,
    /// Profiles per write batch.
    pub batch_size: usize,
}

impl BenchConfig {
    pub fn new(dir: impl Into<PathBuf>, profiles: u64) -> Self {
        BenchConfig {
            dir: dir.into(),
            profiles,
            lookups: 1_000_000,
            seed: 1,
            batch_size: 10_000,
        }
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
}

impl Latency {
    fn from_samples(samples: &mut [u32]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64;
        Latency {
            p50_ns: at(0.50),
            p99_ns: at(0.99),
            p999_ns: at(0.999),
            max_ns: at(1.0),
        }
    }
}

/// Results of [`run`].
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub profiles: u64,
    pub memberships: u64,
    pub memory_bytes: u64,
    pub memory: super::MemoryBreakdown,
    /// Anonymous memory of this process backed by transparent huge pages (Linux).
    pub huge_page_bytes: u64,
    pub load: Duration,
    pub wal_bytes: u64,
    /// Each hit lookup timed alone (includes ~20–30 ns of timer overhead).
    pub hit_latency: Latency,
    pub miss_latency: Latency,
    pub scalar_lookups_per_sec: f64,
    pub batch_lookups_per_sec: f64,
    pub snapshot: Duration,
    /// Reopen from a snapshot alone.
    pub recovery_from_snapshot: Duration,
    /// Reopen replaying the whole load from the WAL.
    pub recovery_from_wal: Duration,
}

impl BenchReport {
    /// Memory per profile beyond 8 bytes per membership.
    pub fn overhead_bytes_per_profile(&self) -> f64 {
        (self.memory_bytes as f64 - 8.0 * self.memberships as f64) / self.profiles.max(1) as f64
    }

    pub fn memberships_per_sec(&self) -> f64 {
        self.memberships as f64 / self.load.as_secs_f64()
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_sec = |d: Duration| self.profiles as f64 / d.as_secs_f64();
        writeln!(
            f,
            "profiles {}  memberships {} ({:.2}/profile)",
            self.profiles,
            self.memberships,
            self.memberships as f64 / self.profiles.max(1) as f64
        )?;
        writeln!(
            f,
            "memory {:.1} MiB = {:.1} B/profile = {:.1} B/profile overhead + 8 B/membership",
            self.memory_bytes as f64 / (1 << 20) as f64,
            self.memory_bytes as f64 / self.profiles.max(1) as f64,
            self.overhead_bytes_per_profile()
        )?;
        writeln!(
            f,
            "  slots {:.1} MiB ({:.1} % load), arena {:.1} MiB mapped, {:.1} MiB used, {:.1} MiB garbage; huge pages {:.0} MiB",
            self.memory.slot_bytes as f64 / (1 << 20) as f64,
            100.0 * self.profiles as f64 / self.memory.slots.max(1) as f64,
            self.memory.arena_bytes as f64 / (1 << 20) as f64,
            self.memory.arena_used_bytes as f64 / (1 << 20) as f64,
            self.memory.arena_garbage_bytes as f64 / (1 << 20) as f64,
            self.huge_page_bytes as f64 / (1 << 20) as f64
        )?;
        writeln!(
            f,
            "durable bulk write {:.2} s: {:.2} M memberships/s, {:.2} M profiles/s, WAL {:.0} MiB",
            self.load.as_secs_f64(),
            self.memberships_per_sec() / 1e6,
            per_sec(self.load) / 1e6,
            self.wal_bytes as f64 / (1 << 20) as f64
        )?;
        for (name, latency) in [("hit", self.hit_latency), ("miss", self.miss_latency)] {
            writeln!(
                f,
                "lookup {name}: p50 {:.0} ns  p99 {:.0} ns  p99.9 {:.0} ns  max {:.0} ns",
                latency.p50_ns, latency.p99_ns, latency.p999_ns, latency.max_ns
            )?;
        }
        writeln!(
            f,
            "lookup throughput: scalar {:.2} M/s, batched {:.2} M/s (one thread)",
            self.scalar_lookups_per_sec / 1e6,
            self.batch_lookups_per_sec / 1e6
        )?;
        writeln!(
            f,
            "snapshot {:.2} s; recovery from snapshot {:.2} s ({:.2} M profiles/s), from WAL {:.2} s ({:.2} M profiles/s)",
            self.snapshot.as_secs_f64(),
            self.recovery_from_snapshot.as_secs_f64(),
            per_sec(self.recovery_from_snapshot) / 1e6,
            self.recovery_from_wal.as_secs_f64(),
            per_sec(self.recovery_from_wal) / 1e6
        )
    }
}

/// `AnonHugePages` of this process, 0 where unknown.
fn anon_huge_page_bytes() -> u64 {
    let Ok(rollup) = std::fs::read_to_string("/proc/self/smaps_rollup") else {
        return 0;
    };
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Loads `config.profiles` realistic profiles through the durable write path, then measures
/// memory, lookups and recovery.
pub fn run(config: &BenchConfig) -> io::Result<BenchReport> {
    let now = Timestamp::from_secs(1_800_000_000);
    let clock = Arc::new(ManualClock::new(now));
    let store_config = EmbeddedConfig {
        snapshot_after_wal_bytes: u64::MAX,
        snapshot_on_shutdown_after_wal_bytes: u64::MAX,
        cleanup_interval: Duration::from_secs(24 * 3600),
        ..EmbeddedConfig::new(&config.dir)
    };
    let mut report = BenchReport::default();
    let store = EmbeddedProfileStore::open(store_config.clone(), clock.clone())?;
    let started = Instant::now();
    store
        .write_all_blocking(generate_realistic(
            config.profiles,
            config.seed,
            now,
            config.batch_size,
        ))
        .map_err(io::Error::other)?;
    report.load = started.elapsed();
    let stats = store.stats();
    report.profiles = stats.profiles;
    report.memberships = stats.memberships;
    report.memory_bytes = stats.memory_bytes;
    report.wal_bytes = stats.wal_bytes;
    report.memory = store.memory_breakdown();
    report.huge_page_bytes = anon_huge_page_bytes();

    let mut state = config.seed ^ 0xabcdef;
    let mut random_index = || {
        state = splitmix(state);
        state % config.profiles.max(1)
    };
    let hits: Vec<ProfileKey> = (0..config.lookups)
        .map(|_| realistic_key(config.seed, random_index()))
        .collect();
    let misses: Vec<ProfileKey> = (0..config.lookups)
        .map(|_| realistic_key(config.seed ^ 0x77, random_index()))
        .collect();
    let mut out = Vec::with_capacity(64);
    let mut found = 0usize;
    for key in hits.iter().take(100_000) {
        found += store.lookup(*key, now, &mut out) as usize;
    }
    let mut samples = Vec::with_capacity(config.lookups);
    for key in &hits {
        let start = Instant::now();
        found += store.lookup(*key, now, &mut out) as usize;
        samples.push(start.elapsed().as_nanos() as u32);
    }
    report.hit_latency = Latency::from_samples(&mut samples);
    samples.clear();
    for key in &misses {
        let start = Instant::now();
        found += store.lookup(*key, now, &mut out) as usize;
        samples.push(start.elapsed().as_nanos() as u32);
    }
    report.miss_latency = Latency::from_samples(&mut samples);
    let start = Instant::now();
    let mut segments = 0usize;
    for key in &hits {
        store.lookup(*key, now, &mut out);
        segments += out.len();
    }
    report.scalar_lookups_per_sec = hits.len() as f64 / start.elapsed().as_secs_f64();
    let mut batch = BatchLookup::new();
    let start = Instant::now();
    for chunk in hits.chunks(256) {
        store.lookup_batch(chunk, now, &mut batch);
        segments += (0..batch.len())
            .filter_map(|i| batch.get(i))
            .map(<[_]>::len)
            .sum::<usize>();
    }
    report.batch_lookups_per_sec = hits.len() as f64 / start.elapsed().as_secs_f64();
    std::hint::black_box((found, segments));
    let expected = config.lookups.min(100_000) + config.lookups;
    if config.profiles > 0 && found < expected {
        return Err(io::Error::other(format!(
            "benchmark lookups found {found} of {expected} loaded profiles"
        )));
    }

    // Recovery replaying the whole WAL, then from a snapshot.
    store.shutdown_blocking()?;
    drop(store);
    let started = Instant::now();
    let store = EmbeddedProfileStore::open(store_config.clone(), clock.clone())?;
    report.recovery_from_wal = started.elapsed();
    let started = Instant::now();
    store.snapshot_now()?;
    report.snapshot = started.elapsed();
    store.shutdown_blocking()?;
    drop(store);
    let started = Instant::now();
    let store = EmbeddedProfileStore::open(store_config, clock)?;
    report.recovery_from_snapshot = started.elapsed();
    if store.stats().profiles != report.profiles {
        return Err(io::Error::other("recovered profile count differs"));
    }
    drop(store);
    Ok(report)
}
