-- FlowKit core schema: flows and their versions, runs, task instances, every state change,
-- task logs and workers. PostgreSQL is the source of truth; Redis only carries messages.

CREATE TABLE flows (
    flow_id          text PRIMARY KEY,
    current_version  integer NOT NULL,
    is_active        boolean NOT NULL DEFAULT true,
    is_paused        boolean NOT NULL DEFAULT false,
    schedule         text,
    timezone         text NOT NULL DEFAULT 'UTC',
    catchup          boolean NOT NULL DEFAULT false,
    max_active_runs  integer NOT NULL DEFAULT 16,
    -- The next cron tick this flow has not made a run for yet (NULL: unscheduled).
    next_tick        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flows_due ON flows (next_tick) WHERE next_tick IS NOT NULL AND is_active AND NOT is_paused;

CREATE TABLE flow_versions (
    flow_id     text NOT NULL REFERENCES flows (flow_id),
    version     integer NOT NULL,
    hash        text NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_id, version),
    UNIQUE (flow_id, hash)
);

CREATE TABLE runs (
    id                   bigserial PRIMARY KEY,
    run_id               text NOT NULL UNIQUE,
    flow_id              text NOT NULL REFERENCES flows (flow_id),
    flow_version         integer NOT NULL,
    trigger_kind         text NOT NULL CHECK (trigger_kind IN ('scheduled', 'manual', 'backfill')),
    conf                 jsonb NOT NULL DEFAULT '{}',
    params               jsonb NOT NULL DEFAULT '{}',
    state                text NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'cancelled')),
    logical_date         timestamptz NOT NULL,
    data_interval_start  timestamptz NOT NULL,
    data_interval_end    timestamptz NOT NULL,
    unfinished_tasks     integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    ended_at             timestamptz
);
-- Exactly one run per cron tick, whatever the number of schedulers.
CREATE UNIQUE INDEX runs_one_per_tick ON runs (flow_id, logical_date) WHERE trigger_kind IN ('scheduled', 'backfill');
CREATE INDEX runs_by_flow ON runs (flow_id, id DESC);
CREATE INDEX runs_by_state ON runs (state, id DESC);
CREATE INDEX runs_active ON runs (flow_id) WHERE state IN ('queued', 'running');
CREATE INDEX runs_queued ON runs (id) WHERE state = 'queued';

CREATE TABLE task_instances (
    run_pk           bigint NOT NULL REFERENCES runs (id),
    task_id          text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'queued', 'running', 'success', 'failed',
                                                    'up_for_retry', 'upstream_failed', 'skipped', 'cancelled')),
    try_number       integer NOT NULL DEFAULT 0,
    max_tries        integer NOT NULL,
    queue            text NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    timeout_seconds  double precision,
    -- The Celery task id (and delivery tag) of the current try's message.
    message_id       text,
    next_attempt_at  timestamptz,
    queued_at        timestamptz,
    started_at       timestamptz,
    ended_at         timestamptz,
    heartbeat_at     timestamptz,
    worker           text,
    result           jsonb,
    error            text,
    PRIMARY KEY (run_pk, task_id)
);
CREATE UNIQUE INDEX task_instances_by_message ON task_instances (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX task_instances_retry_due ON task_instances (next_attempt_at) WHERE state = 'up_for_retry';
CREATE INDEX task_instances_queued ON task_instances (queued_at) WHERE state = 'queued';
CREATE INDEX task_instances_running ON task_instances (heartbeat_at) WHERE state = 'running';

-- One row per try: its own state, times, worker, result and error.
CREATE TABLE task_tries (
    run_pk       bigint NOT NULL,
    task_id      text NOT NULL,
    try_number   integer NOT NULL,
    message_id   text NOT NULL,
    state        text NOT NULL,
    queued_at    timestamptz NOT NULL,
    started_at   timestamptz,
    ended_at     timestamptz,
    worker       text,
    result       jsonb,
    error        text,
    PRIMARY KEY (run_pk, task_id, try_number),
    FOREIGN KEY (run_pk, task_id) REFERENCES task_instances (run_pk, task_id)
);

-- Append-only: every state transition, including late reports that changed nothing.
CREATE TABLE task_history (
    id          bigserial PRIMARY KEY,
    run_pk      bigint NOT NULL,
    task_id     text NOT NULL,
    try_number  integer NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    at          timestamptz NOT NULL,
    source      text NOT NULL,
    detail      text,
    applied     boolean NOT NULL DEFAULT true
);
CREATE INDEX task_history_by_task ON task_history (run_pk, task_id, id);

CREATE TABLE task_logs (
    id          bigserial PRIMARY KEY,
    run_pk      bigint NOT NULL,
    task_id     text NOT NULL,
    try_number  integer NOT NULL,
    at          timestamptz NOT NULL,
    line        text NOT NULL
);
CREATE INDEX task_logs_by_try ON task_logs (run_pk, task_id, try_number, id);

CREATE TABLE workers (
    name          text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer,
    queues        text[] NOT NULL DEFAULT '{}',
    concurrency   integer NOT NULL DEFAULT 1,
    version       text,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    running       integer NOT NULL DEFAULT 0,
    state         text NOT NULL DEFAULT 'online'
);

-- Liveness of scheduler processes, for /health.
CREATE TABLE schedulers (
    name          text PRIMARY KEY,
    host          text NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL
);

CREATE TABLE api_tokens (
    token_hash  text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('read', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
