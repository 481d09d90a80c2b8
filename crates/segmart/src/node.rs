//! Assembling a node: data directory, keys, catalog, profile store, server.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use segmart_domain::{Clock, SystemClock};
use segmart_server::directory::Directory;
use segmart_server::metrics::Metrics;
use segmart_server::ratelimit::{RateLimitSettings, RateLimiter};
use segmart_server::token::TokenSigner;
use segmart_server::{AppState, Settings, SharedState, ops};
use segmart_storage::catalog::Catalog;
use segmart_storage::embedded::{EmbeddedConfig, EmbeddedProfileStore};
use segmart_storage::sqlite::SqliteCatalog;

use crate::config::Config;

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Also create a demo provider, folder, OAuth client and segments, write demo.json into the
    /// data directory and print a curl walk-through.
    #[arg(long)]
    pub demo: bool,
    /// Listen address (overrides the configuration).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Opens the catalog of a data directory.
pub async fn open_catalog(data_dir: &Path) -> anyhow::Result<Arc<SqliteCatalog>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let catalog = SqliteCatalog::open(&data_dir.join("catalog.sqlite"))
        .await
        .with_context(|| format!("cannot open the catalog in {}", data_dir.display()))?;
    Ok(Arc::new(catalog))
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn token_key(config: &Config) -> anyhow::Result<[u8; 32]> {
    let path = config
        .auth
        .token_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("token.key"));
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes.try_into().map_err(|_| {
            anyhow::anyhow!(
                "token key file {} must hold exactly 32 bytes",
                path.display()
            )
        });
    }
    let key = segmart_server::secrets::random_bytes::<32>();
    write_private(&path, &key)?;
    Ok(key)
}

/// Everything a running node holds.
pub struct Node {
    pub state: SharedState,
    pub catalog: Arc<SqliteCatalog>,
}

/// Opens the stores of `config.data_dir` and builds the server state.
pub async fn open_node(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Node> {
    let catalog = open_catalog(&config.data_dir).await?;
    let target_entity = match config.auth.target_entity {
        Some(uuid) => uuid,
        None => ops::target_entity(catalog.as_ref()).await?,
    };
    let operator_token_sha256 = match catalog.get_setting(ops::OPERATOR_TOKEN_SETTING).await? {
        Some(hash) => hash,
        None => {
            let token = ops::new_operator_token(catalog.as_ref()).await?;
            let path = config.data_dir.join("operator.token");
            write_private(&path, token.as_bytes())?;
            eprintln!(
                "created the operator token for the /admin API; it is in {} (readable by you only)",
                path.display()
            );
            catalog
                .get_setting(ops::OPERATOR_TOKEN_SETTING)
                .await?
                .context("operator token hash missing after creation")?
        }
    };
    let mut store_config = EmbeddedConfig::new(config.data_dir.join("profiles"));
    store_config.profile_expiry_secs = config.profiles.expiry_secs;
    store_config.queue_capacity = config.profiles.queue_capacity;
    store_config.snapshot_after_wal_bytes = config.profiles.snapshot_after_wal_bytes;
    store_config.cleanup_interval = Duration::from_secs(config.profiles.cleanup_interval_secs);
    let store_clock = clock.clone();
    let store =
        tokio::task::spawn_blocking(move || EmbeddedProfileStore::open(store_config, store_clock))
            .await?
            .with_context(|| {
                format!(
                    "cannot open the profile store in {}",
                    config.data_dir.join("profiles").display()
                )
            })?;
    let keyer = store.keyer().clone();
    let directory = Directory::load(catalog.as_ref()).await?;
    let ledger_dir = config.data_dir.join("ledger");
    let ledger_config = segmart_storage::embedded_ledger::LedgerConfig {
        queue_capacity: config.billing.ledger_queue_capacity,
        ..Default::default()
    };
    let ledger = {
        let dir = ledger_dir.clone();
        tokio::task::spawn_blocking(move || {
            segmart_storage::embedded_ledger::EmbeddedLedger::open(&dir, ledger_config)
        })
        .await?
        .with_context(|| format!("cannot open the ledger in {}", ledger_dir.display()))?
    };
    let settlement =
        segmart_domain::billing::CurrencyCode::parse(&config.billing.settlement_currency)
            .map_err(anyhow::Error::msg)?;
    let billing = segmart_server::billing::BillingIndex::load(catalog.as_ref(), settlement).await?;
    let mut settings = Settings::new(target_entity);
    settings.region = config.region.clone();
    settings.token_ttl_secs = config.auth.token_ttl_secs;
    settings.session_ttl_secs = config.billing.session_ttl_secs;
    settings.public_url = config.public_url.clone();
    settings.smtp =
        config
            .mail
            .smtp_relay
            .clone()
            .map(|relay| segmart_server::mail::SmtpSettings {
                relay,
                from: config.mail.from.clone(),
            });
    settings.mail_interval = Duration::from_secs(config.mail.interval_secs.max(1));
    settings.max_batch_bytes = config.limits.max_batch_bytes;
    settings.rate_limits = RateLimitSettings {
        segment_requests_per_day: config.limits.segment_requests_per_day,
        profile_requests_per_second: config.limits.profile_requests_per_second,
        ban_secs: config.limits.ban_secs,
    };
    let state = Arc::new(AppState {
        catalog: catalog.clone(),
        profiles: Arc::new(store),
        keyer,
        limiter: RateLimiter::new(settings.rate_limits.clone(), clock.clone()),
        clock,
        tokens: TokenSigner::new(token_key(config)?),
        directory,
        metrics: Metrics::default(),
        settings,
        operator_token_sha256,
        ingest: segmart_server::ingest::IngestHub::new(config.ingest.settings(&config.data_dir)),
        ledger: Arc::new(ledger),
        billing,
        sizes: Default::default(),
    });
    Ok(Node { state, catalog })
}

/// Installs the SIGINT/SIGTERM handlers now (so a signal arriving while the server starts is not
/// lost to the default action) and returns a future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutdown requested; finishing requests in flight and flushing");
    })
}

pub async fn serve(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    init_logging(&config.log);
    let shutdown = shutdown_signal()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let node = open_node(&config, clock).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{local}"));
    }
    if args.demo {
        crate::demo::prepare(&config, &node).await?;
    }
    tracing::info!(address = %local, data_dir = %config.data_dir.display(), region = %config.region, "segmart is listening");
    segmart_server::serve(listener, node.state, shutdown).await?;
    tracing::info!("segmart stopped; every acknowledged write is on disk");
    Ok(())
}
