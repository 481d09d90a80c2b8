//! Request bodies: size limits and JSON errors in segmart's error shape, naming where the body
//! went wrong (path, line and column).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use segmart_domain::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Default limit for small JSON bodies (segments, admin calls).
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body exceeds the limit of {limit} bytes"),
            )
        })
}

/// Parses JSON, naming the path of the offending value.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    // Fast path: plain parsing. Only a body that fails is parsed again, tracking the path, to
    // say where it went wrong.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|err| json_error_plain(&err))?;
    Ok(value)
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.inner();
    let message = format!(
        "invalid JSON body at line {} column {}: {}",
        inner.line(),
        inner.column(),
        inner
    );
    let mut api = ApiError::new(ErrorCode::MalformedJson, message);
    if path != "." {
        api.field = Some(path);
    }
    api
}

fn json_error_plain(err: &serde_json::Error) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedJson,
        format!(
            "invalid JSON body at line {} column {}: {err}",
            err.line(),
            err.column()
        ),
    )
}

/// Extractor: a JSON body of at most [`SMALL_BODY_BYTES`].
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, SMALL_BODY_BYTES).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Extractor: query parameters, with errors in segmart's shape.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|err| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("invalid query string: {err}"),
                )
            })
    }
}
