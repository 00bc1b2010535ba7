-- Marketplace: the usage ledger, trial counters, idempotency and metering reports.

CREATE TABLE usage_reports (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dimension           text        NOT NULL,
    -- The clock hour the MeterUsage record is for (start of hour, UTC).
    hour                timestamptz NOT NULL,
    quantity            integer     NOT NULL CHECK (quantity >= 0),
    -- Deterministic, stored before the first call and resent unchanged on every retry.
    client_token        text        NOT NULL,
    -- The replica (MARKETPLACE_TASK_ID) that claimed and sends it.
    task_id             text        NOT NULL,
    status              text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'failed', 'expired', 'local')),
    metering_record_id  text,
    attempts            integer     NOT NULL DEFAULT 0,
    last_error          text,
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    CONSTRAINT usage_reports_dimension_hour_key UNIQUE (dimension, hour),
    CONSTRAINT usage_reports_client_token_key UNIQUE (client_token)
);

CREATE TABLE usage_events (
    id               uuid        PRIMARY KEY,
    dimension        text        NOT NULL
                     CHECK (dimension IN ('SecurityScans', 'ChatQuestions', 'DocumentAnalysis')),
    quantity         integer     NOT NULL DEFAULT 1 CHECK (quantity > 0),
    occurred_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    task_id          text        NOT NULL,
    api_key_id       uuid,
    action           text        NOT NULL,
    resource_id      text,
    refunded_at      timestamptz,
    -- Counted against a trial limit (so a refund gives the unit back).
    counted          boolean     NOT NULL DEFAULT false,
    report_id        bigint      REFERENCES usage_reports (id)
);
CREATE INDEX usage_events_unreported ON usage_events (dimension, occurred_at)
    WHERE report_id IS NULL AND refunded_at IS NULL;
CREATE INDEX usage_events_report ON usage_events (report_id);

-- One row per dimension: the trial counter, locked for the duration of a charge so that
-- concurrent requests can never exceed a limit.
CREATE TABLE usage_counters (
    dimension   text   PRIMARY KEY,
    used        bigint NOT NULL DEFAULT 0 CHECK (used >= 0)
);
INSERT INTO usage_counters (dimension) VALUES ('SecurityScans'), ('ChatQuestions'), ('DocumentAnalysis');

-- `usage.threshold` is announced once per dimension and threshold.
CREATE TABLE usage_thresholds (
    dimension   text        NOT NULL,
    percent     integer     NOT NULL,
    crossed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dimension, percent)
);

-- A retried request with the same Idempotency-Key gets the first response back.
CREATE TABLE idempotency_keys (
    api_key_id      uuid        NOT NULL,
    key             text        NOT NULL,
    request_hash    text        NOT NULL,
    response_status integer     NOT NULL,
    response_body   jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, key)
);

-- The small billable action (stands in for chat, documents and scans until they exist).
CREATE TABLE billable_actions (
    id          uuid        PRIMARY KEY,
    dimension   text        NOT NULL,
    input       text        NOT NULL,
    api_key_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Replicas announce themselves so the last one to stop can report the current hour.
CREATE TABLE marketplace_tasks (
    task_id     text        PRIMARY KEY,
    last_seen   timestamptz NOT NULL DEFAULT now()
);
-- Dimensions whose reporting stopped on a permanent error, until an operator flushes.
CREATE TABLE usage_dimension_blocks (
    dimension   text        PRIMARY KEY,
    reason      text        NOT NULL,
    blocked_at  timestamptz NOT NULL DEFAULT now()
);
