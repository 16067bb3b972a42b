//! The catalog: where tenants, their domains and shards are recorded, and their databases.
//!
//! - [`store`]: the catalog database on PostgreSQL or SQLite (tenants, domains, shards, tokens,
//!   jobs, audit, webhook outbox) and its change feed table;
//! - [`feed`]: following the change feed (polling, plus LISTEN/NOTIFY on PostgreSQL);
//! - [`model`]: the rows as the components use them;
//! - [`db`]: opening a pool on a database URL (the catalog's, or a tenant database's);
//! - [`tenant_db`]: where each tenant's own database lives, how to reach and migrate it;
//! - [`tenant_audit`], [`tenant_tokens`]: the audit trail and the user tokens inside a tenant
//!   database, shared by the app tier and the admin API.
//!
//! The rules the components must agree on (status answers, host rules, signing, settings) are in
//! `tenantgate-contract`; configuration is in `tenantgate-config`.

pub mod db;
pub mod error;
pub mod feed;
pub mod model;
pub mod store;
pub mod tenant_audit;
pub mod tenant_db;
pub mod tenant_tokens;

pub use error::CatalogError;
pub use model::{Change, Domain, Route, Shard, ShardStatus, Tenant, TokenScope};
pub use store::Catalog;
