-- TLS certificates of tenant domains (sqlite), one per host. See the PostgreSQL migration.
CREATE TABLE certificates (
    host        TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source      TEXT NOT NULL CHECK (source IN ('acme', 'upload')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'issued', 'failed')),
    cert_pem    TEXT,
    key_sealed  TEXT,
    not_after   BIGINT,
    issuer      TEXT,
    error       TEXT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX certificates_tenant ON certificates (tenant_id);

-- Pending ACME HTTP-01 challenges. See the PostgreSQL migration.
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    key_authorization TEXT NOT NULL,
    host              TEXT NOT NULL,
    expires_at        BIGINT NOT NULL
);
