//! Harness for end-to-end tests of the `segmart` binary: real processes, real ports, real data
//! directories.
//!
//! [`Server`] runs `segmart serve` as a child process and kills it when dropped (so a failing
//! assertion never leaves a server behind), printing its log when the test is failing.
//! [`admin`] runs `segmart admin …` against a data directory. [`Api`] speaks the sync API.
#![allow(dead_code)]

pub mod load;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

/// The OAuth `target-entity` every test deployment uses (set through the environment, as an
/// operator would, so tests can build scopes without the demo).
pub const TARGET_ENTITY: &str = "0b7c4d1e-5a2f-4c3b-9e8d-6f1a2b3c4d5e";

/// All four permissions of the sync API.
pub const ALL_PERMISSIONS: &str = "dmp_profile_read,dmp_profile,dmp_segment_read,dmp_segment";

/// How long a server may take to answer `/healthz` after it was started.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// `target-entity:<uuid>:<all permissions>`.
pub fn full_scope() -> String {
    format!("target-entity:{TARGET_ENTITY}:{ALL_PERMISSIONS}")
}

/// A `segmart` command with a clean environment: no `SEGMART_*`, `RUST_LOG` or backtrace
/// settings leaking in from the machine running the tests, the test target entity, and a profile rate limit high enough
/// that load tests measure durability rather than the limiter.
pub fn segmart(work_dir: &Path) -> Command {
    let mut command = bare_segmart(work_dir);
    command
        .env("SEGMART_AUTH__TARGET_ENTITY", TARGET_ENTITY)
        .env("SEGMART_LIMITS__PROFILE_REQUESTS_PER_SECOND", "1000000");
    command
}

/// A `segmart` command with no configuration at all from the environment.
pub fn bare_segmart(work_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_segmart"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("SEGMART_")
            || matches!(
                name.as_str(),
                "RUST_LOG" | "RUST_BACKTRACE" | "RUST_LIB_BACKTRACE"
            )
        {
            command.env_remove(name);
        }
    }
    command.current_dir(work_dir).stdin(Stdio::null());
    command
}

/// A loopback address nobody listens on right now.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// An HTTP client that never goes through a proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Removes terminal colour sequences from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Pass `--demo`.
    pub demo: bool,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl ServeOptions {
    pub fn demo() -> Self {
        ServeOptions {
            demo: true,
            ..ServeOptions::default()
        }
    }
}

/// What a stopped server left behind.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running `segmart serve` process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub base: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    /// Holds the captured stdout and stderr of the process.
    logs: tempfile::TempDir,
}

impl Server {
    /// Starts `segmart serve --listen <free port> --data-dir <data_dir>` and waits until it
    /// answers `/healthz`.
    pub async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, ServeOptions::default()).await
    }

    pub async fn start_with(data_dir: &Path, options: ServeOptions) -> Server {
        // Another process may take the free port between our probe and the server's bind;
        // then the server exits with "cannot listen" and we try another port.
        for _ in 0..5 {
            let addr = free_addr();
            let mut command = segmart(data_dir.parent().unwrap_or(data_dir));
            command
                .arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(data_dir);
            if options.demo {
                command.arg("--demo");
            }
            for (name, value) in &options.env {
                command.env(name, value);
            }
            match Server::spawn(command, addr, data_dir).await {
                Ok(server) => return server,
                Err(stderr) if stderr.contains("cannot listen") => continue,
                Err(stderr) => panic!("segmart serve exited during startup:\n{stderr}"),
            }
        }
        panic!("segmart serve found no free port in five attempts");
    }

    /// Spawns `command` (which must make the server listen on `addr`) and waits for readiness.
    /// `Err` carries the log of a server that exited before it was ready.
    pub async fn spawn(
        mut command: Command,
        addr: SocketAddr,
        data_dir: &Path,
    ) -> Result<Server, String> {
        let logs = tempfile::tempdir().expect("log directory");
        let stdout = File::create(logs.path().join("stdout")).expect("stdout file");
        let stderr = File::create(logs.path().join("stderr")).expect("stderr file");
        let child = command
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn segmart serve");
        let mut server = Server {
            child: Some(child),
            addr,
            base: format!("http://{addr}"),
            data_dir: data_dir.to_owned(),
            http: http_client(),
            logs,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = server
                .child_mut()
                .try_wait()
                .expect("poll the server process")
            {
                server.child = None;
                return Err(format!("exit status {status}\n{}", server.stderr()));
            }
            let answer = server
                .http
                .get(server.url("/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = answer
                && response.status() == StatusCode::OK
            {
                return Ok(server);
            }
            assert!(
                started.elapsed() < STARTUP_DEADLINE,
                "segmart serve did not answer /healthz within {STARTUP_DEADLINE:?}\n{}",
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the server process is running")
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child
            .as_ref()
            .expect("the server process is running")
            .id() as libc::pid_t
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default())
    }

    /// What the server logged on stderr so far.
    pub fn stderr(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default())
    }

    /// `kill -9`: the process gets no chance to flush anything.
    pub fn kill_nine(mut self) {
        let mut child = self.child.take().expect("the server process is running");
        // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 failed: {}", std::io::Error::last_os_error());
        child.wait().expect("reap the killed server");
    }

    /// Sends `signal` and waits for the process to exit.
    pub async fn stop_with(mut self, signal: libc::c_int) -> Stopped {
        // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill failed: {}", std::io::Error::last_os_error());
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child_mut()
                .try_wait()
                .expect("poll the server process")
            {
                self.child = None;
                return Stopped {
                    status,
                    stdout: self.stdout(),
                    stderr: self.stderr(),
                };
            }
            assert!(
                started.elapsed() < SHUTDOWN_DEADLINE,
                "segmart serve did not exit within {SHUTDOWN_DEADLINE:?} of signal {signal}\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, the way service managers stop a server.
    pub async fn terminate(self) -> Stopped {
        self.stop_with(libc::SIGTERM).await
    }

    /// The value of an unlabelled gauge or counter on `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse::<f64>().expect("numeric metric"))
            })
            .unwrap_or_else(|| panic!("metric {name} missing from /metrics:\n{text}"))
    }

    /// Asks for a token; `Err` carries the refusal.
    pub async fn token(
        &self,
        client_id: &str,
        client_secret: &str,
        scope: &str,
    ) -> Result<String, (StatusCode, Value)> {
        let response = self
            .http
            .post(self.url("/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("scope", scope),
            ])
            .send()
            .await
            .expect("POST /oauth2/token");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::OK {
            Ok(body["access_token"]
                .as_str()
                .expect("access_token in the answer")
                .to_owned())
        } else {
            Err((status, body))
        }
    }

    /// Polls for a token until the server knows the client (changes made with `segmart admin`
    /// reach a running server within its catalog poll interval).
    pub async fn wait_for_token(&self, client: &Client) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self
                .token(&client.client_id, &client.client_secret, &full_scope())
                .await
            {
                Ok(token) => return token,
                Err(refusal) => assert!(
                    Instant::now() < deadline,
                    "the server did not accept a client created with segmart admin: {refusal:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sync API of `folder` with a fresh token of `client`.
    pub async fn api(&self, client: &Client, folder: &str) -> Api {
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            token: self.wait_for_token(client).await,
            folder: folder.to_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- segmart serve on {} stderr ----\n{}",
                self.addr,
                self.stderr()
            );
        }
    }
}

/// Runs `segmart admin <args> --data-dir <data_dir>`.
pub fn admin(data_dir: &Path, args: &[&str]) -> Output {
    segmart(data_dir.parent().unwrap_or(data_dir))
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run segmart admin")
}

/// Runs `segmart admin --json <args>`, expects success and returns the parsed output.
pub fn admin_json(data_dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = admin(data_dir, &all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "segmart admin {args:?} failed ({})\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("segmart admin {args:?} printed no JSON ({e}): {stdout}"))
}

/// An OAuth client as `segmart admin client create` reported it.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub client_secret: String,
}

/// A provider with one cookie folder and a client holding every permission, created with the CLI.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub provider_id: String,
    pub folder_id: String,
    pub client: Client,
}

pub fn create_client(data_dir: &Path, provider_id: &str, name: &str) -> Client {
    let client = admin_json(
        data_dir,
        &[
            "client",
            "create",
            "--provider",
            provider_id,
            "--name",
            name,
        ],
    );
    Client {
        client_id: client["clientId"].as_str().expect("clientId").to_owned(),
        client_secret: client["clientSecret"]
            .as_str()
            .expect("clientSecret")
            .to_owned(),
    }
}

pub fn create_tenant(data_dir: &Path, name: &str) -> Tenant {
    let provider = admin_json(data_dir, &["provider", "create", "--name", name]);
    let provider_id = provider["id"].as_str().expect("provider id").to_owned();
    let folder = admin_json(
        data_dir,
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
    let folder_id = folder["id"].as_str().expect("folder id").to_owned();
    let client = create_client(data_dir, &provider_id, &format!("{name} loader"));
    Tenant {
        provider_id,
        folder_id,
        client,
    }
}

/// The sync API of one folder, with a bearer token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub folder: String,
}

impl Api {
    pub fn url(&self, rest: &str) -> String {
        format!("{}/segmentproviders/{}{rest}", self.base, self.folder)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, body))
    }

    pub async fn create_segment(&self, segment_id: &str, ttl_minutes: u32) {
        let body = json!({"segmentId": segment_id, "name": format!("Segment {segment_id}"), "ttl": ttl_minutes});
        let (status, answer) = self
            .send(self.http.post(self.url("/segments")).json(&body))
            .await
            .expect("POST segment");
        assert_eq!(
            status,
            StatusCode::CREATED,
            "creating segment {segment_id}: {answer}"
        );
    }

    /// Sends a profile batch; `Err` is a transport failure (no answer at all).
    pub async fn post_batch(&self, batch: &Value) -> Result<(StatusCode, Value), reqwest::Error> {
        self.send(self.http.post(self.url("/profiles")).json(batch))
            .await
    }

    pub async fn put_profile(&self, profile_id: &str, segments: &[&str]) -> (StatusCode, Value) {
        let body =
            json!({"segments": segments.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()});
        self.send(
            self.http
                .put(self.url(&format!("/profiles/{profile_id}")))
                .json(&body),
        )
        .await
        .expect("PUT profile")
    }

    pub async fn delete_profile(&self, profile_id: &str) -> StatusCode {
        self.send(
            self.http
                .delete(self.url(&format!("/profiles/{profile_id}"))),
        )
        .await
        .expect("DELETE profile")
        .0
    }

    /// The stored profile, or `None` on 404. Any other answer fails the test.
    pub async fn get_profile(&self, profile_id: &str) -> Option<Value> {
        let (status, body) = self
            .send(self.http.get(self.url(&format!("/profiles/{profile_id}"))))
            .await
            .expect("GET profile");
        match status {
            StatusCode::OK => Some(body),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET profile {profile_id} answered {other}: {body}"),
        }
    }

    pub async fn list_segments(&self) -> Vec<Value> {
        let (status, body) = self
            .send(self.http.get(self.url("/segments?limit=1000")))
            .await
            .expect("GET segments");
        assert_eq!(status, StatusCode::OK, "{body}");
        body["segments"].as_array().expect("segments array").clone()
    }
}

/// The segment ids of a profile answer.
pub fn segment_ids(profile: &Value) -> BTreeSet<String> {
    profile["segments"]
        .as_array()
        .expect("segments array")
        .iter()
        .map(|s| s["id"].as_str().expect("segment id").to_owned())
        .collect()
}

/// Polls `check` until it returns `true` or `within` runs out.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not true within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `command` to its exit, failing the test if it is still running after `within`.
pub fn run_to_exit(mut command: Command, within: Duration) -> Output {
    let logs = tempfile::tempdir().expect("log directory");
    let (out, err) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = command
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn segmart");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll segmart") {
            break status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "segmart still running after {within:?}\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}
