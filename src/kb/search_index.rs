//! The search of [`super::search`], answered from memory. A KB version never changes once
//! active, so its search table (`kb_search`, `kb_search_terms`: a few MB for the shipped KB) is
//! read once per version into this index, and a search costs one small statement (the active
//! version and PostgreSQL's own lexemes of the query, so words are stemmed exactly as the index
//! was) plus a sum over a few hundred postings here, instead of ranking in PostgreSQL on every
//! request. Queries with phrases (hyphenated words), which the index cannot rank the way
//! `ts_rank_cd` does, still go to [`super::search::search`].
//!
//! The answers are those of the SQL statement (the same named-id rules, filters, BM25-style
//! scores and order; a test compares both over the evaluation questions); snippets are cut here
//! at word boundaries around the matched words.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use super::ids;
use super::search::{Hit, framework_hints, id_candidates};

struct Doc {
    kind: String,
    id: String,
    title: String,
    framework: Option<String>,
    native_id: Option<String>,
    body: String,
    frameworks: Vec<String>,
    services: Vec<String>,
    pairs: Vec<String>,
    /// Controls: title and summary, the snippet of a control named by id.
    named_snippet: Option<String>,
}

/// One KB version's search data.
pub struct SearchIndex {
    version: i64,
    docs: Vec<Doc>,
    /// lexeme → (document, precomputed BM25-style term).
    postings: HashMap<String, Vec<(u32, f64)>>,
    /// Alias lookup key (see [`ids`]) → controls that answer to it.
    aliases: HashMap<String, Vec<u32>>,
    /// Lower-case word of a body → its lexeme, as PostgreSQL's `english` configuration makes it.
    lexemes: HashMap<String, String>,
}

/// The index of the active version, loaded on first use and replaced when another version
/// becomes active.
#[derive(Default)]
pub struct IndexSlot {
    current: RwLock<Option<Arc<SearchIndex>>>,
    loading: tokio::sync::Mutex<()>,
}

/// What PostgreSQL says about a query: the active version and the query's lexemes, or that the
/// query has phrases.
struct Parsed {
    version: Option<i64>,
    lexemes: Vec<String>,
    phrases: bool,
}

impl IndexSlot {
    /// The page and total of [`super::search::search`] for the same arguments.
    pub async fn search(
        &self,
        db: &PgPool,
        q: &str,
        framework: Option<&str>,
        service: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> sqlx::Result<(String, i64)> {
        let parsed = sqlx::query!(
            r#"SELECT (SELECT id FROM kb_versions WHERE active) AS version,
                      tsvector_to_array(to_tsvector('english', $1)) AS "lexemes!",
                      coalesce(tsq::text ~ '<', false) AS "phrases!"
               FROM (SELECT to_tsquery('english', nullif(regexp_replace(plainto_tsquery('english', $1)::text, ' & ', ' | ', 'g'), '')) AS tsq) t"#,
            q
        )
        .fetch_one(db)
        .await?;
        let parsed = Parsed {
            version: parsed.version,
            lexemes: parsed.lexemes,
            phrases: parsed.phrases,
        };
        let Some(version) = parsed.version else {
            return Ok(("[]".into(), 0));
        };
        if parsed.phrases {
            return super::search::search(db, q, framework, service, limit, offset).await;
        }
        let index = self.index(db, version).await?;
        Ok(index.search(q, &parsed.lexemes, framework, service, limit, offset))
    }

    async fn index(&self, db: &PgPool, version: i64) -> sqlx::Result<Arc<SearchIndex>> {
        if let Some(index) = self.current(version) {
            return Ok(index);
        }
        // One load per version, however many searches arrive meanwhile.
        let _loading = self.loading.lock().await;
        if let Some(index) = self.current(version) {
            return Ok(index);
        }
        let index = Arc::new(SearchIndex::load(db, version).await?);
        *self.current.write().expect("index lock") = Some(index.clone());
        Ok(index)
    }

    fn current(&self, version: i64) -> Option<Arc<SearchIndex>> {
        self.current
            .read()
            .expect("index lock")
            .as_ref()
            .filter(|index| index.version == version)
            .cloned()
    }
}

impl SearchIndex {
    async fn load(db: &PgPool, version: i64) -> sqlx::Result<Self> {
        let rows = sqlx::query!(
            r#"SELECT s.kind, s.id, s.title, s.framework, s.native_id, s.body, s.frameworks, s.services, s.pairs,
                      c.alias_keys AS "alias_keys?", c.title || ' — ' || c.summary AS "named_snippet?"
               FROM kb_search s
               LEFT JOIN kb_controls c ON c.version_id = s.version_id AND c.id = s.id
               WHERE s.version_id = $1
               ORDER BY s.id"#,
            version
        )
        .fetch_all(db)
        .await?;
        let mut docs = Vec::with_capacity(rows.len());
        let mut by_id = HashMap::with_capacity(rows.len());
        let mut aliases: HashMap<String, Vec<u32>> = HashMap::new();
        let mut words = HashSet::new();
        for (n, row) in rows.into_iter().enumerate() {
            let n = n as u32;
            by_id.insert(row.id.clone(), n);
            if row.kind == "control" {
                for key in row.alias_keys.unwrap_or_default() {
                    aliases.entry(key).or_default().push(n);
                }
            }
            words.extend(body_words(&row.body).map(|(_, w)| w.to_lowercase()));
            docs.push(Doc {
                kind: row.kind,
                id: row.id,
                title: row.title,
                framework: row.framework,
                native_id: row.native_id,
                body: row.body,
                frameworks: row.frameworks,
                services: row.services,
                pairs: row.pairs,
                named_snippet: row.named_snippet,
            });
        }
        let mut postings: HashMap<String, Vec<(u32, f64)>> = HashMap::new();
        let terms = sqlx::query!(
            "SELECT lexeme, id, weight FROM kb_search_terms WHERE version_id = $1",
            version
        )
        .fetch_all(db)
        .await?;
        for term in terms {
            if let Some(&n) = by_id.get(&term.id) {
                postings
                    .entry(term.lexeme)
                    .or_default()
                    .push((n, term.weight));
            }
        }
        // Each body word stemmed by PostgreSQL once, so snippets mark the words a search matched.
        let words: Vec<String> = words.into_iter().collect();
        let lexemes = sqlx::query!(
            r#"SELECT w AS "word!", tsvector_to_array(to_tsvector('english', w)) AS "lexemes!"
               FROM unnest($1::text[]) w"#,
            &words[..]
        )
        .fetch_all(db)
        .await?
        .into_iter()
        .filter_map(|row| match row.lexemes.as_slice() {
            [one] => Some((row.word, one.clone())),
            _ => None,
        })
        .collect();
        Ok(Self {
            version,
            docs,
            postings,
            aliases,
            lexemes,
        })
    }

    fn search(
        &self,
        q: &str,
        lexemes: &[String],
        framework: Option<&str>,
        service: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> (String, i64) {
        let named = self.named(q, framework, service);
        let named_ids: HashSet<u32> = named.iter().copied().collect();

        let mut sums: HashMap<u32, f64> = HashMap::new();
        for lexeme in lexemes {
            for &(doc, weight) in self.postings.get(lexeme).into_iter().flatten() {
                *sums.entry(doc).or_default() += weight;
            }
        }
        let mut matched: Vec<(u32, f64)> = sums
            .into_iter()
            .filter(|(doc, _)| !named_ids.contains(doc) && self.passes(*doc, framework, service))
            // float4 precision, as the SQL answer has: equal scores order by id.
            .map(|(doc, r)| (doc, (r / (r + 1.0)) as f32 as f64))
            .collect();
        let total = (named.len() + matched.len()) as i64;
        matched.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.docs[a.0 as usize].id.cmp(&self.docs[b.0 as usize].id))
        });

        let words: HashSet<&str> = lexemes.iter().map(String::as_str).collect();
        let named_hits = named.iter().map(|&doc| {
            let d = &self.docs[doc as usize];
            self.hit(d, d.named_snippet.clone().unwrap_or_default(), 100.0, "id")
        });
        let text_hits = matched.iter().map(|&(doc, score)| {
            let d = &self.docs[doc as usize];
            self.hit(d, self.snippet(&d.body, &words), score, "text")
        });
        let page: Vec<Hit> = named_hits
            .chain(text_hits)
            .skip(offset.max(0) as usize)
            .take(limit.max(0) as usize)
            .collect();
        let items = serde_json::to_string(&page).expect("hits serialize");
        (items, total)
    }

    /// Controls the query names by id, in the order it names them; with no version named, the
    /// newest release of each framework.
    fn named(&self, q: &str, framework: Option<&str>, service: Option<&str>) -> Vec<u32> {
        let candidates = id_candidates(q);
        if candidates.is_empty() {
            return Vec::new();
        }
        let hints = framework_hints(q);
        let version = ids::version_in(q);
        // (position of the first key the control answers to, document)
        let mut found: Vec<(usize, u32)> = Vec::new();
        for (pos, key) in candidates.iter().enumerate() {
            for &doc in self.aliases.get(key).into_iter().flatten() {
                if found.iter().any(|&(_, d)| d == doc) {
                    continue;
                }
                let d = &self.docs[doc as usize];
                let fw = d.framework.as_deref().unwrap_or_default();
                let (base, release) = fw.split_once('@').unwrap_or((fw, ""));
                let keep = framework.is_none_or(|f| f == fw)
                    && (hints.is_empty() || hints.contains(&base))
                    && version.as_deref().is_none_or(|v| {
                        release == v || release.strip_prefix(v).is_some_and(|r| r.starts_with('.'))
                    })
                    && service.is_none_or(|s| d.services.iter().any(|x| x == s));
                if keep {
                    found.push((pos, doc));
                }
            }
        }
        // One control per (framework, position): the newest release.
        let mut newest: Vec<(usize, u32)> = Vec::new();
        for (pos, doc) in found {
            let (base, release) = self.release(doc);
            match newest
                .iter_mut()
                .find(|(p, d)| *p == pos && self.release(*d).0 == base)
            {
                Some(slot) => {
                    if ids::compare_versions(release, self.release(slot.1).1).is_gt() {
                        slot.1 = doc;
                    }
                }
                None => newest.push((pos, doc)),
            }
        }
        newest.sort_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                self.docs[a.1 as usize]
                    .framework
                    .cmp(&self.docs[b.1 as usize].framework)
            })
        });
        newest.into_iter().map(|(_, doc)| doc).collect()
    }

    fn release(&self, doc: u32) -> (&str, &str) {
        let fw = self.docs[doc as usize]
            .framework
            .as_deref()
            .unwrap_or_default();
        fw.split_once('@').unwrap_or((fw, ""))
    }

    fn passes(&self, doc: u32, framework: Option<&str>, service: Option<&str>) -> bool {
        let d = &self.docs[doc as usize];
        framework.is_none_or(|f| d.frameworks.iter().any(|x| x == f))
            && service.is_none_or(|s| d.services.iter().any(|x| x == s))
            && match (framework, service) {
                (Some(f), Some(s)) => {
                    let pair = format!("{f}|{s}");
                    d.pairs.contains(&pair)
                }
                _ => true,
            }
    }

    fn hit(&self, d: &Doc, snippet: String, score: f64, matched: &str) -> Hit {
        Hit {
            kind: d.kind.clone(),
            id: d.id.clone(),
            title: d.title.clone(),
            framework: d.framework.clone(),
            native_id: d.native_id.clone(),
            snippet,
            score,
            matched: matched.into(),
        }
    }

    /// Up to two passages of at most [`SNIPPET_WORDS`] words around the words the query matched,
    /// each matched word between `**`, passages joined by ` … `; the start of the text when no
    /// word of it matched (the document matched through its framework, parent or checks).
    fn snippet(&self, body: &str, query: &HashSet<&str>) -> String {
        let words: Vec<(usize, &str)> = body_words(body).collect();
        let hit: Vec<bool> = words
            .iter()
            .map(|(_, w)| {
                self.lexemes
                    .get(&w.to_lowercase())
                    .is_some_and(|l| query.contains(l.as_str()))
            })
            .collect();
        let mut windows = best_windows(&hit, SNIPPET_WORDS, 2);
        if windows.is_empty() {
            windows.push(0..words.len().min(SNIPPET_WORDS));
        }
        let mut out = String::new();
        for (n, window) in windows.iter().enumerate() {
            if window.is_empty() {
                continue;
            }
            if n > 0 {
                out.push_str(" … ");
            }
            let first = words[window.start].0;
            let (last_at, last) = words[window.end - 1];
            let mut at = first;
            for i in window.clone() {
                let (start, word) = words[i];
                out.push_str(&body[at..start]);
                if hit[i] {
                    out.push_str("**");
                    out.push_str(word);
                    out.push_str("**");
                } else {
                    out.push_str(word);
                }
                at = start + word.len();
            }
            debug_assert_eq!(at, last_at + last.len());
        }
        out
    }
}

const SNIPPET_WORDS: usize = 35;

/// Words of a text with their byte offsets: runs of letters and digits.
fn body_words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

/// Up to `count` non-overlapping windows of at most `size` words with the most matched words,
/// in text order, each starting at a matched word a few words early for context.
fn best_windows(hit: &[bool], size: usize, count: usize) -> Vec<std::ops::Range<usize>> {
    let mut taken: Vec<std::ops::Range<usize>> = Vec::new();
    for _ in 0..count {
        let mut best: Option<(usize, std::ops::Range<usize>)> = None;
        for (i, _) in hit.iter().enumerate().filter(|(_, h)| **h) {
            let start = i.saturating_sub(3);
            let end = (start + size).min(hit.len());
            let range = start..end;
            if taken
                .iter()
                .any(|t| t.start < range.end && range.start < t.end)
            {
                continue;
            }
            let n = hit[range.clone()].iter().filter(|h| **h).count();
            if best.as_ref().is_none_or(|(m, _)| n > *m) {
                best = Some((n, range));
            }
        }
        match best {
            Some((_, range)) => taken.push(range),
            None => break,
        }
    }
    taken.sort_by_key(|r| r.start);
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_densest_matches_in_text_order() {
        let mut hit = vec![false; 100];
        hit[5] = true;
        hit[80] = true;
        hit[82] = true;
        let w = best_windows(&hit, 10, 2);
        assert_eq!(w, vec![2..12, 77..87]);
        assert!(best_windows(&[false; 10], 10, 2).is_empty());
    }

    #[test]
    fn body_words_keep_offsets() {
        let words: Vec<_> = body_words("Encrypt S3 buckets, at rest.").collect();
        assert_eq!(
            words,
            vec![
                (0, "Encrypt"),
                (8, "S3"),
                (11, "buckets"),
                (20, "at"),
                (23, "rest")
            ]
        );
    }
}
