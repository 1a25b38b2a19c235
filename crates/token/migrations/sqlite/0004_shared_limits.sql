-- Failed-login limits live in the database, so every replica of the service counts
-- the same failures. One row per key (`u:<username>` or `a:<address>`): the time at
-- which the key's bucket is full again (GCRA's theoretical arrival time), in unix
-- microseconds. No row, or a time in the past: no failures held against the key.
CREATE TABLE login_failures (
    key     TEXT    PRIMARY KEY,
    tat_us  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_failures_tat ON login_failures(tat_us);

-- At most one current signing key: two replicas that find none at the same moment
-- cannot both make one (the second insert fails and that replica loads the first's).
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;

-- Purging expired refresh tokens (every minute) without a full scan.
CREATE INDEX refresh_tokens_expires ON refresh_tokens(expires_at);
