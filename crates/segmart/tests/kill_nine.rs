//! A write the server answered 2xx survives `kill -9` of the server process.
mod common;

use std::path::Path;
use std::time::Duration;

use common::load::{Ledger, Load, SEGMENTS, Verified, Workload, verify};
use common::{ServeOptions, Server, create_tenant};
use reqwest::StatusCode;

/// Batches to see acknowledged before pulling the plug.
const ACKNOWLEDGED_BEFORE_KILL: usize = 300;

const WORKLOAD: Workload = Workload {
    writers: 8,
    batch_size: 200,
};

/// Loads a fresh server, kills it with SIGKILL while the writers are still sending, restarts it
/// on the same data directory and checks every profile against what was acknowledged.
async fn kill_nine_in_the_middle_of_a_load(data_dir: &Path, options: ServeOptions) -> Verified {
    let server = Server::start_with(data_dir, options.clone()).await;
    let tenant = create_tenant(data_dir, "Durable DMP");
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    for segment in SEGMENTS {
        api.create_segment(segment, 43_200).await;
    }

    let load = Load::start(&api, WORKLOAD);
    load.wait_for_acknowledged(ACKNOWLEDGED_BEFORE_KILL, Duration::from_secs(45))
        .await;
    // The writers are still sending: the kill lands on batches in every stage of their way.
    server.kill_nine();
    let ledger: Ledger = load.finish().await;
    assert!(
        ledger.refused.is_empty(),
        "no batch should be refused under this load: {:?}",
        ledger
            .refused
            .iter()
            .map(|(b, s, a)| (b.writer, b.seq, s, a))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ledger.in_flight.len(),
        WORKLOAD.writers,
        "every writer was cut off by the kill"
    );

    let server = Server::start_with(data_dir, options).await;
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    let verified = verify(&server, &api, &ledger).await;
    assert!(verified.acknowledged_profiles >= ACKNOWLEDGED_BEFORE_KILL * WORKLOAD.batch_size);
    verified
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_batches_survive_kill_nine_in_the_middle_of_a_load() {
    let work = tempfile::tempdir().unwrap();
    let verified =
        kill_nine_in_the_middle_of_a_load(&work.path().join("data"), ServeOptions::default()).await;
    eprintln!("{verified:?}");
}

/// The same with snapshots taken all along, so the kill can land during a snapshot and recovery
/// combines a snapshot with the log written after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_batches_survive_kill_nine_while_snapshots_are_written() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let options = ServeOptions {
        env: vec![(
            "SEGMART_PROFILES__SNAPSHOT_AFTER_WAL_BYTES".into(),
            (256 * 1024).to_string(),
        )],
        ..ServeOptions::default()
    };
    let verified = kill_nine_in_the_middle_of_a_load(&data_dir, options).await;
    let snapshots = std::fs::read_dir(data_dir.join("profiles"))
        .expect("the profile store directory")
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("snapshot-")
        })
        .count();
    assert!(snapshots > 0, "the load wrote snapshots");
    eprintln!("{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_acknowledged_write_survives_kill_nine_right_after_its_answer() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let server = Server::start(&data_dir).await;
    let tenant = create_tenant(&data_dir, "Careful DMP");
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    api.create_segment("sports", 43_200).await;
    api.create_segment("travel", 1_440).await;
    api.create_segment("auto", 60).await;

    let (status, _) = api.put_profile("user-1", &["sports", "travel"]).await;
    assert_eq!(status, StatusCode::OK);
    // A replacement, not a creation: the update itself must be durable.
    let (status, written) = api.put_profile("user-1", &["auto", "travel"]).await;
    assert_eq!(status, StatusCode::OK, "{written}");
    server.kill_nine();

    let server = Server::start(&data_dir).await;
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    let found = api
        .get_profile("user-1")
        .await
        .expect("the acknowledged profile exists after kill -9");
    assert_eq!(
        found, written,
        "same segments and expirations as acknowledged"
    );

    assert_eq!(api.delete_profile("user-1").await, StatusCode::NO_CONTENT);
    server.kill_nine();

    let server = Server::start(&data_dir).await;
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    assert_eq!(
        api.get_profile("user-1").await,
        None,
        "an acknowledged delete survives kill -9"
    );
}
