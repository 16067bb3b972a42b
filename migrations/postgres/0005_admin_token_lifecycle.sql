-- Admin token lifecycle (postgres): tokens may expire, and record when they were last used.
--
-- `revoked_at` existed from 0001 but nothing wrote it; `DELETE /v1/tokens/{id}` now does.
-- `last_used_at` is written at most once a minute per token (admin::auth), not per request.
ALTER TABLE admin_tokens
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;
