//! The `move_tenant` job: move a tenant to another shard while it keeps serving, hold only its
//! requests for the cut-over, flip its shard and epoch in one catalog transaction, release.
//! Before anything else it takes a `pre_move` backup when backups are configured, and goes
//! on only once that completed.
//!
//! Phases (the job's `progress.phase`, see [`Phase`]):
//! 1. `copy` (PostgreSQL to another server): the tenant's login and a fresh database on the
//!    target, the schema, a publication on the source and a subscription on the target that
//!    copies every table; `rows_copied` grows while it runs. The tenant keeps serving from the
//!    source.
//! 2. `catch_up`: a marker written on the source must reach the target (see
//!    [`super::replicate`]); `lag_bytes` is the replication slot's lag.
//! 3. `hold`: status `moving` (the edge holds this tenant's requests, and only this tenant's),
//!    a wait for requests already forwarded to finish, then the source becomes read-only and
//!    its sessions end; sequences are copied; a last marker proves the target has replayed
//!    everything the source committed (`final_lsn`). Between PostgreSQL shards of one server
//!    nothing is copied.
//!
//! SQLite tenants: `copy` takes a consistent snapshot of the file while the tenant serves
//! (`VACUUM INTO`, one read transaction); the hold copies it again only when a write committed
//! after the snapshot began (SQLite's `data_version`, read on one connection before the copy
//! and in the hold), so an idle tenant's hold copies nothing and a busy one's costs one more
//! snapshot (`progress.hold_recopied` says which).
//! 4. `flip`: one catalog transaction sets the new shard, restores the status, bumps the epoch,
//!    appends the feed change and the audit record, and schedules the old copy's drop after
//!    the deletion grace (a `drop_database` job). The edge releases the held requests to the
//!    new shard as soon as the feed tells it.
//! 5. `cleanup`: the subscription, publication and marker tables go; the old PostgreSQL copy
//!    stays read-only until its drop; an old SQLite file is removed at once. Then `done`.
//!
//! Epoch fencing ([`super::epoch`]): at the end of the hold the target copy records the epoch
//! the flip will give the tenant, and so does the source, which says it is stale; the flip
//! commits only if the catalog's epoch is still the one counted from. A rollback from the hold
//! writes the hold's epoch back into the source. A move that keeps one copy records the new
//! epoch right after the flip.
//!
//! Any failure before the flip rolls back (`rolled_back`): subscription and target database
//! dropped, the source writable again, the status restored; the source was the tenant's only
//! writable copy throughout, so nothing is lost. The worker then retries the job from the
//! start, up to its attempts. A job resumed after its worker died continues where the tenant
//! is: flipped (only cleanup remains), held (the hold is taken again and completed), or not
//! yet held (the copy starts over). Only the lease holder can flip: the flip's transaction
//! checks the lease.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::Connection as _;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups::BackupKind;
use tenantgate_catalog::store::jobs::{self as store, Job, NewJob};
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, TenantPatch};
use tenantgate_catalog::{tenant_db, Shard, Tenant};
use tenantgate_config::db_url::{self, Engine};
use tenantgate_contract::TenantStatus;

use super::{kind, provision, replicate, succeed};
use crate::backup::tenant::remove_sqlite;
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// What the API recorded when it started the move.
#[derive(Debug, Deserialize)]
pub(crate) struct MovePayload {
    pub(crate) from: String,
    pub(crate) to: String,
    /// The tenant's status when the move was asked for (`active` or `suspended`); the status
    /// at the start of the hold is the one restored, this is the fallback.
    pub(crate) resume: TenantStatus,
}

/// Where a move is (`progress.phase` of its job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Copy,
    CatchUp,
    Hold,
    Flip,
    Cleanup,
    Done,
    RolledBack,
}

/// Crash-test hook ([`super::stall`]): with `TENANTGATE_TEST_MOVE_STALL` set to `phase` in a
/// debug build, the move stops here for good, so a test can SIGKILL the admin at a known point of
/// that phase (`flip` and `cleanup` last milliseconds).
async fn stall_point(phase: Phase) {
    // The phase's name as the job's progress shows it.
    if let Ok(serde_json::Value::String(name)) = serde_json::to_value(phase) {
        super::stall::point(super::stall::MOVE, &name).await;
    }
}

/// The job's `progress` (stored, so a resumed job knows what to restore).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) phase: Phase,
    /// Rows on the target (the statistics' estimate), PostgreSQL to another server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rows_copied: Option<i64>,
    /// Replication lag in WAL bytes (the slot's, informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lag_bytes: Option<i64>,
    /// Seconds the initial copy took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) copy_seconds: Option<f64>,
    /// The source's WAL position after its last write, which the target has replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) final_lsn: Option<String>,
    /// How long the tenant's requests were held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hold_seconds: Option<f64>,
    /// SQLite: whether the hold had to copy the file again (a write landed after the online
    /// copy began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hold_recopied: Option<bool>,
    /// The status to restore after the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resume: Option<TenantStatus>,
}

/// How the data travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// SQLite file to SQLite file.
    SqliteCopy,
    /// Two PostgreSQL shards on one server: the database stays.
    SameServer,
    /// PostgreSQL to another server: logical replication.
    CrossServer,
}

/// How long the initial copy may take before the move gives up (and rolls back).
const COPY_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the target may take to apply a marker, while serving and while held.
const MARK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the hold waits for requests already in flight on the source to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A marker round trip at most this long means the target keeps up: time to hold.
const CAUGHT_UP: Duration = Duration::from_millis(500);

struct Move<'a> {
    state: &'a AdminState,
    worker: &'a str,
    job: &'a Job,
    tenant: Tenant,
    payload: MovePayload,
    from: Shard,
    to: Shard,
    route: Route,
    progress: Progress,
    /// SQLite: the connection to the source that watched the online copy, and the source's
    /// `data_version` as that connection saw it just before the copy. The hold copies again
    /// only when another connection committed since (the version moved).
    sqlite_copied: Option<(sqlx::SqliteConnection, i64)>,
    /// The epoch the flip gives the tenant, recorded in the target copy (and the frozen
    /// source) during the hold; `None` until then, and for a move that keeps one copy.
    next_epoch: Option<i64>,
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: MovePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad move job payload: {e}")))?;
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("move job without a tenant".into()))?;
    let from = state
        .catalog
        .shard(&payload.from)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let to = state
        .catalog
        .shard(&payload.to)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let route = match Engine::of_url(&from.database_url)? {
        Engine::Sqlite => Route::SqliteCopy,
        Engine::Postgres
            if db_url::server_of(&from.database_url) == db_url::server_of(&to.database_url) =>
        {
            Route::SameServer
        }
        Engine::Postgres => Route::CrossServer,
    };
    let progress = job
        .progress
        .clone()
        .and_then(|p| serde_json::from_value::<Progress>(p).ok())
        .unwrap_or(Progress {
            phase: Phase::Copy,
            rows_copied: None,
            lag_bytes: None,
            copy_seconds: None,
            final_lsn: None,
            hold_seconds: None,
            hold_recopied: None,
            resume: None,
        });
    let Some(tenant) = state.catalog.tenant(&tenant_id.to_string()).await? else {
        return finish(state, worker, job, &progress).await;
    };
    if progress.phase == Phase::Copy {
        // A backup first (`pre_move`), so a move gone wrong can be undone; the job waits for
        // it. A job resumed past the copy took it already.
        super::backup::before(state, job, &tenant, BackupKind::PreMove).await?;
    }
    let mut m = Move {
        state,
        worker,
        job,
        tenant,
        payload,
        from,
        to,
        route,
        progress,
        sqlite_copied: None,
        next_epoch: None,
    };
    if m.tenant.shard == m.payload.to {
        return m.cleanup().await;
    }
    if !matches!(
        m.tenant.status,
        TenantStatus::Active | TenantStatus::Suspended | TenantStatus::Moving
    ) {
        // Deleted (or failed) meanwhile: undo what an earlier attempt built, nothing to move.
        m.rollback(None).await?;
        return finish(state, worker, job, &m.progress).await;
    }
    let held = match m.before_flip().await {
        Ok(held) => held,
        Err(e) => {
            let held = m.progress.phase == Phase::Hold;
            if let Err(r) = m.rollback(held.then(Instant::now)).await {
                tracing::error!(job = %job.id, error = %r, "rolling back a failed move failed; the next attempt retries it");
            }
            return Err(e);
        }
    };
    let flipped = m.flip(held).await;
    if let Ok(epoch) = flipped {
        if !m.two_copies() {
            // One copy serves before and after (shards of one server, or one SQLite
            // directory): it records the new epoch only now, since a rollback could not undo
            // it before the flip. Not fatal: a copy recording an older epoch fences less, and
            // there is no old copy to keep requests away from.
            if let Err(e) = super::epoch::record(&m.to, m.db(), epoch).await {
                tracing::warn!(job = %job.id, error = %e, "recording the epoch after the flip failed");
            }
        }
    }
    if let Err(e) = flipped {
        // The commit may or may not have happened: the catalog says which.
        let now = state.catalog.tenant(&tenant_id.to_string()).await?;
        if now.is_some_and(|t| t.shard == m.payload.to) {
            return m.cleanup().await;
        }
        if let Err(r) = m.rollback(Some(held)).await {
            tracing::error!(job = %job.id, error = %r, "rolling back a failed move failed; the next attempt retries it");
        }
        return Err(e);
    }
    stall_point(Phase::Flip).await;
    m.cleanup().await
}

impl Move<'_> {
    fn db(&self) -> &str {
        &self.tenant.db_name
    }

    /// Whether the move makes a second copy (another PostgreSQL server, another SQLite
    /// directory), so that the old copy must be fenced by epoch.
    fn two_copies(&self) -> bool {
        match self.route {
            Route::CrossServer => true,
            Route::SqliteCopy => {
                let (src, dst) = self.sqlite_files();
                src != dst
            }
            Route::SameServer => false,
        }
    }

    /// Epoch fencing in the hold, once the target holds everything and nothing reaches the
    /// source any more: the target records the epoch the flip will give the tenant, and so does
    /// the source (PostgreSQL: frozen already), so a request from an edge or app that still
    /// routes by the old epoch is refused by either copy. Idempotent: a resumed hold writes
    /// the same values again. The flip checks the catalog still counts from the same epoch.
    async fn fence_copies(&mut self) -> Result<(), AdminError> {
        let current = self
            .state
            .catalog
            .tenant(&self.tenant.id.to_string())
            .await?
            .ok_or(AdminError::NotFound("tenant"))?;
        let next = current.epoch + 1;
        let db = self.db().to_string();
        super::epoch::record(&self.to, &db, next).await?;
        super::epoch::record(&self.from, &db, next).await?;
        self.next_epoch = Some(next);
        Ok(())
    }

    /// Store the progress; an error when this worker no longer holds the job.
    async fn report(&mut self, phase: Phase) -> Result<(), AdminError> {
        self.progress.phase = phase;
        let value = serde_json::to_value(&self.progress).expect("progress serialises");
        if !self
            .state
            .catalog
            .set_job_progress(self.job.id, self.worker, &value)
            .await?
        {
            return Err(AdminError::Job("lost the job's lease".into()));
        }
        Ok(())
    }

    /// Copy, catch up and hold; returns when the target holds everything and the tenant is
    /// held (the instant the hold began).
    async fn before_flip(&mut self) -> Result<Instant, AdminError> {
        if self.route == Route::CrossServer {
            replicate::check_source(&self.from).await?;
            if self.tenant.status != TenantStatus::Moving {
                self.copy().await?;
                self.catch_up().await?;
            }
        }
        if self.route == Route::SqliteCopy && self.tenant.status != TenantStatus::Moving {
            self.copy_sqlite_online().await?;
        }
        let held = Instant::now();
        self.enter_hold().await?;
        self.drain().await?;
        let db = self.db().to_string();
        match self.route {
            Route::CrossServer => {
                replicate::set_read_only(&self.from, &db, true).await?;
                replicate::sync_sequences(&self.from, &self.to, &db).await?;
                let (token, lsn) = replicate::mark(&self.from, &db).await?;
                replicate::wait_for_mark(&self.to, &db, &token, MARK_TIMEOUT).await?;
                self.progress.final_lsn = Some(lsn);
                self.report(Phase::Hold).await?;
                stall_point(Phase::Hold).await;
            }
            Route::SqliteCopy => self.copy_sqlite().await?,
            Route::SameServer => {}
        }
        if self.two_copies() {
            self.fence_copies().await?;
        }
        Ok(held)
    }

    /// The `copy` phase: a fresh copy on the target, subscribed to the source.
    async fn copy(&mut self) -> Result<(), AdminError> {
        let started = Instant::now();
        self.report(Phase::Copy).await?;
        let db = self.db().to_string();
        // Start over: what an interrupted attempt left is not trusted.
        replicate::drop_subscription(&self.to, &db).await?;
        replicate::clean_source(&self.from, &db).await?;
        let login = provision::login(self.state, &self.tenant).await?;
        // Only the lease holder may set the login's password on the target.
        provision::hold_lease(self.state, self.worker, self.job).await?;
        replicate::prepare_target(
            &self.to,
            &db,
            &login,
            &self.state.config.tenant_migrations.dir,
            self.tenant.schema_version,
        )
        .await?;
        replicate::subscribe(&self.from, &self.to, &db).await?;
        stall_point(Phase::Copy).await;
        while !replicate::synced(&self.to, &db).await? {
            if started.elapsed() > COPY_TIMEOUT {
                return Err(AdminError::Job(format!(
                    "the initial copy did not finish within {COPY_TIMEOUT:?}"
                )));
            }
            self.progress.rows_copied = Some(replicate::rows_on_target(&self.to, &db).await?);
            self.report(Phase::Copy).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.progress.rows_copied = Some(replicate::rows_on_target(&self.to, &db).await?);
        self.progress.copy_seconds = Some(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The `catch_up` phase: markers until one crosses quickly (the target keeps up with the
    /// writes, so the hold's last marker will be quick too).
    async fn catch_up(&mut self) -> Result<(), AdminError> {
        let db = self.db().to_string();
        for _ in 0..20 {
            self.progress.lag_bytes = replicate::lag_bytes(&self.from, &db).await?;
            self.report(Phase::CatchUp).await?;
            stall_point(Phase::CatchUp).await;
            let sent = Instant::now();
            let (token, _) = replicate::mark(&self.from, &db).await?;
            replicate::wait_for_mark(&self.to, &db, &token, MARK_TIMEOUT).await?;
            if sent.elapsed() <= CAUGHT_UP {
                break;
            }
        }
        self.progress.lag_bytes = replicate::lag_bytes(&self.from, &db).await?;
        Ok(())
    }

    /// Status `moving`: the edge holds the tenant's requests. The status before is kept in the
    /// progress, in the same transaction, to be restored afterwards.
    async fn enter_hold(&mut self) -> Result<(), AdminError> {
        let mut w = Write::begin(self.state).await?;
        let current = tenant_state::status(w.conn(), self.tenant.id).await?;
        match current {
            Some(s @ (TenantStatus::Active | TenantStatus::Suspended)) => {
                self.progress.resume = Some(s);
                // The epoch stays: the route does not change until the flip, and a request an
                // edge forwarded just before it saw `moving` must still be served (the app
                // refuses only an epoch older than the catalog's).
                let patch = TenantPatch {
                    status: Some(TenantStatus::Moving),
                    ..TenantPatch::default()
                };
                tenants::update(w.conn(), self.tenant.id, &patch).await?;
                w.tenant_change(self.tenant.id, &[]).await?;
                w.audit(NewAudit {
                    actor: "worker",
                    action: "tenant.move_hold",
                    target: &format!("tenant:{}", self.tenant.slug),
                    tenant_id: Some(self.tenant.id),
                    before: Some(serde_json::json!({ "status": s })),
                    after: Some(
                        serde_json::json!({ "status": "moving", "shard": self.payload.from }),
                    ),
                })
                .await?;
            }
            // Held already (a resumed job).
            Some(TenantStatus::Moving) => {}
            other => {
                return Err(AdminError::Job(format!(
                    "the tenant became {} during the move",
                    other.map_or("absent", |s| s.as_str())
                )))
            }
        }
        self.progress.phase = Phase::Hold;
        let value = serde_json::to_value(&self.progress).expect("progress serialises");
        if !store::set_progress(w.conn(), self.job.id, self.worker, &value).await? {
            return Err(AdminError::Job("lost the job's lease".into()));
        }
        w.commit().await
    }

    /// Let requests forwarded before the edges saw `moving` finish: one feed poll interval (an
    /// edge that missed the notification learns at its next poll), then until the tenant's
    /// sessions on the source are idle, at most [`DRAIN_TIMEOUT`].
    async fn drain(&self) -> Result<(), AdminError> {
        tokio::time::sleep(
            self.state
                .config
                .catalog
                .poll_interval
                .min(Duration::from_secs(1)),
        )
        .await;
        if self.route == Route::SqliteCopy {
            return Ok(());
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while replicate::busy_sessions(&self.from, self.db()).await? > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The SQLite files of the move: (source, target); equal when both shards share a directory.
    fn sqlite_files(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        (
            tenant_db::sqlite_file(&self.from.database_url, self.db()),
            tenant_db::sqlite_file(&self.to.database_url, self.db()),
        )
    }

    /// The SQLite `copy` phase, while the tenant serves: a consistent snapshot of the source
    /// (`VACUUM INTO`, one read transaction, so writes go on meanwhile), remembering the
    /// source's `data_version` just before it on a connection kept for the hold.
    async fn copy_sqlite_online(&mut self) -> Result<(), AdminError> {
        let started = Instant::now();
        self.report(Phase::Copy).await?;
        let (src, dst) = self.sqlite_files();
        if src == dst {
            return Ok(());
        }
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", src.display())).await?;
        // Read before the snapshot: a commit between the two makes the hold copy again, never
        // the other way round.
        let version = data_version(&mut conn).await?;
        vacuum_into(&mut conn, &dst).await?;
        self.sqlite_copied = Some((conn, version));
        self.progress.copy_seconds = Some(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The SQLite copy in the hold (no request reaches the source any more): nothing to do when
    /// no other connection committed since the online copy; otherwise a fresh snapshot. A job
    /// resumed in the hold has no online copy and takes the snapshot here.
    async fn copy_sqlite(&mut self) -> Result<(), AdminError> {
        let (src, dst) = self.sqlite_files();
        if src == dst {
            return Ok(());
        }
        let (mut conn, unchanged) = match self.sqlite_copied.take() {
            Some((mut conn, before)) => {
                let now = data_version(&mut conn).await?;
                (conn, now == before)
            }
            None => {
                let url = format!("sqlite://{}", src.display());
                (sqlx::SqliteConnection::connect(&url).await?, false)
            }
        };
        if !unchanged {
            vacuum_into(&mut conn, &dst).await?;
        }
        conn.close().await?;
        self.progress.hold_recopied = Some(!unchanged);
        Ok(())
    }

    /// The `flip`: new shard, status restored, epoch bumped, feed change, audit, the old copy's
    /// drop scheduled; one transaction, only while this worker holds the job. Returns the
    /// tenant's new epoch.
    async fn flip(&mut self, held: Instant) -> Result<i64, AdminError> {
        let resume = self.progress.resume.unwrap_or(self.payload.resume);
        self.progress.hold_seconds = Some(held.elapsed().as_secs_f64());
        self.progress.phase = Phase::Flip;
        let value = serde_json::to_value(&self.progress).expect("progress serialises");
        let mut w = Write::begin(self.state).await?;
        if !store::set_progress(w.conn(), self.job.id, self.worker, &value).await? {
            return Err(AdminError::Job("lost the job's lease".into()));
        }
        if tenant_state::status(w.conn(), self.tenant.id).await? != Some(TenantStatus::Moving) {
            return Err(AdminError::Job(
                "the tenant left status moving during the hold".into(),
            ));
        }
        let before = tenant_state::epoch(w.conn(), self.tenant.id)
            .await?
            .ok_or(AdminError::NotFound("tenant"))?;
        if self.next_epoch.is_some_and(|next| next != before + 1) {
            // The copies record another epoch than the flip would give: start over.
            return Err(AdminError::Job(
                "the tenant's epoch changed during the hold".into(),
            ));
        }
        let patch = TenantPatch {
            shard: Some(self.payload.to.clone()),
            status: Some(resume),
            last_error: Some(None),
            bump_epoch: true,
            ..TenantPatch::default()
        };
        tenants::update(w.conn(), self.tenant.id, &patch).await?;
        w.tenant_change(self.tenant.id, &[]).await?;
        w.audit(NewAudit {
            actor: "worker",
            action: "tenant.move_complete",
            target: &format!("tenant:{}", self.tenant.slug),
            tenant_id: Some(self.tenant.id),
            before: Some(serde_json::json!({ "shard": self.payload.from, "status": "moving" })),
            after: Some(serde_json::json!({
                "shard": self.payload.to,
                "status": resume,
                "hold_seconds": self.progress.hold_seconds,
                "final_lsn": self.progress.final_lsn,
            })),
        })
        .await?;
        if self.route == Route::CrossServer {
            let drop_at = tenantgate_contract::time::now_ms()
                + self.state.config.admin.deletion_grace.as_millis() as i64;
            w.job(&NewJob {
                id: uuid::Uuid::now_v7(),
                kind: kind::DROP_DATABASE,
                tenant_id: Some(self.tenant.id),
                payload: serde_json::json!({
                    "shard": self.payload.from,
                    "database": self.tenant.db_name,
                    "drop_login": true,
                }),
                max_attempts: i64::from(self.state.config.admin.job_max_attempts),
                run_at: drop_at,
            })
            .await?;
        }
        w.commit().await?;
        self.state.metrics.move_held(held.elapsed().as_secs_f64());
        Ok(before + 1)
    }

    /// After the flip: remove the replication and the old SQLite file, complete the job.
    async fn cleanup(&mut self) -> Result<(), AdminError> {
        self.report(Phase::Cleanup).await?;
        stall_point(Phase::Cleanup).await;
        let db = self.db().to_string();
        match self.route {
            Route::CrossServer => {
                // Again, for a job resumed after dying between the flip and here: the old copy
                // records the catalog's epoch (at least the flip's) and is read-only.
                if let Some(now) = self
                    .state
                    .catalog
                    .tenant(&self.tenant.id.to_string())
                    .await?
                {
                    super::epoch::record(&self.from, &db, now.epoch).await?;
                }
                replicate::set_read_only(&self.from, &db, true).await?;
                replicate::drop_subscription(&self.to, &db).await?;
                replicate::clean_source(&self.from, &db).await?;
                replicate::clean_target(&self.to, &db).await?;
            }
            Route::SqliteCopy => {
                let src = tenant_db::sqlite_file(&self.from.database_url, &db);
                if src != tenant_db::sqlite_file(&self.to.database_url, &db) {
                    remove_sqlite(&src)?;
                }
            }
            Route::SameServer => {}
        }
        self.progress.phase = Phase::Done;
        finish(self.state, self.worker, self.job, &self.progress).await?;
        self.state.metrics.move_finished("completed");
        Ok(())
    }

    /// After a rollback from the hold, the source is the tenant's copy again: it records the
    /// epoch the tenant had in the hold (the catalog's now, for a job resumed without it), so
    /// requests routed by that epoch are served again.
    async fn unfence_source(&mut self) -> Result<(), AdminError> {
        let epoch = match self.next_epoch.take() {
            Some(next) => next - 1,
            None => match self
                .state
                .catalog
                .tenant(&self.tenant.id.to_string())
                .await?
            {
                Some(t) => t.epoch,
                None => return Ok(()),
            },
        };
        super::epoch::record(&self.from, self.db(), epoch).await?;
        Ok(())
    }

    /// Undo everything before the flip: the target's copy goes, the source is writable again,
    /// the status is restored. `held` is when the hold began, if it did.
    async fn rollback(&mut self, held: Option<Instant>) -> Result<(), AdminError> {
        let db = self.db().to_string();
        match self.route {
            Route::CrossServer => {
                replicate::drop_subscription(&self.to, &db).await?;
                // The tenant is not on the target (checked by the caller): its copy there is
                // the move's own.
                super::restore::drop_postgres(&self.to, &db).await?;
                super::restore::drop_login(&self.to, &db).await?;
                replicate::clean_source(&self.from, &db).await?;
                if held.is_some() {
                    self.unfence_source().await?;
                }
                replicate::set_read_only(&self.from, &db, false).await?;
            }
            Route::SqliteCopy => {
                let dst = tenant_db::sqlite_file(&self.to.database_url, &db);
                if dst != tenant_db::sqlite_file(&self.from.database_url, &db) {
                    remove_sqlite(&dst)?;
                    if held.is_some() {
                        self.unfence_source().await?;
                    }
                }
            }
            Route::SameServer => {}
        }
        let resume = self.progress.resume.unwrap_or(self.payload.resume);
        self.progress.phase = Phase::RolledBack;
        let value = serde_json::to_value(&self.progress).expect("progress serialises");
        let mut w = Write::begin(self.state).await?;
        if !store::set_progress(w.conn(), self.job.id, self.worker, &value).await? {
            return Ok(()); // Another worker owns the job now and decides.
        }
        if tenant_state::status(w.conn(), self.tenant.id).await? == Some(TenantStatus::Moving) {
            // The route is the one before the move: same shard, same epoch.
            let patch = TenantPatch {
                status: Some(resume),
                ..TenantPatch::default()
            };
            tenants::update(w.conn(), self.tenant.id, &patch).await?;
            w.tenant_change(self.tenant.id, &[]).await?;
        }
        w.audit(NewAudit {
            actor: "worker",
            action: "tenant.move_rolled_back",
            target: &format!("tenant:{}", self.tenant.slug),
            tenant_id: Some(self.tenant.id),
            before: Some(serde_json::json!({ "shard": self.payload.from, "to": self.payload.to })),
            after: Some(serde_json::json!({ "shard": self.payload.from, "status": resume })),
        })
        .await?;
        w.commit().await?;
        if let Some(held) = held {
            self.state.metrics.move_held(held.elapsed().as_secs_f64());
        }
        self.state.metrics.move_finished("rolled_back");
        Ok(())
    }
}

/// SQLite's `PRAGMA data_version` on `conn`: it changes when another connection commits.
async fn data_version(conn: &mut sqlx::SqliteConnection) -> Result<i64, AdminError> {
    Ok(sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await?)
}

/// Replace `dst` with a consistent snapshot of the database `conn` is open on.
async fn vacuum_into(
    conn: &mut sqlx::SqliteConnection,
    dst: &std::path::Path,
) -> Result<(), AdminError> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    remove_sqlite(dst)?;
    let target = dst.display().to_string().replace('\'', "''");
    sqlx::query(&format!("VACUUM INTO '{target}'"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Complete the job with its last progress.
async fn finish(
    state: &AdminState,
    worker: &str,
    job: &Job,
    progress: &Progress,
) -> Result<(), AdminError> {
    let value = serde_json::to_value(progress).expect("progress serialises");
    let mut w = Write::begin(state).await?;
    if !store::set_progress(w.conn(), job.id, worker, &value).await?
        || !succeed(&mut w, job, worker).await?
    {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    w.commit().await
}
