//! Rate limits per folder, their headers, and the refusal of the offending address.
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use segmart_domain::IdType;
use segmart_server::ratelimit::RateLimitSettings;
use serde_json::json;

fn options(segment_per_day: u32, profile_per_second: u32) -> Options {
    Options {
        rate_limits: RateLimitSettings {
            segment_requests_per_day: segment_per_day,
            profile_requests_per_second: profile_per_second,
            ban_secs: 300,
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn every_folder_answer_carries_the_three_headers() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let (status, headers, _) = server
        .send(Method::GET, &t.segments_path(), &t.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-ratelimit-limit"], "1000");
    assert_eq!(headers["x-ratelimit-remaining"], "999");
    assert!(
        headers["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 86_400
    );
    let (status, headers, _) = server
        .send(Method::GET, &t.profile_path("nobody"), &t.token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-ratelimit-limit"], "1000");
    assert_eq!(headers["x-ratelimit-remaining"], "999");
    assert_eq!(headers["x-ratelimit-reset"], "1");
    // Refused requests still say where the quota stands.
    let (status, headers, _) = server
        .send(Method::GET, &t.segments_path(), "bad-token", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers["x-ratelimit-remaining"], "999",
        "unauthenticated requests do not spend the quota"
    );
}

#[tokio::test]
async fn exceeding_the_profile_limit_refuses_the_address_for_five_minutes() {
    let server = TestServer::start_with(options(1000, 3)).await;
    let t = server.tenant(IdType::Cookie).await;
    server.segment(&t, "s", 60).await;
    let batch = json!([{"profileId": "u", "segmentIdsToAdd": ["s"]}]);
    for remaining in [2, 1, 0] {
        let (status, headers, _) = server
            .send(
                Method::POST,
                &t.profiles_path(),
                &t.token,
                Some(batch.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let (status, headers, body) = server
        .send(
            Method::POST,
            &t.profiles_path(),
            &t.token,
            Some(batch.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(headers["retry-after"], "300");
    // The next second has quota again, but the address stays refused for 5 minutes,
    // for every API.
    server.clock.advance_secs(1);
    let (status, headers, body) = server
        .send(Method::GET, &t.segments_path(), &t.token, None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "ip_banned");
    assert_eq!(headers["retry-after"], "299");
    server.clock.advance_secs(299);
    let token = server.fresh_token(&t).await;
    let (status, _, _) = server
        .send(Method::POST, &t.profiles_path(), &token, Some(batch))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_segment_limit_is_per_day_and_per_folder() {
    let server = TestServer::start_with(options(2, 1000)).await;
    let a = server.tenant(IdType::Cookie).await;
    let b = server.tenant(IdType::Cookie).await;
    for _ in 0..2 {
        let (status, _) = server.get(&a.segments_path(), &a.token).await;
        assert_eq!(status, StatusCode::OK);
    }
    // B's folder has its own quota — but the address is what gets refused.
    let (status, _) = server.get(&b.segments_path(), &b.token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.get(&a.segments_path(), &a.token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}
