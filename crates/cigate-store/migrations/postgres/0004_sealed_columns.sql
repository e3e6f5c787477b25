-- Every sealed secret is kept as `key_id`, `nonce`, `ciphertext` columns, so rotation
-- walks one list of them (`SEALED` in keys.rs). The PKCE verifier of an OAuth round trip
-- was one packed text column; states live ten minutes, so the ones in flight during the
-- upgrade are dropped (that sign-in is started again) rather than converted.
DELETE FROM oauth_states;
ALTER TABLE oauth_states
    DROP COLUMN code_verifier,
    ADD COLUMN key_id TEXT,
    ADD COLUMN nonce BYTEA,
    ADD COLUMN ciphertext BYTEA;
