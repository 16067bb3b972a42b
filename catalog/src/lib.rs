//! The shared core of tenantgate.
//!
//! Every component (edge, admin, app) depends on this crate and on nothing of each other: the
//! model, the catalog store on PostgreSQL or SQLite, the change feed, host normalisation, the
//! configuration, the signed tenant header contract and the credential crypto live here.

pub mod config;
pub mod crypto;
pub mod error;
pub mod feed;
pub mod host;
pub mod labels;
pub mod model;
pub mod signing;
pub mod store;
pub mod tenant_db;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod time;

pub use error::CatalogError;
pub use model::{
    Change, Domain, RateLimit, Route, Shard, ShardStatus, Tenant, TenantStatus, TokenScope,
};
pub use store::{Backend, Catalog};
