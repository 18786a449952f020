-- Approvals (#27): a task that waits for a person's decision. The scheduler asks when the task
-- is queued (one row per try: what it asks, until when) and ends the task when a decision is
-- recorded here or the wait times out. The decision, who made it, their comment and the form's
-- values become the task's result.
CREATE TABLE approvals (
    run_pk        bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id       text NOT NULL,
    try_number    integer NOT NULL,
    -- The task's ApprovalSpec as it was asked (prompt, options, form, timeout).
    spec          jsonb NOT NULL,
    requested_at  timestamptz NOT NULL,
    timeout_at    timestamptz,
    decision      text,
    decided_by    text,
    decided_at    timestamptz,
    comment       text,
    form_values   jsonb,
    timed_out     boolean NOT NULL DEFAULT false,
    -- When a scheduler's pass ended the task with the decision: another pass leaves it alone,
    -- unless that one died before its events were applied (then it is repeated after 30 s).
    concluded_at  timestamptz,
    PRIMARY KEY (run_pk, task_id, try_number)
);
-- The approvals still waiting (the home page, `flowctl approvals list`), and the timeouts due.
CREATE INDEX approvals_waiting ON approvals (requested_at) WHERE decided_at IS NULL;
CREATE INDEX approvals_timeouts ON approvals (timeout_at) WHERE decided_at IS NULL AND timeout_at IS NOT NULL;
