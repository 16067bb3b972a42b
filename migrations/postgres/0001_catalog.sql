-- The tenantgate catalog (PostgreSQL).
-- Identifiers are TEXT UUIDs and instants BIGINT milliseconds since the epoch, so that one set of
-- queries (sqlx's Any driver) serves PostgreSQL and SQLite alike.

CREATE TABLE catalog_lock (
    id BIGINT PRIMARY KEY,
    writes BIGINT NOT NULL
);
INSERT INTO catalog_lock (id, writes) VALUES (1, 0);

CREATE TABLE shards (
    name          TEXT PRIMARY KEY,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining', 'disabled')),
    app_upstreams TEXT NOT NULL DEFAULT '[]',
    database_url  TEXT NOT NULL,
    replicas      TEXT NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'moving', 'deleted', 'failed')),
    shard            TEXT NOT NULL REFERENCES shards (name),
    epoch            BIGINT NOT NULL DEFAULT 1,
    rate_limit_rps   BIGINT,
    rate_limit_burst BIGINT,
    settings         TEXT NOT NULL DEFAULT '{}',
    db_name          TEXT NOT NULL,
    db_credentials   TEXT,
    schema_version   BIGINT NOT NULL DEFAULT 0,
    migration_error  TEXT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    deleted_at       BIGINT
);
CREATE INDEX tenants_shard ON tenants (shard);
CREATE INDEX tenants_status ON tenants (status);

CREATE TABLE tenant_domains (
    host        TEXT NOT NULL,
    path_prefix TEXT NOT NULL DEFAULT '',
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    is_primary  BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (host, path_prefix)
);
CREATE INDEX tenant_domains_tenant ON tenant_domains (tenant_id);

CREATE TABLE admin_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scope      TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    tenant_id    TEXT,
    payload      TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL DEFAULT 5,
    run_at       BIGINT NOT NULL,
    lease_until  BIGINT,
    locked_by    TEXT,
    error        TEXT,
    progress     TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, run_at);
CREATE INDEX jobs_tenant ON jobs (tenant_id);

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    tenant_id  TEXT,
    before_value TEXT,
    after_value  TEXT
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

CREATE TABLE catalog_changes (
    version    BIGINT PRIMARY KEY,
    kind       TEXT NOT NULL,
    tenant_id  TEXT,
    shard      TEXT,
    hosts      TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL
);
