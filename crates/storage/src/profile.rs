//! The data-plane store: profiles (user → segment links with expiries).
//!
//! The interface is batched both ways so a networked backend (Redis Cluster) needs one
//! pipelined round trip per batch, never one per key.

use async_trait::async_trait;
use segmart_domain::profile::{LiveSegment, ResolvedUpdate};
use segmart_domain::{ProfileId, SegmentNum, Timestamp};

use crate::packed;

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

    /// SipHash-1-3 with 128-bit output of the folder number (4 bytes, little-endian) followed by
    /// the id's bytes, computed in one pass over the id: the message's first word joins the
    /// folder number with the id's first 4 bytes, so the id is never copied or buffered.
    pub fn key_bytes(&self, folder_num: u32, profile: &[u8]) -> ProfileKey {
        let mut state = SipState::new(self.k0, self.k1);
        let length = 4 + profile.len();
        let (head, rest) = profile.split_at(profile.len().min(4));
        let first = folder_num as u64 | (load_le(head) << 32);
        let tail = if head.len() < 4 {
            first
        } else {
            state.absorb(first);
            let mut words = rest.chunks_exact(8);
            for word in &mut words {
                state.absorb(u64::from_le_bytes(word.try_into().expect("8 bytes")));
            }
            load_le(words.remainder())
        };
        ProfileKey(state.finish128(length, tail))
    }
}

/// The little-endian value of up to 8 bytes.
#[inline(always)]
fn load_le(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// SipHash state with the 128-bit output's initialisation (Aumasson and Bernstein, §2 and the
/// reference implementation's 128-bit variant), one compression round per word, three at the end.
struct SipState([u64; 4]);

impl SipState {
    #[inline(always)]
    fn new(k0: u64, k1: u64) -> SipState {
        SipState([
            k0 ^ 0x736f_6d65_7073_6575,
            k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee,
            k0 ^ 0x6c79_6765_6e65_7261,
            k1 ^ 0x7465_6462_7974_6573,
        ])
    }

    #[inline(always)]
    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.0;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    #[inline(always)]
    fn absorb(&mut self, word: u64) {
        self.0[3] ^= word;
        self.round();
        self.0[0] ^= word;
    }

    #[inline(always)]
    fn xor_all(&self) -> u64 {
        self.0[0] ^ self.0[1] ^ self.0[2] ^ self.0[3]
    }

    /// The 128-bit hash of a message of `length` bytes whose last `length % 8` bytes are `tail`.
    #[inline(always)]
    fn finish128(mut self, length: usize, tail: u64) -> u128 {
        self.absorb(((length as u64 & 0xff) << 56) | tail);
        self.0[2] ^= 0xee;
        self.round();
        self.round();
        self.round();
        let low = self.xor_all();
        self.0[1] ^= 0xdd;
        self.round();
        self.round();
        self.round();
        let high = self.xor_all();
        low as u128 | ((high as u128) << 64)
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
///
/// The mutations are held packed (see `crate::packed`): one buffer for the whole batch, so
/// building a batch allocates nothing per profile and a batch of 7 000 profiles with 6.5 links
/// each takes about 540 kB. Expiries are kept in whole seconds, as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// The profiles' "last updated" time (drives the 14-day profile expiry).
    pub at: Timestamp,
    count: usize,
    packed: Vec<u8>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new(at: Timestamp) -> Self {
        Self::with_capacity(at, 0)
    }

    /// An empty batch with room for `bytes` of packed mutations (an update takes 25 bytes plus
    /// 4 per removed and 8 per added link; a delete 17).
    pub fn with_capacity(at: Timestamp, bytes: usize) -> Self {
        WriteBatch {
            at,
            count: 0,
            packed: Vec::with_capacity(bytes),
        }
    }

    /// A batch of these mutations.
    pub fn of(at: Timestamp, mutations: impl IntoIterator<Item = ProfileMutation>) -> Self {
        let mut batch = Self::new(at);
        for mutation in mutations {
            batch.push(&mutation);
        }
        batch
    }

    pub fn push(&mut self, mutation: &ProfileMutation) {
        match mutation {
            ProfileMutation::Update { key, update } => self.push_update(*key, update),
            ProfileMutation::Delete { key } => self.push_delete(*key),
        }
    }

    /// An update: drop every link first when `clear`, then `remove`, then `add` (each with its
    /// absolute expiry).
    pub fn push_update(&mut self, key: ProfileKey, update: &ResolvedUpdate) {
        packed::put_update(&mut self.packed, key, update);
        self.count += 1;
    }

    pub fn push_delete(&mut self, key: ProfileKey) {
        packed::put_delete(&mut self.packed, key);
        self.count += 1;
    }

    /// How many mutations the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of packed mutations.
    pub fn packed_bytes(&self) -> usize {
        self.packed.len()
    }

    /// Bytes of memory the batch holds.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.packed.capacity()
    }

    /// The mutations, in order (expiries in whole seconds).
    pub fn mutations(&self) -> impl Iterator<Item = ProfileMutation> + '_ {
        let mut rest = self.packed.as_slice();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mutation =
                packed::decode_mutation(&mut rest).expect("a batch holds what it packed");
            Some(match mutation {
                packed::Mutation::Delete { key } => ProfileMutation::Delete { key },
                packed::Mutation::Update {
                    key,
                    clear,
                    removes,
                    adds,
                } => ProfileMutation::Update {
                    key,
                    update: ResolvedUpdate {
                        clear,
                        remove: packed::words(removes).map(SegmentNum).collect(),
                        add: packed::pairs(adds)
                            .map(|(segment, expiry)| {
                                (SegmentNum(segment), Timestamp::from_secs(expiry.into()))
                            })
                            .collect(),
                    },
                },
            })
        })
    }

    /// The packed mutations.
    pub(crate) fn packed(&self) -> &[u8] {
        &self.packed
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are persisted (log, snapshots) and address every stored profile, so the one-pass
    /// hash must give exactly the bytes of SipHash-1-3-128 over folder number ‖ id, at every
    /// id length around the word boundaries, for any secret.
    #[test]
    fn profile_keys_are_siphash_1_3_128_of_folder_number_and_id() {
        use siphasher::sip128::{Hasher128, SipHasher13};
        use std::hash::Hasher;
        let id: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for (secret_seed, folder_num) in [(0u8, 0u32), (1, 7), (0xa5, u32::MAX), (200, 65_536)] {
            let secret: [u8; 16] =
                std::array::from_fn(|i| (i as u8).wrapping_mul(29) ^ secret_seed);
            let keyer = ProfileKeyer::new(secret);
            for len in 0..=id.len() {
                let mut reference = SipHasher13::new_with_keys(keyer.k0, keyer.k1);
                reference.write(&folder_num.to_le_bytes());
                reference.write(&id[..len]);
                assert_eq!(
                    keyer.key_bytes(folder_num, &id[..len]),
                    ProfileKey(reference.finish128().as_u128()),
                    "id of {len} bytes, folder {folder_num}"
                );
            }
        }
    }

    #[test]
    fn adds_are_packed_sorted_by_segment_with_repeats_in_their_order() {
        let at = Timestamp::from_secs(1_000);
        for count in [5u32, 16, 17, 200] {
            let add: Vec<_> = (0..count)
                .map(|i| {
                    let segment = SegmentNum((i * 7919) % (count / 2 + 1));
                    (segment, Timestamp::from_secs(2_000 + i as i64))
                })
                .collect();
            let mut expected = add.clone();
            expected.sort_by_key(|(segment, _)| *segment);
            let update = ResolvedUpdate {
                add,
                ..ResolvedUpdate::default()
            };
            let mut batch = WriteBatch::new(at);
            batch.push_update(ProfileKey(7), &update);
            let Some(ProfileMutation::Update { update, .. }) = batch.mutations().next() else {
                panic!("one update");
            };
            assert_eq!(update.add, expected, "{count} adds");
        }
    }

    #[test]
    fn a_batch_gives_back_its_mutations_in_order_with_expiries_in_whole_seconds() {
        let at = Timestamp::from_millis(1_700_000_000_500);
        let update = ResolvedUpdate {
            clear: true,
            remove: vec![SegmentNum(3), SegmentNum(4)],
            add: vec![
                (SegmentNum(9), Timestamp::from_millis(1_700_000_600_999)),
                (SegmentNum(1), Timestamp::from_millis(-5)),
            ],
        };
        let mut batch = WriteBatch::new(at);
        assert!(batch.is_empty());
        batch.push_update(ProfileKey(1), &update);
        batch.push_delete(ProfileKey(u128::MAX));
        batch.push_update(ProfileKey(2), &ResolvedUpdate::default());
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.packed_bytes(), (25 + 8 + 16) + 17 + 25);
        let expected = vec![
            ProfileMutation::Update {
                key: ProfileKey(1),
                update: ResolvedUpdate {
                    // Sorted by segment as packed.
                    add: vec![
                        // Before the epoch clamps to it, as the store keeps it.
                        (SegmentNum(1), Timestamp::from_secs(0)),
                        (SegmentNum(9), Timestamp::from_secs(1_700_000_600)),
                    ],
                    ..update
                },
            },
            ProfileMutation::Delete {
                key: ProfileKey(u128::MAX),
            },
            ProfileMutation::Update {
                key: ProfileKey(2),
                update: ResolvedUpdate::default(),
            },
        ];
        assert_eq!(batch.mutations().collect::<Vec<_>>(), expected);
        assert_eq!(WriteBatch::of(at, expected.clone()), batch);
        assert!(batch.memory_bytes() >= batch.packed_bytes());
    }
}
