//! The profile API: `/segmentproviders/{spid}/profiles`.
//!
//! Batches are parsed without copying strings (ids borrow from the body), resolved against the
//! folder's segments under one read lock, and written to the profile store as one durable batch.
//! Items that cannot be applied are refused one by one, with a reason; the rest are applied.

use std::borrow::Cow;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use segmart_domain::profile::{ItemRejection, ProfileUpdate, ResolvedUpdate, resolve_lists_into};
use segmart_domain::{ErrorCode, IdType, Timestamp, canonical_profile_id};
use segmart_storage::catalog::Folder;
use segmart_storage::profile::{ProfileKeyer, ProfileMutation, WriteBatch};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::access::{Access, ProfileRead, ProfileWrite};
use crate::body::{JsonBody, read_body};
use crate::directory::Directory;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;

/// One item of a profile batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchItem<'a> {
    /// The user id (case-sensitive UTF-8; IP folders take IPv4/IPv6 addresses).
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub profile_id: Option<Cow<'a, str>>,
    /// Segments to add (creates the profile when unknown); re-adding refreshes the expiry.
    #[serde(borrow, default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub segment_ids_to_add: Option<Vec<Cow<'a, str>>>,
    /// Segments to remove.
    #[serde(borrow, default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub segment_ids_to_remove: Option<Vec<Cow<'a, str>>>,
    /// The complete new segment list (full refresh).
    #[serde(borrow, default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub segment_ids_to_set: Option<Vec<Cow<'a, str>>>,
    /// Remove every segment of the profile.
    pub remove_all_segments: Option<bool>,
}

/// Why one batch item was not applied.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectedItem {
    /// Position of the item in the batch, from 0.
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_segments: Vec<String>,
}

/// The answer to a profile batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutcome {
    /// Items in the batch.
    pub received: usize,
    /// Items applied (durably) — all of them unless listed in `rejected`.
    pub applied: usize,
    pub rejected: Vec<RejectedItem>,
}

/// What a parsed batch turns into.
pub struct PreparedBatch {
    /// The items that resolved, stamped `now`.
    pub batch: WriteBatch,
    pub rejected: Vec<RejectedItem>,
    pub received: usize,
}

/// Parses and resolves a batch body: the whole hot path before the store.
/// A body that is not a JSON array of items is refused whole (400 naming where);
/// items with a bad id, no operation or unknown segments are refused one by one.
pub fn prepare_batch(
    body: &[u8],
    folder: &Folder,
    directory: &Directory,
    keyer: &ProfileKeyer,
    now: Timestamp,
) -> ApiResult<PreparedBatch> {
    let batch = crate::batch_json::parse(body)?;
    if batch.items.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the batch is empty; send a JSON array of profile operations",
        ));
    }
    let received = batch.items.len();
    // Packed updates take fewer bytes than their JSON in any realistic body.
    let mut packed = WriteBatch::with_capacity(now, body.len());
    let mut resolved = ResolvedUpdate::default();
    let mut located = Vec::new();
    let mut rejected = Vec::new();
    directory
        .with_segments(folder.id, |segments| {
            for (index, item) in batch.items.iter().enumerate() {
                let reject = |profile_id: Option<&str>, rejection: ItemRejection| RejectedItem {
                    index,
                    profile_id: profile_id.map(str::to_owned),
                    reason: rejection.reason,
                    unknown_segments: rejection.unknown_segments,
                };
                let Some(raw_id) = batch.profile_id(item) else {
                    rejected.push(reject(None, plain("profileId is required")));
                    continue;
                };
                let profile_id = match canonical_profile_id(raw_id, &folder.id_type) {
                    Ok(id) => id,
                    Err(why) => {
                        rejected.push(reject(Some(raw_id), plain(&format!("profileId {why}"))));
                        continue;
                    }
                };
                let remove_all = item.remove_all.unwrap_or(false);
                let (add, remove) = (batch.list(&item.add), batch.list(&item.remove));
                let set = item.set.as_ref().map(|_| batch.list(&item.set));
                if !remove_all && set.is_none() && add.is_empty() && remove.is_empty() {
                    rejected.push(reject(
                        Some(raw_id),
                        plain(
                            "the item has no operation; give segmentIdsToAdd, segmentIdsToRemove, segmentIdsToSet or removeAllSegments: true",
                        ),
                    ));
                    continue;
                }
                resolved.clear = remove_all || set.is_some();
                let joined = set.unwrap_or(&[]).iter().chain(add).map(AsRef::as_ref);
                let removed = remove.iter().map(AsRef::as_ref);
                let fast = segments.resolve_packed(
                    joined,
                    add.len(),
                    removed,
                    now,
                    &mut located,
                    &mut resolved,
                );
                let lookup = |key: &Cow<'_, str>| segments.get(key.as_ref());
                let outcome = if fast {
                    Ok(())
                } else {
                    resolve_lists_into(remove_all, set, add, remove, now, lookup, &mut resolved)
                };
                match outcome {
                    Ok(()) => packed.push_update(
                        keyer.key_bytes(folder.num, profile_id.as_bytes()),
                        &resolved,
                    ),
                    Err(rejection) => rejected.push(reject(Some(raw_id), rejection)),
                }
            }
        })
        .ok_or_else(|| ApiError::not_found(format!("segment provider {}", folder.id)))?;
    Ok(PreparedBatch {
        batch: packed,
        rejected,
        received,
    })
}

fn plain(reason: &str) -> ItemRejection {
    ItemRejection {
        reason: reason.to_owned(),
        unknown_segments: Vec::new(),
    }
}

/// Apply a batch of profile operations.
#[utoipa::path(post, path = "/segmentproviders/{spid}/profiles", tag = "profiles",
    params(("spid" = String, Path, description = "segment provider id")),
    request_body(content = Vec<BatchItem>, description = "at most 1 MB; each item needs at least one operation"),
    responses(
        (status = 200, description = "applied (items listed in `rejected` were not)", body = BatchOutcome),
        (status = 400, description = "not a JSON array of items, or every item was refused (listed in `rejected`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "body larger than 1 MB", body = ErrorBody),
        (status = 429, description = "rate limit, banned address, or write queue full (nothing applied)", body = ErrorBody)),
    security(("bearer" = ["dmp_profile"])))]
pub async fn post_batch(
    State(state): State<SharedState>,
    access: Access<ProfileWrite>,
    request: Request,
) -> ApiResult<(StatusCode, Json<BatchOutcome>)> {
    let body = read_body(request, state.settings.max_batch_bytes).await?;
    let now = state.clock.now();
    let prepared = prepare_batch(
        &body,
        &access.ctx.folder,
        &state.directory,
        &state.keyer,
        now,
    )?;
    let applied = prepared.batch.len();
    state.metrics.add(
        "segmart_profile_items_total",
        "outcome=\"rejected\"",
        prepared.rejected.len() as u64,
    );
    if applied == 0 {
        return Err(ApiError {
            rejected: serde_json::to_value(&prepared.rejected).ok().map(Box::new),
            ..ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "none of the {} items could be applied; each refusal is listed in `rejected`",
                    prepared.received
                ),
            )
        });
    }
    state.profiles.write(prepared.batch).await?;
    state.metrics.add(
        "segmart_profile_items_total",
        "outcome=\"applied\"",
        applied as u64,
    );
    Ok((
        StatusCode::OK,
        Json(BatchOutcome {
            received: prepared.received,
            applied,
            rejected: prepared.rejected,
        }),
    ))
}

/// The body of a profile PUT.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePutBody {
    /// The complete segment list; replaces the previous one, every expiry reset to the
    /// segment's default TTL.
    pub segments: Vec<SegmentIdRef>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentIdRef {
    pub id: String,
}

/// One live segment link.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileSegment {
    pub id: String,
    /// When the link expires (RFC 3339, UTC).
    pub expiration: String,
}

/// A profile with its live segments.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileDto {
    pub id: String,
    pub segment_provider_id: String,
    pub segments: Vec<ProfileSegment>,
}

fn profile_id_for(folder: &Folder, raw: &str) -> ApiResult<String> {
    canonical_profile_id(raw, &folder.id_type)
        .map(Cow::into_owned)
        .map_err(|why| {
            let hint = match folder.id_type {
                IdType::Ip => " (this folder holds IP addresses)",
                IdType::Maid => " (this folder holds mobile advertising ids)",
                _ => "",
            };
            ApiError::field("profileId", format!("{why}{hint}"))
        })
}

fn rfc3339(at: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp(at.secs())
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

async fn read_profile(
    state: &SharedState,
    folder: &Folder,
    profile_id: &str,
) -> ApiResult<Option<ProfileDto>> {
    let key = state.keyer.key_bytes(folder.num, profile_id.as_bytes());
    let mut views = state.profiles.read(&[key], state.clock.now()).await?;
    let Some(view) = views.pop().flatten() else {
        return Ok(None);
    };
    let keys = state
        .directory
        .segment_keys(view.segments.iter().map(|s| s.num));
    let segments = view
        .segments
        .iter()
        .zip(keys)
        .filter_map(|(link, key)| {
            key.map(|key| ProfileSegment {
                id: key.into_string(),
                expiration: rfc3339(link.expires_at),
            })
        })
        .collect();
    Ok(Some(ProfileDto {
        id: profile_id.to_owned(),
        segment_provider_id: folder.id.to_string(),
        segments,
    }))
}

/// Get a profile's live segments.
#[utoipa::path(get, path = "/segmentproviders/{spid}/profiles/{profileId}", tag = "profiles",
    params(("spid" = String, Path, description = "segment provider id"), ("profileId" = String, Path, description = "user id")),
    responses((status = 200, body = ProfileDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "no live profile", body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_profile_read"])))]
pub async fn get_profile(
    State(state): State<SharedState>,
    access: Access<ProfileRead>,
    Path((_spid, raw_id)): Path<(String, String)>,
) -> ApiResult<Json<ProfileDto>> {
    let folder = &access.ctx.folder;
    let profile_id = profile_id_for(folder, &raw_id)?;
    read_profile(&state, folder, &profile_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("profile {raw_id}")))
}

/// Replace a profile's whole segment list.
#[utoipa::path(put, path = "/segmentproviders/{spid}/profiles/{profileId}", tag = "profiles",
    params(("spid" = String, Path, description = "segment provider id"), ("profileId" = String, Path, description = "user id")),
    request_body = ProfilePutBody,
    responses((status = 200, description = "the profile as stored", body = ProfileDto), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_profile"])))]
pub async fn put_profile(
    State(state): State<SharedState>,
    access: Access<ProfileWrite>,
    Path((_spid, raw_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ProfilePutBody>,
) -> ApiResult<Json<ProfileDto>> {
    let folder = &access.ctx.folder;
    let profile_id = profile_id_for(folder, &raw_id)?;
    let now = state.clock.now();
    let update = ProfileUpdate::replace(body.segments.into_iter().map(|s| s.id).collect());
    let resolved: ResolvedUpdate = state
        .directory
        .with_segments(folder.id, |segments| {
            update.resolve(now, |key: &String| segments.get(key.as_str()))
        })
        .ok_or_else(|| ApiError::not_found(format!("segment provider {}", folder.id)))?
        .map_err(|rejection| ApiError {
            field: Some("segments".into()),
            unknown_segments: rejection.unknown_segments,
            ..ApiError::new(ErrorCode::InvalidRequest, rejection.reason)
        })?;
    let key = state.keyer.key_bytes(folder.num, profile_id.as_bytes());
    state
        .profiles
        .write(WriteBatch::of(
            now,
            [ProfileMutation::Update {
                key,
                update: resolved,
            }],
        ))
        .await?;
    let stored = read_profile(&state, folder, &profile_id).await?;
    Ok(Json(stored.unwrap_or(ProfileDto {
        id: profile_id,
        segment_provider_id: folder.id.to_string(),
        segments: Vec::new(),
    })))
}

/// Delete a profile and all its links.
#[utoipa::path(delete, path = "/segmentproviders/{spid}/profiles/{profileId}", tag = "profiles",
    params(("spid" = String, Path, description = "segment provider id"), ("profileId" = String, Path, description = "user id")),
    responses((status = 204, description = "deleted (or did not exist)"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = ["dmp_profile"])))]
pub async fn delete_profile(
    State(state): State<SharedState>,
    access: Access<ProfileWrite>,
    Path((_spid, raw_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let folder = &access.ctx.folder;
    let profile_id = profile_id_for(folder, &raw_id)?;
    let key = state.keyer.key_bytes(folder.num, profile_id.as_bytes());
    state
        .profiles
        .write(WriteBatch::of(
            state.clock.now(),
            [ProfileMutation::Delete { key }],
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
