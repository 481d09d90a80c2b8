//! The embedded store against a simple model over random histories: writes of every kind,
//! time passing, clean-up, snapshots and restarts, with enough keys and churn for the tables to
//! grow and their arenas to be compacted.

mod embedded_support;

use embedded_support::*;
use proptest::prelude::*;
use segmart_domain::ManualClock;
use segmart_storage::profile::{ProfileMutation, ProfileStore};

const KEYS: u128 = 400;
const EXPIRY_DAYS: i64 = 14;

/// Key number, kind (delete, set, remove, add) and links as (segment, expiry offset).
type RandomMutation = (u128, u8, Vec<(u32, i64)>);

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<RandomMutation>),
    Advance(i64),
    Cleanup,
    Snapshot,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let mutation = (
        0..KEYS,
        0u8..10,
        prop::collection::vec((0u32..30, -DAY..40 * DAY), 0..10),
    );
    prop_oneof![
        10 => prop::collection::vec(mutation, 1..120).prop_map(Op::Write),
        3 => (0..4 * DAY).prop_map(Op::Advance),
        1 => Just(Op::Cleanup),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restart),
    ]
}

fn to_mutation(
    now: segmart_domain::Timestamp,
    (n, kind, links): &RandomMutation,
) -> ProfileMutation {
    let k = key(*n);
    let links: Vec<_> = links
        .iter()
        .map(|(s, offset)| (*s, now.plus_secs(*offset)))
        .collect();
    let segments: Vec<u32> = links.iter().map(|(s, _)| *s).collect();
    match kind {
        0 => delete(k),
        1 => set(k, &links),
        2 => remove(k, &segments),
        _ => add(k, &links),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(T0);
            let mut store = open(dir.path(), &clock);
            let mut model = Model::new(EXPIRY_DAYS * DAY);
            let keys: Vec<_> = (0..KEYS).map(key).collect();
            let mut now = T0;
            for op in ops {
                match op {
                    Op::Write(mutations) => {
                        let b = batch(now, mutations.iter().map(|m| to_mutation(now, m)).collect());
                        store.write(b.clone()).await.unwrap();
                        model.apply(&b);
                    }
                    Op::Advance(secs) => {
                        now = now.plus_secs(secs);
                        clock.set(now);
                    }
                    Op::Cleanup => {
                        store.cleanup_now();
                        model.cleanup(now);
                        let stats = store.stats();
                        let live: Vec<_> = keys.iter().filter_map(|k| model.read(*k, now)).collect();
                        prop_assert_eq!(stats.profiles as usize, live.len());
                        prop_assert_eq!(
                            stats.memberships as usize,
                            live.iter().map(Vec::len).sum::<usize>()
                        );
                    }
                    Op::Snapshot => store.snapshot_now().unwrap(),
                    Op::Restart => {
                        drop(store);
                        store = open(dir.path(), &clock);
                    }
                }
                let reads = store.read(&keys, now).await.unwrap();
                for (k, read) in keys.iter().zip(&reads) {
                    prop_assert_eq!(links(read), model.read(*k, now), "key {:?}", k);
                }
            }
            Ok(())
        })?;
    }
}
