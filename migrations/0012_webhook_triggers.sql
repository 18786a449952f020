-- Webhook triggers (issue 13): runs started by POST /api/v1/hooks/{flow}; a delivery that
-- repeats its Idempotency-Key makes no second run.
ALTER TABLE runs DROP CONSTRAINT runs_trigger_kind_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_kind_check CHECK (trigger_kind IN ('scheduled', 'manual', 'backfill', 'asset', 'webhook'));
ALTER TABLE runs ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX runs_idempotency ON runs (flow_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
