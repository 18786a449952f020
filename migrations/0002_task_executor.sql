-- Which side runs a task instance: FlowKit's workers ('flowkit') or a Celery worker ('celery'),
-- whose outcome the scheduler reads from Celery's result backend instead of the events stream.
ALTER TABLE task_instances ADD COLUMN executor text NOT NULL DEFAULT 'flowkit';
CREATE INDEX task_instances_celery_in_flight ON task_instances (run_pk) WHERE executor = 'celery' AND state IN ('queued', 'running');
