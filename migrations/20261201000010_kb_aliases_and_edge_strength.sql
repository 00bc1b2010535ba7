-- Ids as people type them, and how strongly each control→check edge evidences its control.

-- Every lookup key a control answers to (`164.314(a)`, `art.32`, `sec01-bp07`, …), reduced by
-- `kb::ids` at load time, so resolving a typed id is one indexed lookup.
ALTER TABLE kb_controls ADD COLUMN alias_keys text[] NOT NULL DEFAULT '{}';
CREATE INDEX kb_controls_alias_keys ON kb_controls USING gin (alias_keys);

-- maps_to edges: `direct` (passing is evidence the control is met for that resource), `partial`
-- (covers part of it) or `supporting` (context only; compliance views ignore it), with a
-- one-line rationale. NULL for derived edges (part_of, applies_to, remediated_by) and related_to.
ALTER TABLE kb_relationships
    ADD COLUMN strength text,
    ADD COLUMN rationale text,
    ADD CONSTRAINT kb_relationships_strength_check
        CHECK (strength IS NULL OR strength IN ('direct', 'partial', 'supporting'));

-- What the loader wrote: a version loaded by an older loader lacks the columns above, so it is
-- loaded again even when its data checksum is unchanged.
ALTER TABLE kb_versions ADD COLUMN loader_version integer NOT NULL DEFAULT 1;
