//! The command line (DESIGN §4).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

/// tenantgate: a database-aware edge for database-per-tenant SaaS.
///
/// One Pingora edge routes every request to its tenant's shard with a signed tenant header; a
/// stateless app tier opens that tenant's own database; an admin API manages tenants, shards and
/// tokens. Start with `tenantgate dev`, which runs everything in one process on SQLite.
#[derive(Debug, Parser)]
#[command(name = "tenantgate", version)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the whole system in one process (edge, admin, one app per shard) with demo tenants.
    ///
    /// Data (the SQLite catalog and tenant databases, and the configuration it runs with, written
    /// to DIR/tenantgate.toml) lives under --data-dir. Ports: edge N, admin N+1, edge metrics N+2,
    /// apps N+10 (shard-a) and N+11 (shard-b); with --port-base 0, ports the system picks (printed,
    /// and written to DIR/tenantgate.toml). Seeds shard-a, shard-b and the tenants acme and
    /// globex if absent, prints the admin token and curl lines, stops on Ctrl-C or SIGTERM.
    Dev(DevArgs),
    /// Run the Pingora edge proxy.
    Edge {
        #[arg(long)]
        config: PathBuf,
        /// Take over the listening sockets of a running edge (Pingora graceful upgrade): start the
        /// new binary with --upgrade, then send SIGQUIT to the old one (with --pid-file, the new
        /// process does that itself once it is ready).
        #[arg(long)]
        upgrade: bool,
        /// Write the edge's pid to FILE once it owns the listening sockets, and remove it at
        /// exit. With --upgrade, the running edge is the one FILE names; the new edge signals
        /// it and then takes FILE over (systemd: PIDFile=, see deploy/systemd).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
    /// Run the admin API and the provisioning worker (applies catalog migrations first).
    Admin {
        #[arg(long)]
        config: PathBuf,
        /// Directory of tenant migrations (overrides tenant_migrations.dir).
        #[arg(long)]
        tenant_migrations: Option<PathBuf>,
    },
    /// Run one app-tier process for the shard named in [app] shard.
    App {
        #[arg(long)]
        config: PathBuf,
    },
    /// Apply schema migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Check a configuration file (with TENANTGATE__* environment overrides) and exit:
    /// 0 when valid, non-zero with a message naming the offending key otherwise. A production
    /// file may leave its secrets to the environment it will run in: they are named, each with
    /// its environment variable.
    CheckConfig {
        file: PathBuf,
        /// Secrets missing from the file and the environment are errors (use where the
        /// environment is the one the process will run with, e.g. a deploy check).
        #[arg(long)]
        require_secrets: bool,
    },
    /// Manage admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Back up and restore tenant databases (encrypted with age, in the [backups] store).
    ///
    /// create and restore queue jobs that the admin worker runs (`tenantgate admin` or `dev`
    /// must be running) and wait for them; list reads the catalog; verify downloads, checks and
    /// decrypts a backup here without touching the tenant.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Propose moves that even out the shards (and empty `draining` ones); without --dry-run,
    /// run them one at a time through the admin worker (`tenantgate admin` or `dev` must be
    /// running). Prints each move as a JSON line.
    Rebalance {
        #[arg(long)]
        config: PathBuf,
        /// What to even out: tenants per shard, or requests per shard (read from the edge's
        /// metrics at [edge] metrics_listen).
        #[arg(long, value_enum, default_value_t = BalanceBy::Tenants)]
        by: BalanceBy,
        /// Print the proposed moves and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds to wait for each move.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
}

/// `rebalance --by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BalanceBy {
    Tenants,
    Requests,
}

#[derive(Debug, Args)]
pub(crate) struct BackupTarget {
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// The tenant (slug or id).
    #[arg(long)]
    pub(crate) tenant: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Back up the tenant's database now; prints the completed backup as JSON.
    Create {
        #[command(flatten)]
        target: BackupTarget,
        /// Seconds to wait for the backup job.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
    /// List the tenant's backups, newest first (one JSON object per line).
    List {
        #[command(flatten)]
        target: BackupTarget,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Restore a backup in place of the tenant's database, or as a new tenant (--mode copy
    /// --slug NEW); waits for the restore job.
    Restore {
        #[command(flatten)]
        target: BackupTarget,
        #[arg(long)]
        backup: String,
        #[arg(long, value_parser = ["in_place", "copy"], default_value = "in_place")]
        mode: String,
        /// The new tenant's slug (--mode copy).
        #[arg(long)]
        slug: Option<String>,
        /// Seconds to wait for the restore job.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
    /// Check a backup: its object matches the catalog's SHA-256, decrypts with
    /// backups.identity_file, and holds a readable archive or database. Changes nothing.
    Verify {
        #[command(flatten)]
        target: BackupTarget,
        #[arg(long)]
        backup: uuid::Uuid,
        /// Directory for the temporary plaintext copy (removed afterwards).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        scratch: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Where the demo keeps its data and configuration.
    #[arg(long, default_value = "data")]
    pub(crate) data_dir: PathBuf,
    /// First port: edge N, admin N+1, metrics N+2, apps N+10 and N+11. 0: every listener on a
    /// free port the system picks (printed, and written to DIR/tenantgate.toml).
    #[arg(long, default_value_t = 8080)]
    pub(crate) port_base: u16,
    /// Admin token to use (default: generated on first run and kept in DIR/tenantgate.toml).
    #[arg(long)]
    pub(crate) admin_token: Option<String>,
    /// Put the catalog and both shards on this PostgreSQL server instead of SQLite
    /// (e.g. postgres://postgres@127.0.0.1:5432/tenantgate; the database is created if missing).
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Directory of tenant migrations (default ./tenant_migrations).
    #[arg(long)]
    pub(crate) tenant_migrations: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCommand {
    /// Bring the catalog schema up to date.
    Catalog {
        #[arg(long)]
        config: PathBuf,
    },
    /// Apply pending tenant migrations to every tenant database (or those named).
    Tenants {
        #[arg(long)]
        config: PathBuf,
        /// Only this tenant (slug); repeatable.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Tenant databases migrated at once per database server.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// List what would run and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Directory of tenant migrations (overrides tenant_migrations.dir).
        #[arg(long)]
        tenant_migrations: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an admin token and print it alone on stdout (it is shown only once).
    Create {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_parser = ["read", "write"])]
        scope: String,
        /// A name to recognise the token by in the audit log.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Seconds until the token expires (default: it does not expire).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10 * 365 * 86_400))]
        ttl: Option<u64>,
        /// Restrict the token to this tenant (id or slug); repeat for several. Such a token
        /// sees and changes only these tenants and gets 403 `outside_scope` on fleet-wide
        /// routes. Default: the whole fleet.
        #[arg(long = "tenant", value_name = "SLUG")]
        tenants: Vec<String>,
    },
    /// List admin tokens, one JSON object per line (never the secrets).
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Revoke an admin token by id; it answers 401 from its next request on.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        /// The token's id (from `token list` or the audit log).
        id: uuid::Uuid,
    },
}
