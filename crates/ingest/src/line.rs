//! One line of a data file: `DMP_USER_ID <TAB> DSP_USER_ID <TAB> SEGMENTS_TO_ADD <TAB> SEGMENTS_TO_REMOVE`.
//!
//! [`parse_line`] borrows everything from the line buffer: user ids are `&str` slices, segment
//! lists are validated once and then iterated in place, and a mobile id is a 16-byte digest held
//! inline. A line that parses allocates nothing; a line that does not yields a [`LineError`] with
//! a stable [`RejectReason`] and a human message.

use std::fmt;

use md5::{Digest, Md5};
use memchr::{memchr, memchr_iter};
use segmart_domain::SegmentKey;
use segmart_domain::ids::{PROFILE_ID_MAX_BYTES, SEGMENT_KEY_MAX_CHARS};
use segmart_domain::profile::{MAX_SEGMENTS_PER_ITEM, ProfileUpdate};

/// Longest accepted desktop user id, in bytes (the profile API's limit).
pub const USER_ID_MAX_BYTES: usize = PROFILE_ID_MAX_BYTES;
/// Most segment ids one line may name across both lists (the profile API's per-item limit).
pub const MAX_SEGMENTS_PER_LINE: usize = MAX_SEGMENTS_PER_ITEM;

/// Prefix of a raw mobile advertising id (IDFA or GAID, a hyphenated UUID).
pub const MOBILE_RAW_PREFIX: &str = "m_raw";
/// Prefix of an MD5-hashed mobile advertising id (32 hex characters).
pub const MOBILE_MD5_PREFIX: &str = "m_md5";
/// Prefix of a SHA-1-hashed mobile id, which the format names and refuses.
pub const MOBILE_SHA1_PREFIX: &str = "m_sha1";

/// MD5 of `00000000-0000-0000-0000-000000000000`, the advertising id of a device whose user
/// opted out of tracking; it would merge every such device into one profile.
const OPTED_OUT_MD5: [u8; 16] = [
    0x9f, 0x89, 0xc8, 0x4a, 0x55, 0x9f, 0x57, 0x36, 0x36, 0xa4, 0x7f, 0xf8, 0xda, 0xed, 0x0d, 0x33,
];

/// A column of the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    DmpUserId,
    DspUserId,
    SegmentsToAdd,
    SegmentsToRemove,
}

impl Column {
    /// The column's name as the format spells it.
    pub fn name(self) -> &'static str {
        match self {
            Column::DmpUserId => "DMP_USER_ID",
            Column::DspUserId => "DSP_USER_ID",
            Column::SegmentsToAdd => "SEGMENTS_TO_ADD",
            Column::SegmentsToRemove => "SEGMENTS_TO_REMOVE",
        }
    }
}

/// Why a line was rejected. The names are stable: reports count rejections by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is longer than the reader's limit; only its start was kept.
    LineTooLong,
    /// Fewer than three tab-separated fields.
    MissingFields,
    /// More than four tab-separated fields.
    TooManyFields,
    /// Both DMP_USER_ID and DSP_USER_ID are empty.
    MissingUserId,
    /// A desktop user id that is too long or holds a control character.
    InvalidUserId,
    /// A user id with a `:` whose prefix is not a known mobile prefix.
    UnknownIdPrefix,
    /// A mobile id type the format names but segmart refuses (`m_sha1`).
    UnsupportedIdType,
    /// An `m_raw:` value that is not a UUID, or an `m_md5:` value that is not 32 hex characters.
    InvalidMobileId,
    /// A segment id that breaks the segment API's rules.
    InvalidSegmentId,
    /// More than [`MAX_SEGMENTS_PER_LINE`] segment ids on one line.
    TooManySegments,
    /// Neither list names a segment: the line would change nothing.
    NoSegments,
}

impl RejectReason {
    /// Every reason, in a fixed order; a report can keep one counter per entry.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::InvalidUtf8,
        RejectReason::LineTooLong,
        RejectReason::MissingFields,
        RejectReason::TooManyFields,
        RejectReason::MissingUserId,
        RejectReason::InvalidUserId,
        RejectReason::UnknownIdPrefix,
        RejectReason::UnsupportedIdType,
        RejectReason::InvalidMobileId,
        RejectReason::InvalidSegmentId,
        RejectReason::TooManySegments,
        RejectReason::NoSegments,
    ];

    /// Position in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name, for counters, JSON and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::MissingFields => "missing_fields",
            RejectReason::TooManyFields => "too_many_fields",
            RejectReason::MissingUserId => "missing_user_id",
            RejectReason::InvalidUserId => "invalid_user_id",
            RejectReason::UnknownIdPrefix => "unknown_id_prefix",
            RejectReason::UnsupportedIdType => "unsupported_id_type",
            RejectReason::InvalidMobileId => "invalid_mobile_id",
            RejectReason::InvalidSegmentId => "invalid_segment_id",
            RejectReason::TooManySegments => "too_many_segments",
            RejectReason::NoSegments => "no_segments",
        }
    }

    /// A short human description, for the legend of a report.
    pub fn describe(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "the line is not valid UTF-8",
            RejectReason::LineTooLong => "the line is longer than the limit",
            RejectReason::MissingFields => "fewer than three tab-separated fields",
            RejectReason::TooManyFields => "more than four tab-separated fields",
            RejectReason::MissingUserId => "both user ids are empty",
            RejectReason::InvalidUserId => "a user id is too long or holds a control character",
            RejectReason::UnknownIdPrefix => "a user id has an unknown prefix before ':'",
            RejectReason::UnsupportedIdType => "m_sha1 ids are not supported",
            RejectReason::InvalidMobileId => "a malformed m_raw or m_md5 id",
            RejectReason::InvalidSegmentId => "a segment id breaks the segment id rules",
            RejectReason::TooManySegments => "more segment ids than one line may name",
            RejectReason::NoSegments => "no segment to add or remove",
        }
    }

    /// Looks a reason up by its stable name.
    pub fn from_name(name: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why [`parse_line`] refused a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub reason: RejectReason,
    /// The column at fault, when there is one.
    pub column: Option<Column>,
    /// Lowercase human explanation, e.g. `unsupported id type m_sha1; …`.
    pub detail: String,
}

impl LineError {
    fn new(reason: RejectReason, column: Option<Column>, detail: impl Into<String>) -> Self {
        LineError {
            reason,
            column,
            detail: detail.into(),
        }
    }

    /// The line is longer than the reader's limit.
    pub fn line_too_long(length: u64, limit: usize) -> Self {
        LineError::new(
            RejectReason::LineTooLong,
            None,
            format!("line is {length} bytes long, the limit is {limit}"),
        )
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "{}: {}", column.name(), self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

impl std::error::Error for LineError {}

/// A rejected line, as a report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based; the header is line 1.
    pub line_number: u64,
    pub reason: RejectReason,
    /// The full human message, column included.
    pub message: String,
    /// The line without its line ending, invalid UTF-8 replaced by U+FFFD.
    pub line: String,
}

impl Rejection {
    pub fn new(line_number: u64, raw_line: &[u8], error: &LineError) -> Self {
        Rejection {
            line_number,
            reason: error.reason,
            message: error.to_string(),
            line: String::from_utf8_lossy(strip_line_ending(raw_line)).into_owned(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} ({})",
            self.line_number, self.message, self.reason
        )
    }
}

/// How a mobile id arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MobileOrigin {
    /// `m_raw:<uuid>`, hashed by segmart.
    Raw,
    /// `m_md5:<hex>`, hashed by the provider.
    Md5,
}

/// A mobile advertising id in canonical form: the MD5 of its lowercase hyphenated UUID string.
///
/// `m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC`, `m_raw:6d92078a-8246-4ba4-ae5b-76104861e7dc` and
/// `m_md5:0c2074fb86930fc4a2a7bb791240a7d3` are the same `MobileId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MobileId {
    md5: [u8; 16],
}

impl MobileId {
    /// From a raw advertising id: a hyphenated UUID in any letter case.
    pub fn from_raw(raw: &str) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        let mut lower = [0u8; 36];
        let mut well_formed = bytes.len() == 36;
        if well_formed {
            for (i, (&b, out)) in bytes.iter().zip(lower.iter_mut()).enumerate() {
                let hyphen_position = matches!(i, 8 | 13 | 18 | 23);
                well_formed &= if hyphen_position {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                };
                // Setting bit 0x20 lowercases A-F and leaves digits and '-' as they are.
                *out = b | 0x20;
            }
        }
        if !well_formed {
            return Err(format!(
                "m_raw value {:?} is not a hyphenated UUID (an IDFA or GAID such as \
                 6D92078A-8246-4BA4-AE5B-76104861E7DC)",
                crate::name::cut(raw, 64)
            ));
        }
        let id = MobileId {
            md5: Md5::digest(lower).into(),
        };
        id.refuse_opted_out()
    }

    /// From an MD5 hex digest, in any letter case.
    pub fn from_md5_hex(hex: &str) -> Result<Self, String> {
        let bytes = hex.as_bytes();
        if bytes.len() != 32 {
            return Err(format!(
                "m_md5 value must be 32 hex characters, found {} characters",
                hex.chars().count()
            ));
        }
        let mut md5 = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            match (hex_value(pair[0]), hex_value(pair[1])) {
                (Some(high), Some(low)) => md5[i] = high << 4 | low,
                _ => {
                    return Err(format!(
                        "m_md5 value {:?} is not hexadecimal",
                        crate::name::cut(hex, 64)
                    ));
                }
            }
        }
        MobileId { md5 }.refuse_opted_out()
    }

    /// From a digest already computed.
    pub fn from_md5(md5: [u8; 16]) -> Self {
        MobileId { md5 }
    }

    fn refuse_opted_out(self) -> Result<Self, String> {
        if self.md5 == OPTED_OUT_MD5 {
            return Err(
                "the all-zero advertising id 00000000-0000-0000-0000-000000000000 marks a device \
                 that opted out of tracking"
                    .into(),
            );
        }
        Ok(self)
    }

    /// The 16-byte digest.
    pub fn md5(&self) -> [u8; 16] {
        self.md5
    }

    /// The profile key, `m_md5:<32 lowercase hex>`.
    pub fn key(&self) -> MobileKey {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; MobileKey::LEN];
        text[..6].copy_from_slice(b"m_md5:");
        for (i, byte) in self.md5.iter().enumerate() {
            text[6 + 2 * i] = HEX[usize::from(byte >> 4)];
            text[7 + 2 * i] = HEX[usize::from(byte & 0x0f)];
        }
        MobileKey { text }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The text profile key of a mobile id, `m_md5:<32 lowercase hex>`, held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MobileKey {
    text: [u8; MobileKey::LEN],
}

impl MobileKey {
    /// `m_md5:` plus 32 hex characters.
    pub const LEN: usize = 38;

    pub fn as_str(&self) -> &str {
        // Built only from ASCII by `MobileId::key`.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

impl fmt::Debug for MobileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MobileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user id from DMP_USER_ID or DSP_USER_ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserId<'a> {
    /// A desktop (cookie) id: any string without `:`, case-sensitive, kept as sent.
    Desktop(&'a str),
    /// A mobile advertising id, canonicalised.
    Mobile { id: MobileId, origin: MobileOrigin },
}

impl<'a> UserId<'a> {
    /// The profile key this id stands for.
    pub fn key(&self) -> ProfileKey<'a> {
        match *self {
            UserId::Desktop(id) => ProfileKey::Desktop(id),
            UserId::Mobile { id, .. } => ProfileKey::Mobile(id.key()),
        }
    }

    pub fn is_mobile(&self) -> bool {
        matches!(self, UserId::Mobile { .. })
    }
}

/// The text key of a profile: a desktop id as sent, or a mobile id's `m_md5:<hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileKey<'a> {
    Desktop(&'a str),
    Mobile(MobileKey),
}

impl ProfileKey<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            ProfileKey::Desktop(id) => id,
            ProfileKey::Mobile(key) => key.as_str(),
        }
    }
}

impl fmt::Display for ProfileKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which id a line's changes apply to, after resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserSource {
    /// DSP_USER_ID was present and is used as is.
    Dsp,
    /// DMP_USER_ID was translated through the user-matching table.
    Matched,
    /// DMP_USER_ID is used as is: no DSP id and no match.
    Dmp,
}

/// The profile a line applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedUser<'a> {
    Dsp(ProfileKey<'a>),
    Matched(String),
    Dmp(ProfileKey<'a>),
}

impl ResolvedUser<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            ResolvedUser::Dsp(key) | ResolvedUser::Dmp(key) => key.as_str(),
            ResolvedUser::Matched(id) => id,
        }
    }

    pub fn source(&self) -> UserSource {
        match self {
            ResolvedUser::Dsp(_) => UserSource::Dsp,
            ResolvedUser::Matched(_) => UserSource::Matched,
            ResolvedUser::Dmp(_) => UserSource::Dmp,
        }
    }
}

/// A validated comma-separated list of segment ids, borrowed from the line.
///
/// Empty items (`a,,b`, a trailing comma) are skipped and ASCII spaces around an item are
/// ignored; every remaining item satisfies [`SegmentKey::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentList<'a> {
    field: &'a str,
    count: u32,
}

impl<'a> SegmentList<'a> {
    /// Validates a list field.
    pub fn parse(field: &'a str) -> Result<Self, String> {
        let count = count_valid_segments(field)?;
        Ok(SegmentList { field, count })
    }

    /// How many segment ids the list names (duplicates included).
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The segment ids, in file order.
    pub fn iter(&self) -> Segments<'a> {
        Segments {
            rest: self.field,
            remaining: self.count as usize,
        }
    }

    /// The field as it appeared on the line.
    pub fn as_raw(&self) -> &'a str {
        self.field
    }

    /// The ids as owned [`SegmentKey`]s (allocates).
    pub fn to_keys(&self) -> Vec<SegmentKey> {
        self.iter()
            .map(|id| SegmentKey::parse(id).expect("validated when the line was parsed"))
            .collect()
    }
}

impl<'a> IntoIterator for SegmentList<'a> {
    type Item = &'a str;
    type IntoIter = Segments<'a>;
    fn into_iter(self) -> Segments<'a> {
        self.iter()
    }
}

/// Iterator over the ids of a [`SegmentList`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    /// The part of the field not yet split.
    rest: &'a str,
    /// Ids left in `rest`, counted when the list was validated.
    remaining: usize,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // Items are a few bytes long: a plain scan beats a vectorised search here.
            let item = match self.rest.bytes().position(|b| b == b',') {
                Some(comma) => {
                    let item = &self.rest[..comma];
                    self.rest = &self.rest[comma + 1..];
                    item
                }
                None => std::mem::take(&mut self.rest),
            };
            let item = trim_spaces(item);
            if !item.is_empty() {
                self.remaining -= 1;
                return Some(item);
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Segments<'_> {}

/// A data line that passed every check: it has a user id and names at least one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedLine<'a> {
    dmp_user: Option<UserId<'a>>,
    dsp_user: Option<UserId<'a>>,
    add: SegmentList<'a>,
    remove: SegmentList<'a>,
}

impl<'a> ParsedLine<'a> {
    /// DMP_USER_ID, absent when the field is empty.
    pub fn dmp_user(&self) -> Option<UserId<'a>> {
        self.dmp_user
    }

    /// DSP_USER_ID, absent when the field is empty.
    pub fn dsp_user(&self) -> Option<UserId<'a>> {
        self.dsp_user
    }

    /// SEGMENTS_TO_ADD.
    pub fn add(&self) -> SegmentList<'a> {
        self.add
    }

    /// SEGMENTS_TO_REMOVE.
    pub fn remove(&self) -> SegmentList<'a> {
        self.remove
    }

    /// Picks the profile the line applies to: the DSP user id when present; otherwise the DMP
    /// user id through `matcher` (the user-matching table, given the DMP id's canonical key);
    /// otherwise the DMP user id itself.
    pub fn resolve_user(&self, matcher: impl FnOnce(&str) -> Option<String>) -> ResolvedUser<'a> {
        if let Some(dsp) = self.dsp_user {
            return ResolvedUser::Dsp(dsp.key());
        }
        let dmp = self
            .dmp_user
            .expect("parse_line refuses lines without any user id")
            .key();
        match matcher(dmp.as_str()) {
            Some(matched) => ResolvedUser::Matched(matched),
            None => ResolvedUser::Dmp(dmp),
        }
    }

    /// Segment ids named on the line, both lists.
    pub fn segment_count(&self) -> usize {
        self.add.len() + self.remove.len()
    }

    /// The line as a profile-API operation: the same add and remove (allocates).
    pub fn to_profile_update(&self) -> ProfileUpdate {
        ProfileUpdate {
            add: self.add.to_keys(),
            remove: self.remove.to_keys(),
            ..ProfileUpdate::default()
        }
    }
}

/// The line without a trailing `\n` and then a trailing `\r`.
pub fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether a line is empty once its line ending is removed (such lines are skipped).
pub fn is_blank(line: &[u8]) -> bool {
    strip_line_ending(line).is_empty()
}

/// Parses one data line (not the header, not a blank line); a trailing `\n` or `\r\n` is ignored.
///
/// A line needs at least three fields: `DMP_USER_ID<TAB>DSP_USER_ID<TAB>SEGMENTS_TO_ADD`, with
/// `<TAB>SEGMENTS_TO_REMOVE` optional; every field may be empty, but at least one user id and one
/// segment id must be present.
pub fn parse_line(raw: &[u8]) -> Result<ParsedLine<'_>, LineError> {
    let raw = strip_line_ending(raw);
    let text = std::str::from_utf8(raw).map_err(|error| {
        LineError::new(
            RejectReason::InvalidUtf8,
            None,
            format!("invalid UTF-8 at byte {}", error.valid_up_to() + 1),
        )
    })?;
    let bytes = text.as_bytes();
    let mut tabs = [0usize; 3];
    let mut found = 0;
    for position in memchr_iter(b'\t', bytes) {
        if found == 3 {
            let fields = 5 + memchr_iter(b'\t', &bytes[position + 1..]).count();
            return Err(LineError::new(
                RejectReason::TooManyFields,
                None,
                format!("expected at most 4 tab-separated fields, found {fields}"),
            ));
        }
        tabs[found] = position;
        found += 1;
    }
    if found < 2 {
        return Err(LineError::new(
            RejectReason::MissingFields,
            None,
            format!(
                "expected DMP_USER_ID<TAB>DSP_USER_ID<TAB>SEGMENTS_TO_ADD[<TAB>SEGMENTS_TO_REMOVE], \
                 found {} field{}",
                found + 1,
                if found == 0 { "" } else { "s" }
            ),
        ));
    }
    let dmp_field = &text[..tabs[0]];
    let dsp_field = &text[tabs[0] + 1..tabs[1]];
    let (add_field, remove_field) = if found == 3 {
        (&text[tabs[1] + 1..tabs[2]], &text[tabs[2] + 1..])
    } else {
        (&text[tabs[1] + 1..], "")
    };

    // One pass the compiler vectorises: only a line with a control character or a non-ASCII
    // byte needs user ids checked character by character.
    let plain_ascii = !bytes.iter().fold(false, |unusual, &b| {
        unusual | ((b < 0x20) & (b != b'\t')) | (b >= 0x7f)
    });
    let dmp_user = parse_user(dmp_field, Column::DmpUserId, plain_ascii)?;
    let dsp_user = parse_user(dsp_field, Column::DspUserId, plain_ascii)?;
    if dmp_user.is_none() && dsp_user.is_none() {
        return Err(LineError::new(
            RejectReason::MissingUserId,
            None,
            "both DMP_USER_ID and DSP_USER_ID are empty",
        ));
    }
    let add = parse_list(add_field, Column::SegmentsToAdd)?;
    let remove = parse_list(remove_field, Column::SegmentsToRemove)?;
    let named = add.len() + remove.len();
    if named > MAX_SEGMENTS_PER_LINE {
        return Err(LineError::new(
            RejectReason::TooManySegments,
            None,
            format!("names {named} segment ids, the limit is {MAX_SEGMENTS_PER_LINE}"),
        ));
    }
    if named == 0 {
        return Err(LineError::new(
            RejectReason::NoSegments,
            None,
            "names no segment to add or remove",
        ));
    }
    Ok(ParsedLine {
        dmp_user,
        dsp_user,
        add,
        remove,
    })
}

/// `raw` without ASCII spaces at either end.
fn trim_spaces(raw: &str) -> &str {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b' ') && bytes.last() != Some(&b' ') {
        return raw;
    }
    raw.trim_matches(' ')
}

/// Parses a user id field; `None` when it is empty (after trimming ASCII spaces).
///
/// Exposed for the profile and matching paths that take a single id in the file's syntax.
pub fn parse_user_id(field: &str) -> Result<Option<UserId<'_>>, LineError> {
    parse_user(field, Column::DmpUserId, false).map_err(|error| LineError {
        column: None,
        ..error
    })
}

/// Parses DMP_USER_ID or DSP_USER_ID. `plain_ascii` says the whole line is printable ASCII (and
/// tabs), which spares the control-character check.
fn parse_user(
    field: &str,
    column: Column,
    plain_ascii: bool,
) -> Result<Option<UserId<'_>>, LineError> {
    let field = trim_spaces(field);
    if field.is_empty() {
        return Ok(None);
    }
    if let Some(colon) = memchr(b':', field.as_bytes()) {
        return parse_mobile(&field[..colon], &field[colon + 1..], column).map(Some);
    }
    if field.len() > USER_ID_MAX_BYTES {
        return Err(LineError::new(
            RejectReason::InvalidUserId,
            Some(column),
            format!(
                "is {} bytes long, the limit is {USER_ID_MAX_BYTES}",
                field.len()
            ),
        ));
    }
    if !plain_ascii && field.chars().any(char::is_control) {
        return Err(control_character(column));
    }
    Ok(Some(UserId::Desktop(field)))
}

fn control_character(column: Column) -> LineError {
    LineError::new(
        RejectReason::InvalidUserId,
        Some(column),
        "contains a control character",
    )
}

fn parse_mobile<'a>(prefix: &str, value: &str, column: Column) -> Result<UserId<'a>, LineError> {
    let prefix = trim_spaces(prefix);
    let value = trim_spaces(value);
    let invalid = |why: String| LineError::new(RejectReason::InvalidMobileId, Some(column), why);
    if prefix.eq_ignore_ascii_case(MOBILE_RAW_PREFIX) {
        let id = MobileId::from_raw(value).map_err(invalid)?;
        return Ok(UserId::Mobile {
            id,
            origin: MobileOrigin::Raw,
        });
    }
    if prefix.eq_ignore_ascii_case(MOBILE_MD5_PREFIX) {
        let id = MobileId::from_md5_hex(value).map_err(invalid)?;
        return Ok(UserId::Mobile {
            id,
            origin: MobileOrigin::Md5,
        });
    }
    if prefix.eq_ignore_ascii_case(MOBILE_SHA1_PREFIX) {
        return Err(LineError::new(
            RejectReason::UnsupportedIdType,
            Some(column),
            "unsupported id type m_sha1; send m_raw:<advertising id> or m_md5:<md5 of the \
             lowercase advertising id>",
        ));
    }
    Err(LineError::new(
        RejectReason::UnknownIdPrefix,
        Some(column),
        format!(
            "unknown id prefix {:?}; mobile ids start with m_raw: or m_md5:, desktop ids contain no ':'",
            crate::name::cut(prefix, 32)
        ),
    ))
}

fn parse_list(field: &str, column: Column) -> Result<SegmentList<'_>, LineError> {
    SegmentList::parse(field)
        .map_err(|why| LineError::new(RejectReason::InvalidSegmentId, Some(column), why))
}

/// Byte classes for the segment-list fast path.
const PLAIN: u8 = 0;
const COMMA: u8 = 1;
const OTHER: u8 = 2;

/// `PLAIN` for printable ASCII a segment id may hold, `COMMA` for `,`, `OTHER` for everything
/// that needs the careful path (space, `/`, control characters, non-ASCII).
static SEGMENT_BYTE_CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0x21;
    while b < 0x7f {
        table[b] = PLAIN;
        b += 1;
    }
    table[b'/' as usize] = OTHER;
    table[b',' as usize] = COMMA;
    table
};

/// Counts the ids of a list field, checking each one against the segment API's rules.
fn count_valid_segments(field: &str) -> Result<u32, String> {
    let bytes = field.as_bytes();
    let mut count = 0u32;
    let mut item_start = 0;
    for (position, &b) in bytes.iter().enumerate() {
        match SEGMENT_BYTE_CLASS[usize::from(b)] {
            PLAIN => {}
            COMMA => {
                let length = position - item_start;
                if length > SEGMENT_KEY_MAX_CHARS {
                    return count_valid_segments_slowly(field);
                }
                count += u32::from(length > 0);
                item_start = position + 1;
            }
            _ => return count_valid_segments_slowly(field),
        }
    }
    let length = bytes.len() - item_start;
    if length > SEGMENT_KEY_MAX_CHARS {
        return count_valid_segments_slowly(field);
    }
    Ok(count + u32::from(length > 0))
}

fn count_valid_segments_slowly(field: &str) -> Result<u32, String> {
    let mut count = 0u32;
    for item in field.split(',') {
        let item = trim_spaces(item);
        if item.is_empty() {
            continue;
        }
        if !is_valid_segment_key(item) {
            let why = SegmentKey::parse(item)
                .err()
                .unwrap_or_else(|| "is not a valid segment id".into());
            return Err(format!(
                "segment id {:?} {why}",
                crate::name::cut(item, 128)
            ));
        }
        count = count.saturating_add(1);
    }
    Ok(count)
}

/// The rules of [`SegmentKey::parse`] without allocating: 1..=100 characters, no whitespace,
/// control characters, `,` or `/`.
pub fn is_valid_segment_key(raw: &str) -> bool {
    if raw.is_empty() {
        return false;
    }
    if raw.is_ascii() {
        return raw.len() <= SEGMENT_KEY_MAX_CHARS
            && raw
                .bytes()
                .all(|b| SEGMENT_BYTE_CLASS[usize::from(b)] == PLAIN);
    }
    let mut chars = 0;
    for c in raw.chars() {
        chars += 1;
        if chars > SEGMENT_KEY_MAX_CHARS
            || c.is_whitespace()
            || c.is_control()
            || c == ','
            || c == '/'
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> ParsedLine<'_> {
        parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn reject(line: &str) -> LineError {
        parse_line(line.as_bytes()).expect_err(line)
    }

    fn ids<'a>(list: SegmentList<'a>) -> Vec<&'a str> {
        list.iter().collect()
    }

    #[test]
    fn a_full_desktop_line() {
        let line = parse("cookie1\tdsp1\t1000,1001\t2000\n");
        assert_eq!(line.dmp_user(), Some(UserId::Desktop("cookie1")));
        assert_eq!(line.dsp_user(), Some(UserId::Desktop("dsp1")));
        assert_eq!(ids(line.add()), ["1000", "1001"]);
        assert_eq!(ids(line.remove()), ["2000"]);
        assert_eq!(line.segment_count(), 3);
    }

    #[test]
    fn crlf_and_a_missing_remove_column_are_tolerated() {
        let line = parse("cookie1\t\ta,b\r\n");
        assert_eq!(line.dsp_user(), None);
        assert_eq!(ids(line.add()), ["a", "b"]);
        assert!(line.remove().is_empty());
        let line = parse("cookie1\t\t\tz\r");
        assert!(line.add().is_empty());
        assert_eq!(ids(line.remove()), ["z"]);
    }

    #[test]
    fn any_single_field_may_be_empty() {
        assert!(parse("\tdsp\ta\t").dmp_user().is_none());
        assert!(parse("dmp\t\ta\t").dsp_user().is_none());
        assert!(parse("dmp\tdsp\t\tb").add().is_empty());
        assert!(parse("dmp\tdsp\ta\t").remove().is_empty());
    }

    #[test]
    fn empty_list_items_and_spaces_around_items_are_ignored() {
        let line = parse("u\t\t a , ,b,,\t,c ,");
        assert_eq!(ids(line.add()), ["a", "b"]);
        assert_eq!(ids(line.remove()), ["c"]);
        assert_eq!(line.add().len(), 2);
        assert_eq!(line.add().as_raw(), " a , ,b,,");
    }

    #[test]
    fn field_count_errors() {
        for line in ["u", "u\tdsp", ""] {
            assert_eq!(reject(line).reason, RejectReason::MissingFields, "{line:?}");
        }
        let error = reject("u\td\ta\tb\tc\td");
        assert_eq!(error.reason, RejectReason::TooManyFields);
        assert_eq!(
            error.detail,
            "expected at most 4 tab-separated fields, found 6"
        );
    }

    #[test]
    fn user_id_errors() {
        assert_eq!(reject("\t\ta").reason, RejectReason::MissingUserId);
        assert_eq!(reject("  \t \ta").reason, RejectReason::MissingUserId);
        let error = reject("x:abc\t\ta");
        assert_eq!(error.reason, RejectReason::UnknownIdPrefix);
        assert_eq!(error.column, Some(Column::DmpUserId));
        let error = reject("u\tm_sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709\ta");
        assert_eq!(error.reason, RejectReason::UnsupportedIdType);
        assert_eq!(error.column, Some(Column::DspUserId));
        assert!(
            error
                .to_string()
                .starts_with("DSP_USER_ID: unsupported id type m_sha1")
        );
        assert_eq!(reject("u\x01x\t\ta").reason, RejectReason::InvalidUserId);
        assert_eq!(reject("u\u{85}x\t\ta").reason, RejectReason::InvalidUserId);
        let long = format!("{}\t\ta", "u".repeat(USER_ID_MAX_BYTES + 1));
        assert_eq!(reject(&long).reason, RejectReason::InvalidUserId);
        let longest = format!("{}\t\ta", "u".repeat(USER_ID_MAX_BYTES));
        parse(&longest);
    }

    #[test]
    fn desktop_ids_are_kept_as_sent() {
        let line = parse(" AbC é \t\ta");
        assert_eq!(line.dmp_user(), Some(UserId::Desktop("AbC é")));
    }

    #[test]
    fn raw_and_md5_mobile_ids_meet_in_one_profile() {
        let upper = parse("m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC\t\ta");
        let lower = parse("m_raw:6d92078a-8246-4ba4-ae5b-76104861e7dc\t\ta");
        let hashed = parse("m_md5:0C2074FB86930FC4A2A7BB791240A7D3\t\ta");
        let spaced = parse("m_md5: 0c2074fb86930fc4a2a7bb791240a7d3\t\ta");
        let keys: Vec<String> = [upper, lower, hashed, spaced]
            .iter()
            .map(|line| line.dmp_user().unwrap().key().to_string())
            .collect();
        assert!(
            keys.iter()
                .all(|k| k == "m_md5:0c2074fb86930fc4a2a7bb791240a7d3"),
            "{keys:?}"
        );
        assert!(matches!(
            upper.dmp_user(),
            Some(UserId::Mobile {
                origin: MobileOrigin::Raw,
                ..
            })
        ));
        assert!(matches!(
            hashed.dmp_user(),
            Some(UserId::Mobile {
                origin: MobileOrigin::Md5,
                ..
            })
        ));
    }

    #[test]
    fn mobile_prefixes_ignore_letter_case() {
        let line = parse("M_MD5:0c2074fb86930fc4a2a7bb791240a7d3\t\ta");
        assert!(line.dmp_user().unwrap().is_mobile());
    }

    #[test]
    fn malformed_mobile_ids_are_rejected() {
        for line in [
            "m_raw:6d92078a82464ba4ae5b76104861e7dc\t\ta",
            "m_raw:{6d92078a-8246-4ba4-ae5b-76104861e7dc}\t\ta",
            "m_raw:6d92078a-8246-4ba4-ae5b-76104861e7dg\t\ta",
            "m_raw:\t\ta",
            "m_md5:0c2074fb86930fc4a2a7bb791240a7d\t\ta",
            "m_md5:0c2074fb86930fc4a2a7bb791240a7dz\t\ta",
            "m_md5:0c2074fb86930fc4a2a7bb791240a7d3a\t\ta",
        ] {
            assert_eq!(
                reject(line).reason,
                RejectReason::InvalidMobileId,
                "{line:?}"
            );
        }
    }

    #[test]
    fn the_opted_out_advertising_id_is_refused_in_both_forms() {
        let raw = reject("m_raw:00000000-0000-0000-0000-000000000000\t\ta");
        assert_eq!(raw.reason, RejectReason::InvalidMobileId);
        assert!(raw.detail.contains("opted out"));
        let hashed = reject("m_md5:9f89c84a559f573636a47ff8daed0d33\t\ta");
        assert_eq!(hashed.reason, RejectReason::InvalidMobileId);
        assert_eq!(
            Md5::digest(b"00000000-0000-0000-0000-000000000000")[..],
            OPTED_OUT_MD5[..]
        );
    }

    #[test]
    fn segment_id_errors_name_the_id_and_the_rule() {
        let error = reject("u\t\ta,b/c");
        assert_eq!(error.reason, RejectReason::InvalidSegmentId);
        assert_eq!(error.column, Some(Column::SegmentsToAdd));
        assert!(
            error.detail.starts_with("segment id \"b/c\" contains '/'"),
            "{error}"
        );
        assert_eq!(reject("u\t\ta\tb c").column, Some(Column::SegmentsToRemove));
        let long = format!("u\t\t{}", "s".repeat(101));
        assert!(reject(&long).detail.contains("101 characters"));
        parse(&format!("u\t\t{}", "s".repeat(100)));
        parse(&format!("u\t\t{}", "é".repeat(100)));
        assert_eq!(
            reject(&format!("u\t\t{}", "é".repeat(101))).reason,
            RejectReason::InvalidSegmentId
        );
        assert_eq!(
            reject("u\t\ta\u{a0}b").reason,
            RejectReason::InvalidSegmentId
        );
    }

    #[test]
    fn a_line_must_name_a_segment_within_the_limit() {
        assert_eq!(reject("u\tdsp\t\t").reason, RejectReason::NoSegments);
        assert_eq!(reject("u\tdsp\t , ,\t").reason, RejectReason::NoSegments);
        let many = vec!["s"; MAX_SEGMENTS_PER_LINE].join(",");
        parse(&format!("u\t\t{many}"));
        assert_eq!(
            reject(&format!("u\t\t{many}\tt")).reason,
            RejectReason::TooManySegments
        );
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_position() {
        let error = parse_line(b"ab\xff\t\ta").unwrap_err();
        assert_eq!(error.reason, RejectReason::InvalidUtf8);
        assert_eq!(error.detail, "invalid UTF-8 at byte 3");
    }

    #[test]
    fn the_dsp_id_wins_then_the_matching_table_then_the_dmp_id() {
        let both = parse("dmp\tdsp\ta");
        let resolved = both.resolve_user(|_| panic!("no lookup when the DSP id is present"));
        assert_eq!(resolved, ResolvedUser::Dsp(ProfileKey::Desktop("dsp")));

        let dmp_only = parse("dmp\t\ta");
        let matched = dmp_only.resolve_user(|dmp| Some(format!("platform-{dmp}")));
        assert_eq!(matched.as_str(), "platform-dmp");
        assert_eq!(matched.source(), UserSource::Matched);
        let unmatched = dmp_only.resolve_user(|_| None);
        assert_eq!(unmatched.source(), UserSource::Dmp);
        assert_eq!(unmatched.as_str(), "dmp");

        let mobile = parse("m_raw:6d92078a-8246-4ba4-ae5b-76104861e7dc\t\ta");
        let mut asked = String::new();
        let resolved = mobile.resolve_user(|key| {
            asked = key.to_owned();
            None
        });
        assert_eq!(asked, "m_md5:0c2074fb86930fc4a2a7bb791240a7d3");
        assert_eq!(resolved.as_str(), asked);
    }

    #[test]
    fn lines_become_profile_updates_with_the_same_meaning() {
        let update = parse("u\t\ta,b\tc").to_profile_update();
        assert_eq!(
            update.add,
            [
                SegmentKey::parse("a").unwrap(),
                SegmentKey::parse("b").unwrap()
            ]
        );
        assert_eq!(update.remove, [SegmentKey::parse("c").unwrap()]);
        assert!(!update.remove_all);
        assert!(update.set.is_none());
    }

    #[test]
    fn reason_names_are_stable_and_unique() {
        let names: Vec<&str> = RejectReason::ALL.iter().map(|r| r.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert!(!reason.describe().is_empty());
            assert_eq!(RejectReason::from_name(reason.name()), Some(*reason));
        }
        assert_eq!(
            RejectReason::UnsupportedIdType.name(),
            "unsupported_id_type"
        );
    }

    #[test]
    fn rejections_carry_the_line_for_reporting() {
        let raw = b"x:1\t\ta\xff\r\n";
        let error = parse_line(raw).unwrap_err();
        let rejection = Rejection::new(7, raw, &error);
        assert_eq!(rejection.line_number, 7);
        assert_eq!(rejection.line, "x:1\t\ta\u{fffd}");
        assert_eq!(rejection.reason, RejectReason::InvalidUtf8);
    }

    #[test]
    fn the_fast_segment_check_agrees_with_the_domain() {
        for raw in [
            "a",
            "",
            " ",
            "a b",
            "a,b",
            "a/b",
            "a\u{7f}",
            "é",
            "a\u{2028}",
            "\u{85}",
            "~!@#$%^&*()",
        ] {
            assert_eq!(
                is_valid_segment_key(raw),
                SegmentKey::parse(raw).is_ok(),
                "{raw:?}"
            );
        }
    }
}
