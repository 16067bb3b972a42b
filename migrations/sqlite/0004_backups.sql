-- Backups (sqlite): the `restoring` tenant status and the `backups` table. Numbered 0004 like
-- its PostgreSQL twin (SQLite has no 0003: that one converted PostgreSQL's column types).
--
-- SQLite cannot change a CHECK constraint in place, so `tenants` is rebuilt. SQLite's usual
-- procedure turns foreign keys off first, which only works outside a transaction, and sqlx
-- runs every SQLite migration inside one. With foreign keys on, dropping `tenants` would
-- cascade into `tenant_domains` (ON DELETE CASCADE), so the one table that references
-- `tenants` is set aside first and rebuilt after it, all in this migration's transaction:
-- copy `tenant_domains` aside and drop it, create the new `tenants`, copy the rows, drop the
-- old one, rename, recreate `tenant_domains` as 0001 declared it with its rows, recreate the
-- indexes.

CREATE TABLE tenant_domains_aside AS SELECT * FROM tenant_domains;
DROP TABLE tenant_domains;

CREATE TABLE tenants_new (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'moving', 'restoring', 'deleted', 'failed')),
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
INSERT INTO tenants_new (id, slug, name, status, shard, epoch, rate_limit_rps, rate_limit_burst,
        settings, db_name, db_credentials, schema_version, migration_error, last_error,
        created_at, updated_at, deleted_at)
    SELECT id, slug, name, status, shard, epoch, rate_limit_rps, rate_limit_burst,
        settings, db_name, db_credentials, schema_version, migration_error, last_error,
        created_at, updated_at, deleted_at
    FROM tenants;
DROP TABLE tenants;
ALTER TABLE tenants_new RENAME TO tenants;
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
INSERT INTO tenant_domains (host, path_prefix, tenant_id, is_primary, created_at)
    SELECT host, path_prefix, tenant_id, is_primary, created_at FROM tenant_domains_aside;
DROP TABLE tenant_domains_aside;
CREATE INDEX tenant_domains_tenant ON tenant_domains (tenant_id);

-- See the PostgreSQL migration for what each column means.
CREATE TABLE backups (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    kind           TEXT NOT NULL CHECK (kind IN ('manual', 'scheduled', 'pre_delete', 'pre_move', 'pre_restore')),
    format         TEXT NOT NULL CHECK (format IN ('pg_custom', 'sqlite')),
    job_id         TEXT,
    started_at     BIGINT,
    completed_at   BIGINT,
    size_bytes     BIGINT,
    sha256         TEXT,
    location       TEXT,
    schema_version BIGINT,
    error          TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX backups_tenant ON backups (tenant_id, id DESC);
