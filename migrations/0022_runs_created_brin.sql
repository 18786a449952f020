-- The dashboard's home counts the runs of the last 24 hours and 7 days by state (#27). A BRIN
-- index on created_at finds them among millions while costing inserts next to nothing: runs are
-- appended in creation order, so each block range holds a narrow span of times.
CREATE INDEX runs_created_brin ON runs USING brin (created_at) WITH (pages_per_range = 32, autosummarize = on);
