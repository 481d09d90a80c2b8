//! `segmart serve --demo`: a ready-to-try tenant for newcomers, created idempotently.

use anyhow::Context;
use segmart_domain::segment::SegmentDraft;
use segmart_domain::{ClientId, FolderId, IdType, PermissionSet, ProviderId, SegmentKey};
use segmart_server::{ops, secrets};
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
    let reusable = reusable_client(catalog, &path).await;
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
    };
    write_private(&path, serde_json::to_string_pretty(&demo)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    print_walkthrough(&demo, &path);
    Ok(())
}

/// The client of an earlier demo.json, when it still works.
async fn reusable_client(
    catalog: &dyn Catalog,
    path: &std::path::Path,
) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let old: DemoFile = serde_json::from_str(&text).ok()?;
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
    valid.then_some((old.client_id, old.client_secret))
}

fn print_walkthrough(demo: &DemoFile, path: &std::path::Path) {
    let DemoFile {
        base_url,
        token_url,
        client_id,
        client_secret,
        scope,
        segment_provider_id,
        dmp_id,
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

API reference: {base_url}/docs   OpenAPI: {base_url}/openapi.json   Metrics: {base_url}/metrics
"#,
        path = path.display()
    );
}
