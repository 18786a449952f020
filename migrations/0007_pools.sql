-- Pools and concurrency limits (issue 12). A pool's slots bound how many task instances that
-- name it may be queued or running at once, across flows. A limited task that is ready but
-- has no slot waits in state `queued` with no message yet (`message_id` NULL) and says why in
-- `wait_reason`; the pool admitter gives it a message when a slot frees.
CREATE TABLE pools (
    name         text PRIMARY KEY,
    slots        integer NOT NULL CHECK (slots >= 0),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- `example_pool` is the pool of the shipped example flow of the same name (2 slots).
INSERT INTO pools (name, slots, description) VALUES ('example_pool', 2, 'the pool of the example_pool flow');

ALTER TABLE task_instances ADD COLUMN pool text, ADD COLUMN pool_slots integer NOT NULL DEFAULT 1, ADD COLUMN wait_reason text;
-- What holds a slot: queued with a message, or running.
CREATE INDEX task_instances_pool_busy ON task_instances (pool) WHERE pool IS NOT NULL AND state IN ('queued', 'running');
-- What waits for one, oldest first within a priority.
CREATE INDEX task_instances_waiting ON task_instances (priority DESC, queued_at) WHERE state = 'queued' AND message_id IS NULL;
