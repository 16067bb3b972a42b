//! A tenant's lifecycle status and what every component answers for it (DESIGN §5).
//!
//! This is the one table of "status → answer": the edge's status gate, the admin API's
//! `/v1/resolve` and the app tier all call [`TenantStatus::admission`], so they cannot disagree
//! about what a suspended or failed tenant gets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Lifecycle of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Its database is being created.
    Provisioning,
    /// Serving traffic.
    Active,
    /// Blocked by an operator.
    Suspended,
    /// Being moved to another shard; requests are held for a bounded time.
    Moving,
    /// Its database is being replaced by a backup (restore in place); refused with
    /// `Retry-After` until the restored database is swapped in.
    Restoring,
    /// Deleted; the database is dropped after the grace period.
    Deleted,
    /// Provisioning failed; the error is on the tenant and its job.
    Failed,
}

impl TenantStatus {
    pub const ALL: [TenantStatus; 7] = [
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Moving,
        TenantStatus::Restoring,
        TenantStatus::Deleted,
        TenantStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Moving => "moving",
            TenantStatus::Restoring => "restoring",
            TenantStatus::Deleted => "deleted",
            TenantStatus::Failed => "failed",
        }
    }

    /// What a request for a tenant in this status gets.
    pub fn admission(self) -> Admission {
        match self {
            TenantStatus::Active => Admission::Serve,
            TenantStatus::Moving => Admission::Hold,
            TenantStatus::Provisioning => Admission::Refuse(Refusal::Provisioning),
            TenantStatus::Restoring => Admission::Refuse(Refusal::Restoring),
            TenantStatus::Suspended => Admission::Refuse(Refusal::Suspended),
            TenantStatus::Deleted => Admission::Refuse(Refusal::Deleted),
            TenantStatus::Failed => Admission::Refuse(Refusal::Failed),
        }
    }
}

/// Error for a status word that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for TenantStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on a request, given its tenant's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Forward (edge) or handle (app) the request.
    Serve,
    /// Hold the request until the status changes; past the hold deadline the answer is
    /// [`Refusal::MovingTimedOut`].
    Hold,
    /// Answer with this refusal.
    Refuse(Refusal),
}

/// A request refused because of its tenant's status: the HTTP status, the stable error code,
/// the message and the `Retry-After` of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The tenant's database is still being created.
    Provisioning,
    /// Provisioning failed; an operator has to act.
    Failed,
    /// An operator suspended the tenant.
    Suspended,
    /// The tenant was deleted.
    Deleted,
    /// The tenant stayed in `moving` longer than the hold deadline.
    MovingTimedOut,
    /// The tenant's database is being restored from a backup.
    Restoring,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Provisioning,
        Refusal::Restoring,
        Refusal::Failed,
        Refusal::Suspended,
        Refusal::Deleted,
        Refusal::MovingTimedOut,
    ];

    /// HTTP status of the answer.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Suspended => 403,
            Refusal::Deleted => 410,
            Refusal::Provisioning
            | Refusal::Restoring
            | Refusal::Failed
            | Refusal::MovingTimedOut => 503,
        }
    }

    /// The stable `error.code` of the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Provisioning => "tenant_provisioning",
            Refusal::Failed => "tenant_failed",
            Refusal::Suspended => "tenant_suspended",
            Refusal::Deleted => "tenant_deleted",
            Refusal::MovingTimedOut => "tenant_moving",
            Refusal::Restoring => "tenant_restoring",
        }
    }

    /// Human-readable message; the same for every tenant (no tenant data in it).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Provisioning => "the tenant is being set up; retry shortly",
            Refusal::Failed => "the tenant could not be set up; contact the operator",
            Refusal::Suspended => "the tenant is suspended",
            Refusal::Deleted => "the tenant has been deleted",
            Refusal::MovingTimedOut => "the tenant is being moved; retry shortly",
            Refusal::Restoring => "the tenant is being restored from a backup; retry shortly",
        }
    }

    /// Seconds for a `Retry-After` header, for answers that invite a retry.
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            Refusal::Provisioning | Refusal::MovingTimedOut | Refusal::Restoring => Some(5),
            Refusal::Failed | Refusal::Suspended | Refusal::Deleted => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_answer() {
        type Answer = (u16, &'static str, Option<u64>);
        let answers: Vec<(TenantStatus, Option<Answer>)> = TenantStatus::ALL
            .into_iter()
            .map(|s| match s.admission() {
                Admission::Refuse(r) => (s, Some((r.status(), r.code(), r.retry_after_secs()))),
                Admission::Serve | Admission::Hold => (s, None),
            })
            .collect();
        assert_eq!(
            answers,
            [
                (
                    TenantStatus::Provisioning,
                    Some((503, "tenant_provisioning", Some(5)))
                ),
                (TenantStatus::Active, None),
                (
                    TenantStatus::Suspended,
                    Some((403, "tenant_suspended", None))
                ),
                (TenantStatus::Moving, None),
                (
                    TenantStatus::Restoring,
                    Some((503, "tenant_restoring", Some(5)))
                ),
                (TenantStatus::Deleted, Some((410, "tenant_deleted", None))),
                (TenantStatus::Failed, Some((503, "tenant_failed", None))),
            ]
        );
        assert_eq!(TenantStatus::Active.admission(), Admission::Serve);
        assert_eq!(TenantStatus::Moving.admission(), Admission::Hold);
        assert_eq!(Refusal::MovingTimedOut.code(), "tenant_moving");
    }

    #[test]
    fn status_words_round_trip() {
        for s in TenantStatus::ALL {
            assert_eq!(s.as_str().parse::<TenantStatus>(), Ok(s));
        }
        assert!("paused".parse::<TenantStatus>().is_err());
    }
}
