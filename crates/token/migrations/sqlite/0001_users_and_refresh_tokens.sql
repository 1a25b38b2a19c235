-- Users: the hash never leaves the store except for verification.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    roles         TEXT    NOT NULL DEFAULT '[]',  -- JSON array of strings
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,               -- unix seconds
    updated_at    INTEGER NOT NULL
);

-- Refresh tokens, stored as SHA-256 of the opaque value. A family is one login and
-- every rotation after it; reusing a rotated token revokes the whole family.
CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  BLOB    NOT NULL UNIQUE,
    family      TEXT    NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scope       TEXT,                             -- JSON array, NULL = every role of the user
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
