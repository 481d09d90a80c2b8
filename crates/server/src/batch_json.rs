//! The profile batch body, parsed into one flat structure.
//!
//! A 1 MB batch holds thousands of items of a handful of short strings each, so the general
//! parser's per-item vectors and per-field dispatch were most of a batch's cost. This module
//! reads the common shape of the body directly — an array of objects whose keys are the batch
//! item's field names, whose values are strings without escapes, arrays of such strings,
//! booleans or `null` — into one vector of items and one vector of ids, without allocating per
//! item. Anything else (an escape, a duplicate or unknown key, a number, malformed JSON) is
//! left to serde: [`parse`] then parses the body with [`BatchItem`]'s derived deserializer,
//! which either gives the same items or the error the client sees. The fast path therefore
//! never decides what is an error; a property test checks that it agrees with serde.

use std::borrow::Cow;
use std::ops::Range;

use crate::body::parse_json;
use crate::error::ApiError;
use crate::profiles::BatchItem;

/// One item of a parsed batch; lists are ranges of [`ParsedBatch::ids`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedItem {
    /// Index of the profile id in [`ParsedBatch::ids`].
    pub profile_id: Option<u32>,
    pub add: Option<Range<u32>>,
    pub remove: Option<Range<u32>>,
    pub set: Option<Range<u32>>,
    pub remove_all: Option<bool>,
}

/// A whole batch body: items in order, and every string they name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedBatch<'a> {
    pub items: Vec<ParsedItem>,
    pub ids: Vec<Cow<'a, str>>,
}

impl<'a> ParsedBatch<'a> {
    /// The strings of a list range (empty for `None`).
    pub fn list(&self, range: &Option<Range<u32>>) -> &[Cow<'a, str>] {
        match range {
            Some(range) => &self.ids[range.start as usize..range.end as usize],
            None => &[],
        }
    }

    /// The profile id of an item.
    pub fn profile_id(&self, item: &ParsedItem) -> Option<&str> {
        item.profile_id
            .map(|index| self.ids[index as usize].as_ref())
    }

    fn from_items(items: Vec<BatchItem<'a>>) -> Self {
        let mut batch = ParsedBatch::default();
        for item in items {
            let mut push_list = |list: Option<Vec<Cow<'a, str>>>| {
                list.map(|list| {
                    let start = batch.ids.len() as u32;
                    batch.ids.extend(list);
                    start..batch.ids.len() as u32
                })
            };
            let add = push_list(item.segment_ids_to_add);
            let remove = push_list(item.segment_ids_to_remove);
            let set = push_list(item.segment_ids_to_set);
            let profile_id = item.profile_id.map(|id| {
                batch.ids.push(id);
                batch.ids.len() as u32 - 1
            });
            batch.items.push(ParsedItem {
                profile_id,
                add,
                remove,
                set,
                remove_all: item.remove_all_segments,
            });
        }
        batch
    }
}

/// Parses a batch body: the fast path when the body has the common shape, serde otherwise
/// (which also produces every error, naming the line, column and field).
pub fn parse(body: &[u8]) -> Result<ParsedBatch<'_>, ApiError> {
    if let Some(batch) = parse_fast(body) {
        return Ok(batch);
    }
    parse_json::<Vec<BatchItem<'_>>>(body).map(ParsedBatch::from_items)
}

/// The fast path alone: `None` whenever the body is not in the shape it reads (the caller then
/// asks serde, so `None` says nothing about validity).
pub fn parse_fast(body: &[u8]) -> Option<ParsedBatch<'_>> {
    let mut reader = Reader { body, pos: 0 };
    let mut batch = ParsedBatch {
        // About 20 bytes per id in realistic bodies; a close guess avoids most regrowth.
        items: Vec::with_capacity(body.len() / 128 + 1),
        ids: Vec::with_capacity(body.len() / 18 + 1),
    };
    reader.skip_ws();
    reader.expect(b'[')?;
    reader.skip_ws();
    if reader.peek()? == b']' {
        reader.pos += 1;
    } else {
        loop {
            let item = reader.item(&mut batch.ids)?;
            batch.items.push(item);
            reader.skip_ws();
            match reader.next()? {
                b',' => reader.skip_ws(),
                b']' => break,
                _ => return None,
            }
        }
    }
    reader.skip_ws();
    (reader.pos == body.len()).then_some(batch)
}

/// The fields of an item, as bits of a seen-mask.
#[derive(Clone, Copy)]
enum Field {
    ProfileId = 1,
    Add = 2,
    Remove = 4,
    Set = 8,
    RemoveAll = 16,
}

impl Field {
    fn from_name(name: &[u8]) -> Option<Field> {
        Some(match name {
            b"profileId" => Field::ProfileId,
            b"segmentIdsToAdd" => Field::Add,
            b"segmentIdsToRemove" => Field::Remove,
            b"segmentIdsToSet" => Field::Set,
            b"removeAllSegments" => Field::RemoveAll,
            _ => return None,
        })
    }
}

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `word` set (exact for the lowest zero byte; bytes above
/// it may be flagged too, which only the lowest matters for).
#[inline]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(LOW) & !word & HIGH
}

/// One bit per byte of `chunk` (bit `i` for byte `i`) that is a quote, a backslash, a control
/// character or not ASCII: the bytes [`Reader::string`] must look at.
#[cfg(target_arch = "x86_64")]
#[inline]
fn special_bytes_16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline; the load reads the 16 bytes of `chunk`
    // (unaligned loads are allowed).
    unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
        // As signed bytes, control characters (0..=0x1f) and non-ASCII bytes (0x80..) are
        // both below 0x20.
        let low_or_high = _mm_cmplt_epi8(bytes, _mm_set1_epi8(0x20));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), low_or_high)) as u32
    }
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Reads the literal `word` (after its first byte was seen).
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        (self.body.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// A string without escapes or control characters, the opening quote already read.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let mut ascii = true;
        // Sixteen, then eight bytes at a time up to the first byte that needs a look: a quote,
        // a backslash, a control character or a non-ASCII byte.
        let mut found = false;
        #[cfg(target_arch = "x86_64")]
        while let Some(chunk) = self.body.get(self.pos..self.pos + 16) {
            let special = special_bytes_16(chunk.try_into().expect("sixteen bytes"));
            if special != 0 {
                let at = self.pos + special.trailing_zeros() as usize;
                if self.body[at] == b'"' {
                    // The usual end: every byte before the quote was plain ASCII.
                    self.pos = at + 1;
                    // SAFETY: the bytes from `start` to `at` are below 0x80 (ASCII).
                    return Some(unsafe { std::str::from_utf8_unchecked(&self.body[start..at]) });
                }
                self.pos = at;
                found = true;
                break;
            }
            self.pos += 16;
        }
        while !found && let Some(chunk) = self.body.get(self.pos..self.pos + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let special = zero_bytes(word ^ (LOW * b'"' as u64))
                | zero_bytes(word ^ (LOW * b'\\' as u64))
                | (word.wrapping_sub(LOW * 0x20) & !word & HIGH)
                | (word & HIGH);
            if special != 0 {
                self.pos += special.trailing_zeros() as usize / 8;
                break;
            }
            self.pos += 8;
        }
        loop {
            let byte = *self.body.get(self.pos)?;
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                0x80.. => ascii = false,
                _ => {}
            }
        }
        let bytes = &self.body[start..self.pos - 1];
        if ascii {
            // SAFETY: every byte is below 0x80, so the slice is ASCII and valid UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).ok()
        }
    }

    /// `true`, `false` or `null`.
    fn bool_or_null(&mut self) -> Option<Option<bool>> {
        match self.next()? {
            b't' => self.literal(b"rue").map(|_| Some(true)),
            b'f' => self.literal(b"alse").map(|_| Some(false)),
            b'n' => self.literal(b"ull").map(|_| None),
            _ => None,
        }
    }

    /// An array of strings or `null`, its strings appended to `ids`.
    fn list(&mut self, ids: &mut Vec<Cow<'a, str>>) -> Option<Option<Range<u32>>> {
        match self.next()? {
            b'n' => return self.literal(b"ull").map(|_| None),
            b'[' => {}
            _ => return None,
        }
        let start = ids.len() as u32;
        self.skip_ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(Some(start..start));
        }
        loop {
            self.expect(b'"')?;
            ids.push(Cow::Borrowed(self.string()?));
            self.skip_ws();
            match self.next()? {
                b',' => self.skip_ws(),
                b']' => break,
                _ => return None,
            }
        }
        Some(Some(start..ids.len() as u32))
    }

    fn item(&mut self, ids: &mut Vec<Cow<'a, str>>) -> Option<ParsedItem> {
        self.expect(b'{')?;
        let mut item = ParsedItem::default();
        let mut seen = 0u8;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(item);
        }
        loop {
            self.expect(b'"')?;
            let field = Field::from_name(self.string()?.as_bytes())?;
            if seen & field as u8 != 0 {
                return None;
            }
            seen |= field as u8;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            match field {
                Field::ProfileId => match self.next()? {
                    b'"' => {
                        ids.push(Cow::Borrowed(self.string()?));
                        item.profile_id = Some(ids.len() as u32 - 1);
                    }
                    b'n' => self.literal(b"ull")?,
                    _ => return None,
                },
                Field::Add => item.add = self.list(ids)?,
                Field::Remove => item.remove = self.list(ids)?,
                Field::Set => item.set = self.list(ids)?,
                Field::RemoveAll => item.remove_all = self.bool_or_null()?,
            }
            self.skip_ws();
            match self.next()? {
                b',' => self.skip_ws(),
                b'}' => return Some(item),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn serde_parse(body: &[u8]) -> Option<ParsedBatch<'_>> {
        serde_json::from_slice::<Vec<BatchItem<'_>>>(body)
            .ok()
            .map(ParsedBatch::from_items)
    }

    /// The fast path gives exactly serde's items, or leaves the body to serde.
    fn agrees(body: &str) -> bool {
        let fast = parse_fast(body.as_bytes());
        let slow = serde_parse(body.as_bytes());
        match fast {
            Some(fast) => {
                // Same items; ids may be laid out in another order, so compare item by item.
                let slow = slow.expect("the fast path accepted a body serde refuses");
                assert_eq!(fast.items.len(), slow.items.len(), "{body}");
                for (a, b) in fast.items.iter().zip(&slow.items) {
                    assert_eq!(fast.profile_id(a), slow.profile_id(b), "{body}");
                    for (x, y) in [(&a.add, &b.add), (&a.remove, &b.remove), (&a.set, &b.set)] {
                        assert_eq!(x.is_some(), y.is_some(), "{body}");
                        assert_eq!(fast.list(x), slow.list(y), "{body}");
                    }
                    assert_eq!(a.remove_all, b.remove_all, "{body}");
                }
                true
            }
            None => false,
        }
    }

    #[test]
    fn reads_the_seed_example_shape() {
        let body = r#"[
            {"profileId": "user-1", "segmentIdsToAdd": ["a", "b"], "segmentIdsToRemove": ["c"]},
            {"profileId":"user-2","segmentIdsToSet":[],"removeAllSegments":false},
            {"profileId": "ü-3", "removeAllSegments": true, "segmentIdsToAdd": null}
        ]"#;
        assert!(agrees(body));
        let batch = parse_fast(body.as_bytes()).unwrap();
        assert_eq!(batch.items.len(), 3);
        assert_eq!(batch.profile_id(&batch.items[2]), Some("ü-3"));
        assert_eq!(batch.list(&batch.items[0].add), ["a", "b"]);
        assert_eq!(batch.items[1].set, Some(5..5));
        assert_eq!(batch.items[2].add, None);
        assert_eq!(batch.items[2].remove_all, Some(true));
    }

    #[test]
    fn leaves_everything_unusual_to_serde() {
        for body in [
            r#"[{"profileId": "a\"b", "segmentIdsToAdd": ["x"]}]"#,
            r#"[{"profileId": "a", "profileId": "b"}]"#,
            r#"[{"profileId": "a", "other": 1}]"#,
            r#"[{"profileId": 12}]"#,
            r#"[{"profileId": "a",}]"#,
            r#"[{"profileId": "a"}] x"#,
            r#"[{"profileId": "a"}"#,
            r#"[{"segmentIdsToAdd": ["a", null]}]"#,
            "[{\"profileId\": \"a\tb\"}]",
            r#"{"profileId": "a"}"#,
            r#"[{"removeAllSegments": tru}]"#,
        ] {
            assert!(parse_fast(body.as_bytes()).is_none(), "{body}");
        }
        // serde then decides: the escape is fine, the rest are errors.
        assert!(parse(br#"[{"profileId": "a\"b", "segmentIdsToAdd": ["x"]}]"#).is_ok());
        let err = parse(br#"[{"profileId": "a", "profileId": "b"}]"#).unwrap_err();
        assert!(err.message.contains("duplicate field"), "{}", err.message);
        let err = parse(br#"[{"profileId": "a", "other": 1}]"#).unwrap_err();
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    /// JSON-ish fragments, mostly valid batch shapes, sometimes not.
    fn fragment() -> impl Strategy<Value = String> {
        let string = prop_oneof![
            "[a-z0-9_-]{0,6}".prop_map(|s| format!("\"{s}\"")),
            // Raw quotes, backslashes, controls and multi-byte characters anywhere in a
            // longer string: the eight-byte scan must stop at each of them.
            "[a-z0-9é\"\\\\\t\u{1}/]{0,20}".prop_map(|s| format!("\"{s}\"")),
            Just("\"é\\u00e9\"".to_owned()),
            Just("\"a\\\\b\"".to_owned()),
            Just("\"ü\"".to_owned()),
            Just("\"\t\"".to_owned()),
            Just("null".to_owned()),
            Just("7".to_owned()),
        ];
        let list = prop_oneof![
            prop::collection::vec(string.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            Just("null".to_owned()),
            Just("[,]".to_owned()),
            Just("\"x\"".to_owned()),
        ];
        let value = prop_oneof![
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
            Just("truth".to_owned()),
        ];
        let member = prop_oneof![
            string.prop_map(|s| format!("\"profileId\":{s}")),
            list.clone()
                .prop_map(|l| format!("\"segmentIdsToAdd\": {l}")),
            list.clone()
                .prop_map(|l| format!("\"segmentIdsToRemove\" :{l}")),
            list.prop_map(|l| format!("\"segmentIdsToSet\":\n{l}")),
            value.prop_map(|v| format!("\"removeAllSegments\":{v}")),
            Just("\"unknown\":1".to_owned()),
            Just("\"profile\\u0049d\":\"x\"".to_owned()),
        ];
        prop::collection::vec(prop::collection::vec(member, 0..5), 0..5).prop_map(|items| {
            let items: Vec<String> = items
                .into_iter()
                .map(|members| format!("{{ {} }}", members.join(", ")))
                .collect();
            format!(" [{}]\r\n", items.join(",\n"))
        })
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_serde(body in fragment(), cut in 0usize..200) {
            agrees(&body);
            // Truncated and trailing-garbage bodies too.
            if let Some(prefix) = body.get(..cut.min(body.len())) {
                agrees(prefix);
            }
            agrees(&format!("{body},"));
        }

        #[test]
        fn fast_path_reads_every_plain_body(
            items in prop::collection::vec(
                ("[a-zA-Z0-9:._-]{1,24}", prop::collection::vec("[a-z0-9]{1,8}", 0..8), any::<bool>()),
                0..20,
            )
        ) {
            let body: Vec<String> = items
                .iter()
                .map(|(id, adds, remove_all)| {
                    let adds: Vec<String> = adds.iter().map(|a| format!("\"{a}\"")).collect();
                    format!(
                        "{{\"profileId\":\"{id}\",\"segmentIdsToAdd\":[{}],\"removeAllSegments\":{remove_all}}}",
                        adds.join(",")
                    )
                })
                .collect();
            let body = format!("[{}]", body.join(","));
            prop_assert!(agrees(&body), "the fast path refused a plain body: {}", body);
        }
    }
}
