//! Batch files through the HTTP upload and the drop directory, against the real server, real
//! stores and real gzip files (made by the `gzip` command and by flate2).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Options, Tenant, TestServer, segment_ids};
use reqwest::StatusCode;
use segmart_domain::IdType;
use segmart_server::ingest::IngestSettings;
use serde_json::Value;

const HEADER: &str = "DMP_USER_ID\tDSP_USER_ID\tSEGMENTS_TO_ADD\tSEGMENTS_TO_REMOVE\n";

/// A tenant with a cookie folder (the common one), a maid folder and the DMP ID `acme`.
struct FileTenant {
    tenant: Tenant,
    maid: segmart_storage::catalog::Folder,
}

async fn file_tenant(server: &TestServer, dmp_id: &str) -> FileTenant {
    let tenant = server.tenant(IdType::Cookie).await;
    let catalog = server.state.catalog.as_ref();
    catalog
        .set_provider_dmp_id(tenant.provider.id, Some(dmp_id))
        .await
        .unwrap();
    let maid = catalog
        .create_folder(
            tenant.provider.id,
            "mobile",
            IdType::Maid,
            server.clock_now(),
        )
        .await
        .unwrap();
    server.state.directory.put_folder(maid.clone());
    for id in ["1000", "1001", "1002"] {
        server.segment(&tenant, id, 60).await;
        let path = format!("/segmentproviders/{}/segments", maid.id);
        // The folder was written to the catalog directly: a cache reload that began before
        // that commit may hide it for one poll interval.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = server
                .post(
                    &path,
                    &tenant.token,
                    serde_json::json!({"segmentId": id, "name": id, "ttl": 60}),
                )
                .await;
            if status == StatusCode::NOT_FOUND && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            assert_eq!(status, StatusCode::CREATED, "{body}");
            break;
        }
    }
    FileTenant { tenant, maid }
}

trait ClockNow {
    fn clock_now(&self) -> segmart_domain::Timestamp;
}

impl ClockNow for TestServer {
    fn clock_now(&self) -> segmart_domain::Timestamp {
        use segmart_domain::Clock;
        self.clock.now()
    }
}

fn flate2_gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// Compresses with the `gzip` command, as a provider's shell script would.
fn command_gzip(dir: &Path, text: &str) -> Vec<u8> {
    let path = dir.join(format!("plain-{}.txt", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    let status = std::process::Command::new("gzip")
        .arg("-6")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let gz = path.with_extension("txt.gz");
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::remove_file(gz).unwrap();
    bytes
}

async fn upload(
    server: &TestServer,
    tenant: &Tenant,
    name: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let response = server
        .http
        .put(server.url(&format!(
            "/segmentproviders/{}/files/{name}",
            tenant.folder.id
        )))
        .bearer_auth(&tenant.token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls a FILE ID's report until its status is final.
async fn wait_final(server: &TestServer, tenant: &Tenant, file_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server
            .get(
                &format!("/segmentproviders/{}/files/{file_id}", tenant.folder.id),
                &tenant.token,
            )
            .await;
        // Not found yet: a dropped file is recorded once the watcher took it.
        assert!(
            matches!(status, StatusCode::OK | StatusCode::NOT_FOUND),
            "{status}: {body}"
        );
        if matches!(
            body["status"].as_str(),
            Some("applied" | "rejected" | "duplicate")
        ) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "file {file_id} never finished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn profile_segments(
    server: &TestServer,
    tenant: &Tenant,
    folder: &str,
    id: &str,
) -> Option<Vec<String>> {
    let (status, body) = server
        .get(
            &format!("/segmentproviders/{folder}/profiles/{id}"),
            &tenant.token,
        )
        .await;
    match status {
        StatusCode::OK => Some(segment_ids(&body)),
        StatusCode::NOT_FOUND => None,
        other => panic!("{other}: {body}"),
    }
}

#[tokio::test]
async fn an_uploaded_file_is_applied_and_reported_line_by_line() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    let text = format!(
        "{HEADER}\
         cookie-1\t\t1000,1001\t\n\
         cookie-2\tdsp-2\t1000\t\n\
         m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC\t\t1002\t\n\
         cookie-3\t\t9999\t\n\
         \r\n\
         m_sha1:0c2074fb86930fc4a2a7bb791240a7d3\t\t1000\t\n\
         just one field\n\
         cookie-1\t\t1002\t1001\r\n"
    );
    let (status, accepted) = upload(
        &server,
        tenant,
        "acme.2026-01-01_00-00-00.f-1.txt.gz",
        command_gzip(server.dir.path(), &text),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["fileId"], "f-1");
    assert_eq!(accepted["status"], "queued");

    let report = wait_final(&server, tenant, "f-1").await;
    assert_eq!(report["status"], "applied", "{report}");
    assert_eq!(report["kind"], "data");
    assert_eq!(report["source"], "upload");
    assert_eq!(report["linesRead"], 9);
    assert_eq!(report["blankLines"], 1);
    assert_eq!(report["linesApplied"], 4);
    assert_eq!(report["linesRejected"], 3);
    assert_eq!(report["membershipsAdded"], 5);
    assert_eq!(report["membershipsRemoved"], 1);
    assert_eq!(
        report["rejectsByReason"],
        serde_json::json!({"missing_fields": 1, "unknown_segment": 1, "unsupported_id_type": 1})
    );
    assert_eq!(report["unknownSegments"], serde_json::json!({"9999": 1}));
    let rejects_url = report["rejectedLinesUrl"].as_str().unwrap().to_owned();

    // Every rejected line, with its line number (the header is line 1) and content.
    let response = server
        .http
        .get(server.url(&rejects_url))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tsv = response.text().await.unwrap();
    let lines: Vec<Vec<&str>> = tsv.lines().map(|l| l.splitn(4, '\t').collect()).collect();
    assert_eq!(lines[0], ["line", "reason", "message", "content"]);
    let rows: Vec<(&str, &str)> = lines[1..].iter().map(|l| (l[0], l[1])).collect();
    assert_eq!(
        rows,
        [
            ("5", "unknown_segment"),
            ("7", "unsupported_id_type"),
            ("8", "missing_fields")
        ]
    );
    assert_eq!(lines[3][3], "just one field");

    // Lines mean what the profile API means: later lines win, DSP ids win over DMP ids.
    let cookies = tenant.folder.id.to_string();
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "cookie-1").await,
        Some(vec!["1000".into(), "1002".into()])
    );
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "dsp-2").await,
        Some(vec!["1000".into()])
    );
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "cookie-2").await,
        None
    );
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "cookie-3").await,
        None
    );
    // The raw id and its MD5 meet in one profile, and the profile API finds it by either.
    let maids = acme.maid.id.to_string();
    for spelling in [
        "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        "m_md5:0c2074fb86930fc4a2a7bb791240a7d3",
        "m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC",
    ] {
        assert_eq!(
            profile_segments(&server, tenant, &maids, spelling).await,
            Some(vec!["1002".into()]),
            "{spelling}"
        );
    }

    let (_, metrics) = server.get("/metrics", &tenant.token).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("segmart_ingest_lines_total{outcome=\"applied\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("segmart_ingest_rejected_lines_total{reason=\"unknown_segment\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("segmart_ingest_files_total{kind=\"data\",status=\"applied\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_file_id_applies_once_and_a_redelivery_is_a_duplicate() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    let name = "acme.2026-01-01_00-00-00.once.txt.gz";
    let (status, _) = upload(
        &server,
        tenant,
        name,
        flate2_gzip(&format!("{HEADER}u1\t\t1000\t\n")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let first = wait_final(&server, tenant, "once").await;
    assert_eq!(first["status"], "applied");

    // The user removes the segment through the API; a re-delivered file must not add it back.
    let (status, _) = server
        .post(
            &tenant.profiles_path(),
            &tenant.token,
            serde_json::json!([{"profileId": "u1", "segmentIdsToRemove": ["1000"]}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The whitespace the seed's own example has around a dot names the same file.
    let (status, again) = upload(
        &server,
        tenant,
        "acme. 2026-01-01_00-00-00.once.txt.gz",
        flate2_gzip(&format!("{HEADER}u1\t\t1000\t\n")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["duplicateOf"], first["deliveryId"]);
    let cookies = tenant.folder.id.to_string();
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "u1").await,
        Some(vec![])
    );

    let report = wait_final(&server, tenant, "once").await;
    assert_eq!(
        report["status"], "applied",
        "the report shows the delivery that took effect"
    );
    let deliveries = report["deliveries"].as_array().unwrap();
    let statuses: Vec<&str> = deliveries
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "duplicate"]);
}

#[tokio::test]
async fn files_apply_in_date_order_and_a_late_file_is_rejected() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    let (_, _) = upload(
        &server,
        tenant,
        "acme.2026-01-02_00-00-00.new.txt.gz",
        flate2_gzip(&format!("{HEADER}u1\t\t1000\t\n")),
    )
    .await;
    assert_eq!(
        wait_final(&server, tenant, "new").await["status"],
        "applied"
    );
    let (status, late) = upload(
        &server,
        tenant,
        "acme.2026-01-01_23-59-59.old.txt.gz",
        flate2_gzip(&format!("{HEADER}u1\t\t\t1000\n")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{late}");
    assert_eq!(late["status"], "rejected");
    assert_eq!(late["reason"]["code"], "late");
    let cookies = tenant.folder.id.to_string();
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "u1").await,
        Some(vec!["1000".into()])
    );
}

#[tokio::test]
async fn unreadable_files_are_rejected_whole_and_apply_nothing() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    let text = format!(
        "{HEADER}{}",
        (0..20_000)
            .map(|i| format!("user-{i}\t\t1000\t\n"))
            .collect::<String>()
    );
    let whole = command_gzip(server.dir.path(), &text);
    let cases = [
        ("notgz", text.as_bytes().to_vec(), "not_gzip"),
        ("cut", whole[..whole.len() / 2].to_vec(), "truncated_gzip"),
        (
            "trailer",
            whole[..whole.len() - 4].to_vec(),
            "truncated_gzip",
        ),
    ];
    for (index, (file_id, bytes, code)) in cases.into_iter().enumerate() {
        let name = format!("acme.2026-01-01_00-00-0{index}.{file_id}.txt.gz");
        let (status, _) = upload(&server, tenant, &name, bytes).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let report = wait_final(&server, tenant, file_id).await;
        assert_eq!(report["status"], "rejected", "{report}");
        assert_eq!(report["reason"]["code"], code, "{report}");
        assert_eq!(report["linesApplied"], 0);
    }
    let cookies = tenant.folder.id.to_string();
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "user-0").await,
        None,
        "nothing applied"
    );
    // A rejected FILE ID may come again, fixed.
    let (status, _) = upload(
        &server,
        tenant,
        "acme.2026-01-01_00-00-05.cut.txt.gz",
        whole,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let report = wait_final(&server, tenant, "cut").await;
    assert_eq!(report["status"], "applied", "{report}");
    assert_eq!(report["linesApplied"], 20_000);
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "user-19999").await,
        Some(vec!["1000".into()])
    );
}

#[tokio::test]
async fn a_taxonomy_applies_before_its_data_file_and_an_invalid_one_applies_nothing() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    let taxonomy = r#"[
        {"id": 2000, "name": "Mens 18-24", "cost_type": "RATE", "cost_value": 20, "currency": "USD", "advertisers": [1000, 2000]},
        {"id": "2001", "name": "Mens 25-29", "cost_type": "FIX", "cost_value": "1", "currency": "USD"}
    ]"#;
    let (status, body) = upload(
        &server,
        tenant,
        "acme.2026-01-01_00-00-00.t1.taxonomy.json",
        taxonomy.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _) = upload(
        &server,
        tenant,
        "acme.2026-01-01_00-00-00.t1.txt.gz",
        flate2_gzip(&format!("{HEADER}u1\t\t2000,2001\t\n")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let report = wait_final(&server, tenant, "t1").await;
    assert_eq!(report["status"], "applied", "{report}");
    assert_eq!(report["linesApplied"], 1);
    assert_eq!(report["taxonomy"]["status"], "applied");
    assert_eq!(
        report["taxonomy"]["segmentsUpserted"], 4,
        "cookie and maid folders"
    );
    let (status, segment) = server
        .get(&format!("{}/2000", tenant.segments_path()), &tenant.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(segment["name"], "Mens 18-24");
    assert_eq!(segment["costType"], "RATE");
    assert_eq!(segment["costValue"], 20.0);
    assert_eq!(segment["currency"], "USD");
    assert_eq!(segment["advertisers"], serde_json::json!(["1000", "2000"]));
    let cookies = tenant.folder.id.to_string();
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "u1").await,
        Some(vec!["2000".into(), "2001".into()])
    );

    let invalid =
        r#"[{"id": 3000, "name": "ok"}, {"id": 3001, "cost_type": "FIX", "cost_value": -1}]"#;
    let (status, _) = upload(
        &server,
        tenant,
        "acme.2026-01-02_00-00-00.t2.taxonomy.json",
        invalid.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let report = wait_final(&server, tenant, "t2").await;
    assert_eq!(report["status"], "rejected");
    assert_eq!(report["reason"]["code"], "invalid_taxonomy");
    assert!(
        report["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("[1]"),
        "{report}"
    );
    let (status, _) = server
        .get(&format!("{}/3000", tenant.segments_path()), &tenant.token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "never half-applied");
}

#[tokio::test]
async fn uploads_are_refused_for_other_providers_and_bad_names() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let other = file_tenant(&server, "other").await;
    let body = flate2_gzip(&format!("{HEADER}u1\t\t1000\t\n"));
    // Another provider's folder.
    let response = server
        .http
        .put(server.url(&format!(
            "/segmentproviders/{}/files/acme.2026-01-01_00-00-00.x.txt.gz",
            other.tenant.folder.id
        )))
        .bearer_auth(&acme.tenant.token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Its own folder, another DMP ID.
    let (status, error) = upload(
        &server,
        &acme.tenant,
        "other.2026-01-01_00-00-00.x.txt.gz",
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("DMP ID other"),
        "{error}"
    );
    // Reading another provider's report.
    let (status, _) = server
        .get(
            &format!("/segmentproviders/{}/files/x", other.tenant.folder.id),
            &acme.tenant.token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Bad names, each naming the part at fault.
    for (name, part) in [
        ("acme.2026-13-01_00-00-00.x.txt.gz", "DATE"),
        ("acme.2026-01-01_00-00-00.x.csv", "txt.gz"),
        ("acme.x.txt.gz", "dot-separated"),
    ] {
        let (status, error) = upload(&server, &acme.tenant, name, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert!(
            error["message"].as_str().unwrap().contains(part),
            "{name}: {error}"
        );
    }
    let (status, _) = server
        .get(
            &format!(
                "/segmentproviders/{}/files/nothing-here",
                acme.tenant.folder.id
            ),
            &acme.tenant.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_file_list_is_paginated_newest_first() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    for i in 0..5 {
        let name = format!("acme.2026-01-01_00-00-0{i}.p{i}.txt.gz");
        let (status, _) = upload(
            &server,
            tenant,
            &name,
            flate2_gzip(&format!("{HEADER}u{i}\t\t1000\t\n")),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        wait_final(&server, tenant, &format!("p{i}")).await;
    }
    let base = format!("/segmentproviders/{}/files", tenant.folder.id);
    let (status, page) = server.get(&format!("{base}?limit=2"), &tenant.token).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fileId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p4", "p3"]);
    let next = page["next"].as_i64().unwrap();
    let (_, rest) = server
        .get(&format!("{base}?limit=10&before={next}"), &tenant.token)
        .await;
    let ids: Vec<&str> = rest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fileId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p2", "p1", "p0"]);
    assert!(rest.get("next").is_none());
    let (status, _) = server.get(&format!("{base}?limit=0"), &tenant.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_drop_directory_takes_complete_files_and_sorts_them_out() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let drop_dir = dir.path().join("drop");
    let mut settings = IngestSettings::new(dir.path().join("ingest"));
    settings.drop_dir = Some(drop_dir.clone());
    settings.poll_interval = Duration::from_millis(50);
    let options = Options {
        ingest: Some(settings),
        ..Options::default()
    };
    let server = TestServer::start_in(dir.clone(), options, None).await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    // Wait for the watcher to create the directory.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !drop_dir.join("done").is_dir() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Written under a hidden name, then renamed into place (what copy tools do).
    let name = "acme.2026-01-01_00-00-00.dropped.txt.gz";
    let hidden = drop_dir.join(format!(".{name}.part"));
    std::fs::write(
        &hidden,
        command_gzip(dir.path(), &format!("{HEADER}d1\t\t1000,1001\t\n")),
    )
    .unwrap();
    std::fs::rename(&hidden, drop_dir.join(name)).unwrap();
    std::fs::write(drop_dir.join("not-a-batch-file.txt"), "hello").unwrap();
    std::fs::write(
        drop_dir.join("nobody.2026-01-01_00-00-00.x.txt.gz"),
        flate2_gzip(HEADER),
    )
    .unwrap();

    let report = wait_final(&server, tenant, "dropped").await;
    assert_eq!(report["status"], "applied", "{report}");
    assert_eq!(report["source"], "drop");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !drop_dir.join("done").join(name).exists()
        || !drop_dir
            .join("rejected/nobody.2026-01-01_00-00-00.x.txt.gz.reason.txt")
            .exists()
    {
        assert!(Instant::now() < deadline, "files were not sorted out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sidecar: Value = serde_json::from_slice(
        &std::fs::read(drop_dir.join(format!("done/{name}.report.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["linesApplied"], 1);
    let reason =
        std::fs::read_to_string(drop_dir.join("rejected/not-a-batch-file.txt.reason.txt")).unwrap();
    assert!(reason.contains("bad file name"), "{reason}");
    let reason = std::fs::read_to_string(
        drop_dir.join("rejected/nobody.2026-01-01_00-00-00.x.txt.gz.reason.txt"),
    )
    .unwrap();
    assert!(reason.contains("DMP ID nobody"), "{reason}");
    assert!(!drop_dir.join(name).exists());
    let cookies = tenant.folder.id.to_string();
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "d1").await,
        Some(vec!["1000".into(), "1001".into()])
    );

    // The same file dropped again is a duplicate and lands in rejected/.
    std::fs::write(
        drop_dir.join(name),
        flate2_gzip(&format!("{HEADER}d1\t\t1002\t\n")),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !drop_dir
        .join("rejected")
        .join(format!("{name}.report.json"))
        .exists()
    {
        assert!(
            Instant::now() < deadline,
            "the duplicate was not sorted out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sidecar: Value = serde_json::from_slice(
        &std::fs::read(drop_dir.join(format!("rejected/{name}.report.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["status"], "duplicate");
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "d1").await,
        Some(vec!["1000".into(), "1001".into()])
    );
}

#[tokio::test]
async fn an_over_long_line_is_rejected_and_the_file_goes_on() {
    let server = TestServer::start().await;
    let acme = file_tenant(&server, "acme").await;
    let tenant = &acme.tenant;
    let long = "x".repeat(5 * 1024 * 1024);
    let text = format!("{HEADER}before\t\t1000\t\n{long}\t\t1000\t\nafter\t\t1001\t\n");
    let (status, _) = upload(
        &server,
        tenant,
        "acme.2026-01-01_00-00-00.long.txt.gz",
        flate2_gzip(&text),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let report = wait_final(&server, tenant, "long").await;
    assert_eq!(report["status"], "applied", "{report}");
    assert_eq!(report["linesApplied"], 2);
    assert_eq!(
        report["rejectsByReason"],
        serde_json::json!({"line_too_long": 1})
    );
    let cookies = tenant.folder.id.to_string();
    assert_eq!(
        profile_segments(&server, tenant, &cookies, "after").await,
        Some(vec!["1001".into()])
    );
    let response = server
        .http
        .get(server.url(report["rejectedLinesUrl"].as_str().unwrap()))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    let tsv = response.text().await.unwrap();
    let row: Vec<&str> = tsv.lines().nth(1).unwrap().splitn(4, '\t').collect();
    assert_eq!(row[0], "3");
    assert_eq!(row[1], "line_too_long");
    assert!(row[2].contains("5242888 bytes long"), "{}", row[2]);
    assert_eq!(row[3].len(), 1024, "only the first KiB is kept");
    // Nothing is left in the spool.
    let spool: Vec<_> = std::fs::read_dir(server.dir.path().join("ingest/spool"))
        .unwrap()
        .collect();
    assert!(spool.is_empty(), "{spool:?}");
}
