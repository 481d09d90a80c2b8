//! `segmart serve --demo`: the README's first command gives a newcomer working credentials and
//! a walk-through that works as printed.
mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Api, ServeOptions, Server, admin_json, segment_ids};
use reqwest::StatusCode;
use serde_json::Value;

const DEMO_FIELDS: [&str; 9] = [
    "base_url",
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "segment_provider_id",
    "username",
    "password",
    "bidder_token",
];

fn read_demo_file(data_dir: &Path) -> Value {
    let path = data_dir.join("demo.json");
    let text = std::fs::read_to_string(&path).expect("serve --demo writes demo.json");
    let demo: Value = serde_json::from_str(&text).expect("demo.json is JSON");
    for field in DEMO_FIELDS {
        assert!(
            demo[field].as_str().is_some_and(|v| !v.is_empty()),
            "demo.json lacks {field}: {demo}"
        );
    }
    demo
}

fn field<'a>(demo: &'a Value, name: &str) -> &'a str {
    demo[name].as_str().expect("string field")
}

fn demo_api(server: &Server, demo: &Value, token: String) -> Api {
    Api {
        http: server.http.clone(),
        base: server.base.clone(),
        token,
        folder: field(demo, "segment_provider_id").to_owned(),
    }
}

/// Splits a shell command line into words the way `sh` would for these simple commands:
/// single quotes are literal, double quotes group (variables stay unexpanded).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                for inner in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                    word.push(inner);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// One `curl` invocation of the walk-through.
#[derive(Debug)]
struct Curl {
    url: String,
    /// `-d` arguments; curl joins them with `&` and POSTs them.
    data: Vec<String>,
    headers: Vec<(String, String)>,
    /// `-X METHOD`.
    method: Option<String>,
    /// `-b FILE -c FILE`: a cookie jar read and written.
    cookies: bool,
}

fn curl_commands(walkthrough: &str) -> Vec<Curl> {
    let joined = walkthrough.replace("\\\n", " ");
    let mut commands = Vec::new();
    for line in joined.lines() {
        let words = shell_words(line);
        let Some(start) = words
            .iter()
            .position(|w| w == "curl" || w.ends_with("(curl"))
        else {
            continue;
        };
        let mut curl = Curl {
            url: String::new(),
            data: Vec::new(),
            headers: Vec::new(),
            method: None,
            cookies: false,
        };
        let mut args = words[start + 1..]
            .iter()
            .take_while(|w| *w != "|" && !w.starts_with('#'));
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-s" => {}
                "-b" | "-c" => {
                    args.next().expect("-b/-c take a cookie jar");
                    curl.cookies = true;
                }
                "-X" => curl.method = Some(args.next().expect("-X takes a method").clone()),
                "-d" => curl
                    .data
                    .push(args.next().expect("-d takes a value").clone()),
                "-H" => {
                    let header = args.next().expect("-H takes a value");
                    let (name, value) = header.split_once(':').expect("header name: value");
                    curl.headers
                        .push((name.trim().to_owned(), value.trim().to_owned()));
                }
                url if url.starts_with("http") => curl.url = url.to_owned(),
                other => {
                    panic!("the walk-through uses a curl option this test does not know: {other}")
                }
            }
        }
        assert!(!curl.url.is_empty(), "curl without URL: {line}");
        commands.push(curl);
    }
    commands
}

/// Runs one walk-through command as curl would, with `$TOKEN` expanded and a cookie jar.
async fn run_with_jar(
    http: &reqwest::Client,
    curl: &Curl,
    token: &str,
    jar: &mut Option<String>,
) -> (StatusCode, String) {
    let mut request = if let Some(method) = &curl.method {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        http.request(method, &curl.url).body(curl.data.join("&"))
    } else if curl.data.is_empty() {
        http.get(&curl.url)
    } else {
        let content_type = curl
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        let request = http.post(&curl.url).body(curl.data.join("&"));
        if content_type {
            request
        } else {
            request.header("Content-Type", "application/x-www-form-urlencoded")
        }
    };
    for (name, value) in &curl.headers {
        request = request.header(name, value.replace("$TOKEN", token));
    }
    if curl.cookies
        && let Some(cookie) = jar.as_ref()
    {
        request = request.header("cookie", cookie.clone());
    }
    let response = request.send().await.expect("walk-through request");
    if curl.cookies
        && let Some(set) = response.headers().get("set-cookie")
    {
        *jar = Some(set.to_str().unwrap().split(';').next().unwrap().to_owned());
    }
    (
        response.status(),
        response.text().await.expect("answer text"),
    )
}

async fn run(http: &reqwest::Client, curl: &Curl, token: &str) -> (StatusCode, String) {
    run_with_jar(http, curl, token, &mut None).await
}

/// What `sed 's/.*"access_token":"\([^"]*\)".*/\1/'` extracts from the token answer.
fn sed_access_token(answer: &str) -> String {
    let (_, rest) = answer
        .rsplit_once("\"access_token\":\"")
        .unwrap_or_else(|| panic!("the walk-through's sed finds no access_token in {answer}"));
    rest.split('"').next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_credentials_and_walkthrough_work_and_survive_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let server = Server::start_with(&data_dir, ServeOptions::demo()).await;

    let demo = read_demo_file(&data_dir);
    assert_eq!(field(&demo, "base_url"), server.base);
    assert_eq!(field(&demo, "token_url"), server.url("/oauth2/token"));
    let mode = std::fs::metadata(data_dir.join("demo.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "demo.json holds a secret: owner-only, not {mode:o}"
    );

    // The credentials in demo.json get a token that reads the demo segments.
    let token = server
        .token(
            field(&demo, "client_id"),
            field(&demo, "client_secret"),
            field(&demo, "scope"),
        )
        .await
        .expect("demo.json's credentials get a token");
    let api = demo_api(&server, &demo, token);
    let demo_segments: BTreeSet<String> = api
        .list_segments()
        .await
        .iter()
        .map(|s| s["segmentId"].as_str().expect("segmentId").to_owned())
        .collect();
    assert!(
        demo_segments.len() >= 3,
        "a few demo segments: {demo_segments:?}"
    );

    // The walk-through, run as printed.
    let stdout = server.stdout();
    assert!(
        stdout.contains(&data_dir.join("demo.json").display().to_string()),
        "the walk-through says where the credentials are:\n{stdout}"
    );
    let commands = curl_commands(&stdout);
    assert_eq!(
        commands.len(),
        9,
        "token, segments, batch, profile, sign-in, taxonomy, mappings, usage event, report:\n{stdout}"
    );
    let (status, answer) = run(&server.http, &commands[0], "").await;
    assert_eq!(status, StatusCode::OK, "step 1 (token): {answer}");
    let token = sed_access_token(&answer);

    let (status, answer) = run(&server.http, &commands[1], &token).await;
    assert_eq!(status, StatusCode::OK, "step 2 (segments): {answer}");
    let listed: Value = serde_json::from_str(&answer).expect("segment list JSON");
    assert_eq!(
        listed["segments"].as_array().map(Vec::len),
        Some(demo_segments.len())
    );

    let batch: Value =
        serde_json::from_str(&commands[2].data[0]).expect("the batch example is JSON");
    let (status, answer) = run(&server.http, &commands[2], &token).await;
    assert_eq!(status, StatusCode::OK, "step 3 (batch): {answer}");
    let outcome: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        outcome["applied"], outcome["received"],
        "every example item applies: {answer}"
    );
    assert_eq!(outcome["rejected"], Value::Array(vec![]));

    let (status, answer) = run(&server.http, &commands[3], &token).await;
    assert_eq!(status, StatusCode::OK, "step 4 (profile): {answer}");
    let profile: Value = serde_json::from_str(&answer).unwrap();
    let profile_id = commands[3].url.rsplit('/').next().unwrap();
    let item = batch
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["profileId"] == profile_id)
        .expect("step 4 reads a profile written in step 3");
    let expected: BTreeSet<String> = ["segmentIdsToAdd", "segmentIdsToSet"]
        .iter()
        .flat_map(|op| item[op].as_array().cloned().unwrap_or_default())
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(segment_ids(&profile), expected);

    // The billing walk-through, with a cookie jar as curl -b/-c keeps it.
    let mut jar = None;
    let (status, answer) = run_with_jar(&server.http, &commands[4], "", &mut jar).await;
    assert_eq!(status, StatusCode::OK, "sign-in: {answer}");
    assert!(jar.is_some(), "the sign-in sets a session cookie");
    let (status, answer) = run_with_jar(&server.http, &commands[5], "", &mut jar).await;
    assert_eq!(status, StatusCode::OK, "taxonomy: {answer}");
    let taxonomy: Value = serde_json::from_str(&answer).unwrap();
    let category =
        &taxonomy["response"]["data-providers"][0]["data_publishers"][0]["data_categories"][0];
    assert_eq!(category["id"], demo["data_category_id"]);
    let (status, answer) = run_with_jar(&server.http, &commands[6], "", &mut jar).await;
    assert_eq!(status, StatusCode::OK, "mappings: {answer}");
    let mappings: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(mappings["response"]["count"], 1, "{answer}");
    let (status, answer) = run(&server.http, &commands[7], "").await;
    assert_eq!(status, StatusCode::OK, "usage event: {answer}");
    let metered: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(metered["recorded"], 1, "{answer}");
    assert_eq!(metered["events"][0]["dataCost"], 0.0015, "1.50 USD CPM");
    let (status, answer) = run_with_jar(&server.http, &commands[8], "", &mut jar).await;
    assert_eq!(status, StatusCode::OK, "report: {answer}");
    let report: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(report["totals"]["impressions"], 1, "{answer}");

    // SIGTERM: a clean exit that says everything acknowledged is on disk.
    let stopped = server.terminate().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("every acknowledged write is on disk"),
        "the log confirms the flush:\n{}",
        stopped.stderr
    );

    // The second run reuses the tenant and the client.
    let server = Server::start_with(&data_dir, ServeOptions::demo()).await;
    let again = read_demo_file(&data_dir);
    assert_eq!(again["client_id"], demo["client_id"]);
    assert_eq!(again["client_secret"], demo["client_secret"]);
    assert_eq!(again["segment_provider_id"], demo["segment_provider_id"]);
    assert_eq!(
        again["password"], demo["password"],
        "the demo user's password is kept"
    );
    assert_eq!(again["bidder_token"], demo["bidder_token"]);
    assert_eq!(again["data_category_id"], demo["data_category_id"]);
    let token = server
        .token(
            field(&again, "client_id"),
            field(&again, "client_secret"),
            field(&again, "scope"),
        )
        .await
        .expect("the reused credentials still get a token");
    let api = demo_api(&server, &again, token);
    assert_eq!(
        api.list_segments().await.len(),
        demo_segments.len(),
        "no duplicate demo segments"
    );
    let kept = api
        .get_profile(profile_id)
        .await
        .expect("the walk-through's profile survived the restart");
    assert_eq!(kept, profile);
    let clients = admin_json(&data_dir, &["client", "list"]);
    assert_eq!(
        clients.as_array().map(Vec::len),
        Some(1),
        "one demo client, not one per run: {clients}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_replaces_a_revoked_client_with_a_working_one() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let server = Server::start_with(&data_dir, ServeOptions::demo()).await;
    let first = read_demo_file(&data_dir);
    let stopped = server.terminate().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);

    admin_json(&data_dir, &["client", "revoke", field(&first, "client_id")]);

    let server = Server::start_with(&data_dir, ServeOptions::demo()).await;
    let second = read_demo_file(&data_dir);
    assert_ne!(
        second["client_id"], first["client_id"],
        "a revoked client is not handed out again"
    );
    let (status, refusal) = server
        .token(
            field(&first, "client_id"),
            field(&first, "client_secret"),
            field(&first, "scope"),
        )
        .await
        .expect_err("the revoked demo client gets no token");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refusal}");
    let token = server
        .token(
            field(&second, "client_id"),
            field(&second, "client_secret"),
            field(&second, "scope"),
        )
        .await
        .expect("the new demo credentials get a token");
    assert!(
        !demo_api(&server, &second, token)
            .list_segments()
            .await
            .is_empty()
    );
}
