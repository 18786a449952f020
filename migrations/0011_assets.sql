-- Assets (issue 13): data-aware scheduling. A task's success records an event for each of its
-- outlets in the transaction that records the success; an event posted to the API is recorded
-- the same way. A flow scheduled on assets starts a run when each of its assets has an event
-- past the flow's watermark for it; the run and the new watermarks are written in the event's
-- transaction, under the watermark rows' locks, so every event starts at most one run of each
-- consumer and none is lost.
CREATE TABLE assets (
    uri         text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE asset_events (
    id        bigserial PRIMARY KEY,
    uri       text NOT NULL REFERENCES assets (uri),
    source    text NOT NULL CHECK (source IN ('task', 'api')),
    run_id    text,
    task_id   text,
    extra     jsonb NOT NULL DEFAULT '{}',
    at        timestamptz NOT NULL
);
CREATE INDEX asset_events_by_uri ON asset_events (uri, id);
CREATE TABLE asset_watermarks (
    flow_id      text NOT NULL REFERENCES flows (flow_id),
    uri          text NOT NULL REFERENCES assets (uri),
    consumed_id  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (flow_id, uri)
);
CREATE INDEX asset_watermarks_by_uri ON asset_watermarks (uri);
ALTER TABLE runs DROP CONSTRAINT runs_trigger_kind_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_kind_check CHECK (trigger_kind IN ('scheduled', 'manual', 'backfill', 'asset'));
ALTER TABLE runs ADD COLUMN triggering_events jsonb;
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check CHECK (role IN ('read', 'admin', 'events'));
