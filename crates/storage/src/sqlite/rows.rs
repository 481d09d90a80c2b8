//! Decoding catalog rows into domain types; a value that does not decode is reported as corrupt.

use std::str::FromStr;

use segmart_domain::segment::{Segment, SegmentSpec};
use segmart_domain::{
    ClientId, FolderId, IdType, PermissionSet, ProviderId, SegmentKey, SegmentNum, Timestamp,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::error::corrupt;
use crate::catalog::{CatalogResult, Folder, OAuthClient, Provider};

pub(super) fn provider(row: &SqliteRow) -> CatalogResult<Provider> {
    Ok(Provider {
        id: uuid_column(row, "id")?,
        name: column(row, "name")?,
        dmp_id: column(row, "dmp_id")?,
        default_pricing: super::ingest::default_pricing_columns(row)?,
        created_at: timestamp_column(row, "created_at")?,
    })
}

pub(super) fn folder(row: &SqliteRow) -> CatalogResult<Folder> {
    let id_type_name: String = column(row, "id_type")?;
    let id_vendor: Option<String> = column(row, "id_vendor")?;
    let id_type = IdType::from_parts(&id_type_name, id_vendor.as_deref())
        .map_err(|why| corrupt("folders.id_type", why))?;
    Ok(Folder {
        id: uuid_column(row, "id")?,
        num: u32_column(row, "num")?,
        provider: uuid_column(row, "provider_id")?,
        name: column(row, "name")?,
        id_type,
        created_at: timestamp_column(row, "created_at")?,
    })
}

pub(super) fn client(row: &SqliteRow) -> CatalogResult<OAuthClient> {
    let bits: i64 = column(row, "permissions")?;
    let permissions = u8::try_from(bits)
        .ok()
        .and_then(PermissionSet::from_bits)
        .ok_or_else(|| corrupt("oauth_clients.permissions", bits))?;
    Ok(OAuthClient {
        id: uuid_column::<ClientId>(row, "id")?,
        provider: uuid_column::<ProviderId>(row, "provider_id")?,
        name: column(row, "name")?,
        permissions,
        secret_hash: column(row, "secret_hash")?,
        generation: u32_column(row, "generation")?,
        revoked: column(row, "revoked")?,
        created_at: timestamp_column(row, "created_at")?,
    })
}

pub(super) fn segment(row: &SqliteRow) -> CatalogResult<Segment> {
    let parent: Option<String> = column(row, "parent_key")?;
    Ok(Segment {
        num: SegmentNum(u32_column(row, "num")?),
        folder: uuid_column::<FolderId>(row, "folder_id")?,
        key: key_column(row, "key")?,
        spec: SegmentSpec {
            name: column(row, "name")?,
            description: column(row, "description")?,
            price: column(row, "price")?,
            ttl_minutes: u32_column(row, "ttl_minutes")?,
            active: column(row, "active")?,
            selectable: column(row, "selectable")?,
            parent: parent
                .map(|raw| {
                    SegmentKey::parse(&raw).map_err(|why| corrupt("segments.parent_key", why))
                })
                .transpose()?,
        },
        pricing: super::ingest::pricing_columns(row)?,
        advertisers: super::ingest::advertisers_column(row)?,
        created_at: timestamp_column(row, "created_at")?,
        updated_at: timestamp_column(row, "updated_at")?,
    })
}

pub(super) fn column<'r, T>(row: &'r SqliteRow, name: &str) -> CatalogResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(|error| corrupt(name, error))
}

pub(super) fn uuid_column<T: FromStr>(row: &SqliteRow, name: &str) -> CatalogResult<T>
where
    T::Err: std::fmt::Display,
{
    let raw: String = column(row, name)?;
    raw.parse().map_err(|error| corrupt(name, error))
}

fn u32_column(row: &SqliteRow, name: &str) -> CatalogResult<u32> {
    let value: i64 = column(row, name)?;
    u32::try_from(value).map_err(|error| corrupt(name, error))
}

pub(super) fn timestamp_column(row: &SqliteRow, name: &str) -> CatalogResult<Timestamp> {
    Ok(Timestamp::from_millis(column(row, name)?))
}

fn key_column(row: &SqliteRow, name: &str) -> CatalogResult<SegmentKey> {
    let raw: String = column(row, name)?;
    SegmentKey::parse(&raw).map_err(|why| corrupt(name, why))
}
