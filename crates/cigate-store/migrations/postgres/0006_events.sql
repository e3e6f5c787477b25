-- Event subscriptions (webhooks cigate sends), the event log and its deliveries (the
-- outbox). An event and its deliveries are written in one transaction; workers claim
-- due deliveries with row leases.

CREATE TABLE webhooks (
    id                    TEXT PRIMARY KEY NOT NULL,
    environment_id        TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    target_url            TEXT NOT NULL,
    event_types           TEXT NOT NULL,
    format                TEXT NOT NULL,
    tenant_id             TEXT,
    integrated_account_id TEXT,
    workflow              TEXT,
    is_active             BOOLEAN NOT NULL,
    failing_since         TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_page ON webhooks (environment_id, created_at, id);

-- A subscription's signing secrets: the current one (`expires_at` NULL) and, during a
-- rotation, the previous one until it expires. Sealed like every secret (`SEALED`).
CREATE TABLE webhook_secrets (
    id         TEXT PRIMARY KEY NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ,
    key_id     TEXT NOT NULL,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_secrets_webhook ON webhook_secrets (webhook_id);
CREATE INDEX webhook_secrets_key ON webhook_secrets (key_id);

CREATE TABLE events (
    id                    TEXT PRIMARY KEY NOT NULL,
    environment_id        TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    event_type            TEXT NOT NULL,
    integrated_account_id TEXT,
    tenant_id             TEXT,
    payload               TEXT NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_page ON events (environment_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    event_id        TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    attempt_log     TEXT NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_holder    TEXT,
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, status, created_at, id);
