//! The tenant contract: what the edge, the admin API and the app tier must agree on.
//!
//! - [`status`]: a tenant's status and the one table of what a request gets for it;
//! - [`host`]: host normalisation, which route on a host serves a path, prefix stripping, host
//!   ownership;
//! - [`signing`]: the signed tenant header between edge and app;
//! - [`settings`]: the typed tenant settings;
//! - [`labels`]: the bounded `tenant` metric label;
//! - [`gcra`]: the exact rate limiter the edge (per tenant) and the admin API use;
//! - [`crypto`]: token hashing and the sealing of secrets stored in the catalog;
//! - [`time`]: how instants are shown in the APIs.
//!
//! It depends on no database and no other tenantgate crate, so every component can use it.

pub mod crypto;
pub mod gcra;
pub mod host;
pub mod labels;
pub mod settings;
pub mod signing;
pub mod status;
pub mod time;
pub mod tls;

pub use settings::TenantSettings;
pub use status::{Admission, Refusal, TenantStatus};

use serde::{Deserialize, Serialize};

/// A per-tenant rate limit: sustained requests per second and burst size.
///
/// The bounds a tenant's own limit must keep (`rps` 1-1,000,000, `burst` 1-10,000,000) are its
/// schema's; the admin API checks request bodies against that schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub rps: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub burst: u32,
}
