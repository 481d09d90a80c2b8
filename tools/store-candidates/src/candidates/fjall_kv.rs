//! fjall 3.1.13 (LSM tree): key = 16-byte big-endian profile key, value = [`encode_value`].
//! Each batch is one `WriteBatch` committed with `PersistMode::SyncAll`.

use crate::data::{Batch, Link, decode_value_live, encode_value};
use crate::store::Store;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;
use std::time::{Duration, Instant};

const KEYSPACE: &str = "profiles";

pub struct FjallStore {
    db: Database,
    profiles: Keyspace,
    value: Vec<u8>,
}

impl FjallStore {
    /// Opens (or creates) the database at `path` with a block cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> anyhow::Result<Self> {
        let db = Database::builder(path).cache_size(cache_bytes).open()?;
        let profiles = db.keyspace(KEYSPACE, KeyspaceCreateOptions::default)?;
        Ok(FjallStore {
            db,
            profiles,
            value: Vec::with_capacity(128),
        })
    }

    pub fn approximate_len(&self) -> usize {
        self.profiles.approximate_len()
    }

    pub fn l0_table_count(&self) -> usize {
        self.profiles.l0_table_count()
    }

    pub fn table_count(&self) -> usize {
        self.profiles.table_count()
    }

    /// Flushes the memtable, then merges all tables into one sorted run.
    pub fn major_compact(&self) -> anyhow::Result<()> {
        self.profiles.rotate_memtable_and_wait()?;
        self.profiles.major_compact()?;
        Ok(())
    }
}

impl Store for FjallStore {
    fn apply(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let mut write = self.db.batch().durability(Some(PersistMode::SyncAll));
        for (key, updated_at, links) in batch.iter() {
            encode_value(updated_at, links, &mut self.value);
            write.insert(
                &self.profiles,
                &key.to_be_bytes()[..],
                self.value.as_slice(),
            );
        }
        write.commit()?;
        Ok(())
    }

    /// Waits (up to two minutes) for memtable flushes and compactions started by the load.
    fn prepare_reads(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while (self.db.outstanding_flushes() > 0 || self.db.active_compactions() > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn lookup(&self, key: u128, now: u32, out: &mut Vec<Link>) -> bool {
        match self.profiles.get(key.to_be_bytes()).expect("fjall get") {
            Some(value) => {
                decode_value_live(&value, now, out);
                true
            }
            None => {
                out.clear();
                false
            }
        }
    }
}
