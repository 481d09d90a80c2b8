//! OAuth2 client credentials (RFC 6749 §4.4, §5.2) and bearer tokens (RFC 6750).
mod common;

use common::*;
use reqwest::StatusCode;
use segmart_domain::{IdType, PermissionSet};
use serde_json::Value;

#[tokio::test]
async fn seed_token_request_gets_a_bearer_token_for_3599_seconds() {
    let server = TestServer::start().await;
    let tenant = server.tenant(IdType::Cookie).await;
    let response = server
        .token_response(
            &tenant.client_id,
            &tenant.client_secret,
            "dmp_profile_read,dmp_profile,dmp_segment_read,dmp_segment",
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["access_token"].as_str().unwrap().len() > 40);
}

async fn token_error(server: &TestServer, body: &str) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.url("/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn token_errors_follow_rfc_6749() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let entity = server.target_entity();
    let cases = [
        (
            format!(
                "grant_type=client_credentials&client_id={}&client_secret=wrong&scope=target-entity:{entity}:dmp_profile",
                t.client_id
            ),
            401,
            "invalid_client",
        ),
        (
            format!(
                "grant_type=client_credentials&client_id=11111111-2222-3333-4444-555555555555&client_secret=abc_123_def&scope=target-entity:{entity}:dmp_profile"
            ),
            401,
            "invalid_client",
        ),
        (
            format!(
                "grant_type=password&client_id={}&client_secret={}&scope=target-entity:{entity}:dmp_profile",
                t.client_id, t.client_secret
            ),
            400,
            "unsupported_grant_type",
        ),
        (
            format!(
                "client_id={}&client_secret={}",
                t.client_id, t.client_secret
            ),
            400,
            "invalid_request",
        ),
        (
            format!(
                "grant_type=client_credentials&client_id={}&client_secret={}",
                t.client_id, t.client_secret
            ),
            400,
            "invalid_scope",
        ),
        (
            format!(
                "grant_type=client_credentials&client_id={}&client_secret={}&scope=target-entity:232d959c-7786-4d47-8418-48a847c52cfa:dmp_profile",
                t.client_id, t.client_secret
            ),
            400,
            "invalid_scope",
        ),
        (
            format!(
                "grant_type=client_credentials&client_id={}&client_secret={}&scope=target-entity:{entity}:dmp_admin",
                t.client_id, t.client_secret
            ),
            400,
            "invalid_scope",
        ),
    ];
    for (body, status, error) in cases {
        let (got_status, got) = token_error(&server, &body).await;
        assert_eq!(got_status.as_u16(), status, "{body} → {got}");
        assert_eq!(got["error"], error, "{body} → {got}");
        assert!(
            got["error_description"]
                .as_str()
                .is_some_and(|d| d.len() > 10),
            "{body} → {got}"
        );
        assert_eq!(got["message"], got["error_description"]);
    }
}

#[tokio::test]
async fn a_client_cannot_request_permissions_it_does_not_hold() {
    let server = TestServer::start().await;
    let read_only = PermissionSet::parse_list("dmp_profile_read,dmp_segment_read").unwrap();
    let t = server.tenant_with(IdType::Cookie, read_only).await;
    let response = server
        .token_response(&t.client_id, &t.client_secret, "dmp_profile")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("dmp_profile")
    );
}

#[tokio::test]
async fn http_basic_client_authentication_is_accepted() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let response = server
        .http
        .post(server.url("/oauth2/token"))
        .basic_auth(&t.client_id, Some(&t.client_secret))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "scope",
                &format!("target-entity:{}:dmp_segment_read", server.target_entity()),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn requests_without_or_with_bad_tokens_get_401() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let no_token = server
        .http
        .get(server.url(&t.segments_path()))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert!(
        no_token.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: Value = no_token.json().await.unwrap();
    assert_eq!(body["code"], "missing_token");

    let (status, body) = server.get(&t.segments_path(), "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "invalid_token");
}

#[tokio::test]
async fn tokens_expire_after_3599_seconds() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    server.clock.advance_secs(3598);
    let (status, _) = server.get(&t.segments_path(), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    server.clock.advance_secs(1);
    let (status, body) = server.get(&t.segments_path(), &t.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "expired_token");
}

#[tokio::test]
async fn rotating_or_revoking_a_client_invalidates_its_tokens() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let client_id = t.client_id.parse().unwrap();
    let rotated = segmart_server::ops::rotate_client(server.state.catalog.as_ref(), client_id)
        .await
        .unwrap();
    server.state.directory.put_client(rotated.client.clone());
    let (status, _) = server.get(&t.segments_path(), &t.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "old token after rotation");
    let old_secret = server
        .token_response(&t.client_id, &t.client_secret, "dmp_segment_read")
        .await;
    assert_eq!(
        old_secret.status(),
        StatusCode::UNAUTHORIZED,
        "old secret after rotation"
    );
    let fresh = server
        .token(&t.client_id, &rotated.secret, "dmp_segment_read")
        .await;
    let (status, _) = server.get(&t.segments_path(), &fresh).await;
    assert_eq!(status, StatusCode::OK);

    let revoked = segmart_server::ops::revoke_client(server.state.catalog.as_ref(), client_id)
        .await
        .unwrap();
    server.state.directory.put_client(revoked);
    let (status, _) = server.get(&t.segments_path(), &fresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "token of a revoked client"
    );
    let response = server
        .token_response(&t.client_id, &rotated.secret, "dmp_segment_read")
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn permissions_and_providers_are_enforced_with_403() {
    let server = TestServer::start().await;
    let profile_only = PermissionSet::parse_list("dmp_profile_read,dmp_profile").unwrap();
    let a = server.tenant_with(IdType::Cookie, profile_only).await;
    let b = server.tenant(IdType::Cookie).await;

    let (status, body) = server.get(&a.segments_path(), &a.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "missing_permission");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("dmp_segment_read")
    );

    // B's full token cannot touch A's folder, in any API.
    for path in [
        a.segments_path(),
        a.profile_path("u1"),
        format!("{}/x", a.segments_path()),
    ] {
        let (status, body) = server.get(&path, &b.token).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["code"], "foreign_resource");
    }
    let (status, _) = server
        .post(
            &a.profiles_path(),
            &b.token,
            serde_json::json!([{"profileId": "u", "removeAllSegments": true}]),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = server
        .get(
            "/segmentproviders/8A254C22-0213-4059-A9BE-05D76DF01C47/segments",
            &b.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
}
