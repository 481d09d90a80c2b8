//! `POST /bidder/usage`: the bidder reports impressions that used data; each is priced with the
//! rules and rates in force at its own time and recorded in the ledger, durably, before the
//! answer. An impression id counts once: a resent event is answered `duplicate` and changes
//! nothing.
//!
//! Events are checked one by one: a bad event is refused with its index and reason, the others
//! are recorded. Nothing of a batch is recorded when the ledger is saturated (429, retry the
//! whole batch: what was recorded before answers `duplicate`).

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use segmart_domain::billing::{
    ChargeStatus, CurrencyCode, MICROS_PER_UNIT, UsageEvent, price_event,
};
use segmart_domain::{ErrorCode, SegmentNum, Timestamp};
use segmart_storage::ledger::{AppendOutcome, LedgerError, LedgerRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::secrets;
use crate::state::SharedState;

/// Most events in one request.
pub const MAX_EVENTS: usize = 10_000;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest impression id, in bytes.
pub const MAX_IMPRESSION_ID_BYTES: usize = 128;
/// Most segments (used + excluded) on one impression.
pub const MAX_SEGMENTS_PER_EVENT: usize = 256;
/// How far in the future an event time may be (clock skew), in seconds.
pub const MAX_FUTURE_SECS: i64 = 300;

/// Extractor: the caller presented a live bidder token.
pub struct Bidder(pub i64);

impl FromRequestParts<SharedState> for Bidder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingToken,
                    "the metering API needs a bidder token: Authorization: Bearer <bidder token>",
                )
            })?;
        // Bidder tokens carry 256 random bits, so a plain SHA-256 is a safe verifier; the map
        // is keyed by the hash, never by the token.
        let hash = secrets::sha256_hex(token);
        state
            .billing
            .snapshot()
            .bidder(&hash)
            .map(Bidder)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the bidder token is not valid"))
    }
}

/// One impression that used data.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageEventDto {
    /// The bidder's impression id (1–128 bytes): counted once.
    pub impression_id: String,
    /// When the impression happened (RFC 3339); its prices are those in force then.
    pub time: String,
    pub buyer_id: i64,
    pub campaign_id: i64,
    #[serde(default)]
    pub region: String,
    /// What the buyer paid for the impression, in `mediaCurrency` (not per mille).
    pub media_cost: f64,
    pub media_currency: String,
    /// Platform segment ids (`id` of the segment API) the impression was targeted on.
    #[serde(default)]
    pub segments: Vec<u32>,
    /// Segment ids used to exclude users: recorded, never billed.
    #[serde(default)]
    pub excluded_segments: Vec<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub events: Vec<UsageEventDto>,
}

/// What happened to one event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventOutcome {
    pub index: usize,
    pub impression_id: String,
    /// `recorded`, `duplicate` or `rejected`.
    pub status: &'static str,
    /// Data cost charged for the impression, in `currency` (recorded events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageAnswer {
    pub received: usize,
    pub recorded: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// The settlement currency of every amount.
    pub currency: String,
    pub events: Vec<EventOutcome>,
}

fn parse_time(raw: &str) -> Result<Timestamp, String> {
    let t = OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|e| format!("time {raw:?} is not an RFC 3339 date-time: {e}"))?;
    Ok(Timestamp::from_millis(
        (t.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

fn validate(dto: UsageEventDto, now: Timestamp) -> Result<UsageEvent, String> {
    if dto.impression_id.is_empty() || dto.impression_id.len() > MAX_IMPRESSION_ID_BYTES {
        return Err(format!(
            "impressionId must be 1 to {MAX_IMPRESSION_ID_BYTES} bytes"
        ));
    }
    let at = parse_time(&dto.time)?;
    if at > now.plus_secs(MAX_FUTURE_SECS) {
        return Err(format!(
            "time {} is in the future (more than {MAX_FUTURE_SECS} s ahead of segmart's clock)",
            dto.time
        ));
    }
    if !dto.media_cost.is_finite() || dto.media_cost < 0.0 || dto.media_cost > 1e9 {
        return Err("mediaCost must be a non-negative number".into());
    }
    let media_currency =
        CurrencyCode::parse(&dto.media_currency).map_err(|e| format!("mediaCurrency: {e}"))?;
    if dto.segments.len() + dto.excluded_segments.len() > MAX_SEGMENTS_PER_EVENT {
        return Err(format!(
            "at most {MAX_SEGMENTS_PER_EVENT} segments per impression"
        ));
    }
    if dto.segments.is_empty() && dto.excluded_segments.is_empty() {
        return Err("an impression that used data names at least one segment".into());
    }
    let mut seen = std::collections::HashSet::new();
    for s in dto.segments.iter().chain(&dto.excluded_segments) {
        if !seen.insert(*s) {
            return Err(format!("segment {s} is named twice"));
        }
    }
    Ok(UsageEvent {
        impression_id: dto.impression_id,
        at,
        buyer_id: dto.buyer_id,
        campaign_id: dto.campaign_id,
        region: dto.region,
        media_cost_micros: (dto.media_cost * MICROS_PER_UNIT).round() as i64,
        media_currency,
        segments: dto.segments.into_iter().map(SegmentNum).collect(),
        excluded_segments: dto.excluded_segments.into_iter().map(SegmentNum).collect(),
    })
}

/// Reports impressions that used data (bidder token).
#[utoipa::path(post, path = "/bidder/usage", tag = "billing", request_body = UsageBatch,
    security(("bearer" = [])),
    responses((status = 200, description = "Every event's outcome; recorded ones are durable", body = UsageAnswer),
              (status = 401, description = "No or bad bidder token"),
              (status = 413, description = "More than 16 MiB or 10 000 events"),
              (status = 429, description = "The ledger is saturated: nothing recorded, retry")))]
pub async fn report_usage(
    State(state): State<SharedState>,
    _bidder: Bidder,
    request: Request,
) -> Result<Json<UsageAnswer>, ApiError> {
    let body = read_body(request, MAX_BODY_BYTES).await?;
    let batch: UsageBatch = parse_json(&body)?;
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{} events in one request; at most {MAX_EVENTS}",
                batch.events.len()
            ),
        ));
    }
    let now = state.clock.now();
    let view = state.billing.snapshot();
    let received = batch.events.len();
    let mut outcomes = Vec::with_capacity(received);
    let mut records = Vec::with_capacity(received);
    let mut record_index = Vec::with_capacity(received);
    for (index, dto) in batch.events.into_iter().enumerate() {
        let impression_id = dto.impression_id.clone();
        let priced = validate(dto, now).and_then(|event| {
            if !view.buyer_exists(event.buyer_id) {
                return Err(format!("buyer {} does not exist", event.buyer_id));
            }
            // Access is decided now, not at the event's time: after a revocation no usage of
            // the revoked segments is accepted for that buyer, whenever it happened.
            for &segment in event.segments.iter().chain(&event.excluded_segments) {
                if view.rule_at(segment, event.at).is_some()
                    && !view.access(event.buyer_id, segment).allowed()
                {
                    return Err(format!(
                        "buyer {} may not use segment {segment}: it is not public, not shared \
                         with and activated by the buyer, or its access was revoked",
                        event.buyer_id
                    ));
                }
            }
            let rates = view.rates_at(event.at);
            let charges = price_event(
                &event,
                |s| view.rule_at(s, event.at),
                |s| view.access(event.buyer_id, s).share_cpm(),
                &rates,
            )
            .map_err(|e| e.to_string())?;
            Ok(LedgerRecord {
                impression_id: event.impression_id,
                at: event.at,
                received_at: now,
                buyer_id: event.buyer_id,
                campaign_id: event.campaign_id,
                region: event.region,
                media_cost_micros: event.media_cost_micros,
                media_currency: event.media_currency,
                settlement_currency: state.billing.settlement(),
                charges,
            })
        });
        match priced {
            Ok(record) => {
                record_index.push(outcomes.len());
                outcomes.push(EventOutcome {
                    index,
                    impression_id,
                    status: "recorded",
                    data_cost: Some(
                        record
                            .charges
                            .iter()
                            .filter(|c| c.status == ChargeStatus::Charged)
                            .map(|c| c.data_cost_micros)
                            .sum::<i64>() as f64
                            / MICROS_PER_UNIT,
                    ),
                    reason: None,
                });
                records.push(record);
            }
            Err(reason) => outcomes.push(EventOutcome {
                index,
                impression_id,
                status: "rejected",
                data_cost: None,
                reason: Some(reason),
            }),
        }
    }
    let results = if records.is_empty() {
        Vec::new()
    } else {
        state.ledger.append(records).await.map_err(ledger_error)?
    };
    let mut duplicates = 0;
    for (result, &at) in results.iter().zip(&record_index) {
        if *result == AppendOutcome::Duplicate {
            duplicates += 1;
            outcomes[at].status = "duplicate";
            outcomes[at].data_cost = None;
        }
    }
    let recorded = results.len() - duplicates;
    let rejected = received - results.len();
    state.metrics.add(
        "segmart_usage_events_total",
        "outcome=\"recorded\"",
        recorded as u64,
    );
    state.metrics.add(
        "segmart_usage_events_total",
        "outcome=\"duplicate\"",
        duplicates as u64,
    );
    state.metrics.add(
        "segmart_usage_events_total",
        "outcome=\"rejected\"",
        rejected as u64,
    );
    Ok(Json(UsageAnswer {
        received,
        recorded,
        duplicates,
        rejected,
        currency: state.billing.settlement().to_string(),
        events: outcomes,
    }))
}

pub fn ledger_error(e: LedgerError) -> ApiError {
    match e {
        LedgerError::Saturated => ApiError::new(
            ErrorCode::Overloaded,
            "the ledger is saturated; nothing of this request was recorded, retry shortly",
        )
        .with_retry_after(1),
        LedgerError::ShuttingDown => ApiError::new(
            ErrorCode::Overloaded,
            "segmart is shutting down; nothing of this request was recorded, retry shortly",
        )
        .with_retry_after(1),
        LedgerError::Backend(why) => ApiError::internal(why),
    }
}
