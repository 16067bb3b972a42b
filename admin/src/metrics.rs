//! The admin process's Prometheus metrics, in a registry of its own (no global registry, so
//! several admin instances, e.g. parallel tests, never share counters).

use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tenantgate_catalog::Catalog;
use tenantgate_contract::TenantStatus;

/// Metrics of one admin instance.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    tenants: GaugeVec,
    jobs: IntCounterVec,
    job_duration: HistogramVec,
    backups: IntCounterVec,
    backup_duration: prometheus::Histogram,
    moves: IntCounterVec,
    move_hold: prometheus::Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let tenants = GaugeVec::new(
            Opts::new("tenantgate_tenants", "Tenants in the catalog by status."),
            &["status"],
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
            jobs,
            job_duration,
            backups,
            backup_duration,
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
    /// the truth, and other admin processes change it too).
    pub(crate) async fn render(&self, catalog: &Catalog) -> String {
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
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}
