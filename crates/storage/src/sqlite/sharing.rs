//! Shares, activations, campaigns and the mail outbox on SQLite (migration 0004).
//!
//! Outbox bookkeeping (`mail_sent`, `mail_failed`) does not bump the change generation: no
//! cache depends on it.

use async_trait::async_trait;
use segmart_domain::billing::CurrencyCode;
use segmart_domain::{FieldError, FolderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::error::{backend_error, corrupt};
use super::rows::{column, timestamp_column};
use super::{SqliteCatalog, commit_change};
use crate::catalog::{CatalogError, CatalogResult};
use crate::sharing_catalog::{
    AccessData, AffectedBuyer, BuyerClient, Campaign, CampaignDraft, Mail, OutboxEntry,
    RevocationMail, Share, ShareDraft, SharingCatalog,
};

const SHARE_COLUMNS: &str = "SELECT id, member_id, folder_id, cpm, currency, public, key_hash, \
     key_label, created_at, revoked_at FROM shares";

fn opt_ts(row: &SqliteRow, name: &str) -> CatalogResult<Option<Timestamp>> {
    let v: Option<i64> = column(row, name)?;
    Ok(v.map(Timestamp::from_millis))
}

fn num(v: i64, what: &str) -> CatalogResult<u32> {
    u32::try_from(v).map_err(|e| corrupt(what, e))
}

async fn share_from_row(conn: &mut SqliteConnection, row: &SqliteRow) -> CatalogResult<Share> {
    let id: i64 = column(row, "id")?;
    let folder: Option<String> = column(row, "folder_id")?;
    let currency: String = column(row, "currency")?;
    let segments: Vec<i64> =
        sqlx::query_scalar("SELECT segment_num FROM share_segments WHERE share_id = ?1 ORDER BY 1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend_error)?;
    let recipients: Vec<i64> =
        sqlx::query_scalar("SELECT buyer_id FROM share_recipients WHERE share_id = ?1 ORDER BY 1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend_error)?;
    let activations = sqlx::query(
        "SELECT buyer_id, activated_at FROM activations WHERE share_id = ?1 ORDER BY activated_at",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend_error)?
    .iter()
    .map(|r| Ok((column(r, "buyer_id")?, timestamp_column(r, "activated_at")?)))
    .collect::<CatalogResult<Vec<_>>>()?;
    Ok(Share {
        id,
        member_id: column(row, "member_id")?,
        segments: segments
            .into_iter()
            .map(|n| num(n, "share_segments.segment_num"))
            .collect::<CatalogResult<_>>()?,
        folder: folder
            .map(|f| f.parse().map_err(|e| corrupt("shares.folder_id", e)))
            .transpose()?,
        cpm: column(row, "cpm")?,
        currency: CurrencyCode::parse(&currency).map_err(|e| corrupt("shares.currency", e))?,
        public: column(row, "public")?,
        key_hash: column(row, "key_hash")?,
        key_label: column(row, "key_label")?,
        recipients,
        activations,
        created_at: timestamp_column(row, "created_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
    })
}

async fn fetch_shares(
    conn: &mut SqliteConnection,
    filter: &str,
    param: Option<String>,
) -> CatalogResult<Vec<Share>> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SHARE_COLUMNS} {filter} ORDER BY id"
    )));
    if let Some(p) = param {
        q = q.bind(p);
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(backend_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(share_from_row(conn, row).await?);
    }
    Ok(out)
}

/// The member owning a segment, if it exists.
pub(super) async fn segment_owner(
    conn: &mut SqliteConnection,
    segment: u32,
) -> CatalogResult<Option<i64>> {
    sqlx::query_scalar(
        "SELECT m.member_id FROM segments s JOIN folders f ON f.id = s.folder_id \
         JOIN members m ON m.provider_id = f.provider_id WHERE s.num = ?1",
    )
    .bind(i64::from(segment))
    .fetch_optional(conn)
    .await
    .map_err(backend_error)
}

fn campaign_from(row: &SqliteRow, segs: &[(u32, bool)]) -> CatalogResult<Campaign> {
    let status: String = column(row, "status")?;
    Ok(Campaign {
        id: column(row, "id")?,
        buyer_id: column(row, "buyer_id")?,
        name: column(row, "name")?,
        match_all: column(row, "match_all")?,
        include: segs.iter().filter(|(_, e)| !e).map(|(n, _)| *n).collect(),
        exclude: segs.iter().filter(|(_, e)| *e).map(|(n, _)| *n).collect(),
        active: status == "active",
        stopped_reason: column(row, "stopped_reason")?,
        created_at: timestamp_column(row, "created_at")?,
        updated_at: timestamp_column(row, "updated_at")?,
    })
}

async fn fetch_campaigns(
    conn: &mut SqliteConnection,
    buyer_id: i64,
    id: Option<i64>,
) -> CatalogResult<Vec<Campaign>> {
    let rows = sqlx::query(
        "SELECT id, buyer_id, name, match_all, status, stopped_reason, created_at, updated_at \
         FROM campaigns WHERE buyer_id = ?1 AND (?2 IS NULL OR id = ?2) ORDER BY id",
    )
    .bind(buyer_id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend_error)?;
    let mut out = Vec::new();
    for row in &rows {
        let cid: i64 = column(row, "id")?;
        let segs = sqlx::query(
            "SELECT segment_num, exclude FROM campaign_segments WHERE campaign_id = ?1 ORDER BY 1",
        )
        .bind(cid)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|r| {
            let n: i64 = column(r, "segment_num")?;
            Ok((
                num(n, "campaign_segments.segment_num")?,
                column(r, "exclude")?,
            ))
        })
        .collect::<CatalogResult<Vec<_>>>()?;
        out.push(campaign_from(row, &segs)?);
    }
    Ok(out)
}

fn buyer_client(row: &SqliteRow) -> CatalogResult<BuyerClient> {
    let bits: i64 = column(row, "permissions")?;
    let id: String = column(row, "id")?;
    Ok(BuyerClient {
        id: id.parse().map_err(|e| corrupt("buyer_clients.id", e))?,
        buyer_id: column(row, "buyer_id")?,
        name: column(row, "name")?,
        permissions: u8::try_from(bits)
            .ok()
            .and_then(segmart_domain::BuyerPermissions::from_bits)
            .ok_or_else(|| corrupt("buyer_clients.permissions", bits))?,
        secret_hash: column(row, "secret_hash")?,
        revoked: column(row, "revoked")?,
        created_at: timestamp_column(row, "created_at")?,
    })
}

fn outbox_entry(row: &SqliteRow) -> CatalogResult<OutboxEntry> {
    let attempts: i64 = column(row, "attempts")?;
    Ok(OutboxEntry {
        id: column(row, "id")?,
        mail: Mail {
            to: column(row, "to_addr")?,
            subject: column(row, "subject")?,
            body: column(row, "body")?,
        },
        created_at: timestamp_column(row, "created_at")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: timestamp_column(row, "next_attempt_at")?,
        last_error: column(row, "last_error")?,
        sent_at: opt_ts(row, "sent_at")?,
    })
}

async fn insert_mails(
    conn: &mut SqliteConnection,
    mails: &[Mail],
    now: Timestamp,
) -> CatalogResult<()> {
    for m in mails {
        sqlx::query(
            "INSERT INTO outbox (to_addr, subject, body, created_at, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )
        .bind(&m.to)
        .bind(&m.subject)
        .bind(&m.body)
        .bind(now.millis())
        .execute(&mut *conn)
        .await
        .map_err(backend_error)?;
    }
    Ok(())
}

#[async_trait]
impl SharingCatalog for SqliteCatalog {
    async fn create_share(
        &self,
        member_id: i64,
        draft: &ShareDraft,
        key_hash: &str,
        key_label: &str,
        mails: &[Mail],
        now: Timestamp,
    ) -> CatalogResult<Share> {
        if !draft.cpm.is_finite() || draft.cpm < 0.0 {
            return Err(FieldError::new("cpm", "must be a non-negative number").into());
        }
        if draft.segments.is_empty() && draft.folder.is_none() {
            return Err(FieldError::new(
                "segments",
                "name at least one segment or a whole source (folder)",
            )
            .into());
        }
        if !draft.public && draft.recipients.is_empty() {
            return Err(FieldError::new(
                "recipients",
                "a private share names at least one recipient (or make it public)",
            )
            .into());
        }
        let mut tx = self.begin_write().await?;
        for (i, &segment) in draft.segments.iter().enumerate() {
            if segment_owner(&mut tx, segment).await? != Some(member_id) {
                return Err(FieldError::new(
                    format!("segments[{i}]"),
                    format!("segment {segment} is not one of your segments"),
                )
                .into());
            }
        }
        if let Some(folder) = draft.folder {
            let owner: Option<i64> = sqlx::query_scalar(
                "SELECT m.member_id FROM folders f JOIN members m ON m.provider_id = f.provider_id \
                 WHERE f.id = ?1",
            )
            .bind(folder.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?;
            if owner != Some(member_id) {
                return Err(FieldError::new(
                    "source",
                    format!("segment provider {folder} is not one of yours"),
                )
                .into());
            }
        }
        for (i, &buyer) in draft.recipients.iter().enumerate() {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM buyers WHERE id = ?1")
                .bind(buyer)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend_error)?;
            if exists.is_none() {
                return Err(FieldError::new(
                    format!("recipients[{i}]"),
                    format!("buyer {buyer} does not exist"),
                )
                .into());
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO shares (member_id, folder_id, cpm, currency, public, key_hash, key_label, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        )
        .bind(member_id)
        .bind(draft.folder.map(|f| f.to_string()))
        .bind(draft.cpm)
        .bind(draft.currency.as_str())
        .bind(draft.public)
        .bind(key_hash)
        .bind(key_label)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend_error)?;
        for &segment in &draft.segments {
            sqlx::query(
                "INSERT OR IGNORE INTO share_segments (share_id, segment_num) VALUES (?1, ?2)",
            )
            .bind(id)
            .bind(i64::from(segment))
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        }
        for &buyer in &draft.recipients {
            sqlx::query(
                "INSERT OR IGNORE INTO share_recipients (share_id, buyer_id) VALUES (?1, ?2)",
            )
            .bind(id)
            .bind(buyer)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        }
        insert_mails(&mut tx, mails, now).await?;
        let share = fetch_shares(&mut tx, "WHERE id = ?1", Some(id.to_string()))
            .await?
            .pop()
            .ok_or_else(|| CatalogError::Backend("share vanished".into()))?;
        commit_change(tx).await?;
        Ok(share)
    }

    async fn list_shares(&self, member_id: i64) -> CatalogResult<Vec<Share>> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        fetch_shares(
            &mut conn,
            "WHERE member_id = ?1",
            Some(member_id.to_string()),
        )
        .await
    }

    async fn share_by_key_hash(&self, key_hash: &str) -> CatalogResult<Option<Share>> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        Ok(
            fetch_shares(&mut conn, "WHERE key_hash = ?1", Some(key_hash.to_owned()))
                .await?
                .pop(),
        )
    }

    async fn activate_share(
        &self,
        share_id: i64,
        buyer_id: i64,
        now: Timestamp,
    ) -> CatalogResult<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO activations (share_id, buyer_id, activated_at) \
             VALUES (?1, ?2, ?3)",
        )
        .bind(share_id)
        .bind(buyer_id)
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?
        .rows_affected()
            == 1;
        if inserted {
            commit_change(tx).await?;
        }
        Ok(inserted)
    }

    async fn revoke_share(
        &self,
        member_id: i64,
        share_id: i64,
        notify: &RevocationMail,
        now: Timestamp,
    ) -> CatalogResult<Vec<AffectedBuyer>> {
        let mut tx = self.begin_write().await?;
        let revoked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM shares WHERE id = ?1 AND member_id = ?2")
                .bind(share_id)
                .bind(member_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend_error)?;
        match revoked {
            None => return Err(CatalogError::NotFound(format!("share {share_id}"))),
            Some(Some(_)) => return Ok(Vec::new()),
            Some(None) => {}
        }
        sqlx::query("UPDATE shares SET revoked_at = ?1 WHERE id = ?2")
            .bind(now.millis())
            .bind(share_id)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        // Campaigns of the share's activators that use a segment the buyer can no longer use:
        // not public, and covered by no other live share the buyer activated.
        let rows = sqlx::query(
            "WITH covered(num) AS ( \
               SELECT segment_num FROM share_segments WHERE share_id = ?1 \
               UNION SELECT seg.num FROM shares s JOIN segments seg ON seg.folder_id = s.folder_id \
                     WHERE s.id = ?1) \
             SELECT DISTINCT c.id, c.buyer_id, c.name FROM activations a \
             JOIN campaigns c ON c.buyer_id = a.buyer_id AND c.status = 'active' \
             JOIN campaign_segments cs ON cs.campaign_id = c.id \
             WHERE a.share_id = ?1 AND cs.segment_num IN (SELECT num FROM covered) \
             AND NOT EXISTS (SELECT 1 FROM segment_billing_categories b \
                 WHERE b.segment_num = cs.segment_num AND b.active = 1 AND b.is_public = 1) \
             AND NOT EXISTS (SELECT 1 FROM activations a2 JOIN shares s2 ON s2.id = a2.share_id \
                 WHERE a2.buyer_id = c.buyer_id AND s2.revoked_at IS NULL AND ( \
                   EXISTS (SELECT 1 FROM share_segments ss2 \
                           WHERE ss2.share_id = s2.id AND ss2.segment_num = cs.segment_num) \
                   OR s2.folder_id = (SELECT folder_id FROM segments WHERE num = cs.segment_num))) \
             ORDER BY c.buyer_id, c.id",
        )
        .bind(share_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend_error)?;
        let mut affected: Vec<AffectedBuyer> = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(|e| corrupt("campaigns.id", e))?;
            let buyer: i64 = row
                .try_get("buyer_id")
                .map_err(|e| corrupt("buyer_id", e))?;
            let name: String = row.try_get("name").map_err(|e| corrupt("name", e))?;
            sqlx::query(
                "UPDATE campaigns SET status = 'stopped', stopped_reason = ?1, updated_at = ?2 \
                 WHERE id = ?3",
            )
            .bind(format!(
                "access to shared segments was revoked by their owner (share {share_id})"
            ))
            .bind(now.millis())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
            match affected.last_mut() {
                Some(a) if a.buyer_id == buyer => a.stopped.push((id, name)),
                _ => affected.push(AffectedBuyer {
                    buyer_id: buyer,
                    emails: Vec::new(),
                    stopped: vec![(id, name)],
                }),
            }
        }
        // Every activator loses access, with or without a campaign to stop: each is told.
        let activators: Vec<i64> = sqlx::query_scalar(
            "SELECT buyer_id FROM activations WHERE share_id = ?1 ORDER BY buyer_id",
        )
        .bind(share_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend_error)?;
        for buyer in activators {
            if !affected.iter().any(|a| a.buyer_id == buyer) {
                affected.push(AffectedBuyer {
                    buyer_id: buyer,
                    emails: Vec::new(),
                    stopped: Vec::new(),
                });
            }
        }
        affected.sort_by_key(|a| a.buyer_id);
        for a in &mut affected {
            a.emails = sqlx::query_scalar(
                "SELECT email FROM users WHERE buyer_id = ?1 AND email IS NOT NULL ORDER BY id",
            )
            .bind(a.buyer_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend_error)?;
            insert_mails(&mut tx, &notify(a), now).await?;
        }
        commit_change(tx).await?;
        Ok(affected)
    }

    async fn access_data(&self) -> CatalogResult<AccessData> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        let shares = fetch_shares(&mut conn, "WHERE revoked_at IS NULL", None).await?;
        let segments = sqlx::query("SELECT num, folder_id, active FROM segments ORDER BY num")
            .fetch_all(&mut *conn)
            .await
            .map_err(backend_error)?
            .iter()
            .map(|r| {
                let n: i64 = column(r, "num")?;
                let f: String = column(r, "folder_id")?;
                Ok((
                    num(n, "segments.num")?,
                    f.parse::<FolderId>()
                        .map_err(|e| corrupt("segments.folder_id", e))?,
                    column(r, "active")?,
                ))
            })
            .collect::<CatalogResult<Vec<_>>>()?;
        let public: Vec<i64> = sqlx::query_scalar(
            "SELECT segment_num FROM segment_billing_categories WHERE is_public = 1 AND active = 1",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend_error)?;
        Ok(AccessData {
            shares,
            segments,
            public: public
                .into_iter()
                .map(|n| num(n, "segment_num"))
                .collect::<CatalogResult<_>>()?,
        })
    }

    async fn set_user_email(&self, username: &str, email: Option<&str>) -> CatalogResult<()> {
        if let Some(e) = email
            && (!e.contains('@') || e.len() > 254 || e.contains(['\r', '\n', ' ', '<', '>']))
        {
            return Err(FieldError::new("email", format!("{e:?} is not an e-mail address")).into());
        }
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE users SET email = ?1 WHERE username = ?2")
            .bind(email)
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?
            .rows_affected();
        if n == 0 {
            return Err(CatalogError::NotFound(format!("user {username}")));
        }
        commit_change(tx).await
    }

    async fn user_email(&self, username: &str) -> CatalogResult<Option<String>> {
        let email: Option<Option<String>> =
            sqlx::query_scalar("SELECT email FROM users WHERE username = ?1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend_error)?;
        Ok(email.flatten())
    }

    async fn create_campaign(
        &self,
        buyer_id: i64,
        draft: &CampaignDraft,
        now: Timestamp,
    ) -> CatalogResult<Campaign> {
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO campaigns (buyer_id, name, match_all, status, created_at, updated_at) \
             VALUES (?1, ?2, ?3, 'active', ?4, ?4) RETURNING id",
        )
        .bind(buyer_id)
        .bind(&draft.name)
        .bind(draft.match_all)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend_error)?;
        for (list, exclude) in [(&draft.include, false), (&draft.exclude, true)] {
            for &segment in list {
                sqlx::query(
                    "INSERT INTO campaign_segments (campaign_id, segment_num, exclude) \
                     VALUES (?1, ?2, ?3)",
                )
                .bind(id)
                .bind(i64::from(segment))
                .bind(exclude)
                .execute(&mut *tx)
                .await
                .map_err(|e| super::error::catalog_error(e, "campaign segment", "segment"))?;
            }
        }
        let c = fetch_campaigns(&mut tx, buyer_id, Some(id))
            .await?
            .pop()
            .ok_or_else(|| CatalogError::Backend("campaign vanished".into()))?;
        commit_change(tx).await?;
        Ok(c)
    }

    async fn list_campaigns(&self, buyer_id: i64) -> CatalogResult<Vec<Campaign>> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        fetch_campaigns(&mut conn, buyer_id, None).await
    }

    async fn get_campaign(&self, buyer_id: i64, id: i64) -> CatalogResult<Option<Campaign>> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        Ok(fetch_campaigns(&mut conn, buyer_id, Some(id)).await?.pop())
    }

    async fn set_campaign_status(
        &self,
        buyer_id: i64,
        id: i64,
        active: bool,
        reason: Option<&str>,
        now: Timestamp,
    ) -> CatalogResult<Campaign> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE campaigns SET status = ?1, stopped_reason = ?2, updated_at = ?3 \
             WHERE id = ?4 AND buyer_id = ?5",
        )
        .bind(if active { "active" } else { "stopped" })
        .bind(if active { None } else { reason })
        .bind(now.millis())
        .bind(id)
        .bind(buyer_id)
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?
        .rows_affected();
        if n == 0 {
            return Err(CatalogError::NotFound(format!("campaign {id}")));
        }
        let c = fetch_campaigns(&mut tx, buyer_id, Some(id))
            .await?
            .pop()
            .ok_or_else(|| CatalogError::NotFound(format!("campaign {id}")))?;
        commit_change(tx).await?;
        Ok(c)
    }

    async fn create_buyer_client(
        &self,
        buyer_id: i64,
        name: &str,
        permissions: segmart_domain::BuyerPermissions,
        secret_hash: &str,
        now: Timestamp,
    ) -> CatalogResult<BuyerClient> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO buyer_clients (id, buyer_id, name, permissions, secret_hash, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING *",
        )
        .bind(segmart_domain::ClientId::random().to_string())
        .bind(buyer_id)
        .bind(name)
        .bind(i64::from(permissions.bits()))
        .bind(secret_hash)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            super::error::catalog_error(e, "buyer client", &format!("buyer {buyer_id}"))
        })?;
        let client = buyer_client(&row)?;
        commit_change(tx).await?;
        Ok(client)
    }

    async fn get_buyer_client(
        &self,
        id: segmart_domain::ClientId,
    ) -> CatalogResult<Option<BuyerClient>> {
        sqlx::query("SELECT * FROM buyer_clients WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?
            .as_ref()
            .map(buyer_client)
            .transpose()
    }

    async fn list_buyer_clients(&self) -> CatalogResult<Vec<BuyerClient>> {
        sqlx::query("SELECT * FROM buyer_clients ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(buyer_client)
            .collect()
    }

    async fn revoke_buyer_client(
        &self,
        id: segmart_domain::ClientId,
    ) -> CatalogResult<BuyerClient> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("UPDATE buyer_clients SET revoked = 1 WHERE id = ?1 RETURNING *")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or_else(|| CatalogError::NotFound(format!("buyer client {id}")))?;
        let client = buyer_client(&row)?;
        commit_change(tx).await?;
        Ok(client)
    }

    async fn enqueue_mail(&self, mails: &[Mail], now: Timestamp) -> CatalogResult<()> {
        let mut tx = self.begin_write().await?;
        insert_mails(&mut tx, mails, now).await?;
        tx.commit().await.map_err(backend_error)
    }

    async fn due_mail(&self, now: Timestamp, limit: u32) -> CatalogResult<Vec<OutboxEntry>> {
        sqlx::query(
            "SELECT * FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= ?1 \
             ORDER BY next_attempt_at, id LIMIT ?2",
        )
        .bind(now.millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(outbox_entry)
        .collect()
    }

    async fn mail_sent(&self, id: i64, now: Timestamp) -> CatalogResult<()> {
        sqlx::query("UPDATE outbox SET sent_at = ?1, attempts = attempts + 1 WHERE id = ?2")
            .bind(now.millis())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn mail_failed(&self, id: i64, error: &str, retry_at: Timestamp) -> CatalogResult<()> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2 \
             WHERE id = ?3",
        )
        .bind(error)
        .bind(retry_at.millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(())
    }

    async fn outbox(&self, limit: u32) -> CatalogResult<Vec<OutboxEntry>> {
        sqlx::query("SELECT * FROM outbox ORDER BY id DESC LIMIT ?1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(outbox_entry)
            .collect()
    }
}
