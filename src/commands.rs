//! One function per command: load the configuration, build the component, run it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tenantgate_catalog::{Catalog, TokenScope};
use tenantgate_config::{Config, SecretPolicy};
use tokio_util::sync::CancellationToken;

use crate::cli::{BalanceBy, Command, MigrateCommand, TokenCommand};

pub(crate) fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Dev(args) => crate::dev::run(args),
        Command::CheckConfig {
            file,
            require_secrets,
        } => Ok(check_config(&file, require_secrets)),
        Command::Edge {
            config,
            upgrade,
            pid_file,
        } => {
            let config = load(&config, None)?;
            let launch = tenantgate_edge::Launch { upgrade, pid_file };
            // The edge logs the addresses it bound ("edge running"), also for port 0.
            tenantgate_edge::run_standalone(Arc::new(config), launch, |_| {})?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin {
            config,
            tenant_migrations,
        } => {
            let config = Arc::new(load(&config, tenant_migrations)?);
            runtime()?.block_on(async move {
                let catalog = connect(&config, true).await?;
                let listener = bind(config.admin.listen).await?;
                // The bound address: with port 0 in the configuration, the port the system chose.
                tracing::info!(listen = %listener.local_addr()?, "admin API listening");
                let shutdown = shutdown_on_signal();
                tenantgate_admin::serve(config, catalog, listener, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::App { config } => {
            let config = Arc::new(load(&config, None)?);
            runtime()?.block_on(async move {
                let catalog = connect(&config, false).await?;
                let listener = bind(config.app.listen).await?;
                tracing::info!(listen = %listener.local_addr()?, shard = %config.app.shard, "app listening");
                let shutdown = shutdown_on_signal();
                tenantgate_app::serve(config, catalog, listener, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Migrate(MigrateCommand::Catalog { config }) => {
            let config = load(&config, None)?;
            runtime()?.block_on(async move {
                let catalog = connect(&config, true).await?;
                let version = catalog.latest_version().await?;
                println!("catalog schema is up to date (feed version {version})");
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Migrate(MigrateCommand::Tenants {
            config,
            tenants,
            concurrency,
            dry_run,
            tenant_migrations,
        }) => {
            let config = Arc::new(load(&config, tenant_migrations)?);
            runtime()?.block_on(async move {
                let catalog = connect(&config, false).await?;
                let options = tenantgate_admin::fleet::FleetOptions {
                    tenants,
                    concurrency,
                    dry_run,
                };
                let progress = tenantgate_admin::fleet::ConsoleProgress::default();
                let summary = tenantgate_admin::fleet::migrate_tenants(
                    &config, &catalog, &options, &progress,
                )
                .await?;
                tenantgate_admin::fleet::print_summary(&summary, dry_run);
                Ok(if summary.failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
        Command::Token(command) => tokens(command),
        Command::Backup(command) => crate::backup::run(command),
        Command::Rebalance {
            config,
            by,
            dry_run,
            wait_secs,
        } => {
            let config = load(&config, None)?;
            let by = match by {
                BalanceBy::Tenants => tenantgate_admin::rebalance::Balance::Tenants,
                BalanceBy::Requests => tenantgate_admin::rebalance::Balance::Requests,
            };
            runtime()?.block_on(async move {
                let catalog = connect(&config, true).await?;
                let moves = tenantgate_admin::rebalance::propose(&config, &catalog, by).await?;
                for m in &moves {
                    println!("{}", serde_json::to_string(m)?);
                }
                if moves.is_empty() {
                    eprintln!("the shards are balanced: no move proposed");
                } else if !dry_run {
                    let each = std::time::Duration::from_secs(wait_secs);
                    tenantgate_admin::rebalance::run(&config, &catalog, &moves, each).await?;
                    eprintln!("{} move(s) done", moves.len());
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

/// `token create|list|revoke`.
fn tokens(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let config = match &command {
        TokenCommand::Create { config, .. }
        | TokenCommand::List { config }
        | TokenCommand::Revoke { config, .. } => load(config, None)?,
    };
    runtime()?.block_on(async move {
        let catalog = connect(&config, true).await?;
        match command {
            TokenCommand::Create {
                scope,
                name,
                ttl,
                tenants,
                ..
            } => {
                let scope: TokenScope =
                    scope.parse().map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
                let ttl = ttl.map(Duration::from_secs);
                let token =
                    tenantgate_admin::tokens::create(&catalog, scope, &name, ttl, &tenants).await?;
                println!("{token}");
            }
            TokenCommand::List { .. } => {
                for token in tenantgate_admin::tokens::list(&catalog).await? {
                    println!("{}", serde_json::to_string(&token)?);
                }
            }
            TokenCommand::Revoke { id, .. } => {
                let token = tenantgate_admin::tokens::revoke(&config, &catalog, id).await?;
                println!("{}", serde_json::to_string(&token)?);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `check-config`: exit 0 when the file (with environment overrides) is valid.
fn check_config(file: &Path, require_secrets: bool) -> ExitCode {
    let policy = if require_secrets {
        SecretPolicy::Require
    } else {
        SecretPolicy::Defer
    };
    match Config::check_with_env(file, std::env::vars(), policy) {
        Ok((config, from_env)) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}: ok ({:?} mode)", file.display(), config.mode);
            for key in &from_env {
                println!(
                    "secret {key} must come from the environment: set {}",
                    tenantgate_config::variable_for(key)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

/// Load and validate the configuration; nothing is bound before this succeeds.
pub(crate) fn load(path: &Path, tenant_migrations: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(dir) = tenant_migrations {
        config.tenant_migrations.dir = dir;
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) async fn connect(config: &Config, migrate: bool) -> anyhow::Result<Catalog> {
    let url = &config.catalog.url;
    let catalog = Catalog::connect(url, config.catalog.max_connections)
        .await
        .with_context(|| {
            format!(
                "connecting to the catalog at {}",
                tenantgate_config::db_url::redact(url)
            )
        })?;
    if migrate {
        catalog.migrate().await.context("migrating the catalog")?;
    }
    Ok(catalog)
}

pub(crate) async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// A token cancelled on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
