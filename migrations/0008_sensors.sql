-- Deferrable sensors (issue 12). A sensor that answers "not yet" frees its worker slot and waits
-- in `up_for_reschedule` until `next_attempt_at` (the retry timer queues its next poke, in the
-- same try); `poke_deadline` is when it gives up, set at its first "not yet".
ALTER TABLE task_instances DROP CONSTRAINT task_instances_state_check;
ALTER TABLE task_instances ADD CONSTRAINT task_instances_state_check
    CHECK (state IN ('pending', 'queued', 'running', 'success', 'failed', 'up_for_retry', 'up_for_reschedule',
                     'upstream_failed', 'skipped', 'cancelled'));
ALTER TABLE task_instances ADD COLUMN poke_deadline timestamptz;
CREATE INDEX task_instances_poke_due ON task_instances (next_attempt_at) WHERE state = 'up_for_reschedule';
