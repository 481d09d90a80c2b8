//! Operator admin API, OpenAPI document, docs page, health and metrics.
mod common;

use common::*;
use reqwest::StatusCode;
use segmart_domain::IdType;
use serde_json::{Value, json};

#[tokio::test]
async fn operator_creates_a_tenant_over_http() {
    let server = TestServer::start().await;
    let op = OPERATOR_TOKEN;
    let (status, body) = server
        .post("/admin/providers", "wrong", json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "operator_only");
    let no_auth = server
        .http
        .get(server.url("/admin/providers"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), StatusCode::UNAUTHORIZED);

    let (status, provider) = server
        .post("/admin/providers", op, json!({"name": "Acme"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{provider}");
    let pid = provider["id"].as_str().unwrap();
    let (status, folder) = server
        .post(
            &format!("/admin/providers/{pid}/folders"),
            op,
            json!({"name": "ids", "idType": "extended_id", "vendor": "id5"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{folder}");
    assert_eq!(folder["idType"], "extended_id");
    assert_eq!(folder["vendor"], "id5");
    let (status, bad) = server
        .post(
            &format!("/admin/providers/{pid}/folders"),
            op,
            json!({"name": "x", "idType": "email"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["field"], "idType");
    let (status, client) = server
        .post(
            &format!("/admin/providers/{pid}/clients"),
            op,
            json!({"name": "sync", "permissions": ["dmp_profile"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{client}");
    let secret = client["clientSecret"].as_str().unwrap();
    let cid = client["clientId"].as_str().unwrap();
    let token = server.token(cid, secret, "dmp_profile").await;
    assert!(!token.is_empty());

    let (status, clients) = server
        .get(&format!("/admin/clients?provider={pid}"), op)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(clients.as_array().unwrap().len(), 1);
    assert!(
        clients[0].get("clientSecret").is_none(),
        "secrets are never listed"
    );
    let stored = server
        .state
        .catalog
        .get_client(cid.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.secret_hash.starts_with("$argon2id$") && !stored.secret_hash.contains(secret));

    let (status, rotated) = server
        .post(&format!("/admin/clients/{cid}/rotate"), op, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["clientSecret"], client["clientSecret"]);
    let (status, revoked) = server
        .post(&format!("/admin/clients/{cid}/revoke"), op, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revoked["revoked"], true);
    let (status, _) = server
        .post("/admin/clients/not-a-uuid/revoke", op, json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn openapi_lists_every_route_and_docs_work_offline() {
    let server = TestServer::start().await;
    let spec: Value = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/oauth2/token",
        "/segmentproviders/{spid}/segments",
        "/segmentproviders/{spid}/segments/{id}",
        "/segmentproviders/{spid}/profiles",
        "/segmentproviders/{spid}/profiles/{profileId}",
        "/admin/providers",
        "/admin/clients/{client}/revoke",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let docs = server.http.get(server.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "docs page is Swagger UI");
    assert!(
        !html.contains("https://"),
        "no asset comes from the internet"
    );
    let script = server
        .http
        .get(server.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.status(),
        StatusCode::OK,
        "assets are served by segmart itself"
    );
}

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let health: Value = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    server.get(&t.segments_path(), &t.token).await;
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("segmart_http_requests_total{route=\"/segmentproviders/{spid}/segments\",method=\"GET\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("segmart_profiles "));
    assert!(metrics.contains("segmart_tokens_issued_total"));
    let (status, body) = server.get("/nowhere", "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "invalid_request");
    let response = server
        .http
        .delete(server.url(&t.segments_path()))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}
