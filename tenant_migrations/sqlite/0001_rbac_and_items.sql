-- Schema of every tenant database (SQLite): roles, users, user tokens, items.
CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    permissions TEXT NOT NULL
);
INSERT INTO roles (name, permissions) VALUES
    ('owner',  '["items:read","items:write","export","users:manage"]'),
    ('member', '["items:read","items:write"]'),
    ('viewer', '["items:read"]');

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL REFERENCES roles (name),
    created_at BIGINT NOT NULL
);

CREATE TABLE user_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE items (
    id         TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL DEFAULT '',
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX items_created ON items (created_at, id);
