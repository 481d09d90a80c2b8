//! The operator's billing CLI (`segmart admin billing …`, `segmart report usage`) against the
//! real binary: the taxonomy it creates is what the API serves, a user it creates can sign in,
//! a bidder token it prints meters usage, and the report reads the same ledger whether a server
//! runs or not.
mod common;

use common::{Server, admin, admin_json, create_tenant, segmart};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_setup_from_the_cli_meters_and_reports() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let server = Server::start(&data_dir).await;
    let tenant = create_tenant(&data_dir, "Cli DMP");
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    api.create_segment("golf", 43_200).await;
    let segment = api.list_segments().await[0]["id"].as_u64().unwrap();

    let members = admin_json(&data_dir, &["billing", "member", "list"]);
    let member = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["provider_id"] == tenant.provider_id.as_str())
        .expect("every provider has a member")["member_id"]
        .as_i64()
        .unwrap();
    let m = member.to_string();
    admin_json(
        &data_dir,
        &[
            "billing",
            "member",
            "set-revshare",
            "--member",
            &m,
            "--pct",
            "25",
        ],
    );
    let publisher = admin_json(
        &data_dir,
        &[
            "billing",
            "publisher",
            "create",
            "--member",
            &m,
            "--name",
            "Pub",
        ],
    )["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let category = admin_json(
        &data_dir,
        &[
            "billing",
            "category",
            "create",
            "--publisher",
            &publisher,
            "--name",
            "Golf",
            "--cost-type",
            "fix",
            "--cost-value",
            "90",
            "--currency",
            "RUB",
        ],
    );
    assert_eq!(category["cost_type"], "FIX");
    let category = category["id"].as_i64().unwrap();
    admin_json(
        &data_dir,
        &[
            "billing",
            "rate",
            "set",
            "--currency",
            "RUB",
            "--rate",
            "0.01",
        ],
    );
    let buyer = admin_json(&data_dir, &["billing", "buyer", "create", "--name", "Shop"])["id"]
        .as_i64()
        .unwrap();
    let user = admin_json(
        &data_dir,
        &[
            "billing",
            "user",
            "create",
            "--username",
            "cli-user",
            "--member",
            &m,
        ],
    );
    let password = user["password"]
        .as_str()
        .expect("a generated password, shown once");
    let bidder = admin_json(&data_dir, &["billing", "bidder", "create", "--name", "rtb"]);
    let token = bidder["token"].as_str().unwrap().to_owned();
    let listed = admin_json(&data_dir, &["billing", "bidder", "list"]);
    assert!(
        !listed.to_string().contains(&token),
        "tokens are never listed"
    );
    // Bad input is refused with the reason.
    let bad = admin(
        &data_dir,
        &[
            "billing",
            "category",
            "create",
            "--publisher",
            &publisher,
            "--name",
            "X",
            "--cost-type",
            "RATE",
            "--cost-value",
            "120",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at most 100"));

    // The user signs in and maps the segment; the server saw the CLI's changes.
    let http = common::http_client();
    let auth: Value = http
        .post(server.url("/auth"))
        .json(&json!({"auth": {"username": "cli-user", "password": password}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = auth["response"]["token"].as_str().unwrap().to_owned();
    let created = http
        .post(server.url("/segment-billing-category"))
        .bearer_auth(&session)
        .json(
            &json!({"segment-billing-category": {"active": true, "data_provider_id": member,
              "data_category_id": category, "segment_id": segment, "is_public": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        StatusCode::OK,
        "{}",
        created.text().await.unwrap()
    );
    // The catalog watcher picks up the CLI's bidder and buyer within its poll interval.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = json!({"events": [{"impressionId": "cli-1", "time": now, "buyerId": buyer,
        "campaignId": 1, "mediaCost": 0.01, "mediaCurrency": "USD", "segments": [segment]}]});
    common::eventually(
        std::time::Duration::from_secs(10),
        "the bidder token works",
        || {
            let (http, url, token, body) = (
                http.clone(),
                server.url("/bidder/usage"),
                token.clone(),
                body.clone(),
            );
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                r.status() == StatusCode::OK
            }
        },
    )
    .await;
    // The report from the running server, then with the server stopped.
    let report = segmart(work.path())
        .args(["report", "usage", "--format", "csv", "--data-dir"])
        .arg(&data_dir)
        .args(["--server", &server.base])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let running = String::from_utf8_lossy(&report.stdout).to_string();
    // 90 RUB CPM at 0.01 = 0.0009 USD; 25 % of it is the platform's.
    assert!(running.contains(",golf,"), "{running}");
    assert!(
        running.contains(",0.000900,0.000675,0.000225,USD"),
        "{running}"
    );
    let stopped = server.terminate().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    let offline = segmart(work.path())
        .args(["report", "usage", "--format", "csv", "--data-dir"])
        .arg(&data_dir)
        .env("SEGMART_LISTEN", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&offline.stdout), running);
}
