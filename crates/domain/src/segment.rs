//! Segments: fields, defaults and limits of the segment API, validated here once.

use crate::clock::Timestamp;
use crate::error::FieldError;
use crate::ids::{FolderId, SegmentKey, SegmentNum};
use crate::pricing::Cost;

/// Default link TTL in minutes (30 days).
pub const DEFAULT_TTL_MINUTES: u32 = 43_200;
/// Largest accepted TTL in minutes.
pub const MAX_TTL_MINUTES: u32 = 2_147_483_647;
/// Longest segment name, in characters.
pub const NAME_MAX_CHARS: usize = 255;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 1000;

/// A stored segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Platform-assigned integer id; what profiles store.
    pub num: SegmentNum,
    /// The folder (`segmentProviderId`) that owns the segment.
    pub folder: FolderId,
    /// The provider's own id (`segmentId`).
    pub key: SegmentKey,
    pub spec: SegmentSpec,
    /// The segment's own price from a taxonomy file (before the provider default applies).
    pub pricing: Option<Cost>,
    /// Advertisers a taxonomy file restricted the segment to; `None` means every advertiser.
    pub advertisers: Option<Vec<String>>,
    /// When the segment was first created (`creationDate`).
    pub created_at: Timestamp,
    /// When the segment was last changed.
    pub updated_at: Timestamp,
}

/// The writable fields of a segment, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentSpec {
    pub name: String,
    pub description: String,
    /// CPM price in the provider's agreed currency.
    pub price: f64,
    /// Default link TTL in minutes, 1..=2147483647.
    pub ttl_minutes: u32,
    /// Inactive segments are kept but never used for targeting.
    pub active: bool,
    /// Non-selectable segments only structure the hierarchy; profiles cannot join them.
    pub selectable: bool,
    /// Parent in the hierarchy, in the same folder.
    pub parent: Option<SegmentKey>,
}

/// Segment fields as a client sent them, before validation; `None` means "not sent".
#[derive(Debug, Clone, Default)]
pub struct SegmentDraft {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<f64>,
    pub ttl: Option<i64>,
    pub active: Option<bool>,
    pub selectable: Option<bool>,
    pub parent: Option<String>,
}

impl SegmentDraft {
    /// Validates every field and applies the defaults of the brief.
    /// Reports the first bad field by its API name.
    pub fn validate(self) -> Result<SegmentSpec, FieldError> {
        let name = self
            .name
            .ok_or_else(|| FieldError::new("name", "is required"))?;
        if name.trim().is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        let name_chars = name.chars().count();
        if name_chars > NAME_MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!("is {name_chars} characters long, the limit is {NAME_MAX_CHARS}"),
            ));
        }
        let description = self.description.unwrap_or_default();
        let description_chars = description.chars().count();
        if description_chars > DESCRIPTION_MAX_CHARS {
            return Err(FieldError::new(
                "description",
                format!(
                    "is {description_chars} characters long, the limit is {DESCRIPTION_MAX_CHARS}"
                ),
            ));
        }
        let price = self.price.unwrap_or(0.0);
        if !price.is_finite() || price < 0.0 {
            return Err(FieldError::new(
                "price",
                "must be a non-negative number (CPM)",
            ));
        }
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL_MINUTES as i64);
        if !(1..=MAX_TTL_MINUTES as i64).contains(&ttl) {
            return Err(FieldError::new(
                "ttl",
                format!("is {ttl}; it must be between 1 and {MAX_TTL_MINUTES} minutes"),
            ));
        }
        let parent = match self.parent {
            None => None,
            Some(raw) => Some(
                SegmentKey::parse(&raw).map_err(|why| FieldError::new("parentSegmentId", why))?,
            ),
        };
        Ok(SegmentSpec {
            name,
            description,
            price,
            ttl_minutes: ttl as u32,
            active: self.active.unwrap_or(true),
            selectable: self.selectable.unwrap_or(true),
            parent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> SegmentDraft {
        SegmentDraft {
            name: Some("Segment example".into()),
            ..SegmentDraft::default()
        }
    }

    #[test]
    fn defaults_follow_the_brief() {
        let spec = draft().validate().unwrap();
        assert_eq!(spec.ttl_minutes, 43_200);
        assert!(spec.active);
        assert!(spec.selectable);
        assert_eq!(spec.price, 0.0);
        assert_eq!(spec.description, "");
    }

    #[test]
    fn each_limit_names_its_field() {
        let field = |d: SegmentDraft| d.validate().unwrap_err().field;
        assert_eq!(field(SegmentDraft::default()), "name");
        assert_eq!(
            field(SegmentDraft {
                ttl: Some(0),
                ..draft()
            }),
            "ttl"
        );
        assert_eq!(
            field(SegmentDraft {
                ttl: Some(2_147_483_648),
                ..draft()
            }),
            "ttl"
        );
        assert_eq!(
            field(SegmentDraft {
                price: Some(-1.0),
                ..draft()
            }),
            "price"
        );
        assert_eq!(
            field(SegmentDraft {
                name: Some("n".repeat(256)),
                ..draft()
            }),
            "name"
        );
        assert_eq!(
            field(SegmentDraft {
                description: Some("d".repeat(1001)),
                ..draft()
            }),
            "description"
        );
        assert_eq!(
            field(SegmentDraft {
                parent: Some("a b".into()),
                ..draft()
            }),
            "parentSegmentId"
        );
        assert!(
            SegmentDraft {
                ttl: Some(2_147_483_647),
                ..draft()
            }
            .validate()
            .is_ok()
        );
        assert!(
            SegmentDraft {
                ttl: Some(1),
                ..draft()
            }
            .validate()
            .is_ok()
        );
    }
}
