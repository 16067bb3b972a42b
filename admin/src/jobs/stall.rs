//! Crash-test stall points, in debug builds only: a job stops for good at a named step (its
//! lease still renewed by the worker), so a test can SIGKILL the admin at a known step boundary
//! rather than hoping to catch a step that lasts milliseconds by polling. Release builds compile
//! every point to nothing.
//!
//! Each job kind has its own environment variable, set to the name of the step to stop after:
//! `TENANTGATE_TEST_MOVE_STALL` (a move's phase, see `relocate`) and
//! `TENANTGATE_TEST_PROVISION_STALL` (`sealed`, `role`, `database`, `migrated`, `epoch`, see
//! `provision`). The stall is logged at WARN as `job stalled` with the variable and the step.

/// The variable of a move's stall points.
pub(crate) const MOVE: &str = "TENANTGATE_TEST_MOVE_STALL";
/// The variable of provisioning's stall points.
pub(crate) const PROVISION: &str = "TENANTGATE_TEST_PROVISION_STALL";

/// Stop here for good when the environment variable `var` is `step` (debug builds only).
pub(crate) async fn point(var: &'static str, step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var(var).is_ok_and(|wanted| wanted == step) {
        tracing::warn!(var, step, "job stalled");
        std::future::pending::<()>().await;
    }
    #[cfg(not(debug_assertions))]
    let _ = (var, step);
}
