-- The KB read path: one search table for the three searchable kinds, filled when a version
-- becomes active, so that a search is one ranked scan of one GIN index instead of three, and its
-- framework/service filters are array tests instead of joins per candidate row.

CREATE TABLE kb_search (
    version_id  bigint   NOT NULL REFERENCES kb_versions (id) ON DELETE CASCADE,
    kind        text     NOT NULL CHECK (kind IN ('control', 'check', 'remediation')),
    id          text     NOT NULL,       -- control:…, check:…, remediation:… (never collide)
    title       text     NOT NULL,
    framework   text,                    -- controls only
    native_id   text,                    -- controls only
    -- What snippets are cut from (ts_headline), as the answer shows it.
    body        text     NOT NULL,
    search      tsvector NOT NULL,
    -- Filters, precomputed from the graph:
    -- controls: their framework; checks: frameworks of the controls mapped to them;
    -- remediations: those of their checks.
    frameworks  text[]   NOT NULL,
    -- controls: their services and those of their checks; checks: theirs; remediations: their checks'.
    services    text[]   NOT NULL,
    -- 'framework|service' of one control or check, so that both filters together still mean
    -- "the same check" for a remediation.
    pairs       text[]   NOT NULL,
    PRIMARY KEY (version_id, id)
);
CREATE INDEX kb_search_search ON kb_search USING gin (search);

-- Search queries are OR queries of plain lexemes (any word matches). For those, ts_rank_cd's
-- cover density is the sum, over every position of a query lexeme in the document, of that
-- position's weight (D 0.1, C 0.2, B 0.4, A 1.0): each occurrence is a cover of its own. So the
-- rank is a sum over per-(lexeme, document) weights, precomputed here, and a search reads a few
-- hundred index entries instead of ranking every matching document. Queries with phrases
-- (hyphenated words) are ranked with ts_rank_cd itself.
CREATE TABLE kb_search_terms (
    version_id  bigint NOT NULL,
    lexeme      text   NOT NULL,
    id          text   NOT NULL,
    weight      float8 NOT NULL,
    -- weight in the index too: a search reads the index only (once autovacuum has marked the pages
    -- all-visible; until then rows of one lexeme sit together, see the ORDER BY below).
    PRIMARY KEY (version_id, lexeme, id) INCLUDE (weight),
    -- Per version, not per document: a cascade per kb_search row would scan this table each time.
    FOREIGN KEY (version_id) REFERENCES kb_versions (id) ON DELETE CASCADE
);

-- Builds kb_search for one loaded version. Set-based (no per-row subquery without an index), so
-- it stays linear for large KBs.
-- PL/pgSQL, not SQL: it plans each statement when it reaches it, so after the ANALYZE below.
CREATE FUNCTION kb_build_search(v bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM kb_search_terms WHERE version_id = v;
    DELETE FROM kb_search WHERE version_id = v;
    -- Called inside the load transaction, before the loader's own ANALYZE: without statistics
    -- the planner takes a version's rows for a handful and picks per-row scans (quadratic on
    -- large KBs). ANALYZE sees this transaction's rows.
    -- Filters (framework, service) follow only `direct` and `partial` mappings: a `supporting`
    -- edge is context, not evidence that a check bears on the control.
    ANALYZE kb_controls, kb_checks, kb_remediations, kb_relationships;

    INSERT INTO kb_search (version_id, kind, id, title, framework, native_id, body, search, frameworks, services, pairs)
    SELECT c.version_id, 'control', c.id, c.title, c.framework, c.native_id, c.title || '. ' || c.summary,
           c.search, ARRAY[c.framework], s.services,
           ARRAY(SELECT c.framework || '|' || x FROM unnest(s.services) x)
    FROM kb_controls c
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') AS services FROM (
            SELECT unnest(c.services)
            UNION ALL
            SELECT unnest(k.services)
            FROM kb_relationships r JOIN kb_checks k ON k.version_id = r.version_id AND k.id = r.to_id
            WHERE r.version_id = c.version_id AND r.type = 'maps_to' AND r.from_id = c.id
              AND r.strength IN ('direct', 'partial')
        ) u(x)
    ) s
    WHERE c.version_id = v;

    INSERT INTO kb_search (version_id, kind, id, title, framework, native_id, body, search, frameworks, services, pairs)
    SELECT k.version_id, 'check', k.id, k.title, NULL, NULL, k.title || '. ' || k.description,
           k.search, f.frameworks, k.services,
           ARRAY(SELECT fw || '|' || sv FROM unnest(f.frameworks) fw, unnest(k.services) sv)
    FROM kb_checks k
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(DISTINCT c.framework ORDER BY c.framework), '{}') AS frameworks
        FROM kb_relationships r JOIN kb_controls c ON c.version_id = r.version_id AND c.id = r.from_id
        WHERE r.version_id = k.version_id AND r.type = 'maps_to' AND r.to_id = k.id
          AND r.strength IN ('direct', 'partial')
    ) f
    WHERE k.version_id = v;

    ANALYZE kb_search;

    INSERT INTO kb_search (version_id, kind, id, title, framework, native_id, body, search, frameworks, services, pairs)
    SELECT m.version_id, 'remediation', m.id, m.title, NULL, NULL,
           m.title || '. ' || array_to_string(m.steps, ' '), m.search,
           coalesce(f.a, '{}'), coalesce(s.a, '{}'), coalesce(p.a, '{}')
    FROM kb_remediations m
    LEFT JOIN (
        SELECT k.remediation_id AS id, array_agg(DISTINCT x ORDER BY x) AS a
        FROM kb_checks k JOIN kb_search s ON s.version_id = k.version_id AND s.id = k.id, unnest(s.frameworks) x
        WHERE k.version_id = v GROUP BY 1
    ) f ON f.id = m.id
    LEFT JOIN (
        SELECT k.remediation_id AS id, array_agg(DISTINCT x ORDER BY x) AS a
        FROM kb_checks k, unnest(k.services) x
        WHERE k.version_id = v GROUP BY 1
    ) s ON s.id = m.id
    LEFT JOIN (
        SELECT k.remediation_id AS id, array_agg(DISTINCT x ORDER BY x) AS a
        FROM kb_checks k JOIN kb_search s ON s.version_id = k.version_id AND s.id = k.id, unnest(s.pairs) x
        WHERE k.version_id = v GROUP BY 1
    ) p ON p.id = m.id
    WHERE m.version_id = v;

    INSERT INTO kb_search_terms (version_id, lexeme, id, weight)
    SELECT s.version_id, u.lexeme, s.id,
           -- ts_rank_cd's default weights are float4: sum them as it does.
           sum(CASE w WHEN 'A' THEN 1.0::float4 WHEN 'B' THEN 0.4::float4
                      WHEN 'C' THEN 0.2::float4 ELSE 0.1::float4 END::float8)
    FROM kb_search s, unnest(s.search) u, unnest(u.weights) w
    WHERE s.version_id = v
    GROUP BY s.version_id, u.lexeme, s.id
    ORDER BY u.lexeme, s.id;

    -- New rows sit in the GIN pending list (scanned linearly by every search) until a vacuum;
    -- move them into the index proper now.
    PERFORM gin_clean_pending_list('kb_search_search'::regclass);
END
$$;

-- The loader writes a whole version and then flips `active` in the same transaction: build the
-- search table at that moment, so no loader change is needed and readers never see a version
-- without it.
CREATE FUNCTION kb_versions_activated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kb_build_search(NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER kb_versions_activated AFTER INSERT OR UPDATE OF active ON kb_versions
    FOR EACH ROW WHEN (NEW.active) EXECUTE FUNCTION kb_versions_activated();

-- A database that already serves a version gets its search table now.
SELECT kb_build_search(id) FROM kb_versions WHERE active;

