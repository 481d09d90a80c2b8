//! Segment pricing as a taxonomy file declares it: RATE (a percentage of the media cost) or FIX
//! (a CPM), in RUB or USD.

/// How a segment is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CostType {
    /// A percentage of the media cost, 0..=100.
    Rate,
    /// A fixed price per thousand impressions.
    Fix,
}

impl CostType {
    /// `RATE` or `FIX`, as taxonomy files and the API spell it.
    pub fn name(self) -> &'static str {
        match self {
            CostType::Rate => "RATE",
            CostType::Fix => "FIX",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "RATE" => Some(CostType::Rate),
            "FIX" => Some(CostType::Fix),
            _ => None,
        }
    }
}

/// The currencies a taxonomy may price in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    Rub,
    Usd,
}

impl Currency {
    /// ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Rub => "RUB",
            Currency::Usd => "USD",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "RUB" => Some(Currency::Rub),
            "USD" => Some(Currency::Usd),
            _ => None,
        }
    }
}

/// A price: RATE percent or FIX CPM, with its currency when one was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub cost_type: CostType,
    /// Percent for RATE, CPM for FIX; never negative.
    pub value: f64,
    pub currency: Option<Currency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [CostType::Rate, CostType::Fix] {
            assert_eq!(CostType::from_name(t.name()), Some(t));
        }
        for c in [Currency::Rub, Currency::Usd] {
            assert_eq!(Currency::from_code(c.code()), Some(c));
        }
        assert_eq!(CostType::from_name("rate"), None);
    }
}
