//! `segmart admin billing …`: the operator's side of billing — members' revshare, the pricing
//! taxonomy (publishers, priced categories: only the operator creates them), exchange rates,
//! buyers, sign-in users and bidder credentials.

use clap::Subcommand;
use segmart_domain::Clock;
use segmart_domain::billing::{CurrencyCode, Price};
use segmart_domain::pricing::CostType;
use segmart_server::ops;
use segmart_storage::billing_catalog::{
    Bidder, Buyer, BuyerKind, DataCategory, DataPublisher, Member, User, UserRole,
};
use segmart_storage::catalog::Catalog;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub enum BillingCommand {
    /// Providers' billing accounts (member ids).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Data publishers of a provider's pricing taxonomy.
    #[command(subcommand)]
    Publisher(PublisherCommand),
    /// Priced data categories under a publisher.
    #[command(subcommand)]
    Category(CategoryCommand),
    /// Exchange rates into the settlement currency.
    #[command(subcommand)]
    Rate(RateCommand),
    /// Buyer accounts.
    #[command(subcommand)]
    Buyer(BuyerCommand),
    /// OAuth clients of buyers (`scope=buyer:<permissions>`).
    #[command(subcommand)]
    BuyerClient(BuyerClientCommand),
    /// Sign-in users (POST /auth) of providers and buyers.
    #[command(subcommand)]
    User(UserCommand),
    /// Bidder credentials of the metering API.
    #[command(subcommand)]
    Bidder(BidderCommand),
    /// The mail outbox (share keys sent, revocation notices), newest first.
    Outbox {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    List,
    /// Set the platform's share of a provider's data revenue, percent 0–100.
    SetRevshare {
        #[arg(long)]
        member: i64,
        #[arg(long)]
        pct: f64,
    },
}

#[derive(Subcommand, Debug)]
pub enum PublisherCommand {
    Create {
        #[arg(long)]
        member: i64,
        #[arg(long)]
        name: String,
    },
    List {
        #[arg(long)]
        member: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CategoryCommand {
    Create {
        #[arg(long)]
        publisher: i64,
        #[arg(long)]
        name: String,
        /// FIX (a CPM) or RATE (a percent of the media cost).
        #[arg(long)]
        cost_type: String,
        #[arg(long)]
        cost_value: f64,
        /// ISO 4217 code of a FIX CPM (default USD).
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Reprice a category: its segments cost the new price from now on.
    SetPrice {
        #[arg(long)]
        category: i64,
        #[arg(long)]
        cost_type: String,
        #[arg(long)]
        cost_value: f64,
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    List {
        #[arg(long)]
        member: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RateCommand {
    /// One unit of --currency is worth --rate units of the settlement currency, from now on.
    Set {
        #[arg(long)]
        currency: String,
        #[arg(long)]
        rate: f64,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum BuyerCommand {
    Create {
        #[arg(long)]
        name: String,
        /// advertiser (end advertiser) or agency.
        #[arg(long, default_value = "advertiser")]
        kind: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum BuyerClientCommand {
    /// Create a buyer client; its secret is printed once and stored only as an argon2 hash.
    Create {
        #[arg(long)]
        buyer: i64,
        #[arg(long)]
        name: String,
        /// Comma-separated buyer permissions (default: all four).
        #[arg(
            long,
            default_value = "buyer_segments_read,buyer_campaigns,buyer_activate,buyer_usage_read"
        )]
        permissions: String,
    },
    List,
    /// Revoke a buyer client; its tokens stop working.
    Revoke {
        client: segmart_domain::ClientId,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; without --password a random one is generated and printed once.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, env = "SEGMART_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The provider's member id (a provider's user).
        #[arg(long, required_unless_present = "buyer", conflicts_with = "buyer")]
        member: Option<i64>,
        /// The buyer id (a buyer's user).
        #[arg(long)]
        buyer: Option<i64>,
        /// Where share keys and revocation notices go (buyer users).
        #[arg(long)]
        email: Option<String>,
    },
    /// Set (or with --clear, remove) a user's e-mail address.
    SetEmail {
        #[arg(long)]
        username: String,
        #[arg(long, required_unless_present = "clear")]
        email: Option<String>,
        #[arg(long, conflicts_with = "email")]
        clear: bool,
    },
    /// Replace a user's password (its sessions end).
    SetPassword {
        #[arg(long)]
        username: String,
        #[arg(long, env = "SEGMART_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum BidderCommand {
    /// Create a bidder credential; the token is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        name: String,
    },
    List,
    Revoke {
        id: i64,
    },
}

fn price(cost_type: &str, value: f64, currency: &str) -> anyhow::Result<Price> {
    let upper = cost_type.to_ascii_uppercase();
    Ok(Price {
        cost_type: CostType::from_name(&upper)
            .ok_or_else(|| anyhow::anyhow!("--cost-type must be FIX or RATE, not {cost_type:?}"))?,
        value,
        currency: CurrencyCode::parse(&currency.to_ascii_uppercase())
            .map_err(|e| anyhow::anyhow!("--currency: {e}"))?,
    })
}

pub fn member_json(m: &Member) -> Value {
    json!({"member_id": m.member_id, "provider_id": m.provider_id.to_string(),
           "provider_name": m.provider_name, "data_revshare_pct": m.data_revshare_pct})
}

fn publisher_json(p: &DataPublisher) -> Value {
    json!({"id": p.id, "member_id": p.member_id, "node_name": p.node_name, "active": p.active})
}

fn category_json(c: &DataCategory) -> Value {
    json!({"id": c.id, "publisher_id": c.publisher_id, "member_id": c.member_id,
           "node_name": c.node_name, "cost_type": c.price.cost_type.name(),
           "cost_value": c.price.value, "currency": c.price.currency.as_str()})
}

fn buyer_json(b: &Buyer) -> Value {
    json!({"id": b.id, "name": b.name, "kind": b.kind.name()})
}

fn user_json(u: &User) -> Value {
    let (role, id) = match u.role {
        UserRole::Provider(m) => ("provider", m),
        UserRole::Buyer(b) => ("buyer", b),
    };
    let key = if role == "provider" {
        "member_id"
    } else {
        "buyer_id"
    };
    json!({"id": u.id, "username": u.username, "role": role, key: id})
}

fn bidder_json(b: &Bidder) -> Value {
    json!({"id": b.id, "name": b.name, "revoked": b.revoked})
}

fn show<T: Serialize>(json_output: bool, value: &T) -> anyhow::Result<()> {
    if json_output {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        // Plain output: one compact JSON object per line, easy to read and to grep.
        match serde_json::to_value(value)? {
            Value::Array(items) => {
                for item in items {
                    println!("{item}");
                }
            }
            other => println!("{other}"),
        }
    }
    Ok(())
}

pub async fn run(
    catalog: &dyn Catalog,
    clock: &dyn Clock,
    json_output: bool,
    command: BillingCommand,
) -> anyhow::Result<()> {
    let now = clock.now();
    let value = match command {
        BillingCommand::Member(MemberCommand::List) => Value::Array(
            catalog
                .list_members()
                .await?
                .iter()
                .map(member_json)
                .collect(),
        ),
        BillingCommand::Member(MemberCommand::SetRevshare { member, pct }) => {
            member_json(&catalog.set_revshare(member, pct, now).await?)
        }
        BillingCommand::Publisher(PublisherCommand::Create { member, name }) => {
            publisher_json(&catalog.create_publisher(member, name.trim(), now).await?)
        }
        BillingCommand::Publisher(PublisherCommand::List { member }) => Value::Array(
            catalog
                .list_publishers(member)
                .await?
                .iter()
                .map(publisher_json)
                .collect(),
        ),
        BillingCommand::Category(CategoryCommand::Create {
            publisher,
            name,
            cost_type,
            cost_value,
            currency,
        }) => {
            let p = price(&cost_type, cost_value, &currency)?;
            category_json(
                &catalog
                    .create_category(publisher, name.trim(), p, now)
                    .await?,
            )
        }
        BillingCommand::Category(CategoryCommand::SetPrice {
            category,
            cost_type,
            cost_value,
            currency,
        }) => {
            let p = price(&cost_type, cost_value, &currency)?;
            category_json(&catalog.set_category_price(category, p, now).await?)
        }
        BillingCommand::Category(CategoryCommand::List { member }) => Value::Array(
            catalog
                .list_categories(member)
                .await?
                .iter()
                .map(category_json)
                .collect(),
        ),
        BillingCommand::Rate(RateCommand::Set { currency, rate }) => {
            let code = CurrencyCode::parse(&currency.to_ascii_uppercase())
                .map_err(|e| anyhow::anyhow!("--currency: {e}"))?;
            let r = catalog.set_rate(code, rate, now).await?;
            json!({"currency": r.currency.as_str(), "to_settlement": r.to_settlement,
                   "valid_from_ms": r.valid_from.millis()})
        }
        BillingCommand::Rate(RateCommand::List) => Value::Array(
            catalog
                .rates()
                .await?
                .iter()
                .map(|r| {
                    json!({"currency": r.currency.as_str(), "to_settlement": r.to_settlement,
                           "valid_from_ms": r.valid_from.millis()})
                })
                .collect(),
        ),
        BillingCommand::Buyer(BuyerCommand::Create { name, kind }) => {
            let kind = BuyerKind::from_name(&kind)
                .ok_or_else(|| anyhow::anyhow!("--kind must be advertiser or agency"))?;
            buyer_json(&catalog.create_buyer(name.trim(), kind, now).await?)
        }
        BillingCommand::Buyer(BuyerCommand::List) => Value::Array(
            catalog
                .list_buyers()
                .await?
                .iter()
                .map(buyer_json)
                .collect(),
        ),
        BillingCommand::User(UserCommand::SetEmail {
            username,
            email,
            clear,
        }) => {
            let email = if clear { None } else { email };
            catalog.set_user_email(&username, email.as_deref()).await?;
            json!({"username": username, "email": email})
        }
        BillingCommand::User(UserCommand::Create {
            username,
            password,
            member,
            buyer,
            email,
        }) => {
            let role = match (member, buyer) {
                (Some(m), None) => UserRole::Provider(m),
                (None, Some(b)) => UserRole::Buyer(b),
                _ => anyhow::bail!("give exactly one of --member and --buyer"),
            };
            let generated = password.is_none();
            let password = password.unwrap_or_else(ops::new_password);
            let user = ops::create_user(catalog, clock, &username, &password, role).await?;
            if let Some(email) = &email {
                catalog.set_user_email(&username, Some(email)).await?;
            }
            let mut v = user_json(&user);
            v["email"] = json!(email);
            if generated {
                v["password"] = json!(password);
                eprintln!("the generated password is shown once; keep it");
            }
            v
        }
        BillingCommand::User(UserCommand::SetPassword { username, password }) => {
            let generated = password.is_none();
            let password = password.unwrap_or_else(ops::new_password);
            let mut v = user_json(&ops::set_password(catalog, &username, &password).await?);
            if generated {
                v["password"] = json!(password);
            }
            v
        }
        BillingCommand::User(UserCommand::List) => {
            Value::Array(catalog.list_users().await?.iter().map(user_json).collect())
        }
        BillingCommand::BuyerClient(BuyerClientCommand::Create {
            buyer,
            name,
            permissions,
        }) => {
            let permissions = segmart_domain::BuyerPermissions::parse_list(&permissions)
                .map_err(|e| anyhow::anyhow!("--permissions: {e}"))?;
            let issued =
                ops::create_buyer_client(catalog, clock, buyer, &name, permissions).await?;
            eprintln!("the client secret is shown once and stored only as a hash; keep it");
            json!({"client_id": issued.client.id.to_string(), "client_secret": issued.secret,
                   "buyer_id": buyer, "permissions": issued.client.permissions.to_string(),
                   "scope": format!("buyer:{}", issued.client.permissions)})
        }
        BillingCommand::BuyerClient(BuyerClientCommand::List) => Value::Array(
            catalog
                .list_buyer_clients()
                .await?
                .iter()
                .map(|c| {
                    json!({"client_id": c.id.to_string(), "buyer_id": c.buyer_id, "name": c.name,
                           "permissions": c.permissions.to_string(), "revoked": c.revoked})
                })
                .collect(),
        ),
        BillingCommand::BuyerClient(BuyerClientCommand::Revoke { client }) => {
            let c = catalog.revoke_buyer_client(client).await?;
            json!({"client_id": c.id.to_string(), "revoked": c.revoked})
        }
        BillingCommand::Bidder(BidderCommand::Create { name }) => {
            let issued = ops::create_bidder(catalog, clock, &name).await?;
            eprintln!("the bidder token is shown once and stored only as a hash; keep it");
            let mut v = bidder_json(&issued.bidder);
            v["token"] = json!(issued.token);
            v
        }
        BillingCommand::Bidder(BidderCommand::List) => Value::Array(
            catalog
                .list_bidders()
                .await?
                .iter()
                .map(bidder_json)
                .collect(),
        ),
        BillingCommand::Outbox { limit } => Value::Array(
            catalog
                .outbox(limit)
                .await?
                .iter()
                .map(|e| {
                    json!({"id": e.id, "to": e.mail.to, "subject": e.mail.subject,
                           "body": e.mail.body, "attempts": e.attempts,
                           "last_error": e.last_error, "sent_at_ms": e.sent_at.map(|t| t.millis())})
                })
                .collect(),
        ),
        BillingCommand::Bidder(BidderCommand::Revoke { id }) => {
            bidder_json(&catalog.revoke_bidder(id).await?)
        }
    };
    show(json_output, &value)
}
