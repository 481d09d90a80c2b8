//! The HTTP way in: `PUT /segmentproviders/{spid}/files/{filename}` streams a batch file into
//! the spool; reports, the list of files and the complete rejected-lines list are read back
//! under the same path. The operator has the same upload under `/admin/ingest` (what
//! `segmart ingest` uses while a server holds the data directory).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use segmart_domain::{ErrorCode, Permission, ProviderId};
use segmart_ingest::{BatchFileName, FileKind};
use segmart_storage::catalog::{IngestFile, IngestKind, IngestSource, IngestStatus};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use super::report::FileReport;
use super::{Arrival, Phase, new_spool_path, receive};
use crate::access::{Access, ProfileRead, ProfileWrite};
use crate::admin::Operator;
use crate::body::QueryParams;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::{AppState, SharedState};

/// A refused file name, as the answer names it.
fn bad_name(error: segmart_ingest::FileNameError) -> ApiError {
    ApiError::field("filename", error.to_string())
}

/// Streams a request body into a new spool file, durable before it returns.
async fn spool_body(state: &AppState, request: Request) -> ApiResult<(PathBuf, u64)> {
    let settings = &state.ingest.settings;
    let limit = settings.max_upload_bytes;
    let path = new_spool_path(settings).map_err(ApiError::internal)?;
    let part = path.with_extension("part");
    let file = tokio::fs::File::create(&part)
        .await
        .map_err(ApiError::internal)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = request.into_body().into_data_stream();
    let mut bytes = 0u64;
    let outcome: ApiResult<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("the upload was cut short: {error}"),
                )
            })?;
            bytes += chunk.len() as u64;
            if bytes > limit {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the file exceeds the upload limit of {limit} bytes"),
                ));
            }
            out.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        out.flush().await.map_err(ApiError::internal)?;
        out.get_ref().sync_all().await.map_err(ApiError::internal)?;
        Ok(())
    }
    .await;
    if let Err(error) = outcome {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(error);
    }
    tokio::fs::rename(&part, &path)
        .await
        .map_err(ApiError::internal)?;
    Ok((path, bytes))
}

fn files_base(spid: &str) -> String {
    format!("/segmentproviders/{spid}/files")
}

fn accepted(file: &IngestFile, location: String, report: FileReport) -> Response {
    let status = if file.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    (status, headers, Json(report)).into_response()
}

/// Upload a batch file (`[DMP ID].[yyyy-MM-dd_HH-mm-ss].[FILE ID].txt.gz` or
/// `….taxonomy.json`). The body is the file itself, streamed; it is applied in the background.
#[utoipa::path(put, path = "/segmentproviders/{spid}/files/{filename}", tag = "files",
    params(("spid" = String, Path, description = "segment provider id (any folder of the provider)"),
        ("filename" = String, Path, description = "the batch file name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the gzip data file or the taxonomy JSON, streamed"),
    responses(
        (status = 202, description = "queued; the report is at the Location URL", body = FileReport),
        (status = 200, description = "a duplicate of an earlier delivery, or a file arriving after a newer one (late): nothing applied", body = FileReport),
        (status = 400, description = "bad file name, or the upload was cut short", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "another provider's folder, the file name's DMP ID is not this provider's, or a taxonomy without dmp_segment", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_profile"])))]
pub async fn upload_file(
    State(state): State<SharedState>,
    access: Access<ProfileWrite>,
    Path((spid, filename)): Path<(String, String)>,
    request: Request,
) -> ApiResult<Response> {
    let name = BatchFileName::parse(&filename).map_err(bad_name)?;
    if name.kind() == FileKind::Taxonomy
        && !access.ctx.permissions.contains(Permission::SegmentWrite)
    {
        return Err(ApiError::new(
            ErrorCode::MissingPermission,
            "a taxonomy file changes segments: this token lacks the dmp_segment permission",
        ));
    }
    let provider = state
        .catalog
        .get_provider(access.ctx.provider)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("provider {}", access.ctx.provider)))?;
    match provider.dmp_id.as_deref() {
        Some(own) if own == name.dmp_id() => {}
        Some(own) => {
            return Err(ApiError::new(
                ErrorCode::ForeignResource,
                format!(
                    "the file name's DMP ID {} is not this provider's ({own}); files are named [DMP ID].[DATE].[FILE ID]",
                    name.dmp_id()
                ),
            ));
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::ForeignResource,
                "this provider has no DMP ID yet; the operator sets it (segmart admin provider set-dmp-id)",
            ));
        }
    }
    let (spool_path, bytes) = spool_body(&state, request).await?;
    let file = receive(
        &state,
        Arrival {
            name,
            provider: provider.id,
            source: IngestSource::Upload,
            spool_path,
            bytes,
        },
    )
    .await?;
    let base = files_base(&spid);
    let location = format!("{base}/{}", file.file_id);
    Ok(accepted(
        &file,
        location,
        FileReport::new(&file, Some(&base)),
    ))
}

/// One delivery in a file's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySummary {
    pub delivery_id: i64,
    pub kind: String,
    pub status: String,
    pub source: String,
    pub received_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A FILE ID's state: the report of its data file (or, without one, of its taxonomy), the
/// taxonomy's report beside it, and every delivery of the FILE ID.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStatus {
    #[serde(flatten)]
    pub report: FileReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<FileReport>,
    pub deliveries: Vec<DeliverySummary>,
}

/// The delivery of `kind` that counts: the one queued, applying or applied, else the latest.
fn current(deliveries: &[IngestFile], kind: IngestKind) -> Option<&IngestFile> {
    let of_kind = || deliveries.iter().filter(|d| d.kind == kind);
    of_kind()
        .find(|d| {
            matches!(
                d.status,
                IngestStatus::Queued | IngestStatus::Applying | IngestStatus::Applied
            )
        })
        .or_else(|| of_kind().next_back())
}

async fn deliveries_of(
    state: &AppState,
    provider: ProviderId,
    file_id: &str,
) -> ApiResult<Vec<IngestFile>> {
    let deliveries = state.catalog.ingest_deliveries(provider, file_id).await?;
    if deliveries.is_empty() {
        return Err(ApiError::not_found(format!("file {file_id}")));
    }
    Ok(deliveries)
}

/// The report of a batch file, by FILE ID.
#[utoipa::path(get, path = "/segmentproviders/{spid}/files/{fileId}", tag = "files",
    params(("spid" = String, Path, description = "segment provider id"), ("fileId" = String, Path, description = "the FILE ID")),
    responses((status = 200, body = FileStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_profile_read"])))]
pub async fn file_status(
    State(state): State<SharedState>,
    access: Access<ProfileRead>,
    Path((spid, file_id)): Path<(String, String)>,
) -> ApiResult<Json<FileStatus>> {
    let deliveries = deliveries_of(&state, access.ctx.provider, &file_id).await?;
    let base = files_base(&spid);
    let data = current(&deliveries, IngestKind::Data);
    let taxonomy = current(&deliveries, IngestKind::Taxonomy);
    let main = data.or(taxonomy).expect("at least one delivery");
    Ok(Json(FileStatus {
        report: FileReport::new(main, Some(&base)),
        taxonomy: data.and(taxonomy).map(|t| FileReport::new(t, Some(&base))),
        deliveries: deliveries
            .iter()
            .map(|d| DeliverySummary {
                delivery_id: d.id,
                kind: d.kind.name().to_owned(),
                status: d.status.name().to_owned(),
                source: d.source.name().to_owned(),
                received_at: super::report::rfc3339(d.received_at),
                reason: d
                    .rejection
                    .as_ref()
                    .map(|r| format!("{}: {}", r.code, r.message)),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// Return deliveries older than this delivery id (the `next` of the previous page).
    pub before: Option<i64>,
}

/// One page of a provider's deliveries, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilePage {
    pub files: Vec<FileReport>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// The provider's batch file deliveries, newest first.
#[utoipa::path(get, path = "/segmentproviders/{spid}/files", tag = "files",
    params(("spid" = String, Path, description = "segment provider id"), FilesQuery),
    responses((status = 200, body = FilePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_profile_read"])))]
pub async fn list_files(
    State(state): State<SharedState>,
    access: Access<ProfileRead>,
    Path(spid): Path<String>,
    QueryParams(query): QueryParams<FilesQuery>,
) -> ApiResult<Json<FilePage>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("is {limit}; it must be between 1 and 1000"),
        ));
    }
    let mut files = state
        .catalog
        .list_ingest_files(access.ctx.provider, query.before, limit + 1)
        .await?;
    let next = if files.len() > limit as usize {
        files.truncate(limit as usize);
        files.last().map(|f| f.id)
    } else {
        None
    };
    let base = files_base(&spid);
    Ok(Json(FilePage {
        files: files
            .iter()
            .map(|f| FileReport::new(f, Some(&base)))
            .collect(),
        next,
    }))
}

/// Every rejected line of a data file, as tab-separated values: `line`, `reason`, `message`,
/// `content` (the line as read).
#[utoipa::path(get, path = "/segmentproviders/{spid}/files/{fileId}/rejects", tag = "files",
    params(("spid" = String, Path, description = "segment provider id"), ("fileId" = String, Path, description = "the FILE ID")),
    responses((status = 200, description = "text/tab-separated-values, header first", content_type = "text/tab-separated-values", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no applied data file with this FILE ID", body = ErrorBody)),
    security(("bearer" = ["dmp_profile_read"])))]
pub async fn rejected_lines(
    State(state): State<SharedState>,
    access: Access<ProfileRead>,
    Path((_spid, file_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let deliveries = deliveries_of(&state, access.ctx.provider, &file_id).await?;
    let Some(data) = current(&deliveries, IngestKind::Data)
        .filter(|d| matches!(d.status, IngestStatus::Applied | IngestStatus::Applying))
    else {
        return Err(ApiError::not_found(format!(
            "rejected lines of data file {file_id}"
        )));
    };
    let path = state
        .ingest
        .settings
        .rejects_path(data.provider, &data.file_id);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found(format!("rejected lines of data file {file_id}")))?;
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(buffer), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    });
    let disposition = format!("attachment; filename=\"{file_id}.rejects.tsv\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/tab-separated-values; charset=utf-8".to_owned(),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Upload a batch file for whichever provider its DMP ID names (operator only).
#[utoipa::path(put, path = "/admin/ingest/files/{filename}", tag = "admin",
    params(("filename" = String, Path, description = "the batch file name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = FileReport), (status = 200, body = FileReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "no provider has this DMP ID", body = ErrorBody)),
    security(("operator" = [])))]
pub async fn operator_upload(
    State(state): State<SharedState>,
    _op: Operator,
    Path(filename): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    let name = BatchFileName::parse(&filename).map_err(bad_name)?;
    let provider = state
        .catalog
        .provider_by_dmp_id(name.dmp_id())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("a provider with DMP ID {}", name.dmp_id())))?;
    let (spool_path, bytes) = spool_body(&state, request).await?;
    let file = receive(
        &state,
        Arrival {
            name,
            provider: provider.id,
            source: IngestSource::Cli,
            spool_path,
            bytes,
        },
    )
    .await?;
    let location = format!("/admin/ingest/deliveries/{}", file.id);
    Ok(accepted(&file, location, FileReport::new(&file, None)))
}

/// A delivery's report, by delivery id (operator only).
#[utoipa::path(get, path = "/admin/ingest/deliveries/{id}", tag = "admin",
    params(("id" = i64, Path, description = "delivery id")),
    responses((status = 200, body = FileReport), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn operator_delivery(
    State(state): State<SharedState>,
    _op: Operator,
    Path(id): Path<i64>,
) -> ApiResult<Json<FileReport>> {
    let file = state
        .catalog
        .get_ingest_file(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery {id}")))?;
    Ok(Json(FileReport::new(&file, None)))
}

/// What the ingest worker is doing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressDto {
    pub delivery_id: u64,
    pub file_name: String,
    /// `idle`, `checking` (inflating the whole file first) or `applying`.
    pub phase: String,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub lines_total: u64,
    pub lines_done: u64,
}

/// The ingest worker's progress (operator only; `segmart ingest` draws its bar from it).
#[utoipa::path(get, path = "/admin/ingest/progress", tag = "admin",
    responses((status = 200, body = ProgressDto), (status = 401, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn operator_progress(
    State(state): State<SharedState>,
    _op: Operator,
) -> Json<ProgressDto> {
    let progress = &state.ingest.progress;
    Json(ProgressDto {
        delivery_id: progress.delivery.load(Ordering::Relaxed),
        file_name: progress.name(),
        phase: match progress.phase() {
            Phase::Idle => "idle",
            Phase::Checking => "checking",
            Phase::Applying => "applying",
        }
        .to_owned(),
        bytes_total: progress.bytes_total.load(Ordering::Relaxed),
        bytes_done: progress.bytes_done.load(Ordering::Relaxed),
        lines_total: progress.lines_total.load(Ordering::Relaxed),
        lines_done: progress.lines_done.load(Ordering::Relaxed),
    })
}
