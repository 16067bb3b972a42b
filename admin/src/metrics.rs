//! The admin process's Prometheus metrics, in a registry of its own (no global registry, so
//! several admin instances, e.g. parallel tests, never share counters).

use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Duration;

use tenantgate_catalog::store::certificates::CertStatus;
use tenantgate_catalog::Catalog;
use tenantgate_contract::TenantStatus;

/// Metrics of one admin instance.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    tenants: GaugeVec,
    certificates: GaugeVec,
    /// No labels; the series exists only while some certificate is issued (an absent series
    /// must not read as "expires in 1970").
    certificate_expiry: GaugeVec,
    jobs: IntCounterVec,
    job_duration: HistogramVec,
    backups: IntCounterVec,
    backup_duration: prometheus::Histogram,
    backup_last_success: GaugeVec,
    never_backed_up: prometheus::IntGauge,
    moves: IntCounterVec,
    move_hold: prometheus::Histogram,
}

/// Tenants with their own `tenant` label on the last-backup gauge; the rest share `_other`
/// (DESIGN §8: the label is bounded; the same default as the edge's and the app's limit).
const TENANT_LABEL_LIMIT: usize = 1000;

/// The last-backup gauge's series from (slug, last success in ms), any order: the
/// [`TENANT_LABEL_LIMIT`] tenants whose newest backup is oldest get their own label (they are
/// the ones an alert is about); the rest share `_other`, which holds the oldest of theirs, so
/// an alert on any series still fires for any tenant.
pub(crate) fn last_success_series(
    mut successes: Vec<(String, i64)>,
    limit: usize,
) -> Vec<(String, i64)> {
    successes.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut series: Vec<(String, i64)> = successes.iter().take(limit).cloned().collect();
    if let Some((_, oldest_rest)) = successes.get(limit) {
        series.push((tenantgate_contract::labels::OTHER.to_string(), *oldest_rest));
    }
    series
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let tenants = GaugeVec::new(
            Opts::new("tenantgate_tenants", "Tenants in the catalog by status."),
            &["status"],
        )
        .expect("valid metric");
        let certificates = GaugeVec::new(
            Opts::new(
                "tenantgate_certificates",
                "Tenant hosts by TLS certificate state (none, pending, issued, failed), from the catalog.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let certificate_expiry = GaugeVec::new(
            Opts::new(
                "tenantgate_certificate_expiry_timestamp_seconds",
                "Unix time at which the soonest-expiring issued tenant certificate expires.",
            ),
            &[],
        )
        .expect("valid metric");
        let jobs = IntCounterVec::new(
            Opts::new(
                "tenantgate_jobs_total",
                "Job attempts finished by this process, by kind and result (succeeded, retry, failed).",
            ),
            &["kind", "result"],
        )
        .expect("valid metric");
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "tenantgate_job_duration_seconds",
                "Wall time of one job attempt, by kind.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["kind"],
        )
        .expect("valid metric");
        let backups = IntCounterVec::new(
            Opts::new(
                "tenantgate_backups_total",
                "Backup attempts finished by this process, by result (completed, retry, failed).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in ["completed", "retry", "failed"] {
            backups.with_label_values(&[result]);
        }
        let backup_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "tenantgate_backup_duration_seconds",
                "Wall time of one backup attempt (dump, encryption and upload).",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        let backup_last_success = GaugeVec::new(
            Opts::new(
                "tenantgate_backup_last_success_timestamp_seconds",
                "Unix time of the newest completed backup of each tenant that has one (from the catalog; past 1000 tenants, the oldest of the rest under tenant=\"_other\").",
            ),
            &["tenant"],
        )
        .expect("valid metric");
        let never_backed_up = prometheus::IntGauge::with_opts(Opts::new(
            "tenantgate_tenants_never_backed_up",
            "Active or suspended tenants older than the backup schedule's period without any completed backup (0 while backups.schedule is off).",
        ))
        .expect("valid metric");
        let moves = IntCounterVec::new(
            Opts::new(
                "tenantgate_moves_total",
                "Tenant moves finished by this process, by result (completed, rolled_back).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in ["completed", "rolled_back"] {
            moves.with_label_values(&[result]);
        }
        let move_hold = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "tenantgate_move_hold_seconds",
                "How long a move held its tenant's requests: from status moving to the flip (or the roll-back).",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        for c in [
            Box::new(tenants.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(certificates.clone()),
            Box::new(certificate_expiry.clone()),
            Box::new(backup_last_success.clone()),
            Box::new(never_backed_up.clone()),
            Box::new(jobs.clone()),
            Box::new(job_duration.clone()),
            Box::new(backups.clone()),
            Box::new(backup_duration.clone()),
            Box::new(moves.clone()),
            Box::new(move_hold.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            tenants,
            certificates,
            certificate_expiry,
            jobs,
            job_duration,
            backups,
            backup_duration,
            backup_last_success,
            never_backed_up,
            moves,
            move_hold,
        }
    }

    /// Count one finished move with `result` (`completed`, `rolled_back`).
    pub(crate) fn move_finished(&self, result: &str) {
        self.moves.with_label_values(&[result]).inc();
    }

    /// Record how long a move held its tenant.
    pub(crate) fn move_held(&self, seconds: f64) {
        self.move_hold.observe(seconds);
    }

    /// Count one finished backup attempt with `result` (`completed`, `retry`, `failed`).
    pub(crate) fn backup_finished(&self, result: &str, seconds: f64) {
        self.backups.with_label_values(&[result]).inc();
        self.backup_duration.observe(seconds);
    }

    /// Count one finished job attempt of `kind` with `result` and its duration.
    pub(crate) fn job_finished(&self, kind: &str, result: &str, seconds: f64) {
        self.jobs.with_label_values(&[kind, result]).inc();
        self.job_duration
            .with_label_values(&[kind])
            .observe(seconds);
    }

    /// The text exposition, after refreshing the tenant gauges from the catalog (the catalog is
    /// the truth, and other admin processes change it too). `schedule` is the backup schedule's
    /// period, `None` when off.
    pub(crate) async fn render(&self, catalog: &Catalog, schedule: Option<Duration>) -> String {
        match catalog.tenant_status_counts().await {
            Ok(counts) => {
                for status in TenantStatus::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| *s == status)
                        .map_or(0, |(_, n)| *n);
                    self.tenants
                        .with_label_values(&[status.as_str()])
                        .set(n as f64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not count tenants for /metrics"),
        }
        match catalog.certificate_summary().await {
            Ok(summary) => {
                for state in CertStatus::ALL {
                    let n = summary
                        .by_status
                        .iter()
                        .find(|(s, _)| *s == state)
                        .map_or(0, |(_, n)| *n);
                    self.certificates
                        .with_label_values(&[state.as_str()])
                        .set(n as f64);
                }
                self.certificate_expiry.reset();
                if let Some(ms) = summary.soonest_not_after {
                    self.certificate_expiry
                        .with_label_values::<&str>(&[])
                        .set(ms as f64 / 1000.0);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not count certificates for /metrics"),
        }
        match catalog.last_backup_successes().await {
            Ok(successes) => {
                // Rebuilt from the catalog each time, so a purged tenant's series disappears.
                self.backup_last_success.reset();
                for (tenant, at_ms) in last_success_series(successes, TENANT_LABEL_LIMIT) {
                    self.backup_last_success
                        .with_label_values(&[tenant.as_str()])
                        .set(at_ms as f64 / 1000.0);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the last backups for /metrics"),
        }
        // The last-backup gauge has no series for a tenant that never had a backup, so an
        // alert on its age cannot see one the schedule has missed from the start: this count
        // can. Only tenants older than one period are due (the schedule spreads them over it).
        match schedule {
            None => self.never_backed_up.set(0),
            Some(period) => {
                let due_before = tenantgate_contract::time::now_ms()
                    - i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
                match catalog.tenants_never_backed_up(due_before).await {
                    Ok(n) => self.never_backed_up.set(n),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not count tenants never backed up")
                    }
                }
            }
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_tenants_keep_their_label() {
        let successes = vec![
            ("a".to_string(), 300),
            ("b".to_string(), 100),
            ("c".to_string(), 200),
            ("d".to_string(), 400),
        ];
        assert_eq!(
            last_success_series(successes.clone(), 2),
            [
                ("b".to_string(), 100),
                ("c".to_string(), 200),
                ("_other".to_string(), 300)
            ]
        );
        assert_eq!(last_success_series(successes, 10).len(), 4);
        assert!(last_success_series(Vec::new(), 2).is_empty());
    }
}
