//! Property tests for the name and line parsers, the line reader and the taxonomy parser.

use std::io::{self, Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use md5::{Digest, Md5};
use proptest::prelude::*;
use segmart_domain::SegmentKey;
use segmart_ingest::line::is_valid_segment_key;
use segmart_ingest::{
    BatchDate, BatchFileName, FileKind, GzipLines, MobileOrigin, UserId, parse_line, parse_taxonomy,
};

fn token(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9_-]{{1,{max}}}")).unwrap()
}

fn date() -> impl Strategy<Value = BatchDate> {
    (
        1970u16..=9999,
        1u8..=12,
        1u8..=31,
        0u8..24,
        0u8..60,
        0u8..60,
    )
        .prop_filter_map(
            "a real calendar day",
            |(year, month, day, hour, minute, second)| {
                BatchDate::new(year, month, day, hour, minute, second).ok()
            },
        )
}

fn kind() -> impl Strategy<Value = FileKind> {
    prop_oneof![Just(FileKind::Data), Just(FileKind::Taxonomy)]
}

/// Zero to two ASCII spaces.
fn spaces() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("  ")]
}

proptest! {
    #[test]
    fn file_names_round_trip(
        dmp_id in token(64),
        date in date(),
        file_id in token(128),
        kind in kind(),
        pads in proptest::collection::vec(spaces(), 6),
    ) {
        let name = BatchFileName::new(&dmp_id, date, &file_id, kind).unwrap();
        prop_assert_eq!(name.dmp_id(), dmp_id.as_str());
        prop_assert_eq!(name.file_id(), file_id.as_str());
        prop_assert_eq!(&BatchFileName::parse(&name.to_string()).unwrap(), &name);
        let spaced = format!(
            "{}{}{}.{}{}{}.{}{}{}{}",
            pads[0], dmp_id, pads[1], pads[2], date, pads[3], pads[4], file_id,
            pads[5], kind.suffix()
        );
        prop_assert_eq!(&BatchFileName::parse(&spaced).unwrap(), &name);
    }

    #[test]
    fn file_name_parsing_never_panics_and_is_idempotent(raw in any::<String>()) {
        if let Ok(name) = BatchFileName::parse(&raw) {
            prop_assert_eq!(BatchFileName::parse(&name.to_string()).unwrap(), name);
        }
    }

    #[test]
    fn names_near_the_pattern_never_panic(
        raw in "[ a-z0-9_.:-]{0,12}\\.[0-9_ -]{0,21}\\.[ a-z0-9.-]{0,8}(\\.txt\\.gz|\\.taxonomy\\.json)?"
    ) {
        let _ = BatchFileName::parse(&raw);
    }

    #[test]
    fn dates_order_like_their_text(a in date(), b in date()) {
        prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        prop_assert_eq!(a.cmp(&b), a.unix_seconds().cmp(&b.unix_seconds()));
        prop_assert_eq!(BatchDate::parse(&a.to_string()).unwrap(), a);
    }
}

/// A desktop id as a provider may write it: printable, no `:`, tab or leading/trailing space.
fn desktop_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        "[A-Za-z0-9_=+/.-]([A-Za-z0-9_=+/. é-]{0,40}[A-Za-z0-9_=+/.é-])?",
    )
    .unwrap()
}

fn uuid_text() -> impl Strategy<Value = String> {
    (any::<u128>(), any::<bool>()).prop_filter_map("not the opted-out id", |(bits, upper)| {
        (bits != 0).then(|| {
            let text = uuid::Uuid::from_u128(bits).hyphenated().to_string();
            if upper { text.to_uppercase() } else { text }
        })
    })
}

#[derive(Debug, Clone)]
enum GeneratedUser {
    Desktop(String),
    Raw(String),
    Md5(String),
}

impl GeneratedUser {
    fn text(&self) -> String {
        match self {
            GeneratedUser::Desktop(id) => id.clone(),
            GeneratedUser::Raw(uuid) => format!("m_raw:{uuid}"),
            GeneratedUser::Md5(hex) => format!("m_md5:{hex}"),
        }
    }

    fn expected_key(&self) -> String {
        match self {
            GeneratedUser::Desktop(id) => id.clone(),
            GeneratedUser::Raw(uuid) => {
                format!(
                    "m_md5:{}",
                    hex(&Md5::digest(uuid.to_lowercase().as_bytes()))
                )
            }
            GeneratedUser::Md5(digest) => format!("m_md5:{}", digest.to_lowercase()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn user() -> impl Strategy<Value = GeneratedUser> {
    prop_oneof![
        3 => desktop_id().prop_map(GeneratedUser::Desktop),
        1 => uuid_text().prop_map(GeneratedUser::Raw),
        1 => uuid_text().prop_map(|uuid| {
            GeneratedUser::Md5(hex(&Md5::digest(uuid.to_lowercase().as_bytes())))
        }),
    ]
}

fn segment_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{1,7}",
        2 => "[A-Za-z0-9_.:-]{1,30}",
        1 => "[a-zé€😀]{1,10}",
    ]
}

fn segment_ids() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(segment_id(), 0..12)
}

proptest! {
    #[test]
    fn data_lines_round_trip(
        dmp in proptest::option::of(user()),
        dsp in proptest::option::of(user()),
        add in segment_ids(),
        remove in segment_ids(),
        crlf in any::<bool>(),
        omit_empty_remove in any::<bool>(),
    ) {
        prop_assume!(dmp.is_some() || dsp.is_some());
        prop_assume!(!add.is_empty() || !remove.is_empty());
        let dmp_text = dmp.as_ref().map(GeneratedUser::text).unwrap_or_default();
        let dsp_text = dsp.as_ref().map(GeneratedUser::text).unwrap_or_default();
        let mut line = format!("{dmp_text}\t{dsp_text}\t{}", add.join(","));
        if !(remove.is_empty() && omit_empty_remove) {
            line.push('\t');
            line.push_str(&remove.join(","));
        }
        line.push_str(if crlf { "\r\n" } else { "\n" });

        let parsed = match parse_line(line.as_bytes()) {
            Ok(parsed) => parsed,
            Err(error) => return Err(TestCaseError::fail(format!("{line:?}: {error}"))),
        };
        let key = |user: Option<UserId<'_>>| user.map(|u| u.key().to_string());
        prop_assert_eq!(key(parsed.dmp_user()), dmp.as_ref().map(GeneratedUser::expected_key));
        prop_assert_eq!(key(parsed.dsp_user()), dsp.as_ref().map(GeneratedUser::expected_key));
        let parsed_add: Vec<&str> = parsed.add().iter().collect();
        let expected_add: Vec<&str> = add.iter().map(String::as_str).collect();
        prop_assert_eq!(parsed_add, expected_add);
        let parsed_remove: Vec<&str> = parsed.remove().iter().collect();
        let expected_remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        prop_assert_eq!(parsed_remove, expected_remove);
        prop_assert_eq!(parsed.add().len(), add.len());
        prop_assert_eq!(parsed.remove().len(), remove.len());

        let expected_user = match (&dsp, &dmp) {
            (Some(dsp), _) => dsp.expected_key(),
            (None, Some(dmp)) => dmp.expected_key(),
            (None, None) => unreachable!(),
        };
        let resolved = parsed.resolve_user(|_| None);
        prop_assert_eq!(resolved.as_str(), expected_user.as_str());
    }

    #[test]
    fn raw_and_hashed_ids_of_one_device_meet(bits in 1u128.., upper in any::<bool>()) {
        let lower = uuid::Uuid::from_u128(bits).hyphenated().to_string();
        let raw = if upper { lower.to_uppercase() } else { lower.clone() };
        let hashed = hex(&Md5::digest(lower.as_bytes()));
        let from_raw = format!("m_raw:{raw}\t\ts");
        let from_md5 = format!("m_md5:{}\t\ts", hashed.to_uppercase());
        let a = parse_line(from_raw.as_bytes()).unwrap().dmp_user().unwrap();
        let b = parse_line(from_md5.as_bytes()).unwrap().dmp_user().unwrap();
        prop_assert_eq!(a.key(), b.key());
        let origins = [a, b].map(|user| match user {
            UserId::Mobile { origin, .. } => Some(origin),
            UserId::Desktop(_) => None,
        });
        prop_assert_eq!(origins, [Some(MobileOrigin::Raw), Some(MobileOrigin::Md5)]);
    }

    #[test]
    fn line_parsing_never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_any_line(&raw)?;
    }

    #[test]
    fn line_parsing_never_panics_on_near_miss_lines(
        raw in "[a-z:_0-9 \\t,/\r\u{85}é-]{0,80}"
    ) {
        check_any_line(raw.as_bytes())?;
    }

    #[test]
    fn the_fast_segment_check_agrees_with_the_domain(raw in any::<String>()) {
        prop_assert_eq!(is_valid_segment_key(&raw), SegmentKey::parse(&raw).is_ok());
    }

    #[test]
    fn the_fast_segment_check_agrees_on_short_ascii(raw in "[\\x00-\\x7f]{0,4}") {
        prop_assert_eq!(is_valid_segment_key(&raw), SegmentKey::parse(&raw).is_ok());
    }
}

/// Whatever the bytes, parsing returns; what it accepts meets every rule.
fn check_any_line(raw: &[u8]) -> Result<(), TestCaseError> {
    let Ok(line) = parse_line(raw) else {
        return Ok(());
    };
    prop_assert!(line.dmp_user().is_some() || line.dsp_user().is_some());
    prop_assert!(line.segment_count() > 0);
    prop_assert_eq!(line.add().iter().count(), line.add().len());
    prop_assert_eq!(line.add().iter().len(), line.add().len());
    prop_assert_eq!(line.remove().iter().count(), line.remove().len());
    for id in line.add().iter().chain(line.remove().iter()) {
        prop_assert!(SegmentKey::parse(id).is_ok(), "{:?}", id);
    }
    for user in [line.dmp_user(), line.dsp_user()].into_iter().flatten() {
        if let UserId::Desktop(id) = user {
            prop_assert!(!id.contains(':') && !id.contains('\t') && !id.is_empty());
        }
    }
    let _ = line.resolve_user(|_| None);
    Ok(())
}

/// Serves a byte slice in pieces of the given sizes, as a network socket would.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_line_reader_returns_exactly_the_lines_written(
        lines in proptest::collection::vec("[a-z\\t\\r,]{0,300}", 0..400),
        trailing_newline in any::<bool>(),
        sizes in proptest::collection::vec(1usize..5000, 1..8),
        members in 1usize..4,
    ) {
        let mut text = lines.join("\n");
        if trailing_newline && !text.is_empty() {
            text.push('\n');
        }
        // Split the text across `members` concatenated gzip members.
        let mut compressed = Vec::new();
        let step = text.len() / members + 1;
        for piece in text.as_bytes().chunks(step).chain(std::iter::once(&b""[..]).filter(|_| text.is_empty())) {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(piece).unwrap();
            compressed.extend(encoder.finish().unwrap());
        }
        let mut reader = GzipLines::new(Trickle { data: &compressed, sizes, next: 0 });
        let mut got = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            prop_assert_eq!(line.number, got.len() as u64 + 1);
            got.push(line.bytes.to_vec());
        }
        let expected: Vec<Vec<u8>> = text.as_bytes().split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(reader.progress().bytes_in, compressed.len() as u64);
        prop_assert_eq!(reader.progress().bytes_out, text.len() as u64);
    }

    #[test]
    fn the_line_reader_never_panics_on_arbitrary_input(raw in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut reader = GzipLines::new(&raw[..]);
        while let Ok(Some(_)) = reader.next_line() {}
    }

    #[test]
    fn the_line_reader_never_panics_on_damaged_gzip(
        text in "[a-z\\n]{0,3000}",
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        let mut compressed = encoder.finish().unwrap();
        for (index, mask) in flips {
            let at = index.index(compressed.len());
            compressed[at] ^= mask;
        }
        let mut reader = GzipLines::new(&compressed[..]);
        while let Ok(Some(_)) = reader.next_line() {}
    }

    #[test]
    fn taxonomy_parsing_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..500)) {
        let _ = parse_taxonomy(&raw);
    }

    #[test]
    fn taxonomy_parsing_never_panics_on_json_like_input(
        raw in "\\[(\\{(\"(id|name|cost_type|cost_value|currency|advertisers|x)\": ?(1|-1|1\\.5|\"[A-Z0-9 ,.]{0,4}\"|null|\\[1, ?\"a\"\\]|\\{\\}|true),? ?){0,6}\\},? ?){0,4}\\]"
    ) {
        let _ = parse_taxonomy(raw.as_bytes());
    }
}
