//! Realistic synthetic data for benchmarks: cookie-like user ids, ~6.5 segments per user drawn
//! from a pool, deterministic for a seed.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// A deterministic generator.
pub struct Generator {
    rng: SmallRng,
    pub segment_pool: u32,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Generator {
    pub fn new(seed: u64, segment_pool: u32) -> Self {
        Generator {
            rng: SmallRng::seed_from_u64(seed),
            segment_pool,
        }
    }

    /// A 22-character base64url id, like a 128-bit platform cookie.
    pub fn cookie_id(&mut self) -> String {
        (0..22)
            .map(|_| ALPHABET[self.rng.random_range(0..64usize)] as char)
            .collect()
    }

    /// The i-th user id of a data set (stable, so lookups can find loaded users).
    pub fn user_id(seed: u64, i: u64) -> String {
        let mut rng = SmallRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..22)
            .map(|_| ALPHABET[rng.random_range(0..64usize)] as char)
            .collect()
    }

    /// 1..=12 distinct segment indexes, mean ≈ 6.5.
    pub fn segments(&mut self) -> Vec<u32> {
        let n = self.rng.random_range(1..=12usize);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let s = self.rng.random_range(0..self.segment_pool);
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n)
    }
}

pub fn segment_name(i: u32) -> String {
    format!("seg-{i:05}")
}

/// A profile batch body as close to `limit` bytes as possible, and its item count.
pub fn batch_body(generator_: &mut Generator, limit: usize) -> (Vec<u8>, usize) {
    let mut body = Vec::with_capacity(limit);
    body.push(b'[');
    let mut items = 0;
    loop {
        let id = generator_.cookie_id();
        let segs: Vec<String> = generator_
            .segments()
            .into_iter()
            .map(|s| format!("\"{}\"", segment_name(s)))
            .collect();
        let item = format!(
            "{{\"profileId\":\"{id}\",\"segmentIdsToAdd\":[{}]}}",
            segs.join(",")
        );
        if body.len() + item.len() + 2 > limit {
            break;
        }
        if items > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item.as_bytes());
        items += 1;
    }
    body.push(b']');
    (body, items)
}

/// Percentile of sorted nanosecond samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}
