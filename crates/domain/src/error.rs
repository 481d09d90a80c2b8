//! The closed catalogue of error codes.
//!
//! Every error a client can see has exactly one [`ErrorCode`]; the code decides the HTTP status
//! (as a plain number: this crate knows no HTTP types) and the stable machine-readable name.
//! The mapping lives here and nowhere else.

use std::fmt;

/// Every error code segmart answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request body or a parameter is malformed or violates a limit.
    InvalidRequest,
    /// The request body is not valid JSON / not the expected shape.
    MalformedJson,
    /// The body exceeds the size limit of the endpoint.
    PayloadTooLarge,
    /// No bearer token was sent.
    MissingToken,
    /// The bearer token is not one segmart issued, or was revoked.
    InvalidToken,
    /// The bearer token was valid but its lifetime is over.
    ExpiredToken,
    /// The token lacks the permission the operation needs.
    MissingPermission,
    /// The resource belongs to another tenant.
    ForeignResource,
    /// The operator credential is missing or wrong.
    OperatorOnly,
    /// A user name and password that do not match (`POST /auth`).
    BadCredentials,
    /// The caller is signed in but its role may not do this (e.g. a buyer on a provider API).
    WrongRole,
    /// The resource does not exist (or the URL is malformed).
    NotFound,
    /// The resource exists but not with this HTTP method.
    MethodNotAllowed,
    /// The resource already exists.
    AlreadyExists,
    /// The per-folder rate limit was exceeded.
    RateLimited,
    /// The source IP is temporarily refused after exceeding a rate limit.
    IpBanned,
    /// The write path is saturated; retry later, nothing was accepted.
    Overloaded,
    /// Something unexpected failed inside segmart.
    Internal,
}

impl ErrorCode {
    /// All codes, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidRequest,
        ErrorCode::MalformedJson,
        ErrorCode::PayloadTooLarge,
        ErrorCode::MissingToken,
        ErrorCode::InvalidToken,
        ErrorCode::ExpiredToken,
        ErrorCode::MissingPermission,
        ErrorCode::ForeignResource,
        ErrorCode::OperatorOnly,
        ErrorCode::BadCredentials,
        ErrorCode::WrongRole,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::AlreadyExists,
        ErrorCode::RateLimited,
        ErrorCode::IpBanned,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
    ];

    /// The HTTP status this code is answered with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::MalformedJson => 400,
            ErrorCode::MissingToken | ErrorCode::InvalidToken | ErrorCode::ExpiredToken => 401,
            ErrorCode::OperatorOnly | ErrorCode::BadCredentials => 401,
            ErrorCode::MissingPermission | ErrorCode::ForeignResource | ErrorCode::WrongRole => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::IpBanned | ErrorCode::Overloaded => 429,
            ErrorCode::Internal => 500,
        }
    }

    /// The stable snake_case name clients match on.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::MissingPermission => "missing_permission",
            ErrorCode::ForeignResource => "foreign_resource",
            ErrorCode::OperatorOnly => "operator_only",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::WrongRole => "wrong_role",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::IpBanned => "ip_banned",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
        }
    }

    /// The broad family the code belongs to (`type` in the error body).
    pub const fn kind(self) -> &'static str {
        match self.http_status() {
            400 | 404 | 405 | 409 | 413 => "invalid_request",
            401 | 403 => "auth",
            429 => "rate_limit",
            _ => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validation failure that names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the field, e.g. `ttl` or `[3].segmentIdsToAdd[0]`.
    pub field: String,
    /// Lowercase human explanation without trailing punctuation.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_has_a_unique_name_and_an_error_status() {
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::Overloaded.http_status(), 429);
        assert_eq!(ErrorCode::ForeignResource.http_status(), 403);
        assert_eq!(ErrorCode::ExpiredToken.http_status(), 401);
    }
}
