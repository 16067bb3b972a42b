-- Backups (postgres): the `restoring` tenant status and the `backups` table.
--
-- A tenant is `restoring` while a restore in place replaces its database; the edge, /v1/resolve
-- and the app answer 503 tenant_restoring meanwhile (contract::status).
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('provisioning', 'active', 'suspended', 'moving', 'restoring', 'deleted', 'failed'));

-- One row per backup of a tenant database. The object in the backup store is age-encrypted;
-- `sha256` and `size_bytes` are of that stored (encrypted) object, `location` is its key in the
-- store. A backup is `completed` only in the same transaction that completes its job, so a
-- worker that dies mid-backup leaves it `running` (then retried), never `completed`.
CREATE TABLE backups (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    kind           TEXT NOT NULL CHECK (kind IN ('manual', 'scheduled', 'pre_delete', 'pre_move', 'pre_restore')),
    -- What the encrypted object holds: a pg_dump custom-format archive or a SQLite database file.
    format         TEXT NOT NULL CHECK (format IN ('pg_custom', 'sqlite')),
    job_id         uuid,
    started_at     timestamptz,
    completed_at   timestamptz,
    size_bytes     BIGINT,
    sha256         TEXT,
    location       TEXT,
    schema_version BIGINT,
    error          TEXT,
    created_at     timestamptz NOT NULL
);
-- A tenant's backups newest first (ids are UUIDv7, so id order is creation order).
CREATE INDEX backups_tenant ON backups (tenant_id, id DESC);
