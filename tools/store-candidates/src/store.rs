//! The interface every candidate implements.

use crate::data::{Batch, Link};

pub trait Store {
    /// Applies one batch. Engines with their own durability make it durable before returning.
    fn apply(&mut self, batch: &Batch) -> anyhow::Result<()>;

    /// Called once between loading and the lookups (settle background work, open read state).
    fn prepare_reads(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Writes the profile's live links into `out`; `false` if the key is unknown.
    fn lookup(&self, key: u128, now: u32, out: &mut Vec<Link>) -> bool;

    /// Bytes the structure itself accounts for, where it can tell.
    fn own_bytes(&self) -> Option<u64> {
        None
    }
}
