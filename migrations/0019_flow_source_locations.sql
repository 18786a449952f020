-- Where each flow and task is declared in code (`#fileID:#line`), kept beside each version and
-- outside its definition and hash: moving code makes no new version, and a registration
-- refreshes the positions of the version it carries.
ALTER TABLE flow_versions ADD COLUMN source jsonb;
