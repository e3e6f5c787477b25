-- What a provision document applied to an account, so the document can be applied
-- again declaratively: per object (kind + natural key within the document), the
-- provider's id, a keyed fingerprint of what was last applied (an encrypted variable's
-- value cannot be read back from the provider), and whether this document created it
-- (only such objects may be pruned).
CREATE TABLE provisioned (
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    document     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    object_key   TEXT NOT NULL,
    upstream_id  TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    created      INTEGER NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (account_id, document, kind, object_key)
);
