//! Stopping the server with SIGTERM or SIGINT: requests in flight finish, everything acknowledged
//! is on disk, and the process exits 0.
mod common;

use std::time::Duration;

use common::load::{Load, SEGMENTS, Workload, verify};
use common::{Server, create_tenant};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_zero_and_keeps_every_acknowledged_write() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let server = Server::start(&data_dir).await;
    let tenant = create_tenant(&data_dir, "Tidy DMP");
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    for segment in SEGMENTS {
        api.create_segment(segment, 43_200).await;
    }

    let load = Load::start(
        &api,
        Workload {
            writers: 8,
            batch_size: 200,
        },
    );
    load.wait_for_acknowledged(200, Duration::from_secs(45))
        .await;
    let stopped = server.terminate().await;
    let ledger = load.finish().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("every acknowledged write is on disk"),
        "the log confirms the flush:\n{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("ERROR"),
        "a clean shutdown logs no error:\n{}",
        stopped.stderr
    );
    assert!(
        ledger.refused.is_empty(),
        "requests that reached the server before the signal are answered, not refused: {:?}",
        ledger
            .refused
            .iter()
            .map(|(b, s, a)| (b.writer, b.seq, s, a))
            .collect::<Vec<_>>()
    );

    let server = Server::start(&data_dir).await;
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    let verified = verify(&server, &api, &ledger).await;
    assert!(verified.acknowledged_profiles >= 200 * 200);
    eprintln!("{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero_and_keeps_the_last_write() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let server = Server::start(&data_dir).await;
    let tenant = create_tenant(&data_dir, "Interrupted DMP");
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    api.create_segment("sports", 43_200).await;
    let (status, written) = api.put_profile("user-1", &["sports"]).await;
    assert_eq!(status, StatusCode::OK, "{written}");

    let stopped = server.stop_with(libc::SIGINT).await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("every acknowledged write is on disk"),
        "{}",
        stopped.stderr
    );

    let server = Server::start(&data_dir).await;
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    assert_eq!(api.get_profile("user-1").await, Some(written));
}
