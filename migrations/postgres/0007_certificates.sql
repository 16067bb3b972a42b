-- TLS certificates of tenant domains (postgres), one per host.
--
-- A certificate belongs to the tenant that owns its host whole; the edge picks it by SNI, so a
-- host has at most one. The private key is sealed with `security.credential_key` (like
-- `tenants.db_credentials`) and bound to tenant and host, so a sealed key copied to another row
-- does not open. No row means certificate status `none`.
CREATE TABLE certificates (
    host        TEXT PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source      TEXT NOT NULL CHECK (source IN ('acme', 'upload')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'issued', 'failed')),
    cert_pem    TEXT,
    key_sealed  TEXT,
    not_after   timestamptz,
    issuer      TEXT,
    error       TEXT,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX certificates_tenant ON certificates (tenant_id);

-- Pending ACME HTTP-01 challenges: the edge answers `/.well-known/acme-challenge/{token}` on
-- its plain listener from these (for any host, as the CA asks), loaded into memory from the
-- change feed. `host` is the name being validated, for operators and clean-up.
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    key_authorization TEXT NOT NULL,
    host              TEXT NOT NULL,
    expires_at        timestamptz NOT NULL
);
