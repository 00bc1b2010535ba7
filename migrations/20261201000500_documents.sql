-- Architecture-document analysis: uploaded documents, their content (when kept in PostgreSQL)
-- and the findings derived from them.

CREATE TABLE documents (
    id                   uuid        PRIMARY KEY,
    -- The key that uploaded it (the bootstrap key is the nil uuid, so no foreign key).
    api_key_id           uuid        NOT NULL,
    name                 text        NOT NULL,
    -- Recognised from the content: pdf, docx, markdown, text, cloudformation, terraform, terraform_plan.
    kind                 text        NOT NULL,
    size_bytes           bigint      NOT NULL,
    sha256               text        NOT NULL,
    -- Framework ids the uploader asked for; null: inferred from the content.
    frameworks_requested text[],
    status               text        NOT NULL,
    -- 0-100.
    progress             smallint    NOT NULL DEFAULT 0,
    error_code           text,
    error                text,
    -- 'postgres' (document_contents) or 's3' (DOCUMENTS_BUCKET, key in storage_key).
    storage              text        NOT NULL,
    storage_key          text,
    -- What the analysis read: resources and types, or services, data kinds, measures, sentences, pages.
    facts                jsonb,
    -- Framework ids the findings cover.
    frameworks           text[]      NOT NULL DEFAULT '{}',
    usage_event_id       uuid,
    -- The replica analysing it renews nothing: an analysis is bounded by DOCUMENT_ANALYSIS_TIMEOUT_SECONDS,
    -- so a lease past that means the replica stopped, and another one analyses the document again.
    lease_owner          text,
    lease_expires_at     timestamptz,
    attempts             smallint    NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL,
    analyzed_at          timestamptz,
    -- Set when DOCUMENT_RETENTION_DAYS removed the uploaded file (the findings stay).
    file_deleted_at      timestamptz,
    CONSTRAINT documents_status_check CHECK (status IN ('received', 'analyzing', 'analyzed', 'failed')),
    CONSTRAINT documents_storage_check CHECK (storage IN ('postgres', 's3'))
);
CREATE INDEX documents_by_key ON documents (api_key_id, created_at DESC, id DESC);
CREATE INDEX documents_by_time ON documents (created_at DESC, id DESC);
CREATE INDEX documents_pending ON documents (lease_expires_at) WHERE status IN ('received', 'analyzing');

CREATE TABLE document_contents (
    document_id uuid  PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    content     bytea NOT NULL
);

CREATE TABLE document_findings (
    document_id   uuid    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    n             integer NOT NULL,
    -- 'template' (a check on a resource) or 'prose' (a control and the sentence that decided).
    source        text    NOT NULL,
    -- Template findings: the catalogue check id.
    check_id      text,
    -- Prose findings: the KB control id (citation form, `hipaa-sr:164.312(a)(2)(iv)`), its
    -- framework id and the measure.
    control_id    text,
    framework     text,
    measure       text,
    status        text    NOT NULL,
    severity      text    NOT NULL,
    service       text,
    resource      text,
    resource_type text,
    line          integer,
    page          integer,
    heading       text,
    quote         text,
    reason        text    NOT NULL,
    -- Every control the finding decides, citation form (`pci-dss:3.5.1`, `cis-aws@5.0.0:2.3.1`),
    -- from the KB active when it was analysed: template findings through the check's mappings.
    controls      jsonb   NOT NULL DEFAULT '[]',
    PRIMARY KEY (document_id, n),
    CONSTRAINT document_findings_source_check CHECK (source IN ('template', 'prose')),
    CONSTRAINT document_findings_status_check
        CHECK (status IN ('pass', 'fail', 'unknown', 'addressed', 'contradicted', 'silent'))
);
CREATE INDEX document_findings_by_check ON document_findings (check_id) WHERE check_id IS NOT NULL;
