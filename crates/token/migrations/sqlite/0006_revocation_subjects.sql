-- The subject of a revoked access token (`jti` entries), so the service can bound the
-- live `jti` entries one user can cause: past the bound, revoking one more of their
-- tokens widens their subject entry instead (see store/revocations.rs). Entries made
-- before this column have no subject and count for nobody.
ALTER TABLE revocations ADD COLUMN sub TEXT;
CREATE INDEX revocations_jti_sub ON revocations(sub, until) WHERE kind = 'jti';

-- From here on `revocation_feed.seq` is a time: the next change number is the larger
-- of the last one + 1 and the current unix time in microseconds. Numbers still only
-- grow, and a database restored from a backup (whose counter went back) hands out
-- numbers above every cursor a poller was given before the restore, so no poller
-- skips the changes made after it: it either sees them or, its cursor being ahead of
-- the restored counter, starts over. (The feed id survives a restore unchanged: it
-- cannot tell a poller anything about one.)
