//! The one place where errors become HTTP answers.
//!
//! Every error body has the same shape: `{"code", "type", "message"}` plus `field` when one
//! field is to blame and `unknownSegments` when segment ids were not found. The OAuth token
//! endpoint adds RFC 6749 §5.2's `error` and `error_description` to the same object.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segmart_domain::{ErrorCode, FieldError};
use segmart_storage::catalog::CatalogError;
use segmart_storage::profile::ProfileStoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub unknown_segments: Vec<String>,
    /// RFC 6749 §5.2 error code, only for the token endpoint.
    pub oauth_error: Option<&'static str>,
    /// Seconds the client should wait (429 answers).
    pub retry_after: Option<u64>,
    /// Per-item refusals of a profile batch of which nothing could be applied.
    pub rejected: Option<Box<serde_json::Value>>,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable error code, e.g. `invalid_request`.
    pub code: &'static str,
    /// Family of the code: `invalid_request`, `auth`, `rate_limit` or `internal`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Human explanation of what was wrong.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Segment ids the folder does not have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_segments: Vec<String>,
    /// RFC 6749 error code (token endpoint only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// RFC 6749 error description (token endpoint only).
    #[serde(rename = "error_description", skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Per-item refusals, when no item of a profile batch could be applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::profiles::RejectedItem>>)]
    pub rejected: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            unknown_segments: Vec::new(),
            oauth_error: None,
            retry_after: None,
            rejected: None,
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        ApiError {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..ApiError::new(ErrorCode::InvalidRequest, String::new())
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, format!("{} not found", what.into()))
    }

    pub fn internal(context: impl std::fmt::Display) -> Self {
        tracing::error!(error = %context, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            "internal error; the operator has the details in the log",
        )
    }

    pub fn oauth(code: ErrorCode, oauth_error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            oauth_error: Some(oauth_error),
            ..ApiError::new(code, message)
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.oauth_error {
            // RFC 6749 §5.2: invalid_client is 401, every other token error is 400.
            Some("invalid_client") => StatusCode::UNAUTHORIZED,
            Some(_) => StatusCode::BAD_REQUEST,
            None => StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.oauth_error.unwrap_or(self.code.as_str()),
            kind: self.code.kind(),
            message: self.message.clone(),
            field: self.field.clone(),
            unknown_segments: self.unknown_segments.clone(),
            error: self.oauth_error,
            error_description: self.oauth_error.map(|_| self.message.clone()),
            rejected: self.rejected.as_deref().cloned(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        ApiError::field(err.field, err.message)
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::NotFound(what) => ApiError::not_found(what),
            CatalogError::AlreadyExists(what) => {
                ApiError::new(ErrorCode::AlreadyExists, format!("{what} already exists"))
            }
            CatalogError::Invalid(field) => field.into(),
            CatalogError::Backend(why) => ApiError::internal(why),
        }
    }
}

impl From<ProfileStoreError> for ApiError {
    fn from(err: ProfileStoreError) -> Self {
        match err {
            ProfileStoreError::Saturated => ApiError::new(
                ErrorCode::Overloaded,
                "the profile write queue is full; nothing of this request was applied, retry shortly",
            )
            .with_retry_after(1),
            ProfileStoreError::ShuttingDown => ApiError::new(
                ErrorCode::Overloaded,
                "segmart is shutting down; nothing of this request was applied, retry shortly",
            )
            .with_retry_after(1),
            ProfileStoreError::Backend(why) => ApiError::internal(why),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED && self.oauth_error.is_none() {
            let challenge = match self.code {
                ErrorCode::MissingToken => "Bearer realm=\"segmart\"".to_string(),
                _ => format!(
                    "Bearer realm=\"segmart\", error=\"invalid_token\", error_description=\"{}\"",
                    self.message.replace('"', "'")
                ),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if self.code == ErrorCode::MissingPermission {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"segmart\", error=\"insufficient_scope\""),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
