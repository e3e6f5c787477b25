-- Status badges: a public, unguessable id that names one branch of one repo (and
-- optionally one workflow) of an integrated account. The id is the only secret a
-- badge has, so it is random (32 bytes) and is the primary key; the job it draws is
-- read live from the provider, never stored.
CREATE TABLE badges (
    id             TEXT PRIMARY KEY NOT NULL,
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    account_id     TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    workspace      TEXT NOT NULL,
    repo           TEXT NOT NULL,
    workflow       TEXT,
    branch         TEXT NOT NULL,
    label          TEXT,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX badges_account ON badges (account_id);
