//! The embedded store's benchmark, run small as a test.
//!
//! Full-size run (release build, prints the report):
//! `SEGMART_BENCH_PROFILES=10000000 cargo test --release -p segmart-storage --test embedded_bench -- --nocapture`

use segmart_storage::embedded::bench::{BenchConfig, run};

#[test]
fn benchmark_runs_and_meets_memory_budget() {
    let profiles = std::env::var("SEGMART_BENCH_PROFILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = BenchConfig::new(dir.path().join("store"), profiles);
    config.lookups = (profiles as usize / 10).clamp(10_000, 1_000_000);
    let report = run(&config).unwrap();
    println!("{report}");
    assert_eq!(report.profiles, profiles);
    let per_membership = report.memberships as f64 / report.profiles as f64;
    assert!((6.0..7.0).contains(&per_membership), "{per_membership}");
    // Memory budget: at most 40 B per profile plus 8 B per membership at scale; small stores
    // pay page rounding for each of the 64 shards.
    let budget = if profiles >= 1_000_000 { 40.0 } else { 60.0 };
    assert!(
        report.overhead_bytes_per_profile() <= budget,
        "overhead {:.1} B/profile",
        report.overhead_bytes_per_profile()
    );
}
