//! Test harness: the real server on port 0 over real stores in a temporary directory, with a
//! manual clock the tests move.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::{Client, Response, StatusCode};
use segmart_domain::{Clock, IdType, ManualClock, PermissionSet, Timestamp};
use segmart_server::directory::Directory;
use segmart_server::metrics::Metrics;
use segmart_server::ratelimit::{RateLimitSettings, RateLimiter};
use segmart_server::token::TokenSigner;
use segmart_server::{AppState, Settings, SharedState, ops};
use segmart_storage::billing_catalog::UserRole;
use segmart_storage::catalog::{Catalog, Folder, Provider};
use segmart_storage::embedded::{EmbeddedConfig, EmbeddedProfileStore};
use segmart_storage::sqlite::SqliteCatalog;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Password of the sign-in users the helpers create.
pub const USER_PASSWORD: &str = "correct horse battery";

pub const OPERATOR_TOKEN: &str = "sm_op_test-operator-token";

/// Knobs a test may turn before the server starts.
#[derive(Clone)]
pub struct Options {
    pub rate_limits: RateLimitSettings,
    pub queue_capacity: usize,
    pub start: Timestamp,
    /// Batch ingestion settings (default: `<dir>/ingest`, no drop directory).
    pub ingest: Option<segmart_server::ingest::IngestSettings>,
    pub smtp: Option<segmart_server::mail::SmtpSettings>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate_limits: RateLimitSettings::default(),
            queue_capacity: 256,
            // 2026-01-01T00:00:00Z
            start: Timestamp::from_secs(1_767_225_600),
            ingest: None,
            smtp: None,
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub http: Client,
    pub clock: ManualClock,
    pub state: SharedState,
    pub dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A provider with one folder and a client holding every permission.
pub struct Tenant {
    pub provider: Provider,
    pub folder: Folder,
    pub client_id: String,
    pub client_secret: String,
    pub token: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, options, None).await
    }

    /// Starts a server over an existing data directory (restart tests).
    pub async fn start_in(
        dir: Arc<tempfile::TempDir>,
        options: Options,
        clock: Option<ManualClock>,
    ) -> TestServer {
        let clock = clock.unwrap_or_else(|| ManualClock::new(options.start));
        let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let catalog = Arc::new(
            SqliteCatalog::open(&dir.path().join("catalog.sqlite"))
                .await
                .expect("catalog opens"),
        );
        let target_entity = ops::target_entity(catalog.as_ref()).await.unwrap();
        catalog
            .set_setting(
                ops::OPERATOR_TOKEN_SETTING,
                &segmart_server::secrets::sha256_hex(OPERATOR_TOKEN),
            )
            .await
            .unwrap();
        let mut store_config = EmbeddedConfig::new(dir.path().join("profiles"));
        store_config.queue_capacity = options.queue_capacity;
        let store_clock = shared_clock.clone();
        let store = tokio::task::spawn_blocking(move || {
            EmbeddedProfileStore::open(store_config, store_clock)
        })
        .await
        .unwrap()
        .expect("profile store opens");
        let mut settings = Settings::new(target_entity);
        settings.rate_limits = options.rate_limits.clone();
        settings.catalog_poll_interval = std::time::Duration::from_millis(50);
        settings.smtp = options.smtp.clone();
        // Tests deliver mail themselves (`mail::deliver_due`), so the mailer task stays idle.
        settings.mail_interval = std::time::Duration::from_secs(3600);
        let key_path = dir.path().join("token.key");
        let key: [u8; 32] = match std::fs::read(&key_path) {
            Ok(bytes) => bytes.try_into().unwrap(),
            Err(_) => {
                let key = segmart_server::secrets::random_bytes::<32>();
                std::fs::write(&key_path, key).unwrap();
                key
            }
        };
        let ledger_dir = dir.path().join("ledger");
        let ledger = tokio::task::spawn_blocking(move || {
            segmart_storage::embedded_ledger::EmbeddedLedger::open(
                &ledger_dir,
                segmart_storage::embedded_ledger::LedgerConfig::default(),
            )
        })
        .await
        .unwrap()
        .expect("ledger opens");
        let billing = segmart_server::billing::BillingIndex::load(
            catalog.as_ref(),
            segmart_domain::billing::CurrencyCode::USD,
        )
        .await
        .unwrap();
        let state = Arc::new(AppState {
            ledger: Arc::new(ledger),
            billing,
            sizes: Default::default(),
            keyer: store.keyer().clone(),
            profiles: Arc::new(store),
            directory: Directory::load(catalog.as_ref()).await.unwrap(),
            catalog,
            limiter: RateLimiter::new(settings.rate_limits.clone(), shared_clock.clone()),
            clock: shared_clock,
            tokens: TokenSigner::new(key),
            metrics: Metrics::default(),
            settings,
            operator_token_sha256: segmart_server::secrets::sha256_hex(OPERATOR_TOKEN),
            ingest: segmart_server::ingest::IngestHub::new(options.ingest.clone().unwrap_or_else(
                || segmart_server::ingest::IngestSettings::new(dir.path().join("ingest")),
            )),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(segmart_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            base: format!("http://{addr}"),
            http: Client::new(),
            clock,
            state,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown: stops the server and flushes the profile store.
    pub async fn stop(mut self) -> (Arc<tempfile::TempDir>, ManualClock) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        (self.dir.clone(), self.clock.clone())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn target_entity(&self) -> String {
        self.state.settings.target_entity.to_string()
    }

    /// Creates a provider with a folder of `id_type` and an all-permission client, and a token.
    pub async fn tenant(&self, id_type: IdType) -> Tenant {
        self.tenant_with(id_type, PermissionSet::ALL).await
    }

    pub async fn tenant_with(&self, id_type: IdType, permissions: PermissionSet) -> Tenant {
        let catalog = self.state.catalog.as_ref();
        let clock = self.state.clock.as_ref();
        let provider = ops::create_provider(catalog, clock, "Acme Data")
            .await
            .unwrap();
        let folder = ops::create_folder(catalog, clock, provider.id, "main", id_type)
            .await
            .unwrap();
        self.state.directory.put_folder(folder.clone());
        let issued = ops::create_client(catalog, clock, provider.id, "sync", permissions)
            .await
            .unwrap();
        self.state.directory.put_client(issued.client.clone());
        let client_id = issued.client.id.to_string();
        let token = self
            .token(&client_id, &issued.secret, &permissions.to_string())
            .await;
        Tenant {
            provider,
            folder,
            client_id,
            client_secret: issued.secret,
            token,
        }
    }

    pub async fn token_response(&self, client_id: &str, secret: &str, perms: &str) -> Response {
        let scope = format!("target-entity:{}:{perms}", self.target_entity());
        self.grant(client_id, secret, &scope).await
    }

    /// `POST /oauth2/token` with the client-credentials grant, the form body written out as the
    /// seed's curl sends it (ids, secrets and scopes need no escaping).
    async fn grant(&self, client_id: &str, secret: &str, scope: &str) -> Response {
        let body = format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={secret}&scope={scope}"
        );
        self.http
            .post(self.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The client-credentials grant with a whole `scope` as given (e.g. `buyer:…`): the status
    /// and the JSON body.
    pub async fn scoped_token(&self, id: &str, secret: &str, scope: &str) -> (StatusCode, Value) {
        let response = self.grant(id, secret, scope).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn token(&self, client_id: &str, secret: &str, perms: &str) -> String {
        let response = self.token_response(client_id, secret, perms).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A new all-permission token for the tenant (after the clock moved past the old one).
    pub async fn fresh_token(&self, tenant: &Tenant) -> String {
        self.token(
            &tenant.client_id,
            &tenant.client_secret,
            &PermissionSet::ALL.to_string(),
        )
        .await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    /// `POST /auth` with a username and password: the status, the body and the session cookie
    /// (`name=value`) when one was set.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
    ) -> (StatusCode, Value, Option<String>) {
        let response = self
            .http
            .post(self.url("/auth"))
            .json(&json!({"auth": {"username": username, "password": password}}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let cookie = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        (status, body, cookie)
    }

    /// Signs `username` in with [`USER_PASSWORD`], asserting success: the session token and
    /// the session cookie (`name=value`).
    pub async fn session(&self, username: &str) -> (String, String) {
        let (status, body, cookie) = self.sign_in(username, USER_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["response"]["token"].as_str().unwrap().to_owned();
        (token, cookie.expect("a session cookie"))
    }

    /// Creates a sign-in user (password [`USER_PASSWORD`]) for the tenant's provider; returns
    /// the provider's member id (its billing-API `data_provider_id`).
    pub async fn provider_user(&self, tenant: &Tenant, username: &str) -> i64 {
        let catalog = self.state.catalog.as_ref();
        let member = catalog
            .member_of_provider(tenant.provider.id)
            .await
            .unwrap()
            .unwrap();
        ops::create_user(
            catalog,
            self.state.clock.as_ref(),
            username,
            USER_PASSWORD,
            UserRole::Provider(member.member_id),
        )
        .await
        .unwrap();
        member.member_id
    }

    /// Creates one segment per key in the tenant's folder through the segments API; returns
    /// their platform-assigned integer ids, in order.
    pub async fn create_segments(&self, tenant: &Tenant, keys: &[&str]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(keys.len());
        for key in keys {
            let (status, body) = self
                .post(
                    &tenant.segments_path(),
                    &tenant.token,
                    json!({"segmentId": key, "name": format!("{key} people")}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            ids.push(body["id"].as_u64().unwrap() as u32);
        }
        ids
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.send(reqwest::Method::GET, path, token, None).await;
        (s, v)
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .send(reqwest::Method::POST, path, token, Some(body))
            .await;
        (s, v)
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .send(reqwest::Method::PUT, path, token, Some(body))
            .await;
        (s, v)
    }
    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.send(reqwest::Method::DELETE, path, token, None).await;
        (s, v)
    }

    /// Creates a segment through the API.
    pub async fn segment(&self, tenant: &Tenant, id: &str, ttl_minutes: u32) {
        let (status, body) = self
            .post(
                &format!("/segmentproviders/{}/segments", tenant.folder.id),
                &tenant.token,
                json!({"segmentId": id, "name": format!("Segment {id}"), "ttl": ttl_minutes}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

impl Tenant {
    pub fn segments_path(&self) -> String {
        format!("/segmentproviders/{}/segments", self.folder.id)
    }
    pub fn profiles_path(&self) -> String {
        format!("/segmentproviders/{}/profiles", self.folder.id)
    }
    pub fn profile_path(&self, id: &str) -> String {
        format!("/segmentproviders/{}/profiles/{}", self.folder.id, id)
    }
}

/// Segment ids of a GET profile answer, sorted.
pub fn segment_ids(profile: &Value) -> Vec<String> {
    let mut ids: Vec<String> = profile["segments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}
