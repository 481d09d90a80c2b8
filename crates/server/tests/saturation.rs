//! A saturated write path answers 429 and never loses what it acknowledged.
mod common;

use common::*;
use reqwest::StatusCode;
use segmart_domain::IdType;
use serde_json::json;

#[tokio::test]
async fn a_full_write_queue_answers_429_and_applies_nothing_of_the_refused_batches() {
    let server = TestServer::start_with(Options {
        queue_capacity: 1,
        ..Options::default()
    })
    .await;
    let t = server.tenant(IdType::Cookie).await;
    server.segment(&t, "s", 60).await;
    // Many batches at once: the writer commits each group with an fdatasync, far slower than
    // the requests arrive, so a one-batch queue overflows.
    let requests = (0..200).map(|i| {
        let http = server.http.clone();
        let url = server.url(&t.profiles_path());
        let token = t.token.clone();
        tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&json!([{"profileId": format!("user-{i}"), "segmentIdsToAdd": ["s"]}]))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: serde_json::Value = response.json().await.unwrap();
            (i, status, retry_after, body)
        })
    });
    let mut refused = 0;
    for handle in requests.collect::<Vec<_>>() {
        let (i, status, retry_after, body) = handle.await.unwrap();
        let (read_status, _) = server
            .get(&t.profile_path(&format!("user-{i}")), &t.token)
            .await;
        match status {
            StatusCode::OK => assert_eq!(
                read_status,
                StatusCode::OK,
                "acknowledged batch {i} is stored"
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(body["code"], "overloaded", "{body}");
                assert!(retry_after.is_some());
                assert_eq!(
                    read_status,
                    StatusCode::NOT_FOUND,
                    "refused batch {i} was not applied"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "the write queue never filled");
}
