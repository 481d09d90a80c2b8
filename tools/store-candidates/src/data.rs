//! Deterministic synthetic profiles and their binary encodings.
//!
//! Profile `i` is a pure function of `(seed, i)`, so the data never has to be held in memory:
//! the loader generates one batch at a time, and lookups or checks regenerate any profile
//! from its index. Indices at or above the profile count are never loaded and serve as misses.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// A segment link: (segment number, expiry in unix seconds).
pub type Link = (u32, u32);

/// The fixed "current time" of the measurement (2026-09-21), so runs are reproducible.
pub const NOW: u32 = 1_790_000_000;
const DAY: u32 = 86_400;
/// Segment numbers are drawn uniformly from `1..=SEGMENT_POOL`.
pub const SEGMENT_POOL: u32 = 20_000;
/// Segments per profile are uniform in `1..=MAX_LINKS` (mean 6.5).
pub const MAX_LINKS: usize = 12;
/// Profiles per write batch: what one 1 MB JSON update batch holds.
pub const BATCH_PROFILES: usize = 7_700;
/// A profile not updated for this long is treated as gone.
pub const PROFILE_TTL_SECS: u32 = 14 * DAY;
/// The folder number mixed into every profile key.
const FOLDER_NUM: u32 = 1;

/// SplitMix64: small, fast and good enough for workload generation.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for these ranges).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Generates profile `i` on demand.
#[derive(Clone)]
pub struct Dataset {
    seed: u64,
    k0: u64,
    k1: u64,
}

impl Dataset {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5EC2_E7C0_0C1E_5EED);
        Dataset {
            seed,
            k0: rng.next_u64(),
            k1: rng.next_u64(),
        }
    }

    /// A cookie-like id: 32 lowercase hex characters.
    fn cookie_id(&self, i: u64) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut rng = Rng::new(self.seed.rotate_left(17) ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
        let bits = ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128;
        let mut out = [0u8; 32];
        for (n, c) in out.iter_mut().enumerate() {
            *c = HEX[((bits >> (4 * n)) & 0xF) as usize];
        }
        out
    }

    /// The profile key: keyed SipHash-1-3 (128-bit) of (folder number, id), as the server derives it.
    pub fn key(&self, i: u64) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(&FOLDER_NUM.to_le_bytes());
        h.write(&self.cookie_id(i));
        h.finish128().as_u128()
    }

    /// Profile `i`: its update time and its links (distinct segments, ascending).
    /// About 6% of the links are already expired at [`NOW`].
    pub fn profile(&self, i: u64, links: &mut Vec<Link>) -> u32 {
        let mut rng = Rng::new(self.seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let count = 1 + rng.below(MAX_LINKS as u64) as usize;
        links.clear();
        while links.len() < count {
            let seg = 1 + rng.below(SEGMENT_POOL as u64) as u32;
            if links.iter().all(|&(s, _)| s != seg) {
                let expiry = NOW - 2 * DAY + rng.below(32 * DAY as u64) as u32;
                links.push((seg, expiry));
            }
        }
        links.sort_unstable_by_key(|&(seg, _)| seg);
        NOW - rng.below(3 * DAY as u64) as u32
    }

    /// Fills `batch` with profiles `first..first + count`.
    pub fn fill_batch(&self, first: u64, count: usize, batch: &mut Batch) {
        batch.clear();
        let mut links = Vec::with_capacity(MAX_LINKS);
        for i in first..first + count as u64 {
            let updated_at = self.profile(i, &mut links);
            batch.push(self.key(i), updated_at, &links);
        }
    }
}

/// One write batch, stored flat so refilling it allocates nothing.
#[derive(Default)]
pub struct Batch {
    entries: Vec<(u128, u32, u32, u32)>, // key, updated_at, first link, link count
    links: Vec<Link>,
}

impl Batch {
    pub fn with_capacity(profiles: usize) -> Self {
        Batch {
            entries: Vec::with_capacity(profiles),
            links: Vec::with_capacity(profiles * MAX_LINKS),
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.links.clear();
    }

    pub fn push(&mut self, key: u128, updated_at: u32, links: &[Link]) {
        self.entries
            .push((key, updated_at, self.links.len() as u32, links.len() as u32));
        self.links.extend_from_slice(links);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn memberships(&self) -> usize {
        self.links.len()
    }

    /// `(key, updated_at, links)` for every profile in the batch.
    pub fn iter(&self) -> impl Iterator<Item = (u128, u32, &[Link])> + '_ {
        self.entries.iter().map(|&(key, updated_at, start, len)| {
            (
                key,
                updated_at,
                &self.links[start as usize..(start + len) as usize],
            )
        })
    }
}

/// Keeps the links that are live at `now`, or none if the profile itself has lapsed.
pub fn live_links(
    updated_at: u32,
    links: impl Iterator<Item = Link>,
    now: u32,
    out: &mut Vec<Link>,
) {
    out.clear();
    if updated_at.saturating_add(PROFILE_TTL_SECS) > now {
        out.extend(links.filter(|&(_, expiry)| expiry > now));
    }
}

/// The value stored in the key-value engines: `updated_at` then `(segment, expiry)` pairs, all u32 LE.
pub fn encode_value(updated_at: u32, links: &[Link], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&updated_at.to_le_bytes());
    for &(seg, expiry) in links {
        out.extend_from_slice(&seg.to_le_bytes());
        out.extend_from_slice(&expiry.to_le_bytes());
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Decodes [`encode_value`] output straight into the live links.
pub fn decode_value_live(value: &[u8], now: u32, out: &mut Vec<Link>) {
    let updated_at = u32_at(value, 0);
    let links = value[4..]
        .chunks_exact(8)
        .map(|c| (u32_at(c, 0), u32_at(c, 4)));
    live_links(updated_at, links, now, out);
}

/// One log record: key (16 B LE), link count (1 B), then the [`encode_value`] bytes.
pub fn encode_log_record(key: u128, updated_at: u32, links: &[Link], out: &mut Vec<u8>) {
    out.extend_from_slice(&key.to_le_bytes());
    out.push(links.len() as u8);
    out.extend_from_slice(&updated_at.to_le_bytes());
    for &(seg, expiry) in links {
        out.extend_from_slice(&seg.to_le_bytes());
        out.extend_from_slice(&expiry.to_le_bytes());
    }
}

/// Decodes the records of one log frame into `batch`.
pub fn decode_log_frame(mut frame: &[u8], batch: &mut Batch) {
    batch.clear();
    let mut links = Vec::with_capacity(MAX_LINKS);
    while !frame.is_empty() {
        let key = u128::from_le_bytes(frame[..16].try_into().expect("16 bytes"));
        let count = frame[16] as usize;
        let updated_at = u32_at(frame, 17);
        let body = &frame[21..21 + 8 * count];
        links.clear();
        links.extend(body.chunks_exact(8).map(|c| (u32_at(c, 0), u32_at(c, 4))));
        batch.push(key, updated_at, &links);
        frame = &frame[21 + 8 * count..];
    }
}

/// Keys to look up: `count` random loaded profiles (`hits`) or never-loaded ones.
/// Returns `(index, key)` pairs; the index lets a check regenerate the expected answer.
pub fn query_keys(
    data: &Dataset,
    profiles: u64,
    count: usize,
    hits: bool,
    seed: u64,
) -> Vec<(u64, u128)> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let i = if hits {
                rng.below(profiles)
            } else {
                profiles + rng.below(profiles.max(1) * 4)
            };
            (i, data.key(i))
        })
        .collect()
}
