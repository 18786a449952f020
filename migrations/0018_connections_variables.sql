-- Connections and variables as a managed store (issue 25): set through the API or flowctl,
-- sealed with AES-GCM under FLOWKIT_SECRET_KEY (`secret` is `fk1:<key id>:<base64>`), sent by
-- the scheduler in the messages of the tasks that declare them. The parts of a connection that
-- are not secret (type, host, port, login, schema, and its URL with the password masked) are
-- kept beside it in clear, for lists; the secret itself is never returned.
CREATE TABLE connections (
    name         text PRIMARY KEY,
    conn_type    text NOT NULL,
    host         text,
    port         integer,
    login        text,
    schema       text,
    masked_uri   text NOT NULL,
    description  text NOT NULL DEFAULT '',
    secret       text NOT NULL,
    key_id       text NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    updated_by   text
);
CREATE TABLE variables (
    key          text PRIMARY KEY,
    description  text NOT NULL DEFAULT '',
    secret       text NOT NULL,
    key_id       text NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    updated_by   text
);
