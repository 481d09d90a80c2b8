//! The segmart domain model.
//!
//! Architecture invariant: this crate knows nothing about HTTP, SQL, files, sockets or JSON.
//! It holds the vocabulary every other crate speaks (ids, segments, profile operations,
//! permissions, time) and the closed catalogue of error codes.

pub mod access;
pub mod billing;
pub mod clock;
pub mod error;
pub mod ids;
pub mod permission;
pub mod pricing;
pub mod profile;
pub mod segment;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{ErrorCode, FieldError};
pub use ids::{
    ClientId, FolderId, IdType, ProfileId, ProviderId, SegmentKey, SegmentNum, canonical_mobile_id,
    canonical_profile_id,
};
pub use permission::{BuyerPermission, BuyerPermissions, Permission, PermissionSet};
