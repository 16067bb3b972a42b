//! `[edge] limits_backend`, `redis_url`, `fleet_size`: where the edge keeps its per-tenant rate
//! limits, validated.
//!
//! `local` limits each edge process on its own (a fleet of N edges lets a tenant through at N
//! times its limit); `redis` shares one limit per tenant across the fleet through a Redis
//! server, with `limit / fleet_size` per edge while Redis is unreachable.

use std::fmt;

use crate::raw::RawEdge;
use crate::secrets::SecretPolicy;
use crate::ConfigError;

/// Where per-tenant rate limits are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsBackend {
    /// Each edge process on its own.
    Local,
    /// One limit per tenant across the fleet, settled with this Redis server.
    Redis(RedisUrl),
}

/// A `redis://` URL. It may hold a password, so it is never printed: `Debug` shows only that
/// one is set, and errors about it never quote it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL, for the client that connects with it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisUrl(..)")
    }
}

/// The limits backend and the fleet size of `[edge]`. `redis_url` is required with the redis
/// backend (as a secret: `check-config` may leave it to the environment).
pub(crate) fn limits(
    e: &RawEdge,
    policy: SecretPolicy,
    deferred: &mut Vec<String>,
) -> Result<(LimitsBackend, u32), ConfigError> {
    let fleet_size = crate::validate::range("edge.fleet_size", e.fleet_size, 1, 10_000)?;
    let backend = match e.limits_backend.as_str() {
        "local" => LimitsBackend::Local,
        "redis" if e.redis_url.is_empty() => match policy {
            SecretPolicy::Require => {
                return Err(ConfigError::new(
                    "edge.redis_url",
                    "is required when edge.limits_backend is \"redis\"",
                ))
            }
            SecretPolicy::Defer => {
                deferred.push("edge.redis_url".into());
                LimitsBackend::Redis(RedisUrl("redis://127.0.0.1:6379".into()))
            }
        },
        "redis" => LimitsBackend::Redis(redis_url(&e.redis_url)?),
        other => {
            return Err(ConfigError::new(
                "edge.limits_backend",
                format!("{other:?} is not one of \"local\", \"redis\""),
            ))
        }
    };
    Ok((backend, fleet_size))
}

fn redis_url(text: &str) -> Result<RedisUrl, ConfigError> {
    let key = "edge.redis_url";
    // The parse error is not quoted: it could repeat part of the URL, password included.
    let url = url::Url::parse(text).map_err(|_| {
        ConfigError::new(key, "is not a URL (redis://[user:password@]host:port/db)")
    })?;
    if url.scheme() != "redis" || url.host_str().is_none() {
        return Err(ConfigError::new(
            key,
            "must be a redis:// URL with a host (TLS, rediss://, is not supported)",
        ));
    }
    Ok(RedisUrl(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(backend: &str, url: &str, fleet_size: u32) -> RawEdge {
        RawEdge {
            limits_backend: backend.into(),
            redis_url: url.into(),
            fleet_size,
            ..RawEdge::default()
        }
    }

    fn check(e: &RawEdge) -> Result<(LimitsBackend, u32), ConfigError> {
        limits(e, SecretPolicy::Require, &mut Vec::new())
    }

    #[test]
    fn local_is_the_default() {
        assert_eq!(
            check(&RawEdge::default()).unwrap(),
            (LimitsBackend::Local, 1)
        );
    }

    #[test]
    fn redis_needs_a_redis_url_and_never_echoes_it() {
        let err = check(&edge("redis", "", 3)).unwrap_err();
        assert_eq!(err.key, "edge.redis_url");
        for bad in [
            "http://:hunter2@cache:6379",
            "rediss://:hunter2@cache:6379",
            "redis://:hunter2@",
            "hunter2",
        ] {
            let err = check(&edge("redis", bad, 3)).unwrap_err();
            assert_eq!(err.key, "edge.redis_url", "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let (backend, fleet) = check(&edge("redis", "redis://:hunter2@cache:6379/2", 3)).unwrap();
        assert_eq!(fleet, 3);
        assert!(!format!("{backend:?}").contains("hunter2"));
        match backend {
            LimitsBackend::Redis(url) => assert_eq!(url.expose(), "redis://:hunter2@cache:6379/2"),
            LimitsBackend::Local => panic!("redis expected"),
        }
    }

    #[test]
    fn a_missing_url_can_be_left_to_the_environment() {
        let mut deferred = Vec::new();
        limits(&edge("redis", "", 2), SecretPolicy::Defer, &mut deferred).unwrap();
        assert_eq!(deferred, ["edge.redis_url"]);
    }

    #[test]
    fn bad_backend_and_fleet_size_name_their_key() {
        assert_eq!(
            check(&edge("memcached", "", 1)).unwrap_err().key,
            "edge.limits_backend"
        );
        assert_eq!(
            check(&edge("local", "", 0)).unwrap_err().key,
            "edge.fleet_size"
        );
    }
}
