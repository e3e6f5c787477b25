-- Where an account's job events come from (a provider webhook cigate registered, or
-- polling) and what the change detector last saw of each job. A job's new state and
-- the events it causes are written in one transaction.

-- One row per account: the random path token and shared secret of the provider
-- webhook that points at cigate (sealed together, see `SEALED`), what was registered,
-- the poller's lease and its change markers.
CREATE TABLE event_sources (
    account_id    TEXT PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_id        TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    hooks         TEXT NOT NULL,
    hooks_error   TEXT,
    hooks_at      TIMESTAMPTZ,
    hook_seen_at  TIMESTAMPTZ,
    markers       TEXT NOT NULL,
    poll_holder   TEXT,
    poll_until    TIMESTAMPTZ,
    polled_at     TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX event_sources_key ON event_sources (key_id);

CREATE TABLE job_states (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    job_key    TEXT NOT NULL,
    state      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_id, job_key)
);
CREATE INDEX job_states_age ON job_states (updated_at);
