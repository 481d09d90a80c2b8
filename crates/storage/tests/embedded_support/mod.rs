//! Shared helpers of the embedded store tests: a test configuration, batch builders and a
//! reference model of the documented semantics.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use segmart_domain::profile::{LiveSegment, ResolvedUpdate};
use segmart_domain::{ManualClock, SegmentNum, Timestamp};
use segmart_storage::embedded::{EmbeddedConfig, EmbeddedProfileStore};
use segmart_storage::profile::{ProfileKey, ProfileMutation, ProfileView, WriteBatch};

pub const DAY: i64 = 86_400;
/// A fixed start time for tests: 2027-01-15T08:00:00Z.
pub const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

/// A configuration that never snapshots or cleans up on its own.
pub fn config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        snapshot_after_wal_bytes: u64::MAX,
        snapshot_on_shutdown_after_wal_bytes: u64::MAX,
        cleanup_interval: Duration::from_secs(365 * 24 * 3600),
        ..EmbeddedConfig::new(dir)
    }
}

pub fn open(dir: &Path, clock: &ManualClock) -> EmbeddedProfileStore {
    EmbeddedProfileStore::open(config(dir), Arc::new(clock.clone())).expect("store opens")
}

pub fn key(n: u128) -> ProfileKey {
    // Spread test keys over shards and home positions.
    ProfileKey(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ (n << 64))
}

pub fn add(key: ProfileKey, links: &[(u32, Timestamp)]) -> ProfileMutation {
    ProfileMutation::Update {
        key,
        update: ResolvedUpdate {
            clear: false,
            remove: Vec::new(),
            add: links.iter().map(|(s, e)| (SegmentNum(*s), *e)).collect(),
        },
    }
}

pub fn remove(key: ProfileKey, segments: &[u32]) -> ProfileMutation {
    ProfileMutation::Update {
        key,
        update: ResolvedUpdate {
            clear: false,
            remove: segments.iter().map(|s| SegmentNum(*s)).collect(),
            add: Vec::new(),
        },
    }
}

pub fn set(key: ProfileKey, links: &[(u32, Timestamp)]) -> ProfileMutation {
    ProfileMutation::Update {
        key,
        update: ResolvedUpdate {
            clear: true,
            remove: Vec::new(),
            add: links.iter().map(|(s, e)| (SegmentNum(*s), *e)).collect(),
        },
    }
}

pub fn delete(key: ProfileKey) -> ProfileMutation {
    ProfileMutation::Delete { key }
}

pub fn batch(at: Timestamp, mutations: Vec<ProfileMutation>) -> WriteBatch {
    WriteBatch::of(at, mutations)
}

/// Segment numbers and expiry seconds of a view, for compact assertions.
pub fn links(view: &Option<ProfileView>) -> Option<Vec<(u32, i64)>> {
    view.as_ref().map(|v| pairs(&v.segments))
}

pub fn pairs(segments: &[LiveSegment]) -> Vec<(u32, i64)> {
    segments
        .iter()
        .map(|s| (s.num.0, s.expires_at.millis()))
        .collect()
}

/// The documented semantics, computed the simple way.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub expiry_secs: i64,
    /// The store's clock floor (milliseconds).
    pub floor_ms: i64,
    /// profile → (updated, segment → expiry), whole seconds.
    pub profiles: BTreeMap<ProfileKey, (i64, BTreeMap<u32, i64>)>,
}

impl Model {
    pub fn new(expiry_secs: i64) -> Model {
        Model {
            expiry_secs,
            floor_ms: i64::MIN,
            profiles: BTreeMap::new(),
        }
    }

    pub fn apply(&mut self, batch: &WriteBatch) {
        let effective = batch.at.millis().max(self.floor_ms);
        self.floor_ms = effective;
        let at_s = effective.div_euclid(1000);
        for mutation in batch.mutations() {
            match mutation {
                ProfileMutation::Delete { key } => {
                    self.profiles.remove(&key);
                }
                ProfileMutation::Update { key, update } => {
                    let alive = self
                        .profiles
                        .get(&key)
                        .is_some_and(|(updated, _)| updated + self.expiry_secs > at_s);
                    let mut links: BTreeMap<u32, i64> = match self.profiles.get(&key) {
                        Some((_, links)) if alive && !update.clear => links
                            .iter()
                            .filter(|(_, e)| **e > at_s)
                            .map(|(s, e)| (*s, *e))
                            .collect(),
                        _ => BTreeMap::new(),
                    };
                    for segment in &update.remove {
                        links.remove(&segment.0);
                    }
                    for (segment, expiry) in &update.add {
                        let expiry = expiry.secs().clamp(0, u32::MAX as i64);
                        if expiry > at_s {
                            links.insert(segment.0, expiry);
                        } else {
                            links.remove(&segment.0);
                        }
                    }
                    self.profiles.insert(key, (at_s, links));
                }
            }
        }
    }

    /// Clean-up raises the floor (it is invisible otherwise).
    pub fn cleanup(&mut self, now: Timestamp) {
        self.floor_ms = self.floor_ms.max(now.millis());
    }

    pub fn read(&self, key: ProfileKey, now: Timestamp) -> Option<Vec<(u32, i64)>> {
        let now_s = now.secs();
        let (updated, links) = self.profiles.get(&key)?;
        if updated + self.expiry_secs <= now_s {
            return None;
        }
        Some(
            links
                .iter()
                .filter(|(_, e)| **e > now_s)
                .map(|(s, e)| (*s, e * 1000))
                .collect(),
        )
    }
}
