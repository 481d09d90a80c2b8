//! segmart storage: the two stores every node talks to, behind traits.
//!
//! - [`catalog::Catalog`]: the control plane (providers, folders, OAuth clients, segments,
//!   settings). Embedded default: SQLite ([`sqlite::SqliteCatalog`]); PostgreSQL follows behind
//!   the same trait.
//! - [`profile::ProfileStore`]: the data plane (user → segment links with expiries), the hot path.
//!   Embedded default: [`embedded`], an in-memory table with a group-committed write-ahead log
//!   and snapshots; a Redis Cluster backend follows behind the same trait.
//! - [`ledger::Ledger`]: the billing ledger (one record per metered impression). Embedded
//!   default: [`embedded_ledger`], a group-committed append-only log with the dedup index and
//!   usage aggregates in memory.
//!
//! Architecture invariant: this crate knows nothing about HTTP or JSON. Its traits speak domain
//! types and batches (no per-key round trips), so a networked backend can implement them.

pub mod billing_catalog;
pub mod catalog;
pub mod embedded;
pub mod embedded_ledger;
pub mod ingest_files;
pub mod ledger;
mod packed;
pub mod profile;
pub mod sharing_catalog;
pub mod sqlite;

#[cfg(test)]
mod catalog_conformance;
