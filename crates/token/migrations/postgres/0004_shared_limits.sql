-- Failed-login limits shared by every replica (see migrations/sqlite/0004).
CREATE TABLE login_failures (
    key     TEXT    PRIMARY KEY,
    tat_us  BIGINT  NOT NULL
);
CREATE INDEX login_failures_tat ON login_failures(tat_us);

-- At most one current signing key, whichever replica makes it.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;

-- Purging expired refresh tokens (every minute) without a full scan.
CREATE INDEX refresh_tokens_expires ON refresh_tokens(expires_at);
