-- ACME accounts and on-demand issuance requests (postgres).
--
-- One ACME account per CA directory URL, shared by every admin process and kept across
-- restarts: the account's credentials (its private key, as instant-acme serialises them) are
-- sealed with `security.credential_key`, bound to the directory URL.
CREATE TABLE acme_accounts (
    directory_url       TEXT PRIMARY KEY,
    account_url         TEXT NOT NULL,
    credentials_sealed  TEXT NOT NULL,
    created_at          timestamptz NOT NULL
);

-- On-demand issuance requests made by edges at the first TLS handshake for a host without a
-- certificate: counted over `acme.on_demand_window_secs` against the per-tenant and global
-- limits (under the catalog write lock, so the limits hold across every edge). Rows older
-- than the window are deleted by the next request.
CREATE TABLE acme_on_demand (
    id            BIGSERIAL PRIMARY KEY,
    host          TEXT NOT NULL,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    requested_at  timestamptz NOT NULL
);
CREATE INDEX acme_on_demand_at ON acme_on_demand (requested_at);
CREATE INDEX acme_on_demand_tenant ON acme_on_demand (tenant_id, requested_at);
