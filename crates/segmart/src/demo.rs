//! `segmart serve --demo`: a ready-to-try tenant for newcomers, created idempotently.

use anyhow::Context;
use segmart_domain::segment::SegmentDraft;
use segmart_domain::{ClientId, FolderId, IdType, PermissionSet, ProviderId, SegmentKey};
use segmart_server::{ops, secrets};
use segmart_storage::billing_catalog::BillingCatalog;
use segmart_storage::catalog::Catalog;
use serde::{Deserialize, Serialize};
use uuid::uuid;

use crate::config::Config;
use crate::node::{Node, write_private};

/// Fixed ids, so running the demo again finds what it created before.
const DEMO_PROVIDER: ProviderId = ProviderId(uuid!("5e9a0000-0000-4000-8000-00000000d0e0"));
const DEMO_FOLDER: FolderId = FolderId(uuid!("5e9a0000-0000-4000-8000-00000000f01d"));

/// What `demo.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct DemoFile {
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
    pub segment_provider_id: String,
    /// The DMP ID the demo provider's batch files are named with.
    #[serde(default)]
    pub dmp_id: String,
    /// Sign-in of the demo provider's user (`POST /auth`, the billing API).
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// The demo provider's member id (also its `data_provider_id`).
    #[serde(default)]
    pub member_id: i64,
    #[serde(default)]
    pub data_provider_id: i64,
    /// The demo pricing taxonomy's category (FIX 1.50 USD CPM).
    #[serde(default)]
    pub data_category_id: i64,
    /// A demo buyer (end advertiser) and a bidder token for `POST /bidder/usage`.
    #[serde(default)]
    pub buyer_id: i64,
    #[serde(default)]
    pub bidder_token: String,
}

/// What the demo's billing set-up produced.
struct DemoBilling {
    username: String,
    password: String,
    member_id: i64,
    data_category_id: i64,
    buyer_id: i64,
    bidder_token: String,
}

const DEMO_USERNAME: &str = "demo";
const DEMO_BUYER: &str = "Demo advertiser";

/// The demo pricing taxonomy (a publisher, a FIX category), the provider's user, a buyer, a
/// bidder token and a RUB rate, created unless they exist; credentials of an earlier demo.json
/// are kept while they still work.
async fn prepare_billing(
    catalog: &dyn Catalog,
    clock: &dyn segmart_domain::Clock,
    old: Option<&DemoFile>,
) -> anyhow::Result<DemoBilling> {
    use segmart_domain::billing::{CurrencyCode, Price};
    use segmart_domain::pricing::CostType;
    use segmart_storage::billing_catalog::{BuyerKind, UserRole};
    let now = clock.now();
    let member = catalog
        .member_of_provider(DEMO_PROVIDER)
        .await?
        .context("the demo provider has no member")?;
    if member.data_revshare_pct == 0.0 {
        catalog.set_revshare(member.member_id, 20.0, now).await?;
    }
    let publisher = match catalog
        .list_publishers(Some(member.member_id))
        .await?
        .into_iter()
        .next()
    {
        Some(p) => p,
        None => {
            catalog
                .create_publisher(member.member_id, "Demo publisher", now)
                .await?
        }
    };
    let category = match catalog
        .list_categories(Some(member.member_id))
        .await?
        .into_iter()
        .next()
    {
        Some(c) => c,
        None => {
            let price = Price {
                cost_type: CostType::Fix,
                value: 1.5,
                currency: CurrencyCode::USD,
            };
            catalog
                .create_category(publisher.id, "Demo audiences", price, now)
                .await?
        }
    };
    if catalog.rates().await?.is_empty() {
        catalog.set_rate(CurrencyCode::RUB, 0.011, now).await?;
    }
    let buyer = match catalog
        .list_buyers()
        .await?
        .into_iter()
        .find(|b| b.name == DEMO_BUYER)
    {
        Some(b) => b,
        None => {
            catalog
                .create_buyer(DEMO_BUYER, BuyerKind::Advertiser, now)
                .await?
        }
    };
    let password = match (catalog.user_by_name(DEMO_USERNAME).await?, old) {
        (None, _) => {
            let password = ops::new_password();
            ops::create_user(
                catalog,
                clock,
                DEMO_USERNAME,
                &password,
                UserRole::Provider(member.member_id),
            )
            .await?;
            password
        }
        (Some(user), old) => {
            let kept = old.map(|o| o.password.clone()).unwrap_or_default();
            let hash = user.password_hash.clone();
            let check = kept.clone();
            let valid =
                tokio::task::spawn_blocking(move || secrets::verify_secret(&check, &hash)).await?;
            if valid && !kept.is_empty() {
                kept
            } else {
                let password = ops::new_password();
                ops::set_password(catalog, DEMO_USERNAME, &password).await?;
                password
            }
        }
    };
    let live_bidders = catalog.list_bidders().await?;
    let kept_token = old.map(|o| o.bidder_token.clone()).filter(|t| {
        let hash = secrets::sha256_hex(t);
        live_bidders.iter().any(|b| {
            !b.revoked && secrets::constant_time_eq(b.token_hash.as_bytes(), hash.as_bytes())
        })
    });
    let bidder_token = match kept_token {
        Some(t) => t,
        None => {
            ops::create_bidder(catalog, clock, "Demo bidder")
                .await?
                .token
        }
    };
    Ok(DemoBilling {
        username: DEMO_USERNAME.to_owned(),
        password,
        member_id: member.member_id,
        data_category_id: category.id,
        buyer_id: buyer.id,
        bidder_token,
    })
}

/// The demo provider's DMP ID: its batch files are named `demo_dmp.[DATE].[FILE ID].txt.gz`.
pub const DEMO_DMP_ID: &str = "demo_dmp";

const DEMO_SEGMENTS: &[(&str, &str, Option<&str>, bool, u32)] = &[
    ("interests", "Interests", None, false, 43_200),
    (
        "sports-fans",
        "Sports fans",
        Some("interests"),
        true,
        43_200,
    ),
    (
        "travel-intenders",
        "Travel intenders",
        Some("interests"),
        true,
        20_160,
    ),
    (
        "auto-intenders",
        "Auto intenders",
        Some("interests"),
        true,
        10_080,
    ),
    (
        "recent-visitors",
        "Visited in the last hour",
        None,
        true,
        60,
    ),
];

/// Creates the demo tenant unless it exists, writes demo.json and prints a walk-through.
pub async fn prepare(config: &Config, node: &Node) -> anyhow::Result<()> {
    let catalog = node.catalog.as_ref();
    let clock = node.state.clock.as_ref();
    let now = clock.now();
    let provider = catalog
        .ensure_provider(DEMO_PROVIDER, "Demo data provider", now)
        .await?;
    if provider.dmp_id.is_none() {
        catalog
            .set_provider_dmp_id(DEMO_PROVIDER, Some(DEMO_DMP_ID))
            .await?;
    }
    let folder = catalog
        .ensure_folder(
            DEMO_FOLDER,
            DEMO_PROVIDER,
            "Demo cookies",
            IdType::Cookie,
            now,
        )
        .await?;
    node.state.directory.put_folder(folder);
    for (key, name, parent, selectable, ttl) in DEMO_SEGMENTS {
        let key = SegmentKey::parse(key).expect("demo keys are valid");
        if catalog.get_segment(DEMO_FOLDER, &key).await?.is_some() {
            continue;
        }
        let spec = SegmentDraft {
            name: Some((*name).into()),
            description: Some(format!("Demo segment: {name}")),
            price: Some(1.5),
            ttl: Some(*ttl as i64),
            active: Some(true),
            selectable: Some(*selectable),
            parent: parent.map(str::to_owned),
        }
        .validate()?;
        let (segment, _) = catalog.put_segment(DEMO_FOLDER, &key, &spec, now).await?;
        node.state.directory.put_segment(&segment);
    }

    let path = config.data_dir.join("demo.json");
    let base_url = config.public_url();
    let scope = format!(
        "target-entity:{}:{}",
        node.state.settings.target_entity,
        PermissionSet::ALL
    );
    let old: Option<DemoFile> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let billing = prepare_billing(catalog, clock, old.as_ref()).await?;
    // The sports-fans segment is mapped to the demo category, public to every buyer.
    let sports = SegmentKey::parse("sports-fans").expect("valid");
    let sports_segment = catalog.get_segment(DEMO_FOLDER, &sports).await?;
    let sports_id = sports_segment.as_ref().map(|s| s.num.0).unwrap_or_default();
    if let Some(segment) = sports_segment
        && catalog
            .list_mappings(billing.member_id, 0, 1000)
            .await?
            .0
            .iter()
            .all(|m| m.segment_num != segment.num.0)
    {
        catalog
            .create_mapping(
                billing.member_id,
                &segmart_storage::billing_catalog::MappingDraft {
                    segment_num: segment.num.0,
                    data_category_id: billing.data_category_id,
                    active: true,
                    is_public: true,
                    data_segment_type: "Interest".into(),
                    recommend_include: true,
                },
                now,
            )
            .await?;
    }
    node.state.billing.reload(catalog).await?;
    let reusable = reusable_client(catalog, old.as_ref()).await;
    let (client_id, client_secret) = match reusable {
        Some(found) => found,
        None => {
            let issued = ops::create_client(
                catalog,
                clock,
                DEMO_PROVIDER,
                "Demo client",
                PermissionSet::ALL,
            )
            .await?;
            node.state.directory.put_client(issued.client.clone());
            (issued.client.id.to_string(), issued.secret)
        }
    };
    let demo = DemoFile {
        token_url: format!("{base_url}/oauth2/token"),
        base_url: base_url.clone(),
        client_id,
        client_secret,
        scope,
        segment_provider_id: DEMO_FOLDER.to_string(),
        dmp_id: DEMO_DMP_ID.to_owned(),
        username: billing.username,
        password: billing.password,
        member_id: billing.member_id,
        data_provider_id: billing.member_id,
        data_category_id: billing.data_category_id,
        buyer_id: billing.buyer_id,
        bidder_token: billing.bidder_token,
    };
    write_private(&path, serde_json::to_string_pretty(&demo)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    print_walkthrough(&demo, &path, sports_id);
    Ok(())
}

/// The client of an earlier demo.json, when it still works.
async fn reusable_client(
    catalog: &dyn Catalog,
    old: Option<&DemoFile>,
) -> Option<(String, String)> {
    let old = old?;
    let id: ClientId = old.client_id.parse().ok()?;
    let client = catalog.get_client(id).await.ok()??;
    if client.revoked || client.provider != DEMO_PROVIDER {
        return None;
    }
    let secret = old.client_secret.clone();
    let hash = client.secret_hash.clone();
    let valid = tokio::task::spawn_blocking(move || secrets::verify_secret(&secret, &hash))
        .await
        .ok()?;
    valid.then(|| (old.client_id.clone(), old.client_secret.clone()))
}

fn print_walkthrough(demo: &DemoFile, path: &std::path::Path, sports_id: u32) {
    // Now, with its fraction of a second: the demo's billing mapping took effect a moment ago.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let DemoFile {
        base_url,
        token_url,
        client_id,
        client_secret,
        scope,
        segment_provider_id,
        dmp_id,
        username,
        password,
        member_id,
        data_category_id,
        bidder_token,
        buyer_id,
        ..
    } = demo;
    println!(
        r#"
segmart demo tenant ready — credentials in {path}

1. Get a token:
   TOKEN=$(curl -s {token_url} -d grant_type=client_credentials \
     -d client_id={client_id} -d client_secret={client_secret} \
     -d scope={scope} | sed 's/.*"access_token":"\([^"]*\)".*/\1/')

2. List the demo segments:
   curl -s -H "Authorization: Bearer $TOKEN" {base_url}/segmentproviders/{segment_provider_id}/segments

3. Put users into segments (a batch; up to 1 MB):
   curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
     {base_url}/segmentproviders/{segment_provider_id}/profiles \
     -d '[{{"profileId":"user-1","segmentIdsToAdd":["sports-fans","travel-intenders"]}},{{"profileId":"user-2","segmentIdsToSet":["auto-intenders"]}}]'

4. Read a profile back:
   curl -s -H "Authorization: Bearer $TOKEN" {base_url}/segmentproviders/{segment_provider_id}/profiles/user-1

Batch files of this provider are named {dmp_id}.[yyyy-MM-dd_HH-mm-ss].[FILE ID].txt.gz: upload them
with PUT {base_url}/segmentproviders/{segment_provider_id}/files/<name> (README, "Batch files").

Billing (seed 002's API family): sign in, view the pricing taxonomy and the mapping records:
   curl -s -b cookies -c cookies -X POST {base_url}/auth -d '{{"auth":{{"username":"{username}","password":"{password}"}}}}'
   curl -s -b cookies -c cookies {base_url}/data-provider
   curl -s -b cookies -c cookies '{base_url}/segment-billing-category?member_id={member_id}'
The bidder reports impressions that used data (by the segments' integer `id`; {sports_id} is sports-fans):
   curl -s -H 'Authorization: Bearer {bidder_token}' {base_url}/bidder/usage -d '{{"events":[{{"impressionId":"imp-1","time":"{now}","buyerId":{buyer_id},"campaignId":1,"mediaCost":0.002,"mediaCurrency":"USD","segments":[{sports_id}]}}]}}'
   curl -s -b cookies -c cookies {base_url}/usage                       # category {data_category_id}: 1.50 USD CPM

API reference: {base_url}/docs   OpenAPI: {base_url}/openapi.json   Metrics: {base_url}/metrics
"#,
        path = path.display()
    );
}
