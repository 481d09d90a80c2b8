//! Usage reports and the auditor's view of the ledger, filtered to what the caller may see:
//! a provider's user sees the usage of its own data (with its payout and the platform fee), a
//! buyer's user its own spend (data cost only), the operator everything.
//!
//! - `GET /usage?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv][&member_id=][&buyer_id=]`: rows by
//!   day × provider × category × segment × buyer.
//! - `GET /usage/impressions/{impressionId}`: one impression as recorded, with the price in force.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use segmart_domain::billing::{Charge, MICROS_PER_UNIT};
use segmart_domain::{ErrorCode, FieldError, SegmentNum, Timestamp};
use segmart_storage::ledger::{LedgerRecord, UsageFilter, UsageRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::macros::format_description;
use time::{Date, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};

use super::metering::ledger_error;
use super::session::Caller;
use super::xandr::XandrError;
use crate::error::ApiError;
use crate::state::SharedState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day (UTC), `YYYY-MM-DD`; default: no lower bound.
    pub from: Option<String>,
    /// Last day included (UTC), `YYYY-MM-DD`; default: no upper bound.
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Operator only: one provider's usage.
    pub member_id: Option<i64>,
    /// Operator only: one buyer's spend.
    pub buyer_id: Option<i64>,
}

fn parse_day(raw: &str, field: &str) -> Result<i32, ApiError> {
    let date = Date::parse(raw, format_description!("[year]-[month]-[day]"))
        .map_err(|_| FieldError::new(field, format!("{raw:?} is not a date (YYYY-MM-DD)")))?;
    let epoch = Date::from_calendar_date(1970, time::Month::January, 1).expect("valid");
    Ok(date.to_julian_day() - epoch.to_julian_day())
}

fn day_string(day: i32) -> String {
    let date = OffsetDateTime::from_unix_timestamp(i64::from(day) * 86_400)
        .map(|t| t.date())
        .unwrap_or(Date::MIN);
    date.format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

fn money(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_UNIT
}

/// What a caller's view of the ledger is limited to, and whether it sees the provider side.
struct Scope {
    filter: UsageFilter,
    provider_side: bool,
}

fn scope(caller: &Caller, query: &UsageQuery) -> Result<Scope, ApiError> {
    let mut filter = UsageFilter {
        from_day: query
            .from
            .as_deref()
            .map(|d| parse_day(d, "from"))
            .transpose()?,
        to_day: query
            .to
            .as_deref()
            .map(|d| parse_day(d, "to"))
            .transpose()?,
        member_id: None,
        buyer_id: None,
    };
    if let (Some(f), Some(t)) = (filter.from_day, filter.to_day)
        && f > t
    {
        return Err(FieldError::new("to", "is before from").into());
    }
    let foreign = |what: &str| {
        ApiError::new(
            ErrorCode::ForeignResource,
            format!("{what} filters are for the operator; you see only your own usage"),
        )
    };
    let provider_side = match caller {
        Caller::Operator => {
            filter.member_id = query.member_id;
            filter.buyer_id = query.buyer_id;
            true
        }
        Caller::Provider { member, .. } => {
            if query.member_id.is_some_and(|m| m != member.member_id) {
                return Err(foreign("member_id"));
            }
            filter.member_id = Some(member.member_id);
            filter.buyer_id = query.buyer_id;
            true
        }
        Caller::Buyer { buyer_id, .. } => {
            caller.buyer(segmart_domain::BuyerPermission::UsageRead)?;
            if query.buyer_id.is_some_and(|b| b != *buyer_id) {
                return Err(foreign("buyer_id"));
            }
            filter.buyer_id = Some(*buyer_id);
            filter.member_id = query.member_id;
            false
        }
    };
    Ok(Scope {
        filter,
        provider_side,
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRowDto {
    pub day: String,
    pub data_provider_id: i64,
    pub data_category_id: Option<i64>,
    /// The platform segment id.
    pub segment_id: u32,
    /// The provider's own `segmentId`.
    pub segment_key: Option<String>,
    pub buyer_id: i64,
    pub impressions: u64,
    pub data_cost: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_fee: Option<f64>,
}

fn row_dto(state: &SharedState, row: &UsageRow, provider_side: bool) -> UsageRowDto {
    let key = state
        .directory
        .segment_keys(std::iter::once(SegmentNum(row.segment)))
        .pop()
        .flatten()
        .map(|k| k.into_string());
    UsageRowDto {
        day: day_string(row.day),
        data_provider_id: row.member_id,
        data_category_id: row.data_category_id,
        segment_id: row.segment,
        segment_key: key,
        buyer_id: row.buyer_id,
        impressions: row.impressions,
        data_cost: money(row.data_cost_micros),
        payout: provider_side.then(|| money(row.payout_micros)),
        platform_fee: provider_side.then(|| money(row.platform_fee_micros)),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Usage by day × provider × category × segment × buyer, as JSON or CSV.
#[utoipa::path(get, path = "/usage", tag = "billing", params(UsageQuery),
    responses((status = 200, description = "`rows` and `totals` (JSON) or text/csv"),
              (status = 401, description = "Not signed in"),
              (status = 403, description = "A filter outside the caller's own usage")))]
pub async fn usage_report(
    State(state): State<SharedState>,
    caller: Result<Caller, XandrError>,
    Query(query): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let caller = caller.map_err(|e| e.0)?;
    let scope = scope(&caller, &query)?;
    let rows = state
        .ledger
        .usage(&scope.filter)
        .await
        .map_err(ledger_error)?;
    let dtos: Vec<UsageRowDto> = rows
        .iter()
        .map(|r| row_dto(&state, r, scope.provider_side))
        .collect();
    let currency = state.billing.settlement().to_string();
    match query.format.as_deref().unwrap_or("json") {
        "json" => {
            let sum = |f: fn(&UsageRow) -> i64| money(rows.iter().map(f).sum());
            let mut totals = json!({
                "impressions": rows.iter().map(|r| r.impressions).sum::<u64>(),
                "dataCost": sum(|r| r.data_cost_micros),
            });
            if scope.provider_side {
                totals["payout"] = json!(sum(|r| r.payout_micros));
                totals["platformFee"] = json!(sum(|r| r.platform_fee_micros));
            }
            Ok(
                Json(json!({ "currency": currency, "rows": dtos, "totals": totals }))
                    .into_response(),
            )
        }
        "csv" => {
            let mut out = String::from(
                "day,data_provider_id,data_category_id,segment_id,segment_key,buyer_id,impressions,data_cost",
            );
            if scope.provider_side {
                out.push_str(",payout,platform_fee");
            }
            out.push_str(",currency\n");
            for d in &dtos {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{:.6}",
                    d.day,
                    d.data_provider_id,
                    d.data_category_id
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    d.segment_id,
                    csv_field(d.segment_key.as_deref().unwrap_or("")),
                    d.buyer_id,
                    d.impressions,
                    d.data_cost,
                ));
                if let (Some(p), Some(f)) = (d.payout, d.platform_fee) {
                    out.push_str(&format!(",{p:.6},{f:.6}"));
                }
                out.push_str(&format!(",{currency}\n"));
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"segmart-usage.csv\"",
                    ),
                ],
                out,
            )
                .into_response())
        }
        other => Err(FieldError::new("format", format!("{other:?}: use json or csv")).into()),
    }
}

fn rfc3339(at: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.millis()) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn charge_json(c: &Charge, provider_side: bool) -> Value {
    let mut v = json!({
        "segmentId": c.segment.0,
        "dataProviderId": c.member_id,
        "dataCategoryId": c.data_category_id,
        "status": c.status.name(),
        "price": c.price.map(|p| json!({
            "costType": p.cost_type.name(),
            "costValue": p.value,
            "currency": p.currency.as_str(),
        })),
        "shareCpm": c.share_cpm.map(|s| json!({"cpm": s.cpm, "currency": s.currency.as_str()})),
        "dataCost": money(c.data_cost_micros),
    });
    if provider_side {
        v["revsharePct"] = json!(c.revshare_pct);
        v["payout"] = json!(money(c.payout_micros));
        v["platformFee"] = json!(money(c.platform_fee_micros));
    }
    v
}

fn record_json(r: &LedgerRecord, charges: &[&Charge], provider_side: bool) -> Value {
    json!({
        "impressionId": r.impression_id,
        "time": rfc3339(r.at),
        "receivedAt": rfc3339(r.received_at),
        "buyerId": r.buyer_id,
        "campaignId": r.campaign_id,
        "region": r.region,
        "mediaCost": money(r.media_cost_micros),
        "mediaCurrency": r.media_currency.as_str(),
        "currency": r.settlement_currency.as_str(),
        "charges": charges
            .iter()
            .map(|c| charge_json(c, provider_side))
            .collect::<Vec<_>>(),
    })
}

/// One impression as the ledger recorded it, with the price in force at its time.
#[utoipa::path(get, path = "/usage/impressions/{impressionId}", tag = "billing",
    params(("impressionId" = String, Path, description = "The bidder's impression id")),
    responses((status = 200, description = "The ledger record"),
              (status = 404, description = "No such impression among those you may see")))]
pub async fn impression(
    State(state): State<SharedState>,
    caller: Result<Caller, XandrError>,
    Path(impression_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller.map_err(|e| e.0)?;
    let record = state
        .ledger
        .get(std::slice::from_ref(&impression_id))
        .await
        .map_err(ledger_error)?
        .pop()
        .flatten();
    let missing = || ApiError::not_found(format!("impression {impression_id}"));
    let record = record.ok_or_else(missing)?;
    let charges: Vec<&Charge> = match &caller {
        Caller::Operator => record.charges.iter().collect(),
        Caller::Buyer { buyer_id, .. } if *buyer_id == record.buyer_id => {
            caller.buyer(segmart_domain::BuyerPermission::UsageRead)?;
            record.charges.iter().collect()
        }
        Caller::Provider { member, .. } => record
            .charges
            .iter()
            .filter(|c| c.member_id == member.member_id)
            .collect(),
        Caller::Buyer { .. } => Vec::new(),
    };
    if charges.is_empty() && !matches!(caller, Caller::Operator) {
        return Err(missing());
    }
    let provider_side = !matches!(caller, Caller::Buyer { .. });
    Ok(Json(record_json(&record, &charges, provider_side)))
}
