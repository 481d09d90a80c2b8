//! Operator actions shared by the `segmart admin` command and the `/admin` HTTP API.

use segmart_domain::{ClientId, Clock, IdType, PermissionSet, ProviderId};
use segmart_storage::catalog::{
    Catalog, CatalogError, CatalogResult, Folder, OAuthClient, Provider,
};
use uuid::Uuid;

use crate::secrets;

/// Settings key of the deployment's OAuth `target-entity` UUID.
pub const TARGET_ENTITY_SETTING: &str = "oauth.target_entity";
/// Settings key of the SHA-256 of the operator token.
pub const OPERATOR_TOKEN_SETTING: &str = "operator.token_sha256";

/// A client together with its secret, which exists in clear only in this answer.
#[derive(Debug, Clone)]
pub struct IssuedClient {
    pub client: OAuthClient,
    pub secret: String,
}

async fn hash_off_runtime(secret: String) -> CatalogResult<String> {
    tokio::task::spawn_blocking(move || secrets::hash_secret(&secret))
        .await
        .map_err(|e| CatalogError::Backend(format!("hashing task failed: {e}")))
}

pub async fn create_provider(
    catalog: &dyn Catalog,
    clock: &dyn Clock,
    name: &str,
) -> CatalogResult<Provider> {
    check_name("name", name)?;
    catalog.create_provider(name.trim(), clock.now()).await
}

/// Refuses a DMP ID that is malformed or already another provider's, before anything is created.
pub async fn check_dmp_id_free(catalog: &dyn Catalog, dmp_id: &str) -> CatalogResult<()> {
    segmart_storage::sqlite::validate_dmp_id(dmp_id)?;
    if let Some(holder) = catalog.provider_by_dmp_id(dmp_id).await? {
        return Err(CatalogError::AlreadyExists(format!(
            "DMP ID {dmp_id} (provider {})",
            holder.id
        )));
    }
    Ok(())
}

pub async fn create_folder(
    catalog: &dyn Catalog,
    clock: &dyn Clock,
    provider: ProviderId,
    name: &str,
    id_type: IdType,
) -> CatalogResult<Folder> {
    check_name("name", name)?;
    catalog
        .create_folder(provider, name.trim(), id_type, clock.now())
        .await
}

pub async fn create_client(
    catalog: &dyn Catalog,
    clock: &dyn Clock,
    provider: ProviderId,
    name: &str,
    permissions: PermissionSet,
) -> CatalogResult<IssuedClient> {
    check_name("name", name)?;
    if permissions.is_empty() {
        return Err(segmart_domain::FieldError::new(
            "permissions",
            "must name at least one permission",
        )
        .into());
    }
    let secret = secrets::new_client_secret();
    let hash = hash_off_runtime(secret.clone()).await?;
    let client = catalog
        .create_client(provider, name.trim(), permissions, &hash, clock.now())
        .await?;
    Ok(IssuedClient { client, secret })
}

/// Gives the client a new secret; tokens issued before stop working.
pub async fn rotate_client(catalog: &dyn Catalog, id: ClientId) -> CatalogResult<IssuedClient> {
    let secret = secrets::new_client_secret();
    let hash = hash_off_runtime(secret.clone()).await?;
    let client = catalog.rotate_client(id, &hash).await?;
    Ok(IssuedClient { client, secret })
}

pub async fn revoke_client(catalog: &dyn Catalog, id: ClientId) -> CatalogResult<OAuthClient> {
    catalog.revoke_client(id).await
}

/// The deployment's `target-entity` UUID, created on first use.
pub async fn target_entity(catalog: &dyn Catalog) -> CatalogResult<Uuid> {
    if let Some(raw) = catalog.get_setting(TARGET_ENTITY_SETTING).await? {
        return Uuid::parse_str(&raw).map_err(|e| {
            CatalogError::Backend(format!("stored target entity {raw:?} is not a UUID: {e}"))
        });
    }
    let fresh = Uuid::new_v4();
    catalog
        .set_setting(TARGET_ENTITY_SETTING, &fresh.to_string())
        .await?;
    Ok(fresh)
}

/// Creates a new operator token, stores its hash, and returns it (shown once).
pub async fn new_operator_token(catalog: &dyn Catalog) -> CatalogResult<String> {
    let token = format!("sm_op_{}", secrets::new_client_secret());
    catalog
        .set_setting(OPERATOR_TOKEN_SETTING, &secrets::sha256_hex(&token))
        .await?;
    Ok(token)
}

fn check_name(field: &str, name: &str) -> CatalogResult<()> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 255 {
        return Err(segmart_domain::FieldError::new(field, "must be 1..=255 characters").into());
    }
    Ok(())
}

/// A bidder credential together with its token, which exists in clear only in this answer.
#[derive(Debug, Clone)]
pub struct IssuedBidder {
    pub bidder: segmart_storage::billing_catalog::Bidder,
    pub token: String,
}

/// Creates a bidder credential for the metering API: a 256-bit random token, stored as its
/// SHA-256 only.
pub async fn create_bidder(
    catalog: &dyn Catalog,
    clock: &dyn Clock,
    name: &str,
) -> CatalogResult<IssuedBidder> {
    check_name("name", name)?;
    let token = format!("sbd_{}", secrets::new_client_secret());
    let bidder = catalog
        .create_bidder(name.trim(), &secrets::sha256_hex(&token), clock.now())
        .await?;
    Ok(IssuedBidder { bidder, token })
}

/// Longest accepted user name, in bytes.
pub const USERNAME_MAX_BYTES: usize = 64;
/// Shortest accepted password, in characters.
pub const PASSWORD_MIN_CHARS: usize = 12;

fn check_credentials(username: &str, password: &str) -> CatalogResult<()> {
    let valid_name = !username.is_empty()
        && username.len() <= USERNAME_MAX_BYTES
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !valid_name {
        return Err(segmart_domain::FieldError::new(
            "username",
            format!("1 to {USERNAME_MAX_BYTES} characters of [A-Za-z0-9._@-]"),
        )
        .into());
    }
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(segmart_domain::FieldError::new(
            "password",
            format!("must have at least {PASSWORD_MIN_CHARS} characters"),
        )
        .into());
    }
    Ok(())
}

/// Creates a sign-in user for a provider (by member id) or a buyer; the password is stored as
/// an argon2id hash.
pub async fn create_user(
    catalog: &dyn Catalog,
    clock: &dyn Clock,
    username: &str,
    password: &str,
    role: segmart_storage::billing_catalog::UserRole,
) -> CatalogResult<segmart_storage::billing_catalog::User> {
    check_credentials(username, password)?;
    let hash = hash_off_runtime(password.to_owned()).await?;
    catalog
        .create_user(username, &hash, role, clock.now())
        .await
}

/// Replaces a user's password; its sessions end.
pub async fn set_password(
    catalog: &dyn Catalog,
    username: &str,
    password: &str,
) -> CatalogResult<segmart_storage::billing_catalog::User> {
    check_credentials(username, password)?;
    let hash = hash_off_runtime(password.to_owned()).await?;
    catalog.set_password(username, &hash).await
}

/// A new random password (for demo users and `--generate-password`).
pub fn new_password() -> String {
    secrets::new_client_secret()[..20].to_owned()
}

/// A buyer client together with its secret, which exists in clear only in this answer.
#[derive(Debug, Clone)]
pub struct IssuedBuyerClient {
    pub client: segmart_storage::sharing_catalog::BuyerClient,
    pub secret: String,
}

/// Creates an OAuth client of a buyer (`scope=buyer:<permissions>` at the token endpoint).
pub async fn create_buyer_client(
    catalog: &dyn Catalog,
    clock: &dyn Clock,
    buyer_id: i64,
    name: &str,
    permissions: segmart_domain::BuyerPermissions,
) -> CatalogResult<IssuedBuyerClient> {
    check_name("name", name)?;
    if catalog.get_buyer(buyer_id).await?.is_none() {
        return Err(CatalogError::NotFound(format!("buyer {buyer_id}")));
    }
    let secret = secrets::new_client_secret();
    let hash = hash_off_runtime(secret.clone()).await?;
    let client = catalog
        .create_buyer_client(buyer_id, name.trim(), permissions, &hash, clock.now())
        .await?;
    Ok(IssuedBuyerClient { client, secret })
}
