//! The operator's billing and buyer administration over HTTP (operator token), the same
//! operations as `segmart admin billing …`: revshare, publishers, priced categories, exchange
//! rates, buyers and their users and OAuth clients, bidder credentials.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use segmart_domain::billing::{CurrencyCode, Price};
use segmart_domain::pricing::CostType;
use segmart_domain::{BuyerPermissions, FieldError};
use segmart_storage::billing_catalog::{BuyerKind, UserRole};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::admin::Operator;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::ops;
use crate::state::SharedState;

type ApiResult<T> = Result<T, ApiError>;

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

async fn reload(state: &SharedState) -> ApiResult<()> {
    state.billing.reload(state.catalog.as_ref()).await?;
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewPublisher {
    pub member_id: i64,
    pub name: String,
}

/// Creates a data publisher in a provider's pricing taxonomy.
#[utoipa::path(post, path = "/admin/billing/publishers", tag = "admin", request_body = NewPublisher,
    security(("operator" = [])), responses((status = 201, description = "The publisher")))]
pub async fn create_publisher(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewPublisher>,
) -> ApiResult<Response> {
    let p = state
        .catalog
        .create_publisher(body.member_id, body.name.trim(), state.clock.now())
        .await?;
    Ok(created(
        json!({"id": p.id, "memberId": p.member_id, "name": p.node_name}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCategory {
    pub publisher_id: i64,
    pub name: String,
    /// FIX (CPM) or RATE (percent of the media cost).
    pub cost_type: String,
    pub cost_value: f64,
    /// ISO 4217 (default USD).
    pub currency: Option<String>,
}

/// Creates a priced data category under a publisher.
#[utoipa::path(post, path = "/admin/billing/categories", tag = "admin", request_body = NewCategory,
    security(("operator" = [])), responses((status = 201, description = "The category"),
    (status = 400, description = "A bad price")))]
pub async fn create_category(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewCategory>,
) -> ApiResult<Response> {
    let price = Price {
        cost_type: CostType::from_name(&body.cost_type.to_ascii_uppercase())
            .ok_or_else(|| FieldError::new("costType", "must be FIX or RATE"))?,
        value: body.cost_value,
        currency: CurrencyCode::parse(body.currency.as_deref().unwrap_or("USD"))
            .map_err(|e| FieldError::new("currency", e))?,
    };
    let c = state
        .catalog
        .create_category(
            body.publisher_id,
            body.name.trim(),
            price,
            state.clock.now(),
        )
        .await?;
    reload(&state).await?;
    Ok(created(
        json!({"id": c.id, "publisherId": c.publisher_id, "memberId": c.member_id,
        "name": c.node_name, "costType": c.price.cost_type.name(), "costValue": c.price.value,
        "currency": c.price.currency.as_str()}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRate {
    pub currency: String,
    /// Units of the settlement currency one unit of `currency` is worth, from now on.
    pub rate: f64,
}

/// Sets an exchange rate into the settlement currency.
#[utoipa::path(post, path = "/admin/billing/rates", tag = "admin", request_body = NewRate,
    security(("operator" = [])), responses((status = 201, description = "The rate in force from now")))]
pub async fn set_rate(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewRate>,
) -> ApiResult<Response> {
    let currency =
        CurrencyCode::parse(&body.currency).map_err(|e| FieldError::new("currency", e))?;
    let r = state
        .catalog
        .set_rate(currency, body.rate, state.clock.now())
        .await?;
    reload(&state).await?;
    Ok(created(
        json!({"currency": r.currency.as_str(), "rate": r.to_settlement,
        "validFrom": r.valid_from.millis()}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revshare {
    pub member_id: i64,
    /// Percent 0–100 of the data cost kept by the platform.
    pub pct: f64,
}

/// Sets a provider's revshare.
#[utoipa::path(post, path = "/admin/billing/revshare", tag = "admin", request_body = Revshare,
    security(("operator" = [])), responses((status = 200, description = "The member")))]
pub async fn set_revshare(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<Revshare>,
) -> ApiResult<Json<Value>> {
    let m = state
        .catalog
        .set_revshare(body.member_id, body.pct, state.clock.now())
        .await?;
    reload(&state).await?;
    Ok(Json(
        json!({"memberId": m.member_id, "dataRevsharePct": m.data_revshare_pct}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBuyer {
    pub name: String,
    /// `advertiser` (default) or `agency`.
    pub kind: Option<String>,
}

/// Creates a buyer account.
#[utoipa::path(post, path = "/admin/buyers", tag = "admin", request_body = NewBuyer,
    security(("operator" = [])), responses((status = 201, description = "The buyer")))]
pub async fn create_buyer(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewBuyer>,
) -> ApiResult<Response> {
    let kind = BuyerKind::from_name(body.kind.as_deref().unwrap_or("advertiser"))
        .ok_or_else(|| FieldError::new("kind", "must be advertiser or agency"))?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(FieldError::new("name", "must be 1..=255 characters").into());
    }
    let b = state
        .catalog
        .create_buyer(name, kind, state.clock.now())
        .await?;
    reload(&state).await?;
    Ok(created(
        json!({"id": b.id, "name": b.name, "kind": b.kind.name()}),
    ))
}

/// Lists buyer accounts.
#[utoipa::path(get, path = "/admin/buyers", tag = "admin", security(("operator" = [])),
    responses((status = 200, description = "`buyers`")))]
pub async fn list_buyers(
    State(state): State<SharedState>,
    _op: Operator,
) -> ApiResult<Json<Value>> {
    let list = state.catalog.list_buyers().await?;
    Ok(Json(json!({"buyers": list.iter().map(|b| json!({
        "id": b.id, "name": b.name, "kind": b.kind.name()})).collect::<Vec<_>>()})))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    /// At least 12 characters; generated (and answered once) when absent.
    pub password: Option<String>,
    /// A provider's user: its member id.
    pub member_id: Option<i64>,
    /// A buyer's user: its buyer id.
    pub buyer_id: Option<i64>,
    pub email: Option<String>,
}

/// Creates a sign-in user of a provider or a buyer.
#[utoipa::path(post, path = "/admin/users", tag = "admin", request_body = NewUser,
    security(("operator" = [])), responses((status = 201, description = "The user (and a generated password, once)")))]
pub async fn create_user(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewUser>,
) -> ApiResult<Response> {
    let role = match (body.member_id, body.buyer_id) {
        (Some(m), None) => UserRole::Provider(m),
        (None, Some(b)) => UserRole::Buyer(b),
        _ => {
            return Err(
                FieldError::new("memberId", "give exactly one of memberId and buyerId").into(),
            );
        }
    };
    let generated = body.password.is_none();
    let password = body.password.unwrap_or_else(ops::new_password);
    let user = ops::create_user(
        state.catalog.as_ref(),
        state.clock.as_ref(),
        &body.username,
        &password,
        role,
    )
    .await?;
    if let Some(email) = &body.email {
        state
            .catalog
            .set_user_email(&body.username, Some(email))
            .await?;
    }
    let mut answer = json!({"id": user.id, "username": user.username, "email": body.email});
    if generated {
        answer["password"] = json!(password);
    }
    Ok(created(answer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBuyerClient {
    pub buyer_id: i64,
    pub name: String,
    /// Comma-separated buyer permissions; default all.
    pub permissions: Option<String>,
}

/// Creates an OAuth client of a buyer; the secret is answered once.
#[utoipa::path(post, path = "/admin/buyer-clients", tag = "admin", request_body = NewBuyerClient,
    security(("operator" = [])), responses((status = 201, description = "client_id and client_secret")))]
pub async fn create_buyer_client(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewBuyerClient>,
) -> ApiResult<Response> {
    let permissions = match &body.permissions {
        Some(list) => {
            BuyerPermissions::parse_list(list).map_err(|e| FieldError::new("permissions", e))?
        }
        None => BuyerPermissions::ALL,
    };
    let issued = ops::create_buyer_client(
        state.catalog.as_ref(),
        state.clock.as_ref(),
        body.buyer_id,
        &body.name,
        permissions,
    )
    .await?;
    Ok(created(json!({"clientId": issued.client.id.to_string(),
        "clientSecret": issued.secret, "buyerId": body.buyer_id,
        "scope": format!("buyer:{}", issued.client.permissions)})))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBidder {
    pub name: String,
}

/// Creates a bidder credential for the metering API; the token is answered once.
#[utoipa::path(post, path = "/admin/bidders", tag = "admin", request_body = NewBidder,
    security(("operator" = [])), responses((status = 201, description = "id and token")))]
pub async fn create_bidder(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewBidder>,
) -> ApiResult<Response> {
    let issued =
        ops::create_bidder(state.catalog.as_ref(), state.clock.as_ref(), &body.name).await?;
    reload(&state).await?;
    Ok(created(
        json!({"id": issued.bidder.id, "name": issued.bidder.name, "token": issued.token}),
    ))
}
