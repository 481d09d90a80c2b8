//! What readers and writers of the embedded profile store observe.

mod embedded_support;

use std::sync::Arc;

use embedded_support::*;
use segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS;
use segmart_domain::{ManualClock, Timestamp};
use segmart_storage::embedded::{BatchLookup, EmbeddedConfig, EmbeddedProfileStore};
use segmart_storage::profile::{ProfileStore, ProfileStoreError};

fn ts(secs_after_t0: i64) -> Timestamp {
    T0.plus_secs(secs_after_t0)
}

#[tokio::test]
async fn add_remove_set_clear_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    let p = key(1);
    let day = |d: i64| ts(d * DAY);

    store
        .write(batch(
            T0,
            vec![add(p, &[(30, day(30)), (10, day(10)), (20, day(20))])],
        ))
        .await
        .unwrap();
    let read = store.read(&[p], T0).await.unwrap();
    assert_eq!(
        links(&read[0]),
        Some(vec![
            (10, day(10).millis()),
            (20, day(20).millis()),
            (30, day(30).millis())
        ]),
        "links come back in segment order"
    );
    assert_eq!(read[0].as_ref().unwrap().updated_at, T0);

    // Re-adding refreshes the expiry; remove drops; remove-then-add in one item keeps.
    let update = segmart_storage::profile::ProfileMutation::Update {
        key: p,
        update: segmart_domain::profile::ResolvedUpdate {
            clear: false,
            remove: vec![
                segmart_domain::SegmentNum(20),
                segmart_domain::SegmentNum(30),
            ],
            add: vec![
                (segmart_domain::SegmentNum(10), day(40)),
                (segmart_domain::SegmentNum(30), day(5)),
            ],
        },
    };
    store.write(batch(ts(1), vec![update])).await.unwrap();
    let read = store.read(&[p], ts(1)).await.unwrap();
    assert_eq!(
        links(&read[0]),
        Some(vec![(10, day(40).millis()), (30, day(5).millis())])
    );
    assert_eq!(read[0].as_ref().unwrap().updated_at, ts(1));

    // Set replaces the whole list.
    store
        .write(batch(ts(2), vec![set(p, &[(7, day(3))])]))
        .await
        .unwrap();
    assert_eq!(
        links(&store.read(&[p], ts(2)).await.unwrap()[0]),
        Some(vec![(7, day(3).millis())])
    );

    // Clearing everything leaves a present profile with no links.
    store.write(batch(ts(3), vec![set(p, &[])])).await.unwrap();
    assert_eq!(
        links(&store.read(&[p], ts(3)).await.unwrap()[0]),
        Some(vec![])
    );
    let mut out = Vec::new();
    assert!(store.lookup(p, ts(3), &mut out));
    assert!(out.is_empty());

    // Delete removes the profile.
    store.write(batch(ts(4), vec![delete(p)])).await.unwrap();
    assert_eq!(store.read(&[p], ts(4)).await.unwrap(), vec![None]);
    assert!(!store.lookup(p, ts(4), &mut out));

    // Several mutations of one profile in one batch apply in order.
    store
        .write(batch(
            ts(5),
            vec![
                add(p, &[(1, day(1))]),
                remove(p, &[1]),
                add(p, &[(2, day(1))]),
                delete(key(2)),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        links(&store.read(&[p], ts(5)).await.unwrap()[0]),
        Some(vec![(2, day(1).millis())])
    );
}

#[tokio::test]
async fn link_expiry_is_exact_at_read_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    let p = key(7);
    store
        .write(batch(T0, vec![add(p, &[(1, ts(60)), (2, ts(3600))])]))
        .await
        .unwrap();
    let just_before = Timestamp::from_millis(ts(60).millis() - 1);
    assert_eq!(
        links(&store.read(&[p], just_before).await.unwrap()[0]),
        Some(vec![(1, ts(60).millis()), (2, ts(3600).millis())])
    );
    assert_eq!(
        links(&store.read(&[p], ts(60)).await.unwrap()[0]),
        Some(vec![(2, ts(3600).millis())]),
        "a link is gone at its expiry"
    );
    let mut out = Vec::new();
    assert!(store.lookup(p, ts(3600), &mut out));
    assert!(out.is_empty());
    // Expiries are kept in whole seconds, rounded down: never served after the real expiry.
    store
        .write(batch(
            T0,
            vec![add(
                key(8),
                &[(1, Timestamp::from_millis(ts(10).millis() + 999))],
            )],
        ))
        .await
        .unwrap();
    assert_eq!(
        links(&store.read(&[key(8)], ts(10)).await.unwrap()[0]),
        Some(vec![])
    );
    // Adding an already expired link acts as a removal.
    store
        .write(batch(ts(100), vec![add(p, &[(2, ts(50))])]))
        .await
        .unwrap();
    assert_eq!(
        links(&store.read(&[p], ts(100)).await.unwrap()[0]),
        Some(vec![])
    );
}

#[tokio::test]
async fn profile_expires_exactly_after_fourteen_days_without_update() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    let p = key(11);
    let expiry = DEFAULT_PROFILE_EXPIRY_SECS;
    store
        .write(batch(T0, vec![add(p, &[(5, ts(60 * DAY))])]))
        .await
        .unwrap();
    let last_moment = Timestamp::from_millis(ts(expiry).millis() - 1);
    assert!(store.read(&[p], last_moment).await.unwrap()[0].is_some());
    assert_eq!(store.read(&[p], ts(expiry)).await.unwrap(), vec![None]);
    let mut out = Vec::new();
    assert!(!store.lookup(p, ts(expiry), &mut out));

    // An update before the deadline keeps the profile and its links alive.
    let q = key(12);
    store
        .write(batch(T0, vec![add(q, &[(5, ts(60 * DAY))])]))
        .await
        .unwrap();
    store
        .write(batch(ts(expiry - 1), vec![add(q, &[(6, ts(60 * DAY))])]))
        .await
        .unwrap();
    assert_eq!(
        links(&store.read(&[q], ts(expiry + 10)).await.unwrap()[0]),
        Some(vec![(5, ts(60 * DAY).millis()), (6, ts(60 * DAY).millis())])
    );

    // An update after the deadline starts a new profile: old links do not come back,
    // whether or not clean-up has run.
    // (A fresh store each time: the store's clock only moves forward.)
    for cleanup_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let store = open(dir.path(), &clock);
        let r = key(13);
        store
            .write(batch(T0, vec![add(r, &[(5, ts(60 * DAY))])]))
            .await
            .unwrap();
        clock.set(ts(expiry + DAY));
        if cleanup_first {
            store.cleanup_now();
        }
        store
            .write(batch(ts(expiry + DAY), vec![add(r, &[(6, ts(60 * DAY))])]))
            .await
            .unwrap();
        assert_eq!(
            links(&store.read(&[r], ts(expiry + DAY)).await.unwrap()[0]),
            Some(vec![(6, ts(60 * DAY).millis())]),
            "cleanup_first = {cleanup_first}"
        );
    }
}

#[tokio::test]
async fn cleanup_reclaims_memory_without_changing_reads() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    let keys: Vec<_> = (0..20_000u128).map(key).collect();
    for chunk in keys.chunks(2_000) {
        let mutations = chunk
            .iter()
            .enumerate()
            .map(|(i, k)| {
                // A third of the profiles have only short links; every profile has some.
                let short = (i % 3 == 0) as i64;
                add(
                    *k,
                    &[
                        (1, ts(DAY)),
                        (2, ts(2 * DAY)),
                        (3, ts((1 - short) * 30 * DAY + DAY)),
                    ],
                )
            })
            .collect();
        store.write(batch(T0, mutations)).await.unwrap();
    }
    // A thousand profiles were updated long ago and are past their profile expiry.
    let stale: Vec<_> = (100_000..101_000u128).map(key).collect();
    let mutations = stale
        .iter()
        .map(|k| add(*k, &[(9, ts(90 * DAY))]))
        .collect();
    store
        .write(batch(ts(-20 * DAY), mutations))
        .await
        .unwrap_err_or_ok();

    let now = ts(3 * DAY);
    clock.set(now);
    let all: Vec<_> = keys.iter().chain(&stale).copied().collect();
    let before_reads = store.read(&all, now).await.unwrap();
    let before = store.stats();
    let report = store.cleanup_now();
    let after = store.stats();
    assert_eq!(store.read(&all, now).await.unwrap(), before_reads);
    assert!(report.links > 0, "{report:?}");
    assert!(
        after.memberships < before.memberships,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.memory_bytes < before.memory_bytes,
        "{before:?} -> {after:?}"
    );
    let live_links: usize = before_reads
        .iter()
        .flatten()
        .map(|view| view.segments.len())
        .sum();
    assert_eq!(after.memberships as usize, live_links);
    assert_eq!(
        after.profiles as usize,
        before_reads.iter().filter(|v| v.is_some()).count()
    );
}

/// `write` with a past `at` is allowed: it is stamped no earlier than what the store has seen.
trait ErrOrOk {
    fn unwrap_err_or_ok(self);
}

impl ErrOrOk for Result<(), ProfileStoreError> {
    fn unwrap_err_or_ok(self) {
        self.expect("write succeeds");
    }
}

#[tokio::test]
async fn a_full_queue_answers_saturated_and_loses_nothing_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = EmbeddedConfig {
        queue_capacity: 1,
        ..config(dir.path())
    };
    let store = EmbeddedProfileStore::open(config, Arc::new(clock.clone())).unwrap();
    // Many writes issued at once: the writer commits (with an fdatasync) far slower than
    // this loop issues them, so the one-slot queue overflows.
    let writes = (0..64u128).map(|n| store.write(batch(T0, vec![add(key(n), &[(1, ts(DAY))])])));
    let results = futures_join_all(writes).await;
    let saturated = results
        .iter()
        .filter(|r| matches!(r, Err(ProfileStoreError::Saturated)))
        .count();
    assert!(saturated > 0, "the queue never filled");
    for (n, result) in results.iter().enumerate() {
        let present = store.read(&[key(n as u128)], T0).await.unwrap()[0].is_some();
        match result {
            Ok(()) => assert!(present, "acknowledged write {n} is visible"),
            Err(ProfileStoreError::Saturated) => {
                assert!(!present, "refused write {n} was not applied")
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
}

/// Polls all futures together (what `futures::future::join_all` does), without the crate.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("ready")).collect()
}

#[tokio::test]
async fn writes_after_shutdown_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    store
        .write(batch(T0, vec![add(key(1), &[(1, ts(DAY))])]))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    let refused = store
        .write(batch(T0, vec![add(key(2), &[(1, ts(DAY))])]))
        .await;
    assert!(
        matches!(refused, Err(ProfileStoreError::ShuttingDown)),
        "{refused:?}"
    );
    store.shutdown().await.unwrap();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let first = open(dir.path(), &clock);
    let second = EmbeddedProfileStore::open(config(dir.path()), Arc::new(clock.clone()));
    let error = second.err().expect("second open fails");
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error}");
    first.shutdown_blocking().unwrap();
    // The lock is released at shutdown.
    let third = open(dir.path(), &clock);
    drop(third);
}

#[test]
fn the_hash_key_is_secret_and_stable_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let profile =
        segmart_domain::ProfileId::parse("user-1", &segmart_domain::IdType::Cookie).unwrap();
    let first_key = {
        let store = open(dir.path(), &clock);
        store.keyer().key(3, &profile)
    };
    let mode = std::fs::metadata(dir.path().join("hash.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read(dir.path().join("hash.key")).unwrap().len(),
        16
    );
    let store = open(dir.path(), &clock);
    assert_eq!(store.keyer().key(3, &profile), first_key);
    let other = tempfile::tempdir().unwrap();
    let elsewhere = open(other.path(), &clock);
    assert_ne!(
        elsewhere.keyer().key(3, &profile),
        first_key,
        "each store has its own secret"
    );
}

#[test]
fn lookup_reuses_the_callers_buffer_and_batches_agree() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    let mutations = (0..3_000u128)
        .filter(|n| n % 3 != 0)
        .map(|n| {
            add(
                key(n),
                &[
                    ((n % 50) as u32, ts(DAY)),
                    (100 + (n % 7) as u32, ts(2 * DAY)),
                ],
            )
        })
        .collect();
    store.write_blocking(batch(T0, mutations)).unwrap();
    let mut out = Vec::with_capacity(16);
    let buffer = out.as_ptr();
    let keys: Vec<_> = (0..3_000u128).map(key).collect();
    let mut batch_out = BatchLookup::new();
    store.lookup_batch(&keys, ts(DAY), &mut batch_out);
    assert_eq!(batch_out.len(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        let found = store.lookup(*k, ts(DAY), &mut out);
        assert_eq!(found, i % 3 != 0);
        assert_eq!(batch_out.get(i).map(pairs), found.then(|| pairs(&out)));
        assert_eq!(out.as_ptr(), buffer, "no reallocation");
    }
}

#[test]
fn readers_see_stable_profiles_while_the_table_grows_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Arc::new(open(dir.path(), &clock));
    let stable: Vec<_> = (0..64u128).map(|n| key(1_000_000 + n)).collect();
    let mutations = stable
        .iter()
        .map(|k| add(*k, &[(1, ts(DAY)), (2, ts(2 * DAY))]))
        .collect();
    store.write_blocking(batch(T0, mutations)).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = Arc::clone(&store);
        let stable = stable.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                for k in &stable {
                    assert!(store.lookup(*k, T0, &mut out), "stable profile vanished");
                    assert_eq!(
                        pairs(&out),
                        vec![(1, ts(DAY).millis()), (2, ts(2 * DAY).millis())]
                    );
                    reads += 1;
                }
            }
            reads
        })
    };
    // Churn: new profiles (growth), then rewrites and deletes (garbage, compaction).
    for round in 0..40u128 {
        let mutations = (0..2_000u128)
            .map(|n| {
                let k = key(round % 8 * 2_000 + n);
                match round % 3 {
                    0 => add(k, &[((n % 90) as u32, ts(DAY)), (100, ts(DAY))]),
                    1 => set(k, &[((round % 5) as u32, ts(DAY))]),
                    _ => delete(k),
                }
            })
            .collect();
        store.write_blocking(batch(T0, mutations)).unwrap();
    }
    store.cleanup_now();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[tokio::test]
async fn segment_sizes_count_live_profiles_per_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), &clock);
    // 40 000 profiles (more than one scan window per shard): all in 1, even ones in 2, and
    // every tenth in 3 with a link that expires after an hour.
    let mutations: Vec<_> = (0..40_000u128)
        .map(|n| {
            let mut links = vec![(1, ts(DAY))];
            if n % 2 == 0 {
                links.push((2, ts(DAY)));
            }
            if n % 10 == 0 {
                links.push((3, ts(3600)));
            }
            add(key(n), &links)
        })
        .collect();
    store.write(batch(T0, mutations)).await.unwrap();
    let sizes = store.segment_sizes(T0).await.unwrap();
    assert_eq!(sizes.get(&1), Some(&40_000));
    assert_eq!(sizes.get(&2), Some(&20_000));
    assert_eq!(sizes.get(&3), Some(&4_000));
    // Expired links and profiles are not counted, whether clean-up ran or not.
    let later = store.segment_sizes(ts(3600)).await.unwrap();
    assert_eq!(later.get(&3), None);
    assert_eq!(later.get(&1), Some(&40_000));
    let gone = store.segment_sizes(ts(DAY)).await.unwrap();
    assert!(gone.is_empty(), "{gone:?}");
}
