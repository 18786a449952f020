-- Flow-to-flow triggers (issue 13).
-- A flow declared `after: [.success(of: upstream)]` gets a run once per successful upstream run:
-- the upstream run's end sets triggers_pending in the statement that ends it, and a scheduler
-- creates the downstream runs (keyed `after:<upstream run id>`) and clears the flag in one
-- transaction. A trigger-flow task's child run is keyed `<parent run id>/<task id>`: a retry,
-- a clear or a second scheduler finds the same child.
ALTER TABLE runs DROP CONSTRAINT runs_trigger_kind_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_kind_check
    CHECK (trigger_kind IN ('scheduled', 'manual', 'backfill', 'asset', 'webhook', 'flow'));
ALTER TABLE runs ADD COLUMN triggered_by text;
ALTER TABLE runs ADD COLUMN triggers_pending boolean NOT NULL DEFAULT false;
CREATE INDEX runs_triggers_pending ON runs (id) WHERE triggers_pending;
CREATE TABLE flow_subscriptions (
    upstream      text NOT NULL,
    downstream    text NOT NULL REFERENCES flows (flow_id),
    pass_conf     boolean NOT NULL DEFAULT false,
    pass_results  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (upstream, downstream)
);
ALTER TABLE task_instances ADD COLUMN child_run_id text;
-- Tasks the scheduler runs itself (trigger-flow tasks) while they are queued or waiting.
CREATE INDEX task_instances_internal ON task_instances (run_pk) WHERE queue = 'flowkit.internal' AND state IN ('queued', 'running');
