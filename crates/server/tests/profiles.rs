//! The profile API, including every profile example of the sync API documentation.
mod common;

use common::*;
use reqwest::StatusCode;
use segmart_domain::IdType;
use serde_json::json;

async fn tenant_with_segments(server: &TestServer) -> Tenant {
    let t = server.tenant(IdType::Cookie).await;
    for (id, ttl) in [
        ("mysegment1", 60),
        ("mysegment2", 120),
        ("mysegment3", 43200),
        ("mysegment4", 43200),
        ("12345", 43200),
    ] {
        server.segment(&t, id, ttl).await;
    }
    t
}

#[tokio::test]
async fn seed_put_then_get_profile() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    let (status, stored) = server
        .put(
            &t.profile_path("profile123"),
            &t.token,
            json!({"segments": [{"id": "mysegment1"}, {"id": "mysegment2"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    let (status, got) = server.get(&t.profile_path("profile123"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], "profile123");
    assert_eq!(got["segmentProviderId"], t.folder.id.to_string());
    assert_eq!(segment_ids(&got), vec!["mysegment1", "mysegment2"]);
    // 2026-01-01T00:00:00Z + ttl 60 minutes.
    let expirations: Vec<&str> = got["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["expiration"].as_str().unwrap())
        .collect();
    assert!(expirations.contains(&"2026-01-01T01:00:00Z"), "{got}");
    assert!(expirations.contains(&"2026-01-01T02:00:00Z"), "{got}");

    // PUT replaces the list and resets TTLs.
    server.clock.advance_secs(600);
    let (status, _) = server
        .put(
            &t.profile_path("profile123"),
            &t.token,
            json!({"segments": [{"id": "mysegment1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = server.get(&t.profile_path("profile123"), &t.token).await;
    assert_eq!(segment_ids(&got), vec!["mysegment1"]);
    assert_eq!(got["segments"][0]["expiration"], "2026-01-01T01:10:00Z");
}

#[tokio::test]
async fn seed_batch_example_applies_each_operation() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    // Pre-existing state for the remove items.
    server
        .put(
            &t.profile_path("13579753"),
            &t.token,
            json!({"segments": [{"id": "mysegment1"}, {"id": "mysegment2"}, {"id": "mysegment3"}]}),
        )
        .await;
    server
        .put(
            &t.profile_path("264846264"),
            &t.token,
            json!({"segments": [{"id": "mysegment4"}, {"id": "mysegment3"}]}),
        )
        .await;
    let batch = json!([
        {"profileId": "123456789", "segmentIdsToSet": ["mysegment1", "mysegment2"]},
        {"profileId": "987654321", "segmentIdsToAdd": ["mysegment1", "mysegment3"]},
        {"profileId": "13579753", "segmentIdsToRemove": ["mysegment1", "mysegment2"]},
        {"profileId": "264846264", "segmentIdsToAdd": ["mysegment1", "mysegment2"], "segmentIdsToRemove": ["mysegment4"]}
    ]);
    let (status, outcome) = server.post(&t.profiles_path(), &t.token, batch).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["received"], 4);
    assert_eq!(outcome["applied"], 4);
    assert_eq!(outcome["rejected"], json!([]));
    let expect = [
        ("123456789", vec!["mysegment1", "mysegment2"]),
        ("987654321", vec!["mysegment1", "mysegment3"]),
        ("13579753", vec!["mysegment3"]),
        ("264846264", vec!["mysegment1", "mysegment2", "mysegment3"]),
    ];
    for (id, segments) in expect {
        let (status, got) = server.get(&t.profile_path(id), &t.token).await;
        assert_eq!(status, StatusCode::OK, "{id}");
        assert_eq!(segment_ids(&got), segments, "{id}");
    }
}

#[tokio::test]
async fn bad_items_are_refused_one_by_one_with_reasons() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    let batch = json!([
        {"profileId": "ok", "segmentIdsToAdd": ["mysegment1"]},
        {"profileId": "unknown", "segmentIdsToAdd": ["mysegment1", "nope", "nada"]},
        {"profileId": "noop"},
        {"profileId": "noop2", "removeAllSegments": false},
        {"segmentIdsToAdd": ["mysegment1"]},
        {"profileId": "both", "segmentIdsToAdd": ["mysegment1"], "segmentIdsToRemove": ["mysegment1"]},
        {"profileId": "wipe", "removeAllSegments": true}
    ]);
    let (status, outcome) = server.post(&t.profiles_path(), &t.token, batch).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["applied"], 2);
    let rejected = outcome["rejected"].as_array().unwrap();
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![1, 2, 3, 4, 5]);
    assert_eq!(rejected[0]["unknownSegments"], json!(["nada", "nope"]));
    assert_eq!(rejected[0]["profileId"], "unknown");
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .contains("no operation")
    );
    assert!(
        rejected[3]["reason"]
            .as_str()
            .unwrap()
            .contains("profileId")
    );
    // The unknown-segment item was refused whole: not even mysegment1 was added.
    let (status, _) = server.get(&t.profile_path("unknown"), &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get(&t.profile_path("ok"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_empty_and_oversized_batches() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    let (status, body) = server
        .post(&t.profiles_path(), &t.token, json!({"profileId": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "malformed_json");
    let (status, body) = server.post(&t.profiles_path(), &t.token, json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("empty"));
    let (status, body) = server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "x", "segmentIdsToAdd": "mysegment1"}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "[0].segmentIdsToAdd", "{body}");
    let (status, body) = server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "x", "segmentIdToAdd": ["a"]}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown field: {body}");

    let item = json!({"profileId": "p".repeat(100), "segmentIdsToAdd": vec!["mysegment1"; 20]});
    let items: Vec<_> = (0..4000).map(|_| item.clone()).collect();
    let big = serde_json::to_vec(&items).unwrap();
    assert!(big.len() > 1_048_576);
    let response = server
        .http
        .post(server.url(&t.profiles_path()))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn a_batch_of_almost_one_megabyte_is_accepted() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    let mut items = Vec::new();
    let mut size = 2;
    let mut i = 0;
    loop {
        let item = json!({"profileId": format!("user-{i:08}"), "segmentIdsToAdd": ["mysegment1", "mysegment3", "12345"]});
        let len = serde_json::to_vec(&item).unwrap().len() + 1;
        if size + len > 1_048_576 {
            break;
        }
        size += len;
        items.push(item);
        i += 1;
    }
    let (status, outcome) = server
        .post(&t.profiles_path(), &t.token, json!(items))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(outcome["applied"].as_u64().unwrap(), items.len() as u64);
    let (status, got) = server
        .get(&t.profile_path(&format!("user-{:08}", i - 1)), &t.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(segment_ids(&got), vec!["12345", "mysegment1", "mysegment3"]);
}

#[tokio::test]
async fn delete_and_remove_all() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    server
        .put(
            &t.profile_path("a"),
            &t.token,
            json!({"segments": [{"id": "mysegment1"}]}),
        )
        .await;
    let (status, _) = server.delete(&t.profile_path("a"), &t.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.get(&t.profile_path("a"), &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
    server
        .put(
            &t.profile_path("b"),
            &t.token,
            json!({"segments": [{"id": "mysegment1"}]}),
        )
        .await;
    server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "b", "removeAllSegments": true}]),
        )
        .await;
    // The profile stays known (it was just updated) but has no segment left.
    let (status, got) = server.get(&t.profile_path("b"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["segments"], json!([]));
}

#[tokio::test]
async fn profile_ids_are_case_sensitive_and_url_encoded_ids_work() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    server
        .put(
            &t.profile_path("User-A"),
            &t.token,
            json!({"segments": [{"id": "mysegment1"}]}),
        )
        .await;
    let (status, _) = server.get(&t.profile_path("user-a"), &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "a/b c", "segmentIdsToAdd": ["mysegment2"]}]),
        )
        .await;
    let (status, got) = server.get(&t.profile_path("a%2Fb%20c"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], "a/b c");
}

#[tokio::test]
async fn ip_folders_accept_only_well_formed_addresses() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Ip).await;
    server.segment(&t, "ctv", 60).await;
    let batch = json!([
        {"profileId": "202.124.87.3", "segmentIdsToAdd": ["ctv"]},
        {"profileId": "2001:DB8::1", "segmentIdsToAdd": ["ctv"]},
        {"profileId": "::ffff:202.124.87.3", "segmentIdsToAdd": ["ctv"]},
        {"profileId": "202.124.87", "segmentIdsToAdd": ["ctv"]},
        {"profileId": "10.0.0.0/8", "segmentIdsToAdd": ["ctv"]}
    ]);
    let (status, outcome) = server.post(&t.profiles_path(), &t.token, batch).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["applied"], 2);
    let rejected: Vec<u64> = outcome["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, vec![2, 3, 4]);
    // The canonical spelling finds the IPv6 profile.
    let (status, _) = server.get(&t.profile_path("2001:db8::1"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .put(
            &t.profile_path("::ffff:1.2.3.4"),
            &t.token,
            json!({"segments": [{"id": "ctv"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "profileId");
}

#[tokio::test]
async fn links_expire_exactly_at_their_ttl() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "u", "segmentIdsToAdd": ["mysegment1", "mysegment2"]}]),
        )
        .await;
    server.clock.advance_secs(3599);
    let token = server.fresh_token(&t).await;
    let (_, got) = server.get(&t.profile_path("u"), &token).await;
    assert_eq!(segment_ids(&got), vec!["mysegment1", "mysegment2"]);
    server.clock.advance_secs(1);
    let (_, got) = server.get(&t.profile_path("u"), &token).await;
    assert_eq!(
        segment_ids(&got),
        vec!["mysegment2"],
        "60-minute link gone at exactly 60 minutes"
    );
    // Re-adding refreshes the expiry.
    server
        .post(
            &t.profiles_path(),
            &token,
            json!([{"profileId": "u", "segmentIdsToAdd": ["mysegment2"]}]),
        )
        .await;
    server.clock.advance_secs(3600 + 1);
    let token = server.fresh_token(&t).await;
    let (_, got) = server.get(&t.profile_path("u"), &token).await;
    assert_eq!(segment_ids(&got), vec!["mysegment2"]);
}

#[tokio::test]
async fn profiles_without_update_for_14_days_are_gone() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "stale", "segmentIdsToAdd": ["mysegment3"]}]),
        )
        .await;
    server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "fresh", "segmentIdsToAdd": ["mysegment3"]}]),
        )
        .await;
    server.clock.advance_secs(7 * 86_400);
    let token = server.fresh_token(&t).await;
    server
        .post(
            &t.profiles_path(),
            &token,
            json!([{"profileId": "fresh", "segmentIdsToAdd": ["mysegment4"]}]),
        )
        .await;
    server.clock.advance_secs(7 * 86_400 - 1);
    let fresh_token = server.fresh_token(&t).await;
    let (status, _) = server.get(&t.profile_path("stale"), &fresh_token).await;
    assert_eq!(status, StatusCode::OK, "one second before 14 days");
    server.clock.advance_secs(1);
    let (status, _) = server.get(&t.profile_path("stale"), &fresh_token).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "14 days without update (links still had 16 days)"
    );
    let (status, _) = server.get(&t.profile_path("fresh"), &fresh_token).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn acknowledged_profiles_survive_a_restart() {
    let server = TestServer::start().await;
    let t = tenant_with_segments(&server).await;
    let items: Vec<_> = (0..500).map(|i| json!({"profileId": format!("p{i}"), "segmentIdsToAdd": ["mysegment3", "mysegment4"]})).collect();
    let (status, _) = server
        .post(&t.profiles_path(), &t.token, json!(items))
        .await;
    assert_eq!(status, StatusCode::OK);
    server.delete(&t.profile_path("p7"), &t.token).await;
    let (dir, clock) = server.stop().await;
    let server = TestServer::start_in(dir, Options::default(), Some(clock)).await;
    for i in [0, 250, 499] {
        let (status, got) = server
            .get(&t.profile_path(&format!("p{i}")), &t.token)
            .await;
        assert_eq!(status, StatusCode::OK, "token and profile survive restart");
        assert_eq!(segment_ids(&got), vec!["mysegment3", "mysegment4"]);
    }
    let (status, _) = server.get(&t.profile_path("p7"), &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
