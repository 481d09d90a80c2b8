//! The embedded catalog: one SQLite file shared by the server and the admin CLI.
//!
//! Every trait method is one transaction. Writes start with `BEGIN IMMEDIATE`, so they take the
//! database write lock up front and wait (up to [`BUSY_TIMEOUT`]) for another process's write to
//! finish instead of failing half-way; each bumps the change generation just before it commits
//! (see `commit_change`). The file runs in WAL mode, so readers never wait for the writer.
//!
//! The schema lives in `migrations/sqlite/*.sql`, the statements in `src/sqlite/queries/*.sql`;
//! database error codes are read in one place, `error::catalog_error`.

mod billing;
mod error;
mod ingest;
mod queries;
mod rows;
mod sharing;

pub use self::billing::validate_price;
pub use self::ingest::{DMP_ID_MAX_CHARS, validate_cost, validate_dmp_id};

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use segmart_domain::segment::{Segment, SegmentSpec};
use segmart_domain::{
    ClientId, FieldError, FolderId, IdType, PermissionSet, ProviderId, SegmentKey, Timestamp,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlSafeStr, Sqlite, SqliteConnection, SqlitePool, Transaction};

use self::error::{backend_error, catalog_error, is_busy, migration_error};
use self::queries::*;
use crate::catalog::{
    Catalog, CatalogError, CatalogResult, Folder, IngestCounts, IngestFile, IngestKind,
    IngestOutcome, NewIngestFile, OAuthClient, Provider, TaxonomySegment,
};

/// How long a statement waits for another connection or process holding the write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of a file-backed catalog: SQLite serialises writers anyway, a few connections
/// let reads proceed beside a write.
const POOL_SIZE: u32 = 4;

/// The schema migrations, in version order: `(version, description, sql)`.
/// Every file of `migrations/sqlite` is listed here; a test checks that none is forgotten.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "batch_ingest",
        include_str!("../../migrations/sqlite/0002_batch_ingest.sql"),
    ),
    (
        3,
        "billing",
        include_str!("../../migrations/sqlite/0003_billing.sql"),
    ),
    (
        4,
        "sharing",
        include_str!("../../migrations/sqlite/0004_sharing.sql"),
    ),
    (
        5,
        "buyer_clients",
        include_str!("../../migrations/sqlite/0005_buyer_clients.sql"),
    ),
];

/// The catalog stored in SQLite. Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
}

impl SqliteCatalog {
    /// Opens the catalog file at `path`, creating it when missing, and brings its schema up to
    /// date. The directory must exist. The file may be open in other processes at the same time.
    pub async fn open(path: &Path) -> CatalogResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = connect_file(options).await.map_err(|error| {
            CatalogError::Backend(format!("cannot open catalog {}: {error}", path.display()))
        })?;
        Self::migrated(pool).await
    }

    /// Opens an empty catalog that lives in memory until the last clone is dropped.
    pub async fn open_in_memory() -> CatalogResult<Self> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        // An in-memory database belongs to its connection: keep exactly one, for ever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(backend_error)?;
        Self::migrated(pool).await
    }

    /// Closes every connection after the statements under way complete. Clones stop working.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Brings the schema up to date inside one write transaction, so two processes opening a
    /// new file at the same moment migrate it once: the second waits for the first, then finds
    /// nothing left to do (sqlx takes no migration lock on SQLite). Each migration runs in a
    /// savepoint of that transaction.
    async fn migrated(pool: SqlitePool) -> CatalogResult<Self> {
        let catalog = SqliteCatalog { pool };
        let mut tx = catalog.begin_write().await?;
        // `Migrator::run(&mut tx)` would do the same, but its `Acquire` bound makes the future
        // of `open` not `Send` ("implementation of `Acquire` is not general enough");
        // `run_direct` is the connection-level entry point sqlx keeps for this case.
        migrator()
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(migration_error)?;
        tx.commit().await.map_err(backend_error)?;
        Ok(catalog)
    }

    /// Starts a write transaction holding the database write lock.
    async fn begin_write(&self) -> CatalogResult<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)
    }
}

/// Opens the pool of a file-backed catalog.
///
/// Switching a new file to WAL mode needs the file to itself, and SQLite reports "busy" at once
/// rather than waiting when another process is setting up the same new file; those attempts are
/// retried until [`BUSY_TIMEOUT`]. Once the file is in WAL mode, opening never waits.
async fn connect_file(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let attempt = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options.clone())
            .await;
        match attempt {
            Err(error) if is_busy(&error) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return result,
        }
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Counts the change and commits it. Every write transaction that changed something ends here,
/// so the generation grows with each committed change; a transaction dropped without it rolls
/// back and leaves the generation alone.
async fn commit_change(mut tx: Transaction<'static, Sqlite>) -> CatalogResult<()> {
    sqlx::query(BUMP_GENERATION)
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
    tx.commit().await.map_err(backend_error)
}

async fn fetch_provider(
    conn: &mut SqliteConnection,
    id: ProviderId,
) -> CatalogResult<Option<Provider>> {
    let row = sqlx::query(GET_PROVIDER)
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    row.as_ref().map(rows::provider).transpose()
}

async fn require_provider(conn: &mut SqliteConnection, id: ProviderId) -> CatalogResult<()> {
    match fetch_provider(conn, id).await? {
        Some(_) => Ok(()),
        None => Err(CatalogError::NotFound(format!("provider {id}"))),
    }
}

async fn fetch_folder(conn: &mut SqliteConnection, id: FolderId) -> CatalogResult<Option<Folder>> {
    let row = sqlx::query(GET_FOLDER)
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    row.as_ref().map(rows::folder).transpose()
}

async fn require_folder(conn: &mut SqliteConnection, id: FolderId) -> CatalogResult<()> {
    match fetch_folder(conn, id).await? {
        Some(_) => Ok(()),
        None => Err(CatalogError::NotFound(format!("folder {id}"))),
    }
}

/// Inserts a folder unless one with this id exists; `None` when it does.
async fn insert_folder(
    conn: &mut SqliteConnection,
    id: FolderId,
    provider: ProviderId,
    name: &str,
    id_type: &IdType,
    now: Timestamp,
) -> CatalogResult<Option<Folder>> {
    let row = sqlx::query(INSERT_FOLDER)
        .bind(id.to_string())
        .bind(provider.to_string())
        .bind(name)
        .bind(id_type.name())
        .bind(id_type.vendor())
        .bind(now.millis())
        .fetch_optional(conn)
        .await
        .map_err(|error| {
            catalog_error(
                error,
                &format!("folder {id}"),
                &format!("provider {provider}"),
            )
        })?;
    row.as_ref().map(rows::folder).transpose()
}

async fn fetch_segment(
    conn: &mut SqliteConnection,
    folder: FolderId,
    key: &SegmentKey,
) -> CatalogResult<Option<Segment>> {
    let row = sqlx::query(GET_SEGMENT)
        .bind(folder.to_string())
        .bind(key.as_str())
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    row.as_ref().map(rows::segment).transpose()
}

/// Checks the parent a segment is about to get: not the segment itself, present in the same
/// folder and, when the segment exists already (and may have children), not below it.
async fn check_parent(
    conn: &mut SqliteConnection,
    folder: FolderId,
    key: &SegmentKey,
    parent: &SegmentKey,
    segment_exists: bool,
) -> CatalogResult<()> {
    let refuse =
        |message: String| CatalogError::Invalid(FieldError::new("parentSegmentId", message));
    if parent == key {
        return Err(refuse(format!("segment {key} cannot be its own parent")));
    }
    if fetch_segment(conn, folder, parent).await?.is_none() {
        return Err(refuse(format!(
            "segment {parent} does not exist in this folder"
        )));
    }
    if segment_exists {
        let parent_descends_from_segment: bool = sqlx::query_scalar(LINEAGE_CONTAINS)
            .bind(folder.to_string())
            .bind(parent.as_str())
            .bind(key.as_str())
            .fetch_one(conn)
            .await
            .map_err(backend_error)?;
        if parent_descends_from_segment {
            return Err(refuse(format!(
                "segment {parent} is a descendant of {key}; the hierarchy must not loop"
            )));
        }
    }
    Ok(())
}

/// Runs one of the segment write statements, which share their parameters.
async fn write_segment(
    conn: &mut SqliteConnection,
    statement: &'static str,
    folder: FolderId,
    key: &SegmentKey,
    spec: &SegmentSpec,
    now: Timestamp,
) -> CatalogResult<Segment> {
    let row = sqlx::query(statement)
        .bind(folder.to_string())
        .bind(key.as_str())
        .bind(spec.name.as_str())
        .bind(spec.description.as_str())
        .bind(spec.price)
        .bind(i64::from(spec.ttl_minutes))
        .bind(spec.active)
        .bind(spec.selectable)
        .bind(spec.parent.as_ref().map(SegmentKey::as_str))
        .bind(now.millis())
        .fetch_one(conn)
        .await
        .map_err(|error| {
            catalog_error(
                error,
                &format!("segment {key}"),
                &format!("folder {folder}"),
            )
        })?;
    rows::segment(&row)
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn create_provider(&self, name: &str, now: Timestamp) -> CatalogResult<Provider> {
        let mut tx = self.begin_write().await?;
        let id = ProviderId::random();
        let row = sqlx::query(INSERT_PROVIDER)
            .bind(id.to_string())
            .bind(name)
            .bind(now.millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| CatalogError::AlreadyExists(format!("provider {id}")))?;
        let provider = rows::provider(&row)?;
        commit_change(tx).await?;
        Ok(provider)
    }

    async fn ensure_provider(
        &self,
        id: ProviderId,
        name: &str,
        now: Timestamp,
    ) -> CatalogResult<Provider> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(INSERT_PROVIDER)
            .bind(id.to_string())
            .bind(name)
            .bind(now.millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?;
        match inserted {
            Some(row) => {
                let provider = rows::provider(&row)?;
                commit_change(tx).await?;
                Ok(provider)
            }
            None => fetch_provider(&mut tx, id)
                .await?
                .ok_or_else(|| CatalogError::NotFound(format!("provider {id}"))),
        }
    }

    async fn get_provider(&self, id: ProviderId) -> CatalogResult<Option<Provider>> {
        let row = sqlx::query(GET_PROVIDER)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.as_ref().map(rows::provider).transpose()
    }

    async fn list_providers(&self) -> CatalogResult<Vec<Provider>> {
        let found = sqlx::query(LIST_PROVIDERS)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(rows::provider).collect()
    }

    async fn create_folder(
        &self,
        provider: ProviderId,
        name: &str,
        id_type: IdType,
        now: Timestamp,
    ) -> CatalogResult<Folder> {
        let mut tx = self.begin_write().await?;
        require_provider(&mut tx, provider).await?;
        let id = FolderId::random();
        let folder = insert_folder(&mut tx, id, provider, name, &id_type, now)
            .await?
            .ok_or_else(|| CatalogError::AlreadyExists(format!("folder {id}")))?;
        commit_change(tx).await?;
        Ok(folder)
    }

    async fn ensure_folder(
        &self,
        id: FolderId,
        provider: ProviderId,
        name: &str,
        id_type: IdType,
        now: Timestamp,
    ) -> CatalogResult<Folder> {
        let mut tx = self.begin_write().await?;
        if let Some(existing) = fetch_folder(&mut tx, id).await? {
            return Ok(existing);
        }
        require_provider(&mut tx, provider).await?;
        let folder = insert_folder(&mut tx, id, provider, name, &id_type, now)
            .await?
            .ok_or_else(|| CatalogError::AlreadyExists(format!("folder {id}")))?;
        commit_change(tx).await?;
        Ok(folder)
    }

    async fn get_folder(&self, id: FolderId) -> CatalogResult<Option<Folder>> {
        let row = sqlx::query(GET_FOLDER)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.as_ref().map(rows::folder).transpose()
    }

    async fn list_folders(&self, provider: Option<ProviderId>) -> CatalogResult<Vec<Folder>> {
        let found = sqlx::query(LIST_FOLDERS)
            .bind(provider.map(|id| id.to_string()))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(rows::folder).collect()
    }

    async fn create_client(
        &self,
        provider: ProviderId,
        name: &str,
        permissions: PermissionSet,
        secret_hash: &str,
        now: Timestamp,
    ) -> CatalogResult<OAuthClient> {
        let mut tx = self.begin_write().await?;
        require_provider(&mut tx, provider).await?;
        let id = ClientId::random();
        let row = sqlx::query(INSERT_CLIENT)
            .bind(id.to_string())
            .bind(provider.to_string())
            .bind(name)
            .bind(i64::from(permissions.bits()))
            .bind(secret_hash)
            .bind(now.millis())
            .fetch_one(&mut *tx)
            .await
            .map_err(|error| {
                catalog_error(
                    error,
                    &format!("client {id}"),
                    &format!("provider {provider}"),
                )
            })?;
        let client = rows::client(&row)?;
        commit_change(tx).await?;
        Ok(client)
    }

    async fn get_client(&self, id: ClientId) -> CatalogResult<Option<OAuthClient>> {
        let row = sqlx::query(GET_CLIENT)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.as_ref().map(rows::client).transpose()
    }

    async fn list_clients(&self, provider: Option<ProviderId>) -> CatalogResult<Vec<OAuthClient>> {
        let found = sqlx::query(LIST_CLIENTS)
            .bind(provider.map(|id| id.to_string()))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(rows::client).collect()
    }

    async fn rotate_client(&self, id: ClientId, secret_hash: &str) -> CatalogResult<OAuthClient> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(ROTATE_CLIENT)
            .bind(id.to_string())
            .bind(secret_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| CatalogError::NotFound(format!("client {id}")))?;
        let client = rows::client(&row)?;
        commit_change(tx).await?;
        Ok(client)
    }

    async fn revoke_client(&self, id: ClientId) -> CatalogResult<OAuthClient> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(REVOKE_CLIENT)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| CatalogError::NotFound(format!("client {id}")))?;
        let client = rows::client(&row)?;
        commit_change(tx).await?;
        Ok(client)
    }

    async fn create_segment(
        &self,
        folder: FolderId,
        key: &SegmentKey,
        spec: &SegmentSpec,
        now: Timestamp,
    ) -> CatalogResult<Segment> {
        let mut tx = self.begin_write().await?;
        require_folder(&mut tx, folder).await?;
        if fetch_segment(&mut tx, folder, key).await?.is_some() {
            return Err(CatalogError::AlreadyExists(format!("segment {key}")));
        }
        if let Some(parent) = &spec.parent {
            check_parent(&mut tx, folder, key, parent, false).await?;
        }
        let segment = write_segment(&mut tx, INSERT_SEGMENT, folder, key, spec, now).await?;
        commit_change(tx).await?;
        Ok(segment)
    }

    async fn put_segment(
        &self,
        folder: FolderId,
        key: &SegmentKey,
        spec: &SegmentSpec,
        now: Timestamp,
    ) -> CatalogResult<(Segment, bool)> {
        let mut tx = self.begin_write().await?;
        require_folder(&mut tx, folder).await?;
        let exists = fetch_segment(&mut tx, folder, key).await?.is_some();
        if let Some(parent) = &spec.parent {
            check_parent(&mut tx, folder, key, parent, exists).await?;
        }
        let statement = if exists {
            UPDATE_SEGMENT
        } else {
            INSERT_SEGMENT
        };
        let segment = write_segment(&mut tx, statement, folder, key, spec, now).await?;
        commit_change(tx).await?;
        Ok((segment, !exists))
    }

    async fn get_segment(
        &self,
        folder: FolderId,
        key: &SegmentKey,
    ) -> CatalogResult<Option<Segment>> {
        let row = sqlx::query(GET_SEGMENT)
            .bind(folder.to_string())
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.as_ref().map(rows::segment).transpose()
    }

    async fn list_segments(
        &self,
        folder: FolderId,
        after: Option<&SegmentKey>,
        limit: u32,
    ) -> CatalogResult<Vec<Segment>> {
        let found = sqlx::query(LIST_SEGMENTS_PAGE)
            .bind(folder.to_string())
            .bind(after.map_or("", SegmentKey::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(rows::segment).collect()
    }

    async fn count_segments(&self, folder: FolderId) -> CatalogResult<u64> {
        let count: i64 = sqlx::query_scalar(COUNT_SEGMENTS)
            .bind(folder.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
        u64::try_from(count).map_err(|error| error::corrupt("segment count", error))
    }

    async fn all_segments(&self) -> CatalogResult<Vec<Segment>> {
        let found = sqlx::query(ALL_SEGMENTS)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        found.iter().map(rows::segment).collect()
    }

    async fn get_setting(&self, key: &str) -> CatalogResult<Option<String>> {
        sqlx::query_scalar(GET_SETTING)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)
    }

    async fn set_setting(&self, key: &str, value: &str) -> CatalogResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(SET_SETTING)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        commit_change(tx).await
    }

    async fn set_provider_dmp_id(
        &self,
        id: ProviderId,
        dmp_id: Option<&str>,
    ) -> CatalogResult<Provider> {
        self.sqlite_set_provider_dmp_id(id, dmp_id).await
    }

    async fn set_provider_default_pricing(
        &self,
        id: ProviderId,
        pricing: Option<segmart_domain::pricing::Cost>,
    ) -> CatalogResult<Provider> {
        self.sqlite_set_provider_default_pricing(id, pricing).await
    }

    async fn provider_by_dmp_id(&self, dmp_id: &str) -> CatalogResult<Option<Provider>> {
        self.sqlite_provider_by_dmp_id(dmp_id).await
    }

    async fn register_ingest_file(
        &self,
        new: &NewIngestFile,
        now: Timestamp,
    ) -> CatalogResult<IngestFile> {
        self.sqlite_register_ingest_file(new, now).await
    }

    async fn start_ingest_file(
        &self,
        id: i64,
        apply_at: Timestamp,
        now: Timestamp,
    ) -> CatalogResult<IngestFile> {
        self.sqlite_start_ingest_file(id, apply_at, now).await
    }

    async fn finish_ingest_file(
        &self,
        id: i64,
        outcome: &IngestOutcome,
        now: Timestamp,
    ) -> CatalogResult<IngestFile> {
        self.sqlite_finish_ingest_file(id, outcome, now).await
    }

    async fn apply_taxonomy(
        &self,
        id: i64,
        segments: &[TaxonomySegment],
        counts: &IngestCounts,
        now: Timestamp,
    ) -> CatalogResult<(IngestFile, Vec<Segment>)> {
        self.sqlite_apply_taxonomy(id, segments, counts, now).await
    }

    async fn get_ingest_file(&self, id: i64) -> CatalogResult<Option<IngestFile>> {
        self.sqlite_get_ingest_file(id).await
    }

    async fn ingest_deliveries(
        &self,
        provider: ProviderId,
        file_id: &str,
    ) -> CatalogResult<Vec<IngestFile>> {
        self.sqlite_ingest_deliveries(provider, file_id).await
    }

    async fn list_ingest_files(
        &self,
        provider: ProviderId,
        before: Option<i64>,
        limit: u32,
    ) -> CatalogResult<Vec<IngestFile>> {
        self.sqlite_list_ingest_files(provider, before, limit).await
    }

    async fn next_ingest_file(&self) -> CatalogResult<Option<IngestFile>> {
        self.sqlite_next_ingest_file().await
    }

    async fn pending_ingest_files(&self) -> CatalogResult<Vec<IngestFile>> {
        self.sqlite_pending_ingest_files().await
    }

    async fn newest_applied_date(
        &self,
        provider: ProviderId,
        kind: IngestKind,
    ) -> CatalogResult<Option<i64>> {
        self.sqlite_newest_applied_date(provider, kind).await
    }

    async fn generation(&self) -> CatalogResult<i64> {
        sqlx::query_scalar(GET_GENERATION)
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)
    }
}

#[cfg(test)]
mod tests;
