//! The data-plane store: profiles (user → segment links with expiries).
//!
//! The interface is batched both ways so a networked backend (Redis Cluster) needs one
//! pipelined round trip per batch, never one per key.

use async_trait::async_trait;
use segmart_domain::profile::{LiveSegment, ResolvedUpdate};
use segmart_domain::{ProfileId, Timestamp};
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// A profile's address in the store: a keyed 128-bit SipHash of (folder number, profile id).
///
/// The store never holds the id itself (like Aerospike's digest): 16 bytes per profile whatever
/// the id length, and buyers cannot list user ids out of it. With 10^9 profiles the chance of any
/// two colliding is below 10^-20. The hash key is secret per deployment, so crafted ids cannot
/// force collisions or probe-sequence floods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileKey(pub u128);

/// Turns profile ids into [`ProfileKey`]s with the deployment's secret hash key.
#[derive(Clone)]
pub struct ProfileKeyer {
    k0: u64,
    k1: u64,
}

impl ProfileKeyer {
    pub fn new(secret: [u8; 16]) -> Self {
        ProfileKeyer {
            k0: u64::from_le_bytes(secret[..8].try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(secret[8..].try_into().expect("8 bytes")),
        }
    }

    pub fn key(&self, folder_num: u32, profile: &ProfileId) -> ProfileKey {
        self.key_bytes(folder_num, profile.as_str().as_bytes())
    }

    pub fn key_bytes(&self, folder_num: u32, profile: &[u8]) -> ProfileKey {
        let mut hasher = SipHasher13::new_with_keys(self.k0, self.k1);
        hasher.write(&folder_num.to_le_bytes());
        hasher.write(profile);
        ProfileKey(hasher.finish128().as_u128())
    }
}

/// One change to one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileMutation {
    /// Clear / remove / add links (in that order) and mark the profile updated.
    Update {
        key: ProfileKey,
        update: ResolvedUpdate,
    },
    /// Delete the profile and all its links.
    Delete { key: ProfileKey },
}

/// Mutations that are made durable together, all stamped with one update time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// The profiles' "last updated" time (drives the 14-day profile expiry).
    pub at: Timestamp,
    pub mutations: Vec<ProfileMutation>,
}

/// A profile as reads return it: only live links, in ascending segment-number order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileView {
    pub updated_at: Timestamp,
    pub segments: Vec<LiveSegment>,
}

/// Why a profile-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileStoreError {
    /// The write queue is full: nothing of the batch was accepted; retry later.
    #[error("profile write queue is full")]
    Saturated,
    /// The store is shutting down and accepts no more writes.
    #[error("profile store is shutting down")]
    ShuttingDown,
    #[error("profile store failed: {0}")]
    Backend(String),
}

/// Counters for `/metrics` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileStoreStats {
    pub profiles: u64,
    pub memberships: u64,
    /// Bytes of memory the store's tables hold (allocated, not just used).
    pub memory_bytes: u64,
    pub wal_bytes: u64,
    pub batches_written: u64,
}

/// The profile store.
#[async_trait]
pub trait ProfileStore: Send + Sync + 'static {
    /// Applies a batch. When this returns `Ok`, the whole batch is durable and visible to reads.
    /// `Err(Saturated)` means nothing was accepted.
    async fn write(&self, batch: WriteBatch) -> Result<(), ProfileStoreError>;

    /// Reads many profiles at once as of `now`: expired links and profiles not updated within the
    /// profile expiry are absent, whatever the background clean-up has done so far.
    /// The answer has one entry per key, in order.
    async fn read(
        &self,
        keys: &[ProfileKey],
        now: Timestamp,
    ) -> Result<Vec<Option<ProfileView>>, ProfileStoreError>;

    fn stats(&self) -> ProfileStoreStats;

    /// How many live profiles hold each segment as of `now` (segment number → profiles).
    /// A full pass over the store: callers cache the answer.
    async fn segment_sizes(
        &self,
        now: Timestamp,
    ) -> Result<std::collections::HashMap<u32, u64>, ProfileStoreError>;

    /// Stops accepting writes, makes everything acknowledged durable, and releases resources.
    async fn shutdown(&self) -> Result<(), ProfileStoreError>;
}
