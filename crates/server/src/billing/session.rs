//! Sign-in with a user name and password (`POST /auth`, the billing API family's) and the
//! [`Caller`] extractor of the APIs that accept its sessions.
//!
//! `POST /auth {"auth":{"username","password"}}` answers the session token in the body and as
//! an `HttpOnly` cookie, so the seed's `curl -b cookies -c cookies` transcripts work unchanged;
//! the same token is accepted as `Authorization: <token>` or `Authorization: Bearer <token>`.
//! Passwords are argon2id hashes, verified on the blocking pool; an unknown user name is
//! checked against a dummy hash so the answer time does not reveal which names exist. Sessions
//! are self-contained signed tokens (see `token.rs`) that end when they expire or when the
//! user's password changes.

use std::sync::LazyLock;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use segmart_domain::{BuyerPermission, BuyerPermissions, ErrorCode};
use segmart_storage::billing_catalog::{Member, User, UserRole};

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::xandr::{XandrError, envelope_ok};
use crate::body::parse_json;
use crate::error::ApiError;
use crate::secrets;
use crate::state::SharedState;
use crate::token::SessionClaims;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "segmart_session";

/// A hash to verify unknown user names against, so they cost the same time as known ones.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| secrets::hash_secret("segmart-no-such-user"));

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    pub auth: Credentials,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Sign in; the session token is answered and set as a cookie.
#[utoipa::path(post, path = "/auth", tag = "billing", request_body = AuthRequest,
    responses((status = 200, description = "Signed in: `response.token`"),
              (status = 401, description = "No match for this user name and password")))]
pub async fn auth(
    axum::extract::State(state): axum::extract::State<SharedState>,
    body: axum::body::Bytes,
) -> Result<Response, XandrError> {
    let request: AuthRequest = parse_json(&body)?;
    let Credentials { username, password } = request.auth;
    let user = state.catalog.user_by_name(&username).await?;
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.clone());
    let matches = tokio::task::spawn_blocking(move || secrets::verify_secret(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadCredentials,
                "no match found for this user name and password",
            )
            .into());
        }
    };
    let ttl = state.settings.session_ttl_secs;
    let token = state.tokens.issue_session(&SessionClaims {
        user_id: user.id,
        user_generation: user.generation,
        expires_at: state.clock.now().plus_secs(ttl),
    });
    let mut response = envelope_ok(json!({ "token": token })).into_response();
    let cookie =
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
}

/// Who is calling an API that accepts sessions.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A data provider's user.
    Provider { user: User, member: Member },
    /// A buyer: its signed-in user (every buyer permission) or one of its OAuth clients.
    Buyer {
        buyer_id: i64,
        permissions: BuyerPermissions,
    },
    /// The operator token.
    Operator,
}

impl Caller {
    /// The buyer of a buyer caller holding `permission`; any other caller is refused.
    pub fn buyer(&self, permission: BuyerPermission) -> Result<i64, ApiError> {
        match self {
            Caller::Buyer {
                buyer_id,
                permissions,
            } => {
                if permissions.contains(permission) {
                    Ok(*buyer_id)
                } else {
                    Err(ApiError::new(
                        ErrorCode::MissingPermission,
                        format!("this token lacks the {} permission", permission.as_str()),
                    ))
                }
            }
            _ => Err(ApiError::new(
                ErrorCode::WrongRole,
                "this API is for buyers: sign in with a buyer's user or use a buyer client's token",
            )),
        }
    }

    /// The member of a provider caller; any other caller is refused.
    pub fn member(&self) -> Result<&Member, ApiError> {
        match self {
            Caller::Provider { member, .. } => Ok(member),
            _ => Err(ApiError::new(
                ErrorCode::WrongRole,
                "this API is for data providers: sign in with a provider's user",
            )),
        }
    }
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        if !token.is_empty() {
            return Some(token.to_owned());
        }
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = XandrError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, XandrError> {
        let token = presented_token(&parts.headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingToken,
                "sign in first: POST /auth, then send the cookie or Authorization: <token>",
            )
        })?;
        let hash = secrets::sha256_hex(&token);
        if secrets::constant_time_eq(hash.as_bytes(), state.operator_token_sha256.as_bytes()) {
            return Ok(Caller::Operator);
        }
        let now = state.clock.now();
        match state.tokens.verify_buyer(&token, now) {
            Ok(claims) => {
                let client = state
                    .catalog
                    .get_buyer_client(claims.client)
                    .await?
                    .filter(|c| !c.revoked && c.buyer_id == claims.buyer_id)
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::InvalidToken, "the buyer client was revoked")
                    })?;
                return Ok(Caller::Buyer {
                    buyer_id: client.buyer_id,
                    permissions: claims.permissions,
                });
            }
            Err(crate::token::TokenError::Expired) => {
                return Err(ApiError::new(
                    ErrorCode::ExpiredToken,
                    "the buyer token has expired: get a new one from /oauth2/token",
                )
                .into());
            }
            Err(_) => {}
        }
        let claims = state
            .tokens
            .verify_session(&token, now)
            .map_err(|e| match e {
                crate::token::TokenError::Expired => ApiError::new(
                    ErrorCode::ExpiredToken,
                    "the session has expired: sign in again with POST /auth",
                ),
                _ => ApiError::new(ErrorCode::InvalidToken, "the session token is not valid"),
            })?;
        let user = state
            .catalog
            .get_user(claims.user_id)
            .await?
            .filter(|u| u.generation == claims.user_generation)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidToken,
                    "the session has ended (password changed or user removed): sign in again",
                )
            })?;
        match user.role {
            UserRole::Provider(member_id) => {
                let member = state
                    .catalog
                    .get_member(member_id)
                    .await?
                    .ok_or_else(|| ApiError::internal("user of a missing member"))?;
                Ok(Caller::Provider { user, member })
            }
            UserRole::Buyer(buyer_id) => Ok(Caller::Buyer {
                buyer_id,
                permissions: BuyerPermissions::ALL,
            }),
        }
    }
}
