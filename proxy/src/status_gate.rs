//! The status gate: what the edge does with a request given its tenant's status (DESIGN §5).

use tenantgate_catalog::TenantStatus;

use crate::error::Reject;

/// The gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Forward the request.
    Pass,
    /// Hold the request until the status changes or the hold deadline passes.
    Hold,
    /// Answer with this rejection.
    Refuse(Reject),
}

/// The verdict for a tenant in `status`.
pub fn gate(status: TenantStatus) -> Gate {
    match status {
        TenantStatus::Active => Gate::Pass,
        TenantStatus::Moving => Gate::Hold,
        TenantStatus::Provisioning => Gate::Refuse(Reject::TenantProvisioning),
        TenantStatus::Suspended => Gate::Refuse(Reject::TenantSuspended),
        TenantStatus::Deleted => Gate::Refuse(Reject::TenantDeleted),
        TenantStatus::Failed => Gate::Refuse(Reject::TenantFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_answer() {
        let statuses: Vec<(u16, &str)> = [
            TenantStatus::Provisioning,
            TenantStatus::Suspended,
            TenantStatus::Deleted,
            TenantStatus::Failed,
        ]
        .into_iter()
        .map(|s| match gate(s) {
            Gate::Refuse(r) => (r.status(), r.code()),
            other => panic!("{s} gave {other:?}"),
        })
        .collect();
        assert_eq!(
            statuses,
            [
                (503, "tenant_provisioning"),
                (403, "tenant_suspended"),
                (410, "tenant_deleted"),
                (503, "tenant_failed")
            ]
        );
        assert_eq!(gate(TenantStatus::Active), Gate::Pass);
        assert_eq!(gate(TenantStatus::Moving), Gate::Hold);
    }
}
