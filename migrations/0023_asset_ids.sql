-- Assets get a number (Airflow's REST API addresses an asset by an integer id:
-- GET /api/v2/assets/{asset_id}, asset events' asset_id). Existing assets are numbered in
-- the order PostgreSQL reads them; new ones as they are registered.
ALTER TABLE assets ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
