//! redb 4.5.0 (copy-on-write B-tree): key = u128 profile key, value = [`encode_value`].
//! Each batch is one write transaction with the default `Durability::Immediate` commit.
//! Lookups share one read transaction.

use crate::data::{Batch, Link, decode_value_live, encode_value};
use crate::store::Store;
use redb::{Database, ReadOnlyTable, ReadableDatabase, TableDefinition};
use std::path::Path;

const PROFILES: TableDefinition<u128, &[u8]> = TableDefinition::new("profiles");

pub struct RedbStore {
    db: Database,
    reader: Option<ReadOnlyTable<u128, &'static [u8]>>,
    value: Vec<u8>,
}

impl RedbStore {
    pub fn create(path: &Path, cache_bytes: usize) -> anyhow::Result<Self> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        Ok(RedbStore {
            db,
            reader: None,
            value: Vec::with_capacity(128),
        })
    }

    pub fn open(path: &Path, cache_bytes: usize) -> anyhow::Result<Self> {
        let db = Database::builder().set_cache_size(cache_bytes).open(path)?;
        Ok(RedbStore {
            db,
            reader: None,
            value: Vec::with_capacity(128),
        })
    }
}

impl Store for RedbStore {
    fn apply(&mut self, batch: &Batch) -> anyhow::Result<()> {
        self.reader = None;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(PROFILES)?;
            for (key, updated_at, links) in batch.iter() {
                encode_value(updated_at, links, &mut self.value);
                table.insert(key, self.value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn prepare_reads(&mut self) -> anyhow::Result<()> {
        self.reader = Some(self.db.begin_read()?.open_table(PROFILES)?);
        Ok(())
    }

    fn lookup(&self, key: u128, now: u32, out: &mut Vec<Link>) -> bool {
        let table = self.reader.as_ref().expect("prepare_reads was called");
        match table.get(key).expect("redb get") {
            Some(value) => {
                decode_value_live(value.value(), now, out);
                true
            }
            None => {
                out.clear();
                false
            }
        }
    }
}
