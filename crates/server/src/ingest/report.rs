//! File reports as the API, the CLI and the drop directory's `.report.json` files show them.

use std::collections::BTreeMap;

use segmart_domain::Timestamp;
use segmart_storage::catalog::{IngestFile, IngestKind, IngestStatus};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// Why a file was refused whole.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ReasonDto {
    /// Stable code: `not_gzip`, `truncated_gzip`, `corrupt_gzip`, `late`, `invalid_taxonomy`,
    /// `no_folder`, `spool_missing`, `taxonomy_too_large`, `read_failed`…
    pub code: String,
    pub message: String,
}

/// What happened to one delivery of a batch file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    /// The delivery's number (a FILE ID delivered twice has two).
    pub delivery_id: i64,
    pub file_id: String,
    pub file_name: String,
    /// `data` or `taxonomy`.
    pub kind: String,
    pub dmp_id: String,
    /// The DATE of the file name (RFC 3339, UTC).
    pub date: String,
    /// `upload`, `drop` or `cli`.
    pub source: String,
    /// `queued`, `applying`, `applied`, `rejected` or `duplicate`.
    pub status: String,
    /// Why the file was rejected whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonDto>,
    /// The delivery this one repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<i64>,
    pub bytes: u64,
    pub received_at: String,
    /// The time every expiry written by this file is computed from; fixed when the file
    /// starts applying and kept when it is redone after a crash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Lines read, the header and blank lines included (taxonomy: entries).
    pub lines_read: u64,
    pub lines_applied: u64,
    pub lines_rejected: u64,
    pub blank_lines: u64,
    /// Rejected lines per reason.
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Segment ids added by applied lines (re-adding refreshes an existing link's expiry).
    pub memberships_added: u64,
    /// Segment ids removed by applied lines.
    pub memberships_removed: u64,
    /// Segment ids the folder does not have, with the number of lines that named each (at most
    /// 1000 ids).
    pub unknown_segments: BTreeMap<String, u64>,
    /// Segments created or updated (taxonomy files).
    pub segments_upserted: u64,
    /// Time spent inflating the whole file to check it before applying anything.
    pub check_millis: u64,
    /// Time from the start of the check to the last durable write.
    pub duration_millis: u64,
    /// Lines read per second over `durationMillis`.
    pub lines_per_second: u64,
    /// Where to download every rejected line (line number, reason, message, content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_lines_url: Option<String>,
}

pub fn rfc3339(at: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.millis()) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

impl FileReport {
    /// `rejects_base`: the URL prefix of the folder's files (for `rejectedLinesUrl`).
    pub fn new(file: &IngestFile, rejects_base: Option<&str>) -> Self {
        let counts = &file.counts;
        let lines_per_second = (counts.lines_read * 1000)
            .checked_div(counts.duration_millis)
            .unwrap_or(0);
        let has_rejects = file.kind == IngestKind::Data
            && matches!(file.status, IngestStatus::Applied | IngestStatus::Applying)
            && counts.lines_rejected > 0;
        FileReport {
            delivery_id: file.id,
            file_id: file.file_id.clone(),
            file_name: file.name.clone(),
            kind: file.kind.name().to_owned(),
            dmp_id: file.dmp_id.clone(),
            date: rfc3339(Timestamp::from_secs(file.file_date)),
            source: file.source.name().to_owned(),
            status: file.status.name().to_owned(),
            reason: file.rejection.as_ref().map(|r| ReasonDto {
                code: r.code.clone(),
                message: r.message.clone(),
            }),
            duplicate_of: file.duplicate_of,
            bytes: file.bytes,
            received_at: rfc3339(file.received_at),
            apply_at: file.apply_at.map(rfc3339),
            started_at: file.started_at.map(rfc3339),
            finished_at: file.finished_at.map(rfc3339),
            lines_read: counts.lines_read,
            lines_applied: counts.lines_applied,
            lines_rejected: counts.lines_rejected,
            blank_lines: counts.blank_lines,
            rejects_by_reason: counts.rejects.iter().cloned().collect(),
            memberships_added: counts.memberships_added,
            memberships_removed: counts.memberships_removed,
            unknown_segments: counts.unknown_segments.iter().cloned().collect(),
            segments_upserted: counts.segments_upserted,
            check_millis: counts.check_millis,
            duration_millis: counts.duration_millis,
            lines_per_second,
            rejected_lines_url: match (has_rejects, rejects_base) {
                (true, Some(base)) => Some(format!("{base}/{}/rejects", file.file_id)),
                _ => None,
            },
        }
    }

    /// A human summary, for `segmart ingest`.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}  {} ({} delivery {})  {}",
            self.file_name, self.status, self.kind, self.delivery_id, self.source
        );
        if let Some(reason) = &self.reason {
            out.push_str(&format!(
                "\n  rejected whole: {} — {}",
                reason.code, reason.message
            ));
        }
        if let Some(original) = self.duplicate_of {
            out.push_str(&format!(
                "\n  duplicate of delivery {original}: nothing applied"
            ));
        }
        if self.kind == "taxonomy" {
            if self.status == "applied" {
                out.push_str(&format!(
                    "\n  {} entries, {} segments created or updated",
                    self.lines_read, self.segments_upserted
                ));
            }
            return out;
        }
        if self.status == "applied" {
            out.push_str(&format!(
                "\n  lines read {}  applied {}  rejected {}  blank {}\n  memberships added {}  removed {}\n  {:.2} s ({} ms gzip check), {} lines/s",
                self.lines_read,
                self.lines_applied,
                self.lines_rejected,
                self.blank_lines,
                self.memberships_added,
                self.memberships_removed,
                self.duration_millis as f64 / 1000.0,
                self.check_millis,
                self.lines_per_second
            ));
            for (reason, count) in &self.rejects_by_reason {
                out.push_str(&format!("\n  rejected {reason}: {count}"));
            }
            if !self.unknown_segments.is_empty() {
                let mut by_count: Vec<(&String, &u64)> = self.unknown_segments.iter().collect();
                by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let shown: Vec<String> = by_count
                    .into_iter()
                    .take(20)
                    .map(|(id, n)| format!("{id} ({n})"))
                    .collect();
                out.push_str(&format!(
                    "\n  unknown segments (most named first): {}{}",
                    shown.join(", "),
                    if self.unknown_segments.len() > 20 {
                        ", …"
                    } else {
                        ""
                    }
                ));
            }
        }
        out
    }
}
