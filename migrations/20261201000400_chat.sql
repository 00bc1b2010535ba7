-- Security Q&A chat: conversations, their messages (one question and its answer each) and every
-- event a message streamed, so a client can resume a stream on any replica.

CREATE TABLE chat_conversations (
    id          uuid        PRIMARY KEY,
    -- The key that owns it (the bootstrap key is the nil uuid, so no foreign key).
    api_key_id  uuid        NOT NULL,
    -- Set by the client, or from the first question when it set none.
    title       text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX chat_conversations_by_key ON chat_conversations (api_key_id, updated_at DESC, id DESC);

CREATE TABLE chat_messages (
    id              uuid        PRIMARY KEY,
    -- Null for a one-shot question (POST /chat).
    conversation_id uuid        REFERENCES chat_conversations (id) ON DELETE CASCADE,
    api_key_id      uuid        NOT NULL,
    question        text        NOT NULL,
    status          text        NOT NULL,
    intent          text        NOT NULL,
    -- Frameworks, services and control ids the question was understood to name.
    understanding   jsonb       NOT NULL,
    answer          text        NOT NULL DEFAULT '',
    citations       jsonb       NOT NULL DEFAULT '[]',
    -- Control ids a language model wrote that the KB does not hold (removed from the answer).
    removed_ids     jsonb       NOT NULL DEFAULT '[]',
    -- 'builtin' or the LLM provider that wrote the answer.
    answerer        text        NOT NULL DEFAULT 'builtin',
    billed          boolean     NOT NULL,
    usage_event_id  uuid,
    error_code      text,
    duration_ms     integer,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    CONSTRAINT chat_messages_status_check CHECK (status IN ('streaming', 'complete', 'incomplete', 'failed'))
);
CREATE INDEX chat_messages_by_conversation ON chat_messages (conversation_id, created_at, id);
CREATE INDEX chat_messages_by_key ON chat_messages (api_key_id, created_at DESC);

CREATE TABLE chat_message_events (
    message_id uuid    NOT NULL REFERENCES chat_messages (id) ON DELETE CASCADE,
    -- The SSE `id` of the event: 1, 2, 3… within its message.
    seq        integer NOT NULL,
    event      text    NOT NULL,
    data       jsonb   NOT NULL,
    PRIMARY KEY (message_id, seq)
);
