//! The measured designs.

pub mod fjall_kv;
pub mod flat;
pub mod hashmap;
pub mod log;
pub mod mmap;
pub mod redb_kv;
