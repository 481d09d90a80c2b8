//! Records of the batch file registry: every delivery of a data or taxonomy file, its state and
//! its report counts. The catalog keeps them (`Catalog::register_ingest_file` and friends).
//!
//! A FILE ID takes effect exactly once per provider and kind: at most one delivery of it is ever
//! queued, applying or applied. Any later delivery of the same FILE ID is recorded as a
//! duplicate; a rejected delivery never took effect, so the FILE ID may come again.

use std::fmt;

use segmart_domain::{FolderId, ProviderId, SegmentKey, Timestamp};

/// Which kind of batch file a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IngestKind {
    /// `[prefix].taxonomy.json`: segment names and prices. Sorts first: a taxonomy applies
    /// before the data file of the same prefix.
    Taxonomy,
    /// `[prefix].txt.gz`: profile updates.
    Data,
}

impl IngestKind {
    pub fn name(self) -> &'static str {
        match self {
            IngestKind::Taxonomy => "taxonomy",
            IngestKind::Data => "data",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "taxonomy" => Some(IngestKind::Taxonomy),
            "data" => Some(IngestKind::Data),
            _ => None,
        }
    }
}

/// Where a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IngestSource {
    /// `PUT /segmentproviders/{spid}/files/{filename}`.
    Upload,
    /// The watched drop directory.
    Drop,
    /// `segmart ingest FILE…` on the data directory.
    Cli,
}

impl IngestSource {
    pub fn name(self) -> &'static str {
        match self {
            IngestSource::Upload => "upload",
            IngestSource::Drop => "drop",
            IngestSource::Cli => "cli",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "upload" => Some(IngestSource::Upload),
            "drop" => Some(IngestSource::Drop),
            "cli" => Some(IngestSource::Cli),
            _ => None,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IngestStatus {
    /// Received, waiting for its turn.
    Queued,
    /// Being applied; found in this state after a crash, it is redone from its first line.
    Applying,
    /// Every line was applied or rejected; the report is final.
    Applied,
    /// Refused whole (not gzip, truncated, late, invalid taxonomy…): nothing of it took effect.
    Rejected,
    /// The FILE ID was delivered before: nothing of this delivery took effect.
    Duplicate,
}

impl IngestStatus {
    pub fn name(self) -> &'static str {
        match self {
            IngestStatus::Queued => "queued",
            IngestStatus::Applying => "applying",
            IngestStatus::Applied => "applied",
            IngestStatus::Rejected => "rejected",
            IngestStatus::Duplicate => "duplicate",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "queued" => Some(IngestStatus::Queued),
            "applying" => Some(IngestStatus::Applying),
            "applied" => Some(IngestStatus::Applied),
            "rejected" => Some(IngestStatus::Rejected),
            "duplicate" => Some(IngestStatus::Duplicate),
            _ => None,
        }
    }

    /// Applied, rejected or duplicate: the report will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            IngestStatus::Applied | IngestStatus::Rejected | IngestStatus::Duplicate
        )
    }
}

impl fmt::Display for IngestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a delivery was refused whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRejection {
    /// Stable snake_case code, e.g. `truncated_gzip`, `late`, `invalid_taxonomy`.
    pub code: String,
    /// Lowercase human explanation.
    pub message: String,
}

/// A delivery as it arrives, before the registry decides whether it is queued or a duplicate.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIngestFile {
    pub provider: ProviderId,
    pub kind: IngestKind,
    pub file_id: String,
    pub dmp_id: String,
    /// The DATE of the file name, seconds since the Unix epoch.
    pub file_date: i64,
    /// The canonical file name.
    pub name: String,
    pub source: IngestSource,
    /// Where the bytes wait until the delivery is applied.
    pub spool_path: Option<String>,
    pub bytes: u64,
    /// Set when the delivery is refused on arrival; it is then recorded as rejected.
    pub rejection: Option<IngestRejection>,
}

/// The counts of a file report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestCounts {
    /// Every line, header and blank lines included.
    pub lines_read: u64,
    /// Data lines whose changes were applied.
    pub lines_applied: u64,
    /// Data lines refused, each with a reason.
    pub lines_rejected: u64,
    /// Empty lines, skipped.
    pub blank_lines: u64,
    /// Segment ids added by applied lines (a re-add refreshes an existing link).
    pub memberships_added: u64,
    /// Segment ids removed by applied lines.
    pub memberships_removed: u64,
    /// Segments created or updated by a taxonomy.
    pub segments_upserted: u64,
    /// Rejected lines per reason name, sorted by name.
    pub rejects: Vec<(String, u64)>,
    /// Segment ids lines named that the folder does not have, with how many lines named each,
    /// sorted by id.
    pub unknown_segments: Vec<(String, u64)>,
    /// Time spent checking the gzip stream before applying anything.
    pub check_millis: u64,
    /// Time from the start of the check to the last durable write.
    pub duration_millis: u64,
}

/// One delivery of a batch file and its report.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestFile {
    /// The delivery's number, unique across the deployment, growing.
    pub id: i64,
    pub provider: ProviderId,
    pub kind: IngestKind,
    pub file_id: String,
    pub dmp_id: String,
    pub file_date: i64,
    pub name: String,
    pub source: IngestSource,
    pub spool_path: Option<String>,
    pub bytes: u64,
    pub status: IngestStatus,
    pub rejection: Option<IngestRejection>,
    /// The delivery this one repeats (for duplicates).
    pub duplicate_of: Option<i64>,
    pub received_at: Timestamp,
    /// The time every expiry of this delivery is computed from, fixed when it starts applying.
    pub apply_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub counts: IngestCounts,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    Applied(IngestCounts),
    Rejected {
        rejection: IngestRejection,
        counts: IngestCounts,
    },
}

/// A segment as a taxonomy file declares it: created when missing (with the segment API's
/// defaults), otherwise renamed and repriced; its other fields stay.
#[derive(Debug, Clone, PartialEq)]
pub struct TaxonomySegment {
    pub folder: FolderId,
    pub key: SegmentKey,
    pub name: String,
    pub pricing: Option<segmart_domain::pricing::Cost>,
    /// `None`: every advertiser may use the segment.
    pub advertisers: Option<Vec<String>>,
}
