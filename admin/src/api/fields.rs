//! The string fields of request bodies whose form is a rule: slug, display name, domain, app
//! upstream, database URLs. Each is a newtype whose OpenAPI schema states the rule; request
//! bodies are checked against that schema before they are read (see [`crate::extract`]), so
//! the schema is the rule's one copy.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A port 1-65535.
const PORT: &str =
    "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
/// A DNS label as an operator may type it (hosts are lower-cased where they are read).
const ANY_CASE_LABEL: &str = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
/// User, password, host and port of a PostgreSQL server URL.
fn postgres_server() -> String {
    format!("postgres(ql)?://([A-Za-z0-9._~%-]+(:[A-Za-z0-9._~%-]*)?@)?[A-Za-z0-9.-]+(:{PORT})?")
}
/// A PostgreSQL URL's optional database and connection parameters (`?sslmode=verify-full&
/// sslrootcert=/etc/ssl/db-ca.pem`).
const POSTGRES_TAIL: &str = "(/[A-Za-z0-9._-]*)?(\\?[A-Za-z0-9._~%=&/:+-]*)?";

fn string(pattern: String, max_length: usize, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max_length))
        .description(Some(description))
        .examples([example])
        .into()
}

macro_rules! field {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub(crate) struct $name(pub(crate) String);

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $name {}

        // Not every field's text is read through here.
        #[allow(dead_code)]
        impl $name {
            pub(crate) fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

field!(
    /// A tenant slug or shard name: 2-63 characters of a-z, 0-9 and '-', starting with a letter
    /// and not ending with '-'. Slugs appear in metric labels, URLs and headers, so they are
    /// kept to a small alphabet.
    Slug,
    string(
        "^[a-z][a-z0-9-]{0,61}[a-z0-9]$".into(),
        63,
        "2-63 characters of a-z, 0-9 and '-', starting with a letter, not ending with '-'",
        "acme"
    )
);

field!(
    /// A display name: 1-200 characters, not blank, no control characters.
    Name,
    string(
        "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$".into(),
        Name::MAX_CHARS,
        "not blank, no control characters",
        "Acme Inc."
    )
);

impl Name {
    /// Longest display name, in characters.
    pub(crate) const MAX_CHARS: usize = 200;
}

field!(
    /// A domain as an operator types it: an ASCII host (any case, an optional trailing dot and
    /// port, which normalising removes), optionally `/` and one path-prefix segment.
    Domain,
    string(
        format!("^{ANY_CASE_LABEL}(\\.{ANY_CASE_LABEL})*\\.?(:{PORT})?(/[A-Za-z0-9_-][A-Za-z0-9._-]{{0,62}})?$"),
        253,
        "a host, or host/prefix (case, a trailing dot and a port are normalised away)",
        "acme.example.com"
    )
);

field!(
    /// An app backend: `host:port`.
    Upstream,
    string(
        format!("^{ANY_CASE_LABEL}(\\.{ANY_CASE_LABEL})*:{PORT}$"),
        259,
        "host:port of an app backend",
        "127.0.0.1:8090"
    )
);

field!(
    /// Where a shard's tenant databases live: a PostgreSQL server URL, or `sqlite://DIR`.
    DatabaseUrl,
    string(
        format!(
            "^(sqlite://[A-Za-z0-9._/-]+|{}{POSTGRES_TAIL})$",
            postgres_server()
        ),
        2048,
        "postgres://… server URL or sqlite://DIR",
        "sqlite://data/shards/shard-c"
    )
);

field!(
    /// A read replica of a PostgreSQL shard's server.
    ReplicaUrl,
    string(
        format!("^{}{POSTGRES_TAIL}$", postgres_server()),
        2048,
        "postgres://… URL of a streaming replica",
        "postgres://replica.internal:5432/postgres"
    )
);

/// A tenant's domains: 1 to 50 distinct ones.
pub(crate) fn domain_list() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(Domain::schema())
        .min_items(Some(1))
        .max_items(Some(50))
        .unique_items(true)
        .build()
}

/// A uuid.
pub(crate) fn uuid() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::schema::KnownFormat::Uuid,
        )))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantgate_contract::host::DomainSpec;

    fn matches<T: ToSchema>(value: &str) -> bool {
        let schema = serde_json::to_value(T::schema()).unwrap();
        jsonschema::validator_for(&schema)
            .unwrap()
            .is_valid(&serde_json::json!(value))
    }

    #[test]
    fn slugs() {
        for good in ["ab", "acme", "a-1", "globex-2"] {
            assert!(matches::<Slug>(good), "{good}");
        }
        for bad in ["a", "1abc", "Acme", "ac_me", "acme-", "", &"a".repeat(64)] {
            assert!(!matches::<Slug>(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(matches::<Name>("Acme Inc."));
        for bad in ["", "   ", "a\u{7}b", &"x".repeat(201)] {
            assert!(!matches::<Name>(bad), "{bad:?}");
        }
    }

    /// Every domain the schema lets through, the edge's own parser reads unchanged.
    #[test]
    fn domains_the_schema_allows_parse_as_they_are() {
        for good in [
            "acme.example.com",
            "app.example.com/acme",
            "localhost",
            "a.b/c.d",
            "1.2.3.4",
        ] {
            assert!(matches::<Domain>(good), "{good}");
            assert_eq!(DomainSpec::parse(good).unwrap().to_string(), good);
        }
        for typed in ["Acme.com", "acme.com.", "acme.com:80", "ACME.com.:8443/x"] {
            assert!(matches::<Domain>(typed), "{typed}");
            assert!(DomainSpec::parse(typed).is_ok(), "{typed}");
        }
        for bad in [
            "a..b",
            "-a.com",
            "a.com/",
            "a.com/x/y",
            "a.com/.",
            "bad host.com",
            "ä.com",
        ] {
            assert!(!matches::<Domain>(bad), "{bad}");
        }
    }

    #[test]
    fn upstreams_and_urls() {
        assert!(matches::<Upstream>("127.0.0.1:8090"));
        assert!(matches::<Upstream>("app.local:80"));
        for bad in ["nohost", ":80", "a:0", "a:65536"] {
            assert!(!matches::<Upstream>(bad), "{bad}");
        }
        for good in [
            "sqlite://data/shard-a",
            "postgres://u:p@h:5432/postgres",
            "postgresql://h",
            "postgres://h:5432/postgres?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
        ] {
            assert!(matches::<DatabaseUrl>(good), "{good}");
            assert!(
                tenantgate_config::db_url::Engine::of_valid_url(good).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "mysql://x",
            "sqlite://",
            "postgres://",
            "postgres://h:99999",
            "postgres://h/db?x=1 2",
            "postgres://h/db?x=1#frag",
        ] {
            assert!(!matches::<DatabaseUrl>(bad), "{bad}");
        }
        assert!(!matches::<ReplicaUrl>("sqlite://x"));
    }
}
