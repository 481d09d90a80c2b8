//! Restarting the embedded profile store: everything acknowledged comes back, from the WAL,
//! from a snapshot, or both.

mod embedded_support;

use std::path::Path;
use std::sync::Arc;

use embedded_support::*;
use segmart_domain::{ManualClock, Timestamp};
use segmart_storage::embedded::{EmbeddedConfig, EmbeddedProfileStore};
use segmart_storage::profile::{ProfileKey, ProfileStore, WriteBatch};

fn ts(secs_after_t0: i64) -> Timestamp {
    T0.plus_secs(secs_after_t0)
}

/// A varied history: adds, re-adds, removes, sets, clears, deletes and re-creations.
fn history(rounds: u128) -> Vec<WriteBatch> {
    let mut batches = Vec::new();
    for round in 0..rounds {
        let at = ts(round as i64 * 60);
        let mut mutations = Vec::new();
        for n in 0..200u128 {
            let k = key(n);
            let s = ((n + round) % 40) as u32;
            mutations.push(match (n + round) % 9 {
                0 => delete(k),
                1 => set(k, &[(s, ts(DAY)), (s + 1, ts(2 * DAY))]),
                2 => remove(k, &[s, s + 1, s + 2]),
                3 => set(k, &[]),
                _ => add(
                    k,
                    &[(s, ts((round as i64 + 1) * 3_600)), (s + 3, ts(3 * DAY))],
                ),
            });
        }
        batches.push(batch(at, mutations));
    }
    batches
}

fn all_keys() -> Vec<ProfileKey> {
    (0..200u128).map(key).collect()
}

async fn assert_matches(store: &EmbeddedProfileStore, model: &Model, now: Timestamp) {
    let keys = all_keys();
    let reads = store.read(&keys, now).await.unwrap();
    for (k, read) in keys.iter().zip(&reads) {
        assert_eq!(links(read), model.read(*k, now), "key {k:?}");
    }
}

async fn write_all(store: &EmbeddedProfileStore, model: &mut Model, batches: &[WriteBatch]) {
    for b in batches {
        store.write(b.clone()).await.unwrap();
        model.apply(b);
    }
}

fn files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn restart_replays_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut model = Model::new(segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS);
    let store = open(dir.path(), &clock);
    write_all(&store, &mut model, &history(12)).await;
    let before = store.stats();
    store.shutdown().await.unwrap();
    drop(store);
    assert!(files(dir.path(), "snapshot-").is_empty());

    let store = open(dir.path(), &clock);
    assert_eq!(store.recovery_report().wal_records, 12);
    assert_matches(&store, &model, ts(600)).await;
    let after = store.stats();
    assert_eq!(
        (after.profiles, after.memberships),
        (before.profiles, before.memberships)
    );
}

#[tokio::test]
async fn restart_loads_a_snapshot_alone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut model = Model::new(segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS);
    let store = open(dir.path(), &clock);
    write_all(&store, &mut model, &history(12)).await;
    let before = store.stats();
    assert_eq!(before.batches_written, 12);
    assert!(before.wal_bytes > 12 * 200 * 17);
    store.snapshot_now().unwrap();
    assert_eq!(
        store.stats().wal_bytes,
        16,
        "only the new segment's header is left"
    );
    // The snapshot covers the old segment, which is deleted; the new one holds no record.
    assert_eq!(files(dir.path(), "snapshot-").len(), 1);
    assert_eq!(files(dir.path(), "wal-").len(), 1);
    store.shutdown().await.unwrap();
    drop(store);

    let store = open(dir.path(), &clock);
    let report = store.recovery_report();
    assert_eq!(report.wal_records, 0);
    assert_eq!(report.snapshot_profiles, report.profiles);
    assert!(report.profiles > 0);
    assert_matches(&store, &model, ts(600)).await;
}

#[tokio::test]
async fn restart_loads_a_snapshot_then_the_wal_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut model = Model::new(segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS);
    let batches = history(20);
    let store = open(dir.path(), &clock);
    write_all(&store, &mut model, &batches[..8]).await;
    store.snapshot_now().unwrap();
    write_all(&store, &mut model, &batches[8..14]).await;
    store.snapshot_now().unwrap();
    write_all(&store, &mut model, &batches[14..]).await;
    store.shutdown().await.unwrap();
    drop(store);

    let store = open(dir.path(), &clock);
    assert_eq!(store.recovery_report().wal_records, 6);
    assert_matches(&store, &model, ts(1_200)).await;
    // And it keeps working after recovery, across another restart.
    let more = history(3);
    write_all(&store, &mut model, &more).await;
    drop(store);
    let store = open(dir.path(), &clock);
    assert_matches(&store, &model, ts(1_300)).await;
}

#[tokio::test]
async fn replaying_operations_a_snapshot_already_contains_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut model = Model::new(segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS);
    let batches = history(16);
    let store = open(dir.path(), &clock);
    write_all(&store, &mut model, &batches[..10]).await;
    // Keep the records of the first ten batches, as they were before the snapshot removed them.
    let old_segment = std::fs::read(dir.path().join(&files(dir.path(), "wal-")[0])).unwrap();
    store.snapshot_now().unwrap();
    write_all(&store, &mut model, &batches[10..]).await;
    store.shutdown().await.unwrap();
    drop(store);

    // Put the already-snapshotted records in front of the newer ones in the live segment, as a
    // snapshot taken while those writes were still being applied would leave them.
    let live_name = files(dir.path(), "wal-")[0].clone();
    let live = std::fs::read(dir.path().join(&live_name)).unwrap();
    const SEGMENT_HEADER: usize = 16;
    let mut merged = live[..SEGMENT_HEADER].to_vec();
    merged.extend_from_slice(&old_segment[SEGMENT_HEADER..]);
    merged.extend_from_slice(&live[SEGMENT_HEADER..]);
    std::fs::write(dir.path().join(&live_name), merged).unwrap();

    let store = open(dir.path(), &clock);
    assert_eq!(store.recovery_report().wal_records, 16);
    assert_matches(&store, &model, ts(1_000)).await;
}

#[tokio::test]
async fn shutdown_snapshots_a_large_wal_and_snapshots_start_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut model = Model::new(segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS);
    let config = EmbeddedConfig {
        snapshot_after_wal_bytes: 20_000,
        snapshot_on_shutdown_after_wal_bytes: 1,
        ..config(dir.path())
    };
    let store = EmbeddedProfileStore::open(config.clone(), Arc::new(clock.clone())).unwrap();
    write_all(&store, &mut model, &history(10)).await;
    store.shutdown().await.unwrap();
    drop(store);
    let store = EmbeddedProfileStore::open(config, Arc::new(clock.clone())).unwrap();
    assert_eq!(
        store.recovery_report().wal_records,
        0,
        "shutdown left a snapshot"
    );
    assert_matches(&store, &model, ts(600)).await;
    assert_eq!(
        files(dir.path(), "snapshot-").len(),
        1,
        "older snapshots are removed"
    );
}

#[tokio::test]
async fn expiry_and_cleanup_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let expiry = segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS;
    let mut model = Model::new(expiry);
    let store = open(dir.path(), &clock);
    let old = batch(
        T0,
        vec![
            add(key(1), &[(1, ts(60 * DAY))]),
            add(key(2), &[(1, ts(60))]),
        ],
    );
    write_all(&store, &mut model, &[old]).await;
    clock.set(ts(expiry + DAY));
    store.cleanup_now();
    model.cleanup(ts(expiry + DAY));
    store.snapshot_now().unwrap();
    // A late batch (stamped before the clean-up) is treated as happening at the clean-up time.
    let late = batch(ts(DAY), vec![add(key(1), &[(2, ts(60 * DAY))])]);
    write_all(&store, &mut model, &[late]).await;
    assert_matches(&store, &model, ts(expiry + DAY)).await;
    drop(store);
    let store = open(dir.path(), &clock);
    assert_matches(&store, &model, ts(expiry + DAY)).await;
    assert_eq!(
        links(&store.read(&[key(1)], ts(expiry + DAY)).await.unwrap()[0]),
        Some(vec![(2, ts(60 * DAY).millis())])
    );
}

#[test]
fn corruption_before_the_newest_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    for b in history(3) {
        store.write_blocking(b).unwrap();
    }
    // Force a second segment without a snapshot removing the first: copy the first aside.
    let first = files(dir.path(), "wal-")[0].clone();
    let saved = std::fs::read(dir.path().join(&first)).unwrap();
    store.snapshot_now().unwrap();
    store.write_blocking(history(1).remove(0)).unwrap();
    drop(store);
    for name in files(dir.path(), "snapshot-") {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let mut corrupt = saved;
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(dir.path().join(&first), corrupt).unwrap();
    let error = EmbeddedProfileStore::open(config(dir.path()), Arc::new(clock))
        .err()
        .expect("open fails");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
}
