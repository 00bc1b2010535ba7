-- Control detail answers precomputed per KB version. The answer to GET /kb/controls/{id} is a pure
-- function of the active version (parent, children, mapped checks, services, remediation, related
-- controls), so it is built once when a version becomes active, and a read is one index lookup
-- instead of a dozen joins: an uncommon control after a deploy costs what a common one does.
-- A change to the shape of the answer is a new migration that replaces kb_control_body and
-- rebuilds the active version (SELECT kb_build_control_docs(id) FROM kb_versions WHERE active).

CREATE TABLE kb_control_docs (
    version_id  bigint NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    id          text   NOT NULL,
    -- The JSON answer as sent (text, not jsonb: jsonb would reorder the keys).
    body        text   NOT NULL,
    PRIMARY KEY (version_id, id)
);

-- Builds the ControlDetail answer of every control of one version in one set-based statement
-- (linear in the version's size: a query per control would cost a second per thousand controls at
-- load time). Only the active version is answered, so only its documents are kept.
-- Related controls: curated links first, then those sharing checks (most shared first), other
-- frameworks only, at most 25.
CREATE FUNCTION kb_build_control_docs(v bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM kb_control_docs
    WHERE version_id = v OR version_id NOT IN (SELECT id FROM kb_versions WHERE active);

    INSERT INTO kb_control_docs (version_id, id, body)
    WITH controls AS (
        SELECT * FROM kb_controls WHERE version_id = v
    ),
    mapped AS (
        SELECT r.from_id AS cid, k.id, k.title, k.severity, k.services, r.basis, r.strength, r.rationale, k.remediation_id
        FROM kb_relationships r
        JOIN kb_checks k ON k.version_id = r.version_id AND k.id = r.to_id
        WHERE r.version_id = v AND r.type = 'maps_to'
    ),
    checks AS (
        SELECT cid, json_agg(json_build_object('id', id, 'title', title, 'severity', severity,
                   'services', services, 'basis', basis, 'strength', strength, 'rationale', rationale) ORDER BY id) AS checks
        FROM mapped GROUP BY cid
    ),
    services AS (
        SELECT cid, array_agg(DISTINCT s ORDER BY s) AS services FROM (
            SELECT id AS cid, unnest(services) AS s FROM controls
            UNION ALL
            SELECT cid, unnest(services) FROM mapped) u
        GROUP BY cid
    ),
    remediations AS (
        SELECT cid, json_agg((SELECT x FROM (SELECT m.id, m.title, m.steps, m.cli, m.cloudformation, m.terraform) x) ORDER BY m.id) AS remediations
        FROM (SELECT DISTINCT x.cid, m.id, m.title, m.steps, m.cli, m.cloudformation, m.terraform
              FROM mapped x
              JOIN kb_remediations m ON m.version_id = v AND m.id = x.remediation_id) m
        GROUP BY cid
    ),
    children AS (
        SELECT h.parent_id AS cid,
               json_agg((SELECT x FROM (SELECT h.id, h.framework, h.native_id, h.kind, h.parent_id, h.title,
                   h.summary, h.url, h.technical, h.services, h.attributes) x) ORDER BY h.native_id COLLATE kb_natural) AS children
        FROM controls h WHERE h.parent_id IS NOT NULL GROUP BY h.parent_id
    ),
    curated AS (
        SELECT from_id AS cid, to_id AS id, basis FROM kb_relationships WHERE version_id = v AND type = 'related_to'
        UNION ALL
        SELECT to_id, from_id, basis FROM kb_relationships WHERE version_id = v AND type = 'related_to'
    ),
    derived AS (
        SELECT a.from_id AS cid, b.from_id AS id, count(*) AS shared
        FROM kb_relationships a
        JOIN kb_relationships b ON b.version_id = a.version_id AND b.type = 'maps_to' AND b.to_id = a.to_id
        -- Two controls share a check only when it evidences both; context edges do not count.
        WHERE a.version_id = v AND a.type = 'maps_to' AND b.from_id <> a.from_id
          AND a.strength IN ('direct', 'partial') AND b.strength IN ('direct', 'partial')
        GROUP BY a.from_id, b.from_id
    ),
    merged AS (
        SELECT DISTINCT ON (cid, id) cid, id, basis, shared, rank FROM (
            SELECT cid, id, basis, 0::bigint AS shared, 0 AS rank FROM curated
            UNION ALL
            SELECT cid, id, 'shared-checks', shared, 1 FROM derived
        ) u
        ORDER BY cid, id, rank
    ),
    related AS (
        SELECT m.cid, o.id, o.framework, o.native_id, o.title, m.basis, m.shared AS shared_checks, m.rank,
               row_number() OVER (PARTITION BY m.cid ORDER BY m.rank, m.shared DESC, o.framework, o.native_id) AS n
        FROM merged m
        JOIN controls c ON c.id = m.cid
        JOIN controls o ON o.id = m.id
        WHERE o.framework <> c.framework
    ),
    related_json AS (
        SELECT cid, json_agg(json_build_object('id', id, 'framework', framework, 'native_id', native_id,
                   'title', title, 'basis', basis, 'shared_checks', shared_checks)
                   ORDER BY rank, shared_checks DESC, framework, native_id) AS related
        FROM related WHERE n <= 25 GROUP BY cid
    )
    SELECT v, c.id, json_build_object(
        'id', c.id, 'framework', c.framework, 'native_id', c.native_id, 'kind', c.kind,
        'parent_id', c.parent_id, 'title', c.title, 'summary', c.summary, 'url', c.url,
        'technical', c.technical, 'attributes', c.attributes,
        'parent', CASE WHEN p.id IS NOT NULL THEN row_to_json((SELECT x FROM (SELECT p.id, p.framework, p.native_id,
            p.kind, p.parent_id, p.title, p.summary, p.url, p.technical, p.services, p.attributes) x)) END,
        'children', coalesce(ch.children, '[]'),
        'checks', coalesce(k.checks, '[]'),
        'services', coalesce(s.services, '{}'),
        'remediations', coalesce(rm.remediations, '[]'),
        'related', coalesce(rl.related, '[]'),
        'graph_source', 'postgres'
    )::text
    FROM controls c
    LEFT JOIN controls p ON p.id = c.parent_id
    LEFT JOIN children ch ON ch.cid = c.id
    LEFT JOIN checks k ON k.cid = c.id
    LEFT JOIN services s ON s.cid = c.id
    LEFT JOIN remediations rm ON rm.cid = c.id
    LEFT JOIN related_json rl ON rl.cid = c.id;
END
$$;

-- Built where the search table is built: in the transaction that activates a version, so readers
-- never see an active version without its documents.
CREATE OR REPLACE FUNCTION kb_versions_activated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kb_build_search(NEW.id);
    PERFORM kb_build_control_docs(NEW.id);
    RETURN NULL;
END
$$;

SELECT kb_build_control_docs(id) FROM kb_versions WHERE active;
