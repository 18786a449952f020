-- The run starter asks, per flow with queued runs, how many of its runs are running and which
-- are its oldest queued ones. These partial indexes answer both without reading the flow's
-- history or its other queued runs: a 1,000-run burst made the old per-row count quadratic.
CREATE INDEX runs_queued_by_flow ON runs (flow_id, id) WHERE state = 'queued';
CREATE INDEX runs_running_by_flow ON runs (flow_id) WHERE state = 'running';
