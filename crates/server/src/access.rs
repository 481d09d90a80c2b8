//! Authentication and authorisation of folder-scoped requests.
//!
//! [`folder_guard`] runs before every `/segmentproviders/{spid}/…` handler: it refuses banned
//! IPs, checks the bearer token, checks that the folder belongs to the token's provider,
//! spends the folder's rate limit and adds the `X-RateLimit-*` headers to the answer.
//! Handlers then state the permission they need in the type of their [`Access`] extractor.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use segmart_domain::{ErrorCode, FolderId, Permission, PermissionSet, ProviderId};
use segmart_storage::catalog::{Folder, OAuthClient};

use crate::error::{ApiError, ApiResult};
use crate::ratelimit::{ApiClass, Quota};
use crate::state::{AppState, SharedState};
use crate::token::TokenError;

/// The caller of a folder-scoped request, once authenticated and authorised for the folder.
#[derive(Debug, Clone)]
pub struct FolderContext {
    pub folder: Folder,
    pub provider: ProviderId,
    pub permissions: PermissionSet,
}

/// A permission a handler needs, as a type.
pub trait Needs: Send + Sync + 'static {
    const PERMISSION: Permission;
}

macro_rules! permission_marker {
    ($name:ident, $perm:expr) => {
        pub struct $name;
        impl Needs for $name {
            const PERMISSION: Permission = $perm;
        }
    };
}
permission_marker!(ProfileRead, Permission::ProfileRead);
permission_marker!(ProfileWrite, Permission::ProfileWrite);
permission_marker!(SegmentRead, Permission::SegmentRead);
permission_marker!(SegmentWrite, Permission::SegmentWrite);

/// Extractor: the folder context, provided the token carries permission `P`.
pub struct Access<P: Needs> {
    pub ctx: FolderContext,
    _needs: PhantomData<P>,
}

impl<P: Needs, S: Send + Sync> FromRequestParts<S> for Access<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ctx = parts
            .extensions
            .get::<FolderContext>()
            .cloned()
            .ok_or_else(|| ApiError::internal("folder route without folder guard"))?;
        if !ctx.permissions.contains(P::PERMISSION) {
            return Err(ApiError::new(
                ErrorCode::MissingPermission,
                format!(
                    "this token lacks the {} permission; request it in the token scope",
                    P::PERMISSION.as_str()
                ),
            ));
        }
        Ok(Access {
            ctx,
            _needs: PhantomData,
        })
    }
}

/// Checks a bearer token and returns its still-valid client and permissions.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> ApiResult<(OAuthClient, PermissionSet)> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "no bearer token; get one at POST /oauth2/token and send Authorization: Bearer <token>",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidToken,
                "the Authorization header must be 'Bearer <token>'",
            )
        })?;
    let claims = state
        .tokens
        .verify(token, state.clock.now())
        .map_err(|err| match err {
            TokenError::Expired => ApiError::new(
                ErrorCode::ExpiredToken,
                "the token has expired; request a new one at POST /oauth2/token",
            ),
            TokenError::Malformed | TokenError::BadSignature => {
                ApiError::new(ErrorCode::InvalidToken, "the token is not valid")
            }
        })?;
    let client = state
        .directory
        .client(claims.client)
        .filter(|c| !c.revoked && c.generation == claims.client_generation)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidToken,
                "the token's client was revoked or its secret rotated; request a new token",
            )
        })?;
    Ok((client, claims.permissions))
}

fn api_class(path: &str) -> ApiClass {
    if path.contains("/segments") {
        ApiClass::Segment
    } else {
        ApiClass::Profile
    }
}

fn add_quota_headers(response: &mut Response, quota: Quota) {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(quota.reset_secs));
}

/// Middleware for every `/segmentproviders/{spid}/…` route.
pub async fn folder_guard(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    matched: MatchedPath,
    params: RawPathParams,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let class = api_class(matched.as_str());
    let ip: IpAddr = peer.ip();
    let spid = params
        .iter()
        .find(|(name, _)| *name == "spid")
        .map(|(_, value)| value.to_owned())
        .unwrap_or_default();
    let folder_id = spid.parse::<FolderId>().ok();
    let folder = folder_id.and_then(|id| state.directory.folder(id));
    let peek = |response: &mut Response| {
        if let Some(folder) = &folder {
            add_quota_headers(response, state.limiter.peek(folder.id, class));
        }
    };

    if let Some(secs) = state.limiter.banned_for(ip) {
        state
            .metrics
            .add("segmart_rate_limited_total", "reason=\"ip_banned\"", 1);
        let mut response = ApiError::new(
            ErrorCode::IpBanned,
            format!("this address exceeded a rate limit and is refused for {secs} more seconds"),
        )
        .with_retry_after(secs)
        .into_response();
        peek(&mut response);
        return response;
    }

    let (client, permissions) = match authenticate(&state, request.headers()) {
        Ok(found) => found,
        Err(err) => {
            let mut response = err.into_response();
            peek(&mut response);
            return response;
        }
    };
    let Some(folder) = folder.clone() else {
        return ApiError::not_found(format!("segment provider {spid}")).into_response();
    };
    if folder.provider != client.provider {
        let mut response = ApiError::new(
            ErrorCode::ForeignResource,
            format!("segment provider {spid} belongs to another provider"),
        )
        .into_response();
        peek(&mut response);
        return response;
    }
    let quota = match state.limiter.hit(folder.id, class, ip) {
        Ok(quota) => quota,
        Err(quota) => {
            state
                .metrics
                .add("segmart_rate_limited_total", "reason=\"quota\"", 1);
            let api = match class {
                ApiClass::Segment => "segment API requests per day",
                ApiClass::Profile => "profile API requests per second",
            };
            let mut response = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "rate limit of {} {api} exceeded for segment provider {spid}; this address is refused for {} seconds",
                    quota.limit, state.settings.rate_limits.ban_secs
                ),
            )
            .with_retry_after(state.settings.rate_limits.ban_secs)
            .into_response();
            add_quota_headers(&mut response, quota);
            return response;
        }
    };
    request.extensions_mut().insert(FolderContext {
        folder,
        provider: client.provider,
        permissions,
    });
    let mut response = next.run(request).await;
    add_quota_headers(&mut response, quota);
    response
}
