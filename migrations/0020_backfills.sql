-- Backfills as objects (#27), as Airflow 3 has them: a range of a flow's cron ticks, planned once
-- when created (each tick: create a run, re-run the existing one, or skip it and why), then
-- carried out by the schedulers a few runs at a time (`max_active_runs`), oldest or newest
-- first. Pausing stops new runs; cancelling also cancels the backfill's queued runs.
CREATE TABLE backfills (
    id               bigserial PRIMARY KEY,
    flow_id          text NOT NULL REFERENCES flows (flow_id),
    from_date        timestamptz NOT NULL,
    to_date          timestamptz NOT NULL,
    conf             jsonb NOT NULL DEFAULT '{}',
    reprocess        text NOT NULL CHECK (reprocess IN ('none', 'failed', 'all')),
    max_active_runs  integer NOT NULL CHECK (max_active_runs > 0),
    newest_first     boolean NOT NULL DEFAULT false,
    state            text NOT NULL CHECK (state IN ('running', 'paused', 'cancelled', 'completed')),
    created_by       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    completed_at     timestamptz
);
CREATE INDEX backfills_by_flow ON backfills (flow_id, id DESC);
-- What the schedulers look at each pass: only the backfills still making runs.
CREATE INDEX backfills_running ON backfills (id) WHERE state = 'running';

-- The plan, in the order it is carried out. `action`: create a run, re-run the existing one
-- (`rerun`), or `skip` it (`reason` says why). `run_pk`: the run the tick made or re-ran, or the
-- existing run it skipped. `done`: carried out (a tick whose run appeared meanwhile is turned
-- into a skip, with its reason).
CREATE TABLE backfill_ticks (
    backfill_id   bigint NOT NULL REFERENCES backfills (id) ON DELETE CASCADE,
    position      integer NOT NULL,
    logical_date  timestamptz NOT NULL,
    action        text NOT NULL CHECK (action IN ('create', 'rerun', 'skip')),
    reason        text,
    run_pk        bigint REFERENCES runs (id) ON DELETE SET NULL,
    done          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (backfill_id, position)
);
CREATE INDEX backfill_ticks_pending ON backfill_ticks (backfill_id, position) WHERE NOT done;
-- Retention deletes old runs: the ticks that name one are found by index, not by a scan.
CREATE INDEX backfill_ticks_by_run ON backfill_ticks (run_pk) WHERE run_pk IS NOT NULL;

-- The backfill a run belongs to (made or re-run by it): its active runs are counted against
-- the backfill's `max_active_runs`, and cancelling it cancels its queued ones.
ALTER TABLE runs ADD COLUMN backfill_id bigint REFERENCES backfills (id) ON DELETE SET NULL;
CREATE INDEX runs_by_backfill ON runs (backfill_id, state) WHERE backfill_id IS NOT NULL;
