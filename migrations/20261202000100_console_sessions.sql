-- Console sign-in sessions: an API key exchanged for an HttpOnly cookie, so the browser never
-- holds the key. Only hashes are stored: the cookie's, and the key's (the key's hash is what
-- `api_keys` stores too; for the bootstrap key it is compared with the configured key's hash).
-- A session is valid while its key is: revoking the key ends its sessions at once.
CREATE TABLE console_sessions (
    token_hash BYTEA PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    key_hash BYTEA NOT NULL CHECK (octet_length(key_hash) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
