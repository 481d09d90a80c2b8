//! The control-plane side of sharing: shares and their keys, recipients, activations, buyer
//! campaigns, and the mail outbox that notifications go through.

use async_trait::async_trait;
use segmart_domain::billing::CurrencyCode;
use segmart_domain::{FolderId, Timestamp};

use crate::catalog::CatalogResult;

/// What a provider shares, on which terms, with whom.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareDraft {
    /// Single segments (platform numbers), all the provider's own.
    pub segments: Vec<u32>,
    /// A whole source: every segment of this folder, now and later.
    pub folder: Option<FolderId>,
    /// 0: free.
    pub cpm: f64,
    pub currency: CurrencyCode,
    /// Public (anyone with the key) or private to `recipients` (buyer ids).
    pub public: bool,
    pub recipients: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub id: i64,
    pub member_id: i64,
    pub segments: Vec<u32>,
    pub folder: Option<FolderId>,
    pub cpm: f64,
    pub currency: CurrencyCode,
    pub public: bool,
    /// SHA-256 hex of the key.
    pub key_hash: String,
    /// A non-secret name of the key (its first characters).
    pub key_label: String,
    pub recipients: Vec<i64>,
    /// (buyer id, when).
    pub activations: Vec<(i64, Timestamp)>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub mail: Mail,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
}

/// A buyer who loses access by a revocation, and the campaigns of its that were stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedBuyer {
    pub buyer_id: i64,
    /// E-mail addresses of the buyer's users.
    pub emails: Vec<String>,
    /// (campaign id, name) of each stopped campaign.
    pub stopped: Vec<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDraft {
    pub name: String,
    /// Include: any (false) or all (true) of `include`.
    pub match_all: bool,
    pub include: Vec<u32>,
    pub exclude: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: i64,
    pub buyer_id: i64,
    pub name: String,
    pub match_all: bool,
    pub include: Vec<u32>,
    pub exclude: Vec<u32>,
    /// `active` or `stopped`.
    pub active: bool,
    pub stopped_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Every share with its segments and activations, for the access index.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessData {
    pub shares: Vec<Share>,
    /// (segment number, folder, active) of every segment.
    pub segments: Vec<(u32, FolderId, bool)>,
    /// Segments whose active mapping is public.
    pub public: Vec<u32>,
}

/// An OAuth client of a buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuyerClient {
    pub id: segmart_domain::ClientId,
    pub buyer_id: i64,
    pub name: String,
    pub permissions: segmart_domain::BuyerPermissions,
    /// argon2id PHC string.
    pub secret_hash: String,
    pub revoked: bool,
    pub created_at: Timestamp,
}

/// Builds the notification for one buyer affected by a revocation.
pub type RevocationMail = dyn Fn(&AffectedBuyer) -> Vec<Mail> + Send + Sync;

#[async_trait]
pub trait SharingCatalog: Send + Sync + 'static {
    /// Creates a share with its key's hash; `mails` are queued in the same transaction.
    /// Refused (field errors) when a segment or the folder is not the member's, or a
    /// recipient is not a buyer.
    async fn create_share(
        &self,
        member_id: i64,
        draft: &ShareDraft,
        key_hash: &str,
        key_label: &str,
        mails: &[Mail],
        now: Timestamp,
    ) -> CatalogResult<Share>;
    async fn list_shares(&self, member_id: i64) -> CatalogResult<Vec<Share>>;
    async fn share_by_key_hash(&self, key_hash: &str) -> CatalogResult<Option<Share>>;
    /// Records the activation; `false` when the buyer had activated it already.
    async fn activate_share(
        &self,
        share_id: i64,
        buyer_id: i64,
        now: Timestamp,
    ) -> CatalogResult<bool>;
    /// Revokes a share of `member_id` and, in the same transaction, stops every campaign of a
    /// buyer who activated it that uses a segment the buyer can no longer use, and queues the
    /// mails `notify` builds for each buyer who had activated it.
    async fn revoke_share(
        &self,
        member_id: i64,
        share_id: i64,
        notify: &RevocationMail,
        now: Timestamp,
    ) -> CatalogResult<Vec<AffectedBuyer>>;
    async fn access_data(&self) -> CatalogResult<AccessData>;

    async fn set_user_email(&self, username: &str, email: Option<&str>) -> CatalogResult<()>;
    async fn user_email(&self, username: &str) -> CatalogResult<Option<String>>;

    async fn create_campaign(
        &self,
        buyer_id: i64,
        draft: &CampaignDraft,
        now: Timestamp,
    ) -> CatalogResult<Campaign>;
    async fn list_campaigns(&self, buyer_id: i64) -> CatalogResult<Vec<Campaign>>;
    async fn get_campaign(&self, buyer_id: i64, id: i64) -> CatalogResult<Option<Campaign>>;
    async fn set_campaign_status(
        &self,
        buyer_id: i64,
        id: i64,
        active: bool,
        reason: Option<&str>,
        now: Timestamp,
    ) -> CatalogResult<Campaign>;

    async fn create_buyer_client(
        &self,
        buyer_id: i64,
        name: &str,
        permissions: segmart_domain::BuyerPermissions,
        secret_hash: &str,
        now: Timestamp,
    ) -> CatalogResult<BuyerClient>;
    async fn get_buyer_client(
        &self,
        id: segmart_domain::ClientId,
    ) -> CatalogResult<Option<BuyerClient>>;
    async fn list_buyer_clients(&self) -> CatalogResult<Vec<BuyerClient>>;
    async fn revoke_buyer_client(&self, id: segmart_domain::ClientId)
    -> CatalogResult<BuyerClient>;

    async fn enqueue_mail(&self, mails: &[Mail], now: Timestamp) -> CatalogResult<()>;
    /// Unsent mail due at `now`, oldest first.
    async fn due_mail(&self, now: Timestamp, limit: u32) -> CatalogResult<Vec<OutboxEntry>>;
    async fn mail_sent(&self, id: i64, now: Timestamp) -> CatalogResult<()>;
    async fn mail_failed(&self, id: i64, error: &str, retry_at: Timestamp) -> CatalogResult<()>;
    /// The outbox, newest first.
    async fn outbox(&self, limit: u32) -> CatalogResult<Vec<OutboxEntry>>;
}
