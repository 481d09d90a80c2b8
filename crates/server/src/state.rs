//! What every request handler can reach.

use std::sync::Arc;
use std::time::Duration;

use segmart_domain::Clock;
use segmart_storage::catalog::Catalog;
use segmart_storage::ledger::Ledger;
use segmart_storage::profile::{ProfileKeyer, ProfileStore};
use uuid::Uuid;

use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimitSettings, RateLimiter};
use crate::token::TokenSigner;

/// Server behaviour that configuration may change.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The region this node serves; profiles written here are targetable only here.
    pub region: String,
    /// The `target-entity` UUID clients name in their OAuth scope.
    pub target_entity: Uuid,
    /// Lifetime of issued tokens (3599 s).
    pub token_ttl_secs: i64,
    pub rate_limits: RateLimitSettings,
    /// Largest profile batch body (1 MB).
    pub max_batch_bytes: usize,
    /// How often the catalog is checked for changes made elsewhere.
    pub catalog_poll_interval: Duration,
    /// Lifetime of a `POST /auth` session (2 hours).
    pub session_ttl_secs: i64,
    /// The URL clients reach this server at (activation links); else the request's `Host`.
    pub public_url: Option<String>,
    /// The SMTP relay of the mailer; `None`: mail stays in the outbox.
    pub smtp: Option<crate::mail::SmtpSettings>,
    /// How often the mailer looks for mail to send.
    pub mail_interval: Duration,
}

impl Settings {
    pub fn new(target_entity: Uuid) -> Self {
        Settings {
            region: "default".into(),
            target_entity,
            token_ttl_secs: 3599,
            rate_limits: RateLimitSettings::default(),
            max_batch_bytes: segmart_domain::profile::MAX_BATCH_BYTES,
            catalog_poll_interval: Duration::from_secs(1),
            session_ttl_secs: 7200,
            public_url: None,
            smtp: None,
            mail_interval: Duration::from_secs(5),
        }
    }
}

/// Shared state of one server instance.
pub struct AppState {
    pub catalog: Arc<dyn Catalog>,
    pub profiles: Arc<dyn ProfileStore>,
    /// Turns (folder, profile id) into store keys; owned by the profile store's deployment.
    pub keyer: ProfileKeyer,
    pub clock: Arc<dyn Clock>,
    pub tokens: TokenSigner,
    pub directory: Arc<Directory>,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    pub settings: Settings,
    /// SHA-256 (hex) of the operator token that guards `/admin`.
    pub operator_token_sha256: String,
    /// Batch file ingestion: spool, worker wake-up and progress.
    pub ingest: Arc<crate::ingest::IngestHub>,
    /// The billing ledger: one durable record per metered impression.
    pub ledger: Arc<dyn Ledger>,
    /// What metering needs to price impressions, cached from the catalog.
    pub billing: Arc<crate::billing::BillingIndex>,
    /// Segment sizes shown to buyers, cached.
    pub sizes: crate::billing::sharing::SizeCache,
}

pub type SharedState = Arc<AppState>;
