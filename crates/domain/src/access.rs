//! The one answer to "may buyer B use segment S now?" — public visibility from the billing
//! mapping and shares are one access model, decided here and used by every path (campaign
//! creation, the buyer's segment list, metering).
//!
//! Rules, in order:
//! 1. An inactive segment is usable by nobody.
//! 2. A segment whose active billing mapping is public (`is_public`) is usable by every buyer,
//!    free of any share CPM.
//! 3. Otherwise the buyer needs a share covering the segment (listed in it, or in its folder)
//!    that the buyer activated and the owner has not revoked. With several, a free one wins,
//!    then the lowest CPM (ties: the oldest share).
//! 4. Otherwise: no.

use crate::billing::ShareCpm;

/// What is known about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFacts {
    pub active: bool,
    /// It has an active billing mapping with `is_public`.
    pub public: bool,
}

/// A share covering the segment that this buyer activated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    pub share_id: i64,
    pub revoked: bool,
    /// `None`: free.
    pub cpm: Option<ShareCpm>,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Access {
    Denied,
    /// Public through the billing mapping.
    Public,
    /// Through this share, at its CPM (`None`: free).
    Shared {
        share_id: i64,
        cpm: Option<ShareCpm>,
    },
}

impl Access {
    pub fn allowed(&self) -> bool {
        !matches!(self, Access::Denied)
    }

    /// The CPM the buyer pays on top for using the segment.
    pub fn share_cpm(&self) -> Option<ShareCpm> {
        match self {
            Access::Shared { cpm, .. } => *cpm,
            _ => None,
        }
    }
}

pub fn may_use(segment: SegmentFacts, grants: &[Grant]) -> Access {
    if !segment.active {
        return Access::Denied;
    }
    if segment.public {
        return Access::Public;
    }
    let cost = |g: &Grant| g.cpm.map(|c| c.cpm).unwrap_or(0.0);
    grants
        .iter()
        .filter(|g| !g.revoked)
        .min_by(|a, b| {
            cost(a)
                .total_cmp(&cost(b))
                .then(a.share_id.cmp(&b.share_id))
        })
        .map(|g| Access::Shared {
            share_id: g.share_id,
            cpm: g.cpm.filter(|c| c.cpm > 0.0),
        })
        .unwrap_or(Access::Denied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::CurrencyCode;

    fn grant(id: i64, revoked: bool, cpm: f64) -> Grant {
        Grant {
            share_id: id,
            revoked,
            cpm: (cpm > 0.0).then_some(ShareCpm {
                cpm,
                currency: CurrencyCode::USD,
            }),
        }
    }

    #[test]
    fn every_case_of_the_access_model() {
        let active = SegmentFacts {
            active: true,
            public: false,
        };
        let public = SegmentFacts {
            active: true,
            public: true,
        };
        let inactive = SegmentFacts {
            active: false,
            public: true,
        };
        let usd = |cpm| {
            Some(ShareCpm {
                cpm,
                currency: CurrencyCode::USD,
            })
        };
        let cases: Vec<(&str, SegmentFacts, Vec<Grant>, Access)> = vec![
            ("no share, private", active, vec![], Access::Denied),
            ("public mapping", public, vec![], Access::Public),
            (
                "public beats a priced share",
                public,
                vec![grant(1, false, 2.0)],
                Access::Public,
            ),
            (
                "inactive even if public and shared",
                inactive,
                vec![grant(1, false, 0.0)],
                Access::Denied,
            ),
            (
                "activated free share",
                active,
                vec![grant(4, false, 0.0)],
                Access::Shared {
                    share_id: 4,
                    cpm: None,
                },
            ),
            (
                "activated priced share",
                active,
                vec![grant(4, false, 1.5)],
                Access::Shared {
                    share_id: 4,
                    cpm: usd(1.5),
                },
            ),
            (
                "revoked share",
                active,
                vec![grant(4, true, 0.0)],
                Access::Denied,
            ),
            (
                "revoked and live: the live one",
                active,
                vec![grant(4, true, 0.0), grant(5, false, 3.0)],
                Access::Shared {
                    share_id: 5,
                    cpm: usd(3.0),
                },
            ),
            (
                "free wins over priced",
                active,
                vec![grant(7, false, 3.0), grant(9, false, 0.0)],
                Access::Shared {
                    share_id: 9,
                    cpm: None,
                },
            ),
            (
                "cheapest, then oldest",
                active,
                vec![
                    grant(9, false, 2.0),
                    grant(8, false, 2.0),
                    grant(7, false, 5.0),
                ],
                Access::Shared {
                    share_id: 8,
                    cpm: usd(2.0),
                },
            ),
        ];
        for (name, facts, grants, expected) in cases {
            assert_eq!(may_use(facts, &grants), expected, "{name}");
        }
    }
}
