-- Asymmetric signing keys. The private key is sealed (ChaCha20-Poly1305 under a key
-- derived from SECRET_KEY); the public JWK is what /.well-known/jwks.json publishes.
-- A key is current until the next rotation, then retired but still published until
-- every token it signed has expired.
CREATE TABLE signing_keys (
    kid          TEXT    PRIMARY KEY,
    alg          TEXT    NOT NULL,
    sealed_key   BLOB    NOT NULL,
    public_jwk   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER
);
