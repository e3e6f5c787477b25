-- An in-progress Idempotency-Key is held by a lease its request renews while it runs;
-- a lease past its time means the holder died and the outcome is unknown. NULL (rows
-- written before this column) counts as a lease ending a minute after created_at.
ALTER TABLE idempotency_records ADD COLUMN lease_expires_at TEXT;
