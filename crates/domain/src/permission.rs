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
