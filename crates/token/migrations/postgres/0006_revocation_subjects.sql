-- The subject of a revoked access token (see migrations/sqlite/0006), and change
-- numbers that are times from here on.
ALTER TABLE revocations ADD COLUMN sub TEXT;
CREATE INDEX revocations_jti_sub ON revocations(sub, until) WHERE kind = 'jti';
