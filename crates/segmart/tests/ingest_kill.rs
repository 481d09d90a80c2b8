//! `kill -9` in the middle of a batch file, then a restart: the file is redone from its first
//! line with the same apply time, so no line is lost and none takes effect twice.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ServeOptions, Server, admin_json, create_client};
use reqwest::StatusCode;
use serde_json::Value;

const USERS: usize = 40_000;
const ROUNDS: usize = 10;
const SEGMENTS: usize = 12;
const TTL_MINUTES: u64 = 60;

/// Line `n` (0-based after the header) of the test file: user `n % USERS` in round
/// `n / USERS` adds two segments and removes one, so the final state depends on every line and
/// on their order.
fn line(n: usize) -> (String, [usize; 2], usize) {
    let user = n % USERS;
    let round = n / USERS;
    let add = [
        (user + round) % SEGMENTS,
        (user * 7 + round * 3 + 1) % SEGMENTS,
    ];
    let remove = (user + round * 5 + 2) % SEGMENTS;
    (format!("kill-user-{user}"), add, remove)
}

/// The segments each user ends with, applying the lines in order.
fn expected() -> BTreeMap<String, Vec<String>> {
    let mut state: BTreeMap<String, std::collections::BTreeSet<usize>> = BTreeMap::new();
    for n in 0..USERS * ROUNDS {
        let (user, add, remove) = line(n);
        let entry = state.entry(user).or_default();
        entry.remove(&remove);
        for segment in add {
            if segment != remove {
                entry.insert(segment);
            }
        }
    }
    state
        .into_iter()
        .map(|(user, set)| {
            let mut ids: Vec<String> = set.into_iter().map(|s| format!("s{s:02}")).collect();
            ids.sort();
            (user, ids)
        })
        .collect()
}

fn write_file(dir: &Path, name: &str) -> std::path::PathBuf {
    let mut text = String::from("DMP_USER_ID\tDSP_USER_ID\tSEGMENTS_TO_ADD\tSEGMENTS_TO_REMOVE\n");
    for n in 0..USERS * ROUNDS {
        let (user, add, remove) = line(n);
        let adds: Vec<String> = add
            .iter()
            .filter(|s| **s != remove)
            .map(|s| format!("s{s:02}"))
            .collect();
        text.push_str(&format!("{user}\t\t{}\ts{remove:02}\n", adds.join(",")));
    }
    let plain = dir.join(name.trim_end_matches(".gz"));
    std::fs::write(&plain, text).unwrap();
    assert!(
        std::process::Command::new("gzip")
            .arg("-f")
            .arg(&plain)
            .status()
            .unwrap()
            .success()
    );
    dir.join(name)
}

async fn progress(server: &Server, operator: &str) -> Value {
    server
        .http
        .get(server.url("/admin/ingest/progress"))
        .bearer_auth(operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn kill_nine_in_the_middle_of_a_file_neither_loses_nor_doubles_a_line() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let provider = admin_json(
        &data_dir,
        &["provider", "create", "--name", "Acme", "--dmp-id", "acme"],
    );
    let provider_id = provider["id"].as_str().unwrap().to_owned();
    let folder = admin_json(
        &data_dir,
        &[
            "folder",
            "create",
            "--provider",
            &provider_id,
            "--name",
            "cookies",
            "--id-type",
            "cookie",
        ],
    );
    let folder_id = folder["id"].as_str().unwrap().to_owned();
    let client = create_client(&data_dir, &provider_id, "loader");
    // Small write batches, so the file is many durable writes and the kill lands between them.
    let options = ServeOptions {
        env: vec![("SEGMART_INGEST__BATCH_LINES".into(), "1000".into())],
        ..ServeOptions::default()
    };
    let server = Server::start_with(&data_dir, options.clone()).await;
    let api = server.api(&client, &folder_id).await;
    for s in 0..SEGMENTS {
        api.create_segment(&format!("s{s:02}"), TTL_MINUTES as u32)
            .await;
    }
    let operator = std::fs::read_to_string(data_dir.join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let file = write_file(work.path(), "acme.2026-01-01_00-00-00.killed.txt.gz");
    let total_lines = (USERS * ROUNDS) as u64 + 1;

    let upload = server
        .http
        .put(api.url("/files/acme.2026-01-01_00-00-00.killed.txt.gz"))
        .bearer_auth(&api.token)
        .body(std::fs::read(&file).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::ACCEPTED);

    // Wait until the worker is applying and part of the file is durable, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let now = progress(&server, &operator).await;
        let done = now["linesDone"].as_u64().unwrap_or(0);
        if now["phase"] == "applying" && done > total_lines / 10 {
            assert!(
                done < total_lines,
                "the file finished before the kill: {now}"
            );
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "the file never started applying: {now}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    server.kill_nine();
    eprintln!("killed after {killed_at} of {total_lines} lines");

    // The restarted server finds the delivery left applying and redoes it from the first line.
    let server = Server::start_with(&data_dir, options).await;
    let api = server.api(&client, &folder_id).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        let (status, report) = {
            let response = server
                .http
                .get(api.url("/files/killed"))
                .bearer_auth(&api.token)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        };
        assert_eq!(status, StatusCode::OK, "{report}");
        if report["status"] == "applied" {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the file was not finished after the restart: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Counted once: the redo starts its counts from zero.
    assert_eq!(report["linesRead"], total_lines);
    assert_eq!(report["linesApplied"], (USERS * ROUNDS) as u64);
    assert_eq!(report["linesRejected"], 0);
    assert_eq!(
        report["deliveries"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    let apply_at = report["applyAt"].as_str().unwrap().to_owned();
    let expected_expiry =
        time::OffsetDateTime::parse(&apply_at, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
            + (TTL_MINUTES * 60) as i64;

    // Every user ends exactly as applying each line once, in order, leaves it; every link
    // carries the expiry of the first attempt's apply time.
    let expected = expected();
    for (index, (user, segments)) in expected.iter().enumerate() {
        if index % 20 != 0 {
            continue;
        }
        let profile = api.get_profile(user).await;
        let got: Vec<String> = profile
            .as_ref()
            .map(|p| common::segment_ids(p).into_iter().collect())
            .unwrap_or_default();
        assert_eq!(&got, segments, "{user}");
        for link in profile
            .as_ref()
            .and_then(|p| p["segments"].as_array().cloned())
            .unwrap_or_default()
        {
            let expiry = time::OffsetDateTime::parse(
                link["expiration"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
            .unix_timestamp();
            assert_eq!(expiry, expected_expiry, "{user}: {link}");
        }
    }
    // Nothing is left behind in the spool: not the file, not the inflated text of the first try.
    let spool: Vec<_> = std::fs::read_dir(data_dir.join("ingest/spool"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(spool.is_empty(), "{spool:?}");
    server.terminate().await;
}
