//! Configuration: defaults, then a TOML file, then `SEGMART_*` environment variables, then
//! command-line flags. Unknown keys anywhere are an error.
//!
//! Environment variables name a key by its path in upper case with `__` between levels:
//! `SEGMART_LISTEN=0.0.0.0:8080`, `SEGMART_LIMITS__PROFILE_REQUESTS_PER_SECOND=5000`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the catalog, the profile store and the keys live.
    pub data_dir: PathBuf,
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// The URL clients reach this server at (demo walk-through, links); defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// The region this node serves.
    pub region: String,
    /// Log filter (`info`, `segmart=debug`, …).
    pub log: String,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub profiles: ProfilesConfig,
    pub ingest: IngestConfig,
    pub billing: BillingConfig,
    pub mail: MailConfig,
}

/// `[mail]`: notifications (share keys sent, revocations).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// `host:port` of an SMTP relay (plain SMTP, e.g. the host's MTA); unset: mail stays in the
    /// outbox for the operator (`segmart admin outbox`).
    pub smtp_relay: Option<String>,
    /// The sender address.
    pub from: String,
    /// How often the outbox is checked for mail to send or retry.
    pub interval_secs: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_relay: None,
            from: "segmart@localhost".into(),
            interval_secs: 5,
        }
    }
}

/// `[billing]`: metering and sign-in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// ISO 4217 code every charge is converted into (USD).
    pub settlement_currency: String,
    /// Lifetime of a `POST /auth` session (2 hours).
    pub session_ttl_secs: i64,
    /// Usage batches that may wait for the ledger; beyond, the bidder gets 429.
    pub ledger_queue_capacity: usize,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            settlement_currency: "USD".into(),
            session_ttl_secs: 7200,
            ledger_queue_capacity: 1024,
        }
    }
}

/// `[ingest]`: batch file ingestion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The watched drop directory; `<data_dir>/drop` when unset.
    pub drop_dir: Option<PathBuf>,
    /// Whether `segmart serve` watches the drop directory.
    pub watch_drop_dir: bool,
    /// How often the drop directory is listed (a file is taken once it is unchanged across two
    /// listings) and how often the worker looks for queued files it was not told about.
    pub poll_interval_ms: u64,
    /// Lines per durable profile-store write.
    pub batch_lines: usize,
    /// Bytes of resolved write batches a data file's parse side may hold ahead of the store,
    /// most of all while the gzip check runs (nothing is written before it passed).
    pub resolve_ahead_bytes: u64,
    /// Largest accepted HTTP upload.
    pub max_upload_bytes: u64,
    /// Largest accepted taxonomy file.
    pub max_taxonomy_bytes: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            drop_dir: None,
            watch_drop_dir: true,
            poll_interval_ms: 1000,
            batch_lines: 32_768,
            resolve_ahead_bytes: 128 << 20,
            max_upload_bytes: 64 << 30,
            max_taxonomy_bytes: 64 << 20,
        }
    }
}

impl IngestConfig {
    /// The server-side settings for a data directory.
    pub fn settings(&self, data_dir: &Path) -> segmart_server::ingest::IngestSettings {
        let mut settings = segmart_server::ingest::IngestSettings::new(data_dir.join("ingest"));
        settings.drop_dir = self.watch_drop_dir.then(|| {
            self.drop_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("drop"))
        });
        settings.poll_interval = std::time::Duration::from_millis(self.poll_interval_ms);
        settings.batch_lines = self.batch_lines;
        settings.resolve_ahead_bytes = self.resolve_ahead_bytes;
        settings.max_upload_bytes = self.max_upload_bytes;
        settings.max_taxonomy_bytes = self.max_taxonomy_bytes;
        settings
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of issued bearer tokens.
    pub token_ttl_secs: i64,
    /// The OAuth `target-entity` UUID; generated and kept in the catalog when unset.
    pub target_entity: Option<Uuid>,
    /// File holding the 32-byte token signing key; `<data_dir>/token.key` (created) when unset.
    /// Nodes of one deployment share it.
    pub token_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub segment_requests_per_day: u32,
    pub profile_requests_per_second: u32,
    pub ban_secs: u64,
    pub max_batch_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// Profiles without an update for this long are deleted (14 days).
    pub expiry_secs: i64,
    /// How often expired links and profiles are reclaimed.
    pub cleanup_interval_secs: u64,
    /// Profile write batches that may wait for the log; beyond, writers get 429.
    pub queue_capacity: usize,
    /// Write a snapshot (and drop older log segments) after this many log bytes.
    pub snapshot_after_wal_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./segmart-data"),
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            public_url: None,
            region: "default".into(),
            log: "info".into(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            profiles: ProfilesConfig::default(),
            ingest: IngestConfig::default(),
            billing: BillingConfig::default(),
            mail: MailConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl_secs: 3599,
            target_entity: None,
            token_key_file: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            segment_requests_per_day: 1000,
            profile_requests_per_second: 1000,
            ban_secs: 300,
            max_batch_bytes: segmart_domain::profile::MAX_BATCH_BYTES,
        }
    }
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig {
            expiry_secs: segmart_domain::profile::DEFAULT_PROFILE_EXPIRY_SECS,
            cleanup_interval_secs: 60,
            queue_capacity: 256,
            snapshot_after_wal_bytes: 1 << 30,
        }
    }
}

impl Config {
    /// Loads the configuration from an optional file and the given environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("config file {} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut from_env = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("SEGMART_") else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_lowercase()).collect();
            insert(&mut table, &path, parse_env_value(&raw))
                .with_context(|| format!("environment variable {name}"))?;
            from_env.push(name);
        }
        let config = Config::deserialize(toml::Value::Table(table)).with_context(|| {
            if from_env.is_empty() {
                "invalid configuration".to_string()
            } else {
                format!(
                    "invalid configuration (from the file and the environment variables {})",
                    from_env.join(", ")
                )
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.auth.token_ttl_secs < 60 {
            bail!("auth.token_ttl_secs must be at least 60");
        }
        if self.limits.segment_requests_per_day == 0 || self.limits.profile_requests_per_second == 0
        {
            bail!(
                "limits.segment_requests_per_day and limits.profile_requests_per_second must be positive"
            );
        }
        if self.profiles.expiry_secs < 60 {
            bail!("profiles.expiry_secs must be at least 60");
        }
        if self.profiles.queue_capacity == 0 {
            bail!("profiles.queue_capacity must be positive");
        }
        if self.ingest.poll_interval_ms == 0 || self.ingest.batch_lines == 0 {
            bail!("ingest.poll_interval_ms and ingest.batch_lines must be positive");
        }
        if let Err(e) =
            segmart_domain::billing::CurrencyCode::parse(&self.billing.settlement_currency)
        {
            bail!("billing.settlement_currency: {e}");
        }
        if self.billing.session_ttl_secs < 60 || self.billing.ledger_queue_capacity == 0 {
            bail!(
                "billing.session_ttl_secs must be at least 60 and billing.ledger_queue_capacity positive"
            );
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(raw.to_owned())
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => insert(inner, rest, value),
                _ => bail!("{first} is not a section"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./segmart-data"));
        assert_eq!(config.limits.segment_requests_per_day, 1000);
        assert_eq!(config.profiles.expiry_secs, 14 * 86_400);
    }

    #[test]
    fn file_then_environment_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segmart.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[limits]\nprofile_requests_per_second = 50\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            env(&[
                ("SEGMART_LIMITS__PROFILE_REQUESTS_PER_SECOND", "70"),
                ("SEGMART_DATA_DIR", "/var/lib/segmart"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.limits.profile_requests_per_second, 70);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/segmart"));
    }

    #[test]
    fn ingest_settings_default_under_the_data_directory() {
        let config = Config::load(
            None,
            env(&[
                ("SEGMART_INGEST__BATCH_LINES", "1000"),
                ("SEGMART_DATA_DIR", "/d"),
            ]),
        )
        .unwrap();
        let settings = config.ingest.settings(&config.data_dir);
        assert_eq!(settings.dir, PathBuf::from("/d/ingest"));
        assert_eq!(settings.drop_dir, Some(PathBuf::from("/d/drop")));
        assert_eq!(settings.batch_lines, 1000);
        let off = Config::load(None, env(&[("SEGMART_INGEST__WATCH_DROP_DIR", "false")])).unwrap();
        assert_eq!(off.ingest.settings(&off.data_dir).drop_dir, None);
        assert!(Config::load(None, env(&[("SEGMART_INGEST__DROP", "x")])).is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segmart.toml");
        std::fs::write(&path, "[limits]\nprofile_requests_per_minute = 5\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(
            format!("{err:#}").contains("profile_requests_per_minute"),
            "{err:#}"
        );
        let err = Config::load(None, env(&[("SEGMART_LISTN", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
    }
}
