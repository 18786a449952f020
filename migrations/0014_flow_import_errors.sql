-- Import errors (issue 15): flows a scheduler's binary carries but could not register (an
-- invalid cron, a cycle, a trigger of an unknown flow). The valid flows are registered and run;
-- these are shown by the API, /health and `flowctl flows list`, each with its message. Each
-- registering scheduler replaces the list, as it replaces the set of active flows.
CREATE TABLE flow_import_errors (
    flow_id      text PRIMARY KEY,
    message      text NOT NULL,
    reported_by  text NOT NULL,
    at           timestamptz NOT NULL
);
