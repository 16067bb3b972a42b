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
#[doc(hidden)]
pub mod fuzz_checks;
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

/// The share of its tenant's rate limit one client address may use (`edge.per_client_share`,
/// and a tenant's `per_client_share` setting): more than 0, at most 1. With a share below 1 a
/// single address cannot take the whole limit, so the tenant's other users keep working.
///
/// Held in millionths so that it compares exactly; read and written as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct ClientShare(u32);

const SHARE_UNITS: u32 = 1_000_000;

impl ClientShare {
    /// The whole limit: no per-client limit.
    pub const WHOLE: ClientShare = ClientShare(SHARE_UNITS);

    /// The share as a fraction.
    pub fn get(self) -> f64 {
        f64::from(self.0) / f64::from(SHARE_UNITS)
    }

    /// One client's limit under `tenant`'s: both numbers scaled by the share, rounded up, at
    /// least 1 (so a tenant limit of 1 request per second leaves each client 1). `None` for
    /// [`ClientShare::WHOLE`]: the tenant's limit alone applies.
    pub fn of(self, tenant: RateLimit) -> Option<RateLimit> {
        if self == ClientShare::WHOLE {
            return None;
        }
        let scale = |n: u32| {
            let scaled = (u64::from(n) * u64::from(self.0)).div_ceil(u64::from(SHARE_UNITS));
            u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
        };
        Some(RateLimit {
            rps: scale(tenant.rps),
            burst: scale(tenant.burst),
        })
    }
}

impl TryFrom<f64> for ClientShare {
    type Error = String;

    fn try_from(share: f64) -> Result<ClientShare, String> {
        // NaN fails both comparisons.
        if share > 0.0 && share <= 1.0 {
            let units = (share * f64::from(SHARE_UNITS)).round() as u32;
            Ok(ClientShare(units.clamp(1, SHARE_UNITS)))
        } else {
            Err("must be a fraction greater than 0 and at most 1".into())
        }
    }
}

impl From<ClientShare> for f64 {
    fn from(share: ClientShare) -> f64 {
        share.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_share_scales_limits() {
        let half = ClientShare::try_from(0.5).unwrap();
        let tenant = RateLimit { rps: 9, burst: 20 };
        assert_eq!(half.of(tenant), Some(RateLimit { rps: 5, burst: 10 }));
        assert_eq!(
            half.of(RateLimit { rps: 1, burst: 1 }),
            Some(RateLimit { rps: 1, burst: 1 })
        );
        assert_eq!(ClientShare::try_from(1.0).unwrap().of(tenant), None);
        for bad in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(ClientShare::try_from(bad).is_err(), "{bad}");
        }
        let json: ClientShare = serde_json::from_str("0.25").unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), "0.25");
        assert!(serde_json::from_str::<ClientShare>("2").is_err());
    }
}
