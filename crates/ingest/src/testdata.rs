//! Realistic batch files for benchmarks and tests, generated deterministically from a seed.
//!
//! A line looks like what providers send: desktop ids as 32-hex or 22-character base64url
//! cookies, mobile ids as `m_raw:` IDFAs (uppercase) and GAIDs (lowercase) or `m_md5:` digests,
//! a DSP id on some desktop lines, 1..=10 segments to add and 0..=4 to remove (6.5 per line on
//! average), drawn with a popularity skew from a pool of [`SEGMENT_POOL`] numeric segment ids.
//! Random ids make the file compress about 2:1 at gzip level 6, near the worst case for inflate
//! speed per line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Number of distinct segment ids lines draw from.
pub const SEGMENT_POOL: usize = 20_000;
/// The header line written first.
pub const HEADER: &str = "DMP_USER_ID\tDSP_USER_ID\tSEGMENTS_TO_ADD\tSEGMENTS_TO_REMOVE\n";

/// The segment id at `index` in the pool (`0..SEGMENT_POOL`): six-digit numbers from `100000`.
pub fn segment_id(index: usize) -> String {
    (100_000 + index).to_string()
}

/// What a generated file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Data lines, header excluded.
    pub lines: u64,
    /// Segment ids in SEGMENTS_TO_ADD, over all lines.
    pub segments_to_add: u64,
    /// Segment ids in SEGMENTS_TO_REMOVE, over all lines.
    pub segments_to_remove: u64,
    /// Lines with a mobile DMP user id.
    pub mobile_lines: u64,
    /// Lines with a DSP user id.
    pub dsp_lines: u64,
    /// Size of the text, header included.
    pub uncompressed_bytes: u64,
    /// Size of the gzip file (0 for [`write_realistic_text`]).
    pub compressed_bytes: u64,
}

/// Writes a gzip (level 6) batch file of `lines` data lines after the header.
pub fn write_realistic_file(path: &Path, lines: u64, seed: u64) -> io::Result<GeneratedFile> {
    let file = File::create(path)?;
    let encoder = GzEncoder::new(BufWriter::with_capacity(1 << 20, file), Compression::new(6));
    let mut out = BufWriter::with_capacity(1 << 20, encoder);
    let mut generated = write_realistic_text(&mut out, lines, seed)?;
    let encoder = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    let mut file = encoder.finish()?;
    file.flush()?;
    generated.compressed_bytes = file.get_ref().metadata()?.len();
    Ok(generated)
}

/// Writes the uncompressed text of a batch file, header first.
pub fn write_realistic_text(
    mut out: impl Write,
    lines: u64,
    seed: u64,
) -> io::Result<GeneratedFile> {
    let mut random = SplitMix64(seed);
    let mut generated = GeneratedFile::default();
    let mut line = Vec::with_capacity(512);
    out.write_all(HEADER.as_bytes())?;
    generated.uncompressed_bytes = HEADER.len() as u64;
    let mut chosen = Vec::with_capacity(16);
    for _ in 0..lines {
        line.clear();
        let kind = random.below(100);
        let mobile = kind >= 65;
        match kind {
            0..=44 => push_hex(&mut line, &mut random, 32, false),
            45..=64 => push_base64url(&mut line, &mut random, 22),
            65..=77 => {
                line.extend_from_slice(b"m_raw:");
                push_uuid(&mut line, &mut random, true);
            }
            78..=90 => {
                line.extend_from_slice(b"m_raw:");
                push_uuid(&mut line, &mut random, false);
            }
            _ => {
                line.extend_from_slice(b"m_md5:");
                push_hex(&mut line, &mut random, 32, false);
            }
        }
        line.push(b'\t');
        if !mobile && random.below(100) < 30 {
            push_base64url(&mut line, &mut random, 20);
            generated.dsp_lines += 1;
        }
        line.push(b'\t');
        let adds = 1 + random.below(10) as usize;
        let removes = match random.below(100) {
            0..=44 => 0,
            45..=74 => 1,
            75..=89 => 2,
            _ => 4,
        };
        chosen.clear();
        while chosen.len() < adds + removes {
            // Squaring a uniform draw favours low indices: a few popular segments, a long tail.
            let uniform = random.next_f64();
            let index = (uniform * uniform * SEGMENT_POOL as f64) as usize;
            if !chosen.contains(&index) {
                chosen.push(index);
            }
        }
        push_segments(&mut line, &chosen[..adds]);
        line.push(b'\t');
        push_segments(&mut line, &chosen[adds..]);
        line.push(b'\n');
        out.write_all(&line)?;
        generated.lines += 1;
        generated.segments_to_add += adds as u64;
        generated.segments_to_remove += removes as u64;
        generated.mobile_lines += u64::from(mobile);
        generated.uncompressed_bytes += line.len() as u64;
    }
    out.flush()?;
    Ok(generated)
}

/// Writes a taxonomy naming every segment of the pool, half of them priced.
pub fn write_realistic_taxonomy(path: &Path) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    out.write_all(b"[\n")?;
    for index in 0..SEGMENT_POOL {
        let separator = if index + 1 == SEGMENT_POOL { "" } else { "," };
        let id = segment_id(index);
        match index % 4 {
            0 => writeln!(out, r#"{{"id": {id}, "name": "Segment {id}"}}{separator}"#)?,
            1 => writeln!(
                out,
                r#"{{"id": {id}, "name": "Segment {id}", "cost_type": "FIX", "cost_value": "0.{}", "currency": "USD"}}{separator}"#,
                index % 90 + 10
            )?,
            2 => writeln!(
                out,
                r#"{{"id": "{id}", "name": "Segment {id}", "cost_type": "RATE", "cost_value": {}, "currency": "RUB", "advertisers": [1000, 2000]}}{separator}"#,
                index % 30
            )?,
            _ => writeln!(
                out,
                r#"{{"id": {id}, "name": "Segment {id}", "advertisers": []}}{separator}"#
            )?,
        }
    }
    out.write_all(b"]\n")?;
    out.flush()
}

fn push_segments(line: &mut Vec<u8>, indices: &[usize]) {
    for (i, index) in indices.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(segment_id(*index).as_bytes());
    }
}

fn push_hex(line: &mut Vec<u8>, random: &mut SplitMix64, length: usize, upper: bool) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut bits = 0u64;
    for i in 0..length {
        if i % 16 == 0 {
            bits = random.next_u64();
        }
        line.push(digits[(bits & 0xf) as usize]);
        bits >>= 4;
    }
}

fn push_base64url(line: &mut Vec<u8>, random: &mut SplitMix64, length: usize) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u64;
    for i in 0..length {
        if i % 10 == 0 {
            bits = random.next_u64();
        }
        line.push(ALPHABET[(bits & 0x3f) as usize]);
        bits >>= 6;
    }
}

/// A version-4 UUID, uppercase like an IDFA or lowercase like a GAID.
fn push_uuid(line: &mut Vec<u8>, random: &mut SplitMix64, upper: bool) {
    for (group, length) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if group > 0 {
            line.push(b'-');
        }
        match group {
            2 => {
                line.push(b'4');
                push_hex(line, random, length - 1, upper);
            }
            3 => {
                let variant = [
                    b'8',
                    b'9',
                    if upper { b'A' } else { b'a' },
                    if upper { b'B' } else { b'b' },
                ];
                line.push(variant[random.below(4) as usize]);
                push_hex(line, random, length - 1, upper);
            }
            _ => push_hex(line, random, length, upper),
        }
    }
}

/// SplitMix64: a small, fast, seedable generator; plenty for test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchItem, BatchReader};
    use crate::taxonomy::parse_taxonomy;

    #[test]
    fn generated_files_parse_cleanly_and_match_their_summary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dmp.2015-07-15_12-00-00.f1.txt.gz");
        let generated = write_realistic_file(&path, 20_000, 7).unwrap();
        assert_eq!(generated.lines, 20_000);
        let per_line = (generated.segments_to_add + generated.segments_to_remove) as f64 / 20_000.0;
        assert!((6.2..6.8).contains(&per_line), "{per_line}");
        assert!(generated.mobile_lines > 6_000 && generated.mobile_lines < 8_000);
        assert_eq!(
            generated.compressed_bytes,
            std::fs::metadata(&path).unwrap().len()
        );

        let mut reader = BatchReader::new(File::open(&path).unwrap());
        while let Some(item) = reader.next_item().unwrap() {
            if let BatchItem::Rejected(rejection) = item {
                panic!("{rejection}");
            }
        }
        let counts = reader.counts();
        assert_eq!(counts.parsed_lines, generated.lines);
        assert_eq!(counts.segments_to_add, generated.segments_to_add);
        assert_eq!(counts.segments_to_remove, generated.segments_to_remove);
        assert_eq!(reader.progress().bytes_out, generated.uncompressed_bytes);
    }

    #[test]
    fn the_same_seed_gives_the_same_file() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_realistic_text(&mut a, 500, 42).unwrap();
        write_realistic_text(&mut b, 500, 42).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        write_realistic_text(&mut c, 500, 43).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn the_generated_taxonomy_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dmp.2015-07-15_12-00-00.f1.taxonomy.json");
        write_realistic_taxonomy(&path).unwrap();
        let entries = parse_taxonomy(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(entries.len(), SEGMENT_POOL);
        assert_eq!(entries[5].id.as_str(), segment_id(5));
    }
}
