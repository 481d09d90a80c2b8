//! Taxonomy files: `[{id, name, cost_type, cost_value, currency, advertisers}]`.
//!
//! A taxonomy is validated whole before anything is applied: [`parse_taxonomy`] returns either
//! every entry, valid, or every problem found (entry index, field, reason). It never yields a
//! partial taxonomy.
//!
//! Field rules:
//! - `id` (required): a JSON integer or a string; integers become their decimal text, since
//!   segment ids are strings. It must satisfy the segment API's rules and be unique in the file.
//! - `name` (required): a non-empty string of at most 255 characters.
//! - `cost_type`: `RATE` (a percentage of the media cost, 0..=100) or `FIX` (a CPM); letter case
//!   is ignored.
//! - `cost_value`: a non-negative JSON number or a string holding a plain decimal number
//!   (`"1"`, `"0.35"`); `cost_type` and `cost_value` come together or not at all.
//! - `currency`: `RUB` or `USD` (letter case ignored); only meaningful with a cost.
//! - `advertisers`: an array of advertiser ids (integers or strings). An empty array, like a
//!   missing one, places no restriction: JSON writers commonly emit `[]` for "none given".
//!
//! `null` counts as absent. Unknown fields are refused, so a misspelt `cost_valeu` is reported
//! instead of silently leaving a segment unpriced.

use std::collections::HashMap;
use std::fmt;

use segmart_domain::SegmentKey;
use segmart_domain::segment::NAME_MAX_CHARS;
use serde_json::{Map, Value};

/// Longest advertiser id, in bytes.
pub const ADVERTISER_ID_MAX_BYTES: usize = 128;
/// How many issues [`TaxonomyError`]'s `Display` lists before summarising the rest.
const DISPLAYED_ISSUES: usize = 20;

const KNOWN_FIELDS: [&str; 6] = [
    "id",
    "name",
    "cost_type",
    "cost_value",
    "currency",
    "advertisers",
];

/// How a segment is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CostType {
    /// A percentage of the media cost.
    Rate,
    /// A fixed price per thousand impressions.
    Fix,
}

impl CostType {
    pub fn name(self) -> &'static str {
        match self {
            CostType::Rate => "RATE",
            CostType::Fix => "FIX",
        }
    }
}

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
}

/// A price: RATE percent or FIX CPM, with its currency when one was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub cost_type: CostType,
    /// Percent for RATE (0..=100), CPM for FIX (≥ 0).
    pub value: f64,
    pub currency: Option<Currency>,
}

impl Cost {
    /// A zero value: the segment is free.
    pub fn is_free(&self) -> bool {
        self.value == 0.0
    }
}

/// The price that applies to a segment, from the provider's default pricing and the segment's own
/// cost, following the seed's rule: "The cost value is applied only when it equals to 0 or the
/// default DMP settings are not specified."
///
/// segmart reads that as:
/// - no provider default → the segment's own cost (or none);
/// - a provider default and a segment cost of 0 → the segment's cost: a provider can make a
///   single segment free but cannot otherwise price it away from its default;
/// - a provider default and any other segment cost → the default;
/// - no segment cost → the default (or none).
pub fn effective_cost(provider_default: Option<Cost>, segment_cost: Option<Cost>) -> Option<Cost> {
    match (provider_default, segment_cost) {
        (None, segment) => segment,
        (Some(_), Some(segment)) if segment.is_free() => Some(segment),
        (Some(default), _) => Some(default),
    }
}

/// One validated taxonomy entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TaxonomyEntry {
    pub id: SegmentKey,
    pub name: String,
    /// The segment's own price, before [`effective_cost`].
    pub cost: Option<Cost>,
    /// Advertisers that may use the segment; `None` means no restriction.
    pub advertisers: Option<Vec<String>>,
}

/// One problem in a taxonomy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxonomyIssue {
    /// Position in the top-level array; `None` for the file as a whole.
    pub index: Option<usize>,
    /// The field at fault, when there is one.
    pub field: Option<String>,
    /// Lowercase human explanation.
    pub reason: String,
}

impl fmt::Display for TaxonomyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.index, &self.field) {
            (Some(index), Some(field)) => write!(f, "[{index}].{field}: {}", self.reason),
            (Some(index), None) => write!(f, "[{index}]: {}", self.reason),
            (None, _) => f.write_str(&self.reason),
        }
    }
}

/// A refused taxonomy, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TaxonomyError {
    pub issues: Vec<TaxonomyIssue>,
}

impl fmt::Display for TaxonomyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.issues.len();
        write!(
            f,
            "taxonomy rejected, {count} problem{}: ",
            if count == 1 { "" } else { "s" }
        )?;
        for (i, issue) in self.issues.iter().take(DISPLAYED_ISSUES).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        if count > DISPLAYED_ISSUES {
            write!(f, "; and {} more", count - DISPLAYED_ISSUES)?;
        }
        Ok(())
    }
}

/// Parses and validates a whole taxonomy file.
pub fn parse_taxonomy(json: &[u8]) -> Result<Vec<TaxonomyEntry>, TaxonomyError> {
    let document: Value = serde_json::from_slice(json).map_err(|error| TaxonomyError {
        issues: vec![TaxonomyIssue {
            index: None,
            field: None,
            reason: format!("invalid JSON: {error}"),
        }],
    })?;
    let Value::Array(items) = document else {
        return Err(TaxonomyError {
            issues: vec![TaxonomyIssue {
                index: None,
                field: None,
                reason: format!(
                    "the taxonomy must be a JSON array of segments, found {}",
                    json_type(&document)
                ),
            }],
        });
    };
    let mut issues = Vec::new();
    let mut entries = Vec::with_capacity(items.len());
    let mut first_index_of_id: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let mut entry_issues = EntryIssues {
            index,
            issues: &mut issues,
        };
        let Value::Object(fields) = item else {
            entry_issues.whole(format!("must be an object, found {}", json_type(item)));
            continue;
        };
        if let Some(entry) = validate_entry(fields, &mut entry_issues) {
            match first_index_of_id.get(entry.id.as_str()) {
                Some(first) => entry_issues.field(
                    "id",
                    format!(
                        "duplicate id {:?}, first used at index {first}",
                        entry.id.as_str()
                    ),
                ),
                None => {
                    first_index_of_id.insert(entry.id.as_str().to_owned(), index);
                    entries.push(entry);
                }
            }
        }
    }
    if issues.is_empty() {
        Ok(entries)
    } else {
        Err(TaxonomyError { issues })
    }
}

/// Collects the issues of one entry.
struct EntryIssues<'i> {
    index: usize,
    issues: &'i mut Vec<TaxonomyIssue>,
}

impl EntryIssues<'_> {
    fn field(&mut self, field: &str, reason: String) {
        self.issues.push(TaxonomyIssue {
            index: Some(self.index),
            field: Some(field.to_owned()),
            reason,
        });
    }

    fn whole(&mut self, reason: String) {
        self.issues.push(TaxonomyIssue {
            index: Some(self.index),
            field: None,
            reason,
        });
    }
}

fn validate_entry(
    fields: &Map<String, Value>,
    issues: &mut EntryIssues<'_>,
) -> Option<TaxonomyEntry> {
    let before = issues.issues.len();
    for key in fields.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            issues.field(
                key,
                format!("unknown field; expected {}", KNOWN_FIELDS.join(", ")),
            );
        }
    }
    let present = |name: &str| fields.get(name).filter(|value| !value.is_null());

    let id = match present("id") {
        None => {
            issues.field("id", "is required".into());
            None
        }
        Some(value) => match id_text(value) {
            Ok(text) => match SegmentKey::parse(&text) {
                Ok(key) => Some(key),
                Err(why) => {
                    issues.field("id", format!("segment id {text:?} {why}"));
                    None
                }
            },
            Err(why) => {
                issues.field("id", why);
                None
            }
        },
    };

    let name = match present("name") {
        None => {
            issues.field("name", "is required".into());
            None
        }
        Some(Value::String(name)) => {
            let chars = name.chars().count();
            if name.trim().is_empty() {
                issues.field("name", "must not be empty".into());
                None
            } else if chars > NAME_MAX_CHARS {
                issues.field(
                    "name",
                    format!("is {chars} characters long, the limit is {NAME_MAX_CHARS}"),
                );
                None
            } else {
                Some(name.clone())
            }
        }
        Some(other) => {
            issues.field(
                "name",
                format!("must be a string, found {}", json_type(other)),
            );
            None
        }
    };

    let cost_type = present("cost_type").and_then(|value| match value {
        Value::String(text) if text.trim().eq_ignore_ascii_case("RATE") => Some(CostType::Rate),
        Value::String(text) if text.trim().eq_ignore_ascii_case("FIX") => Some(CostType::Fix),
        other => {
            issues.field(
                "cost_type",
                format!("must be RATE or FIX, found {}", shown(other)),
            );
            None
        }
    });
    let cost_value = present("cost_value").and_then(|value| match cost_number(value) {
        Ok(number) => Some(number),
        Err(why) => {
            issues.field("cost_value", why);
            None
        }
    });
    let currency = present("currency").and_then(|value| match value {
        Value::String(text) if text.trim().eq_ignore_ascii_case("RUB") => Some(Currency::Rub),
        Value::String(text) if text.trim().eq_ignore_ascii_case("USD") => Some(Currency::Usd),
        other => {
            issues.field(
                "currency",
                format!("must be RUB or USD, found {}", shown(other)),
            );
            None
        }
    });
    let cost = match (present("cost_type"), present("cost_value")) {
        (Some(_), None) => {
            issues.field("cost_value", "is required when cost_type is given".into());
            None
        }
        (None, Some(_)) => {
            issues.field(
                "cost_type",
                "is required when cost_value is given (RATE for a percentage, FIX for a CPM)"
                    .into(),
            );
            None
        }
        (None, None) => {
            if present("currency").is_some() {
                issues.field(
                    "currency",
                    "is given without cost_type and cost_value".into(),
                );
            }
            None
        }
        (Some(_), Some(_)) => match (cost_type, cost_value) {
            (Some(CostType::Rate), Some(value)) if value > 100.0 => {
                issues.field(
                    "cost_value",
                    format!("a RATE is a percentage of the media cost, 0..100, found {value}"),
                );
                None
            }
            (Some(cost_type), Some(value)) => Some(Cost {
                cost_type,
                value,
                currency,
            }),
            _ => None,
        },
    };

    let advertisers = match present("advertisers") {
        None => None,
        Some(Value::Array(ids)) => {
            let mut out: Vec<String> = Vec::with_capacity(ids.len());
            for (position, value) in ids.iter().enumerate() {
                match advertiser_id(value) {
                    Ok(id) => {
                        if !out.contains(&id) {
                            out.push(id);
                        }
                    }
                    Err(why) => issues.field(&format!("advertisers[{position}]"), why),
                }
            }
            (!out.is_empty()).then_some(out)
        }
        Some(other) => {
            issues.field(
                "advertisers",
                format!(
                    "must be an array of advertiser ids, found {}",
                    json_type(other)
                ),
            );
            None
        }
    };

    if issues.issues.len() > before {
        return None;
    }
    Some(TaxonomyEntry {
        id: id?,
        name: name?,
        cost,
        advertisers,
    })
}

/// An id given as an integer or a string, as text.
fn id_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
        Value::Number(number) => Err(format!("must be an integer or a string, found {number}")),
        other => Err(format!(
            "must be an integer or a string, found {}",
            json_type(other)
        )),
    }
}

fn advertiser_id(value: &Value) -> Result<String, String> {
    let text = id_text(value)?;
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > ADVERTISER_ID_MAX_BYTES {
        return Err(format!(
            "is {} bytes long, the limit is {ADVERTISER_ID_MAX_BYTES}",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(text.to_owned())
}

/// `cost_value`: a non-negative finite number, or a string holding a plain decimal number.
fn cost_number(value: &Value) -> Result<f64, String> {
    let number = match value {
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| format!("{number} is not a usable number"))?,
        Value::String(text) => parse_decimal(text.trim())?,
        other => {
            return Err(format!(
                "must be a number or a numeric string, found {}",
                json_type(other)
            ));
        }
    };
    if !number.is_finite() {
        return Err(format!("{number} is not a finite number"));
    }
    if number < 0.0 {
        return Err(format!("must not be negative, found {number}"));
    }
    Ok(number)
}

/// Digits with an optional fraction: `12`, `0.35`. No sign, exponent, or thousands separator.
fn parse_decimal(text: &str) -> Result<f64, String> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let well_formed = digits(whole) && fraction.is_none_or(digits);
    if !well_formed {
        let hint = if text.contains(',') {
            " (use '.' as the decimal separator)"
        } else {
            ""
        };
        return Err(format!(
            "{text:?} is not a plain decimal number such as \"1\" or \"0.35\"{hint}"
        ));
    }
    text.parse::<f64>()
        .map_err(|error| format!("{text:?} is not a number: {error}"))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{:?}", crate::name::cut(text, 64)),
        other => json_type(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_EXAMPLE: &str = r#"[
        {"id": 1000, "name": "Mens 18-24", "cost_type": "RATE", "cost_value": 20,
         "currency": "USD", "advertisers": [1000, 2000, 3000]},
        {"id": 1001, "name": "Mens 25-29", "cost_type": "FIX", "cost_value": "1",
         "currency": "USD", "advertisers": [1000, 2000, 3000]}
    ]"#;

    fn issues(json: &str) -> Vec<String> {
        parse_taxonomy(json.as_bytes())
            .unwrap_err()
            .issues
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_seed_example_parses() {
        let entries = parse_taxonomy(SEED_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id.as_str(), "1000");
        assert_eq!(entries[0].name, "Mens 18-24");
        assert_eq!(
            entries[0].cost,
            Some(Cost {
                cost_type: CostType::Rate,
                value: 20.0,
                currency: Some(Currency::Usd)
            })
        );
        assert_eq!(
            entries[0].advertisers.as_deref(),
            Some(&["1000".to_owned(), "2000".to_owned(), "3000".to_owned()][..])
        );
        assert_eq!(entries[1].cost.unwrap().cost_type, CostType::Fix);
        assert_eq!(entries[1].cost.unwrap().value, 1.0);
    }

    #[test]
    fn only_id_and_name_are_required() {
        let entries = parse_taxonomy(br#"[{"id": "sports", "name": "Sports"}]"#).unwrap();
        assert_eq!(entries[0].cost, None);
        assert_eq!(entries[0].advertisers, None);
        let entries =
            parse_taxonomy(br#"[{"id": "a", "name": "A", "cost_type": null, "advertisers": []}]"#)
                .unwrap();
        assert_eq!(entries[0].cost, None);
        assert_eq!(
            entries[0].advertisers, None,
            "an empty list restricts nothing"
        );
        assert!(parse_taxonomy(b"[]").unwrap().is_empty());
    }

    #[test]
    fn every_problem_is_reported_and_nothing_is_returned() {
        let found = issues(
            r#"[
                {"id": 1, "name": "ok"},
                {"name": "no id", "cost_type": "CPC", "cost_value": -1},
                {"id": 1.5, "name": ""},
                "not an object",
                {"id": "a b", "name": "x", "cost_type": "RATE", "cost_value": "1,5", "currency": "EUR"},
                {"id": 1, "name": "dup", "cost_valeu": 3},
                {"id": 2, "name": "again"},
                {"id": "2", "name": "dup of a number id", "advertisers": [1, {}, ""]},
                {"id": 3, "name": "rate", "cost_type": "RATE", "cost_value": 101},
                {"id": 4, "name": "n", "cost_type": "FIX"},
                {"id": 5, "name": "n", "cost_value": 2},
                {"id": 6, "name": "n", "currency": "USD"},
                {"id": 7, "name": "n", "advertisers": 1000}
            ]"#,
        );
        let expected = [
            "[1].id: is required",
            "[1].cost_type: must be RATE or FIX, found \"CPC\"",
            "[1].cost_value: must not be negative, found -1",
            "[2].id: must be an integer or a string, found 1.5",
            "[2].name: must not be empty",
            "[3]: must be an object, found a string",
            "[4].id: segment id \"a b\" contains ' '; whitespace, control characters, ',' and '/' are not allowed",
            "[4].cost_value: \"1,5\" is not a plain decimal number such as \"1\" or \"0.35\" (use '.' as the decimal separator)",
            "[4].currency: must be RUB or USD, found \"EUR\"",
            "[5].cost_valeu: unknown field; expected id, name, cost_type, cost_value, currency, advertisers",
            "[7].advertisers[1]: must be an integer or a string, found an object",
            "[7].advertisers[2]: must not be empty",
            "[8].cost_value: a RATE is a percentage of the media cost, 0..100, found 101",
            "[9].cost_value: is required when cost_type is given",
            "[10].cost_type: is required when cost_value is given (RATE for a percentage, FIX for a CPM)",
            "[11].currency: is given without cost_type and cost_value",
            "[12].advertisers: must be an array of advertiser ids, found a number",
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn duplicate_ids_are_reported_against_their_first_use() {
        let found = issues(r#"[{"id": 7, "name": "a"}, {"id": "7", "name": "b"}]"#);
        assert_eq!(found, ["[1].id: duplicate id \"7\", first used at index 0"]);
    }

    #[test]
    fn file_level_problems() {
        assert!(
            issues("{\"id\": 1}")[0].contains("must be a JSON array of segments, found an object")
        );
        assert!(issues("[{\"id\": 1,]")[0].starts_with("invalid JSON: "));
        assert!(issues("")[0].starts_with("invalid JSON: "));
    }

    #[test]
    fn numeric_strings_and_letter_case() {
        let entries = parse_taxonomy(
            br#"[{"id": "x", "name": "x", "cost_type": "fix", "cost_value": " 0.35 ", "currency": "rub"}]"#,
        )
        .unwrap();
        let cost = entries[0].cost.unwrap();
        assert_eq!(
            (cost.cost_type, cost.value, cost.currency),
            (CostType::Fix, 0.35, Some(Currency::Rub))
        );
        for bad in [
            "\"1e3\"", "\"-1\"", "\".5\"", "\"1.\"", "\"NaN\"", "\"inf\"", "\"\"", "true",
        ] {
            let json =
                format!(r#"[{{"id": "x", "name": "x", "cost_type": "FIX", "cost_value": {bad}}}]"#);
            assert!(parse_taxonomy(json.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_error_message_lists_the_problems() {
        let error = parse_taxonomy(br#"[{"name": "x"}, {"id": 1}]"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "taxonomy rejected, 2 problems: [0].id: is required; [1].name: is required"
        );
        let many: Vec<String> = (0..25).map(|_| "{}".to_owned()).collect();
        let error = parse_taxonomy(format!("[{}]", many.join(",")).as_bytes()).unwrap_err();
        assert_eq!(error.issues.len(), 50);
        assert!(error.to_string().ends_with("; and 30 more"));
    }

    fn fix(value: f64) -> Cost {
        Cost {
            cost_type: CostType::Fix,
            value,
            currency: Some(Currency::Usd),
        }
    }

    #[test]
    fn the_segment_cost_applies_without_a_default() {
        assert_eq!(effective_cost(None, Some(fix(2.0))), Some(fix(2.0)));
        assert_eq!(effective_cost(None, Some(fix(0.0))), Some(fix(0.0)));
        assert_eq!(effective_cost(None, None), None);
    }

    #[test]
    fn with_a_default_only_a_zero_segment_cost_applies() {
        let default = Some(fix(1.5));
        assert_eq!(
            effective_cost(default, Some(fix(0.0))),
            Some(fix(0.0)),
            "made free"
        );
        assert_eq!(
            effective_cost(default, Some(fix(9.0))),
            default,
            "the default wins"
        );
        assert_eq!(effective_cost(default, None), default);
        let free_rate = Cost {
            cost_type: CostType::Rate,
            value: 0.0,
            currency: None,
        };
        assert_eq!(effective_cost(default, Some(free_rate)), Some(free_rate));
    }
}
