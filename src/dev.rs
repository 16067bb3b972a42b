//! `tenantgate dev`: the whole system in one process on the embedded default (SQLite), or with
//! the catalog and both shards on one PostgreSQL server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tenantgate_catalog::Catalog;
use tenantgate_config::{Config, RawConfig};
use tenantgate_contract::crypto::{random_secret, random_token};
use tenantgate_contract::TenantStatus;
use tokio_util::sync::CancellationToken;

use crate::cli::DevArgs;
use crate::commands::{bind, connect, runtime, shutdown_on_signal};

/// The demo's shards and tenants: (shard, port offset) and (slug, name, host, shard, locale).
const SHARDS: [(&str, u16); 2] = [("shard-a", 10), ("shard-b", 11)];
const TENANTS: [(&str, &str, &str, &str, &str); 2] = [
    ("acme", "Acme Corp", "acme.localhost", "shard-a", "en"),
    ("globex", "Globex GmbH", "globex.localhost", "shard-b", "de"),
];
/// How long `dev` waits for the demo tenants to be provisioned before giving up.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the components get to stop after Ctrl-C before the process exits anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(4);

pub(crate) fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let config_path = data_dir.join("tenantgate.toml");
    let mut raw = dev_config(&args, &data_dir, &config_path)?;
    write_private(&config_path, &raw.to_toml())?;
    let config = Arc::new(Config::load(&config_path)?);
    let admin_token = config
        .admin
        .bootstrap_token
        .clone()
        .expect("dev config always has a bootstrap token");

    let rt = runtime()?;
    rt.block_on(async {
        if let Some(url) = &args.database_url {
            create_postgres_database(url).await?;
        }
        let catalog = connect(&config, true).await?;
        let shutdown = shutdown_on_signal();

        // Bind every listener before seeding, so a port conflict stops us before any change.
        // With `--port-base 0` the addresses are known only from here on.
        let admin_listener = bind(config.admin.listen).await?;
        let mut app_listeners = Vec::new();
        for (shard, offset) in SHARDS {
            let addr = port(&config, args.port_base, offset);
            app_listeners.push((shard, bind(addr).await?));
        }
        let mut apps = Vec::new();
        for (shard, listener) in &app_listeners {
            apps.push((*shard, listener.local_addr()?));
        }

        // Shards and tenants first, so the apps find their shard; the admin worker started
        // next provisions the tenants.
        seed(
            &config,
            &catalog,
            &apps,
            &data_dir,
            args.database_url.as_deref(),
        )
        .await?;
        let admin = admin_listener.local_addr()?;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(component(tenantgate_admin::serve(
            config.clone(),
            catalog.clone(),
            admin_listener,
            shutdown.clone(),
        ))));
        for (shard, listener) in app_listeners {
            let mut app_config = (*config).clone();
            app_config.app.shard = shard.to_string();
            app_config.app.listen = listener.local_addr()?;
            tasks.push(tokio::spawn(component(tenantgate_app::serve(
                Arc::new(app_config),
                catalog.clone(),
                listener,
                shutdown.clone(),
            ))));
        }

        // `start` blocks until the edge listens (it runs its own runtimes): keep that wait off
        // our async workers.
        let (edge_config, edge_shutdown) = (config.clone(), shutdown.clone());
        let edge =
            tokio::task::spawn_blocking(move || tenantgate_edge::start(edge_config, edge_shutdown))
                .await??;
        let listening = Listening {
            edge: edge.addrs(),
            admin,
            apps,
        };
        // The configuration on disk names the addresses actually bound, for the other commands.
        raw.edge.listen = listening.edge.proxy.to_string();
        raw.edge.metrics_listen = listening.edge.metrics.to_string();
        raw.admin.listen = listening.admin.to_string();
        raw.app.listen = listening.apps[0].1.to_string();
        write_private(&config_path, &raw.to_toml())?;
        wait_for_tenants(&catalog, &shutdown).await?;
        print_banner(&listening, &admin_token, &config_path);

        shutdown.cancelled().await;
        let stop = async {
            for task in tasks {
                if let Ok(Err(e)) = task.await {
                    tracing::warn!("component stopped with an error: {e}");
                }
            }
            let _ = tokio::task::spawn_blocking(move || edge.join()).await;
        };
        if tokio::time::timeout(STOP_TIMEOUT, stop).await.is_err() {
            tracing::warn!("components did not stop within {STOP_TIMEOUT:?}; exiting anyway");
        }
        catalog.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// A component's future with its error turned into text, so components of different error
/// types can be awaited together.
async fn component<E: std::fmt::Display>(
    run: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    run.await.map_err(|e| e.to_string())
}

/// Where everything listens, as bound.
struct Listening {
    edge: tenantgate_edge::EdgeAddrs,
    admin: SocketAddr,
    /// One app per shard, in `SHARDS` order.
    apps: Vec<(&'static str, SocketAddr)>,
}

/// The port at `offset` from `--port-base`; with base 0, port 0 (one the system picks).
fn port_number(base: u16, offset: u16) -> u16 {
    if base == 0 {
        0
    } else {
        base + offset
    }
}

fn port(config: &Config, base: u16, offset: u16) -> SocketAddr {
    SocketAddr::new(config.edge.listen.ip(), port_number(base, offset))
}

/// The configuration `dev` runs with: the existing DIR/tenantgate.toml (keeping its secrets and
/// admin token, so sealed credentials still open) with the command line applied on top.
fn dev_config(args: &DevArgs, data_dir: &Path, config_path: &Path) -> anyhow::Result<RawConfig> {
    let mut raw = if config_path.exists() {
        RawConfig::load_with_env(config_path, std::iter::empty())?
    } else {
        RawConfig::default()
    };
    let base = args.port_base;
    if base > u16::MAX - 11 {
        bail!("--port-base {base} leaves no room for the ports up to N+11");
    }
    let addr = |offset: u16| format!("127.0.0.1:{}", port_number(base, offset));
    raw.mode = Some("dev".into());
    raw.catalog.url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", data_dir.join("catalog.db").display()),
    };
    raw.catalog.poll_interval_ms = 200;
    raw.edge.listen = addr(0);
    raw.admin.listen = addr(1);
    raw.edge.metrics_listen = addr(2);
    raw.app.listen = addr(10);
    raw.edge.grace_period_secs = 1;
    if let Some(token) = &args.admin_token {
        raw.admin.bootstrap_token = Some(token.clone());
    } else if raw.admin.bootstrap_token.is_none() {
        raw.admin.bootstrap_token = Some(random_token("tgadm_"));
    }
    if raw.security.signing_keys.is_empty() {
        raw.security.signing_key_id = Some("dev-1".into());
        raw.security
            .signing_keys
            .insert("dev-1".into(), random_secret(32));
    }
    if raw.security.credential_key.is_none() {
        raw.security.credential_key = Some(random_secret(32));
    }
    // Backups go to DIR/backups, encrypted to an age identity generated once in
    // DIR/backup-identity.txt (kept across runs, so earlier backups stay readable).
    if raw.backups.recipient.is_none() || raw.backups.identity_file.is_none() {
        let identity = data_dir.join("backup-identity.txt");
        let recipient = tenantgate_admin::backups::ensure_identity(&identity)?;
        raw.backups.recipient = Some(recipient);
        raw.backups.identity_file = Some(identity);
    }
    if raw.backups.store == tenantgate_config::raw::RawBackups::default().store {
        raw.backups.store = format!("file://{}", data_dir.join("backups").display());
    }
    if let Some(dir) = &args.tenant_migrations {
        raw.tenant_migrations.dir = dir.clone();
    }
    raw.tenant_migrations.dir = absolute(&raw.tenant_migrations.dir)?;
    if !raw.tenant_migrations.dir.is_dir() {
        bail!(
            "tenant migrations directory {} does not exist (run from the repository root or pass --tenant-migrations DIR)",
            raw.tenant_migrations.dir.display()
        );
    }
    Ok(raw)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// Write `text` to `path` readable by the owner only: it holds secrets.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let header = "# Written by `tenantgate dev`: the configuration the demo runs with.\n\
                  # It holds the demo's secrets; keep it private.\n\n";
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(header.as_bytes())?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Create the demo's shards (served by `apps`) and tenants if they are absent; a shard's app
/// upstream follows the address its app listens on now.
async fn seed(
    config: &Config,
    catalog: &Catalog,
    apps: &[(&str, SocketAddr)],
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<()> {
    for &(shard, app) in apps {
        let upstream = app.to_string();
        let database_url = match database_url {
            Some(url) => url.to_string(),
            None => format!("sqlite://{}", data_dir.join("shards").join(shard).display()),
        };
        tenantgate_admin::ensure_shard(catalog, shard, vec![upstream], &database_url).await?;
    }
    for (slug, name, host, shard, locale) in TENANTS {
        let settings = serde_json::json!({ "locale": locale });
        tenantgate_admin::ensure_tenant(config, catalog, slug, name, host, shard, settings).await?;
    }
    Ok(())
}

async fn wait_for_tenants(catalog: &Catalog, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let mut pending = Vec::new();
        for (slug, ..) in TENANTS {
            match catalog.tenant(slug).await?.map(|t| t.status) {
                Some(TenantStatus::Active) => {}
                Some(TenantStatus::Failed) => {
                    bail!("provisioning the demo tenant {slug} failed; see GET /v1/tenants/{slug}")
                }
                other => pending.push((slug, other)),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() > PROVISION_TIMEOUT || shutdown.is_cancelled() {
            bail!("demo tenants not active after {PROVISION_TIMEOUT:?}: {pending:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_postgres_database(url: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let parsed = url::Url::parse(url).context("--database-url is not a URL")?;
    let name = parsed.path().trim_start_matches('/').to_string();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!(
            "--database-url must name a database of letters, digits and '_' (e.g. .../tenantgate)"
        );
    }
    let server = tenantgate_catalog::tenant_db::postgres_url(url, "postgres", None)?;
    let mut conn = sqlx::PgConnection::connect(&server)
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                tenantgate_config::db_url::redact(&server)
            )
        })?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?
        .is_some();
    if !exists {
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
    }
    Ok(())
}

/// The banner: every address (one `  label  URL` line each, which tests read), the config file,
/// the admin token and curl lines.
fn print_banner(listening: &Listening, token: &str, config_path: &Path) {
    let edge = listening.edge.proxy;
    let admin = listening.admin;
    let metrics = listening.edge.metrics;
    let apps: String = listening
        .apps
        .iter()
        .map(|(shard, addr)| format!("\n  {:<14}http://{addr}", format!("app {shard}")))
        .collect();
    println!(
        "\ntenantgate dev is running (Ctrl-C stops it)\n\
         \n  edge          http://{edge}\
         \n  admin API     http://{admin}\
         \n  edge metrics  http://{metrics}/metrics{apps}\
         \n  config        {config}\
         \n  admin token   {token}\
         \n\nTry:\
         \n  curl -H 'Host: acme.localhost' http://{edge}/whoami\
         \n  curl -H 'Host: globex.localhost' http://{edge}/whoami\
         \n  curl -H 'Host: nobody.localhost' http://{edge}/whoami\
         \n  curl -H 'Authorization: Bearer {token}' http://{admin}/v1/tenants\
         \n  curl -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\
         \n       -d '{{\"slug\":\"initech\",\"name\":\"Initech\",\"domains\":[\"initech.localhost\"]}}' http://{admin}/v1/tenants\
         \n  curl -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\
         \n       -d '{{\"email\":\"ops@acme.test\",\"role\":\"owner\"}}' http://{admin}/v1/tenants/acme/tokens\
         \n  curl -X POST -H 'Authorization: Bearer {token}' http://{admin}/v1/tenants/acme/backups\
         \n  curl http://{metrics}/metrics\n",
        config = config_path.display(),
    );
}
