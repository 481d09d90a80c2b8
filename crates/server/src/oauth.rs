//! `POST /oauth2/token`: the OAuth2 client-credentials grant (RFC 6749 §4.4).
//!
//! Form body `grant_type=client_credentials&client_id&client_secret&scope=target-entity:<uuid>:<perms>`
//! (client credentials may also come as HTTP Basic, §2.3.1). Errors follow §5.2.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use segmart_domain::{ClientId, ErrorCode, PermissionSet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{SMALL_BODY_BYTES, read_body};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::secrets;
use crate::state::SharedState;
use crate::token::TokenClaims;

/// The form fields of a token request.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// `target-entity:<uuid>:<perm>,<perm>…` with perms among dmp_profile_read, dmp_profile,
    /// dmp_segment_read, dmp_segment.
    pub scope: Option<String>,
}

/// A successful token answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds the token lives (3599).
    pub expires_in: i64,
    /// The permissions granted, `target-entity:<uuid>:<perms>`.
    pub scope: String,
}

fn invalid_request(msg: impl Into<String>) -> ApiError {
    ApiError::oauth(ErrorCode::InvalidRequest, "invalid_request", msg)
}

fn invalid_client() -> ApiError {
    ApiError::oauth(
        ErrorCode::InvalidToken,
        "invalid_client",
        "client authentication failed: unknown client, wrong secret, or revoked client",
    )
}

fn invalid_scope(msg: impl Into<String>) -> ApiError {
    ApiError::oauth(ErrorCode::InvalidRequest, "invalid_scope", msg)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Parses `target-entity:<uuid>:<perms>`.
fn parse_scope(scope: &str, target_entity: uuid::Uuid) -> ApiResult<PermissionSet> {
    let mut parts = scope.trim().splitn(3, ':');
    let (Some("target-entity"), Some(entity), Some(perms)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_scope(
            "scope must be target-entity:<uuid>:<permission>,<permission>…",
        ));
    };
    if uuid::Uuid::parse_str(entity).ok() != Some(target_entity) {
        return Err(invalid_scope(format!(
            "unknown target entity {entity}; this segmart deployment is target-entity {target_entity}"
        )));
    }
    PermissionSet::parse_list(perms).map_err(invalid_scope)
}

/// Exchange client credentials for a bearer token.
#[utoipa::path(post, path = "/oauth2/token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request, unsupported_grant_type or invalid_scope", body = ErrorBody),
        (status = 401, description = "invalid_client", body = ErrorBody)))]
pub async fn token(State(state): State<SharedState>, request: Request) -> Response {
    match issue(state, request).await {
        Ok(answer) => {
            let mut response = Json(answer).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(err) => {
            let mut response = err.into_response();
            if response.status() == axum::http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"segmart\""),
                );
            }
            response
        }
    }
}

async fn issue(state: SharedState, request: Request) -> ApiResult<TokenResponse> {
    let headers = request.headers().clone();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(invalid_request(
            "send the parameters form-encoded with Content-Type: application/x-www-form-urlencoded",
        ));
    }
    let body = read_body(request, SMALL_BODY_BYTES).await?;
    let form: TokenRequest = serde_urlencoded::from_bytes(&body)
        .map_err(|e| invalid_request(format!("malformed form body: {e}")))?;
    match form.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(ApiError::oauth(
                ErrorCode::InvalidRequest,
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported; use client_credentials"),
            ));
        }
        None => {
            return Err(invalid_request(
                "grant_type is required (client_credentials)",
            ));
        }
    }
    let (client_id, client_secret) = match (
        form.client_id,
        form.client_secret,
        basic_credentials(&headers),
    ) {
        (Some(id), Some(secret), None) => (id, secret),
        (None, None, Some(basic)) => basic,
        (Some(_), Some(_), Some(_)) => {
            return Err(invalid_request(
                "send client credentials either in the body or as HTTP Basic, not both",
            ));
        }
        _ => return Err(invalid_request("client_id and client_secret are required")),
    };
    let scope = form.scope.ok_or_else(|| {
        invalid_scope(format!(
            "scope is required: target-entity:{}:<permission>,<permission>…",
            state.settings.target_entity
        ))
    })?;
    if let Some(perms) = scope.trim().strip_prefix("buyer:") {
        return issue_buyer(&state, &client_id, client_secret, perms).await;
    }
    let requested = parse_scope(&scope, state.settings.target_entity)?;

    let client = client_id
        .parse::<ClientId>()
        .ok()
        .and_then(|id| state.directory.client(id));
    let verified = secret_matches(client_secret, client.as_ref().map(|c| &c.secret_hash)).await?;
    let client = match client {
        Some(client) if verified && !client.revoked => client,
        _ => return Err(refused(&state)),
    };
    if !requested.is_subset_of(client.permissions) {
        let missing: Vec<&str> = requested
            .iter()
            .filter(|p| !client.permissions.contains(*p))
            .map(|p| p.as_str())
            .collect();
        return Err(invalid_scope(format!(
            "this client may not request {}; it holds {}",
            missing.join(","),
            client.permissions
        )));
    }
    let expires_at = state.clock.now().plus_secs(state.settings.token_ttl_secs);
    let access_token = state.tokens.issue(&TokenClaims {
        client: client.id,
        permissions: requested,
        client_generation: client.generation,
        expires_at,
    });
    state.metrics.add("segmart_tokens_issued_total", "", 1);
    Ok(TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: state.settings.token_ttl_secs,
        scope: format!(
            "target-entity:{}:{}",
            state.settings.target_entity, requested
        ),
    })
}

/// The grant for a buyer's client: `scope=buyer:<buyer permission>,…`.
async fn issue_buyer(
    state: &SharedState,
    client_id: &str,
    client_secret: String,
    perms: &str,
) -> ApiResult<TokenResponse> {
    let requested = segmart_domain::BuyerPermissions::parse_list(perms).map_err(invalid_scope)?;
    let client = match client_id.parse::<ClientId>() {
        Ok(id) => state.catalog.get_buyer_client(id).await?,
        Err(_) => None,
    };
    let verified = secret_matches(client_secret, client.as_ref().map(|c| &c.secret_hash)).await?;
    let client = match client {
        Some(client) if verified && !client.revoked => client,
        _ => return Err(refused(state)),
    };
    if !requested.is_subset_of(client.permissions) {
        return Err(invalid_scope(format!(
            "this client may not request {requested}; it holds {}",
            client.permissions
        )));
    }
    let expires_at = state.clock.now().plus_secs(state.settings.token_ttl_secs);
    let access_token = state.tokens.issue_buyer(&crate::token::BuyerClaims {
        client: client.id,
        buyer_id: client.buyer_id,
        permissions: requested,
        expires_at,
    });
    state.metrics.add("segmart_tokens_issued_total", "", 1);
    Ok(TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: state.settings.token_ttl_secs,
        scope: format!("buyer:{requested}"),
    })
}

/// Verifies a client secret off the async threads (argon2 is slow on purpose). An unknown
/// client is verified against a fixed hash, so timing does not reveal which client ids exist.
async fn secret_matches(secret: String, stored_hash: Option<&String>) -> ApiResult<bool> {
    let hash = stored_hash.unwrap_or(&DUMMY_HASH).clone();
    tokio::task::spawn_blocking(move || secrets::verify_secret(&secret, &hash))
        .await
        .map_err(ApiError::internal)
}

/// A refused client: counted, and answered with `invalid_client`.
fn refused(state: &SharedState) -> ApiError {
    state.metrics.add("segmart_tokens_refused_total", "", 1);
    invalid_client()
}

static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| secrets::hash_secret("segmart-unknown-client"));
