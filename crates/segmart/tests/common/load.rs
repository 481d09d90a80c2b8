//! A profile write load with a ledger of what the server acknowledged, and the check of a data
//! directory against that ledger after a restart.
//!
//! Every batch writes fresh profiles (`w<writer>-b<seq>-p<item>`) whose segment lists follow
//! from their ids, so after a crash the expected state of each profile is known exactly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Api, Server, segment_ids};

/// Segments the workload uses; create them before starting it.
pub const SEGMENTS: [&str; 8] = [
    "sports", "travel", "auto", "finance", "parents", "gamers", "students", "pets",
];

/// What the writers send.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Concurrent writers, each with one batch in flight at a time.
    pub writers: usize,
    /// Profiles per batch.
    pub batch_size: usize,
}

/// One profile of a batch and the segments it must have once the batch is applied.
#[derive(Debug, Clone)]
pub struct Item {
    pub profile_id: String,
    pub segments: BTreeSet<String>,
}

/// A batch as sent.
#[derive(Debug, Clone)]
pub struct Batch {
    pub writer: usize,
    pub seq: usize,
    pub items: Vec<Item>,
}

impl Batch {
    fn new(writer: usize, seq: usize, size: usize) -> Batch {
        let items = (0..size)
            .map(|index| {
                let profile_id = format!("w{writer}-b{seq}-p{index}");
                // A non-empty subset of SEGMENTS chosen by the id, so batches differ.
                let mask =
                    splitmix64((writer as u64) << 40 | (seq as u64) << 16 | index as u64) % 255 + 1;
                let segments = SEGMENTS
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << bit) != 0)
                    .map(|(_, id)| (*id).to_owned())
                    .collect();
                Item {
                    profile_id,
                    segments,
                }
            })
            .collect();
        Batch { writer, seq, items }
    }

    /// The request body: even items add their segments, odd items set them, both of which
    /// give a fresh profile exactly `segments`.
    fn body(&self) -> Value {
        Value::Array(
            self.items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let operation = if index % 2 == 0 {
                        "segmentIdsToAdd"
                    } else {
                        "segmentIdsToSet"
                    };
                    json!({"profileId": item.profile_id, operation: item.segments})
                })
                .collect(),
        )
    }

    pub fn memberships(&self) -> usize {
        self.items.iter().map(|item| item.segments.len()).sum()
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one writer saw.
#[derive(Debug, Default)]
struct WriterLedger {
    acknowledged: Vec<Batch>,
    /// The batch that was on its way when the connection failed.
    in_flight: Option<Batch>,
    /// Batches answered with something other than 200.
    refused: Vec<(Batch, StatusCode, Value)>,
}

/// Writers running against a server.
pub struct Load {
    writers: Vec<tokio::task::JoinHandle<WriterLedger>>,
    acknowledged: Arc<AtomicUsize>,
}

/// Everything the writers sent, by what the server answered.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Answered 200 with every item applied: must survive anything.
    pub acknowledged: Vec<Batch>,
    /// No answer (the server went away): each may be wholly applied or not at all.
    pub in_flight: Vec<Batch>,
    /// Answered with an error status (none are expected under this load).
    pub refused: Vec<(Batch, StatusCode, Value)>,
}

impl Ledger {
    pub fn acknowledged_profiles(&self) -> usize {
        self.acknowledged.iter().map(|b| b.items.len()).sum()
    }

    fn unacknowledged(&self) -> impl Iterator<Item = &Batch> {
        self.in_flight
            .iter()
            .chain(self.refused.iter().map(|(batch, _, _)| batch))
    }
}

impl Load {
    /// Starts the writers. Each runs until the server stops answering it.
    pub fn start(api: &Api, workload: Workload) -> Load {
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let writers = (0..workload.writers)
            .map(|writer| {
                let api = api.clone();
                let acknowledged = acknowledged.clone();
                tokio::spawn(async move {
                    let mut ledger = WriterLedger::default();
                    for seq in 0.. {
                        let batch = Batch::new(writer, seq, workload.batch_size);
                        match api.post_batch(&batch.body()).await {
                            Ok((StatusCode::OK, answer)) => {
                                assert_eq!(
                                    answer["applied"].as_u64(),
                                    Some(batch.items.len() as u64),
                                    "every item of a valid batch is applied: {answer}"
                                );
                                ledger.acknowledged.push(batch);
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, answer)) => ledger.refused.push((batch, status, answer)),
                            Err(_) => {
                                ledger.in_flight = Some(batch);
                                break;
                            }
                        }
                    }
                    ledger
                })
            })
            .collect();
        Load {
            writers,
            acknowledged,
        }
    }

    pub fn acknowledged_batches(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `batches` batches were acknowledged.
    pub async fn wait_for_acknowledged(&self, batches: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.acknowledged_batches() < batches {
            assert!(
                Instant::now() < deadline,
                "only {} of {batches} batches acknowledged within {within:?}",
                self.acknowledged_batches()
            );
            assert!(
                self.writers.iter().all(|w| !w.is_finished()),
                "a writer stopped although the server runs"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Collects the writers' ledgers once they stopped (the server is gone).
    pub async fn finish(self) -> Ledger {
        let mut ledger = Ledger::default();
        for writer in self.writers {
            let seen = tokio::time::timeout(Duration::from_secs(60), writer)
                .await
                .expect("writers stop once the server is gone")
                .expect("writer task");
            ledger.acknowledged.extend(seen.acknowledged);
            ledger.in_flight.extend(seen.in_flight);
            ledger.refused.extend(seen.refused);
        }
        ledger
    }
}

/// What [`verify`] found.
#[derive(Debug)]
pub struct Verified {
    pub acknowledged_profiles: usize,
    /// Unacknowledged batches found applied in full.
    pub applied_unacknowledged: usize,
    /// Unacknowledged batches found not applied at all.
    pub absent_unacknowledged: usize,
}

/// Checks a restarted server against the ledger: every acknowledged profile holds exactly its
/// segments; every unacknowledged batch is applied in full or not at all (a batch is made
/// durable as a whole); and the store holds nothing else (profile and membership counts).
pub async fn verify(server: &Server, api: &Api, ledger: &Ledger) -> Verified {
    let items: Arc<Vec<Item>> = Arc::new(
        ledger
            .acknowledged
            .iter()
            .flat_map(|batch| batch.items.iter().cloned())
            .collect(),
    );
    const READERS: usize = 16;
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let api = api.clone();
            let items = items.clone();
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for item in items.iter().skip(reader).step_by(READERS) {
                    match api.get_profile(&item.profile_id).await {
                        None => {
                            wrong.push(format!("{}: acknowledged but missing", item.profile_id))
                        }
                        Some(found) if segment_ids(&found) != item.segments => wrong.push(format!(
                            "{}: expected {:?}, found {found}",
                            item.profile_id, item.segments
                        )),
                        Some(_) => {}
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for reader in readers {
        wrong.extend(reader.await.expect("reader task"));
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged profiles are missing or wrong after the restart; first ones:\n{}",
        wrong.len(),
        items.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    let mut applied_unacknowledged = 0;
    let mut absent_unacknowledged = 0;
    let mut expected_profiles = items.len();
    let mut expected_memberships: usize = ledger.acknowledged.iter().map(Batch::memberships).sum();
    for batch in ledger.unacknowledged() {
        let mut present = 0;
        for item in &batch.items {
            if let Some(found) = api.get_profile(&item.profile_id).await {
                assert_eq!(
                    segment_ids(&found),
                    item.segments,
                    "profile {} of an unacknowledged batch is half-applied",
                    item.profile_id
                );
                present += 1;
            }
        }
        if present == batch.items.len() {
            applied_unacknowledged += 1;
            expected_profiles += present;
            expected_memberships += batch.memberships();
        } else {
            assert_eq!(
                present,
                0,
                "batch w{}-b{} was partly applied: {present} of {} profiles",
                batch.writer,
                batch.seq,
                batch.items.len()
            );
            absent_unacknowledged += 1;
        }
    }

    assert_eq!(
        server.metric("segmart_profiles").await as usize,
        expected_profiles,
        "the store holds other profiles than the ones written"
    );
    assert_eq!(
        server.metric("segmart_profile_memberships").await as usize,
        expected_memberships,
        "the store holds other segment links than the ones written"
    );
    Verified {
        acknowledged_profiles: items.len(),
        applied_unacknowledged,
        absent_unacknowledged,
    }
}
