-- Native PostgreSQL types for the catalog (postgres only; the SQLite catalog keeps its types).
--
-- 0001 stored ids as TEXT, instants as BIGINT milliseconds and JSON as TEXT, because the store
-- then ran every query through sqlx's Any driver. The store now uses the native PostgreSQL
-- driver, so the catalog can hold the types a DBA expects: ids `uuid`, instants `timestamptz`
-- (microseconds, so every stored millisecond survives exactly), JSON documents `jsonb`. The
-- comment at the top of 0001 describes the old layout; applied migrations are checksummed, so
-- it stays as it was.
--
-- Converts an existing catalog in place, in this migration's one transaction; each table is
-- rewritten once under an exclusive lock (catalog tables are small, so the lock is brief).
-- Binaries from before this migration cannot read the converted catalog (their Any driver has
-- no uuid or timestamptz): upgrade every component together.
--
-- Kept as they were: booleans and counters (BIGINT), `tenants.db_credentials` (ciphertext) and
-- `webhook_outbox.payload`, a JSON body that is sent byte for byte as it was signed (jsonb would
-- reorder its keys and drop its whitespace).

-- tenant_domains.tenant_id references tenants.id and must have the same type at every step:
-- drop the key, convert both sides, put the key back as 0001 declared it.
ALTER TABLE tenant_domains DROP CONSTRAINT tenant_domains_tenant_id_fkey;

ALTER TABLE shards
    ALTER COLUMN app_upstreams DROP DEFAULT,
    ALTER COLUMN app_upstreams TYPE jsonb USING app_upstreams::jsonb,
    ALTER COLUMN app_upstreams SET DEFAULT '[]',
    ALTER COLUMN replicas DROP DEFAULT,
    ALTER COLUMN replicas TYPE jsonb USING replicas::jsonb,
    ALTER COLUMN replicas SET DEFAULT '[]',
    ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0),
    ALTER COLUMN updated_at TYPE timestamptz USING to_timestamp(updated_at / 1000.0);

ALTER TABLE tenants
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN settings DROP DEFAULT,
    ALTER COLUMN settings TYPE jsonb USING settings::jsonb,
    ALTER COLUMN settings SET DEFAULT '{}',
    ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0),
    ALTER COLUMN updated_at TYPE timestamptz USING to_timestamp(updated_at / 1000.0),
    ALTER COLUMN deleted_at TYPE timestamptz USING to_timestamp(deleted_at / 1000.0);

ALTER TABLE tenant_domains
    ALTER COLUMN tenant_id TYPE uuid USING tenant_id::uuid,
    ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);

ALTER TABLE tenant_domains
    ADD CONSTRAINT tenant_domains_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;

ALTER TABLE admin_tokens
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0),
    ALTER COLUMN revoked_at TYPE timestamptz USING to_timestamp(revoked_at / 1000.0);

ALTER TABLE jobs
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN tenant_id TYPE uuid USING tenant_id::uuid,
    ALTER COLUMN payload DROP DEFAULT,
    ALTER COLUMN payload TYPE jsonb USING payload::jsonb,
    ALTER COLUMN payload SET DEFAULT '{}',
    ALTER COLUMN progress TYPE jsonb USING progress::jsonb,
    ALTER COLUMN run_at TYPE timestamptz USING to_timestamp(run_at / 1000.0),
    ALTER COLUMN lease_until TYPE timestamptz USING to_timestamp(lease_until / 1000.0),
    ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0),
    ALTER COLUMN updated_at TYPE timestamptz USING to_timestamp(updated_at / 1000.0);

ALTER TABLE audit_log
    ALTER COLUMN at TYPE timestamptz USING to_timestamp(at / 1000.0),
    ALTER COLUMN tenant_id TYPE uuid USING tenant_id::uuid,
    ALTER COLUMN before_value TYPE jsonb USING before_value::jsonb,
    ALTER COLUMN after_value TYPE jsonb USING after_value::jsonb;

ALTER TABLE catalog_changes
    ALTER COLUMN tenant_id TYPE uuid USING tenant_id::uuid,
    ALTER COLUMN hosts DROP DEFAULT,
    ALTER COLUMN hosts TYPE jsonb USING hosts::jsonb,
    ALTER COLUMN hosts SET DEFAULT '[]',
    ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);

ALTER TABLE webhook_outbox
    ALTER COLUMN next_attempt_at TYPE timestamptz USING to_timestamp(next_attempt_at / 1000.0),
    ALTER COLUMN delivered_at TYPE timestamptz USING to_timestamp(delivered_at / 1000.0),
    ALTER COLUMN failed_at TYPE timestamptz USING to_timestamp(failed_at / 1000.0),
    ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);
