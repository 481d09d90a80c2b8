//! The segment API: `/segmentproviders/{spid}/segments`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use segmart_domain::segment::{Segment, SegmentDraft};
use segmart_domain::{FolderId, SegmentKey};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::{Access, SegmentRead, SegmentWrite};
use crate::body::{JsonBody, QueryParams};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;

/// `true`/`false`, or `1`/`0` as the original API documents for `selectable`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Flag {
    Bool(bool),
    Number(u8),
}

impl Flag {
    fn value(self, field: &str) -> ApiResult<bool> {
        match self {
            Flag::Bool(b) => Ok(b),
            Flag::Number(0) => Ok(false),
            Flag::Number(1) => Ok(true),
            Flag::Number(n) => Err(ApiError::field(
                field,
                format!("is {n}; use true/false or 1/0"),
            )),
        }
    }
}

/// A segment as clients send it. Read-only fields (`id`, `creationDate`, `segmentProviderId`)
/// are accepted so a fetched segment can be sent back, and ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentBody {
    /// The provider's id for the segment (≤ 100 characters). Optional on POST: segmart assigns
    /// a UUID when absent. On PUT it must equal the id in the path when sent.
    pub segment_id: Option<String>,
    /// Label shown to campaign managers (1..=255 characters). Required.
    pub name: Option<String>,
    /// Human description (≤ 1000 characters). Default empty.
    pub description: Option<String>,
    /// CPM price in the currency agreed with the platform. Default 0.
    pub price: Option<f64>,
    /// Default link lifetime in minutes, 1..=2147483647. Default 43200 (30 days).
    pub ttl: Option<i64>,
    /// Inactive segments are never used for targeting. Default true.
    pub active: Option<Flag>,
    /// Non-selectable segments only structure the hierarchy. Default true.
    pub selectable: Option<Flag>,
    /// Parent segment id in the same folder.
    pub parent_segment_id: Option<String>,
    /// Ignored (read-only).
    pub segment_provider_id: Option<String>,
    /// Ignored (read-only).
    pub creation_date: Option<i64>,
    /// Ignored (read-only).
    pub id: Option<u64>,
}

impl SegmentBody {
    fn draft(self) -> ApiResult<SegmentDraft> {
        Ok(SegmentDraft {
            name: self.name,
            description: self.description,
            price: self.price,
            ttl: self.ttl,
            active: self.active.map(|f| f.value("active")).transpose()?,
            selectable: self.selectable.map(|f| f.value("selectable")).transpose()?,
            parent: self.parent_segment_id,
        })
    }
}

/// A segment as segmart returns it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentDto {
    pub segment_provider_id: String,
    pub segment_id: String,
    /// Platform-assigned integer id, unique across segmart.
    pub id: u32,
    pub name: String,
    pub description: String,
    pub price: f64,
    pub ttl: u32,
    pub active: bool,
    pub selectable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_segment_id: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub creation_date: i64,
    /// Pricing from a taxonomy file: `RATE` (percent of media cost) or `FIX` (CPM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_value: Option<f64>,
    /// `RUB` or `USD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Advertisers a taxonomy file restricted the segment to (absent: every advertiser).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertisers: Option<Vec<String>>,
}

impl From<Segment> for SegmentDto {
    fn from(s: Segment) -> Self {
        SegmentDto {
            segment_provider_id: s.folder.to_string(),
            segment_id: s.key.into_string(),
            id: s.num.0,
            name: s.spec.name,
            description: s.spec.description,
            price: s.spec.price,
            ttl: s.spec.ttl_minutes,
            active: s.spec.active,
            selectable: s.spec.selectable,
            parent_segment_id: s.spec.parent.map(SegmentKey::into_string),
            creation_date: s.created_at.millis(),
            cost_type: s.pricing.map(|cost| cost.cost_type.name().to_owned()),
            cost_value: s.pricing.map(|cost| cost.value),
            currency: s
                .pricing
                .and_then(|cost| cost.currency)
                .map(|c| c.code().to_owned()),
            advertisers: s.advertisers,
        }
    }
}

/// One page of segments.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentPage {
    pub segments: Vec<SegmentDto>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Number of segments in the folder.
    pub total: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// Return segments whose id sorts after this one.
    pub after: Option<String>,
}

fn parse_key(raw: &str, field: &str) -> ApiResult<SegmentKey> {
    SegmentKey::parse(raw).map_err(|why| ApiError::field(field, why))
}

/// Create a segment.
#[utoipa::path(post, path = "/segmentproviders/{spid}/segments", tag = "segments",
    params(("spid" = String, Path, description = "segment provider id")),
    request_body = SegmentBody,
    responses(
        (status = 201, description = "created", body = SegmentDto),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "a segment with this id exists", body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_segment"])))]
pub async fn create_segment(
    State(state): State<SharedState>,
    access: Access<SegmentWrite>,
    JsonBody(body): JsonBody<SegmentBody>,
) -> ApiResult<(StatusCode, Json<SegmentDto>)> {
    let folder = access.ctx.folder.id;
    let key = match &body.segment_id {
        Some(raw) => parse_key(raw, "segmentId")?,
        None => SegmentKey::parse(&uuid::Uuid::new_v4().to_string()).expect("uuid is a valid key"),
    };
    check_folder_field(&body, folder)?;
    let spec = body.draft()?.validate()?;
    let segment = state
        .catalog
        .create_segment(folder, &key, &spec, state.clock.now())
        .await?;
    state.directory.put_segment(&segment);
    Ok((StatusCode::CREATED, Json(segment.into())))
}

fn check_folder_field(body: &SegmentBody, folder: FolderId) -> ApiResult<()> {
    if let Some(sent) = &body.segment_provider_id
        && sent.parse::<FolderId>().ok() != Some(folder)
    {
        return Err(ApiError::field(
            "segmentProviderId",
            format!("is {sent:?} but the URL names segment provider {folder}"),
        ));
    }
    Ok(())
}

/// Create or replace a segment.
#[utoipa::path(put, path = "/segmentproviders/{spid}/segments/{id}", tag = "segments",
    params(("spid" = String, Path, description = "segment provider id"), ("id" = String, Path, description = "segment id")),
    request_body = SegmentBody,
    responses(
        (status = 200, description = "replaced", body = SegmentDto),
        (status = 201, description = "created", body = SegmentDto),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_segment"])))]
pub async fn put_segment(
    State(state): State<SharedState>,
    access: Access<SegmentWrite>,
    Path((_spid, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SegmentBody>,
) -> ApiResult<(StatusCode, Json<SegmentDto>)> {
    let folder = access.ctx.folder.id;
    let key = parse_key(&id, "segmentId")?;
    if let Some(sent) = &body.segment_id
        && sent != key.as_str()
    {
        return Err(ApiError::field(
            "segmentId",
            format!("is {sent:?} but the URL names segment {id:?}"),
        ));
    }
    check_folder_field(&body, folder)?;
    let spec = body.draft()?.validate()?;
    let (segment, created) = state
        .catalog
        .put_segment(folder, &key, &spec, state.clock.now())
        .await?;
    state.directory.put_segment(&segment);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(segment.into())))
}

/// Get one segment.
#[utoipa::path(get, path = "/segmentproviders/{spid}/segments/{id}", tag = "segments",
    params(("spid" = String, Path, description = "segment provider id"), ("id" = String, Path, description = "segment id")),
    responses((status = 200, body = SegmentDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_segment_read"])))]
pub async fn get_segment(
    State(state): State<SharedState>,
    access: Access<SegmentRead>,
    Path((_spid, id)): Path<(String, String)>,
) -> ApiResult<Json<SegmentDto>> {
    let key = parse_key(&id, "segmentId")?;
    let segment = state
        .catalog
        .get_segment(access.ctx.folder.id, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("segment {id}")))?;
    Ok(Json(segment.into()))
}

/// List a folder's segments, ordered by id, one page at a time.
#[utoipa::path(get, path = "/segmentproviders/{spid}/segments", tag = "segments",
    params(("spid" = String, Path, description = "segment provider id"), PageQuery),
    responses((status = 200, body = SegmentPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_segment_read"])))]
pub async fn list_segments(
    State(state): State<SharedState>,
    access: Access<SegmentRead>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<SegmentPage>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("is {limit}; it must be between 1 and 1000"),
        ));
    }
    let after = query
        .after
        .as_deref()
        .map(|a| parse_key(a, "after"))
        .transpose()?;
    let folder = access.ctx.folder.id;
    let mut segments = state
        .catalog
        .list_segments(folder, after.as_ref(), limit + 1)
        .await?;
    let next = if segments.len() > limit as usize {
        segments.truncate(limit as usize);
        segments.last().map(|s| s.key.as_str().to_owned())
    } else {
        None
    };
    let total = state.catalog.count_segments(folder).await?;
    Ok(Json(SegmentPage {
        segments: segments.into_iter().map(SegmentDto::from).collect(),
        next,
        total,
    }))
}
