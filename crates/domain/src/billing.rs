//! Metered billing: how one impression that used data is priced.
//!
//! Money is integer **micros** (millionths of a currency unit) so sums are exact and reports
//! add up to the ledger to the last micro. Prices and exchange rates are `f64` (they are
//! operator- and provider-entered decimals); each charge is computed in `f64` and rounded to
//! micros once, half away from zero.
//!
//! The rules (MISSION §4, seed 002), decided where the seed is silent:
//! - FIX: the category's CPM / 1000 per impression. RATE: the category's percent of the
//!   impression's media cost. Plus the share's fixed CPM / 1000 when the buyer uses the segment
//!   through a priced share.
//! - Every amount is converted into the deployment's settlement currency at the operator's rate
//!   in force at the impression's time.
//! - **Several segments on one impression:** per data provider, only its most expensive used
//!   segment is charged (`Superseded` for the others, ties go to the lowest segment number);
//!   segments of different providers are each charged. A buyer that stacks five segments of one
//!   provider to narrow an audience pays for that provider's data once.
//! - **Exclusion targeting is not billed**: segments the bidder reports as excluded are recorded
//!   (`Excluded`) for audit, never charged: the impression went to users *without* that data.
//! - A segment without an active billing mapping stays usable but is not charged (`Unmapped`).
//! - The provider is paid the data cost less the platform's revshare
//!   (`data_revshare_pct`, a percent 0–100 of the data cost).

use crate::clock::Timestamp;
use crate::ids::SegmentNum;
use crate::pricing::CostType;
use std::collections::HashMap;
use std::fmt;

/// Millionths of a currency unit.
pub type Micros = i64;

/// Micros in one currency unit.
pub const MICROS_PER_UNIT: f64 = 1_000_000.0;

/// An ISO 4217 currency code: three ASCII uppercase letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CurrencyCode([u8; 3]);

impl CurrencyCode {
    pub const USD: CurrencyCode = CurrencyCode(*b"USD");
    pub const RUB: CurrencyCode = CurrencyCode(*b"RUB");

    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(CurrencyCode([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(format!(
                "{raw:?} is not a currency code (three uppercase letters, ISO 4217, e.g. USD)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII")
    }

    pub fn bytes(&self) -> [u8; 3] {
        self.0
    }

    pub fn from_bytes(bytes: [u8; 3]) -> Result<Self, String> {
        Self::parse(std::str::from_utf8(&bytes).map_err(|e| e.to_string())?)
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::pricing::Currency> for CurrencyCode {
    fn from(c: crate::pricing::Currency) -> Self {
        CurrencyCode::parse(c.code()).expect("valid code")
    }
}

/// A category's price: FIX CPM or RATE percent, in a currency (RATE's currency is that of the
/// media cost, so it has none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub cost_type: CostType,
    /// CPM for FIX, percent (0–100) for RATE.
    pub value: f64,
    /// The CPM's currency (FIX only).
    pub currency: CurrencyCode,
}

/// The billing rule of one segment at one moment: who is paid and what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRule {
    /// The data provider's member id (who is paid).
    pub member_id: i64,
    /// The active billing mapping, if any: its data category and that category's price.
    pub mapping: Option<(i64, Price)>,
    /// The platform's share of the data cost, percent 0–100.
    pub revshare_pct: f64,
}

/// A fixed CPM the buyer pays on top, because it uses the segment through a priced share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareCpm {
    pub cpm: f64,
    pub currency: CurrencyCode,
}

/// Operator exchange rates in force at one moment: units of the settlement currency per unit
/// of each other currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub settlement: CurrencyCode,
    pub to_settlement: HashMap<CurrencyCode, f64>,
}

impl Rates {
    pub fn new(settlement: CurrencyCode) -> Self {
        Rates {
            settlement,
            to_settlement: HashMap::new(),
        }
    }

    /// Units of the settlement currency one unit of `from` is worth, if known.
    pub fn rate(&self, from: CurrencyCode) -> Option<f64> {
        if from == self.settlement {
            Some(1.0)
        } else {
            self.to_settlement.get(&from).copied()
        }
    }
}

/// One impression that used data, as the bidder reports it (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub impression_id: String,
    pub at: Timestamp,
    pub buyer_id: i64,
    pub campaign_id: i64,
    pub region: String,
    pub media_cost_micros: Micros,
    pub media_currency: CurrencyCode,
    /// Segments whose presence the impression was targeted on.
    pub segments: Vec<SegmentNum>,
    /// Segments used to exclude users (recorded, never billed).
    pub excluded_segments: Vec<SegmentNum>,
}

/// What happened to one segment of an impression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChargeStatus {
    /// Charged to the buyer, paid to the provider.
    Charged,
    /// No active billing mapping: usable, not charged.
    Unmapped,
    /// Another segment of the same provider on this impression cost more; that one was charged.
    Superseded,
    /// Used for exclusion: never billed.
    Excluded,
}

impl ChargeStatus {
    pub fn name(self) -> &'static str {
        match self {
            ChargeStatus::Charged => "charged",
            ChargeStatus::Unmapped => "unmapped",
            ChargeStatus::Superseded => "superseded",
            ChargeStatus::Excluded => "excluded",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "charged" => ChargeStatus::Charged,
            "unmapped" => ChargeStatus::Unmapped,
            "superseded" => ChargeStatus::Superseded,
            "excluded" => ChargeStatus::Excluded,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            ChargeStatus::Charged => 0,
            ChargeStatus::Unmapped => 1,
            ChargeStatus::Superseded => 2,
            ChargeStatus::Excluded => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ChargeStatus::Charged,
            1 => ChargeStatus::Unmapped,
            2 => ChargeStatus::Superseded,
            3 => ChargeStatus::Excluded,
            _ => return None,
        })
    }
}

/// One segment's line of a priced impression: the price in force and the money it moved.
/// Amounts are in the settlement currency; all zero unless `status` is `Charged`.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub segment: SegmentNum,
    pub member_id: i64,
    pub data_category_id: Option<i64>,
    pub status: ChargeStatus,
    /// The category price that was in force (even when not charged, for audit).
    pub price: Option<Price>,
    /// The share's CPM that was in force.
    pub share_cpm: Option<ShareCpm>,
    pub revshare_pct: f64,
    /// What the segment's data cost would be / was: category price + share CPM.
    pub data_cost_micros: Micros,
    pub payout_micros: Micros,
    pub platform_fee_micros: Micros,
}

/// Why an event could not be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PricingError {
    UnknownSegment(SegmentNum),
    /// No operator exchange rate from this currency into the settlement currency.
    NoRate(CurrencyCode),
}

impl fmt::Display for PricingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PricingError::UnknownSegment(n) => write!(f, "segment {n} does not exist"),
            PricingError::NoRate(c) => write!(
                f,
                "no exchange rate from {c} into the settlement currency is set for that time"
            ),
        }
    }
}

fn round_micros(x: f64) -> Micros {
    x.round() as Micros
}

/// Prices one impression. `rule` gives each segment's rule in force at the event's time and
/// `share` the share CPM the buyer pays for it (if any); `rates` are the rates at that time.
/// Charges come in the order: used segments as reported, then excluded ones.
pub fn price_event(
    event: &UsageEvent,
    rule: impl Fn(SegmentNum) -> Option<SegmentRule>,
    share: impl Fn(SegmentNum) -> Option<ShareCpm>,
    rates: &Rates,
) -> Result<Vec<Charge>, PricingError> {
    let media_rate = rates
        .rate(event.media_currency)
        .ok_or(PricingError::NoRate(event.media_currency))?;
    let media_settlement = event.media_cost_micros as f64 * media_rate;
    let mut charges = Vec::with_capacity(event.segments.len() + event.excluded_segments.len());
    for &segment in &event.segments {
        let rule = rule(segment).ok_or(PricingError::UnknownSegment(segment))?;
        let share_cpm = share(segment);
        let mut cost = 0.0;
        if let Some((_, price)) = rule.mapping {
            cost += match price.cost_type {
                CostType::Fix => {
                    let rate = rates
                        .rate(price.currency)
                        .ok_or(PricingError::NoRate(price.currency))?;
                    price.value * MICROS_PER_UNIT / 1000.0 * rate
                }
                CostType::Rate => media_settlement * price.value / 100.0,
            };
        }
        if let Some(s) = share_cpm {
            let rate = rates
                .rate(s.currency)
                .ok_or(PricingError::NoRate(s.currency))?;
            cost += s.cpm * MICROS_PER_UNIT / 1000.0 * rate;
        }
        let data_cost = round_micros(cost);
        let billable = rule.mapping.is_some() || share_cpm.is_some();
        charges.push(Charge {
            segment,
            member_id: rule.member_id,
            data_category_id: rule.mapping.map(|(id, _)| id),
            status: if billable {
                ChargeStatus::Charged
            } else {
                ChargeStatus::Unmapped
            },
            price: rule.mapping.map(|(_, p)| p),
            share_cpm,
            revshare_pct: rule.revshare_pct,
            data_cost_micros: data_cost,
            payout_micros: 0,
            platform_fee_micros: 0,
        });
    }
    // Per provider, keep only the most expensive charged segment (ties: lowest number).
    let mut best: HashMap<i64, usize> = HashMap::new();
    for (i, c) in charges.iter().enumerate() {
        if c.status != ChargeStatus::Charged {
            continue;
        }
        best.entry(c.member_id)
            .and_modify(|b| {
                let current = &charges[*b];
                if c.data_cost_micros > current.data_cost_micros
                    || (c.data_cost_micros == current.data_cost_micros
                        && c.segment < current.segment)
                {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    for (i, c) in charges.iter_mut().enumerate() {
        if c.status != ChargeStatus::Charged {
            c.data_cost_micros = 0;
            continue;
        }
        if best.get(&c.member_id) != Some(&i) {
            c.status = ChargeStatus::Superseded;
            c.data_cost_micros = 0;
            continue;
        }
        c.platform_fee_micros = round_micros(c.data_cost_micros as f64 * c.revshare_pct / 100.0);
        c.payout_micros = c.data_cost_micros - c.platform_fee_micros;
    }
    for &segment in &event.excluded_segments {
        let rule = rule(segment).ok_or(PricingError::UnknownSegment(segment))?;
        charges.push(Charge {
            segment,
            member_id: rule.member_id,
            data_category_id: rule.mapping.map(|(id, _)| id),
            status: ChargeStatus::Excluded,
            price: rule.mapping.map(|(_, p)| p),
            share_cpm: None,
            revshare_pct: rule.revshare_pct,
            data_cost_micros: 0,
            payout_micros: 0,
            platform_fee_micros: 0,
        });
    }
    Ok(charges)
}

/// The value in force at `at` in a history sorted by `valid_from`: the last entry with
/// `valid_from <= at`.
pub fn in_force<T>(history: &[(Timestamp, T)], at: Timestamp) -> Option<&T> {
    let idx = history.partition_point(|(from, _)| *from <= at);
    idx.checked_sub(1).map(|i| &history[i].1)
}

/// Day number (days since 1970-01-01, UTC) of a timestamp: the reports' day.
pub fn day_of(at: Timestamp) -> i32 {
    at.millis().div_euclid(86_400_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(cpm: f64, currency: CurrencyCode) -> Price {
        Price {
            cost_type: CostType::Fix,
            value: cpm,
            currency,
        }
    }

    fn rate(pct: f64) -> Price {
        Price {
            cost_type: CostType::Rate,
            value: pct,
            currency: CurrencyCode::USD,
        }
    }

    fn event(
        segments: &[u32],
        excluded: &[u32],
        media_micros: i64,
        cur: CurrencyCode,
    ) -> UsageEvent {
        UsageEvent {
            impression_id: "imp-1".into(),
            at: Timestamp(0),
            buyer_id: 7,
            campaign_id: 70,
            region: "eu".into(),
            media_cost_micros: media_micros,
            media_currency: cur,
            segments: segments.iter().map(|&n| SegmentNum(n)).collect(),
            excluded_segments: excluded.iter().map(|&n| SegmentNum(n)).collect(),
        }
    }

    fn rates() -> Rates {
        let mut r = Rates::new(CurrencyCode::USD);
        r.to_settlement.insert(CurrencyCode::RUB, 0.01);
        r
    }

    /// Segments 1, 2 (provider 100: FIX 2 USD, RATE 10%), 3 (provider 200: FIX 90 RUB),
    /// 4 (provider 200, unmapped).
    fn rules(n: SegmentNum) -> Option<SegmentRule> {
        let (member_id, mapping) = match n.0 {
            1 => (100, Some((11, fix(2.0, CurrencyCode::USD)))),
            2 => (100, Some((12, rate(10.0)))),
            3 => (200, Some((21, fix(90.0, CurrencyCode::RUB)))),
            4 => (200, None),
            _ => return None,
        };
        Some(SegmentRule {
            member_id,
            mapping,
            revshare_pct: 20.0,
        })
    }

    #[test]
    fn fix_is_cpm_over_a_thousand_and_rate_a_percent_of_media_cost() {
        let c = price_event(
            &event(&[1], &[], 0, CurrencyCode::USD),
            rules,
            |_| None,
            &rates(),
        )
        .unwrap();
        assert_eq!(c[0].status, ChargeStatus::Charged);
        assert_eq!(c[0].data_cost_micros, 2_000, "2 USD CPM = 0.002 USD");
        assert_eq!(c[0].platform_fee_micros, 400);
        assert_eq!(c[0].payout_micros, 1_600);
        // 10% of a 0.05 USD impression.
        let c = price_event(
            &event(&[2], &[], 50_000, CurrencyCode::USD),
            rules,
            |_| None,
            &rates(),
        )
        .unwrap();
        assert_eq!(c[0].data_cost_micros, 5_000);
    }

    #[test]
    fn currencies_are_converted_at_the_operator_rate() {
        // 90 RUB CPM at 0.01 USD/RUB = 0.9 USD CPM = 900 micros per impression.
        let c = price_event(
            &event(&[3], &[], 0, CurrencyCode::USD),
            rules,
            |_| None,
            &rates(),
        )
        .unwrap();
        assert_eq!(c[0].data_cost_micros, 900);
        // RATE on a media cost paid in RUB: 10% of 5 RUB = 0.5 RUB = 0.005 USD.
        let c = price_event(
            &event(&[2], &[], 5_000_000, CurrencyCode::RUB),
            rules,
            |_| None,
            &rates(),
        )
        .unwrap();
        assert_eq!(c[0].data_cost_micros, 5_000);
        let eur = CurrencyCode::parse("EUR").unwrap();
        assert_eq!(
            price_event(&event(&[2], &[], 1, eur), rules, |_| None, &rates()),
            Err(PricingError::NoRate(eur))
        );
    }

    #[test]
    fn only_the_most_expensive_segment_of_each_provider_is_charged() {
        // Provider 100: segment 1 costs 2000 micros, segment 2 costs 10% of 0.05 = 5000.
        // Provider 200: segment 3 costs 900, segment 4 is unmapped.
        let c = price_event(
            &event(&[1, 2, 3, 4], &[], 50_000, CurrencyCode::USD),
            rules,
            |_| None,
            &rates(),
        )
        .unwrap();
        let status: Vec<_> = c.iter().map(|c| c.status).collect();
        assert_eq!(
            status,
            [
                ChargeStatus::Superseded,
                ChargeStatus::Charged,
                ChargeStatus::Charged,
                ChargeStatus::Unmapped
            ]
        );
        let total: i64 = c.iter().map(|c| c.data_cost_micros).sum();
        assert_eq!(total, 5_900);
        assert_eq!(
            c[0].price,
            Some(fix(2.0, CurrencyCode::USD)),
            "the price in force is kept for audit"
        );
    }

    #[test]
    fn exclusions_are_recorded_but_never_billed() {
        let c = price_event(
            &event(&[], &[1], 50_000, CurrencyCode::USD),
            rules,
            |_| None,
            &rates(),
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, ChargeStatus::Excluded);
        assert_eq!(c[0].data_cost_micros, 0);
    }

    #[test]
    fn a_share_cpm_is_added_and_makes_an_unmapped_segment_billable() {
        let share = |n: SegmentNum| {
            (n.0 == 4 || n.0 == 1).then_some(ShareCpm {
                cpm: 0.5,
                currency: CurrencyCode::USD,
            })
        };
        let c = price_event(
            &event(&[1, 4], &[], 0, CurrencyCode::USD),
            rules,
            share,
            &rates(),
        )
        .unwrap();
        assert_eq!(c[0].data_cost_micros, 2_500);
        assert_eq!(c[1].status, ChargeStatus::Charged);
        assert_eq!(c[1].data_cost_micros, 500);
    }

    #[test]
    fn unknown_segments_refuse_the_event() {
        assert_eq!(
            price_event(
                &event(&[9], &[], 0, CurrencyCode::USD),
                rules,
                |_| None,
                &rates()
            ),
            Err(PricingError::UnknownSegment(SegmentNum(9)))
        );
    }

    #[test]
    fn history_lookup_takes_the_rule_in_force() {
        let h = [(Timestamp(10), "a"), (Timestamp(20), "b")];
        assert_eq!(in_force(&h, Timestamp(5)), None);
        assert_eq!(in_force(&h, Timestamp(10)), Some(&"a"));
        assert_eq!(in_force(&h, Timestamp(19)), Some(&"a"));
        assert_eq!(in_force(&h, Timestamp(25)), Some(&"b"));
        assert_eq!(day_of(Timestamp(86_400_000 * 3 + 5)), 3);
        assert_eq!(day_of(Timestamp(-1)), -1);
    }

    #[test]
    fn currency_codes_are_three_uppercase_letters() {
        assert!(CurrencyCode::parse("usd").is_err());
        assert!(CurrencyCode::parse("US").is_err());
        assert_eq!(CurrencyCode::parse("EUR").unwrap().as_str(), "EUR");
    }
}
