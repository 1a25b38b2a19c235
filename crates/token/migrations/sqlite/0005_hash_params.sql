-- The parameters of each password hash (`m=65536,t=3,p=4`; '' for a hash this
-- service would not verify), so that a failed login can be padded to the slowest
-- parameter set in use without parsing every hash at every start. NULL until filled:
-- the service labels the rows it finds without one (existing and imported users).
ALTER TABLE users ADD COLUMN hash_params TEXT;
CREATE INDEX users_hash_params ON users(hash_params);
