-- Requests, errors, 429s and response bytes per tenant per minute, as counted by the edges.
-- Each edge adds what it counted since its last flush (several edges add to the same row), so
-- rows are only ever incremented, never overwritten.
CREATE TABLE tenant_usage (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute        timestamptz NOT NULL,
    requests      bigint      NOT NULL DEFAULT 0,
    errors        bigint      NOT NULL DEFAULT 0,
    rate_limited  bigint      NOT NULL DEFAULT 0,
    bytes         bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, minute)
);
