-- A key can be published before it signs: `keys rotate` (without --now) makes the next
-- key with `activates_at` in the future and retires the current one at that time, so
-- verifiers that cache the JWKS (max-age 60 s) have fetched the new key before the
-- first token it signs arrives. NULL: active since it was made.
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER;
