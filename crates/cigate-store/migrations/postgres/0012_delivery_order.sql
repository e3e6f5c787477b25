-- Deliveries are ordered per key (a job's events, an account's), not per subscription:
-- a refused delivery holds back the later events of its own job only. Deliveries
-- queued before this migration share the empty key, so they keep their subscription-wide
-- order until they are sent.
ALTER TABLE webhook_deliveries ADD COLUMN order_key TEXT NOT NULL DEFAULT '';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, order_key, status, created_at, id);
