-- Browser sessions of POST /login. The cookie carries a random session id; only its SHA-256
-- is stored here, never the bearer token the user signed in with. A session belongs to that
-- token: removing the token (or its user) ends the session. expires_at is milliseconds since
-- the Unix epoch, at most the token's own expiry.
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL REFERENCES user_tokens (token_hash) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
