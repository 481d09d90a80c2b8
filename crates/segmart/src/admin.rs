//! `segmart admin …`: operator administration straight on the data directory's catalog.
//!
//! Works whether or not the server runs; a running server picks the changes up within its
//! catalog poll interval (1 s).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use segmart_domain::{ClientId, Clock, IdType, PermissionSet, ProviderId, SystemClock};
use segmart_server::admin::{ClientDto, FolderDto, ProviderDto};
use segmart_server::ops;
use segmart_storage::catalog::Catalog;
use serde::Serialize;

use crate::config::Config;
use crate::node::{open_catalog, write_private};

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Data provider accounts.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Segment provider folders (segmentProviderId).
    #[command(subcommand)]
    Folder(FolderCommand),
    /// OAuth2 clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Replace the operator token of the /admin HTTP API (the old one stops working).
    RotateOperatorToken,
    /// Billing: revshare, pricing taxonomy, exchange rates, buyers, users, bidders.
    #[command(subcommand)]
    Billing(crate::admin_billing::BillingCommand),
}

#[derive(Subcommand, Debug)]
enum ProviderCommand {
    Create {
        #[arg(long)]
        name: String,
        /// The DMP ID the provider's batch files are named with (`[DMP ID].[DATE].[FILE ID]…`).
        #[arg(long)]
        dmp_id: Option<String>,
    },
    List,
    /// Set (or with --clear, remove) the DMP ID the provider's batch files are named with.
    SetDmpId {
        #[arg(long)]
        provider: ProviderId,
        #[arg(long, required_unless_present = "clear")]
        dmp_id: Option<String>,
        #[arg(long, conflicts_with = "dmp_id")]
        clear: bool,
    },
    /// Set (or with --clear, remove) the provider's default pricing; a segment's own cost from a
    /// taxonomy applies only when it is 0 or no default is set.
    SetPricing {
        #[arg(long)]
        provider: ProviderId,
        /// RATE (percent of the media cost) or FIX (CPM).
        #[arg(long, required_unless_present = "clear")]
        cost_type: Option<String>,
        #[arg(long, required_unless_present = "clear")]
        cost_value: Option<f64>,
        /// RUB or USD.
        #[arg(long)]
        currency: Option<String>,
        #[arg(long, conflicts_with_all = ["cost_type", "cost_value", "currency"])]
        clear: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FolderCommand {
    Create {
        #[arg(long)]
        provider: ProviderId,
        #[arg(long)]
        name: String,
        /// cookie, maid, ppid, extended_id or ip.
        #[arg(long)]
        id_type: String,
        /// Vendor of the extended id (with --id-type extended_id).
        #[arg(long)]
        vendor: Option<String>,
    },
    List {
        #[arg(long)]
        provider: Option<ProviderId>,
    },
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Create a client; its secret is printed once and stored only as an argon2 hash.
    Create {
        #[arg(long)]
        provider: ProviderId,
        #[arg(long)]
        name: String,
        /// Comma-separated permissions (default: all four).
        #[arg(
            long,
            default_value = "dmp_profile_read,dmp_profile,dmp_segment_read,dmp_segment"
        )]
        permissions: String,
    },
    List {
        #[arg(long)]
        provider: Option<ProviderId>,
    },
    /// Give the client a new secret; tokens issued before stop working.
    Rotate { client: ClientId },
    /// Revoke the client; its tokens stop working.
    Revoke { client: ClientId },
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn client_text(c: &ClientDto) -> String {
    let mut line = format!(
        "client {}  provider {}  {:?}  permissions {}{}",
        c.client_id,
        c.provider_id,
        c.name,
        c.permissions.join(","),
        if c.revoked { "  REVOKED" } else { "" }
    );
    if let Some(secret) = &c.client_secret {
        line.push_str(&format!(
            "\nclient_secret {secret}\n(shown once: segmart keeps only a hash of it)"
        ));
    }
    line
}

fn provider_text(p: &ProviderDto) -> String {
    let mut text = format!("provider {}  {:?}", p.id, p.name);
    if let Some(dmp_id) = &p.dmp_id {
        text.push_str(&format!("  DMP ID {dmp_id}"));
    }
    if let (Some(cost_type), Some(value)) = (&p.default_cost_type, p.default_cost_value) {
        text.push_str(&format!(
            "  default price {cost_type} {value}{}",
            p.default_currency
                .as_deref()
                .map(|c| format!(" {c}"))
                .unwrap_or_default()
        ));
    }
    text
}

fn folder_text(f: &FolderDto) -> String {
    format!(
        "folder {}  provider {}  {:?}  id type {}{}",
        f.id,
        f.provider_id,
        f.name,
        f.id_type,
        f.vendor
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default()
    )
}

pub async fn run(mut config: Config, args: AdminArgs) -> anyhow::Result<()> {
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    crate::node::init_logging("warn");
    let catalog = open_catalog(&config.data_dir).await?;
    let catalog: &dyn Catalog = catalog.as_ref();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let json = args.json;
    match args.command {
        AdminCommand::Provider(ProviderCommand::Create { name, dmp_id }) => {
            if let Some(dmp_id) = &dmp_id {
                ops::check_dmp_id_free(catalog, dmp_id).await?;
            }
            let mut provider = ops::create_provider(catalog, clock.as_ref(), &name).await?;
            if let Some(dmp_id) = &dmp_id {
                provider = catalog
                    .set_provider_dmp_id(provider.id, Some(dmp_id))
                    .await?;
            }
            let p = ProviderDto::from(provider);
            print(json, &p, || provider_text(&p))
        }
        AdminCommand::Provider(ProviderCommand::SetPricing {
            provider,
            cost_type,
            cost_value,
            currency,
            clear,
        }) => {
            use segmart_domain::pricing::{Cost, CostType, Currency};
            let pricing = if clear {
                None
            } else {
                let raw_type = cost_type.unwrap_or_default().to_ascii_uppercase();
                let cost_type = CostType::from_name(&raw_type).ok_or_else(|| {
                    anyhow::anyhow!("--cost-type must be RATE or FIX, not {raw_type:?}")
                })?;
                let currency = currency
                    .map(|raw| {
                        let code = raw.to_ascii_uppercase();
                        Currency::from_code(&code).ok_or_else(|| {
                            anyhow::anyhow!("--currency must be RUB or USD, not {raw:?}")
                        })
                    })
                    .transpose()?;
                Some(Cost {
                    cost_type,
                    value: cost_value.unwrap_or_default(),
                    currency,
                })
            };
            let p = ProviderDto::from(
                catalog
                    .set_provider_default_pricing(provider, pricing)
                    .await?,
            );
            print(json, &p, || provider_text(&p))
        }
        AdminCommand::Provider(ProviderCommand::SetDmpId {
            provider,
            dmp_id,
            clear,
        }) => {
            let dmp_id = if clear { None } else { dmp_id };
            let p = ProviderDto::from(
                catalog
                    .set_provider_dmp_id(provider, dmp_id.as_deref())
                    .await?,
            );
            print(json, &p, || provider_text(&p))
        }
        AdminCommand::Provider(ProviderCommand::List) => {
            let list: Vec<ProviderDto> = catalog
                .list_providers()
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            print(json, &list, || {
                list.iter()
                    .map(provider_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::Folder(FolderCommand::Create {
            provider,
            name,
            id_type,
            vendor,
        }) => {
            let id_type =
                IdType::from_parts(&id_type, vendor.as_deref()).map_err(anyhow::Error::msg)?;
            let f = FolderDto::from(
                ops::create_folder(catalog, clock.as_ref(), provider, &name, id_type).await?,
            );
            print(json, &f, || folder_text(&f))
        }
        AdminCommand::Folder(FolderCommand::List { provider }) => {
            let list: Vec<FolderDto> = catalog
                .list_folders(provider)
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            print(json, &list, || {
                list.iter().map(folder_text).collect::<Vec<_>>().join("\n")
            })
        }
        AdminCommand::Client(ClientCommand::Create {
            provider,
            name,
            permissions,
        }) => {
            let permissions =
                PermissionSet::parse_list(&permissions).map_err(anyhow::Error::msg)?;
            let issued =
                ops::create_client(catalog, clock.as_ref(), provider, &name, permissions).await?;
            let c = ClientDto::new(issued.client, Some(issued.secret));
            print(json, &c, || client_text(&c))
        }
        AdminCommand::Client(ClientCommand::List { provider }) => {
            let list: Vec<ClientDto> = catalog
                .list_clients(provider)
                .await?
                .into_iter()
                .map(|c| ClientDto::new(c, None))
                .collect();
            print(json, &list, || {
                list.iter().map(client_text).collect::<Vec<_>>().join("\n")
            })
        }
        AdminCommand::Client(ClientCommand::Rotate { client }) => {
            let issued = ops::rotate_client(catalog, client).await?;
            let c = ClientDto::new(issued.client, Some(issued.secret));
            print(json, &c, || client_text(&c))
        }
        AdminCommand::Client(ClientCommand::Revoke { client }) => {
            let c = ClientDto::new(ops::revoke_client(catalog, client).await?, None);
            print(json, &c, || client_text(&c))
        }
        AdminCommand::Billing(command) => {
            crate::admin_billing::run(catalog, clock.as_ref(), json, command).await
        }
        AdminCommand::RotateOperatorToken => {
            let token = ops::new_operator_token(catalog).await?;
            let path = config.data_dir.join("operator.token");
            write_private(&path, token.as_bytes())
                .context("cannot write the operator token file")?;
            let out =
                serde_json::json!({ "operator_token": token, "file": path.display().to_string() });
            print(json, &out, || {
                format!(
                    "new operator token written to {} (readable by you only)",
                    path.display()
                )
            })
        }
    }
}
