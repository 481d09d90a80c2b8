//! Sharing segments with buyers (seed 000): access keys, sending them, activation (by key or by
//! link), the owner's table, the buyer's external segments, campaigns, and revocation that
//! stops spend.
//!
//! Provider (signed-in provider user): `POST /shares`, `GET /shares`, `DELETE /shares/{id}`.
//! Buyer (signed-in buyer user): `POST /buyer/activations`, `GET /activate?key=` (a
//! confirmation page) and `POST /activate`, `GET /buyer/segments`, `GET|POST /buyer/campaigns`,
//! `GET /buyer/campaigns/{id}`, `POST /buyer/campaigns/{id}/stop|start`.
//! Operator: `GET /admin/outbox`.
//!
//! Keys carry 256 random bits (`shk_…`); only their SHA-256 is stored, so a database leak does
//! not reveal them, and they are shown once, at generation. Buyers never see user ids or
//! memberships: only names, descriptions, providers and prices.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use segmart_domain::access::Access;
use segmart_domain::billing::CurrencyCode;
use segmart_domain::{BuyerPermission, ErrorCode, FieldError, FolderId, SegmentNum};
use segmart_storage::billing_catalog::{BuyerKind, UserRole};
use segmart_storage::sharing_catalog::{
    AffectedBuyer, Campaign, CampaignDraft, Mail, Share, ShareDraft,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::session::Caller;
use super::xandr::XandrError;
use crate::admin::Operator;
use crate::body::parse_json;
use crate::error::ApiError;
use crate::secrets;
use crate::state::SharedState;

type ApiResult<T> = Result<T, ApiError>;

fn caller(c: Result<Caller, XandrError>) -> ApiResult<Caller> {
    c.map_err(|e| e.0)
}

/// The URL of this server as clients reach it: the configured public URL, else the request's
/// `Host`.
fn base_url(state: &SharedState, headers: &HeaderMap) -> String {
    state.settings.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1:8080");
        format!("http://{host}")
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewShare {
    /// Platform ids of single segments to share.
    #[serde(default)]
    pub segments: Vec<u32>,
    /// A whole source: a segment provider folder (`segmentProviderId`); every segment it has,
    /// now and later.
    pub source: Option<String>,
    /// Fixed CPM charged to the buyer on top of the media cost; 0 or absent: free.
    #[serde(default)]
    pub cpm: f64,
    /// Currency of the CPM (default USD).
    pub currency: Option<String>,
    /// Buyer logins (user names) of a private share; empty: public.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Send the key to the private recipients now, by e-mail with an activation link.
    #[serde(default)]
    pub send: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareDto {
    pub id: i64,
    /// Non-secret name of the key.
    pub key_label: String,
    pub segments: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub cpm: f64,
    pub currency: String,
    /// `"public"`, or the recipients' logins.
    pub access: Value,
    pub activations: Vec<Value>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

async fn usernames_of(state: &SharedState, buyers: &[i64]) -> ApiResult<Vec<(i64, String)>> {
    let users = state.catalog.list_users().await?;
    Ok(users
        .into_iter()
        .filter_map(|u| match u.role {
            UserRole::Buyer(b) if buyers.contains(&b) => Some((b, u.username)),
            _ => None,
        })
        .collect())
}

async fn share_dto(state: &SharedState, share: &Share) -> ApiResult<ShareDto> {
    let names = usernames_of(state, &share.recipients).await?;
    let access = if share.public {
        json!("public")
    } else {
        json!(names.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>())
    };
    Ok(ShareDto {
        id: share.id,
        key_label: share.key_label.clone(),
        segments: share.segments.clone(),
        source: share.folder.map(|f| f.to_string()),
        cpm: share.cpm,
        currency: share.currency.to_string(),
        access,
        activations: share
            .activations
            .iter()
            .map(|(b, at)| json!({"buyerId": b, "activatedAt": at.millis()}))
            .collect(),
        created_at: share.created_at.millis(),
        revoked_at: share.revoked_at.map(|t| t.millis()),
    })
}

/// Generates an access key for segments or a whole source.
#[utoipa::path(post, path = "/shares", tag = "sharing", request_body = NewShare,
    responses((status = 201, description = "The key (shown only now), its recipients or \"public\""),
              (status = 400, description = "A segment, source or recipient that is not valid or not yours")))]
pub async fn create_share(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let who = caller(who)?;
    let member = who.member()?.clone();
    let request: NewShare = parse_json(&body)?;
    let currency = CurrencyCode::parse(request.currency.as_deref().unwrap_or("USD"))
        .map_err(|e| FieldError::new("currency", e))?;
    let folder = request
        .source
        .as_deref()
        .map(|s| {
            s.parse::<FolderId>()
                .map_err(|_| FieldError::new("source", format!("{s:?} is not a segmentProviderId")))
        })
        .transpose()?;
    // Recipients by login: each must be a buyer's user.
    let mut recipients = Vec::new();
    let mut recipient_names = Vec::new();
    for (i, name) in request.recipients.iter().enumerate() {
        let user = state.catalog.user_by_name(name).await?;
        match user.map(|u| u.role) {
            Some(UserRole::Buyer(b)) => {
                recipients.push(b);
                recipient_names.push(name.clone());
            }
            _ => {
                return Err(FieldError::new(
                    format!("recipients[{i}]"),
                    format!("{name:?} is not a buyer's login"),
                )
                .into());
            }
        }
    }
    let draft = ShareDraft {
        segments: request.segments.clone(),
        folder,
        cpm: request.cpm,
        currency,
        public: recipients.is_empty(),
        recipients: recipients.clone(),
    };
    let key = format!("shk_{}", secrets::new_client_secret());
    let key_label = format!("{}…", &key[..10]);
    let link = format!("{}/activate?key={key}", base_url(&state, &headers));
    let mut mails = Vec::new();
    if request.send && !draft.public {
        let users = state.catalog.list_users().await?;
        for u in users {
            if let (UserRole::Buyer(b), Some(email)) =
                (u.role, email_of(&state, &u.username).await?)
                && recipients.contains(&b)
            {
                mails.push(Mail {
                    to: email,
                    subject: format!("{} shares audience data with you", member.provider_name),
                    body: format!(
                        "{} gave you access to audience segments on segmart ({}).\n\n\
                         Activate it by opening this link and confirming:\n{link}\n\n\
                         or enter this access key under External segments:\n{key}\n",
                        member.provider_name,
                        if draft.cpm > 0.0 {
                            format!(
                                "{} {} CPM on top of the media cost",
                                draft.cpm, draft.currency
                            )
                        } else {
                            "free of charge".into()
                        }
                    ),
                });
            }
        }
    }
    let share = state
        .catalog
        .create_share(
            member.member_id,
            &draft,
            &secrets::sha256_hex(&key),
            &key_label,
            &mails,
            state.clock.now(),
        )
        .await?;
    state.billing.reload(state.catalog.as_ref()).await?;
    let dto = share_dto(&state, &share).await?;
    let mut answer = serde_json::to_value(&dto).map_err(ApiError::internal)?;
    answer["key"] = json!(key);
    answer["activationLink"] = json!(link);
    answer["notified"] = json!(mails.iter().map(|m| m.to.clone()).collect::<Vec<_>>());
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn email_of(state: &SharedState, username: &str) -> ApiResult<Option<String>> {
    Ok(state.catalog.user_email(username).await?)
}

/// Everything the provider shares: segments, terms, keys (by label), recipients, activations.
#[utoipa::path(get, path = "/shares", tag = "sharing",
    responses((status = 200, description = "`shares`")))]
pub async fn list_shares(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
) -> ApiResult<Json<Value>> {
    let who = caller(who)?;
    let member = who.member()?;
    let mut shares = Vec::new();
    for s in state.catalog.list_shares(member.member_id).await? {
        shares.push(share_dto(&state, &s).await?);
    }
    Ok(Json(json!({ "shares": shares })))
}

fn revocation_mail(a: &AffectedBuyer, share_id: i64) -> Vec<Mail> {
    let stopped = if a.stopped.is_empty() {
        "None of your campaigns used it.".to_string()
    } else {
        let names: Vec<String> = a
            .stopped
            .iter()
            .map(|(id, name)| format!("  - campaign {id}: {name}"))
            .collect();
        format!(
            "These campaigns were stopped and use no more of that data:\n{}",
            names.join("\n")
        )
    };
    a.emails
        .iter()
        .map(|to| Mail {
            to: to.clone(),
            subject: "Access to shared audience data was revoked".into(),
            body: format!(
                "The owner of audience data you used revoked your access (share {share_id}).\n\
                 {stopped}\n"
            ),
        })
        .collect()
}

/// Deletes a key: every recipient campaign using an affected segment stops at once, and each
/// affected buyer is told by e-mail.
#[utoipa::path(delete, path = "/shares/{id}", tag = "sharing",
    params(("id" = i64, Path, description = "share id")),
    responses((status = 200, description = "Revoked: the stopped campaigns per buyer"),
              (status = 404, description = "No such share of yours")))]
pub async fn revoke_share(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let who = caller(who)?;
    let member = who.member()?;
    let notify = move |a: &AffectedBuyer| revocation_mail(a, id);
    let affected = state
        .catalog
        .revoke_share(member.member_id, id, &notify, state.clock.now())
        .await?;
    state.billing.reload(state.catalog.as_ref()).await?;
    Ok(Json(json!({
        "revoked": id,
        "affected": affected.iter().map(|a| json!({
            "buyerId": a.buyer_id,
            "stoppedCampaigns": a.stopped.iter().map(|(c, _)| c).collect::<Vec<_>>(),
            "notified": a.emails,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    pub key: String,
}

/// Activates a key for the signed-in buyer; activating twice is harmless.
async fn activate(state: &SharedState, buyer_id: i64, key: &str) -> ApiResult<Value> {
    let buyer = state
        .catalog
        .get_buyer(buyer_id)
        .await?
        .ok_or_else(|| ApiError::internal("buyer of a user is missing"))?;
    if buyer.kind == BuyerKind::Agency {
        return Err(ApiError::new(
            ErrorCode::WrongRole,
            "only end advertisers may activate access keys; an agency cannot",
        ));
    }
    let share = state
        .catalog
        .share_by_key_hash(&secrets::sha256_hex(key.trim()))
        .await?
        .filter(|s| s.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found("access key (unknown or revoked)"))?;
    if !share.public && !share.recipients.contains(&buyer_id) {
        return Err(ApiError::new(
            ErrorCode::ForeignResource,
            "this access key is private and was not given to you",
        ));
    }
    let new = state
        .catalog
        .activate_share(share.id, buyer_id, state.clock.now())
        .await?;
    state.billing.reload(state.catalog.as_ref()).await?;
    Ok(
        json!({"shareId": share.id, "activated": true, "alreadyActive": !new,
              "segments": share.segments, "source": share.folder.map(|f| f.to_string())}),
    )
}

/// Activates an access key.
#[utoipa::path(post, path = "/buyer/activations", tag = "sharing", request_body = Activation,
    responses((status = 200, description = "Activated (or already active)"),
              (status = 403, description = "An agency, or a private key given to someone else"),
              (status = 404, description = "Unknown or revoked key")))]
pub async fn activate_key(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let who = caller(who)?;
    let buyer_id = who.buyer(BuyerPermission::Activate)?;
    let request: Activation = parse_json(&body)?;
    Ok(Json(activate(&state, buyer_id, &request.key).await?))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    ))
}

#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    pub key: Option<String>,
}

/// The activation link's confirmation page.
pub async fn activation_page(
    State(state): State<SharedState>,
    Query(query): Query<KeyQuery>,
) -> Response {
    let Some(key) = query.key.filter(|k| !k.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            page("Activate access", "<p>The link has no key.</p>"),
        )
            .into_response();
    };
    let share = state
        .catalog
        .share_by_key_hash(&secrets::sha256_hex(key.trim()))
        .await
        .ok()
        .flatten()
        .filter(|s| s.revoked_at.is_none());
    let Some(share) = share else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Activate access",
                "<p>This key is unknown or was revoked.</p>",
            ),
        )
            .into_response();
    };
    let owner = state
        .catalog
        .get_member(share.member_id)
        .await
        .ok()
        .flatten()
        .map(|m| m.provider_name)
        .unwrap_or_default();
    page(
        "Activate access to audience data",
        &format!(
            "<p><b>{}</b> shares audience data with you ({}).</p>\
             <p>Sign in first (<code>POST /auth</code>), then confirm:</p>\
             <form method=\"post\" action=\"/activate\"><input type=\"hidden\" name=\"key\" \
             value=\"{}\"><button type=\"submit\">Confirm</button></form>",
            escape(&owner),
            if share.cpm > 0.0 {
                format!("{} {} CPM", share.cpm, share.currency)
            } else {
                "free".into()
            },
            escape(&key)
        ),
    )
    .into_response()
}

/// The confirmation of the activation page (a form post with the session cookie).
pub async fn confirm_activation(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
    axum::extract::Form(form): axum::extract::Form<Activation>,
) -> Response {
    let result = match caller(who) {
        Ok(who) => match who.buyer(BuyerPermission::Activate) {
            Ok(buyer_id) => activate(&state, buyer_id, &form.key).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => page(
            "Access activated",
            "<p>The shared segments are now in your external segments.</p>",
        )
        .into_response(),
        Err(e) => (
            e.status(),
            page(
                "Activation refused",
                &format!("<p>{}</p>", escape(&e.message)),
            ),
        )
            .into_response(),
    }
}

/// Segment sizes, recomputed by a pass over the profile store at most once per
/// [`SizeCache::MAX_AGE_SECS`].
#[derive(Default)]
pub struct SizeCache {
    cached: tokio::sync::Mutex<Option<(segmart_domain::Timestamp, Sizes)>>,
}

/// Segment number → live profiles holding it.
pub type Sizes = std::sync::Arc<std::collections::HashMap<u32, u64>>;

impl SizeCache {
    pub const MAX_AGE_SECS: i64 = 300;

    pub async fn get(
        &self,
        state: &SharedState,
        now: segmart_domain::Timestamp,
    ) -> ApiResult<Sizes> {
        let mut cached = self.cached.lock().await;
        if let Some((at, sizes)) = cached.as_ref()
            && now.millis() - at.millis() < Self::MAX_AGE_SECS * 1000
            && now >= *at
        {
            return Ok(sizes.clone());
        }
        let sizes = std::sync::Arc::new(state.profiles.segment_sizes(now).await?);
        *cached = Some((now, sizes.clone()));
        Ok(sizes)
    }
}

/// Sizes are shown rounded down to two significant digits and floored at 1 000: a buyer
/// cannot probe whether a handful of users is in a segment.
pub fn rounded_size(n: u64) -> Option<u64> {
    if n < 1000 {
        return None;
    }
    let mut scale = 1u64;
    while n / scale >= 100 {
        scale *= 10;
    }
    Some(n / scale * scale)
}

/// The segments the signed-in buyer may use: names, descriptions, providers and prices only.
#[utoipa::path(get, path = "/buyer/segments", tag = "sharing",
    responses((status = 200, description = "`segments`")))]
pub async fn external_segments(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
) -> ApiResult<Json<Value>> {
    let who = caller(who)?;
    let buyer_id = who.buyer(BuyerPermission::SegmentsRead)?;
    let view = state.billing.snapshot();
    let now = state.clock.now();
    let members = state.catalog.list_members().await?;
    let sizes = state.sizes.get(&state, now).await?;
    let mut out = Vec::new();
    for (num, access) in view.usable_by(buyer_id) {
        let Some(Some((folder, key))) = state
            .directory
            .segment_locations(std::iter::once(SegmentNum(num)))
            .pop()
        else {
            continue;
        };
        let Some(segment) = state.catalog.get_segment(folder, &key).await? else {
            continue;
        };
        let rule = view.rule_at(SegmentNum(num), now);
        let provider = rule
            .as_ref()
            .and_then(|r| members.iter().find(|m| m.member_id == r.member_id))
            .map(|m| m.provider_name.clone());
        let price = rule.as_ref().and_then(|r| r.mapping).map(|(_, p)| {
            json!({"costType": p.cost_type.name(), "costValue": p.value, "currency": p.currency.as_str()})
        });
        let (how, share_cpm) = match access {
            Access::Public => ("public", None),
            Access::Shared { share_id, cpm } => {
                let _ = share_id;
                (
                    "shared",
                    cpm.map(|c| json!({"cpm": c.cpm, "currency": c.currency.as_str()})),
                )
            }
            Access::Denied => continue,
        };
        out.push(json!({
            "id": num,
            "name": segment.spec.name,
            "description": segment.spec.description,
            "provider": provider,
            "access": how,
            "price": price,
            "shareCpm": share_cpm,
            "size": sizes.get(&num).copied().and_then(rounded_size),
        }));
    }
    Ok(Json(json!({ "segments": out })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Audience {
    #[serde(default)]
    pub include: Vec<u32>,
    #[serde(default)]
    pub exclude: Vec<u32>,
    /// `any` (default) or `all` of `include`.
    #[serde(rename = "match")]
    pub match_: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    pub audience: Audience,
}

fn campaign_json(c: &Campaign) -> Value {
    json!({
        "id": c.id,
        "buyerId": c.buyer_id,
        "name": c.name,
        "audience": {"include": c.include, "exclude": c.exclude,
                     "match": if c.match_all { "all" } else { "any" }},
        "status": if c.active { "active" } else { "stopped" },
        "stoppedReason": c.stopped_reason,
        "createdAt": c.created_at.millis(),
        "updatedAt": c.updated_at.millis(),
    })
}

/// Creates a campaign; every segment of its audience must be usable by the buyer.
#[utoipa::path(post, path = "/buyer/campaigns", tag = "sharing", request_body = NewCampaign,
    responses((status = 201, description = "The campaign, active"),
              (status = 400, description = "A segment the buyer may not use, or a bad rule")))]
pub async fn create_campaign(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let who = caller(who)?;
    let buyer_id = who.buyer(BuyerPermission::Campaigns)?;
    let request: NewCampaign = parse_json(&body)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(FieldError::new("name", "must be 1..=255 characters").into());
    }
    let match_all = match request.audience.match_.as_deref().unwrap_or("any") {
        "any" => false,
        "all" => true,
        other => {
            return Err(
                FieldError::new("audience.match", format!("{other:?}: use any or all")).into(),
            );
        }
    };
    if request.audience.include.is_empty() {
        return Err(FieldError::new("audience.include", "name at least one segment").into());
    }
    let view = state.billing.snapshot();
    let mut seen = std::collections::HashSet::new();
    for (list, field) in [
        (&request.audience.include, "audience.include"),
        (&request.audience.exclude, "audience.exclude"),
    ] {
        for (i, &segment) in list.iter().enumerate() {
            if !seen.insert(segment) {
                return Err(FieldError::new(
                    format!("{field}[{i}]"),
                    format!("segment {segment} is named twice"),
                )
                .into());
            }
            if !view.access(buyer_id, SegmentNum(segment)).allowed() {
                return Err(FieldError::new(
                    format!("{field}[{i}]"),
                    format!(
                        "segment {segment} is not usable by you: not public, and no share of it \
                         was activated by you"
                    ),
                )
                .into());
            }
        }
    }
    let campaign = state
        .catalog
        .create_campaign(
            buyer_id,
            &CampaignDraft {
                name: name.to_owned(),
                match_all,
                include: request.audience.include,
                exclude: request.audience.exclude,
            },
            state.clock.now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(campaign_json(&campaign))).into_response())
}

/// The buyer's campaigns.
#[utoipa::path(get, path = "/buyer/campaigns", tag = "sharing",
    responses((status = 200, description = "`campaigns`")))]
pub async fn list_campaigns(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
) -> ApiResult<Json<Value>> {
    let who = caller(who)?;
    let buyer_id = who.buyer(BuyerPermission::Campaigns)?;
    let list = state.catalog.list_campaigns(buyer_id).await?;
    Ok(Json(
        json!({ "campaigns": list.iter().map(campaign_json).collect::<Vec<_>>() }),
    ))
}

/// One campaign of the buyer.
#[utoipa::path(get, path = "/buyer/campaigns/{id}", tag = "sharing",
    params(("id" = i64, Path, description = "campaign id")),
    responses((status = 200, description = "The campaign"), (status = 404, description = "Not yours")))]
pub async fn get_campaign(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let who = caller(who)?;
    let buyer_id = who.buyer(BuyerPermission::Campaigns)?;
    let c = state
        .catalog
        .get_campaign(buyer_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("campaign {id}")))?;
    Ok(Json(campaign_json(&c)))
}

/// Stops (`stop`) or restarts (`start`) a campaign; a restart needs every segment usable again.
#[utoipa::path(post, path = "/buyer/campaigns/{id}/{action}", tag = "sharing",
    params(("id" = i64, Path, description = "campaign id"), ("action" = String, Path, description = "stop or start")),
    responses((status = 200, description = "The campaign"), (status = 404, description = "Not yours")))]
pub async fn campaign_action(
    State(state): State<SharedState>,
    who: Result<Caller, XandrError>,
    Path((id, action)): Path<(i64, String)>,
) -> ApiResult<Json<Value>> {
    let who = caller(who)?;
    let buyer_id = who.buyer(BuyerPermission::Campaigns)?;
    let c = state
        .catalog
        .get_campaign(buyer_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("campaign {id}")))?;
    let active = match action.as_str() {
        "stop" => false,
        "start" => {
            let view = state.billing.snapshot();
            if let Some(s) = c
                .include
                .iter()
                .chain(&c.exclude)
                .find(|&&s| !view.access(buyer_id, SegmentNum(s)).allowed())
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("segment {s} is no longer usable by you; the campaign stays stopped"),
                ));
            }
            true
        }
        _ => return Err(ApiError::not_found(format!("campaign action {action}"))),
    };
    let c = state
        .catalog
        .set_campaign_status(
            buyer_id,
            id,
            active,
            Some("stopped by the buyer"),
            state.clock.now(),
        )
        .await?;
    Ok(Json(campaign_json(&c)))
}

/// The mail outbox (operator).
#[utoipa::path(get, path = "/admin/outbox", tag = "admin", security(("operator" = [])),
    responses((status = 200, description = "`mail`, newest first")))]
pub async fn outbox(State(state): State<SharedState>, _op: Operator) -> ApiResult<Json<Value>> {
    let entries = state.catalog.outbox(500).await?;
    Ok(Json(json!({"mail": entries.iter().map(|e| json!({
        "id": e.id, "to": e.mail.to, "subject": e.mail.subject, "body": e.mail.body,
        "createdAt": e.created_at.millis(), "attempts": e.attempts,
        "lastError": e.last_error, "sentAt": e.sent_at.map(|t| t.millis()),
    })).collect::<Vec<_>>()})))
}

#[cfg(test)]
mod tests {
    use super::rounded_size;

    #[test]
    fn sizes_are_rounded_down_and_small_ones_hidden() {
        assert_eq!(rounded_size(0), None);
        assert_eq!(rounded_size(999), None);
        assert_eq!(rounded_size(1000), Some(1000));
        assert_eq!(rounded_size(12_345), Some(12_000));
        assert_eq!(rounded_size(987_654_321), Some(980_000_000));
    }
}
