//! The billing records of the catalog on SQLite (migration 0003): members, the pricing
//! taxonomy, mapping records with the rule history, exchange rates, buyers, users, bidders.
//!
//! The statements are kept next to the code that binds them: most of them are variations of
//! one shape (the rule-history insert) whose parameters only make sense read together.

use async_trait::async_trait;
use segmart_domain::billing::{CurrencyCode, Price};
use segmart_domain::pricing::CostType;
use segmart_domain::{FieldError, ProviderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::error::{backend_error, catalog_error, corrupt};
use super::rows::{column, timestamp_column, uuid_column};
use super::{SqliteCatalog, commit_change};
use crate::billing_catalog::{
    Bidder, BillingCatalog, BillingMapping, Buyer, BuyerKind, DATA_SEGMENT_TYPES, DataCategory,
    DataPublisher, MappingDraft, Member, RateChange, RuleChange, SegmentOwner, User, UserRole,
};
use crate::catalog::{CatalogError, CatalogResult};

const MEMBER_COLUMNS: &str = "SELECT m.member_id, m.provider_id, p.name AS provider_name, \
     m.data_revshare_pct, m.active FROM members m JOIN providers p ON p.id = m.provider_id";

const PUBLISHER_COLUMNS: &str =
    "SELECT id, member_id, node_name, level_index, active FROM data_publishers";

const CATEGORY_COLUMNS: &str = "SELECT id, publisher_id, member_id, node_name, level_index, \
     active, cost_type, cost_value, currency FROM data_categories";

const MAPPING_COLUMNS: &str = "SELECT id, member_id, segment_num, data_category_id, active, \
     is_public, data_segment_type_id, recommend_include, created_at, updated_at \
     FROM segment_billing_categories";

const USER_COLUMNS: &str = "SELECT id, username, password_hash, member_id, buyer_id, generation, \
     created_at FROM users";

/// Appends the current rule of every segment the `WHERE` clause selects to the rule history,
/// stamped `?1`; the clause binds `?2`. A mapping whose category is inactive counts as none.
fn record_rules_sql(filter: &str) -> String {
    format!(
        "INSERT INTO billing_rule_history (segment_num, valid_from, member_id, data_category_id, \
         cost_type, cost_value, currency, revshare_pct) \
         SELECT s.num, ?1, m.member_id, c.id, c.cost_type, c.cost_value, c.currency, \
         m.data_revshare_pct \
         FROM segments s JOIN folders f ON f.id = s.folder_id \
         JOIN members m ON m.provider_id = f.provider_id \
         LEFT JOIN segment_billing_categories b ON b.segment_num = s.num AND b.active = 1 \
         LEFT JOIN data_categories c ON c.id = b.data_category_id AND c.active = 1 \
         WHERE {filter}"
    )
}

async fn record_rules(
    conn: &mut SqliteConnection,
    filter: &str,
    now: Timestamp,
    param: i64,
) -> CatalogResult<()> {
    sqlx::query(sqlx::AssertSqlSafe(record_rules_sql(filter)))
        .bind(now.millis())
        .bind(param)
        .execute(conn)
        .await
        .map_err(backend_error)?;
    Ok(())
}

fn bool_column(row: &SqliteRow, name: &str) -> CatalogResult<bool> {
    let v: i64 = column(row, name)?;
    Ok(v != 0)
}

fn member(row: &SqliteRow) -> CatalogResult<Member> {
    Ok(Member {
        member_id: column(row, "member_id")?,
        provider_id: uuid_column::<ProviderId>(row, "provider_id")?,
        provider_name: column(row, "provider_name")?,
        data_revshare_pct: column(row, "data_revshare_pct")?,
        active: bool_column(row, "active")?,
    })
}

fn publisher(row: &SqliteRow) -> CatalogResult<DataPublisher> {
    Ok(DataPublisher {
        id: column(row, "id")?,
        member_id: column(row, "member_id")?,
        node_name: column(row, "node_name")?,
        level_index: column(row, "level_index")?,
        active: bool_column(row, "active")?,
    })
}

fn price_of(cost_type: &str, value: f64, currency: &str) -> CatalogResult<Price> {
    Ok(Price {
        cost_type: CostType::from_name(cost_type).ok_or_else(|| corrupt("cost_type", cost_type))?,
        value,
        currency: CurrencyCode::parse(currency).map_err(|why| corrupt("currency", why))?,
    })
}

fn category(row: &SqliteRow) -> CatalogResult<DataCategory> {
    let cost_type: String = column(row, "cost_type")?;
    let currency: String = column(row, "currency")?;
    Ok(DataCategory {
        id: column(row, "id")?,
        publisher_id: column(row, "publisher_id")?,
        member_id: column(row, "member_id")?,
        node_name: column(row, "node_name")?,
        level_index: column(row, "level_index")?,
        active: bool_column(row, "active")?,
        price: price_of(&cost_type, column(row, "cost_value")?, &currency)?,
    })
}

fn mapping(row: &SqliteRow) -> CatalogResult<BillingMapping> {
    let num: i64 = column(row, "segment_num")?;
    Ok(BillingMapping {
        id: column(row, "id")?,
        member_id: column(row, "member_id")?,
        segment_num: u32::try_from(num).map_err(|e| corrupt("segment_num", e))?,
        data_category_id: column(row, "data_category_id")?,
        active: bool_column(row, "active")?,
        is_public: bool_column(row, "is_public")?,
        data_segment_type: column(row, "data_segment_type_id")?,
        recommend_include: bool_column(row, "recommend_include")?,
        created_at: timestamp_column(row, "created_at")?,
        updated_at: timestamp_column(row, "updated_at")?,
    })
}

fn user(row: &SqliteRow) -> CatalogResult<User> {
    let member_id: Option<i64> = column(row, "member_id")?;
    let buyer_id: Option<i64> = column(row, "buyer_id")?;
    let role = match (member_id, buyer_id) {
        (Some(m), None) => UserRole::Provider(m),
        (None, Some(b)) => UserRole::Buyer(b),
        _ => return Err(corrupt("users.role", "exactly one of member_id, buyer_id")),
    };
    let generation: i64 = column(row, "generation")?;
    Ok(User {
        id: column(row, "id")?,
        username: column(row, "username")?,
        password_hash: column(row, "password_hash")?,
        role,
        generation: u32::try_from(generation).map_err(|e| corrupt("users.generation", e))?,
        created_at: timestamp_column(row, "created_at")?,
    })
}

fn buyer(row: &SqliteRow) -> CatalogResult<Buyer> {
    let kind: String = column(row, "kind")?;
    Ok(Buyer {
        id: column(row, "id")?,
        name: column(row, "name")?,
        kind: BuyerKind::from_name(&kind).ok_or_else(|| corrupt("buyers.kind", &kind))?,
        created_at: timestamp_column(row, "created_at")?,
    })
}

fn bidder(row: &SqliteRow) -> CatalogResult<Bidder> {
    Ok(Bidder {
        id: column(row, "id")?,
        name: column(row, "name")?,
        token_hash: column(row, "token_hash")?,
        revoked: bool_column(row, "revoked")?,
        created_at: timestamp_column(row, "created_at")?,
    })
}

/// Checks a price: finite, non-negative, a RATE at most 100 percent.
pub fn validate_price(price: &Price) -> Result<(), FieldError> {
    if !price.value.is_finite() || price.value < 0.0 {
        return Err(FieldError::new(
            "cost_value",
            "must be a non-negative number",
        ));
    }
    if price.cost_type == CostType::Rate && price.value > 100.0 {
        return Err(FieldError::new(
            "cost_value",
            "a RATE is a percentage of the media cost, at most 100",
        ));
    }
    Ok(())
}

fn validate_segment_type(name: &str) -> Result<(), FieldError> {
    if DATA_SEGMENT_TYPES.contains(&name) {
        Ok(())
    } else {
        Err(FieldError::new(
            "data_segment_type_id",
            format!(
                "{name:?} is not a segment type; valid: {}",
                DATA_SEGMENT_TYPES.join(", ")
            ),
        ))
    }
}

async fn fetch_one_opt<T>(
    conn: &mut SqliteConnection,
    sql: String,
    param: i64,
    decode: fn(&SqliteRow) -> CatalogResult<T>,
) -> CatalogResult<Option<T>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(param)
        .fetch_optional(conn)
        .await
        .map_err(backend_error)?;
    row.as_ref().map(decode).transpose()
}

async fn fetch_member(conn: &mut SqliteConnection, id: i64) -> CatalogResult<Option<Member>> {
    fetch_one_opt(
        conn,
        format!("{MEMBER_COLUMNS} WHERE m.member_id = ?1"),
        id,
        member,
    )
    .await
}

async fn require_member(conn: &mut SqliteConnection, id: i64) -> CatalogResult<Member> {
    fetch_member(conn, id)
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("member {id}")))
}

async fn fetch_category(
    conn: &mut SqliteConnection,
    id: i64,
) -> CatalogResult<Option<DataCategory>> {
    fetch_one_opt(
        conn,
        format!("{CATEGORY_COLUMNS} WHERE id = ?1"),
        id,
        category,
    )
    .await
}

async fn fetch_mapping(
    conn: &mut SqliteConnection,
    member_id: i64,
    id: i64,
) -> CatalogResult<Option<BillingMapping>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{MAPPING_COLUMNS} WHERE id = ?1 AND member_id = ?2"
    )))
    .bind(id)
    .bind(member_id)
    .fetch_optional(conn)
    .await
    .map_err(backend_error)?;
    row.as_ref().map(mapping).transpose()
}

/// Checks the ownership of what a mapping names: the segment must be one of the member's
/// provider's, the category one of the member's own.
async fn check_mapping_refs(
    conn: &mut SqliteConnection,
    member_id: i64,
    draft: &MappingDraft,
) -> CatalogResult<()> {
    validate_segment_type(&draft.data_segment_type)?;
    let owner = super::sharing::segment_owner(conn, draft.segment_num).await?;
    if owner != Some(member_id) {
        return Err(FieldError::new(
            "segment_id",
            format!("segment {} is not one of your segments", draft.segment_num),
        )
        .into());
    }
    match fetch_category(conn, draft.data_category_id).await? {
        Some(c) if c.member_id == member_id => Ok(()),
        _ => Err(FieldError::new(
            "data_category_id",
            format!(
                "data category {} is not one of your categories",
                draft.data_category_id
            ),
        )
        .into()),
    }
}

async fn fetch_all<T>(
    conn: &mut SqliteConnection,
    sql: String,
    param: Option<i64>,
    decode: fn(&SqliteRow) -> CatalogResult<T>,
) -> CatalogResult<Vec<T>> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(p) = param {
        query = query.bind(p);
    }
    let rows = query.fetch_all(conn).await.map_err(backend_error)?;
    rows.iter().map(decode).collect()
}

impl SqliteCatalog {
    async fn read(&self) -> CatalogResult<sqlx::pool::PoolConnection<Sqlite>> {
        self.pool.acquire().await.map_err(backend_error)
    }
}

async fn insert_returning<T>(
    tx: &mut Transaction<'static, Sqlite>,
    query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    decode: fn(&SqliteRow) -> CatalogResult<T>,
    duplicate: &str,
    missing: &str,
) -> CatalogResult<T> {
    let row = query
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| catalog_error(e, duplicate, missing))?;
    decode(&row)
}

#[async_trait]
impl BillingCatalog for SqliteCatalog {
    async fn member_of_provider(&self, provider: ProviderId) -> CatalogResult<Option<Member>> {
        let mut conn = self.read().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MEMBER_COLUMNS} WHERE m.provider_id = ?1"
        )))
        .bind(provider.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend_error)?;
        row.as_ref().map(member).transpose()
    }

    async fn get_member(&self, member_id: i64) -> CatalogResult<Option<Member>> {
        fetch_member(&mut *self.read().await?, member_id).await
    }

    async fn list_members(&self) -> CatalogResult<Vec<Member>> {
        fetch_all(
            &mut *self.read().await?,
            format!("{MEMBER_COLUMNS} ORDER BY m.member_id"),
            None,
            member,
        )
        .await
    }

    async fn set_revshare(
        &self,
        member_id: i64,
        pct: f64,
        now: Timestamp,
    ) -> CatalogResult<Member> {
        if !(0.0..=100.0).contains(&pct) {
            return Err(FieldError::new("data_revshare_pct", "must be a percent, 0 to 100").into());
        }
        let mut tx = self.begin_write().await?;
        require_member(&mut tx, member_id).await?;
        sqlx::query("UPDATE members SET data_revshare_pct = ?1 WHERE member_id = ?2")
            .bind(pct)
            .bind(member_id)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        // Segments that are or were priced get the new share in their history.
        record_rules(
            &mut tx,
            "m.member_id = ?2 AND (b.id IS NOT NULL OR EXISTS \
             (SELECT 1 FROM billing_rule_history h WHERE h.segment_num = s.num))",
            now,
            member_id,
        )
        .await?;
        let m = require_member(&mut tx, member_id).await?;
        commit_change(tx).await?;
        Ok(m)
    }

    async fn create_publisher(
        &self,
        member_id: i64,
        name: &str,
        now: Timestamp,
    ) -> CatalogResult<DataPublisher> {
        let mut tx = self.begin_write().await?;
        require_member(&mut tx, member_id).await?;
        let p = insert_returning(
            &mut tx,
            sqlx::query(
                "INSERT INTO data_publishers (member_id, node_name, created_at) \
                 VALUES (?1, ?2, ?3) RETURNING id, member_id, node_name, level_index, active",
            )
            .bind(member_id)
            .bind(name)
            .bind(now.millis()),
            publisher,
            "data publisher",
            &format!("member {member_id}"),
        )
        .await?;
        commit_change(tx).await?;
        Ok(p)
    }

    async fn list_publishers(&self, member_id: Option<i64>) -> CatalogResult<Vec<DataPublisher>> {
        let sql = match member_id {
            Some(_) => format!("{PUBLISHER_COLUMNS} WHERE member_id = ?1 ORDER BY id"),
            None => format!("{PUBLISHER_COLUMNS} ORDER BY id"),
        };
        fetch_all(&mut *self.read().await?, sql, member_id, publisher).await
    }

    async fn create_category(
        &self,
        publisher_id: i64,
        name: &str,
        price: Price,
        now: Timestamp,
    ) -> CatalogResult<DataCategory> {
        validate_price(&price)?;
        let mut tx = self.begin_write().await?;
        let p = fetch_one_opt(
            &mut tx,
            format!("{PUBLISHER_COLUMNS} WHERE id = ?1"),
            publisher_id,
            publisher,
        )
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("data publisher {publisher_id}")))?;
        let c = insert_returning(
            &mut tx,
            sqlx::query(
                "INSERT INTO data_categories (publisher_id, member_id, node_name, cost_type, \
                 cost_value, currency, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 RETURNING id, publisher_id, member_id, node_name, level_index, active, \
                 cost_type, cost_value, currency",
            )
            .bind(publisher_id)
            .bind(p.member_id)
            .bind(name)
            .bind(price.cost_type.name())
            .bind(price.value)
            .bind(price.currency.as_str())
            .bind(now.millis()),
            category,
            "data category",
            &format!("data publisher {publisher_id}"),
        )
        .await?;
        commit_change(tx).await?;
        Ok(c)
    }

    async fn set_category_price(
        &self,
        category_id: i64,
        price: Price,
        now: Timestamp,
    ) -> CatalogResult<DataCategory> {
        validate_price(&price)?;
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE data_categories SET cost_type = ?1, cost_value = ?2, currency = ?3 \
             WHERE id = ?4",
        )
        .bind(price.cost_type.name())
        .bind(price.value)
        .bind(price.currency.as_str())
        .bind(category_id)
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?
        .rows_affected();
        if changed == 0 {
            return Err(CatalogError::NotFound(format!(
                "data category {category_id}"
            )));
        }
        record_rules(&mut tx, "b.data_category_id = ?2", now, category_id).await?;
        let c = fetch_category(&mut tx, category_id)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("data category {category_id}")))?;
        commit_change(tx).await?;
        Ok(c)
    }

    async fn get_category(&self, category_id: i64) -> CatalogResult<Option<DataCategory>> {
        fetch_category(&mut *self.read().await?, category_id).await
    }

    async fn list_categories(&self, member_id: Option<i64>) -> CatalogResult<Vec<DataCategory>> {
        let sql = match member_id {
            Some(_) => format!("{CATEGORY_COLUMNS} WHERE member_id = ?1 ORDER BY id"),
            None => format!("{CATEGORY_COLUMNS} ORDER BY id"),
        };
        fetch_all(&mut *self.read().await?, sql, member_id, category).await
    }

    async fn create_mapping(
        &self,
        member_id: i64,
        draft: &MappingDraft,
        now: Timestamp,
    ) -> CatalogResult<BillingMapping> {
        let mut tx = self.begin_write().await?;
        check_mapping_refs(&mut tx, member_id, draft).await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM segment_billing_categories WHERE segment_num = ?1")
                .bind(i64::from(draft.segment_num))
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend_error)?;
        if let Some(id) = existing {
            return Err(CatalogError::AlreadyExists(format!(
                "a mapping record of segment {} (id {id}; change it with PUT)",
                draft.segment_num
            )));
        }
        let m = insert_returning(
            &mut tx,
            sqlx::query(sqlx::AssertSqlSafe(
                "INSERT INTO segment_billing_categories (segment_num, member_id, \
                 data_category_id, active, is_public, data_segment_type_id, recommend_include, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
                 RETURNING id, member_id, segment_num, data_category_id, active, is_public, \
                 data_segment_type_id, recommend_include, created_at, updated_at"
                    .to_string(),
            ))
            .bind(i64::from(draft.segment_num))
            .bind(member_id)
            .bind(draft.data_category_id)
            .bind(draft.active)
            .bind(draft.is_public)
            .bind(draft.data_segment_type.as_str())
            .bind(draft.recommend_include)
            .bind(now.millis()),
            mapping,
            &format!("mapping of segment {}", draft.segment_num),
            "segment or data category",
        )
        .await?;
        record_rules(&mut tx, "s.num = ?2", now, i64::from(draft.segment_num)).await?;
        commit_change(tx).await?;
        Ok(m)
    }

    async fn update_mapping(
        &self,
        member_id: i64,
        id: i64,
        draft: &MappingDraft,
        now: Timestamp,
    ) -> CatalogResult<BillingMapping> {
        let mut tx = self.begin_write().await?;
        let current = fetch_mapping(&mut tx, member_id, id)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("mapping record {id}")))?;
        if draft.segment_num != current.segment_num {
            return Err(FieldError::new(
                "segment_id",
                format!(
                    "mapping record {id} is for segment {}; a record's segment does not change \
                     (delete it and create another)",
                    current.segment_num
                ),
            )
            .into());
        }
        check_mapping_refs(&mut tx, member_id, draft).await?;
        sqlx::query(
            "UPDATE segment_billing_categories SET data_category_id = ?1, active = ?2, \
             is_public = ?3, data_segment_type_id = ?4, recommend_include = ?5, updated_at = ?6 \
             WHERE id = ?7",
        )
        .bind(draft.data_category_id)
        .bind(draft.active)
        .bind(draft.is_public)
        .bind(draft.data_segment_type.as_str())
        .bind(draft.recommend_include)
        .bind(now.millis())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
        record_rules(&mut tx, "s.num = ?2", now, i64::from(current.segment_num)).await?;
        let m = fetch_mapping(&mut tx, member_id, id)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("mapping record {id}")))?;
        commit_change(tx).await?;
        Ok(m)
    }

    async fn delete_mapping(&self, member_id: i64, id: i64, now: Timestamp) -> CatalogResult<()> {
        let mut tx = self.begin_write().await?;
        let current = fetch_mapping(&mut tx, member_id, id)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("mapping record {id}")))?;
        sqlx::query("DELETE FROM segment_billing_categories WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        record_rules(&mut tx, "s.num = ?2", now, i64::from(current.segment_num)).await?;
        commit_change(tx).await
    }

    async fn get_mapping(&self, member_id: i64, id: i64) -> CatalogResult<Option<BillingMapping>> {
        fetch_mapping(&mut *self.read().await?, member_id, id).await
    }

    async fn list_mappings(
        &self,
        member_id: i64,
        start: u64,
        limit: u64,
    ) -> CatalogResult<(Vec<BillingMapping>, u64)> {
        let mut conn = self.read().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MAPPING_COLUMNS} WHERE member_id = ?1 ORDER BY id LIMIT ?2 OFFSET ?3"
        )))
        .bind(member_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(start).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(backend_error)?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM segment_billing_categories WHERE member_id = ?1",
        )
        .bind(member_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend_error)?;
        let list = rows
            .iter()
            .map(mapping)
            .collect::<CatalogResult<Vec<_>>>()?;
        Ok((list, count as u64))
    }

    async fn billing_rules(&self) -> CatalogResult<(Vec<SegmentOwner>, Vec<RuleChange>)> {
        let mut conn = self.read().await?;
        let owners = sqlx::query(
            "SELECT s.num, m.member_id, m.data_revshare_pct FROM segments s \
             JOIN folders f ON f.id = s.folder_id JOIN members m ON m.provider_id = f.provider_id \
             ORDER BY s.num",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|row| {
            let num: i64 = column(row, "num")?;
            Ok(SegmentOwner {
                segment_num: u32::try_from(num).map_err(|e| corrupt("segments.num", e))?,
                member_id: column(row, "member_id")?,
                revshare_pct: column(row, "data_revshare_pct")?,
            })
        })
        .collect::<CatalogResult<Vec<_>>>()?;
        let history = sqlx::query(
            "SELECT segment_num, valid_from, member_id, data_category_id, cost_type, cost_value, \
             currency, revshare_pct FROM billing_rule_history ORDER BY segment_num, valid_from, seq",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|row| {
            let num: i64 = column(row, "segment_num")?;
            let category: Option<i64> = column(row, "data_category_id")?;
            let mapping = match category {
                Some(id) => {
                    let t: String = column(row, "cost_type")?;
                    let c: String = column(row, "currency")?;
                    Some((id, price_of(&t, column(row, "cost_value")?, &c)?))
                }
                None => None,
            };
            Ok(RuleChange {
                segment_num: u32::try_from(num).map_err(|e| corrupt("segment_num", e))?,
                valid_from: timestamp_column(row, "valid_from")?,
                member_id: column(row, "member_id")?,
                mapping,
                revshare_pct: column(row, "revshare_pct")?,
            })
        })
        .collect::<CatalogResult<Vec<_>>>()?;
        Ok((owners, history))
    }

    async fn set_rate(
        &self,
        currency: CurrencyCode,
        to_settlement: f64,
        now: Timestamp,
    ) -> CatalogResult<RateChange> {
        if !to_settlement.is_finite() || to_settlement <= 0.0 {
            return Err(FieldError::new("rate", "must be a positive number").into());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO exchange_rates (currency, to_settlement, valid_from) VALUES (?1, ?2, ?3)",
        )
        .bind(currency.as_str())
        .bind(to_settlement)
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
        commit_change(tx).await?;
        Ok(RateChange {
            currency,
            to_settlement,
            valid_from: now,
        })
    }

    async fn rates(&self) -> CatalogResult<Vec<RateChange>> {
        sqlx::query(
            "SELECT currency, to_settlement, valid_from FROM exchange_rates \
             ORDER BY valid_from, seq",
        )
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|row| {
            let c: String = column(row, "currency")?;
            Ok(RateChange {
                currency: CurrencyCode::parse(&c).map_err(|why| corrupt("currency", why))?,
                to_settlement: column(row, "to_settlement")?,
                valid_from: timestamp_column(row, "valid_from")?,
            })
        })
        .collect()
    }

    async fn create_buyer(
        &self,
        name: &str,
        kind: BuyerKind,
        now: Timestamp,
    ) -> CatalogResult<Buyer> {
        let mut tx = self.begin_write().await?;
        let b = insert_returning(
            &mut tx,
            sqlx::query(
                "INSERT INTO buyers (name, kind, created_at) VALUES (?1, ?2, ?3) \
                 RETURNING id, name, kind, created_at",
            )
            .bind(name)
            .bind(kind.name())
            .bind(now.millis()),
            buyer,
            "buyer",
            "buyer",
        )
        .await?;
        commit_change(tx).await?;
        Ok(b)
    }

    async fn get_buyer(&self, id: i64) -> CatalogResult<Option<Buyer>> {
        fetch_one_opt(
            &mut *self.read().await?,
            "SELECT id, name, kind, created_at FROM buyers WHERE id = ?1".into(),
            id,
            buyer,
        )
        .await
    }

    async fn list_buyers(&self) -> CatalogResult<Vec<Buyer>> {
        fetch_all(
            &mut *self.read().await?,
            "SELECT id, name, kind, created_at FROM buyers ORDER BY id".into(),
            None,
            buyer,
        )
        .await
    }

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: UserRole,
        now: Timestamp,
    ) -> CatalogResult<User> {
        let (member_id, buyer_id) = match role {
            UserRole::Provider(m) => (Some(m), None),
            UserRole::Buyer(b) => (None, Some(b)),
        };
        let mut tx = self.begin_write().await?;
        let u = insert_returning(
            &mut tx,
            sqlx::query(
                "INSERT INTO users (username, password_hash, member_id, buyer_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id, username, password_hash, member_id, \
                 buyer_id, generation, created_at",
            )
            .bind(username)
            .bind(password_hash)
            .bind(member_id)
            .bind(buyer_id)
            .bind(now.millis()),
            user,
            &format!("user {username}"),
            match role {
                UserRole::Provider(_) => "member",
                UserRole::Buyer(_) => "buyer",
            },
        )
        .await?;
        commit_change(tx).await?;
        Ok(u)
    }

    async fn user_by_name(&self, username: &str) -> CatalogResult<Option<User>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{USER_COLUMNS} WHERE username = ?1"
        )))
        .bind(username)
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(backend_error)?;
        row.as_ref().map(user).transpose()
    }

    async fn get_user(&self, id: i64) -> CatalogResult<Option<User>> {
        fetch_one_opt(
            &mut *self.read().await?,
            format!("{USER_COLUMNS} WHERE id = ?1"),
            id,
            user,
        )
        .await
    }

    async fn list_users(&self) -> CatalogResult<Vec<User>> {
        fetch_all(
            &mut *self.read().await?,
            format!("{USER_COLUMNS} ORDER BY id"),
            None,
            user,
        )
        .await
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> CatalogResult<User> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE users SET password_hash = ?1, generation = generation + 1 \
             WHERE username = ?2 RETURNING id, username, password_hash, member_id, buyer_id, \
             generation, created_at",
        )
        .bind(password_hash)
        .bind(username)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend_error)?
        .ok_or_else(|| CatalogError::NotFound(format!("user {username}")))?;
        let u = user(&row)?;
        commit_change(tx).await?;
        Ok(u)
    }

    async fn create_bidder(
        &self,
        name: &str,
        token_hash: &str,
        now: Timestamp,
    ) -> CatalogResult<Bidder> {
        let mut tx = self.begin_write().await?;
        let b = insert_returning(
            &mut tx,
            sqlx::query(
                "INSERT INTO bidders (name, token_hash, created_at) VALUES (?1, ?2, ?3) \
                 RETURNING id, name, token_hash, revoked, created_at",
            )
            .bind(name)
            .bind(token_hash)
            .bind(now.millis()),
            bidder,
            "bidder token",
            "bidder",
        )
        .await?;
        commit_change(tx).await?;
        Ok(b)
    }

    async fn list_bidders(&self) -> CatalogResult<Vec<Bidder>> {
        fetch_all(
            &mut *self.read().await?,
            "SELECT id, name, token_hash, revoked, created_at FROM bidders ORDER BY id".into(),
            None,
            bidder,
        )
        .await
    }

    async fn revoke_bidder(&self, id: i64) -> CatalogResult<Bidder> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE bidders SET revoked = 1 WHERE id = ?1 \
             RETURNING id, name, token_hash, revoked, created_at",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend_error)?
        .ok_or_else(|| CatalogError::NotFound(format!("bidder {id}")))?;
        let b = bidder(&row)?;
        commit_change(tx).await?;
        Ok(b)
    }
}
