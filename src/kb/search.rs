//! Ranked full-text search over controls, checks and remediation. A query that names a control
//! id ("PCI DSS 8.4.2", "HIPAA 164.312(a)(2)(iv)", "Art. 32", "IAM.6") returns that control first.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::ids;

/// One search result (the schema of the JSON that [`search`] builds in PostgreSQL).
#[derive(Debug, Serialize, ToSchema)]
pub struct Hit {
    /// `control`, `check` or `remediation`.
    pub kind: String,
    pub id: String,
    pub title: String,
    /// For controls: the framework key, e.g. `pci-dss@4.0.1`.
    pub framework: Option<String>,
    pub native_id: Option<String>,
    /// Why it matched: up to two passages of the text (whole words, joined by ` … `) with each
    /// matched word between `**` markers (`enable **MFA** for`); the KB text itself never
    /// contains `**`. For a control named by
    /// id, its title and summary (no markers).
    pub snippet: String,
    pub score: f64,
    /// `id` when the query named this control, `text` otherwise.
    pub matched: String,
}

static ID_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        \b(art(?:icle)?\.?\s*\d{1,2}|gdpr[-\s]?\d{1,2})\b         # GDPR article
        | \b(164\.\d{3}(?:\s?\([a-z0-9]{1,5}\))*|164_\d{3}(?:_[a-z0-9]{1,4})*)  # HIPAA, also Prowler's form
        | \b(sec\d{1,2}(?:-?bp\d{1,2})?)\b                # Well-Architected
        | \b((?:cc\s?|pi|a|c|p)\d\.\d{1,2})\b             # SOC 2
        | \b([a-z][a-z0-9]{1,24}\.\d{1,3})\b             # Security Hub style (IAM.6, S3.1)
        | \b((?:a\d\.)?\d{1,2}(?:\.\d{1,2}){1,3})\b      # PCI DSS / CIS numbering
        ",
    )
    .expect("static regex")
});

/// Lookup keys (see [`ids`]) of the control ids a query names, in the order it names them: the
/// same keys every control stores for its aliases, so `Req. 8.4.2`, `164_308_a_7_i`, `GDPR-32`
/// and `SEC1-BP2` find their control as exactly as its canonical id.
pub fn id_candidates(q: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for caps in ID_PATTERN.captures_iter(q) {
        if let Some(m) = (1..=6).filter_map(|i| caps.get(i)).next() {
            let key = ids::parse(m.as_str()).key;
            if !key.is_empty() && !out.contains(&key) {
                out.push(key);
            }
        }
    }
    out
}

/// The control ids a text names with where each starts (byte offset), as written, and its
/// lookup key, in text order; one entry per occurrence.
pub fn id_candidates_at(q: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for caps in ID_PATTERN.captures_iter(q) {
        if let Some(m) = (1..=6).filter_map(|i| caps.get(i)).next() {
            let key = ids::parse(m.as_str()).key;
            if !key.is_empty() {
                out.push((m.start(), m.as_str().to_string(), key));
            }
        }
    }
    out
}

/// Framework ids a query hints at ("PCI DSS 8.4.2" → pci-dss).
pub fn framework_hints(q: &str) -> Vec<&'static str> {
    let lower = q.to_ascii_lowercase();
    let mut out = Vec::new();
    for (needle, framework) in [
        ("pci", "pci-dss"),
        ("hipaa", "hipaa-sr"),
        ("soc 2", "soc2"),
        ("soc2", "soc2"),
        ("gdpr", "gdpr"),
        ("cis", "cis-aws"),
        ("foundational", "aws-fsbp"),
        ("fsbp", "aws-fsbp"),
        ("security hub", "aws-fsbp"),
        ("well-architected", "aws-wa-security"),
        ("well architected", "aws-wa-security"),
    ] {
        if lower.contains(needle) && !out.contains(&framework) {
            out.push(framework);
        }
    }
    out
}

/// One page of the search answer (a JSON array of [`Hit`]) and the number of hits over all pages,
/// in one statement: controls named by id first (in
/// the order the query names them), then text matches ranked over `kb_search`, the one table that
/// holds every searchable kind with its filters precomputed at load. Text matching uses OR
/// semantics: any query word matches; the ranking rewards documents with more of them, rare words
/// more than common ones. Plain word queries sum BM25-style terms precomputed in `kb_search_terms`
/// (see the migration); queries with phrases use `ts_rank_cd`. Either way the score is `r/(r+1)`
/// of the document's boosted rank `r`, so it lies in [0, 1).
pub async fn search(
    db: &PgPool,
    q: &str,
    framework: Option<&str>,
    service: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(String, i64)> {
    let candidates = id_candidates(q);
    let hints: Vec<String> = framework_hints(q).iter().map(|s| s.to_string()).collect();
    let version = ids::version_in(q);
    let page = sqlx::query!(
        r#"WITH v AS (SELECT id FROM kb_versions WHERE active),
         q AS (
             SELECT tsq, tsq IS NOT NULL AND tsq::text !~ '<' AS pure, tsvector_to_array(to_tsvector('english', $1)) AS lexemes
             FROM (SELECT to_tsquery('english', nullif(regexp_replace(plainto_tsquery('english', $1)::text, ' & ', ' | ', 'g'), '')) AS tsq) t
         ),
         named_all AS (
             SELECT c.id, c.title, c.framework, c.native_id, c.title || ' — ' || c.summary AS snippet,
                    (SELECT min(array_position($5::text[], k)) FROM unnest(c.alias_keys) k) AS pos
             FROM v
             JOIN kb_controls c ON c.version_id = v.id
             JOIN kb_search s ON s.version_id = c.version_id AND s.id = c.id
             WHERE c.alias_keys && $5::text[]
               AND ($2::text IS NULL OR c.framework = $2)
               AND (cardinality($6::text[]) = 0 OR split_part(c.framework, '@', 1) = ANY($6::text[]))
               AND ($7::text IS NULL OR split_part(c.framework, '@', 2) = $7
                    OR split_part(c.framework, '@', 2) LIKE $7 || '.%')
               AND ($3::text IS NULL OR $3 = ANY(s.services))
         ),
         -- A query that names no version means the newest release of each framework.
         named AS (
             SELECT id, title, framework, native_id, snippet, row_number() OVER (ORDER BY pos, framework) AS ord
             FROM (SELECT DISTINCT ON (split_part(framework, '@', 1), pos) * FROM named_all
                   ORDER BY split_part(framework, '@', 1), pos, split_part(framework, '@', 2) COLLATE kb_natural DESC) n
         ),
         scored AS (
             -- Pure OR queries: the sum of the precomputed BM25-style terms (see the migration).
             SELECT t.id, (sum(t.weight) / (sum(t.weight) + 1))::float4::float8 AS score
             FROM q, kb_search_terms t
             WHERE q.pure AND t.version_id = (SELECT id FROM v) AND t.lexeme = ANY(q.lexemes)
             GROUP BY t.id
             UNION ALL
             SELECT s.id, (r / (r + 1))::float4::float8
             FROM q, kb_search s, LATERAL (SELECT ts_rank_cd(s.search, q.tsq)::float8 * s.boost AS r) b
             WHERE NOT q.pure AND s.version_id = (SELECT id FROM v) AND s.search @@ (SELECT tsq FROM q)
         ),
         matched AS (
             SELECT x.id, x.score FROM scored x
             WHERE x.id NOT IN (SELECT id FROM named)
               AND ($2::text IS NULL AND $3::text IS NULL OR EXISTS (
                     SELECT 1 FROM kb_search s WHERE s.version_id = (SELECT id FROM v) AND s.id = x.id
                       AND ($2::text IS NULL OR $2 = ANY(s.frameworks))
                       AND ($3::text IS NULL OR $3 = ANY(s.services))
                       AND ($2::text IS NULL OR $3::text IS NULL OR $2 || '|' || $3 = ANY(s.pairs))))
         ),
         top AS (
             SELECT x.id, x.score FROM matched x
             ORDER BY x.score DESC, x.id COLLATE "C"
             LIMIT $4::bigint + $8::bigint
         ),
         ranked AS (
             SELECT s.kind, s.id, s.title, s.framework, s.native_id, s.body, t.score
             FROM top t JOIN kb_search s ON s.version_id = (SELECT id FROM v) AND s.id = t.id
         ),
         hits AS (
             SELECT 0 AS grp, ord, 'control' AS kind, id, title, framework, native_id, snippet,
                    100.0::float8 AS score, 'id' AS matched
             FROM named
             UNION ALL
             SELECT 1, row_number() OVER (ORDER BY r.score DESC, r.id COLLATE "C"), r.kind, r.id, r.title, r.framework, r.native_id,
                    ts_headline('english', r.body, q.tsq, 'MaxWords=35, MinWords=12, MaxFragments=2, StartSel=**, StopSel=**, FragmentDelimiter=" … "'),
                    r.score, 'text'
             FROM ranked r, q
             ORDER BY 1, 2
             LIMIT $4 OFFSET $8::bigint
         )
         SELECT coalesce(json_agg(json_build_object('kind', kind, 'id', id, 'title', title, 'framework', framework,
                    'native_id', native_id, 'snippet', snippet, 'score', score, 'matched', matched) ORDER BY grp, ord), '[]')::text AS "items!",
                (SELECT count(*) FROM named) + (SELECT count(*) FROM matched) AS "total!"
         FROM hits"#,
        q,
        framework,
        service,
        limit,
        &candidates[..],
        &hints[..],
        version,
        offset
    )
    .fetch_one(db)
    .await?;
    Ok((page.items, page.total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ids_of_every_framework_shape() {
        assert_eq!(id_candidates("PCI DSS 8.4.2 MFA"), vec!["8.4.2"]);
        assert_eq!(
            id_candidates("HIPAA 164.312(a)(2)(iv) encryption"),
            vec!["164.312(a)(2)(iv)"]
        );
        assert_eq!(id_candidates("GDPR Article 32"), vec!["art.32"]);
        assert_eq!(id_candidates("what is Art. 5?"), vec!["art.5"]);
        assert_eq!(
            id_candidates("GDPR-32 and Article 32(1)(a)"),
            vec!["art.32"]
        );
        assert_eq!(id_candidates("PCI Req. 8.4.2"), vec!["8.4.2"]);
        assert_eq!(
            id_candidates("prowler 164_308_a_7_i"),
            vec!["164.308(a)(7)(i)"]
        );
        assert_eq!(id_candidates("SEC1-BP2 keys"), vec!["sec01-bp02"]);
        assert_eq!(id_candidates("SOC 2 CC 6.1"), vec!["cc6.1"]);
        assert_eq!(id_candidates("SOC 2 CC6.1"), vec!["cc6.1"]);
        assert_eq!(id_candidates("Security Hub IAM.6"), vec!["iam.6"]);
        assert_eq!(id_candidates("SEC08-BP02"), vec!["sec08-bp02"]);
        assert!(id_candidates("how do I encrypt s3 buckets").is_empty());
    }

    #[test]
    fn hints_frameworks() {
        assert_eq!(framework_hints("PCI DSS 8.4.2"), vec!["pci-dss"]);
        assert_eq!(framework_hints("HIPAA and GDPR"), vec!["hipaa-sr", "gdpr"]);
    }
}
