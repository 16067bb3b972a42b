-- Tenant self-service (issue 17): users can be disabled and erased, tokens get an id (to list and
-- revoke them without their hash), role permissions become documents
-- {"resource": ["action", ...]}, and every tenant records its own audit trail.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
ALTER TABLE users ADD COLUMN erased_at BIGINT;

-- The id is random, not derived from the hash: it is shown to users and in the audit.
ALTER TABLE user_tokens ADD COLUMN id TEXT;
UPDATE user_tokens SET id = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX user_tokens_id ON user_tokens (id);
CREATE INDEX user_tokens_user ON user_tokens (user_id);

UPDATE roles SET permissions = '{"items":["read","write"],"users":["manage"],"export":["run"],"audit":["read"]}'
    WHERE name = 'owner';
UPDATE roles SET permissions = '{"items":["read","write"]}' WHERE name = 'member';
UPDATE roles SET permissions = '{"items":["read"]}' WHERE name = 'viewer';

-- Who did what in this tenant, newest = highest id. Personal data is kept only in actor_email,
-- subject_email and client, so that erasing a user can pseudonymise exactly those; detail holds
-- none (role names, token ids, counts).
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            BIGINT NOT NULL,
    actor_kind    TEXT NOT NULL,
    actor_id      TEXT,
    actor_email   TEXT,
    action        TEXT NOT NULL,
    subject_id    TEXT,
    subject_email TEXT,
    detail        TEXT NOT NULL DEFAULT '{}',
    client        TEXT
);
CREATE INDEX audit_actor ON audit (actor_id);
CREATE INDEX audit_subject ON audit (subject_id);
INSERT INTO retention_managed (table_name, timestamp_column) VALUES ('audit', 'at');
