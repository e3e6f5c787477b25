-- Timestamps are written by the store (never by SQL defaults), truncated to
-- microseconds so they compare equal with the SQLite backend.

CREATE TABLE environments (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY NOT NULL,
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name           TEXT,
    token_hash     TEXT NOT NULL UNIQUE,
    created_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ
);
CREATE INDEX api_tokens_environment ON api_tokens (environment_id, created_at, id);

CREATE TABLE accounts (
    id                    TEXT PRIMARY KEY NOT NULL,
    environment_id        TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    tenant_id             TEXT,
    integration           TEXT NOT NULL,
    status                TEXT NOT NULL,
    authentication_method TEXT NOT NULL,
    context               TEXT NOT NULL DEFAULT '{}',
    last_error            TEXT,
    last_forbidden_error  TEXT,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX accounts_page ON accounts (environment_id, created_at, id);
CREATE INDEX accounts_tenant ON accounts (environment_id, tenant_id);

CREATE TABLE account_credentials (
    account_id TEXT PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_id     TEXT NOT NULL,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX account_credentials_key ON account_credentials (key_id);

-- One row: a known plaintext sealed under the current master key, so a process started
-- with the wrong key fails at start-up instead of at the first credential it reads.
CREATE TABLE key_check (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    key_id     TEXT NOT NULL,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE link_tokens (
    id                    TEXT PRIMARY KEY NOT NULL,
    environment_id        TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    token_hash            TEXT NOT NULL UNIQUE,
    tenant_id             TEXT,
    integrated_account_id TEXT REFERENCES accounts (id) ON DELETE CASCADE,
    redirect_uri          TEXT,
    context               TEXT NOT NULL DEFAULT '{}',
    created_at            TIMESTAMPTZ NOT NULL,
    expires_at            TIMESTAMPTZ NOT NULL,
    used_at               TIMESTAMPTZ
);
CREATE INDEX link_tokens_expiry ON link_tokens (expires_at);

CREATE TABLE oauth_states (
    state_hash     TEXT PRIMARY KEY NOT NULL,
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    link_token_id  TEXT REFERENCES link_tokens (id) ON DELETE CASCADE,
    base_url       TEXT,
    code_verifier  TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

CREATE TABLE idempotency_records (
    environment_id   TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    account_id       TEXT NOT NULL, -- '' when the request is not about one account
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    status           INTEGER,
    response_headers TEXT,
    response_body    BYTEA,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, account_id, method, path, idempotency_key)
);
CREATE INDEX idempotency_records_expiry ON idempotency_records (expires_at);

CREATE TABLE refresh_leases (
    account_id TEXT PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
