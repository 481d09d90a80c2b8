//! Profiles: the operations of the profile API and how they resolve into store writes.
//!
//! A profile is one user id in one folder with a set of segment links, each with its own
//! expiry. Every operation is expressed as *blind writes* (clear all, remove these, add these
//! with these expiries), applied in that order, so replaying a logged operation over a state that
//! already contains it changes nothing.

use std::collections::HashSet;

use crate::clock::Timestamp;
use crate::ids::{SegmentKey, SegmentNum};

/// Profiles without an update for this long are deleted (14 days).
pub const DEFAULT_PROFILE_EXPIRY_SECS: i64 = 14 * 24 * 3600;
/// Largest accepted profile batch body, in bytes (1 MB).
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// Most segment ids one item may name across all its lists.
pub const MAX_SEGMENTS_PER_ITEM: usize = 10_000;

/// One profile change as a client asked for it, segment ids still the provider's strings
/// (`K` is [`SegmentKey`] or a string borrowed from the request body).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUpdate<K = SegmentKey> {
    pub remove_all: bool,
    pub set: Option<Vec<K>>,
    pub add: Vec<K>,
    pub remove: Vec<K>,
}

impl<K> Default for ProfileUpdate<K> {
    fn default() -> Self {
        ProfileUpdate {
            remove_all: false,
            set: None,
            add: Vec::new(),
            remove: Vec::new(),
        }
    }
}

/// What the resolver needs to know about a segment referenced by a profile operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentRef {
    pub num: SegmentNum,
    pub ttl_minutes: u32,
    pub selectable: bool,
}

/// A profile change ready for the store: segment numbers and absolute expiries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUpdate {
    /// Drop every existing link first (`removeAllSegments`, `segmentIdsToSet`, PUT).
    pub clear: bool,
    /// Links to drop.
    pub remove: Vec<SegmentNum>,
    /// Links to (re)create, each with its absolute expiry; re-adding refreshes the expiry.
    pub add: Vec<(SegmentNum, Timestamp)>,
}

/// Why one item of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRejection {
    /// Lowercase human reason, e.g. `unknown segment ids: a, b`.
    pub reason: String,
    /// Segment ids the folder does not have, for the client to fix.
    pub unknown_segments: Vec<String>,
}

impl<K: AsRef<str>> ProfileUpdate<K> {
    /// A PUT of the whole segment list.
    pub fn replace(segments: Vec<K>) -> Self {
        ProfileUpdate {
            set: Some(segments),
            ..ProfileUpdate::default()
        }
    }

    /// True when the item asks for at least one operation.
    pub fn has_operation(&self) -> bool {
        self.remove_all || self.set.is_some() || !self.add.is_empty() || !self.remove.is_empty()
    }

    /// Resolves segment ids through `lookup` and computes expiries from `now`.
    ///
    /// The item is refused whole (never half-applied) when it names a segment the folder does
    /// not have, a non-selectable hierarchy node, or the same segment in both add and remove.
    pub fn resolve(
        &self,
        now: Timestamp,
        lookup: impl FnMut(&K) -> Option<SegmentRef>,
    ) -> Result<ResolvedUpdate, ItemRejection> {
        resolve_lists(
            self.remove_all,
            self.set.as_deref(),
            &self.add,
            &self.remove,
            now,
            lookup,
        )
    }
}

/// [`ProfileUpdate::resolve`] over borrowed lists (the batch parsers keep every item's ids in
/// one shared vector). Allocates only the resolved lists, and more only to describe a refusal.
pub fn resolve_lists<K: AsRef<str>>(
    remove_all: bool,
    set: Option<&[K]>,
    add: &[K],
    remove: &[K],
    now: Timestamp,
    lookup: impl FnMut(&K) -> Option<SegmentRef>,
) -> Result<ResolvedUpdate, ItemRejection> {
    let mut resolved = ResolvedUpdate::default();
    resolve_lists_into(remove_all, set, add, remove, now, lookup, &mut resolved)?;
    Ok(resolved)
}

/// [`resolve_lists`] into `resolved`, whose lists are cleared first and reused, so that a
/// batch of many items allocates nothing per item. On a refusal `resolved` holds no meaning.
pub fn resolve_lists_into<K: AsRef<str>>(
    remove_all: bool,
    set: Option<&[K]>,
    add: &[K],
    remove: &[K],
    now: Timestamp,
    mut lookup: impl FnMut(&K) -> Option<SegmentRef>,
    resolved: &mut ResolvedUpdate,
) -> Result<(), ItemRejection> {
    resolved.clear = remove_all || set.is_some();
    resolved.remove.clear();
    resolved.add.clear();
    let mut refused = false;
    for key in set.unwrap_or(&[]).iter().chain(add) {
        match lookup(key) {
            Some(seg) if seg.selectable => resolved
                .add
                .push((seg.num, now.plus_secs(seg.ttl_minutes as i64 * 60))),
            _ => refused = true,
        }
    }
    for key in remove {
        match lookup(key) {
            Some(seg) => resolved.remove.push(seg.num),
            None => refused = true,
        }
    }
    if refused {
        return Err(refusal(set, add, remove, &mut lookup));
    }
    // Segments both added and removed. Items name a handful, so a nested scan beats hashing.
    let added = &resolved.add[resolved.add.len() - add.len()..];
    let conflict = |num: &SegmentNum| resolved.remove.contains(num);
    let any_conflict = if resolved.remove.is_empty() {
        false
    } else if added.len() * resolved.remove.len() <= 256 {
        added.iter().any(|(num, _)| conflict(num))
    } else {
        let removed: HashSet<SegmentNum> = resolved.remove.iter().copied().collect();
        added.iter().any(|(num, _)| removed.contains(num))
    };
    if any_conflict {
        let removed: HashSet<SegmentNum> = resolved.remove.iter().copied().collect();
        let mut conflicting: Vec<&str> = add
            .iter()
            .zip(added)
            .filter(|(_, (num, _))| removed.contains(num))
            .map(|(key, _)| key.as_ref())
            .collect();
        conflicting.sort();
        conflicting.dedup();
        return Err(ItemRejection {
            reason: format!(
                "segments are both in segmentIdsToAdd and segmentIdsToRemove: {}",
                conflicting.join(", ")
            ),
            unknown_segments: Vec::new(),
        });
    }
    Ok(())
}

/// Why an item that names unknown or non-selectable segments is refused: unknown ids first.
#[cold]
fn refusal<K: AsRef<str>>(
    set: Option<&[K]>,
    add: &[K],
    remove: &[K],
    lookup: &mut impl FnMut(&K) -> Option<SegmentRef>,
) -> ItemRejection {
    let mut unknown = Vec::new();
    let mut not_selectable = Vec::new();
    for key in set.unwrap_or(&[]).iter().chain(add) {
        match lookup(key) {
            Some(seg) if !seg.selectable => not_selectable.push(key.as_ref().to_owned()),
            Some(_) => {}
            None => unknown.push(key.as_ref().to_owned()),
        }
    }
    for key in remove {
        if lookup(key).is_none() {
            unknown.push(key.as_ref().to_owned());
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        unknown.dedup();
        return ItemRejection {
            reason: format!("unknown segment ids: {}", unknown.join(", ")),
            unknown_segments: unknown,
        };
    }
    not_selectable.sort();
    not_selectable.dedup();
    ItemRejection {
        reason: format!(
            "segments are not selectable (hierarchy nodes only): {}",
            not_selectable.join(", ")
        ),
        unknown_segments: Vec::new(),
    }
}

/// One live link of a profile, as reads return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSegment {
    pub num: SegmentNum,
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SegmentKey {
        SegmentKey::parse(s).unwrap()
    }

    fn catalog(k: &SegmentKey) -> Option<SegmentRef> {
        match k.as_str() {
            "a" => Some(SegmentRef {
                num: SegmentNum(1),
                ttl_minutes: 1,
                selectable: true,
            }),
            "b" => Some(SegmentRef {
                num: SegmentNum(2),
                ttl_minutes: 60,
                selectable: true,
            }),
            "parent" => Some(SegmentRef {
                num: SegmentNum(3),
                ttl_minutes: 60,
                selectable: false,
            }),
            _ => None,
        }
    }

    #[test]
    fn add_uses_each_segment_ttl() {
        let now = Timestamp::from_secs(1_000);
        let update: ProfileUpdate = ProfileUpdate {
            add: vec![key("a"), key("b")],
            ..Default::default()
        };
        let resolved = update.resolve(now, catalog).unwrap();
        assert!(!resolved.clear);
        assert_eq!(
            resolved.add,
            vec![
                (SegmentNum(1), Timestamp::from_secs(1_060)),
                (SegmentNum(2), Timestamp::from_secs(4_600))
            ]
        );
    }

    #[test]
    fn set_and_remove_all_clear_first() {
        let now = Timestamp::from_secs(0);
        let set = ProfileUpdate::replace(vec![key("a")])
            .resolve(now, catalog)
            .unwrap();
        assert!(set.clear);
        assert_eq!(set.add.len(), 1);
        let wipe: ProfileUpdate = ProfileUpdate {
            remove_all: true,
            ..Default::default()
        };
        let wipe = wipe.resolve(now, catalog).unwrap();
        assert!(wipe.clear && wipe.add.is_empty());
    }

    #[test]
    fn unknown_segments_refuse_the_whole_item() {
        let update = ProfileUpdate {
            add: vec![key("a"), key("zzz"), key("yyy")],
            ..Default::default()
        };
        let err = update
            .resolve(Timestamp::from_secs(0), catalog)
            .unwrap_err();
        assert_eq!(
            err.unknown_segments,
            vec!["yyy".to_string(), "zzz".to_string()]
        );
        assert!(err.reason.contains("unknown segment ids"));
    }

    #[test]
    fn hierarchy_nodes_cannot_be_joined_but_can_be_removed() {
        let join = ProfileUpdate {
            add: vec![key("parent")],
            ..Default::default()
        };
        assert!(join.resolve(Timestamp::from_secs(0), catalog).is_err());
        let leave = ProfileUpdate {
            remove: vec![key("parent")],
            ..Default::default()
        };
        assert!(leave.resolve(Timestamp::from_secs(0), catalog).is_ok());
    }

    #[test]
    fn add_and_remove_of_one_segment_is_refused() {
        let update = ProfileUpdate {
            add: vec![key("a")],
            remove: vec![key("a")],
            ..Default::default()
        };
        assert!(update.resolve(Timestamp::from_secs(0), catalog).is_err());
    }

    #[test]
    fn an_item_needs_an_operation() {
        assert!(!ProfileUpdate::<SegmentKey>::default().has_operation());
        assert!(
            ProfileUpdate::<SegmentKey> {
                remove_all: true,
                ..Default::default()
            }
            .has_operation()
        );
        assert!(ProfileUpdate::<SegmentKey>::replace(vec![]).has_operation());
    }
}
