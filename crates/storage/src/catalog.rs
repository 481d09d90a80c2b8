//! The control-plane store: providers, folders, OAuth clients, segments and settings.

use async_trait::async_trait;
use segmart_domain::segment::{Segment, SegmentSpec};
use segmart_domain::{
    ClientId, FieldError, FolderId, IdType, PermissionSet, ProviderId, SegmentKey, Timestamp,
};

pub use crate::ingest_files::{
    IngestCounts, IngestFile, IngestKind, IngestOutcome, IngestRejection, IngestSource,
    IngestStatus, NewIngestFile, TaxonomySegment,
};

/// A data provider account: the tenant that owns folders and clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub id: ProviderId,
    pub name: String,
    /// The DMP ID the provider's batch files are named with (`[DMP ID].[DATE].[FILE ID]…`);
    /// unique across the deployment.
    pub dmp_id: Option<String>,
    /// The provider's default pricing (seed 003: a segment's own cost applies only when it is 0
    /// or no default is set).
    pub default_pricing: Option<segmart_domain::pricing::Cost>,
    pub created_at: Timestamp,
}

/// A segment provider folder (`segmentProviderId`).
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    pub id: FolderId,
    /// Small dense number used inside profile keys instead of the 16-byte UUID.
    pub num: u32,
    pub provider: ProviderId,
    pub name: String,
    /// The kind of user id the folder's profiles are keyed by.
    pub id_type: IdType,
    pub created_at: Timestamp,
}

/// An OAuth2 client of the client-credentials grant.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthClient {
    pub id: ClientId,
    pub provider: ProviderId,
    pub name: String,
    /// The permissions tokens of this client may carry.
    pub permissions: PermissionSet,
    /// PHC string of the argon2 hash of the secret; the secret itself is never stored.
    pub secret_hash: String,
    /// Bumped by every rotation; tokens carry it so rotation invalidates older tokens.
    pub generation: u32,
    pub revoked: bool,
    pub created_at: Timestamp,
}

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("catalog backend failed: {0}")]
    Backend(String),
}

pub type CatalogResult<T> = Result<T, CatalogError>;

/// The control-plane store. Every method is one transaction.
#[async_trait]
pub trait Catalog:
    crate::billing_catalog::BillingCatalog
    + crate::sharing_catalog::SharingCatalog
    + Send
    + Sync
    + 'static
{
    // providers
    async fn create_provider(&self, name: &str, now: Timestamp) -> CatalogResult<Provider>;
    /// Creates the provider with this id unless it exists; returns it either way.
    async fn ensure_provider(
        &self,
        id: ProviderId,
        name: &str,
        now: Timestamp,
    ) -> CatalogResult<Provider>;
    async fn get_provider(&self, id: ProviderId) -> CatalogResult<Option<Provider>>;
    async fn list_providers(&self) -> CatalogResult<Vec<Provider>>;
    /// Sets or clears the provider's DMP ID: 1..=64 characters of `[A-Za-z0-9_-]`
    /// (`Invalid` otherwise), unique across the deployment (`AlreadyExists`).
    async fn set_provider_dmp_id(
        &self,
        id: ProviderId,
        dmp_id: Option<&str>,
    ) -> CatalogResult<Provider>;
    /// Sets or clears the provider's default pricing (value ≥ 0; a RATE is at most 100).
    async fn set_provider_default_pricing(
        &self,
        id: ProviderId,
        pricing: Option<segmart_domain::pricing::Cost>,
    ) -> CatalogResult<Provider>;
    /// The provider whose batch files carry this DMP ID.
    async fn provider_by_dmp_id(&self, dmp_id: &str) -> CatalogResult<Option<Provider>>;

    // folders
    async fn create_folder(
        &self,
        provider: ProviderId,
        name: &str,
        id_type: IdType,
        now: Timestamp,
    ) -> CatalogResult<Folder>;
    /// Creates the folder with this id unless it exists; returns it either way.
    async fn ensure_folder(
        &self,
        id: FolderId,
        provider: ProviderId,
        name: &str,
        id_type: IdType,
        now: Timestamp,
    ) -> CatalogResult<Folder>;
    async fn get_folder(&self, id: FolderId) -> CatalogResult<Option<Folder>>;
    /// All folders, or those of one provider.
    async fn list_folders(&self, provider: Option<ProviderId>) -> CatalogResult<Vec<Folder>>;

    // OAuth clients
    async fn create_client(
        &self,
        provider: ProviderId,
        name: &str,
        permissions: PermissionSet,
        secret_hash: &str,
        now: Timestamp,
    ) -> CatalogResult<OAuthClient>;
    async fn get_client(&self, id: ClientId) -> CatalogResult<Option<OAuthClient>>;
    async fn list_clients(&self, provider: Option<ProviderId>) -> CatalogResult<Vec<OAuthClient>>;
    /// Replaces the secret hash and bumps the generation (older tokens stop working).
    async fn rotate_client(&self, id: ClientId, secret_hash: &str) -> CatalogResult<OAuthClient>;
    /// Marks the client revoked; its tokens stop working.
    async fn revoke_client(&self, id: ClientId) -> CatalogResult<OAuthClient>;

    // segments
    /// Creates a segment; `AlreadyExists` when the folder has one with this key.
    /// The parent, when given, must exist in the same folder.
    async fn create_segment(
        &self,
        folder: FolderId,
        key: &SegmentKey,
        spec: &SegmentSpec,
        now: Timestamp,
    ) -> CatalogResult<Segment>;
    /// Creates or replaces a segment; keeps its number and creation date when it exists.
    /// Refuses a parent that is missing, the segment itself, or one of its descendants.
    /// Returns the segment and whether it was created.
    async fn put_segment(
        &self,
        folder: FolderId,
        key: &SegmentKey,
        spec: &SegmentSpec,
        now: Timestamp,
    ) -> CatalogResult<(Segment, bool)>;
    async fn get_segment(
        &self,
        folder: FolderId,
        key: &SegmentKey,
    ) -> CatalogResult<Option<Segment>>;
    /// One page of a folder's segments ordered by key, starting after `after`.
    async fn list_segments(
        &self,
        folder: FolderId,
        after: Option<&SegmentKey>,
        limit: u32,
    ) -> CatalogResult<Vec<Segment>>;
    async fn count_segments(&self, folder: FolderId) -> CatalogResult<u64>;
    /// Every segment of every folder (cache warm-up).
    async fn all_segments(&self) -> CatalogResult<Vec<Segment>>;

    // batch file registry (see `ingest_files`); these writes leave the generation alone, since
    // no cache depends on them, except `apply_taxonomy`, which changes segments.
    /// Records a delivery. It is queued unless `new.rejection` is set (recorded rejected), the
    /// same provider, kind and FILE ID is already queued, applying or applied (recorded as a
    /// duplicate of that delivery), or a delivery of the same kind with a later DATE was
    /// applied already (recorded rejected with code `late`).
    async fn register_ingest_file(
        &self,
        new: &NewIngestFile,
        now: Timestamp,
    ) -> CatalogResult<IngestFile>;
    /// Moves a queued delivery to applying with `apply_at`; a delivery already applying keeps
    /// the `apply_at` it has (a redo after a crash). Its counts start again from zero.
    async fn start_ingest_file(
        &self,
        id: i64,
        apply_at: Timestamp,
        now: Timestamp,
    ) -> CatalogResult<IngestFile>;
    /// Ends an applying (or queued) delivery: applied or rejected, with its report counts.
    async fn finish_ingest_file(
        &self,
        id: i64,
        outcome: &IngestOutcome,
        now: Timestamp,
    ) -> CatalogResult<IngestFile>;
    /// Applies a taxonomy delivery in one transaction: upserts every segment and marks the
    /// delivery applied with `counts`. On any error nothing changes.
    async fn apply_taxonomy(
        &self,
        id: i64,
        segments: &[TaxonomySegment],
        counts: &IngestCounts,
        now: Timestamp,
    ) -> CatalogResult<(IngestFile, Vec<Segment>)>;
    async fn get_ingest_file(&self, id: i64) -> CatalogResult<Option<IngestFile>>;
    /// Every delivery of one FILE ID of a provider, oldest first.
    async fn ingest_deliveries(
        &self,
        provider: ProviderId,
        file_id: &str,
    ) -> CatalogResult<Vec<IngestFile>>;
    /// One page of a provider's deliveries, newest first, with ids below `before`.
    async fn list_ingest_files(
        &self,
        provider: ProviderId,
        before: Option<i64>,
        limit: u32,
    ) -> CatalogResult<Vec<IngestFile>>;
    /// The delivery to work on next: one left applying (a crash interrupted it), else the first
    /// queued delivery of the provider that has waited longest, in DATE order (then FILE ID,
    /// taxonomy before data).
    async fn next_ingest_file(&self) -> CatalogResult<Option<IngestFile>>;
    /// Every delivery still queued or applying, oldest first.
    async fn pending_ingest_files(&self) -> CatalogResult<Vec<IngestFile>>;
    /// The latest DATE among the provider's applied deliveries of `kind`.
    async fn newest_applied_date(
        &self,
        provider: ProviderId,
        kind: IngestKind,
    ) -> CatalogResult<Option<i64>>;

    // settings and change tracking
    async fn get_setting(&self, key: &str) -> CatalogResult<Option<String>>;
    async fn set_setting(&self, key: &str, value: &str) -> CatalogResult<()>;
    /// A number that grows with every committed change, so nodes (and a server running beside
    /// the admin CLI) can tell when to reload their caches.
    async fn generation(&self) -> CatalogResult<i64>;
}
