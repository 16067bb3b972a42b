-- Usage per tenant per minute (sqlite). See the PostgreSQL migration.
CREATE TABLE tenant_usage (
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute        BIGINT  NOT NULL,
    requests      BIGINT  NOT NULL DEFAULT 0,
    errors        BIGINT  NOT NULL DEFAULT 0,
    rate_limited  BIGINT  NOT NULL DEFAULT 0,
    bytes         BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, minute)
);
