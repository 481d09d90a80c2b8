//! The four OAuth permissions of the sync API and sets of them.

use std::fmt;

/// One permission a client may hold and a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `dmp_profile_read`: read profiles.
    ProfileRead,
    /// `dmp_profile`: write profiles.
    ProfileWrite,
    /// `dmp_segment_read`: read segments.
    SegmentRead,
    /// `dmp_segment`: write segments.
    SegmentWrite,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::ProfileRead,
        Permission::ProfileWrite,
        Permission::SegmentRead,
        Permission::SegmentWrite,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::ProfileRead => "dmp_profile_read",
            Permission::ProfileWrite => "dmp_profile",
            Permission::SegmentRead => "dmp_segment_read",
            Permission::SegmentWrite => "dmp_segment",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Permission::ALL.into_iter().find(|p| p.as_str() == raw)
    }

    const fn bit(self) -> u8 {
        match self {
            Permission::ProfileRead => 1,
            Permission::ProfileWrite => 2,
            Permission::SegmentRead => 4,
            Permission::SegmentWrite => 8,
        }
    }
}

/// A set of permissions, stored as four bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet(u8);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);
    pub const ALL: PermissionSet = PermissionSet(15);

    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits <= 15).then_some(PermissionSet(bits))
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }
    pub const fn with(self, p: Permission) -> Self {
        PermissionSet(self.0 | p.bit())
    }
    pub const fn is_subset_of(self, other: PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// Parses a comma-separated list such as `dmp_profile_read,dmp_profile`.
    pub fn parse_list(raw: &str) -> Result<Self, String> {
        let mut set = PermissionSet::EMPTY;
        for part in raw.split(',') {
            let part = part.trim();
            match Permission::parse(part) {
                Some(p) => set = set.with(p),
                None => {
                    return Err(format!(
                        "unknown permission {part:?}; expected dmp_profile_read, dmp_profile, dmp_segment_read or dmp_segment"
                    ));
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Display for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Permission::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print_in_canonical_order() {
        let set = PermissionSet::parse_list("dmp_segment,dmp_profile_read").unwrap();
        assert!(set.contains(Permission::SegmentWrite));
        assert!(!set.contains(Permission::ProfileWrite));
        assert_eq!(set.to_string(), "dmp_profile_read,dmp_segment");
        assert!(PermissionSet::parse_list("dmp_profile,admin").is_err());
        assert!(set.is_subset_of(PermissionSet::ALL));
        assert!(!PermissionSet::ALL.is_subset_of(set));
    }
}

/// What a buyer's OAuth client may do. Separate from provider [`Permission`]s: a buyer token
/// never reaches a provider API, and a provider token never reaches a buyer API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuyerPermission {
    /// Read the external segments the buyer may use.
    SegmentsRead,
    /// Create, stop and restart campaigns (and read them).
    Campaigns,
    /// Activate access keys.
    Activate,
    /// Read the buyer's own usage and spend.
    UsageRead,
}

impl BuyerPermission {
    pub const ALL: [BuyerPermission; 4] = [
        BuyerPermission::SegmentsRead,
        BuyerPermission::Campaigns,
        BuyerPermission::Activate,
        BuyerPermission::UsageRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuyerPermission::SegmentsRead => "buyer_segments_read",
            BuyerPermission::Campaigns => "buyer_campaigns",
            BuyerPermission::Activate => "buyer_activate",
            BuyerPermission::UsageRead => "buyer_usage_read",
        }
    }

    fn bit(self) -> u8 {
        match self {
            BuyerPermission::SegmentsRead => 1,
            BuyerPermission::Campaigns => 2,
            BuyerPermission::Activate => 4,
            BuyerPermission::UsageRead => 8,
        }
    }
}

/// A set of [`BuyerPermission`]s, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuyerPermissions(u8);

impl BuyerPermissions {
    pub const ALL: BuyerPermissions = BuyerPermissions(15);

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits != 0 && bits <= 15).then_some(BuyerPermissions(bits))
    }

    pub fn contains(self, p: BuyerPermission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_subset_of(self, other: BuyerPermissions) -> bool {
        self.0 & !other.0 == 0
    }

    /// Parses `buyer_segments_read,buyer_campaigns,…` (at least one, no unknown names).
    pub fn parse_list(list: &str) -> Result<Self, String> {
        let mut bits = 0;
        for name in list.split(',').map(str::trim) {
            let p = BuyerPermission::ALL
                .into_iter()
                .find(|p| p.as_str() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown buyer permission {name:?}; known: {}",
                        BuyerPermissions::ALL
                    )
                })?;
            bits |= p.bit();
        }
        BuyerPermissions::from_bits(bits).ok_or_else(|| "no permission named".to_string())
    }
}

impl std::fmt::Display for BuyerPermissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = BuyerPermission::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .map(BuyerPermission::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod buyer_tests {
    use super::*;

    #[test]
    fn buyer_permissions_parse_and_print() {
        let p = BuyerPermissions::parse_list("buyer_campaigns, buyer_activate").unwrap();
        assert!(p.contains(BuyerPermission::Campaigns));
        assert!(!p.contains(BuyerPermission::SegmentsRead));
        assert_eq!(p.to_string(), "buyer_campaigns,buyer_activate");
        assert!(p.is_subset_of(BuyerPermissions::ALL));
        assert!(BuyerPermissions::parse_list("dmp_profile").is_err());
        assert!(BuyerPermissions::parse_list("").is_err());
    }
}
