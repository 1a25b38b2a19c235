-- Keys published before they sign (see migrations/sqlite/0007).
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT;
