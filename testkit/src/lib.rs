//! tenantgate's test kit: what the integration tests of every crate share.
//!
//! - [`both_backends!`]: one test body, run as `name::sqlite` and `name::postgres`.
//! - [`wait_until`]: bounded polling for asynchronous convergence (never a fixed sleep).
//! - [`db`]: isolated PostgreSQL databases and SQLite directories ([`TestCatalog`],
//!   [`PgTestDb`]).
//! - [`pg_server`]: private PostgreSQL servers (`initdb` + `pg_ctl`, `wal_level = logical`), for
//!   tests that need a second database server or a streaming standby.
//! - [`net`]: addresses and stand-in servers for tests that need a peer.
//! - [`redis`]: a private `redis-server` on its own port, to kill, restart or pause.
//! - [`process`]: the real `tenantgate` binary as a child process (`dev`, or one component),
//!   on ephemeral ports it reports back.
//! - [`edge`] (feature `edge`): an edge started in-process on `127.0.0.1:0` with test app
//!   backends.
//! - [`admin`] (feature `admin`): the admin API and worker on `127.0.0.1:0`, driven over HTTP.
//!
//! Use it as a dev-dependency of integration tests (`tests/`) and benches only: a unit test in a
//! crate's `src/` would see the kit's copy of that crate as a different crate.

pub mod db;
pub mod load;
pub mod net;
pub mod pg_server;
pub mod process;
pub mod redis;
pub mod tls;

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "edge")]
pub mod edge;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use db::{latest_tenant_migration, server_url, tenant_migrations_dir, PgTestDb, TestCatalog};
pub use tenantgate_config::db_url::Engine;

/// What a [`both_backends!`] test takes as its one argument: the [`Engine`] itself (the test
/// builds its own harness), or a fresh [`TestCatalog`] on it.
pub trait Backend: Sized {
    /// The argument for a test run on `engine`.
    fn open(engine: Engine) -> impl Future<Output = Self> + Send;
}

impl Backend for Engine {
    fn open(engine: Engine) -> impl Future<Output = Self> + Send {
        std::future::ready(engine)
    }
}

impl Backend for TestCatalog {
    fn open(engine: Engine) -> impl Future<Output = Self> + Send {
        TestCatalog::on(engine)
    }
}

/// Run each named `async fn name(backend)` on both backends: the tests `name::sqlite` and
/// `name::postgres`, each on a two-worker multi-thread runtime. The function's one parameter is
/// an [`Engine`] or a [`TestCatalog`] (anything [`Backend`]):
///
/// ```ignore
/// use tenantgate_testkit::{both_backends, TestCatalog};
///
/// both_backends!(creates_a_tenant, lists_tenants);
///
/// async fn creates_a_tenant(tc: TestCatalog) {
///     let catalog = tc.connect().await;
///     // ...
/// }
/// ```
///
/// The test crate needs `tokio` (with `macros` and `rt-multi-thread`) among its dependencies.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::run_on($crate::Engine::Sqlite, super::$name).await
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::run_on($crate::Engine::Postgres, super::$name).await
                }
            }
        )+
    };
}

/// Run `test` with its [`Backend`] argument for `engine` (what [`both_backends!`] expands to;
/// the argument's type is the test function's parameter type).
pub async fn run_on<B, F, Fut>(engine: Engine, test: F)
where
    B: Backend,
    F: FnOnce(B) -> Fut,
    Fut: Future<Output = ()>,
{
    test(B::open(engine).await).await
}

/// Poll `check` every 20 ms until it returns `Some`, or panic after `timeout` naming `what`.
///
/// The way to assert asynchronous convergence (a feed applied, a job finished, a process
/// listening): as fast as the system allows, bounded when it does not.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The repository's root directory (where `tenant_migrations/` and `Cargo.toml` are).
pub fn repository_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
