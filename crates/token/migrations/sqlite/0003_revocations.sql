-- Revocations the edge enforces: the Envoy filter polls them (GET /revocations) and
-- refuses matching access tokens until they would have expired anyway.
--
-- `seq` is the change number the feed's cursor counts in: every insert or update of
-- an entry takes the next value of `revocation_feed.seq`. A counter rather than
-- MAX(seq): purging the newest entries must never hand their numbers out again, or a
-- poller already past them would miss the new entries that reuse them.
CREATE TABLE revocations (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,
    kind        TEXT    NOT NULL CHECK (kind IN ('sub', 'jti')),
    value       TEXT    NOT NULL,                 -- the username (sub) or the token id (jti)
    iat_before  INTEGER,                          -- sub only: tokens with iat < this are revoked
    until       INTEGER NOT NULL,                 -- unix seconds; afterwards no live token is covered
    UNIQUE (kind, value),
    CHECK ((kind = 'sub') = (iat_before IS NOT NULL))
);
CREATE INDEX revocations_until ON revocations(until);

-- One row: the feed's identity and its counter. A poller that kept a cursor from
-- another database (restored, replaced) sees a different id and starts over.
CREATE TABLE revocation_feed (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    feed  TEXT    NOT NULL,
    seq   INTEGER NOT NULL
);
INSERT INTO revocation_feed (id, feed, seq) VALUES (1, lower(hex(randomblob(16))), 0);
