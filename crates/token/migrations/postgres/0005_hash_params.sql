-- The parameters of each password hash (see migrations/sqlite/0005).
ALTER TABLE users ADD COLUMN hash_params TEXT;
CREATE INDEX users_hash_params ON users(hash_params);
