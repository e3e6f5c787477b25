-- Account lifecycle events (the events feature reads them) and each environment's
-- OAuth app configuration for an integration.

CREATE TABLE account_events (
    id             TEXT PRIMARY KEY NOT NULL,
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    account_id     TEXT NOT NULL, -- no foreign key: the event outlives the account
    event_type     TEXT NOT NULL,
    payload        TEXT NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX account_events_page ON account_events (environment_id, created_at, id);

-- `config` holds non-secret settings; the client secret is sealed like a credential.
CREATE TABLE environment_integrations (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    integration    TEXT NOT NULL,
    config         TEXT NOT NULL DEFAULT '{}',
    key_id         TEXT,
    nonce          BYTEA,
    ciphertext     BYTEA,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, integration)
);
