-- AWS account scans and their findings.

CREATE TABLE scans (
    id               uuid PRIMARY KEY,
    -- What "one running scan per account" is keyed on: 'self' (the deployment's own
    -- credentials) or the 12-digit account of the role.
    account_key      text        NOT NULL,
    -- The account the credentials resolved to (sts:GetCallerIdentity); null until started.
    account_id       text,
    role_arn         text,
    -- Never the external id or any credential: nothing secret is stored.
    regions_requested jsonb      NOT NULL,
    regions          text[]      NOT NULL DEFAULT '{}',
    services         text[],
    checks           text[],
    frameworks       text[],
    status           text        NOT NULL,
    error            text,
    progress_done    integer     NOT NULL DEFAULT 0,
    progress_total   integer     NOT NULL DEFAULT 0,
    aws_calls        bigint      NOT NULL DEFAULT 0,
    -- Calls per operation ({"IAM:GetAccountSummary": 1, …}): the permissions the scan used.
    aws_operations   jsonb       NOT NULL DEFAULT '{}',
    trigger          text        NOT NULL,
    api_key_id       uuid,
    usage_event_id   uuid,
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- The replica running the scan renews this; a scan whose lease ran out was interrupted.
    lease_owner      text,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT scans_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    CONSTRAINT scans_trigger_check CHECK (trigger IN ('api', 'schedule'))
);
CREATE UNIQUE INDEX scans_one_active_per_account ON scans (account_key) WHERE status IN ('queued', 'running');
CREATE INDEX scans_created ON scans (created_at DESC, id DESC);
CREATE INDEX scans_lease ON scans (lease_expires_at) WHERE status IN ('queued', 'running');

CREATE TABLE scan_findings (
    scan_id      uuid        NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    n            integer     NOT NULL,
    check_id     text        NOT NULL,
    service      text        NOT NULL,
    region       text        NOT NULL,
    resource_arn text        NOT NULL,
    status       text        NOT NULL,
    severity     text        NOT NULL,
    reason       text        NOT NULL,
    evidence     jsonb       NOT NULL,
    -- When this check first gave this status on this resource in any scan of the account.
    first_seen   timestamptz NOT NULL,
    PRIMARY KEY (scan_id, n),
    CONSTRAINT scan_findings_status_check CHECK (status IN ('pass', 'fail', 'error', 'not_applicable'))
);
CREATE INDEX scan_findings_history ON scan_findings (check_id, resource_arn, region, status);
