-- Units of a provider's rate budget taken per window, shared by every cigate instance
-- on this database: each instance's governor takes a unit here before a call, so
-- instances sharing one account never spend more than the window holds between them.
-- `account_key` is a fingerprint of the provider URL and token, never the token;
-- `window_reset` is the window's reported reset (Unix seconds).
CREATE TABLE rate_units (
    account_key   TEXT NOT NULL,
    window_reset  BIGINT NOT NULL,
    taken         BIGINT NOT NULL,
    PRIMARY KEY (account_key, window_reset)
);
