//! `segmart ingest FILE…` against a data directory: on its own, and through a running server.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Server, admin_json, create_client, run_to_exit, segmart};
use serde_json::Value;

const HEADER: &str = "DMP_USER_ID\tDSP_USER_ID\tSEGMENTS_TO_ADD\tSEGMENTS_TO_REMOVE\n";

/// Writes `text` gzip-compressed by the `gzip` command as `dir/name`.
fn gzip_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let plain = dir.join(name.trim_end_matches(".gz"));
    std::fs::write(&plain, text).unwrap();
    let status = std::process::Command::new("gzip")
        .arg("-6")
        .arg("-f")
        .arg(&plain)
        .status()
        .unwrap();
    assert!(status.success());
    dir.join(name)
}

struct Provider {
    id: String,
    cookies: String,
    maids: String,
}

fn provider(data_dir: &Path, dmp_id: &str) -> Provider {
    let provider = admin_json(
        data_dir,
        &["provider", "create", "--name", "Acme", "--dmp-id", dmp_id],
    );
    assert_eq!(provider["dmpId"], dmp_id);
    let id = provider["id"].as_str().unwrap().to_owned();
    let folder = |name: &str, id_type: &str| {
        admin_json(
            data_dir,
            &[
                "folder",
                "create",
                "--provider",
                &id,
                "--name",
                name,
                "--id-type",
                id_type,
            ],
        )["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    Provider {
        cookies: folder("cookies", "cookie"),
        maids: folder("maids", "maid"),
        id,
    }
}

fn ingest(work: &Path, data_dir: &Path, files: &[&Path]) -> (i32, Vec<Value>, String) {
    let mut command = segmart(work);
    command
        .arg("ingest")
        .arg("--json")
        .arg("--data-dir")
        .arg(data_dir)
        .args(files);
    let output = run_to_exit(command, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let reports: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON reports ({e}):\n{stdout}\n{stderr}"));
    (output.status.code().unwrap_or(-1), reports, stderr)
}

const TAXONOMY: &str = r#"[
  {"id": 1000, "name": "Mens 18-24", "cost_type": "RATE", "cost_value": 20, "currency": "USD", "advertisers": [1000, 2000, 3000]},
  {"id": 1001, "name": "Mens 25-29", "cost_type": "FIX", "cost_value": "1", "currency": "USD", "advertisers": [1000, 2000, 3000]}
]"#;

#[tokio::test]
async fn ingest_applies_files_locally_then_through_a_running_server() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let acme = provider(&data_dir, "acme");
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).unwrap();

    // The data file and, beside it, its taxonomy (taken along without being named).
    std::fs::write(
        files.join("acme.2026-01-01_00-00-00.f1.taxonomy.json"),
        TAXONOMY,
    )
    .unwrap();
    let data = gzip_file(
        &files,
        "acme.2026-01-01_00-00-00.f1.txt.gz",
        &format!(
            "{HEADER}cookie-1\t\t1000,1001\t\n\
             m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC\t\t1000\t\n\
             cookie-2\t\t1000\t7777\n\
             m_sha1:0c2074fb86930fc4a2a7bb791240a7d3\t\t1000\t\n"
        ),
    );
    let (code, reports, stderr) = ingest(work.path(), &data_dir, &[&data]);
    assert_eq!(code, 0, "{reports:?}\n{stderr}");
    assert!(stderr.contains("taking the taxonomy"), "{stderr}");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["kind"], "taxonomy");
    assert_eq!(reports[0]["status"], "applied");
    assert_eq!(reports[1]["kind"], "data");
    assert_eq!(reports[1]["status"], "applied", "{:?}", reports[1]);
    assert_eq!(reports[1]["source"], "cli");
    assert_eq!(reports[1]["linesApplied"], 2);
    assert_eq!(reports[1]["linesRejected"], 2);
    assert_eq!(reports[1]["rejectsByReason"]["unknown_segment"], 1);
    assert_eq!(reports[1]["unknownSegments"]["7777"], 1);
    let rejects =
        std::fs::read_to_string(data_dir.join(format!("ingest/rejects/{}/f1.tsv", acme.id)))
            .unwrap();
    assert!(rejects.contains("4\tunknown_segment\t"), "{rejects}");
    assert!(rejects.contains("5\tunsupported_id_type\t"), "{rejects}");

    // Again: duplicates, nothing applied, exit 0.
    let (code, reports, _) = ingest(work.path(), &data_dir, &[&data]);
    assert_eq!(code, 0);
    assert!(
        reports.iter().all(|r| r["status"] == "duplicate"),
        "{reports:?}"
    );

    // A truncated file is rejected whole: exit 2.
    let whole = std::fs::read(&data).unwrap();
    let cut = files.join("acme.2026-01-02_00-00-00.f2.txt.gz");
    std::fs::write(&cut, &whole[..whole.len() - 6]).unwrap();
    let (code, reports, _) = ingest(work.path(), &data_dir, &[&cut]);
    assert_eq!(code, 2);
    assert_eq!(reports[0]["status"], "rejected");
    assert_eq!(reports[0]["reason"]["code"], "truncated_gzip");

    // A bad name is refused before anything is sent.
    let bad = files.join("acme.f3.txt.gz");
    std::fs::write(&bad, &whole).unwrap();
    let mut command = segmart(work.path());
    command
        .arg("ingest")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg(&bad);
    let output = run_to_exit(command, Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad file name"));

    // With a server holding the data directory, the files go through it.
    let server = Server::start(&data_dir).await;
    let next = gzip_file(
        &files,
        "acme.2026-01-03_00-00-00.f4.txt.gz",
        &format!("{HEADER}cookie-1\t\t\t1001\n"),
    );
    let mut command = segmart(work.path());
    command
        .arg("ingest")
        .arg("--json")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--server")
        .arg(&server.base)
        .arg(&next);
    let output = run_to_exit(command, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("a running server holds"), "{stderr}");
    let reports: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reports[0]["status"], "applied", "{reports:?}");
    assert_eq!(reports[0]["membershipsRemoved"], 1);

    let client = create_client(&data_dir, &acme.id, "reader");
    let api = server.api(&client, &acme.cookies).await;
    let profile = api.get_profile("cookie-1").await.expect("cookie-1");
    assert_eq!(
        common::segment_ids(&profile)
            .into_iter()
            .collect::<Vec<_>>(),
        ["1000"]
    );
    let maids = server.api(&client, &acme.maids).await;
    let mobile = maids
        .get_profile("6D92078A-8246-4BA4-AE5B-76104861E7DC")
        .await
        .expect("the device");
    assert_eq!(mobile["id"], "m_md5:0c2074fb86930fc4a2a7bb791240a7d3");
    assert_eq!(
        common::segment_ids(&mobile).into_iter().collect::<Vec<_>>(),
        ["1000"]
    );
    // The taxonomy's names and prices are on the segments.
    let segments = api.list_segments().await;
    let names: Vec<&str> = segments
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Mens 18-24", "Mens 25-29"]);
    server.terminate().await;
}
