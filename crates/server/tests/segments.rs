//! The segment API, including every segment example of the sync API documentation.
mod common;

use common::*;
use reqwest::StatusCode;
use segmart_domain::IdType;
use serde_json::json;

#[tokio::test]
async fn seed_post_put_get_examples() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    // POST example (the documented body has no segmentId: segmart assigns one).
    let (status, created) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({
                "name": "Segment example", "ttl": 43200, "price": 2.5,
                "description": "This is my segment", "active": true
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["segmentProviderId"], t.folder.id.to_string());
    assert_eq!(created["name"], "Segment example");
    assert_eq!(created["ttl"], 43200);
    assert_eq!(created["price"], 2.5);
    assert_eq!(created["active"], true);
    assert!(created["segmentId"].as_str().unwrap().len() == 36);
    assert!(created["id"].as_u64().unwrap() > 0);
    assert_eq!(created["creationDate"], server.clock_ms());

    // PUT example on a provider-chosen id creates, then replaces.
    let path = format!("{}/segmentexample", t.segments_path());
    let body = json!({"name": "Segment example", "ttl": 43200, "price": 2.5, "description": "This is my segment", "active": true});
    let (status, first) = server.put(&path, &t.token, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    server.clock.advance_secs(10);
    let (status, second) = server
        .put(&path, &t.token, json!({"name": "Renamed", "ttl": 60}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["id"], first["id"], "the platform id is stable");
    assert_eq!(
        second["creationDate"], first["creationDate"],
        "creation date kept"
    );
    assert_eq!(
        second["price"], 0.0,
        "PUT replaces: absent fields take their defaults"
    );

    // GET example.
    let (status, got) = server.get(&path, &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["segmentId"], "segmentexample");
    assert_eq!(got["name"], "Renamed");
    assert_eq!(got["ttl"], 60);
    assert_eq!(got["selectable"], true);
}

impl TestServer {
    fn clock_ms(&self) -> i64 {
        use segmart_domain::Clock;
        self.clock.now().millis()
    }
}

#[tokio::test]
async fn each_invalid_field_gets_a_400_naming_it() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let cases = [
        (json!({"segmentId": "a", "ttl": 10}), "name"),
        (json!({"segmentId": "a", "name": "x", "ttl": 0}), "ttl"),
        (
            json!({"segmentId": "a", "name": "x", "ttl": 2147483648u64}),
            "ttl",
        ),
        (json!({"segmentId": "a", "name": "x", "price": -1}), "price"),
        (json!({"segmentId": "a", "name": "n".repeat(256)}), "name"),
        (
            json!({"segmentId": "a", "name": "x", "description": "d".repeat(1001)}),
            "description",
        ),
        (
            json!({"segmentId": "s".repeat(101), "name": "x"}),
            "segmentId",
        ),
        (json!({"segmentId": "a,b", "name": "x"}), "segmentId"),
        (
            json!({"segmentId": "a", "name": "x", "selectable": 2}),
            "selectable",
        ),
        (
            json!({"segmentId": "a", "name": "x", "parentSegmentId": "missing"}),
            "parentSegmentId",
        ),
        (json!({"segmentId": "a", "name": "x", "tll": 5}), "tll"),
        (json!({"segmentId": "a", "name": "x", "ttl": "ten"}), "ttl"),
    ];
    for (body, field) in cases {
        let (status, answer) = server
            .post(&t.segments_path(), &t.token, body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert!(
            answer["field"].as_str().unwrap_or_default().contains(field)
                || answer["message"].as_str().unwrap().contains(field),
            "{body} → {answer}"
        );
        assert!(answer["message"].as_str().unwrap().len() > 5);
    }
    let response = server
        .http
        .post(server.url(&t.segments_path()))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "malformed_json");
    assert!(body["message"].as_str().unwrap().contains("line 1"));
}

#[tokio::test]
async fn ttl_bounds_and_boolean_forms_are_accepted() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let (status, a) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({"segmentId": "max", "name": "x", "ttl": 2147483647u32, "selectable": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(a["ttl"], 2147483647u32);
    let (status, b) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({"segmentId": "min", "name": "x", "ttl": 1, "selectable": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(b["selectable"], false);
    let (_, defaults) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({"segmentId": "d", "name": "x"}),
        )
        .await;
    assert_eq!(defaults["ttl"], 43200);
    assert_eq!(defaults["active"], true);
}

#[tokio::test]
async fn duplicate_ids_conflict_and_ids_are_case_sensitive() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    server.segment(&t, "Sports", 60).await;
    let (status, body) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({"segmentId": "Sports", "name": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "already_exists");
    server.segment(&t, "sports", 60).await;
    let (status, _) = server
        .get(&format!("{}/SPORTS", t.segments_path()), &t.token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hierarchy_uses_parents_in_the_same_folder_without_cycles() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let (status, _) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({"segmentId": "root", "name": "Root", "selectable": false}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, child) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({"segmentId": "child", "name": "Child", "parentSegmentId": "root"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(child["parentSegmentId"], "root");
    let (status, body) = server
        .put(
            &format!("{}/root", t.segments_path()),
            &t.token,
            json!({"name": "Root", "parentSegmentId": "child"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "cycle: {body}");
    assert_eq!(body["field"], "parentSegmentId");
    // Profiles cannot join a hierarchy-only node.
    let (status, body) = server
        .post(
            &t.profiles_path(),
            &t.token,
            json!([{"profileId": "u", "segmentIdsToAdd": ["root"]}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not selectable")
    );
}

#[tokio::test]
async fn list_is_paginated_by_cursor() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    for i in 0..7 {
        server.segment(&t, &format!("seg-{i}"), 60).await;
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(after) => format!("{}?limit=3&after={after}", t.segments_path()),
            None => format!("{}?limit=3", t.segments_path()),
        };
        let (status, page) = server.get(&path, &t.token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 7);
        for s in page["segments"].as_array().unwrap() {
            seen.push(s["segmentId"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("seg-{i}")).collect::<Vec<_>>());
    let (status, body) = server
        .get(&format!("{}?limit=0", t.segments_path()), &t.token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "limit");
    let (status, _) = server
        .get(&format!("{}?limit=abc", t.segments_path()), &t.token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
