-- Dynamic task mapping (issue 12). A mapped task's instances are task instances of their own,
-- `task[index]`, with their own tries, logs and results; `map_parent` names the mapped task and
-- `map_item` holds the instance's element. The mapped task's own row counts its unfinished
-- instances in `map_left`, so that each instance's end costs one row update, not a count.
ALTER TABLE task_instances ADD COLUMN map_parent text, ADD COLUMN map_index integer, ADD COLUMN map_item jsonb,
                           ADD COLUMN map_left integer;
CREATE INDEX task_instances_mapped ON task_instances (run_pk, map_parent, map_index) WHERE map_parent IS NOT NULL;
