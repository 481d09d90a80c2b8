//! The control-plane side of billing: members, the pricing taxonomy (publishers, categories),
//! segment → category mappings with the history of what each segment cost when, exchange
//! rates, buyers, sign-in users and bidder credentials.

use async_trait::async_trait;
use segmart_domain::billing::{CurrencyCode, Price};
use segmart_domain::{ProviderId, Timestamp};

use crate::catalog::CatalogResult;

/// A provider's billing account (`member_id`, which is also its `data_provider_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub member_id: i64,
    pub provider_id: ProviderId,
    pub provider_name: String,
    /// The platform's share of the provider's data revenue, percent 0–100.
    pub data_revshare_pct: f64,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataPublisher {
    pub id: i64,
    pub member_id: i64,
    pub node_name: String,
    pub level_index: i64,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataCategory {
    pub id: i64,
    pub publisher_id: i64,
    pub member_id: i64,
    pub node_name: String,
    pub level_index: i64,
    pub active: bool,
    pub price: Price,
}

/// The twelve segment types of seed 002.
pub const DATA_SEGMENT_TYPES: [&str; 12] = [
    "unassigned",
    "Audience",
    "Brand Safety",
    "Fraud Detection",
    "Viewability",
    "Contextual",
    "Geolocation",
    "B2B",
    "Purchase",
    "Interest",
    "Demo",
    "In-Market",
];

/// The fields of a mapping record a caller sets.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingDraft {
    pub segment_num: u32,
    pub data_category_id: i64,
    pub active: bool,
    pub is_public: bool,
    pub data_segment_type: String,
    pub recommend_include: bool,
}

/// A mapping record (`segment-billing-category`).
#[derive(Debug, Clone, PartialEq)]
pub struct BillingMapping {
    pub id: i64,
    pub member_id: i64,
    pub segment_num: u32,
    pub data_category_id: i64,
    pub active: bool,
    pub is_public: bool,
    pub data_segment_type: String,
    pub recommend_include: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a segment costs from `valid_from` on. `mapping`: the active category and its price;
/// `None` when the segment has no active mapping from then on.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleChange {
    pub segment_num: u32,
    pub valid_from: Timestamp,
    pub member_id: i64,
    pub mapping: Option<(i64, Price)>,
    pub revshare_pct: f64,
}

/// Who owns a segment, for segments that never had a billing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOwner {
    pub segment_num: u32,
    pub member_id: i64,
    pub revshare_pct: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateChange {
    pub currency: CurrencyCode,
    /// Units of the settlement currency one unit of `currency` is worth.
    pub to_settlement: f64,
    pub valid_from: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerKind {
    /// An end advertiser: may activate shares and run campaigns.
    Advertiser,
    /// An agency: buys on behalf of advertisers; may not activate shares itself.
    Agency,
}

impl BuyerKind {
    pub fn name(self) -> &'static str {
        match self {
            BuyerKind::Advertiser => "advertiser",
            BuyerKind::Agency => "agency",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "advertiser" => Some(BuyerKind::Advertiser),
            "agency" => Some(BuyerKind::Agency),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Buyer {
    pub id: i64,
    pub name: String,
    pub kind: BuyerKind,
    pub created_at: Timestamp,
}

/// Whose user a sign-in user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRole {
    /// A data provider's user (its member id).
    Provider(i64),
    /// A buyer's user (its buyer id).
    Buyer(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: UserRole,
    /// Bumped by a password change; sessions carry it.
    pub generation: u32,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bidder {
    pub id: i64,
    pub name: String,
    /// Hex SHA-256 of the bidder token.
    pub token_hash: String,
    pub revoked: bool,
    pub created_at: Timestamp,
}

/// Billing records of the catalog. Every method is one transaction; every change to a price,
/// a mapping or a revshare appends the affected segments' new rules to the rule history in
/// the same transaction, stamped `now`.
#[async_trait]
pub trait BillingCatalog: Send + Sync + 'static {
    async fn member_of_provider(&self, provider: ProviderId) -> CatalogResult<Option<Member>>;
    async fn get_member(&self, member_id: i64) -> CatalogResult<Option<Member>>;
    async fn list_members(&self) -> CatalogResult<Vec<Member>>;
    /// Sets the platform's revshare percent of a member's data revenue.
    async fn set_revshare(&self, member_id: i64, pct: f64, now: Timestamp)
    -> CatalogResult<Member>;

    async fn create_publisher(
        &self,
        member_id: i64,
        name: &str,
        now: Timestamp,
    ) -> CatalogResult<DataPublisher>;
    async fn list_publishers(&self, member_id: Option<i64>) -> CatalogResult<Vec<DataPublisher>>;
    async fn create_category(
        &self,
        publisher_id: i64,
        name: &str,
        price: Price,
        now: Timestamp,
    ) -> CatalogResult<DataCategory>;
    /// Reprices a category; every segment mapped to it costs the new price from `now` on.
    async fn set_category_price(
        &self,
        category_id: i64,
        price: Price,
        now: Timestamp,
    ) -> CatalogResult<DataCategory>;
    async fn get_category(&self, category_id: i64) -> CatalogResult<Option<DataCategory>>;
    async fn list_categories(&self, member_id: Option<i64>) -> CatalogResult<Vec<DataCategory>>;

    /// Creates the mapping of a segment of `member_id`'s provider to one of its categories.
    /// Refused (field error) when the segment or the category is not the member's.
    async fn create_mapping(
        &self,
        member_id: i64,
        draft: &MappingDraft,
        now: Timestamp,
    ) -> CatalogResult<BillingMapping>;
    /// Replaces mapping `id` of `member_id` (its segment stays).
    async fn update_mapping(
        &self,
        member_id: i64,
        id: i64,
        draft: &MappingDraft,
        now: Timestamp,
    ) -> CatalogResult<BillingMapping>;
    /// Deletes mapping `id` of `member_id`; the segment stays usable, no longer charged.
    async fn delete_mapping(&self, member_id: i64, id: i64, now: Timestamp) -> CatalogResult<()>;
    async fn get_mapping(&self, member_id: i64, id: i64) -> CatalogResult<Option<BillingMapping>>;
    /// A page of a member's mappings by id, and how many it has.
    async fn list_mappings(
        &self,
        member_id: i64,
        start: u64,
        limit: u64,
    ) -> CatalogResult<(Vec<BillingMapping>, u64)>;

    /// Everything metering needs to price any impression: each segment's owner, and the whole
    /// rule history in (segment, valid_from) order.
    async fn billing_rules(&self) -> CatalogResult<(Vec<SegmentOwner>, Vec<RuleChange>)>;

    async fn set_rate(
        &self,
        currency: CurrencyCode,
        to_settlement: f64,
        now: Timestamp,
    ) -> CatalogResult<RateChange>;
    /// Every rate change, oldest first.
    async fn rates(&self) -> CatalogResult<Vec<RateChange>>;

    async fn create_buyer(
        &self,
        name: &str,
        kind: BuyerKind,
        now: Timestamp,
    ) -> CatalogResult<Buyer>;
    async fn get_buyer(&self, id: i64) -> CatalogResult<Option<Buyer>>;
    async fn list_buyers(&self) -> CatalogResult<Vec<Buyer>>;

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: UserRole,
        now: Timestamp,
    ) -> CatalogResult<User>;
    async fn user_by_name(&self, username: &str) -> CatalogResult<Option<User>>;
    async fn get_user(&self, id: i64) -> CatalogResult<Option<User>>;
    async fn list_users(&self) -> CatalogResult<Vec<User>>;
    /// Replaces a user's password hash and ends its sessions.
    async fn set_password(&self, username: &str, password_hash: &str) -> CatalogResult<User>;

    async fn create_bidder(
        &self,
        name: &str,
        token_hash: &str,
        now: Timestamp,
    ) -> CatalogResult<Bidder>;
    async fn list_bidders(&self) -> CatalogResult<Vec<Bidder>>;
    async fn revoke_bidder(&self, id: i64) -> CatalogResult<Bidder>;
}
