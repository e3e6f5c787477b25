-- Dashboard sessions: a browser signed in to /ui with an API token holds a random
-- session id in a cookie; only its SHA-256 is kept. A session belongs to the token it
-- was opened with (and so to that token's environment) and ends with it.
CREATE TABLE ui_sessions (
    id_hash        TEXT PRIMARY KEY NOT NULL,
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    token_id       TEXT NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf           TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    last_seen_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX ui_sessions_seen ON ui_sessions (last_seen_at);
