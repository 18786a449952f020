-- Run timeouts (issue 12): when a run of a flow with `runTimeout` starts, the instant it must
-- end by. The leader's RunTimeoutEnforcer fails the runs past it.
ALTER TABLE runs ADD COLUMN timeout_at timestamptz;
CREATE INDEX runs_timing_out ON runs (timeout_at) WHERE state = 'running' AND timeout_at IS NOT NULL;
