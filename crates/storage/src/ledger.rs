//! The billing ledger: one durable record per metered impression, with the price in force.
//!
//! The interface is batched (one call appends many records) so the embedded engine
//! group-commits and a PostgreSQL backend can use one `COPY`/multi-row `INSERT` per batch.
//! Reports are aggregates the ledger keeps itself (day × provider × category × segment ×
//! buyer), so reading a month of usage never rescans every impression.

use async_trait::async_trait;
use segmart_domain::Timestamp;
use segmart_domain::billing::{Charge, CurrencyCode, Micros};

/// One metered impression as recorded: the event and every segment's charge.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRecord {
    /// The bidder's impression id, 1–128 bytes: an impression counts once.
    pub impression_id: String,
    /// When the impression happened (its prices and rates are those in force then).
    pub at: Timestamp,
    /// When segmart acknowledged it.
    pub received_at: Timestamp,
    pub buyer_id: i64,
    pub campaign_id: i64,
    pub region: String,
    pub media_cost_micros: Micros,
    pub media_currency: CurrencyCode,
    /// The currency every amount of `charges` is in.
    pub settlement_currency: CurrencyCode,
    pub charges: Vec<Charge>,
}

/// The outcome of one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Durably recorded now.
    Recorded,
    /// An impression with this id was recorded before (or earlier in the same batch): nothing
    /// was changed.
    Duplicate,
}

/// Which usage a query covers. Days are days since 1970-01-01 UTC (`billing::day_of`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// First day included.
    pub from_day: Option<i32>,
    /// Last day included.
    pub to_day: Option<i32>,
    /// Only charges paid to this provider (member id).
    pub member_id: Option<i64>,
    /// Only impressions of this buyer.
    pub buyer_id: Option<i64>,
}

/// One row of the usage report. Only `Charged` charges count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsageRow {
    pub day: i32,
    pub member_id: i64,
    /// `None`: charged only through a share's CPM, without a billing category.
    pub data_category_id: Option<i64>,
    pub segment: u32,
    pub buyer_id: i64,
    pub impressions: u64,
    pub data_cost_micros: Micros,
    pub payout_micros: Micros,
    pub platform_fee_micros: Micros,
}

/// A page of ledger records for auditors, in the order they were recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPage {
    pub records: Vec<LedgerRecord>,
    /// Pass as `after` to read the next page; `None` at the end.
    pub next: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerStats {
    pub records: u64,
    pub duplicates: u64,
    pub log_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The append queue is full: nothing of the batch was accepted; retry later.
    #[error("ledger append queue is full")]
    Saturated,
    #[error("ledger is shutting down")]
    ShuttingDown,
    #[error("ledger failed: {0}")]
    Backend(String),
}

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Appends records. When this returns `Ok`, every `Recorded` record is durable and counted
    /// in [`Ledger::usage`]. One outcome per record, in order.
    async fn append(&self, records: Vec<LedgerRecord>) -> Result<Vec<AppendOutcome>, LedgerError>;

    /// The records of these impression ids (one answer per id, in order).
    async fn get(
        &self,
        impression_ids: &[String],
    ) -> Result<Vec<Option<LedgerRecord>>, LedgerError>;

    /// Records matching the filter (a record matches `member_id` when one of its charges is
    /// that provider's), oldest first, from cursor `after`.
    async fn records(
        &self,
        filter: &UsageFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<RecordPage, LedgerError>;

    /// The usage report: charged impressions aggregated by
    /// (day, member, category, segment, buyer), sorted by that key.
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, LedgerError>;

    fn stats(&self) -> LedgerStats;

    /// Stops accepting appends and makes everything acknowledged durable.
    async fn shutdown(&self) -> Result<(), LedgerError>;
}
