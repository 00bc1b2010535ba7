//! What the sentences of a design document state about security, read against the measure
//! table of `data/document-measures.json`, and the findings per framework control that follow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde::Deserialize;

use crate::documents::analysis::{ProseFacts, ProseFinding, Sentence, Status, severity_rank};

static SOURCE: &str = include_str!("../../../data/document-measures.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(rename = "about")]
    _about: String,
    /// Every framework the table maps to, in the order findings are listed.
    frameworks: Vec<String>,
    /// In scope for every AWS design when the user names none.
    baseline_frameworks: Vec<String>,
    /// Services that hold data: naming one makes the data measures relevant.
    data_stores: Vec<String>,
    data_kinds: Vec<DataKind>,
    services: Vec<ServiceNames>,
    measures: Vec<Measure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataKind {
    id: String,
    /// Frameworks this kind of data brings into scope.
    frameworks: Vec<String>,
    phrases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceNames {
    id: String,
    phrases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Measure {
    id: String,
    title: String,
    severity: String,
    relevant: Relevance,
    states: Vec<Group>,
    contradicts: Vec<Group>,
    todo: String,
    controls: BTreeMap<String, Vec<ControlRef>>,
}

/// When a measure that the document never mentions is reported `Silent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Relevance {
    /// Every design needs it (transport security, identity, logging, …).
    Always,
    /// Only a design that stores data (a data store or a kind of sensitive data is named).
    Data,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ControlRef {
    Id(String),
    /// A service-specific control: it applies only when the document names one of `services`.
    Conditional {
        id: String,
        services: Vec<String>,
    },
}

impl ControlRef {
    fn id(&self) -> &str {
        match self {
            ControlRef::Id(id) | ControlRef::Conditional { id, .. } => id,
        }
    }
    fn services(&self) -> &[String] {
        match self {
            ControlRef::Id(_) => &[],
            ControlRef::Conditional { services, .. } => services,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    phrases: Vec<String>,
    /// One of these must be somewhere in the sentence.
    #[serde(default)]
    with: Vec<String>,
    /// None of these may be in the clause of the match.
    #[serde(default)]
    unless: Vec<String>,
}

/// Phrases as token sequences.
type Phrases = Vec<Vec<String>>;

struct CompiledGroup {
    phrases: Phrases,
    with: Phrases,
    unless: Phrases,
}

struct Compiled {
    table: Table,
    services: Vec<(String, Phrases)>,
    data_kinds: Vec<Phrases>,
    states: Vec<Vec<CompiledGroup>>,
    contradicts: Vec<Vec<CompiledGroup>>,
    /// Framework names people write (`HIPAA`, `PCI DSS`, `GDPR`), from the shared vocabulary:
    /// a document that names a regulation puts it in scope.
    framework_names: Vec<(String, Phrases)>,
    /// Every service some control is conditional on: a sentence naming one of them speaks about
    /// that service only.
    specific_services: BTreeSet<String>,
}

fn compile(phrases: &[String]) -> Phrases {
    phrases
        .iter()
        .map(|p| tokens(p))
        .filter(|t| !t.is_empty())
        .collect()
}

fn compile_groups(groups: &[Group]) -> Vec<CompiledGroup> {
    groups
        .iter()
        .map(|g| CompiledGroup {
            phrases: compile(&g.phrases),
            with: compile(&g.with),
            unless: compile(&g.unless),
        })
        .collect()
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let table: Table = serde_json::from_str(SOURCE).expect("data/document-measures.json is valid");
    let services = table
        .services
        .iter()
        .map(|s| (s.id.clone(), compile(&s.phrases)))
        .collect();
    let data_kinds = table
        .data_kinds
        .iter()
        .map(|k| compile(&k.phrases))
        .collect();
    let states = table
        .measures
        .iter()
        .map(|m| compile_groups(&m.states))
        .collect();
    let contradicts = table
        .measures
        .iter()
        .map(|m| compile_groups(&m.contradicts))
        .collect();
    let scoped: BTreeSet<&str> = table
        .data_kinds
        .iter()
        .flat_map(|k| k.frameworks.iter().map(String::as_str))
        .collect();
    let framework_names = crate::kb::vocabulary::vocabulary()
        .frameworks
        .iter()
        .filter(|f| scoped.contains(f.id.as_str()))
        .map(|f| (f.id.clone(), compile(&f.names)))
        .collect();
    let specific_services = table
        .measures
        .iter()
        .flat_map(|m| m.controls.values().flatten())
        .flat_map(|c| c.services().iter().cloned())
        .collect();
    Compiled {
        table,
        services,
        data_kinds,
        states,
        contradicts,
        framework_names,
        specific_services,
    }
});

/// Lower-case words: runs of letters and digits; "n't" is read as "not" so a contraction
/// negates like the full form.
pub(crate) fn tokens(text: &str) -> Vec<String> {
    words(text).into_iter().map(|(w, _)| w).collect()
}

/// Words with the clause each stands in. Clauses end at `,` `;` and before a conjunction that
/// starts a new statement ("and", "but", "however", …), so "MFA is enforced and no shared
/// accounts exist" keeps its "no" away from "MFA".
fn words(text: &str) -> Vec<(String, usize)> {
    const CONJUNCTIONS: &[&str] = &[
        "and", "but", "however", "although", "though", "whereas", "while", "except", "whilst",
        "yet", "unlike",
    ];
    let lower = text
        .to_lowercase()
        .replace(['’', '\''], "'")
        .replace("can't", "can not")
        .replace("cannot", "can not")
        .replace("won't", "will not")
        .replace("n't", " not");
    let mut out = Vec::new();
    let mut clause = 0usize;
    let mut cur = String::new();
    for c in lower.chars() {
        if c.is_alphanumeric() {
            cur.push(c);
            continue;
        }
        if !cur.is_empty() {
            if CONJUNCTIONS.contains(&cur.as_str()) {
                clause += 1;
            }
            out.push((std::mem::take(&mut cur), clause));
        }
        if matches!(c, ',' | ';' | '—' | '–' | '!' | '?') {
            clause += 1;
        }
    }
    if !cur.is_empty() {
        if CONJUNCTIONS.contains(&cur.as_str()) {
            clause += 1;
        }
        out.push((cur, clause));
    }
    out
}

/// Start positions of `phrase` in `ws`.
fn find(ws: &[(String, usize)], phrase: &[String]) -> Vec<usize> {
    if phrase.is_empty() || ws.len() < phrase.len() {
        return Vec::new();
    }
    (0..=ws.len() - phrase.len())
        .filter(|&i| {
            ws[i..i + phrase.len()]
                .iter()
                .zip(phrase)
                .all(|((w, _), p)| w == p)
        })
        .collect()
}

fn contains_any(ws: &[(String, usize)], phrases: &Phrases) -> bool {
    phrases.iter().any(|p| !find(ws, p).is_empty())
}

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "without", "none", "neither", "nor", "disabled", "lack", "lacks",
    "lacking", "missing", "absent",
];

/// Verbs that refuse: a negation after one of them is a double negative ("policies deny
/// requests that do not use TLS" requires TLS).
const REFUSALS: &[&str] = &[
    "deny",
    "denies",
    "denied",
    "reject",
    "rejects",
    "rejected",
    "refuse",
    "refuses",
    "refused",
    "block",
    "blocks",
    "blocked",
    "prevent",
    "prevents",
    "prohibit",
    "prohibits",
    "forbid",
    "forbids",
];

/// Whether a negation stands in the clause of the match `[at, at + len)`, outside the match
/// itself ("without MFA", "is not enabled", "are never rotated"). Set phrases that only look
/// negative ("no exceptions", "not only", "no later than") do not count.
fn negated(ws: &[(String, usize)], at: usize, len: usize) -> bool {
    let clause = ws[at].1;
    ws.iter().enumerate().any(|(i, (w, c))| {
        if *c != clause || (at..at + len).contains(&i) || !NEGATIONS.contains(&w.as_str()) {
            return false;
        }
        if ws[..i]
            .iter()
            .any(|(p, pc)| *pc == clause && REFUSALS.contains(&p.as_str()))
        {
            return false;
        }
        let next = ws.get(i + 1).map(|(n, _)| n.as_str()).unwrap_or("");
        !matches!(
            (w.as_str(), next),
            ("no" | "without", "exception" | "exceptions")
                | ("not", "only")
                | ("no", "later" | "more" | "less" | "longer" | "matter")
        )
    })
}

/// What one sentence says about one measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    States,
    Contradicts,
}

/// Whether a group matches at some position, and whether that match is negated.
fn group_matches(ws: &[(String, usize)], g: &CompiledGroup) -> Vec<bool> {
    if !g.with.is_empty() && !contains_any(ws, &g.with) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for phrase in &g.phrases {
        for at in find(ws, phrase) {
            let clause = ws[at].1;
            let clause_words: Vec<(String, usize)> =
                ws.iter().filter(|(_, c)| *c == clause).cloned().collect();
            if contains_any(&clause_words, &g.unless) {
                continue;
            }
            out.push(negated(ws, at, phrase.len()));
        }
    }
    out
}

fn said(ws: &[(String, usize)], measure: usize) -> Option<Said> {
    let c = &*COMPILED;
    let mut states = false;
    for g in &c.contradicts[measure] {
        for neg in group_matches(ws, g) {
            if neg {
                states = true;
            } else {
                return Some(Said::Contradicts);
            }
        }
    }
    for g in &c.states[measure] {
        for neg in group_matches(ws, g) {
            if neg {
                return Some(Said::Contradicts);
            }
            states = true;
        }
    }
    states.then_some(Said::States)
}

/// What one sentence mentions.
struct Reading {
    services: BTreeSet<String>,
    said: Vec<Option<Said>>,
}

fn status_rank(s: Status) -> u8 {
    match s {
        Status::Contradicted => 0,
        Status::Silent => 1,
        _ => 2,
    }
}

pub(crate) fn analyse(
    sentences: &[Sentence],
    frameworks: Option<&[String]>,
) -> (ProseFacts, Vec<ProseFinding>) {
    let c = &*COMPILED;
    let t = &c.table;
    let mut services = BTreeSet::new();
    let mut kinds = vec![false; t.data_kinds.len()];
    let mut named: BTreeSet<&str> = BTreeSet::new();
    let readings: Vec<Reading> = sentences
        .iter()
        .map(|s| {
            let ws = words(&s.text);
            let mine: BTreeSet<String> = c
                .services
                .iter()
                .filter(|(_, p)| contains_any(&ws, p))
                .map(|(id, _)| id.clone())
                .collect();
            services.extend(mine.iter().cloned());
            for (k, phrases) in c.data_kinds.iter().enumerate() {
                kinds[k] |= contains_any(&ws, phrases);
            }
            for (id, phrases) in &c.framework_names {
                if contains_any(&ws, phrases) {
                    named.insert(id);
                }
            }
            Reading {
                services: mine,
                said: (0..t.measures.len()).map(|m| said(&ws, m)).collect(),
            }
        })
        .collect();

    let data_kinds: Vec<String> = t
        .data_kinds
        .iter()
        .zip(&kinds)
        .filter(|(_, found)| **found)
        .map(|(k, _)| k.id.clone())
        .collect();
    let scope: Vec<String> = match frameworks {
        Some(asked) => {
            let mut out: Vec<String> = Vec::new();
            for f in asked {
                if !out.contains(f) {
                    out.push(f.clone());
                }
            }
            out
        }
        None => {
            let mut wanted: BTreeSet<&str> =
                t.baseline_frameworks.iter().map(String::as_str).collect();
            for (k, found) in t.data_kinds.iter().zip(&kinds) {
                if *found {
                    wanted.extend(k.frameworks.iter().map(String::as_str));
                }
            }
            wanted.extend(named.iter().copied());
            t.frameworks
                .iter()
                .filter(|f| wanted.contains(f.as_str()))
                .cloned()
                .collect()
        }
    };
    let stores_data = !data_kinds.is_empty() || t.data_stores.iter().any(|s| services.contains(s));

    let stated: Vec<String> = t
        .measures
        .iter()
        .enumerate()
        .filter(|(m, _)| {
            let said: Vec<Said> = readings.iter().filter_map(|r| r.said[*m]).collect();
            said.contains(&Said::States) && !said.contains(&Said::Contradicts)
        })
        .map(|(_, m)| m.id.clone())
        .collect();

    let mut findings = Vec::new();
    for fw in &scope {
        let base = fw.split_once('@').map_or(fw.as_str(), |(b, _)| b);
        for (m, measure) in t.measures.iter().enumerate() {
            let Some(controls) = measure.controls.get(base) else {
                continue;
            };
            let mentioned = readings.iter().any(|r| r.said[m].is_some());
            if measure.relevant == Relevance::Data && !stores_data && !mentioned {
                continue;
            }
            for control in controls {
                let id = control.id();
                // A versioned request (`cis-aws@5.0.0`) keeps that version's controls only.
                if fw.contains('@') && id.split_once(':').is_none_or(|(p, _)| p != fw) {
                    continue;
                }
                let cond = control.services();
                if !cond.is_empty() && !cond.iter().any(|s| services.contains(s)) {
                    continue;
                }
                findings.push(finding(sentences, &readings, m, measure, id, cond, c));
            }
        }
    }
    findings.sort_by_key(|f| (status_rank(f.status), severity_rank(&f.severity)));

    let facts = ProseFacts {
        services: services.into_iter().collect(),
        data_kinds,
        measures: stated,
        frameworks: scope,
        sentences: sentences.len(),
        pages: sentences.iter().filter_map(|s| s.page).max(),
    };
    (facts, findings)
}

fn finding(
    sentences: &[Sentence],
    readings: &[Reading],
    m: usize,
    measure: &Measure,
    id: &str,
    cond: &[String],
    c: &Compiled,
) -> ProseFinding {
    // For a service-specific control, a sentence about another service does not count; a
    // sentence naming no specific service ("all data is encrypted at rest") does.
    let counts = |r: &Reading| {
        cond.is_empty()
            || r.services.iter().any(|s| cond.contains(s))
            || !r.services.iter().any(|s| c.specific_services.contains(s))
    };
    let first = |want: Said| {
        readings
            .iter()
            .position(|r| r.said[m] == Some(want) && counts(r))
    };
    let title = &measure.title;
    let (status, quote, reason) = if let Some(i) = first(Said::Contradicts) {
        let also = if first(Said::States).is_some() {
            "; another passage states it, but a contradiction decides until the document is consistent"
        } else {
            ""
        };
        (
            Status::Contradicted,
            Some(sentences[i].clone()),
            format!(
                "The document says the opposite of {title}{also}. {}",
                measure.todo
            ),
        )
    } else if let Some(i) = first(Said::States) {
        (
            Status::Addressed,
            Some(sentences[i].clone()),
            format!("The document states {title}, which this control asks for."),
        )
    } else {
        let elsewhere = if readings.iter().any(|r| r.said[m].is_some()) {
            format!(" for {}", cond.join(" or "))
        } else {
            String::new()
        };
        (
            Status::Silent,
            None,
            format!(
                "The document says nothing about {title}{elsewhere}. {}",
                measure.todo
            ),
        )
    };
    ProseFinding {
        control: id.to_string(),
        status,
        measure: measure.id.clone(),
        severity: measure.severity.clone(),
        quote,
        reason,
    }
}

/// Every control id the table can emit, sorted.
pub(crate) fn control_ids() -> Vec<String> {
    let ids: BTreeSet<String> = COMPILED
        .table
        .measures
        .iter()
        .flat_map(|m| m.controls.values().flatten())
        .map(|c| c.id().to_string())
        .collect();
    ids.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use super::*;

    fn said_of(text: &str, measure: &str) -> Option<Said> {
        let m = COMPILED
            .table
            .measures
            .iter()
            .position(|x| x.id == measure)
            .expect("known measure");
        said(&words(text), m)
    }

    #[test]
    fn every_control_id_exists_in_the_kb() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/compliance");
        // (framework, version) → the native ids of its controls.
        let mut kb: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            let Ok(fw) = std::fs::read_to_string(dir.join("framework.json")) else {
                continue;
            };
            let fw: serde_json::Value = serde_json::from_str(&fw).unwrap();
            let controls: Vec<serde_json::Value> =
                serde_json::from_str(&std::fs::read_to_string(dir.join("controls.json")).unwrap())
                    .unwrap();
            kb.entry((
                fw["id"].as_str().unwrap().to_string(),
                fw["version"].as_str().unwrap().to_string(),
            ))
            .or_default()
            .extend(
                controls
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_string()),
            );
        }
        let ids = control_ids();
        assert!(ids.len() > 40, "{ids:?}");
        for id in ids {
            let (fw, native) = id.split_once(':').expect("framework:native");
            let (base, version) = fw.split_once('@').map_or((fw, None), |(b, v)| (b, Some(v)));
            let releases: Vec<_> = kb.keys().filter(|(f, _)| f == base).collect();
            assert!(!releases.is_empty(), "{id}: no framework {base} in the KB");
            let release = match version {
                Some(v) => releases
                    .into_iter()
                    .find(|(_, rv)| rv == v)
                    .unwrap_or_else(|| panic!("{id}: no version {v} of {base}")),
                None => {
                    assert_eq!(
                        releases.len(),
                        1,
                        "{id}: {base} has several versions in the KB; name one"
                    );
                    releases[0]
                }
            };
            assert!(
                kb[release].contains(native),
                "{id}: {native:?} is not a control of {base} {}",
                release.1
            );
        }
    }

    #[test]
    fn services_data_kinds_and_frameworks_are_known() {
        let services: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("data/compliance/common/aws_services.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let known: BTreeSet<&str> = services.iter().map(|s| s["id"].as_str().unwrap()).collect();
        let t = &COMPILED.table;
        for s in &t.services {
            assert!(known.contains(s.id.as_str()), "unknown service {}", s.id);
        }
        for s in t.data_stores.iter().chain(
            t.measures
                .iter()
                .flat_map(|m| m.controls.values().flatten())
                .flat_map(|c| c.services().iter()),
        ) {
            assert!(known.contains(s.as_str()), "unknown service {s}");
        }
        for m in &t.measures {
            for fw in m.controls.keys() {
                assert!(
                    t.frameworks.contains(fw),
                    "{}: unknown framework {fw}",
                    m.id
                );
            }
            assert!(severity_rank(&m.severity) < 4 || m.severity == "informational");
            assert!(!m.states.is_empty(), "{} has no phrases", m.id);
        }
        for k in &t.data_kinds {
            for fw in &k.frameworks {
                assert!(t.frameworks.contains(fw));
            }
        }
        assert_eq!(COMPILED.framework_names.len(), 3);
    }

    #[test]
    fn negation_within_the_sentence() {
        use Said::*;
        let cases = [
            (
                "All S3 buckets are encrypted at rest with SSE-KMS.",
                "encryption_at_rest",
                Some(States),
            ),
            (
                "We do not encrypt the RDS database.",
                "encryption_at_rest",
                Some(Contradicts),
            ),
            (
                "Encryption at rest is not enabled on the EBS volumes.",
                "encryption_at_rest",
                Some(Contradicts),
            ),
            (
                "The reports bucket stores files unencrypted.",
                "encryption_at_rest",
                Some(Contradicts),
            ),
            (
                "Internal traffic uses plain HTTP.",
                "encryption_in_transit",
                Some(Contradicts),
            ),
            (
                "Services talk over HTTP (not HTTPS).",
                "encryption_in_transit",
                Some(Contradicts),
            ),
            (
                "All APIs are served over HTTPS with TLS 1.2.",
                "encryption_in_transit",
                Some(States),
            ),
            (
                "No data leaves the VPC unencrypted.",
                "encryption_in_transit",
                None,
            ),
            (
                "KMS keys are never rotated.",
                "key_management",
                Some(Contradicts),
            ),
            (
                "Administrators sign in without MFA.",
                "mfa",
                Some(Contradicts),
            ),
            (
                "MFA isn't enforced for operators.",
                "mfa",
                Some(Contradicts),
            ),
            (
                "MFA is required for every user, with no exceptions.",
                "mfa",
                Some(States),
            ),
            (
                "MFA is enforced and no shared accounts are used.",
                "mfa",
                Some(States),
            ),
            (
                "MFA is enforced and no shared accounts are used.",
                "least_privilege",
                Some(States),
            ),
            (
                "Operators use shared credentials for the database.",
                "least_privilege",
                Some(Contradicts),
            ),
            (
                "Backups are not taken.",
                "backups_recovery",
                Some(Contradicts),
            ),
            (
                "Nightly snapshots are kept for 35 days.",
                "backups_recovery",
                Some(States),
            ),
            (
                "The database is publicly accessible.",
                "network_segmentation",
                Some(Contradicts),
            ),
            (
                "No bucket is publicly accessible.",
                "network_segmentation",
                Some(States),
            ),
            (
                "Bucket policies deny requests that do not use TLS.",
                "encryption_in_transit",
                Some(States),
            ),
            (
                "The application load balancer is publicly accessible.",
                "network_segmentation",
                None,
            ),
            (
                "Logs are retained indefinitely.",
                "data_retention",
                Some(Contradicts),
            ),
            (
                "CloudTrail logging is disabled in staging.",
                "logging_monitoring",
                Some(Contradicts),
            ),
            (
                "Traffic between services is encrypted with TLS.",
                "encryption_at_rest",
                None,
            ),
            (
                "The RDS instance is encrypted.",
                "encryption_at_rest",
                Some(States),
            ),
            (
                "The RDS instance is encrypted.",
                "encryption_in_transit",
                None,
            ),
        ];
        for (text, measure, want) in cases {
            assert_eq!(said_of(text, measure), want, "{text} / {measure}");
        }
    }

    #[test]
    fn tokens_read_contractions_and_hyphens() {
        assert_eq!(
            tokens("We don't use at-rest"),
            vec!["we", "do", "not", "use", "at", "rest"]
        );
        assert_eq!(tokens("TLS 1.2"), vec!["tls", "1", "2"]);
    }
}
