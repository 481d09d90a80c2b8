//! The measurement steps shared by all candidates.

use crate::data::{BATCH_PROFILES, Batch, Dataset, Link, NOW, query_keys};
use crate::measure::{histogram, percentiles};
use crate::store::Store;
use std::time::{Duration, Instant};

/// Named results of one candidate run, in the order they were measured.
#[derive(Default)]
pub struct Report(pub Vec<(String, String)>);

impl Report {
    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.0.push((key.to_owned(), value.to_string()));
    }
}

pub struct Workload {
    pub data: Dataset,
    pub profiles: u64,
    pub lookups: usize,
    pub seed: u64,
    /// Stop loading after this much wall time (the rest of the run uses what was loaded).
    pub load_budget: Option<Duration>,
}

impl Workload {
    /// The same workload restricted to the first `profiles` profiles.
    pub fn with_profiles(&self, profiles: u64) -> Workload {
        Workload {
            data: self.data.clone(),
            profiles,
            ..*self
        }
    }
}

/// What a pass over the batches did.
pub struct Loaded {
    pub profiles: u64,
    pub memberships: u64,
    /// Sum of the timed step calls.
    pub total: Duration,
    /// One sample per batch, µs.
    pub per_batch: hdrhistogram::Histogram<u64>,
    /// Batch rate over the last tenth of the batches (shows slow-down as the store grows).
    pub last_tenth_batches_per_s: f64,
}

/// Calls `step` once per batch of [`BATCH_PROFILES`] profiles; only `step` is timed.
pub fn for_each_batch(
    w: &Workload,
    mut step: impl FnMut(&Batch) -> anyhow::Result<()>,
) -> anyhow::Result<Loaded> {
    let wall = Instant::now();
    let mut batch = Batch::with_capacity(BATCH_PROFILES);
    let mut per_batch = histogram();
    let mut times = Vec::new();
    let mut memberships = 0u64;
    let mut first = 0;
    let mut next_progress = w.profiles / 10;
    while first < w.profiles {
        if w.load_budget.is_some_and(|budget| wall.elapsed() > budget) {
            eprint!(" load budget reached after {first} profiles");
            break;
        }
        let count = BATCH_PROFILES.min((w.profiles - first) as usize);
        w.data.fill_batch(first, count, &mut batch);
        let started = Instant::now();
        step(&batch)?;
        let took = started.elapsed();
        times.push(took);
        per_batch.saturating_record(took.as_micros() as u64);
        memberships += batch.memberships() as u64;
        first += count as u64;
        if first >= next_progress {
            eprint!(" {}%", first * 100 / w.profiles);
            next_progress += w.profiles / 10;
        }
    }
    eprintln!();
    let tail = &times[times.len() - times.len().div_ceil(10)..];
    Ok(Loaded {
        profiles: first,
        memberships,
        total: times.iter().sum(),
        per_batch,
        last_tenth_batches_per_s: tail.len() as f64 / tail.iter().sum::<Duration>().as_secs_f64(),
    })
}

/// Loads the profiles through `Store::apply` and reports rates and per-batch latency.
pub fn load(store: &mut dyn Store, w: &Workload, r: &mut Report) -> anyhow::Result<Loaded> {
    let loaded = for_each_batch(w, |batch| store.apply(batch))?;
    let secs = loaded.total.as_secs_f64();
    let batches = loaded.per_batch.len();
    let [p50, p99, _] = percentiles(&loaded.per_batch);
    r.set("profiles_loaded", loaded.profiles);
    r.set("memberships", loaded.memberships);
    r.set("load_s", format!("{secs:.2}"));
    r.set(
        "load_profiles_per_s",
        format!("{:.0}", loaded.profiles as f64 / secs),
    );
    r.set(
        "load_memberships_per_s",
        format!("{:.0}", loaded.memberships as f64 / secs),
    );
    r.set("batches", batches);
    r.set("batches_per_s", format!("{:.1}", batches as f64 / secs));
    r.set(
        "last_tenth_batches_per_s",
        format!("{:.1}", loaded.last_tenth_batches_per_s),
    );
    r.set("batch_p50_us", p50);
    r.set("batch_p99_us", p99);
    r.set("batch_max_us", loaded.per_batch.max());
    Ok(loaded)
}

/// Checks answers against the generator: hits return exactly the live links, misses nothing.
pub fn verify(store: &dyn Store, w: &Workload, count: usize) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let mut links = Vec::new();
    for (i, key) in query_keys(&w.data, w.profiles, count, true, w.seed ^ 0xC4EC) {
        let updated_at = w.data.profile(i, &mut links);
        crate::data::live_links(updated_at, links.iter().copied(), NOW, &mut expected);
        anyhow::ensure!(store.lookup(key, NOW, &mut out), "profile {i} not found");
        anyhow::ensure!(
            out == expected,
            "profile {i}: got {out:?}, expected {expected:?}"
        );
    }
    for (i, key) in query_keys(&w.data, w.profiles, count, false, w.seed ^ 0xC4ED) {
        anyhow::ensure!(
            !store.lookup(key, NOW, &mut out),
            "never-loaded profile {i} was found"
        );
    }
    Ok(())
}

/// Times `keys` one lookup at a time.
fn timed(
    store: &dyn Store,
    keys: &[(u64, u128)],
    out: &mut Vec<Link>,
) -> (hdrhistogram::Histogram<u64>, usize) {
    let mut h = histogram();
    let mut live = 0;
    for &(_, key) in keys {
        let started = Instant::now();
        store.lookup(key, NOW, out);
        h.saturating_record(started.elapsed().as_nanos() as u64);
        live += out.len();
    }
    (h, live)
}

/// Random point lookups: timed hits, timed misses, and an untimed pass for the mean cost.
/// `prefix` distinguishes repeated passes in the report.
pub fn lookups(
    store: &dyn Store,
    w: &Workload,
    r: &mut Report,
    prefix: &str,
) -> anyhow::Result<()> {
    verify(store, w, 2_000)?;
    let hits = query_keys(&w.data, w.profiles, w.lookups, true, w.seed ^ 0x4175);
    let misses = query_keys(&w.data, w.profiles, w.lookups, false, w.seed ^ 0x3155);
    let untimed = query_keys(&w.data, w.profiles, w.lookups, true, w.seed ^ 0x0B17);
    let mut out = Vec::with_capacity(16);
    let mut set = |key: &str, value: String| r.set(&format!("{prefix}{key}"), value);

    let (h, live) = timed(store, &hits, &mut out);
    let [p50, p99, p999] = percentiles(&h);
    set("lookups", w.lookups.to_string());
    set("hit_p50_ns", p50.to_string());
    set("hit_p99_ns", p99.to_string());
    set("hit_p999_ns", p999.to_string());
    set("hit_max_ns", h.max().to_string());
    set(
        "live_links_per_hit",
        format!("{:.2}", live as f64 / hits.len() as f64),
    );

    let (h, _) = timed(store, &misses, &mut out);
    let [p50, p99, p999] = percentiles(&h);
    set("miss_p50_ns", p50.to_string());
    set("miss_p99_ns", p99.to_string());
    set("miss_p999_ns", p999.to_string());

    let started = Instant::now();
    let mut found = 0usize;
    for &(_, key) in &untimed {
        found += store.lookup(key, NOW, &mut out) as usize + out.len();
    }
    let mean = started.elapsed().as_nanos() as f64 / untimed.len() as f64;
    std::hint::black_box(found);
    set("hit_mean_untimed_ns", format!("{mean:.0}"));
    Ok(())
}
