-- ACME accounts and on-demand issuance requests (sqlite). See the PostgreSQL migration.
CREATE TABLE acme_accounts (
    directory_url       TEXT PRIMARY KEY,
    account_url         TEXT NOT NULL,
    credentials_sealed  TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);

CREATE TABLE acme_on_demand (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    host          TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    requested_at  BIGINT NOT NULL
);
CREATE INDEX acme_on_demand_at ON acme_on_demand (requested_at);
CREATE INDEX acme_on_demand_tenant ON acme_on_demand (tenant_id, requested_at);
