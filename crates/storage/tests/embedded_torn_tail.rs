//! A crash can leave a partly written record at the end of the WAL. Such a write was never
//! acknowledged; recovery must drop exactly it and keep everything before it.

mod embedded_support;

use std::path::Path;

use embedded_support::*;
use segmart_domain::{ManualClock, Timestamp};
use segmart_storage::embedded::EmbeddedProfileStore;
use segmart_storage::profile::{ProfileKey, ProfileStore, WriteBatch};

const SEGMENT_HEADER: usize = 16;

fn ts(secs_after_t0: i64) -> Timestamp {
    T0.plus_secs(secs_after_t0)
}

fn batches() -> Vec<WriteBatch> {
    (0..24u128)
        .map(|round| {
            let mutations = (0..4u128)
                .map(|i| {
                    let k = key((round * 3 + i) % 20);
                    let s = (round % 7) as u32;
                    match (round + i) % 5 {
                        0 => delete(k),
                        1 => set(k, &[(s, ts(DAY))]),
                        2 => remove(k, &[s, s + 1]),
                        _ => add(k, &[(s, ts(DAY)), (s + 10, ts(2 * DAY))]),
                    }
                })
                .collect();
            batch(ts(round as i64), mutations)
        })
        .collect()
}

fn keys() -> Vec<ProfileKey> {
    (0..20u128).map(key).collect()
}

/// End offsets of the records in a WAL segment (white-box: `[len u32][crc u32][payload]`).
fn record_ends(segment: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = SEGMENT_HEADER;
    while at + 8 <= segment.len() {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
        ends.push(at);
    }
    assert_eq!(at, segment.len());
    ends
}

fn store_copy(source: &Path, wal_name: &str, wal: &[u8]) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(source.join("hash.key"), copy.path().join("hash.key")).unwrap();
    std::fs::write(copy.path().join(wal_name), wal).unwrap();
    copy
}

async fn reads(store: &EmbeddedProfileStore) -> Vec<Option<Vec<(u32, i64)>>> {
    let now = ts(100);
    store
        .read(&keys(), now)
        .await
        .unwrap()
        .iter()
        .map(links)
        .collect()
}

fn model_after(batches: &[WriteBatch]) -> Vec<Option<Vec<(u32, i64)>>> {
    let mut model = Model::new(segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS);
    for b in batches {
        model.apply(b);
    }
    keys().iter().map(|k| model.read(*k, ts(100))).collect()
}

#[tokio::test]
async fn truncation_at_any_offset_recovers_exactly_the_complete_records() {
    let source = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let batches = batches();
    let store = open(source.path(), &clock);
    for b in &batches {
        // One at a time, so each acknowledged batch is its own record.
        store.write(b.clone()).await.unwrap();
    }
    drop(store);
    let wal_name = std::fs::read_dir(source.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("wal-"))
        .unwrap();
    let segment = std::fs::read(source.path().join(&wal_name)).unwrap();
    let ends = record_ends(&segment);
    assert_eq!(ends.len(), batches.len());

    let mut offsets: Vec<usize> = (0..segment.len()).step_by(11).collect();
    for end in &ends {
        offsets.extend([end - 1, *end, end + 1]);
    }
    offsets.extend(0..=SEGMENT_HEADER);
    offsets.retain(|&o| o <= segment.len());
    offsets.sort_unstable();
    offsets.dedup();

    for cut in offsets {
        let copy = store_copy(source.path(), &wal_name, &segment[..cut]);
        let store = open(copy.path(), &clock);
        // Every batch whose record was complete before the cut was acknowledged and is back;
        // the torn one is not.
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(
            reads(&store).await,
            model_after(&batches[..complete]),
            "cut at {cut}"
        );
        assert_eq!(store.recovery_report().wal_records as usize, complete);
        // The store keeps working after cutting the tail, and that survives a restart.
        if cut % 3 == 0 {
            let extra = batch(ts(50), vec![add(key(0), &[(99, ts(DAY))])]);
            store.write(extra.clone()).await.unwrap();
            drop(store);
            let store = open(copy.path(), &clock);
            let mut expected = batches[..complete].to_vec();
            expected.push(extra);
            assert_eq!(
                reads(&store).await,
                model_after(&expected),
                "write after cut at {cut}"
            );
        }
    }
}

#[tokio::test]
async fn garbage_or_zeros_after_the_last_record_are_dropped() {
    let source = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let batches = batches();
    let store = open(source.path(), &clock);
    for b in &batches {
        store.write(b.clone()).await.unwrap();
    }
    drop(store);
    let wal_name = std::fs::read_dir(source.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("wal-"))
        .unwrap();
    let segment = std::fs::read(source.path().join(&wal_name)).unwrap();
    let last_record_start = record_ends(&segment)[batches.len() - 2];

    let mut zeros = segment.clone();
    zeros.extend_from_slice(&[0; 4096]);
    let mut noise = segment.clone();
    noise.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // A full-length last record whose payload was only partly written (checksum mismatch).
    let mut torn_payload = segment.clone();
    let flip = last_record_start + 8 + 20;
    torn_payload[flip] ^= 0x40;

    for (name, wal, complete) in [
        ("zeros", zeros, batches.len()),
        ("noise", noise, batches.len()),
        ("bad checksum", torn_payload, batches.len() - 1),
    ] {
        let copy = store_copy(source.path(), &wal_name, &wal);
        let store = open(copy.path(), &clock);
        assert_eq!(
            reads(&store).await,
            model_after(&batches[..complete]),
            "{name}"
        );
        assert!(store.recovery_report().truncated_bytes > 0, "{name}");
        drop(store);
        assert_eq!(
            std::fs::read(copy.path().join(&wal_name)).unwrap().len(),
            record_ends(&segment)[complete - 1],
            "{name}: the torn tail is cut from the file"
        );
    }
}
