-- Events every capability publishes (`events::publish`), kept for replay by notification
-- clients (`GET /api/v1/notifications`, WebSocket `?since=`), and one-time WebSocket tickets.
--
-- Ids are assigned at COMMIT, in commit order. A plain bigserial is taken when the row is
-- inserted, so a transaction that takes id 5 and commits after the one that took id 6 would make
-- 5 appear after a reader has moved past 6: a gap. Here the row is inserted without an id and a
-- deferred constraint trigger gives it one at commit time, after taking a transaction-level
-- advisory lock that is released only once the commit is visible. The next producer's trigger
-- waits on that lock, so every id is taken after every smaller id is visible: a reader that has
-- seen id N can never later find a committed id below N. Producers are serialised only for the
-- instant of their commit, not for the length of their transactions.
CREATE SEQUENCE events_id_seq AS bigint;

CREATE TABLE events (
    -- Insertion key, only used to find the row at commit.
    seq  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The public, commit-ordered id; NULL only inside the producing transaction.
    id   bigint UNIQUE,
    type text NOT NULL CHECK (type ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$' AND length(type) <= 100),
    ts   timestamptz NOT NULL DEFAULT now(),
    data jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX events_ts_idx ON events (ts);

CREATE FUNCTION events_assign_id() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
    new_ts timestamptz;
    payload text;
BEGIN
    -- 7242001: this lock's number, used nowhere else.
    PERFORM pg_advisory_xact_lock(7242001);
    new_id := nextval('events_id_seq');
    new_ts := clock_timestamp();
    UPDATE events SET id = new_id, ts = new_ts WHERE seq = NEW.seq;
    -- The wake-up every replica follows (`co_events`): small. The body rides along only when it
    -- keeps the payload well below NOTIFY's 8000-byte limit; otherwise readers fetch it by id.
    payload := json_build_object('id', new_id, 'type', NEW.type, 'ts', new_ts, 'data', NEW.data)::text;
    IF octet_length(payload) > 4000 THEN
        payload := json_build_object('id', new_id, 'type', NEW.type, 'ts', new_ts)::text;
    END IF;
    PERFORM pg_notify('co_events', payload);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER events_assign_id_at_commit
    AFTER INSERT ON events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION events_assign_id();

-- One-time WebSocket tickets (browsers cannot set `Authorization` on a WebSocket): only the
-- SHA-256 is stored, so a ticket works on any replica and a database read does not reveal it.
CREATE TABLE notification_tickets (
    hash       bytea PRIMARY KEY,
    key_id     uuid NOT NULL,
    key_name   text NOT NULL,
    scope      text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX notification_tickets_expires_idx ON notification_tickets (expires_at);
