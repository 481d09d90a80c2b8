//! Identifiers, each a type of its own so a folder id is never passed where a provider id belongs.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn random() -> Self {
                $name(Uuid::new_v4())
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            /// Accepts any case; UUIDs compare case-insensitively.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// A data provider account (a tenant).
    ProviderId
);
uuid_id!(
    /// A `segmentProviderId`: one folder of segments and profiles owned by a provider.
    FolderId
);
uuid_id!(
    /// An OAuth2 client (`client_id`).
    ClientId
);

/// The platform-assigned integer id of a segment, unique across the deployment.
///
/// Profiles store this number rather than the provider's string id, so a membership is 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentNum(pub u32);

impl fmt::Display for SegmentNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest accepted `segmentId`, in characters.
pub const SEGMENT_KEY_MAX_CHARS: usize = 100;

/// A provider-defined segment id (`segmentId`): 1..=100 characters, case-sensitive.
///
/// Whitespace, control characters, `,` and `/` are refused: segment ids travel in URL paths
/// and in comma-separated batch-file columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey(String);

impl SegmentKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        let chars = raw.chars().count();
        if chars > SEGMENT_KEY_MAX_CHARS {
            return Err(format!(
                "is {chars} characters long, the limit is {SEGMENT_KEY_MAX_CHARS}"
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == ',' || *c == '/')
        {
            return Err(format!(
                "contains {bad:?}; whitespace, control characters, ',' and '/' are not allowed"
            ));
        }
        Ok(SegmentKey(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for SegmentKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `SegmentKey` be searched with a plain `&str` (same hash and equality).
impl std::borrow::Borrow<str> for SegmentKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of user identifier a folder's profiles are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdType {
    /// The platform's own cookie id.
    Cookie,
    /// A mobile advertising id (IDFA / GAID), a UUID.
    Maid,
    /// A publisher-provided id.
    Ppid,
    /// One extended-id vendor's id (e.g. `id5`, `uid2`); one vendor per folder.
    ExtendedId { vendor: String },
    /// An IPv4 or IPv6 address.
    Ip,
}

impl IdType {
    /// Stable name used in configuration, the admin API and storage.
    pub fn name(&self) -> &str {
        match self {
            IdType::Cookie => "cookie",
            IdType::Maid => "maid",
            IdType::Ppid => "ppid",
            IdType::ExtendedId { .. } => "extended_id",
            IdType::Ip => "ip",
        }
    }

    /// Builds an id type from its stable name and, for `extended_id`, the vendor.
    pub fn from_parts(name: &str, vendor: Option<&str>) -> Result<Self, String> {
        match (name, vendor) {
            ("cookie", None) => Ok(IdType::Cookie),
            ("maid", None) => Ok(IdType::Maid),
            ("ppid", None) => Ok(IdType::Ppid),
            ("ip", None) => Ok(IdType::Ip),
            ("extended_id", Some(vendor)) => {
                let vendor = vendor.trim();
                if vendor.is_empty()
                    || vendor.len() > 64
                    || !vendor
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                {
                    return Err(
                        "extended id vendor must be 1..=64 characters of [A-Za-z0-9._-]".into(),
                    );
                }
                Ok(IdType::ExtendedId {
                    vendor: vendor.to_owned(),
                })
            }
            ("extended_id", None) => Err("id type extended_id needs a vendor".into()),
            (other, Some(_)) if other != "extended_id" => {
                Err(format!("id type {other} takes no vendor"))
            }
            (other, _) => Err(format!(
                "unknown id type {other:?}; expected cookie, maid, ppid, extended_id or ip"
            )),
        }
    }

    pub fn vendor(&self) -> Option<&str> {
        match self {
            IdType::ExtendedId { vendor } => Some(vendor),
            _ => None,
        }
    }
}

/// Longest accepted profile id, in bytes.
pub const PROFILE_ID_MAX_BYTES: usize = 512;

/// A user identifier within one folder, validated and canonicalised for the folder's [`IdType`].
///
/// Ids are case-sensitive UTF-8, except where the id type has a canonical spelling:
/// mobile advertising ids are keyed by `m_md5:<hex>` (see [`canonical_mobile_id`]) and IP
/// addresses by their canonical text form (RFC 5952 for IPv6), so two spellings of one device
/// meet in one profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileId(String);

impl ProfileId {
    pub fn parse(raw: &str, id_type: &IdType) -> Result<Self, String> {
        canonical_profile_id(raw, id_type).map(|id| ProfileId(id.into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a profile id for `id_type` and returns its canonical spelling, borrowing `raw`
/// when it already is canonical (the common case: no allocation on the hot path).
pub fn canonical_profile_id<'a>(raw: &'a str, id_type: &IdType) -> Result<Cow<'a, str>, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.len() > PROFILE_ID_MAX_BYTES {
        return Err(format!(
            "is {} bytes long, the limit is {PROFILE_ID_MAX_BYTES}",
            raw.len()
        ));
    }
    // Printable ASCII (the usual id) is checked 8 bytes at a time; anything else is decoded to
    // find the control characters beyond ASCII (U+0080 to U+009F).
    if !printable_ascii(raw.as_bytes()) && raw.chars().any(|c| c.is_control()) {
        return Err("contains a control character".into());
    }
    match id_type {
        IdType::Cookie | IdType::Ppid | IdType::ExtendedId { .. } => Ok(Cow::Borrowed(raw)),
        IdType::Maid => canonical_mobile_id(raw).map_err(|why| {
            format!(
                "is not a mobile advertising id ({why}); send the IDFA/GAID as a hyphenated \
                     UUID such as 6d92078a-8246-4ba4-ae5b-76104861e7dc, as m_raw:<uuid> or as \
                     m_md5:<32 hex characters>"
            )
        }),
        IdType::Ip => parse_ip(raw).map(|ip| {
            let canonical = ip.to_string();
            if canonical == raw {
                Cow::Borrowed(raw)
            } else {
                Cow::Owned(canonical)
            }
        }),
    }
}

/// Whether every byte is printable ASCII (0x20 to 0x7e), tested a word at a time: a byte fails
/// when its top bit is set, when it is below 0x20, or when it is 0x7f. The two SWAR tests
/// ("has a byte less than n", "has a zero byte") are exact as a whole-word answer for words
/// without top bits, and words with a top bit fail anyway.
fn printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let failing = |word: u64| {
        let below_space = word.wrapping_sub(ONES * 0x20) & !word;
        let delete = word ^ (ONES * 0x7f);
        let is_delete = delete.wrapping_sub(ONES) & !delete;
        (word | below_space | is_delete) & TOPS
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut failed = 0;
    for chunk in &mut chunks {
        failed |= failing(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    // The tail padded with spaces, which pass.
    let mut tail = [b' '; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    failed |= failing(u64::from_le_bytes(tail));
    failed == 0
}

/// Prefix of the canonical mobile profile key.
pub const MOBILE_KEY_PREFIX: &str = "m_md5:";

/// The canonical profile key of a mobile advertising id: `m_md5:` + the lowercase hex MD5 of
/// the id as a lowercase hyphenated UUID (36 characters).
///
/// A raw id (a UUID in any letter case, optionally prefixed `m_raw:`) is lowercased and hashed;
/// an `m_md5:<32 hex>` digest is only lowercased. So the raw id of a device and the MD5 a data
/// provider computed from it meet in one profile, whichever way they arrive (API or batch file).
/// The all-zero id of a device that opted out of tracking is refused: it would merge every such
/// device into one profile.
pub fn canonical_mobile_id(raw: &str) -> Result<Cow<'_, str>, String> {
    const OPTED_OUT_MD5_HEX: &str = "9f89c84a559f573636a47ff8daed0d33";
    let prefixed = |prefix: &str| {
        raw.get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .map(|_| &raw[prefix.len()..])
    };
    if let Some(hex) = prefixed(MOBILE_KEY_PREFIX) {
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("an m_md5 digest must be 32 hex characters".into());
        }
        if hex.eq_ignore_ascii_case(OPTED_OUT_MD5_HEX) {
            return Err("the all-zero advertising id marks a device that opted out".into());
        }
        if raw.starts_with(MOBILE_KEY_PREFIX) && !hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Ok(Cow::Borrowed(raw));
        }
        return Ok(Cow::Owned(format!(
            "{MOBILE_KEY_PREFIX}{}",
            hex.to_ascii_lowercase()
        )));
    }
    let uuid_text = prefixed("m_raw:").unwrap_or(raw);
    let uuid = match Uuid::try_parse(uuid_text) {
        Ok(uuid) if uuid_text.len() == 36 => uuid,
        _ => return Err("not a hyphenated UUID or an m_md5 digest".into()),
    };
    if uuid.is_nil() {
        return Err("the all-zero advertising id marks a device that opted out".into());
    }
    use md5::Digest;
    let digest = md5::Md5::digest(uuid.hyphenated().to_string().as_bytes());
    let mut key = String::with_capacity(MOBILE_KEY_PREFIX.len() + 32);
    key.push_str(MOBILE_KEY_PREFIX);
    for byte in digest.iter() {
        key.push_str(&format!("{byte:02x}"));
    }
    Ok(Cow::Owned(key))
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Strict IP parsing: full dotted-quad IPv4 or IPv6; no IPv4-mapped/-compatible IPv6, no
/// prefixes, zones or ports.
fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    let ip = IpAddr::from_str(raw).map_err(|_| {
        "is not a well-formed IPv4 or IPv6 address (truncated addresses, prefixes and ports are refused)"
            .to_string()
    })?;
    if let IpAddr::V6(v6) = ip {
        let segments = v6.segments();
        let embeds_v4 = segments[..5].iter().all(|s| *s == 0)
            && (segments[5] == 0xffff || (segments[5] == 0 && raw.contains('.')));
        if embeds_v4 {
            return Err(
                "is an IPv4 address embedded in IPv6 (e.g. ::ffff:202.124.87.3); send the IPv4 address itself"
                    .into(),
            );
        }
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_at_a_time_printable_check_agrees_with_the_byte_test_at_every_position() {
        let printable = |bytes: &[u8]| bytes.iter().all(|byte| (0x20..0x7f).contains(byte));
        for len in 1..=19 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut id = vec![b'a'; len];
                    id[at] = byte;
                    // A failing byte after another one must not hide it, nor a passing one
                    // after a failing one pass the word.
                    if at + 1 < len {
                        id[at + 1] = byte.wrapping_add(1);
                    }
                    assert_eq!(printable_ascii(&id), printable(&id), "{id:?}");
                }
            }
        }
        assert!(printable_ascii(b""));
    }

    #[test]
    fn profile_ids_with_control_characters_are_refused_ascii_or_not() {
        let cookie = |s: &'static str| canonical_profile_id(s, &IdType::Cookie);
        for bad in ["a\tb", "a\u{7f}", "\u{0}x", "caf\u{85}", "x\u{9f}y"] {
            assert_eq!(
                cookie(bad).unwrap_err(),
                "contains a control character",
                "{bad:?}"
            );
        }
        for good in ["AbC-123_x.y", "café", "ид-42", "~!@#$%^&*()"] {
            assert_eq!(cookie(good).unwrap(), good);
        }
    }

    #[test]
    fn ip_folders_accept_only_well_formed_addresses() {
        let ok = |s: &str| ProfileId::parse(s, &IdType::Ip).map(|p| p.0);
        assert_eq!(ok("202.124.87.3").unwrap(), "202.124.87.3");
        assert_eq!(ok("2001:DB8:0:0::1").unwrap(), "2001:db8::1");
        assert!(ok("::ffff:202.124.87.3").is_err(), "ipv4-mapped ipv6");
        assert!(ok("::202.124.87.3").is_err(), "ipv4-compatible ipv6");
        assert!(ok("202.124.87").is_err(), "truncated");
        assert!(ok("202.124.87.3/24").is_err(), "prefix");
        assert!(ok("202.124.87.300").is_err());
        assert!(ok("2001:db8::1:").is_err());
        assert!(ok("fe80::1%eth0").is_err(), "zone");
    }

    #[test]
    fn maids_are_keyed_by_the_md5_of_the_lowercase_uuid() {
        // The batch file format's example device (see segmart-ingest's crate documentation).
        let canonical = "m_md5:0c2074fb86930fc4a2a7bb791240a7d3";
        for spelling in [
            "6D92078A-8246-4BA4-AE5B-76104861E7DC",
            "6d92078a-8246-4ba4-ae5b-76104861e7dc",
            "m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC",
            "M_RAW:6d92078a-8246-4ba4-ae5b-76104861e7dc",
            "m_md5:0C2074FB86930FC4A2A7BB791240A7D3",
            canonical,
        ] {
            let id = ProfileId::parse(spelling, &IdType::Maid).unwrap();
            assert_eq!(id.as_str(), canonical, "{spelling}");
        }
        assert!(matches!(
            canonical_profile_id(canonical, &IdType::Maid),
            Ok(Cow::Borrowed(_))
        ));
        assert!(ProfileId::parse("6d92078a82464ba4ae5b76104861e7dc", &IdType::Maid).is_err());
        assert!(ProfileId::parse("not-a-maid", &IdType::Maid).is_err());
        assert!(ProfileId::parse("m_md5:0c2074fb", &IdType::Maid).is_err());
        assert!(
            ProfileId::parse("m_sha1:0c2074fb86930fc4a2a7bb791240a7d3", &IdType::Maid).is_err()
        );
        assert!(ProfileId::parse("00000000-0000-0000-0000-000000000000", &IdType::Maid).is_err());
        assert!(ProfileId::parse("m_md5:9f89c84a559f573636a47ff8daed0d33", &IdType::Maid).is_err());
    }

    #[test]
    fn cookie_ids_are_case_sensitive() {
        let a = ProfileId::parse("AbC", &IdType::Cookie).unwrap();
        let b = ProfileId::parse("abc", &IdType::Cookie).unwrap();
        assert_ne!(a, b);
        assert!(ProfileId::parse("", &IdType::Cookie).is_err());
        assert!(ProfileId::parse("a\nb", &IdType::Cookie).is_err());
        assert!(ProfileId::parse(&"x".repeat(513), &IdType::Cookie).is_err());
    }

    #[test]
    fn segment_keys_follow_the_limits() {
        assert!(SegmentKey::parse("sport-fans_2024.v1").is_ok());
        assert!(SegmentKey::parse(&"é".repeat(100)).is_ok());
        assert!(SegmentKey::parse(&"é".repeat(101)).is_err());
        assert!(SegmentKey::parse("a,b").is_err());
        assert!(SegmentKey::parse("a b").is_err());
        assert!(SegmentKey::parse("a/b").is_err());
        assert!(SegmentKey::parse("").is_err());
    }

    #[test]
    fn id_types_round_trip_by_name() {
        for t in [IdType::Cookie, IdType::Maid, IdType::Ppid, IdType::Ip] {
            assert_eq!(IdType::from_parts(t.name(), None).unwrap(), t);
        }
        let ext = IdType::from_parts("extended_id", Some("id5")).unwrap();
        assert_eq!(ext.vendor(), Some("id5"));
        assert!(IdType::from_parts("extended_id", None).is_err());
        assert!(IdType::from_parts("cookie", Some("x")).is_err());
        assert!(IdType::from_parts("email", None).is_err());
    }
}
