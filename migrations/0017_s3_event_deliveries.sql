-- S3 event notifications (POST /api/v1/assets/events/s3) record asset events with source 's3'.
-- Each object write they tell of is remembered by its bucket, key and S3's sequencer (or the
-- event's id), so that a redelivered notification — or the same write told both by a bucket
-- notification and by EventBridge — records nothing twice. The unique key decides between
-- concurrent deliveries; `flowctl db clean` prunes entries older than its cutoff.
ALTER TABLE asset_events DROP CONSTRAINT asset_events_source_check;
ALTER TABLE asset_events ADD CONSTRAINT asset_events_source_check CHECK (source IN ('task', 'api', 's3'));
CREATE TABLE s3_event_deliveries (
    dedupe_key  text PRIMARY KEY,
    at          timestamptz NOT NULL
);
CREATE INDEX s3_event_deliveries_by_at ON s3_event_deliveries (at);
