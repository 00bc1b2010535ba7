-- Foundation: API keys and the deployment record.

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    name          text        NOT NULL,
    -- First characters of the key, shown in listings so a user can tell keys apart.
    prefix        text        NOT NULL,
    -- SHA-256 of the whole key: keys are 256-bit random, so a fast hash is enough.
    key_hash      bytea       NOT NULL,
    scope         text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_scope_check CHECK (scope IN ('admin', 'user')),
    CONSTRAINT api_keys_name_check CHECK (length(name) BETWEEN 1 AND 100)
);

-- One row: facts about this deployment that every replica shares (first start = trial start).
CREATE TABLE deployment (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    first_started_at timestamptz NOT NULL DEFAULT now()
);

-- Revocation and creation must reach every replica's key cache at once.
CREATE FUNCTION notify_api_keys_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('api_keys_changed', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_changed
    AFTER UPDATE OF revoked_at OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_api_keys_changed();
