//! The embedded billing ledger through its public API, on a real directory: durability and
//! reopen, dedup, torn tails and corruption, back-pressure, usage and record pages, and a
//! property test against a simple model.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use segmart_domain::billing::{Charge, ChargeStatus, CurrencyCode, Price, ShareCpm, day_of};
use segmart_domain::pricing::CostType;
use segmart_domain::{SegmentNum, Timestamp};
use segmart_storage::embedded_ledger::{EmbeddedLedger, LedgerConfig};
use segmart_storage::ledger::{
    AppendOutcome, Ledger, LedgerError, LedgerRecord, UsageFilter, UsageRow,
};

const DAY_MS: i64 = 86_400_000;
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

fn charge(segment: u32, member: i64, status: ChargeStatus, cost: i64) -> Charge {
    let charged = status == ChargeStatus::Charged;
    let fee = if charged { cost / 5 } else { 0 };
    Charge {
        segment: SegmentNum(segment),
        member_id: member,
        data_category_id: (!segment.is_multiple_of(3)).then_some(i64::from(segment) * 10),
        status,
        price: segment.is_multiple_of(2).then_some(Price {
            cost_type: if segment.is_multiple_of(4) {
                CostType::Fix
            } else {
                CostType::Rate
            },
            value: 1.25 + f64::from(segment),
            currency: CurrencyCode::USD,
        }),
        share_cpm: segment.is_multiple_of(5).then_some(ShareCpm {
            cpm: 0.3,
            currency: CurrencyCode::RUB,
        }),
        revshare_pct: 20.0,
        data_cost_micros: if charged { cost } else { 0 },
        payout_micros: if charged { cost - fee } else { 0 },
        platform_fee_micros: fee,
    }
}

fn record(id: &str, at_ms: i64, buyer: i64, charges: Vec<Charge>) -> LedgerRecord {
    LedgerRecord {
        impression_id: id.to_string(),
        at: Timestamp(at_ms),
        received_at: Timestamp(at_ms + 150),
        buyer_id: buyer,
        campaign_id: buyer * 100 + 1,
        region: "eu".into(),
        media_cost_micros: 1_500,
        media_currency: CurrencyCode::USD,
        settlement_currency: CurrencyCode::USD,
        charges,
    }
}

/// Record `i` of a simple data set: 3 days, 4 buyers, providers 1–3.
fn nth(i: u64) -> LedgerRecord {
    let i = i as i64;
    record(
        &format!("imp-{i:06}"),
        T0 + (i % 3) * DAY_MS + i * 1000,
        i % 4,
        vec![
            charge((i % 7) as u32, 1 + i % 3, ChargeStatus::Charged, 1_000 + i),
            charge(
                100 + (i % 2) as u32,
                2,
                if i % 2 == 0 {
                    ChargeStatus::Charged
                } else {
                    ChargeStatus::Superseded
                },
                700,
            ),
            charge(200, 3, ChargeStatus::Excluded, 0),
        ],
    )
}

fn small_segments() -> LedgerConfig {
    LedgerConfig {
        segment_bytes: 4 << 10,
        ..LedgerConfig::default()
    }
}

fn open(dir: &Path, config: LedgerConfig) -> EmbeddedLedger {
    EmbeddedLedger::open(dir, config).expect("open")
}

async fn all_records(ledger: &EmbeddedLedger, filter: &UsageFilter) -> Vec<LedgerRecord> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = ledger.records(filter, after, 7).await.unwrap();
        out.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// The usage report recomputed from records (only `Charged` charges count).
fn model_usage(records: &[LedgerRecord], filter: &UsageFilter) -> Vec<UsageRow> {
    let mut rows: BTreeMap<(i32, i64, Option<i64>, u32, i64), UsageRow> = BTreeMap::new();
    for record in records {
        let day = day_of(record.at);
        if filter.from_day.is_some_and(|d| day < d)
            || filter.to_day.is_some_and(|d| day > d)
            || filter.buyer_id.is_some_and(|b| record.buyer_id != b)
        {
            continue;
        }
        for c in &record.charges {
            if c.status != ChargeStatus::Charged
                || filter.member_id.is_some_and(|m| c.member_id != m)
            {
                continue;
            }
            let key = (
                day,
                c.member_id,
                c.data_category_id,
                c.segment.0,
                record.buyer_id,
            );
            let row = rows.entry(key).or_insert(UsageRow {
                day,
                member_id: c.member_id,
                data_category_id: c.data_category_id,
                segment: c.segment.0,
                buyer_id: record.buyer_id,
                impressions: 0,
                data_cost_micros: 0,
                payout_micros: 0,
                platform_fee_micros: 0,
            });
            row.impressions += 1;
            row.data_cost_micros += c.data_cost_micros;
            row.payout_micros += c.payout_micros;
            row.platform_fee_micros += c.platform_fee_micros;
        }
    }
    rows.into_values().collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ledger-")
        })
        .collect();
    files.sort();
    files
}

fn ids(records: &[LedgerRecord]) -> Vec<String> {
    records.iter().map(|r| r.impression_id.clone()).collect()
}

#[tokio::test]
async fn appended_records_survive_reopen_identically() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<LedgerRecord> = (0..60).map(nth).collect();
    let ledger = open(dir.path(), small_segments());
    for chunk in records.chunks(9) {
        let outcomes = ledger.append(chunk.to_vec()).await.unwrap();
        assert!(outcomes.iter().all(|o| *o == AppendOutcome::Recorded));
    }
    let everything = UsageFilter::default();
    assert_eq!(all_records(&ledger, &everything).await, records);
    let usage = ledger.usage(&everything).await.unwrap();
    assert_eq!(usage, model_usage(&records, &everything));
    let stats = ledger.stats();
    assert_eq!(stats.records, 60);
    assert!(
        segments(dir.path()).len() > 2,
        "small segments rotate: {:?}",
        segments(dir.path())
    );
    ledger.shutdown().await.unwrap();
    drop(ledger);

    let ledger = open(dir.path(), small_segments());
    assert_eq!(ledger.recovery().records, 60);
    assert_eq!(ledger.recovery().truncated_bytes, 0);
    assert_eq!(all_records(&ledger, &everything).await, records);
    assert_eq!(ledger.usage(&everything).await.unwrap(), usage);
    assert_eq!(ledger.stats().records, 60);
    assert_eq!(ledger.stats().log_bytes, stats.log_bytes);
    let mut wanted = ids(&records[10..14]);
    wanted.push("never-seen".into());
    let got = ledger.get(&wanted).await.unwrap();
    assert_eq!(
        got[..4].iter().flatten().cloned().collect::<Vec<_>>(),
        records[10..14]
    );
    assert_eq!(got[4], None);
    // Dedup was rebuilt: every old id is a duplicate, forever.
    let again = ledger.append(records[..20].to_vec()).await.unwrap();
    assert!(again.iter().all(|o| *o == AppendOutcome::Duplicate));
    assert_eq!(ledger.stats().records, 60);
    assert_eq!(ledger.stats().duplicates, 20);
    // And appending continues after the recovered records.
    let more: Vec<LedgerRecord> = (60..70).map(nth).collect();
    ledger.append(more.clone()).await.unwrap();
    let mut expected = records.clone();
    expected.extend(more);
    assert_eq!(all_records(&ledger, &everything).await, expected);
}

#[tokio::test]
async fn an_impression_counts_once_across_and_within_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), LedgerConfig::default());
    let first = nth(1);
    let mut other_price = nth(1);
    other_price.buyer_id = 99;
    let outcomes = ledger
        .append(vec![first.clone(), nth(2), other_price.clone(), nth(2)])
        .await
        .unwrap();
    use AppendOutcome::{Duplicate, Recorded};
    assert_eq!(outcomes, [Recorded, Recorded, Duplicate, Duplicate]);
    // The first occurrence wins.
    let got = ledger
        .get(std::slice::from_ref(&first.impression_id))
        .await
        .unwrap();
    assert_eq!(got, [Some(first.clone())]);
    let outcomes = ledger
        .append(vec![nth(3), other_price, nth(1)])
        .await
        .unwrap();
    assert_eq!(outcomes, [Recorded, Duplicate, Duplicate]);
    // Batches queued together share a group commit, and dedup still holds between them.
    let (a, b) = tokio::join!(
        ledger.append(vec![nth(4), nth(5)]),
        ledger.append(vec![nth(5), nth(4), nth(6)])
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, [Recorded, Recorded]);
    assert_eq!(b, [Duplicate, Duplicate, Recorded]);
    assert_eq!(ledger.stats().records, 6);
    assert_eq!(ledger.stats().duplicates, 6);
    let usage = ledger.usage(&UsageFilter::default()).await.unwrap();
    let expected: Vec<_> = (1..=6).map(nth).collect();
    assert_eq!(usage, model_usage(&expected, &UsageFilter::default()));
}

async fn write_batches(dir: &Path, batches: u64) -> Vec<LedgerRecord> {
    let ledger = open(dir, LedgerConfig::default());
    let mut all = Vec::new();
    for b in 0..batches {
        let batch: Vec<_> = (b * 5..b * 5 + 5).map(nth).collect();
        ledger.append(batch.clone()).await.unwrap();
        all.extend(batch);
    }
    ledger.shutdown().await.unwrap();
    all
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_batches(dir.path(), 4).await;
    let segment = segments(dir.path()).pop().unwrap();
    let clean_len = std::fs::metadata(&segment).unwrap().len();
    let garbage: Vec<u8> = (0..777u32).map(|i| (i * 131 % 251) as u8).collect();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&garbage);
    std::fs::write(&segment, &bytes).unwrap();

    let ledger = open(dir.path(), LedgerConfig::default());
    assert_eq!(ledger.recovery().truncated_bytes, garbage.len() as u64);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), clean_len);
    assert_eq!(all_records(&ledger, &UsageFilter::default()).await, records);
    ledger.append(vec![nth(1000)]).await.unwrap();
    drop(ledger);

    // A group cut in its middle (the write of the last batch was torn): that whole group goes,
    // the groups before it stay.
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 9).unwrap();
    drop(file);
    let ledger = open(dir.path(), LedgerConfig::default());
    assert_eq!(all_records(&ledger, &UsageFilter::default()).await, records);
    assert_eq!(
        ledger.get(&[nth(1000).impression_id]).await.unwrap(),
        [None]
    );
    assert_eq!(
        ledger.usage(&UsageFilter::default()).await.unwrap(),
        model_usage(&records, &UsageFilter::default())
    );
}

/// A crash leaves the space the writer allocated ahead as a tail of zeros, in the newest
/// segment and, if it came during a rotation, in the one before: both open clean.
#[tokio::test]
async fn segments_ending_in_allocated_zeros_open_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    {
        let ledger = open(dir.path(), small_segments());
        for b in 0..30 {
            let batch: Vec<LedgerRecord> = (b * 5..b * 5 + 5).map(nth).collect();
            ledger.append(batch.clone()).await.unwrap();
            records.extend(batch);
        }
        ledger.shutdown().await.unwrap();
    }
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    let mut lengths = Vec::new();
    for file in [&files[0], files.last().unwrap()] {
        let len = std::fs::metadata(file).unwrap().len();
        lengths.push(len);
        let handle = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        handle.set_len(len + (1 << 20)).unwrap();
    }
    let ledger = open(dir.path(), small_segments());
    assert_eq!(ledger.recovery().truncated_bytes, 0);
    assert_eq!(all_records(&ledger, &UsageFilter::default()).await, records);
    ledger.append(vec![nth(1000)]).await.unwrap();
    ledger.shutdown().await.unwrap();
    // The newest segment's zeros were cut when it was reopened, the older one's are kept.
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().len(),
        lengths[0] + (1 << 20)
    );
    let ledger = open(dir.path(), small_segments());
    assert_eq!(ledger.stats().records, records.len() as u64 + 1);
}

#[tokio::test]
async fn a_torn_group_loses_all_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_batches(dir.path(), 2).await;
    // Zero the second half of the last group (5 records), as if those pages never reached
    // the disk: its first records are intact but the group is incomplete.
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let len = bytes.len();
    let tail = len - 300;
    bytes[tail..].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let ledger = open(dir.path(), LedgerConfig::default());
    assert_eq!(
        all_records(&ledger, &UsageFilter::default()).await,
        records[..5]
    );
    assert_eq!(ledger.stats().records, 5);
}

#[tokio::test]
async fn corruption_before_later_records_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path(), 4).await;
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[16 + 40] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    let error = EmbeddedLedger::open(dir.path(), LedgerConfig::default())
        .err()
        .expect("corruption refuses to open");
    assert!(
        error.to_string().contains("damaged"),
        "unexpected error: {error}"
    );
    // Undamaged again, it opens with everything.
    bytes[16 + 40] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    assert_eq!(
        open(dir.path(), LedgerConfig::default()).stats().records,
        20
    );
}

#[tokio::test]
async fn corruption_in_an_older_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path(), small_segments());
        for b in 0..30 {
            ledger
                .append((b * 5..b * 5 + 5).map(nth).collect())
                .await
                .unwrap();
        }
    }
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&files[0], &bytes).unwrap();
    assert!(EmbeddedLedger::open(dir.path(), small_segments()).is_err());
    // A missing segment is refused too.
    bytes[last] ^= 1;
    std::fs::write(&files[0], &bytes).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    assert!(EmbeddedLedger::open(dir.path(), small_segments()).is_err());
}

/// Polls a future once (it registers no useful waker; await it later to finish it).
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn a_full_queue_answers_saturated_and_accepts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        queue_capacity: 2,
        ..LedgerConfig::default()
    };
    let ledger = open(dir.path(), config);
    let hold = ledger.hold_writer().unwrap();
    let mut first = pin!(ledger.append(vec![nth(1), nth(2)]));
    let mut second = pin!(ledger.append(vec![nth(3)]));
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    let refused = ledger.append(vec![nth(4), nth(5)]).await;
    assert!(
        matches!(refused, Err(LedgerError::Saturated)),
        "{refused:?}"
    );
    drop(hold);
    assert_eq!(first.await.unwrap().len(), 2);
    assert_eq!(second.await.unwrap().len(), 1);
    assert_eq!(ledger.stats().records, 3);
    let got = ledger
        .get(&[nth(4).impression_id, nth(5).impression_id])
        .await
        .unwrap();
    assert_eq!(got, [None, None]);
    // Retried later, the refused batch is recorded.
    let outcomes = ledger.append(vec![nth(4), nth(5)]).await.unwrap();
    assert_eq!(outcomes, [AppendOutcome::Recorded; 2]);
}

#[tokio::test]
async fn usage_is_filtered_by_day_member_and_buyer_and_sums_charged_only() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), LedgerConfig::default());
    let day0 = day_of(Timestamp(T0));
    let recs = vec![
        record(
            "a",
            T0 + 10,
            7,
            vec![
                charge(1, 100, ChargeStatus::Charged, 2_000),
                charge(2, 100, ChargeStatus::Superseded, 0),
                charge(3, 200, ChargeStatus::Charged, 900),
                charge(4, 200, ChargeStatus::Unmapped, 0),
            ],
        ),
        record(
            "b",
            T0 + 20,
            7,
            vec![charge(1, 100, ChargeStatus::Charged, 2_000)],
        ),
        record(
            "c",
            T0 + 30,
            8,
            vec![charge(1, 100, ChargeStatus::Charged, 2_000)],
        ),
        record(
            "d",
            T0 + DAY_MS + 5,
            7,
            vec![
                charge(3, 200, ChargeStatus::Charged, 900),
                charge(5, 100, ChargeStatus::Excluded, 0),
            ],
        ),
        record(
            "e",
            T0 + 2 * DAY_MS,
            8,
            vec![charge(1, 100, ChargeStatus::Charged, 1_000)],
        ),
    ];
    ledger.append(recs.clone()).await.unwrap();
    let all = ledger.usage(&UsageFilter::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    let seg1_day0_b7 = &all[0];
    assert_eq!(
        (
            seg1_day0_b7.day,
            seg1_day0_b7.member_id,
            seg1_day0_b7.segment,
            seg1_day0_b7.buyer_id
        ),
        (day0, 100, 1, 7)
    );
    assert_eq!(seg1_day0_b7.impressions, 2);
    assert_eq!(seg1_day0_b7.data_cost_micros, 4_000);
    assert_eq!(seg1_day0_b7.platform_fee_micros, 800);
    assert_eq!(seg1_day0_b7.payout_micros, 3_200);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted by key");
    for filter in [
        UsageFilter {
            from_day: Some(day0 + 1),
            ..UsageFilter::default()
        },
        UsageFilter {
            to_day: Some(day0),
            member_id: Some(100),
            ..UsageFilter::default()
        },
        UsageFilter {
            from_day: Some(day0),
            to_day: Some(day0 + 1),
            buyer_id: Some(7),
            ..UsageFilter::default()
        },
        UsageFilter {
            member_id: Some(200),
            buyer_id: Some(8),
            ..UsageFilter::default()
        },
    ] {
        assert_eq!(
            ledger.usage(&filter).await.unwrap(),
            model_usage(&recs, &filter),
            "{filter:?}"
        );
    }
    let member_200 = ledger
        .usage(&UsageFilter {
            member_id: Some(200),
            ..UsageFilter::default()
        })
        .await
        .unwrap();
    let cost: i64 = member_200.iter().map(|r| r.data_cost_micros).sum();
    assert_eq!(cost, 1_800);
    // Records match a member through any of their charges, charged or not.
    let member_100_day1 = all_records(
        &ledger,
        &UsageFilter {
            from_day: Some(day0 + 1),
            to_day: Some(day0 + 1),
            member_id: Some(100),
            ..UsageFilter::default()
        },
    )
    .await;
    assert_eq!(ids(&member_100_day1), ["d"]);
}

#[tokio::test]
async fn records_come_in_pages_in_recorded_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        segment_bytes: 2 << 10,
        ..LedgerConfig::default()
    };
    let ledger = open(dir.path(), config.clone());
    let records: Vec<_> = (0..3000).map(nth).collect();
    for chunk in records.chunks(250) {
        ledger.append(chunk.to_vec()).await.unwrap();
    }
    let page = ledger
        .records(&UsageFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.records, records[..10]);
    let page = ledger
        .records(&UsageFilter::default(), page.next, 10)
        .await
        .unwrap();
    assert_eq!(page.records, records[10..20]);
    // From a cursor past the first sparse mark.
    let page = ledger
        .records(&UsageFilter::default(), Some(2049), 3)
        .await
        .unwrap();
    assert_eq!(page.records, records[2049..2052]);
    assert_eq!(page.next, Some(2052));
    let end = ledger
        .records(&UsageFilter::default(), Some(2995), 10)
        .await
        .unwrap();
    assert_eq!(end.records, records[2995..]);
    assert_eq!(end.next, None);
    let past = ledger
        .records(&UsageFilter::default(), Some(3000), 10)
        .await
        .unwrap();
    assert_eq!((past.records.len(), past.next), (0, None));
    drop(ledger);
    // A selective filter with a tiny scan bound: short pages, but every call progresses and
    // the whole walk finds exactly the matching records.
    let bounded = LedgerConfig {
        max_scan_bytes: 1,
        ..config.clone()
    };
    let ledger = open(dir.path(), bounded);
    let page = ledger
        .records(&UsageFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!((page.records.len(), page.next), (1, Some(1)));
    let filter = UsageFilter {
        buyer_id: Some(3),
        from_day: Some(day_of(Timestamp(T0)) + 1),
        ..UsageFilter::default()
    };
    let found = all_records(&ledger, &filter).await;
    let expected: Vec<_> = records
        .iter()
        .filter(|r| r.buyer_id == 3 && day_of(r.at) > day_of(Timestamp(T0)))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(found, expected);
    drop(ledger);
    let ledger = open(dir.path(), config);
    assert_eq!(all_records(&ledger, &filter).await, expected);
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u8, u8, i8, u8)>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u8..60, 0u8..5, 0i8..3, 0u8..4), 0..12).prop_map(Op::Append),
        1 => Just(Op::Reopen),
    ]
}

/// A record from generated parts: id, buyer, day, charge shape.
fn generated(id: u8, buyer: u8, day: i8, shape: u8) -> LedgerRecord {
    let statuses = [
        ChargeStatus::Charged,
        ChargeStatus::Unmapped,
        ChargeStatus::Superseded,
        ChargeStatus::Excluded,
    ];
    let charges = (0..=shape)
        .map(|k| {
            charge(
                u32::from(k) * 7 + u32::from(id % 3),
                i64::from(k % 2 + 1),
                statuses[usize::from((id + k) % 4)],
                i64::from(id) * 10 + i64::from(k),
            )
        })
        .collect();
    record(
        &format!("{id:02x}-impression"),
        T0 + i64::from(day) * DAY_MS + i64::from(id),
        i64::from(buyer),
        charges,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn ledger_matches_model(ops in prop::collection::vec(op(), 1..16), member in 0i64..3, limit in 1usize..9) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LedgerConfig { segment_bytes: 1 << 10, ..LedgerConfig::default() };
            let mut ledger = open(dir.path(), config.clone());
            let mut model: Vec<LedgerRecord> = Vec::new();
            let mut seen: HashSet<String> = HashSet::new();
            for op in ops {
                match op {
                    Op::Append(parts) => {
                        let batch: Vec<_> = parts
                            .iter()
                            .map(|&(id, buyer, day, shape)| generated(id, buyer, day, shape))
                            .collect();
                        let outcomes = ledger.append(batch.clone()).await.unwrap();
                        let expected: Vec<_> = batch
                            .iter()
                            .map(|r| {
                                if seen.insert(r.impression_id.clone()) {
                                    model.push(r.clone());
                                    AppendOutcome::Recorded
                                } else {
                                    AppendOutcome::Duplicate
                                }
                            })
                            .collect();
                        prop_assert_eq!(outcomes, expected);
                    }
                    Op::Reopen => {
                        drop(ledger);
                        ledger = open(dir.path(), config.clone());
                    }
                }
                prop_assert_eq!(ledger.stats().records, model.len() as u64);
            }
            let filters = [
                UsageFilter::default(),
                UsageFilter { member_id: Some(member), ..UsageFilter::default() },
                UsageFilter {
                    from_day: Some(day_of(Timestamp(T0)) + 1),
                    buyer_id: Some(member + 1),
                    ..UsageFilter::default()
                },
            ];
            for filter in &filters {
                prop_assert_eq!(ledger.usage(filter).await.unwrap(), model_usage(&model, filter));
                let mut paged = Vec::new();
                let mut after = None;
                loop {
                    let page = ledger.records(filter, after, limit).await.unwrap();
                    prop_assert!(page.records.len() <= limit);
                    paged.extend(page.records);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                let expected: Vec<_> = model
                    .iter()
                    .filter(|r| {
                        let day = day_of(r.at);
                        filter.from_day.is_none_or(|d| day >= d)
                            && filter.buyer_id.is_none_or(|b| r.buyer_id == b)
                            && filter
                                .member_id
                                .is_none_or(|m| r.charges.iter().any(|c| c.member_id == m))
                    })
                    .cloned()
                    .collect();
                prop_assert_eq!(paged, expected);
            }
            let wanted: Vec<String> = (0u8..60).map(|id| format!("{id:02x}-impression")).collect();
            let got = ledger.get(&wanted).await.unwrap();
            for (id, answer) in wanted.iter().zip(got) {
                let expected = model.iter().find(|r| &r.impression_id == id).cloned();
                prop_assert_eq!(answer, expected);
            }
            Ok(())
        })?;
    }
}
