//! Database URLs: the one reading of `catalog.url`, a shard's `database_url` and its replicas.
//!
//! A catalog or shard is a PostgreSQL server (`postgres://user:pass@host:port/db`) or, for the
//! embedded default, SQLite (`sqlite://PATH`: the catalog's file, or a shard's folder of tenant
//! files).

use std::fmt;

/// The database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Postgres,
    Sqlite,
}

/// Why a database URL was refused. The URL itself is never part of the message (it may hold a
/// password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// Neither `postgres://`, `postgresql://` nor `sqlite:`.
    UnsupportedScheme,
    /// A PostgreSQL URL without a host, or a SQLite URL without a path.
    Invalid,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::UnsupportedScheme => "must start with postgres://, postgresql:// or sqlite:",
            UrlError::Invalid => "is not a valid database URL",
        })
    }
}

impl std::error::Error for UrlError {}

impl Engine {
    /// The engine a URL names (by its scheme only).
    pub fn of_url(url: &str) -> Result<Engine, UrlError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else {
            Err(UrlError::UnsupportedScheme)
        }
    }

    /// The engine of a URL that is complete: a PostgreSQL URL with a host, a SQLite URL with a
    /// path.
    pub fn of_valid_url(url: &str) -> Result<Engine, UrlError> {
        let engine = Engine::of_url(url)?;
        let complete = match engine {
            Engine::Sqlite => !sqlite_path(url).is_empty(),
            Engine::Postgres => url::Url::parse(url).is_ok_and(|u| u.host_str().is_some()),
        };
        if complete {
            Ok(engine)
        } else {
            Err(UrlError::Invalid)
        }
    }

    /// Folder name under `migrations/` and `tenant_migrations/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
        }
    }
}

/// `url` with any password replaced by `***`, for logs and API output.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

/// The path of a `sqlite:` URL (`sqlite://data/x.db`, `sqlite:data/x.db`, `sqlite:///abs/x.db`).
pub fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    rest.split('?').next().unwrap_or(rest)
}

/// The database server a URL points at, as `host:port` for PostgreSQL (port 5432 when unset)
/// and the folder for SQLite. Two shards on the same server give the same value.
pub fn server_of(url: &str) -> Option<String> {
    match Engine::of_url(url).ok()? {
        Engine::Sqlite => Some(sqlite_path(url).to_string()),
        Engine::Postgres => {
            let u = url::Url::parse(url).ok()?;
            Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(5432)))
        }
    }
}

/// `url` (a PostgreSQL server URL) pointed at `database`, optionally with another login
/// (user, password).
pub fn postgres_url(
    url: &str,
    database: &str,
    login: Option<(&str, &str)>,
) -> Result<String, UrlError> {
    let mut parsed = url::Url::parse(url).map_err(|_| UrlError::Invalid)?;
    parsed.set_path(&format!("/{database}"));
    if let Some((user, password)) = login {
        parsed.set_username(user).map_err(|_| UrlError::Invalid)?;
        parsed
            .set_password(Some(password))
            .map_err(|_| UrlError::Invalid)?;
    }
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_and_validity() {
        assert_eq!(Engine::of_url("postgres://h/db"), Ok(Engine::Postgres));
        assert_eq!(Engine::of_url("postgresql://h/db"), Ok(Engine::Postgres));
        assert_eq!(Engine::of_url("sqlite://data/x"), Ok(Engine::Sqlite));
        assert_eq!(
            Engine::of_url("mysql://h/"),
            Err(UrlError::UnsupportedScheme)
        );
        assert_eq!(
            Engine::of_valid_url("postgres:///db"),
            Err(UrlError::Invalid)
        );
        assert_eq!(Engine::of_valid_url("sqlite://"), Err(UrlError::Invalid));
        assert_eq!(
            Engine::of_valid_url("postgres://u:p@h:5432/postgres"),
            Ok(Engine::Postgres)
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:p@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/x"), "sqlite://data/x");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://data/x.db"), "data/x.db");
        assert_eq!(sqlite_path("sqlite:data/x.db"), "data/x.db");
        assert_eq!(sqlite_path("sqlite:///abs/x.db?mode=rwc"), "/abs/x.db");
    }

    #[test]
    fn servers() {
        assert_eq!(
            server_of("postgres://u:p@db1/postgres").as_deref(),
            Some("db1:5432")
        );
        assert_eq!(
            server_of("postgres://u@db1:5433/x").as_deref(),
            Some("db1:5433")
        );
        assert_eq!(server_of("sqlite://data/a").as_deref(), Some("data/a"));
        assert_eq!(server_of("mysql://x"), None);
    }

    #[test]
    fn postgres_urls_swap_database_and_login() {
        let url = postgres_url(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "t_1",
            Some(("t_1", "p@ss/word")),
        )
        .unwrap();
        assert_eq!(url, "postgres://t_1:p%40ss%2Fword@127.0.0.1:5432/t_1");
        let url = postgres_url(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
            "x",
            None,
        )
        .unwrap();
        assert_eq!(url, "postgres://postgres@127.0.0.1:5432/x?sslmode=disable");
    }
}
