-- Run deadlines (issue 13): when a run must have finished by (its logical date or its start
-- plus the flow's deadline), and whether it did. The leader decides each deadline once it has
-- passed: `met`, or `missed` with an onDeadlineMiss notification in the same transaction.
ALTER TABLE runs ADD COLUMN deadline_at timestamptz, ADD COLUMN deadline_state text CHECK (deadline_state IN ('met', 'missed'));
CREATE INDEX runs_deadline_due ON runs (deadline_at) WHERE deadline_at IS NOT NULL AND deadline_state IS NULL;
