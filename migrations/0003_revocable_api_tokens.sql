-- API tokens that can be revoked and expire (issue 17).
--
-- The tokens in FLOWKIT_API_TOKENS are no longer stored: each API process checks them in
-- memory, so the configuration is the whole set of them and a token removed from it stops
-- working when the API restarts. The old rows were only copies of those, hashed with a bare
-- SHA-256, and go.
--
-- Rows are made by `flowctl tokens create`. The token is `fkt_<token_id>_<secret>`; only
-- HMAC-SHA-256(salt, secret) is kept, with a random salt per token.
DROP TABLE api_tokens;
CREATE TABLE api_tokens (
    token_id      text PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('read', 'admin')),
    salt          text NOT NULL,
    secret_hash   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
-- A name means one live token; revoked ones keep theirs for the record.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
