-- The compliance knowledge base. Each load writes a whole new version next to the active one
-- and switches `active` at commit, so readers see the previous version until then.

CREATE TABLE kb_versions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kb_version  text        NOT NULL,
    -- SHA-256 of manifest.json: identical content has an identical checksum.
    checksum    text        NOT NULL,
    source      text        NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    active      boolean     NOT NULL DEFAULT false,
    stats       jsonb       NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX kb_versions_one_active ON kb_versions (active) WHERE active;

-- Orders ids the way people read them: 8.4.2 < 8.4.10, 9 < 10.
CREATE COLLATION kb_natural (provider = icu, locale = 'und-u-kn-true');

CREATE TABLE kb_frameworks (
    version_id  bigint NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    key         text   NOT NULL,           -- cis-aws@3.0.0
    id          text   NOT NULL,           -- cis-aws
    version     text   NOT NULL,
    name        text   NOT NULL,
    publisher   text   NOT NULL,
    url         text   NOT NULL,
    summary     text   NOT NULL,
    kinds       text[] NOT NULL,
    PRIMARY KEY (version_id, key)
);

CREATE TABLE kb_controls (
    version_id  bigint  NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    id          text    NOT NULL,          -- control:cis-aws@3.0.0:1.5
    framework   text    NOT NULL,          -- cis-aws@3.0.0
    native_id   text    NOT NULL,          -- 1.5
    kind        text    NOT NULL,
    parent_id   text,
    title       text    NOT NULL,
    summary     text    NOT NULL,
    url         text    NOT NULL,
    technical   boolean NOT NULL,
    services    text[]  NOT NULL,
    attributes  jsonb   NOT NULL,
    search      tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', native_id || ' ' || title), 'A') ||
        setweight(to_tsvector('english', summary), 'B')
    ) STORED,
    PRIMARY KEY (version_id, id)
);
CREATE INDEX kb_controls_framework ON kb_controls (version_id, framework, kind);
CREATE INDEX kb_controls_native ON kb_controls (version_id, lower(native_id));
CREATE INDEX kb_controls_parent ON kb_controls (version_id, parent_id);
CREATE INDEX kb_controls_search ON kb_controls USING gin (search);

CREATE TABLE kb_checks (
    version_id     bigint NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    id             text   NOT NULL,        -- check:kb:ebs-volume-encrypted
    title          text   NOT NULL,
    description    text   NOT NULL,
    services       text[] NOT NULL,
    resource_type  text   NOT NULL,
    severity       text   NOT NULL,
    refs           jsonb  NOT NULL,
    remediation_id text   NOT NULL,
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') ||
        setweight(to_tsvector('english', description), 'B')
    ) STORED,
    PRIMARY KEY (version_id, id)
);
CREATE INDEX kb_checks_search ON kb_checks USING gin (search);

CREATE TABLE kb_remediations (
    version_id     bigint NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    id             text   NOT NULL,        -- remediation:kb:ebs-volume-encrypted
    title          text   NOT NULL,
    steps          text[] NOT NULL,
    cli            text,
    cloudformation text,
    terraform      text,
    -- Written by the loader: array_to_string is not immutable, so no generated column here.
    search         tsvector NOT NULL,
    PRIMARY KEY (version_id, id)
);
CREATE INDEX kb_remediations_search ON kb_remediations USING gin (search);

CREATE TABLE kb_services (
    version_id  bigint NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    id          text   NOT NULL,           -- ec2
    name        text   NOT NULL,
    category    text   NOT NULL,
    PRIMARY KEY (version_id, id)
);

CREATE TABLE kb_relationships (
    version_id  bigint NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    type        text   NOT NULL,
    from_id     text   NOT NULL,
    to_id       text   NOT NULL,
    basis       text   NOT NULL,
    PRIMARY KEY (version_id, type, from_id, to_id),
    CONSTRAINT kb_relationships_type_check
        CHECK (type IN ('part_of', 'maps_to', 'applies_to', 'remediated_by', 'related_to'))
);
CREATE INDEX kb_relationships_to ON kb_relationships (version_id, type, to_id);
