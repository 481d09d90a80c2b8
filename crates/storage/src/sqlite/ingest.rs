//! The batch file registry and taxonomy import on SQLite (the `ingest_files` table of migration
//! 0002), and the pricing columns of providers and segments.

use segmart_domain::pricing::{Cost, CostType, Currency};
use segmart_domain::segment::Segment;
use segmart_domain::{FieldError, ProviderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::error::{backend_error, catalog_error, corrupt};
use super::queries::*;
use super::rows::{column, timestamp_column, uuid_column};
use super::{SqliteCatalog, commit_change, fetch_provider, rows};
use crate::catalog::{
    CatalogError, CatalogResult, IngestCounts, IngestFile, IngestKind, IngestOutcome,
    IngestRejection, IngestSource, IngestStatus, NewIngestFile, Provider, TaxonomySegment,
};

/// Longest DMP ID, in characters.
pub const DMP_ID_MAX_CHARS: usize = 64;

/// Checks a DMP ID: 1..=64 characters of `[A-Za-z0-9_-]` (the file name grammar's).
pub fn validate_dmp_id(dmp_id: &str) -> Result<(), FieldError> {
    let valid = !dmp_id.is_empty()
        && dmp_id.len() <= DMP_ID_MAX_CHARS
        && dmp_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            "dmpId",
            format!("{dmp_id:?} must be 1..={DMP_ID_MAX_CHARS} characters of [A-Za-z0-9_-]"),
        ))
    }
}

/// A price must be a finite non-negative number; a RATE is a percentage, at most 100.
pub fn validate_cost(cost: &Cost) -> Result<(), FieldError> {
    if !cost.value.is_finite() || cost.value < 0.0 {
        return Err(FieldError::new(
            "costValue",
            "must be a non-negative number",
        ));
    }
    if cost.cost_type == CostType::Rate && cost.value > 100.0 {
        return Err(FieldError::new(
            "costValue",
            "a RATE is a percentage of the media cost, at most 100",
        ));
    }
    Ok(())
}

pub(super) fn pricing_columns(row: &SqliteRow) -> CatalogResult<Option<Cost>> {
    pricing_of(row, "cost_type", "cost_value", "currency")
}

pub(super) fn default_pricing_columns(row: &SqliteRow) -> CatalogResult<Option<Cost>> {
    pricing_of(
        row,
        "default_cost_type",
        "default_cost_value",
        "default_currency",
    )
}

fn pricing_of(
    row: &SqliteRow,
    type_column: &str,
    value_column: &str,
    currency_column: &str,
) -> CatalogResult<Option<Cost>> {
    let cost_type: Option<String> = column(row, type_column)?;
    let value: Option<f64> = column(row, value_column)?;
    let currency: Option<String> = column(row, currency_column)?;
    let (Some(cost_type), Some(value)) = (cost_type, value) else {
        return Ok(None);
    };
    Ok(Some(Cost {
        cost_type: CostType::from_name(&cost_type)
            .ok_or_else(|| corrupt(type_column, &cost_type))?,
        value,
        currency: currency
            .map(|code| Currency::from_code(&code).ok_or_else(|| corrupt(currency_column, code)))
            .transpose()?,
    }))
}

pub(super) fn advertisers_column(row: &SqliteRow) -> CatalogResult<Option<Vec<String>>> {
    let text: Option<String> = column(row, "advertisers")?;
    Ok(text.map(|text| text.lines().map(str::to_owned).collect()))
}

/// `name<TAB>count` lines, as the `rejects` and `unknown_segments` columns hold them.
fn encode_counts(counts: &[(String, u64)]) -> String {
    let mut text = String::new();
    for (name, count) in counts {
        text.push_str(name);
        text.push('\t');
        text.push_str(&count.to_string());
        text.push('\n');
    }
    text
}

fn decode_counts(text: &str, what: &str) -> CatalogResult<Vec<(String, u64)>> {
    text.lines()
        .map(|line| {
            let (name, count) = line.split_once('\t').ok_or_else(|| corrupt(what, line))?;
            let count = count.parse().map_err(|error| corrupt(what, error))?;
            Ok((name.to_owned(), count))
        })
        .collect()
}

fn u64_column(row: &SqliteRow, name: &str) -> CatalogResult<u64> {
    let value: i64 = column(row, name)?;
    u64::try_from(value).map_err(|error| corrupt(name, error))
}

fn optional_timestamp(row: &SqliteRow, name: &str) -> CatalogResult<Option<Timestamp>> {
    let value: Option<i64> = column(row, name)?;
    Ok(value.map(Timestamp::from_millis))
}

fn ingest_file(row: &SqliteRow) -> CatalogResult<IngestFile> {
    let kind: String = column(row, "kind")?;
    let source: String = column(row, "source")?;
    let status: String = column(row, "status")?;
    let reason_code: Option<String> = column(row, "reason_code")?;
    let reason: Option<String> = column(row, "reason")?;
    let rejects: String = column(row, "rejects")?;
    let unknown: String = column(row, "unknown_segments")?;
    Ok(IngestFile {
        id: column(row, "id")?,
        provider: uuid_column(row, "provider_id")?,
        kind: IngestKind::from_name(&kind).ok_or_else(|| corrupt("ingest_files.kind", &kind))?,
        file_id: column(row, "file_id")?,
        dmp_id: column(row, "dmp_id")?,
        file_date: column(row, "file_date")?,
        name: column(row, "name")?,
        source: IngestSource::from_name(&source)
            .ok_or_else(|| corrupt("ingest_files.source", &source))?,
        spool_path: column(row, "spool_path")?,
        bytes: u64_column(row, "bytes")?,
        status: IngestStatus::from_name(&status)
            .ok_or_else(|| corrupt("ingest_files.status", &status))?,
        rejection: reason_code.map(|code| IngestRejection {
            code,
            message: reason.unwrap_or_default(),
        }),
        duplicate_of: column(row, "duplicate_of")?,
        received_at: timestamp_column(row, "received_at")?,
        apply_at: optional_timestamp(row, "apply_at")?,
        started_at: optional_timestamp(row, "started_at")?,
        finished_at: optional_timestamp(row, "finished_at")?,
        counts: IngestCounts {
            lines_read: u64_column(row, "lines_read")?,
            lines_applied: u64_column(row, "lines_applied")?,
            lines_rejected: u64_column(row, "lines_rejected")?,
            blank_lines: u64_column(row, "blank_lines")?,
            memberships_added: u64_column(row, "memberships_added")?,
            memberships_removed: u64_column(row, "memberships_removed")?,
            segments_upserted: u64_column(row, "segments_upserted")?,
            rejects: decode_counts(&rejects, "ingest_files.rejects")?,
            unknown_segments: decode_counts(&unknown, "ingest_files.unknown_segments")?,
            check_millis: u64_column(row, "check_millis")?,
            duration_millis: u64_column(row, "duration_millis")?,
        },
    })
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Commits a registry change without bumping the catalog generation: no cache depends on it.
async fn commit_quiet(tx: Transaction<'static, Sqlite>) -> CatalogResult<()> {
    tx.commit().await.map_err(backend_error)
}

async fn finish(
    conn: &mut SqliteConnection,
    id: i64,
    status: IngestStatus,
    rejection: Option<&IngestRejection>,
    counts: &IngestCounts,
    now: Timestamp,
) -> CatalogResult<IngestFile> {
    let row = sqlx::query(FINISH_INGEST_FILE)
        .bind(id)
        .bind(status.name())
        .bind(rejection.map(|r| r.code.as_str()))
        .bind(rejection.map(|r| r.message.as_str()))
        .bind(now.millis())
        .bind(i64_of(counts.lines_read))
        .bind(i64_of(counts.lines_applied))
        .bind(i64_of(counts.lines_rejected))
        .bind(i64_of(counts.blank_lines))
        .bind(i64_of(counts.memberships_added))
        .bind(i64_of(counts.memberships_removed))
        .bind(i64_of(counts.segments_upserted))
        .bind(encode_counts(&counts.rejects))
        .bind(encode_counts(&counts.unknown_segments))
        .bind(i64_of(counts.check_millis))
        .bind(i64_of(counts.duration_millis))
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    match row {
        Some(row) => ingest_file(&row),
        None => Err(CatalogError::NotFound(format!(
            "delivery {id} waiting or applying"
        ))),
    }
}

impl SqliteCatalog {
    pub(super) async fn sqlite_set_provider_dmp_id(
        &self,
        id: ProviderId,
        dmp_id: Option<&str>,
    ) -> CatalogResult<Provider> {
        if let Some(dmp_id) = dmp_id {
            validate_dmp_id(dmp_id)?;
        }
        let mut tx = self.begin_write().await?;
        if let Some(dmp_id) = dmp_id {
            let holder = sqlx::query(PROVIDER_BY_DMP_ID)
                .bind(dmp_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend_error)?;
            if let Some(holder) = holder {
                let holder = rows::provider(&holder)?;
                if holder.id != id {
                    return Err(CatalogError::AlreadyExists(format!(
                        "DMP ID {dmp_id} (provider {})",
                        holder.id
                    )));
                }
            }
        }
        let row = sqlx::query(SET_PROVIDER_DMP_ID)
            .bind(id.to_string())
            .bind(dmp_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|error| {
                catalog_error(
                    error,
                    &format!("DMP ID {}", dmp_id.unwrap_or_default()),
                    "provider",
                )
            })?
            .ok_or_else(|| CatalogError::NotFound(format!("provider {id}")))?;
        let provider = rows::provider(&row)?;
        commit_change(tx).await?;
        Ok(provider)
    }

    pub(super) async fn sqlite_set_provider_default_pricing(
        &self,
        id: ProviderId,
        pricing: Option<Cost>,
    ) -> CatalogResult<Provider> {
        if let Some(cost) = pricing {
            validate_cost(&cost)?;
        }
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(SET_PROVIDER_DEFAULT_PRICING)
            .bind(id.to_string())
            .bind(pricing.map(|cost| cost.cost_type.name()))
            .bind(pricing.map(|cost| cost.value))
            .bind(pricing.and_then(|cost| cost.currency).map(Currency::code))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| CatalogError::NotFound(format!("provider {id}")))?;
        let provider = rows::provider(&row)?;
        commit_change(tx).await?;
        Ok(provider)
    }

    pub(super) async fn sqlite_provider_by_dmp_id(
        &self,
        dmp_id: &str,
    ) -> CatalogResult<Option<Provider>> {
        let row = sqlx::query(PROVIDER_BY_DMP_ID)
            .bind(dmp_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.as_ref().map(rows::provider).transpose()
    }

    pub(super) async fn sqlite_register_ingest_file(
        &self,
        new: &NewIngestFile,
        now: Timestamp,
    ) -> CatalogResult<IngestFile> {
        let mut tx = self.begin_write().await?;
        if fetch_provider(&mut tx, new.provider).await?.is_none() {
            return Err(CatalogError::NotFound(format!("provider {}", new.provider)));
        }
        let effective: Option<i64> = sqlx::query_scalar(EFFECTIVE_INGEST_FILE)
            .bind(new.provider.to_string())
            .bind(new.kind.name())
            .bind(&new.file_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?;
        let newest: Option<i64> = sqlx::query_scalar(NEWEST_APPLIED_DATE)
            .bind(new.provider.to_string())
            .bind(new.kind.name())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend_error)?;
        let late = IngestRejection {
            code: "late".into(),
            message: format!(
                "a {} file with a later DATE was applied already; files of a provider apply in \
                 DATE order, so deliver this content again under a new FILE ID with a newer DATE",
                new.kind.name()
            ),
        };
        let (status, rejection, duplicate_of) = match (&new.rejection, effective, newest) {
            (Some(rejection), _, _) => (IngestStatus::Rejected, Some(rejection), None),
            (None, Some(original), _) => (IngestStatus::Duplicate, None, Some(original)),
            (None, None, Some(newest)) if newest > new.file_date => {
                (IngestStatus::Rejected, Some(&late), None)
            }
            (None, None, _) => (IngestStatus::Queued, None, None),
        };
        let row = sqlx::query(INSERT_INGEST_FILE)
            .bind(new.provider.to_string())
            .bind(new.kind.name())
            .bind(&new.file_id)
            .bind(&new.dmp_id)
            .bind(new.file_date)
            .bind(&new.name)
            .bind(new.source.name())
            .bind(new.spool_path.as_deref())
            .bind(i64_of(new.bytes))
            .bind(status.name())
            .bind(rejection.map(|r| r.code.as_str()))
            .bind(rejection.map(|r| r.message.as_str()))
            .bind(duplicate_of)
            .bind(now.millis())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend_error)?;
        let file = ingest_file(&row)?;
        commit_quiet(tx).await?;
        Ok(file)
    }

    pub(super) async fn sqlite_start_ingest_file(
        &self,
        id: i64,
        apply_at: Timestamp,
        now: Timestamp,
    ) -> CatalogResult<IngestFile> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(START_INGEST_FILE)
            .bind(id)
            .bind(apply_at.millis())
            .bind(now.millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| CatalogError::NotFound(format!("delivery {id} waiting or applying")))?;
        let file = ingest_file(&row)?;
        commit_quiet(tx).await?;
        Ok(file)
    }

    pub(super) async fn sqlite_finish_ingest_file(
        &self,
        id: i64,
        outcome: &IngestOutcome,
        now: Timestamp,
    ) -> CatalogResult<IngestFile> {
        let mut tx = self.begin_write().await?;
        let file = match outcome {
            IngestOutcome::Applied(counts) => {
                finish(&mut tx, id, IngestStatus::Applied, None, counts, now).await?
            }
            IngestOutcome::Rejected { rejection, counts } => {
                finish(
                    &mut tx,
                    id,
                    IngestStatus::Rejected,
                    Some(rejection),
                    counts,
                    now,
                )
                .await?
            }
        };
        commit_quiet(tx).await?;
        Ok(file)
    }

    pub(super) async fn sqlite_apply_taxonomy(
        &self,
        id: i64,
        segments: &[TaxonomySegment],
        counts: &IngestCounts,
        now: Timestamp,
    ) -> CatalogResult<(IngestFile, Vec<Segment>)> {
        let mut tx = self.begin_write().await?;
        let mut written = Vec::with_capacity(segments.len());
        for segment in segments {
            let advertisers = segment.advertisers.as_ref().map(|list| list.join("\n"));
            let row = sqlx::query(UPSERT_TAXONOMY_SEGMENT)
                .bind(segment.folder.to_string())
                .bind(segment.key.as_str())
                .bind(segment.name.as_str())
                .bind(segment.pricing.map(|cost| cost.cost_type.name()))
                .bind(segment.pricing.map(|cost| cost.value))
                .bind(
                    segment
                        .pricing
                        .and_then(|cost| cost.currency)
                        .map(Currency::code),
                )
                .bind(advertisers)
                .bind(now.millis())
                .fetch_one(&mut *tx)
                .await
                .map_err(|error| {
                    catalog_error(
                        error,
                        &format!("segment {}", segment.key),
                        &format!("folder {}", segment.folder),
                    )
                })?;
            written.push(rows::segment(&row)?);
        }
        let file = finish(&mut tx, id, IngestStatus::Applied, None, counts, now).await?;
        commit_change(tx).await?;
        Ok((file, written))
    }

    pub(super) async fn sqlite_get_ingest_file(
        &self,
        id: i64,
    ) -> CatalogResult<Option<IngestFile>> {
        let row = sqlx::query(GET_INGEST_FILE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.as_ref().map(ingest_file).transpose()
    }

    pub(super) async fn sqlite_ingest_deliveries(
        &self,
        provider: ProviderId,
        file_id: &str,
    ) -> CatalogResult<Vec<IngestFile>> {
        let found = sqlx::query(INGEST_DELIVERIES)
            .bind(provider.to_string())
            .bind(file_id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(ingest_file).collect()
    }

    pub(super) async fn sqlite_list_ingest_files(
        &self,
        provider: ProviderId,
        before: Option<i64>,
        limit: u32,
    ) -> CatalogResult<Vec<IngestFile>> {
        let found = sqlx::query(LIST_INGEST_FILES_PAGE)
            .bind(provider.to_string())
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(ingest_file).collect()
    }

    pub(super) async fn sqlite_next_ingest_file(&self) -> CatalogResult<Option<IngestFile>> {
        let row = sqlx::query(NEXT_INGEST_FILE)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.as_ref().map(ingest_file).transpose()
    }

    pub(super) async fn sqlite_pending_ingest_files(&self) -> CatalogResult<Vec<IngestFile>> {
        let found = sqlx::query(PENDING_INGEST_FILES)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(ingest_file).collect()
    }

    pub(super) async fn sqlite_newest_applied_date(
        &self,
        provider: ProviderId,
        kind: IngestKind,
    ) -> CatalogResult<Option<i64>> {
        sqlx::query_scalar(NEWEST_APPLIED_DATE)
            .bind(provider.to_string())
            .bind(kind.name())
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)
    }
}
