-- Admin API additions (postgres): the durable webhook outbox and an index for a tenant's jobs by kind.

-- One row per (event, receiver URL). Rows are written in the same transaction as the catalog
-- write they announce, so an event is never lost and never sent for a rolled-back write.
-- `next_attempt_at` doubles as a lease: a deliverer pushes it forward when it takes a row.
CREATE TABLE webhook_outbox (
    id              BIGSERIAL PRIMARY KEY,
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT,
    -- Set when retries are exhausted; the row then stays for inspection and is never sent.
    failed_at       BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (delivered_at, next_attempt_at);

CREATE INDEX jobs_tenant_kind ON jobs (tenant_id, kind, status);
