-- Audit (issue 15): every write made through the API, and the database tools of flowctl, with
-- who made it — the name of the token (`token:NAME`), a configured token (`config:ROLE#N`, its
-- place in FLOWKIT_API_TOKENS), a flow's webhook (`webhook:FLOW`) or `flowctl` run on a host.
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL,
    actor    text NOT NULL,
    action   text NOT NULL,
    target   text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
