-- Asymmetric signing keys (see migrations/sqlite/0002). `id` orders keys created in
-- the same second, as SQLite's rowid does.
CREATE TABLE signing_keys (
    kid          TEXT    PRIMARY KEY,
    id           BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    alg          TEXT    NOT NULL,
    sealed_key   BYTEA   NOT NULL,
    public_jwk   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    retired_at   BIGINT
);
