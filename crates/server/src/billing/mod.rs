//! Billing: sign-in (`POST /auth`), the pricing taxonomy and mapping records of seed 002
//! (`/data-provider`, `/segment-billing-category`), metering of the bidder's usage events, and
//! usage reports.
//!
//! [`BillingIndex`] is the in-memory copy of everything metering needs to price an impression
//! without SQL: each segment's owner and rule history, the exchange-rate history, the bidder
//! credentials and the known buyers. It is reloaded after this server's own billing writes and
//! whenever the catalog's change generation moves.

pub mod admin;
pub mod metering;
pub mod session;
pub mod sharing;
pub mod usage;
pub mod xandr;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use segmart_domain::access::{Access, Grant, SegmentFacts, may_use};
use segmart_domain::billing::{CurrencyCode, Rates, SegmentRule, ShareCpm, in_force};
use segmart_domain::{SegmentNum, Timestamp};
use segmart_storage::catalog::{Catalog, CatalogResult};

#[derive(Default)]
struct Rules {
    generation: i64,
    /// Segment number → (member id, current revshare).
    owners: HashMap<u32, (i64, f64)>,
    /// Segment number → its rule changes, oldest first.
    history: HashMap<u32, Vec<(Timestamp, SegmentRule)>>,
    /// Currency → its rate changes, oldest first.
    rates: HashMap<CurrencyCode, Vec<(Timestamp, f64)>>,
    /// SHA-256 hex of live bidder tokens → bidder id.
    bidders: HashMap<String, i64>,
    buyers: HashSet<i64>,
    /// Segments whose active mapping is public.
    public: HashSet<u32>,
    /// Segment number → active.
    active: HashMap<u32, bool>,
    /// (buyer, segment) → the live shares covering it that the buyer activated.
    grants: HashMap<(i64, u32), Vec<Grant>>,
}

/// The billing cache. All methods take `&self`.
pub struct BillingIndex {
    settlement: CurrencyCode,
    rules: RwLock<Arc<Rules>>,
}

impl BillingIndex {
    pub async fn load(
        catalog: &dyn Catalog,
        settlement: CurrencyCode,
    ) -> CatalogResult<Arc<BillingIndex>> {
        let index = Arc::new(BillingIndex {
            settlement,
            rules: RwLock::new(Arc::new(Rules::default())),
        });
        index.reload(catalog).await?;
        Ok(index)
    }

    pub fn settlement(&self) -> CurrencyCode {
        self.settlement
    }

    /// Replaces the copy with the catalog's current state.
    pub async fn reload(&self, catalog: &dyn Catalog) -> CatalogResult<()> {
        let generation = catalog.generation().await?;
        let (owners, history) = catalog.billing_rules().await?;
        let rates = catalog.rates().await?;
        let bidders = catalog.list_bidders().await?;
        let buyers = catalog.list_buyers().await?;
        let mut rules = Rules {
            generation,
            ..Rules::default()
        };
        for o in owners {
            rules
                .owners
                .insert(o.segment_num, (o.member_id, o.revshare_pct));
        }
        for change in history {
            rules.history.entry(change.segment_num).or_default().push((
                change.valid_from,
                SegmentRule {
                    member_id: change.member_id,
                    mapping: change.mapping,
                    revshare_pct: change.revshare_pct,
                },
            ));
        }
        for r in rates {
            rules
                .rates
                .entry(r.currency)
                .or_default()
                .push((r.valid_from, r.to_settlement));
        }
        rules.bidders = bidders
            .into_iter()
            .filter(|b| !b.revoked)
            .map(|b| (b.token_hash, b.id))
            .collect();
        rules.buyers = buyers.into_iter().map(|b| b.id).collect();
        let access = catalog.access_data().await?;
        rules.public = access.public.iter().copied().collect();
        let mut by_folder: HashMap<segmart_domain::FolderId, Vec<u32>> = HashMap::new();
        for (num, folder, active) in &access.segments {
            rules.active.insert(*num, *active);
            by_folder.entry(*folder).or_default().push(*num);
        }
        for share in &access.shares {
            let mut covered: HashSet<u32> = share.segments.iter().copied().collect();
            if let Some(folder) = share.folder {
                covered.extend(by_folder.get(&folder).into_iter().flatten().copied());
            }
            let grant = Grant {
                share_id: share.id,
                revoked: share.revoked_at.is_some(),
                cpm: (share.cpm > 0.0).then_some(ShareCpm {
                    cpm: share.cpm,
                    currency: share.currency,
                }),
            };
            for (buyer, _) in &share.activations {
                for &segment in &covered {
                    rules
                        .grants
                        .entry((*buyer, segment))
                        .or_default()
                        .push(grant);
                }
            }
        }
        *self.rules.write() = Arc::new(rules);
        Ok(())
    }

    /// Reloads when the catalog changed since the last load.
    pub async fn refresh_if_changed(&self, catalog: &dyn Catalog) -> CatalogResult<bool> {
        let generation = catalog.generation().await?;
        if generation == self.rules.read().generation {
            return Ok(false);
        }
        self.reload(catalog).await?;
        Ok(true)
    }

    /// A consistent view for pricing many events.
    pub fn snapshot(&self) -> RulesView {
        RulesView {
            settlement: self.settlement,
            rules: self.rules.read().clone(),
        }
    }
}

/// One consistent state of the billing cache.
pub struct RulesView {
    settlement: CurrencyCode,
    rules: Arc<Rules>,
}

impl RulesView {
    /// The rule of a segment in force at `at`; `None` when the segment does not exist.
    pub fn rule_at(&self, segment: SegmentNum, at: Timestamp) -> Option<SegmentRule> {
        let &(member_id, revshare_pct) = self.rules.owners.get(&segment.0)?;
        let unmapped = SegmentRule {
            member_id,
            mapping: None,
            revshare_pct,
        };
        Some(
            self.rules
                .history
                .get(&segment.0)
                .and_then(|h| in_force(h, at).cloned())
                .unwrap_or(unmapped),
        )
    }

    /// The exchange rates in force at `at`.
    pub fn rates_at(&self, at: Timestamp) -> Rates {
        let mut rates = Rates::new(self.settlement);
        for (currency, history) in &self.rules.rates {
            if let Some(&rate) = in_force(history, at) {
                rates.to_settlement.insert(*currency, rate);
            }
        }
        rates
    }

    pub fn bidder(&self, token_sha256: &str) -> Option<i64> {
        self.rules.bidders.get(token_sha256).copied()
    }

    pub fn buyer_exists(&self, id: i64) -> bool {
        self.rules.buyers.contains(&id)
    }

    pub fn is_public(&self, segment: SegmentNum) -> bool {
        self.rules.public.contains(&segment.0)
    }

    /// May `buyer` use `segment` now, and on which terms ([`may_use`]).
    pub fn access(&self, buyer: i64, segment: SegmentNum) -> Access {
        let Some(&active) = self.rules.active.get(&segment.0) else {
            return Access::Denied;
        };
        let facts = SegmentFacts {
            active,
            public: self.rules.public.contains(&segment.0),
        };
        let grants = self
            .rules
            .grants
            .get(&(buyer, segment.0))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        may_use(facts, grants)
    }

    /// Every segment `buyer` may use now, with the decision.
    pub fn usable_by(&self, buyer: i64) -> Vec<(u32, Access)> {
        let mut out: Vec<(u32, Access)> = self
            .rules
            .active
            .keys()
            .map(|&n| (n, self.access(buyer, SegmentNum(n))))
            .filter(|(_, a)| a.allowed())
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }
}
