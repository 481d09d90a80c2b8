//! The command line: `segmart admin …` in text and JSON, configuration from file, environment
//! and flags, and admin changes reaching a running server.
mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{
    Server, admin, admin_json, bare_segmart, create_client, create_tenant, eventually, free_addr,
    full_scope, run_to_exit, segmart,
};
use reqwest::StatusCode;
use serde_json::Value;

/// How long a misconfigured `segmart` may take to give up.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(30);

/// How soon a running server must honour a client revocation made with the CLI.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(3);

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

fn assert_refused(output: &Output, what: &str) -> String {
    assert!(
        !output.status.success(),
        "{what} should fail, but printed: {}{}",
        stdout(output),
        stderr(output)
    );
    stderr(output)
}

/// Every file under `dir`, read as bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push((
                path.display().to_string(),
                std::fs::read(&path).unwrap_or_default(),
            ));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn admin_creates_and_lists_providers_and_folders_in_text_and_json() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");

    let text = assert_success(
        &admin(&data, &["provider", "create", "--name", "Acme Data"]),
        "provider create",
    );
    assert!(text.starts_with("provider "), "{text}");
    assert!(text.contains("Acme Data"), "{text}");
    let text_id = text.split_whitespace().nth(1).unwrap().to_owned();
    uuid_like(&text_id);

    let json = admin_json(&data, &["provider", "create", "--name", "Bolt Audiences"]);
    assert_eq!(json["name"], "Bolt Audiences");
    let bolt = json["id"].as_str().unwrap().to_owned();
    uuid_like(&bolt);

    let listed = admin_json(&data, &["provider", "list"]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&text_id.as_str()) && ids.contains(&bolt.as_str()),
        "{listed}"
    );
    let text = assert_success(&admin(&data, &["provider", "list"]), "provider list");
    assert!(
        text.contains("Acme Data") && text.contains("Bolt Audiences"),
        "{text}"
    );

    for (id_type, vendor) in [
        ("cookie", None),
        ("maid", None),
        ("ppid", None),
        ("ip", None),
        ("extended_id", Some("id5")),
    ] {
        let mut args = vec![
            "folder",
            "create",
            "--provider",
            &bolt,
            "--name",
            id_type,
            "--id-type",
            id_type,
        ];
        if let Some(vendor) = vendor {
            args.extend(["--vendor", vendor]);
        }
        let folder = admin_json(&data, &args);
        assert_eq!(folder["idType"], id_type, "{folder}");
        assert_eq!(folder["providerId"], bolt.as_str());
        assert_eq!(folder["vendor"].as_str(), vendor, "{folder}");
        uuid_like(folder["id"].as_str().unwrap());
    }
    let folders = admin_json(&data, &["folder", "list"]);
    assert_eq!(folders.as_array().unwrap().len(), 5, "{folders}");
    let text = assert_success(&admin(&data, &["folder", "list"]), "folder list");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("folder ")).count(),
        5,
        "{text}"
    );
    assert!(
        text.contains("extended_id") && text.contains("id5"),
        "{text}"
    );
    let none = admin_json(&data, &["folder", "list", "--provider", &text_id]);
    assert_eq!(
        none,
        Value::Array(vec![]),
        "the filter keeps other providers' folders out"
    );

    let refusal = assert_refused(
        &admin(
            &data,
            &[
                "folder",
                "create",
                "--provider",
                &bolt,
                "--name",
                "x",
                "--id-type",
                "email",
            ],
        ),
        "an unknown id type",
    );
    assert!(
        refusal.contains("email"),
        "the error names the bad id type: {refusal}"
    );
    let refusal = assert_refused(
        &admin(
            &data,
            &[
                "folder",
                "create",
                "--provider",
                &bolt,
                "--name",
                "x",
                "--id-type",
                "extended_id",
            ],
        ),
        "extended_id without a vendor",
    );
    assert!(refusal.contains("vendor"), "{refusal}");
}

fn uuid_like(id: &str) {
    assert!(
        id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4,
        "expected a UUID, got {id:?}"
    );
}

#[test]
fn a_client_secret_is_shown_once_and_never_stored_or_listed() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let provider = admin_json(&data, &["provider", "create", "--name", "Acme Data"]);
    let provider = provider["id"].as_str().unwrap();

    let text = assert_success(
        &admin(
            &data,
            &[
                "client",
                "create",
                "--provider",
                provider,
                "--name",
                "loader",
            ],
        ),
        "client create",
    );
    let text_secret = text
        .lines()
        .find_map(|l| l.strip_prefix("client_secret "))
        .unwrap_or_else(|| panic!("the text output shows the secret: {text}"))
        .trim()
        .to_owned();
    assert!(text.contains("shown once"), "{text}");

    let json = admin_json(
        &data,
        &[
            "client",
            "create",
            "--provider",
            provider,
            "--name",
            "reader",
            "--permissions",
            "dmp_profile_read,dmp_segment_read",
        ],
    );
    let json_secret = json["clientSecret"].as_str().unwrap().to_owned();
    assert_eq!(
        json["permissions"],
        serde_json::json!(["dmp_profile_read", "dmp_segment_read"])
    );
    assert_eq!(json["revoked"], false);

    let rotated = admin_json(
        &data,
        &["client", "rotate", json["clientId"].as_str().unwrap()],
    );
    let rotated_secret = rotated["clientSecret"].as_str().unwrap().to_owned();
    assert_ne!(rotated_secret, json_secret);

    let listed = admin_json(&data, &["client", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    for client in listed.as_array().unwrap() {
        assert!(
            client.get("clientSecret").is_none(),
            "list shows no secret: {client}"
        );
    }
    let listed_text = assert_success(&admin(&data, &["client", "list"]), "client list");
    let listed_json = listed.to_string();
    for secret in [&text_secret, &json_secret, &rotated_secret] {
        assert!(!listed_json.contains(secret.as_str()) && !listed_text.contains(secret.as_str()));
        for (file, bytes) in files_under(&data) {
            assert!(
                !contains(&bytes, secret),
                "{file} holds a client secret in clear"
            );
        }
    }

    let refusal = assert_refused(
        &admin(
            &data,
            &[
                "client",
                "create",
                "--provider",
                provider,
                "--name",
                "x",
                "--permissions",
                "dmp_everything",
            ],
        ),
        "an unknown permission",
    );
    assert!(refusal.contains("dmp_everything"), "{refusal}");

    let revoked = admin_json(
        &data,
        &["client", "revoke", rotated["clientId"].as_str().unwrap()],
    );
    assert_eq!(revoked["revoked"], true);
    assert!(revoked.get("clientSecret").is_none());
    let text = assert_success(&admin(&data, &["client", "list"]), "client list");
    assert!(text.contains("REVOKED"), "{text}");
}

#[test]
fn an_unknown_key_in_the_config_file_is_refused_by_name() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("segmart.toml");
    std::fs::write(&config, "[limits]\nprofile_requests_per_minute = 5\n").unwrap();
    let data = work.path().join("data");

    let mut serve = segmart(work.path());
    serve
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &free_addr().to_string(), "--data-dir"])
        .arg(&data);
    let refusal = assert_refused(
        &run_to_exit(serve, REFUSAL_DEADLINE),
        "serve with an unknown config key",
    );
    assert!(
        refusal.contains("profile_requests_per_minute"),
        "the error names the key: {refusal}"
    );

    // The same file named by SEGMART_CONFIG.
    let mut serve = segmart(work.path());
    serve
        .env("SEGMART_CONFIG", &config)
        .args(["serve", "--listen", &free_addr().to_string(), "--data-dir"])
        .arg(&data);
    let refusal = assert_refused(
        &run_to_exit(serve, REFUSAL_DEADLINE),
        "serve with SEGMART_CONFIG",
    );
    assert!(refusal.contains("profile_requests_per_minute"), "{refusal}");

    let missing = work.path().join("missing.toml");
    let mut serve = segmart(work.path());
    serve
        .arg("--config")
        .arg(&missing)
        .args(["admin", "provider", "list"]);
    let refusal = assert_refused(
        &run_to_exit(serve, REFUSAL_DEADLINE),
        "a missing config file",
    );
    assert!(refusal.contains("missing.toml"), "{refusal}");
}

#[test]
fn a_bad_segmart_environment_variable_is_refused_by_name() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let cases = [
        ("SEGMART_LISTN", "127.0.0.1:9"),
        ("SEGMART_LIMITS__PROFILE_REQUESTS_PER_MINUTE", "5"),
        ("SEGMART_LISTEN", "not-an-address"),
        ("SEGMART_LIMITS__PROFILE_REQUESTS_PER_SECOND", "0"),
    ];
    for (name, value) in cases {
        let mut serve = bare_segmart(work.path());
        serve
            .env(name, value)
            .args(["serve", "--data-dir"])
            .arg(&data);
        let refusal = assert_refused(
            &run_to_exit(serve, REFUSAL_DEADLINE),
            &format!("{name}={value}"),
        );
        let key = name
            .trim_start_matches("SEGMART_")
            .rsplit("__")
            .next()
            .unwrap()
            .to_lowercase();
        assert!(
            refusal.to_lowercase().contains(&key),
            "the error for {name}={value} names {key}: {refusal}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_address_comes_from_file_then_environment_then_flag() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let config = work.path().join("segmart.toml");

    let from_file = free_addr();
    std::fs::write(
        &config,
        format!(
            "listen = \"{from_file}\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut command = segmart(work.path());
    command.arg("--config").arg(&config).arg("serve");
    let server = Server::spawn(command, from_file, &data)
        .await
        .expect("serve on the file's address");
    assert!(
        data.join("catalog.sqlite").exists(),
        "the file's data_dir is used"
    );
    server.terminate().await;

    let from_env = free_addr();
    let mut command = segmart(work.path());
    command
        .arg("--config")
        .arg(&config)
        .env("SEGMART_LISTEN", from_env.to_string())
        .arg("serve");
    let server = Server::spawn(command, from_env, &data)
        .await
        .expect("serve on SEGMART_LISTEN");
    server.terminate().await;

    let from_flag = free_addr();
    let mut command = segmart(work.path());
    command
        .arg("--config")
        .arg(&config)
        .env("SEGMART_LISTEN", from_env.to_string())
        .args(["serve", "--listen", &from_flag.to_string()]);
    let server = Server::spawn(command, from_flag, &data)
        .await
        .expect("serve on --listen");
    let health: Value = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let stopped = server.terminate().await;
    assert!(
        stopped.stderr.contains(&from_flag.to_string()),
        "the log says where it listens:\n{}",
        stopped.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_or_rotating_a_client_with_the_cli_stops_its_tokens_on_the_running_server() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data).await;
    let tenant = create_tenant(&data, "Acme Data");
    let api = server.api(&tenant.client, &tenant.folder_id).await;
    assert!(api.list_segments().await.is_empty());

    let revoked = admin_json(&data, &["client", "revoke", &tenant.client.client_id]);
    assert_eq!(revoked["revoked"], true);
    eventually(
        REVOCATION_DEADLINE,
        "the revoked client's token is refused",
        || {
            let api = api.clone();
            async move {
                let status = api
                    .http
                    .get(api.url("/segments"))
                    .bearer_auth(&api.token)
                    .send()
                    .await
                    .unwrap()
                    .status();
                status == StatusCode::UNAUTHORIZED
            }
        },
    )
    .await;
    let (status, refusal) = server
        .token(
            &tenant.client.client_id,
            &tenant.client.client_secret,
            &full_scope(),
        )
        .await
        .expect_err("a revoked client gets no token");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(refusal["error"], "invalid_client", "{refusal}");

    // Rotation: tokens of the old secret stop working, the new secret works, the old does not.
    let second = create_client(&data, &tenant.provider_id, "second loader");
    let api = server.api(&second, &tenant.folder_id).await;
    let rotated = admin_json(&data, &["client", "rotate", &second.client_id]);
    let new_secret = rotated["clientSecret"].as_str().unwrap();
    eventually(
        REVOCATION_DEADLINE,
        "a token from before the rotation is refused",
        || {
            let api = api.clone();
            async move {
                let status = api
                    .http
                    .get(api.url("/segments"))
                    .bearer_auth(&api.token)
                    .send()
                    .await
                    .unwrap()
                    .status();
                status == StatusCode::UNAUTHORIZED
            }
        },
    )
    .await;
    let (status, _) = server
        .token(&second.client_id, &second.client_secret, &full_scope())
        .await
        .expect_err("the old secret gets no token");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = server
        .token(&second.client_id, new_secret, &full_scope())
        .await
        .expect("the new secret gets a token");
    let status = api
        .http
        .get(api.url("/segments"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
}
