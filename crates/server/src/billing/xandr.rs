//! The billing API family of seed 002: `GET /data-provider` (the pricing taxonomy) and
//! `GET|POST|PUT|DELETE /segment-billing-category` (mapping records), with its response
//! envelope `{"response": {"status", "count", "start_element", "num_elements", "dbg_info", …}}`
//! and snake_case fields.
//!
//! Errors keep the envelope too (`status: "error"`, the family's `error_id`, the message in
//! `error`), and carry segmart's own `error_code` and `field` beside them; the HTTP status comes
//! from the one error catalogue like everywhere else.

use std::time::Instant;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use segmart_domain::{ErrorCode, FieldError};
use segmart_storage::billing_catalog::{BillingMapping, DataCategory, MappingDraft, Member};
use segmart_storage::catalog::CatalogError;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::session::Caller;
use crate::body::parse_json;
use crate::error::ApiError;
use crate::state::SharedState;

/// Largest page of mapping records.
pub const MAX_NUM_ELEMENTS: u64 = 100;
/// Page size when none is asked for.
pub const DEFAULT_NUM_ELEMENTS: u64 = 25;

/// An error answered in the family's envelope.
#[derive(Debug)]
pub struct XandrError(pub ApiError);

impl<E: Into<ApiError>> From<E> for XandrError {
    fn from(e: E) -> Self {
        XandrError(e.into())
    }
}

fn error_id(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "NOAUTH",
        403 => "UNAUTH",
        404 => "NOTFOUND",
        409 => "INTEGRITY",
        429 => "LIMIT",
        400..=499 => "SYNTAX",
        _ => "SYSTEM",
    }
}

impl IntoResponse for XandrError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = self.0.body();
        let mut response = json!({
            "status": "error",
            "error_id": error_id(status),
            "error": body.message,
            "error_code": body.code,
        });
        if let Some(field) = body.field {
            response["field"] = Value::String(field);
        }
        (status, Json(json!({ "response": response }))).into_response()
    }
}

fn dbg_info(output_term: &str, warnings: &[String], started: Instant) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    json!({
        "instance": "segmart",
        "db": "",
        "warnings": warnings,
        "start_microtime": now,
        "time": started.elapsed().as_millis() as u64,
        "version": env!("CARGO_PKG_VERSION"),
        "output_term": output_term,
    })
}

/// `{"response": {"status": "OK", …fields}}`.
pub fn envelope_ok(fields: Value) -> Json<Value> {
    let mut response = Map::new();
    response.insert("status".into(), Value::String("OK".into()));
    if let Value::Object(extra) = fields {
        response.extend(extra);
    }
    Json(json!({ "response": Value::Object(response) }))
}

fn list_envelope(
    count: u64,
    start: u64,
    num: u64,
    key: &str,
    items: Value,
    warnings: &[String],
    started: Instant,
) -> Json<Value> {
    envelope_ok(json!({
        "count": count,
        "start_element": start,
        "num_elements": num,
        "dbg_info": dbg_info(key, warnings, started),
        key: items,
    }))
}

fn category_json(c: &DataCategory) -> Value {
    json!({
        "id": c.id,
        "node_name": c.node_name,
        "level_index": c.level_index,
        "data_publisher_id": c.publisher_id,
        "data_provider_id": c.member_id,
        "active": c.active,
        "member_id": c.member_id,
        "cost_type": c.price.cost_type.name(),
        "cost_value": c.price.value,
        "currency": c.price.currency.as_str(),
    })
}

async fn taxonomy_json(state: &SharedState, member: &Member) -> Result<Value, ApiError> {
    let publishers = state
        .catalog
        .list_publishers(Some(member.member_id))
        .await?;
    let categories = state
        .catalog
        .list_categories(Some(member.member_id))
        .await?;
    let publishers: Vec<Value> = publishers
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "node_name": p.node_name,
                "level_index": p.level_index,
                "data_provider_id": p.member_id,
                "active": p.active,
                "member_id": p.member_id,
                "data_categories": categories
                    .iter()
                    .filter(|c| c.publisher_id == p.id)
                    .map(category_json)
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "id": member.member_id,
        "node_name": member.provider_name,
        "member_id": member.member_id,
        "data_revshare_pct": member.data_revshare_pct,
        "active": member.active,
        "data_publishers": publishers,
    }))
}

/// The caller's pricing taxonomy (the operator sees every provider's).
#[utoipa::path(get, path = "/data-provider", tag = "billing",
    responses((status = 200, description = "`response[\"data-providers\"]`: provider → publishers → categories")))]
pub async fn data_provider(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<Value>, XandrError> {
    let started = Instant::now();
    let members = match &caller {
        Caller::Operator => state.catalog.list_members().await?,
        other => vec![other.member()?.clone()],
    };
    let mut tree = Vec::with_capacity(members.len());
    for m in &members {
        tree.push(taxonomy_json(&state, m).await?);
    }
    let count = tree.len() as u64;
    Ok(list_envelope(
        count,
        0,
        DEFAULT_NUM_ELEMENTS,
        "data-providers",
        Value::Array(tree),
        &[],
        started,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MappingQuery {
    /// Your member id (optional; must be yours).
    pub member_id: Option<String>,
    /// A mapping record id (GET: only that record; DELETE: required).
    pub id: Option<String>,
    /// First element of the page (0-based), default 0.
    pub start_element: Option<String>,
    /// Page size, 1..=100, default 25.
    pub num_elements: Option<String>,
}

fn int_param(raw: &Option<String>, field: &str) -> Result<Option<i64>, ApiError> {
    raw.as_deref()
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::from(FieldError::new(field, format!("{v:?} is not an integer")))
            })
        })
        .transpose()
}

/// The caller's member, checking the optional `member_id` of the query.
fn member_for<'c>(caller: &'c Caller, query: &MappingQuery) -> Result<&'c Member, ApiError> {
    let member = caller.member()?;
    if let Some(asked) = int_param(&query.member_id, "member_id")?
        && asked != member.member_id
    {
        return Err(ApiError::new(
            ErrorCode::ForeignResource,
            format!(
                "member_id {asked} is not yours (you are member {})",
                member.member_id
            ),
        ));
    }
    Ok(member)
}

fn mapping_json(m: &BillingMapping) -> Value {
    json!({
        "id": m.id,
        "segment_id": m.segment_num,
        "data_provider_id": m.member_id,
        "data_category_id": m.data_category_id,
        "active": m.active,
        "member_id": m.member_id,
        "is_public": m.is_public,
        "data_segment_type_id": m.data_segment_type,
        "recommend_include": m.recommend_include,
    })
}

/// The fields of a `segment-billing-category` object; absent fields keep their defaults (POST)
/// or current values (PUT).
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct MappingFields {
    pub id: Option<i64>,
    pub segment_id: Option<i64>,
    pub data_provider_id: Option<i64>,
    pub data_category_id: Option<i64>,
    pub active: Option<bool>,
    pub member_id: Option<i64>,
    pub is_public: Option<bool>,
    pub data_segment_type_id: Option<String>,
    pub recommend_include: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingRequest {
    #[serde(rename = "segment-billing-category")]
    pub mapping: MappingFields,
}

fn require<T>(value: Option<T>, field: &str, method: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| FieldError::new(field, format!("is required on {method}")).into())
}

fn check_ids(member: &Member, fields: &MappingFields) -> Result<(), ApiError> {
    for (field, value) in [
        ("data_provider_id", fields.data_provider_id),
        ("member_id", fields.member_id),
    ] {
        if let Some(v) = value
            && v != member.member_id
        {
            return Err(FieldError::new(
                field,
                format!(
                    "{v} is not your data provider id (yours is {})",
                    member.member_id
                ),
            )
            .into());
        }
    }
    Ok(())
}

fn segment_num(raw: i64) -> Result<u32, ApiError> {
    u32::try_from(raw)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| FieldError::new("segment_id", format!("{raw} is not a segment id")).into())
}

/// Brand Safety and Fraud Detection segments are meant for exclusion: a mapping that recommends
/// them for inclusion is kept, with a warning in `dbg_info.warnings`.
fn warnings_for(draft: &MappingDraft) -> Vec<String> {
    if draft.recommend_include
        && matches!(
            draft.data_segment_type.as_str(),
            "Brand Safety" | "Fraud Detection"
        )
    {
        vec![format!(
            "recommend_include is true for a {} segment; segments of this type are normally \
             used for exclusion (recommend_include false)",
            draft.data_segment_type
        )]
    } else {
        Vec::new()
    }
}

fn one_mapping(m: &BillingMapping, warnings: &[String], started: Instant) -> Json<Value> {
    list_envelope(
        1,
        0,
        DEFAULT_NUM_ELEMENTS,
        "segment_billing_categories",
        json!([mapping_json(m)]),
        warnings,
        started,
    )
}

/// Mapping records, paged (`start_element`, `num_elements` ≤ 100, default 25), or one by `id`.
#[utoipa::path(get, path = "/segment-billing-category", tag = "billing", params(MappingQuery),
    responses((status = 200, description = "`response.segment_billing_categories` and `count`")))]
pub async fn list_mappings(
    State(state): State<SharedState>,
    caller: Caller,
    Query(query): Query<MappingQuery>,
) -> Result<Json<Value>, XandrError> {
    let started = Instant::now();
    let member = member_for(&caller, &query)?;
    if let Some(id) = int_param(&query.id, "id")? {
        let m = state
            .catalog
            .get_mapping(member.member_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("mapping record {id}")))?;
        return Ok(one_mapping(&m, &[], started));
    }
    let start = int_param(&query.start_element, "start_element")?.unwrap_or(0);
    if start < 0 {
        return Err(ApiError::from(FieldError::new("start_element", "must be 0 or more")).into());
    }
    let num =
        int_param(&query.num_elements, "num_elements")?.unwrap_or(DEFAULT_NUM_ELEMENTS as i64);
    if !(1..=MAX_NUM_ELEMENTS as i64).contains(&num) {
        return Err(ApiError::from(FieldError::new(
            "num_elements",
            format!("{num} is out of range: 1 to {MAX_NUM_ELEMENTS}"),
        ))
        .into());
    }
    let (page, count) = state
        .catalog
        .list_mappings(member.member_id, start as u64, num as u64)
        .await?;
    Ok(list_envelope(
        count,
        start as u64,
        num as u64,
        "segment_billing_categories",
        Value::Array(page.iter().map(mapping_json).collect()),
        &[],
        started,
    ))
}

/// Adds a mapping record (one segment per call).
#[utoipa::path(post, path = "/segment-billing-category", tag = "billing", params(MappingQuery),
    request_body = MappingRequest,
    responses((status = 200, description = "The new record in `segment_billing_categories`"),
              (status = 400, description = "A field is missing or names a segment or category that is not yours"),
              (status = 409, description = "The segment has a mapping record already")))]
pub async fn create_mapping(
    State(state): State<SharedState>,
    caller: Caller,
    Query(query): Query<MappingQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, XandrError> {
    let started = Instant::now();
    let member = member_for(&caller, &query)?;
    let fields = parse_json::<MappingRequest>(&body)?.mapping;
    check_ids(member, &fields)?;
    if fields.id.is_some() {
        return Err(ApiError::from(FieldError::new(
            "id",
            "is assigned by segmart on POST; use PUT to change a record",
        ))
        .into());
    }
    let draft = MappingDraft {
        segment_num: segment_num(require(fields.segment_id, "segment_id", "POST")?)?,
        data_category_id: require(fields.data_category_id, "data_category_id", "POST")?,
        active: require(fields.active, "active", "POST")?,
        is_public: fields.is_public.unwrap_or(false),
        data_segment_type: fields
            .data_segment_type_id
            .unwrap_or_else(|| "unassigned".into()),
        recommend_include: fields.recommend_include.unwrap_or(false),
    };
    require(fields.data_provider_id, "data_provider_id", "POST")?;
    let m = state
        .catalog
        .create_mapping(member.member_id, &draft, state.clock.now())
        .await?;
    state.billing.reload(state.catalog.as_ref()).await?;
    Ok(one_mapping(&m, &warnings_for(&draft), started))
}

/// Changes a mapping record (`id` in the object); absent fields keep their values.
#[utoipa::path(put, path = "/segment-billing-category", tag = "billing", params(MappingQuery),
    request_body = MappingRequest,
    responses((status = 200, description = "The changed record"),
              (status = 404, description = "No record with this id is yours")))]
pub async fn update_mapping(
    State(state): State<SharedState>,
    caller: Caller,
    Query(query): Query<MappingQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, XandrError> {
    let started = Instant::now();
    let member = member_for(&caller, &query)?;
    let fields = parse_json::<MappingRequest>(&body)?.mapping;
    check_ids(member, &fields)?;
    let id = match fields.id {
        Some(id) => id,
        None => require(int_param(&query.id, "id")?, "id", "PUT")?,
    };
    let current = state
        .catalog
        .get_mapping(member.member_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("mapping record {id}")))?;
    let draft = MappingDraft {
        segment_num: match fields.segment_id {
            Some(raw) => segment_num(raw)?,
            None => current.segment_num,
        },
        data_category_id: fields.data_category_id.unwrap_or(current.data_category_id),
        active: fields.active.unwrap_or(current.active),
        is_public: fields.is_public.unwrap_or(current.is_public),
        data_segment_type: fields
            .data_segment_type_id
            .unwrap_or(current.data_segment_type),
        recommend_include: fields
            .recommend_include
            .unwrap_or(current.recommend_include),
    };
    let m = state
        .catalog
        .update_mapping(member.member_id, id, &draft, state.clock.now())
        .await?;
    state.billing.reload(state.catalog.as_ref()).await?;
    Ok(one_mapping(&m, &warnings_for(&draft), started))
}

/// Removes a mapping record (`?id=`): the segment stays usable and is no longer charged.
#[utoipa::path(delete, path = "/segment-billing-category", tag = "billing", params(MappingQuery),
    responses((status = 200, description = "Removed; `segment_billing_category` is null"),
              (status = 404, description = "No record with this id is yours")))]
pub async fn delete_mapping(
    State(state): State<SharedState>,
    caller: Caller,
    Query(query): Query<MappingQuery>,
) -> Result<Json<Value>, XandrError> {
    let started = Instant::now();
    let member = member_for(&caller, &query)?;
    let id = require(int_param(&query.id, "id")?, "id", "DELETE")?;
    match state
        .catalog
        .delete_mapping(member.member_id, id, state.clock.now())
        .await
    {
        Ok(()) => {}
        Err(CatalogError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("mapping record {id}")).into());
        }
        Err(e) => return Err(e.into()),
    }
    state.billing.reload(state.catalog.as_ref()).await?;
    Ok(envelope_ok(json!({
        "count": 0,
        "start_element": 0,
        "num_elements": 0,
        "dbg_info": dbg_info("segment_billing_category", &[], started),
        "segment_billing_category": Value::Null,
    })))
}
