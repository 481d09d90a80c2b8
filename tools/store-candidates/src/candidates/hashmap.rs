//! `hashbrown::HashMap<u128, Box<[(u32, u32)]>>`: one heap block per profile.
//!
//! The key is already a keyed 128-bit hash, so the hasher just folds it to 64 bits.
//! This layout has no field for the profile's `updated_at`; keeping it would cost
//! one more pair (8 B) per profile.

use crate::data::{Batch, Link, NOW, live_links};
use crate::store::Store;
use hashbrown::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517C_C1B7_2722_0A95);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64 ^ (key >> 64) as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub struct HashMapStore {
    map: HashMap<u128, Box<[Link]>, BuildHasherDefault<FoldHasher>>,
    link_bytes: u64,
}

impl HashMapStore {
    /// Pre-sized for `profiles`, as a restart knows its size from the log or snapshot.
    pub fn new(profiles: usize) -> Self {
        HashMapStore {
            map: HashMap::with_capacity_and_hasher(profiles, Default::default()),
            link_bytes: 0,
        }
    }
}

impl Store for HashMapStore {
    fn apply(&mut self, batch: &Batch) -> anyhow::Result<()> {
        for (key, _updated_at, links) in batch.iter() {
            self.link_bytes += size_of_val(links) as u64;
            if let Some(old) = self.map.insert(key, links.into()) {
                self.link_bytes -= size_of_val(&*old) as u64;
            }
        }
        Ok(())
    }

    fn lookup(&self, key: u128, now: u32, out: &mut Vec<Link>) -> bool {
        match self.map.get(&key) {
            Some(links) => {
                // No per-profile update time is kept: the profile itself never lapses.
                live_links(NOW, links.iter().copied(), now, out);
                true
            }
            None => {
                out.clear();
                false
            }
        }
    }

    /// Table allocation plus the exact link bytes (allocator overhead not included).
    fn own_bytes(&self) -> Option<u64> {
        Some(self.map.allocation_size() as u64 + self.link_bytes)
    }
}
