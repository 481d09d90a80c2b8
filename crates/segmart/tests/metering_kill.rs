//! A usage event the server acknowledged survives `kill -9`, and none is counted twice.
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{ServeOptions, Server};
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WRITERS: usize = 4;
const BATCH: usize = 250;
/// Events to see acknowledged before pulling the plug.
const ACKNOWLEDGED_BEFORE_KILL: usize = 20_000;

struct Demo {
    bidder_token: String,
    buyer_id: i64,
    segment: u64,
    operator_token: String,
}

async fn demo(server: &Server) -> Demo {
    let text = std::fs::read_to_string(server.data_dir.join("demo.json")).unwrap();
    let demo: Value = serde_json::from_str(&text).unwrap();
    let client = common::Client {
        client_id: demo["client_id"].as_str().unwrap().to_owned(),
        client_secret: demo["client_secret"].as_str().unwrap().to_owned(),
    };
    let api = server
        .api(&client, demo["segment_provider_id"].as_str().unwrap())
        .await;
    let segment = api
        .list_segments()
        .await
        .into_iter()
        .find(|s| s["segmentId"] == "sports-fans")
        .expect("the demo's mapped segment")["id"]
        .as_u64()
        .unwrap();
    Demo {
        bidder_token: demo["bidder_token"].as_str().unwrap().to_owned(),
        buyer_id: demo["buyer_id"].as_i64().unwrap(),
        segment,
        operator_token: std::fs::read_to_string(server.data_dir.join("operator.token"))
            .unwrap()
            .trim()
            .to_owned(),
    }
}

fn batch(writer: usize, n: usize, demo: &Demo) -> (Vec<String>, Value) {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let ids: Vec<String> = (0..BATCH).map(|i| format!("w{writer}-b{n}-{i}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"impressionId": id, "time": now, "buyerId": demo.buyer_id, "campaignId": 1,
                   "mediaCost": 0.002, "mediaCurrency": "USD", "segments": [demo.segment]})
        })
        .collect();
    (ids, json!({ "events": events }))
}

async fn total_impressions(server: &Server, operator: &str) -> u64 {
    let report: Value = server
        .http
        .get(server.url("/usage"))
        .bearer_auth(operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    report["totals"]["impressions"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_usage_survives_kill_nine_and_counts_once() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let server = Server::start_with(&data_dir, ServeOptions::demo()).await;
    let demo = Arc::new(demo(&server).await);
    let url = server.url("/bidder/usage");
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let sent = Arc::new(Mutex::new(Vec::<Value>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (demo, url, acknowledged, sent, stop) = (
            demo.clone(),
            url.clone(),
            acknowledged.clone(),
            sent.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let http = common::http_client();
            // Bounded: stops by itself even if the server never dies.
            for n in 0..2_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let (ids, body) = batch(writer, n, &demo);
                sent.lock().push(body.clone());
                let answer = http
                    .post(&url)
                    .bearer_auth(&demo.bidder_token)
                    .json(&body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        assert_eq!(v["recorded"], BATCH, "{v}");
                        acknowledged.lock().extend(ids);
                    }
                    // Saturation is an honest refusal: nothing of it counts.
                    Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {}
                    Ok(r) => panic!("unexpected answer {}", r.status()),
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().len() < ACKNOWLEDGED_BEFORE_KILL {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too few events acknowledged"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_nine();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().clone();
    let sent = sent.lock().clone();

    let server = Server::start(&data_dir).await;
    let before = total_impressions(&server, &demo.operator_token).await;
    assert!(
        before >= acknowledged.len() as u64,
        "{before} recorded < {} acknowledged",
        acknowledged.len()
    );
    // Everything acknowledged is in the ledger with its charge.
    for id in acknowledged.iter().step_by(997) {
        let record: Value = server
            .http
            .get(server.url(&format!("/usage/impressions/{id}")))
            .bearer_auth(&demo.operator_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(record["charges"][0]["status"], "charged", "{id}: {record}");
    }
    // Resending every batch ever sent: acknowledged ones are all duplicates, and the ledger
    // ends with each impression exactly once.
    let http = common::http_client();
    let mut distinct = BTreeSet::new();
    for body in &sent {
        let answer: Value = http
            .post(server.url("/bidder/usage"))
            .bearer_auth(&demo.bidder_token)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for event in answer["events"].as_array().unwrap() {
            let id = event["impressionId"].as_str().unwrap().to_owned();
            if acknowledged.contains(&id) {
                assert_eq!(event["status"], "duplicate", "{id} was acknowledged before");
            }
            distinct.insert(id);
        }
    }
    let after = total_impressions(&server, &demo.operator_token).await;
    assert_eq!(
        after,
        distinct.len() as u64,
        "every impression exactly once"
    );
}
