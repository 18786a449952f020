-- Version-safe execution and rolling upgrades.
-- Which flow versions each scheduler's binary carries ({"flow_id": version}): a flow's current
-- version is the newest one a live scheduler carries, and a flow is deactivated only when no
-- live scheduler carries it, so a scheduler on an older binary never undoes a newer one.
ALTER TABLE schedulers ADD COLUMN flows jsonb;
-- Which flow versions each worker's binary carries ({"flow_id": "content hash"}): a message
-- names its run's version, and only a worker that carries it runs it.
ALTER TABLE workers ADD COLUMN flows jsonb;
-- Flows a worker's binary carries but could not load, with why ({"flow_id": "message"}).
ALTER TABLE workers ADD COLUMN import_errors jsonb;
-- Why a run cannot go on by itself (no live worker carries its flow version), or NULL.
ALTER TABLE runs ADD COLUMN stalled_reason text;
CREATE INDEX runs_stalled ON runs (id) WHERE stalled_reason IS NOT NULL;
