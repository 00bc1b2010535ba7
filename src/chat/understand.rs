//! What a question asks: its intent, the frameworks (with versions) it names, the AWS services
//! and the controls it names. Rules over the domain vocabulary (`kb::vocabulary`) and the active
//! KB (framework versions, control aliases), so "PCI-DSS 4", "CIS 3.0", "Security Hub",
//! `164.308(a)(7)(i)`, `Article 32(1)(a)` or `SEC09-BP04` (an old id) are understood as the KB
//! holds them today.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::kb::retrieve::Snapshot;
use crate::kb::vocabulary::{self, Target};
use crate::kb::{KbState, ids, retrieve, search};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    ControlLookup,
    RequirementQuestion,
    Remediation,
    ServiceAssessment,
    CrossFramework,
    FrameworkOverview,
    OutOfScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FrameworkRef {
    /// `pci-dss`
    pub id: String,
    /// `4.0.1`
    pub version: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Understanding {
    pub intent: Intent,
    /// Frameworks the question names, in the order it names them; a version it names, else the
    /// newest in the KB.
    pub frameworks: Vec<FrameworkRef>,
    /// KB AWS service ids (`ec2`, `s3`) the question names or implies.
    pub services: Vec<String>,
    /// Citation ids (`pci-dss:8.4.2`, `cis-aws@3.0.0:1.5`) of the controls the question names.
    pub control_ids: Vec<String>,
}

/// Reads a question against the active KB.
pub async fn understand(kb: &KbState, question: &str) -> anyhow::Result<Understanding> {
    let snapshot = retrieve::active(kb).await?;
    Ok(understand_on(snapshot.as_deref(), question))
}

/// [`understand`] on a snapshot already in hand; without a KB nothing is in scope.
pub fn understand_on(snapshot: Option<&Snapshot>, question: &str) -> Understanding {
    match snapshot {
        Some(s) => read(s, question),
        None => Understanding {
            intent: Intent::OutOfScope,
            frameworks: Vec::new(),
            services: Vec::new(),
            control_ids: Vec::new(),
        },
    }
}

/// A framework the question names, where it names it (byte offset) and the versions it pins.
struct Mention {
    id: String,
    at: usize,
    versions: Vec<String>,
}

/// `v5`, `5.0.0`, `v3.0`, `4`: how people write a framework version after its name.
static VERSION_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^v?(\d{1,4}(?:[.\-]\d{1,3}){0,2})$").unwrap());
/// `Requirement 10`, `Req. 3`: a PCI principal requirement named by its number alone.
static PRINCIPAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:requirement|req\.?)\s+(\d{1,2})\b").unwrap());
/// Numbers that are versions of something else (`TLS 1.2`, `IMDSv2`, `Python 3.12`).
static NOT_AN_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:tls|ssl|tlsv|version|python|node|java|http|https|ipv|v)\s*$").unwrap()
});
/// Requests no security advisor answers, whatever words they contain.
static CREATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:poem|haiku|limerick|song|lyrics|joke|story|recipe|weather|world cup|football|movie)\b").unwrap()
});
/// Words that ask how to fix or do something.
static REMEDIATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:fix|fixes|fixing|remediate|remediation|turn on|switch on|enable|clean (?:it )?up|how (?:do|should|can) (?:i|we)|what should we do|what do we need to turn on|resolve|harden)\b").unwrap()
});
static COMPARE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:compare|comparison|versus|vs\.?|line up|map|mapping|across|difference|differ|equivalent|also give)\b").unwrap()
});
/// A question whether (or how much) a framework obliges something: "does HIPAA require…", "is TLS
/// mandatory…", "do we need…", "how long do we have to…". It stays a requirement question even
/// when it names a service; "what does PCI require of our security groups" assesses the service.
static REQUIREMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:does|do|is|are|must|should|how (?:long|often|many|much))\b|\b(?:mandatory|obligatory|compulsory)\b|\b(?:do|does) (?:we|i|our \w+) (?:need|have to)\b").unwrap()
});
/// Nouns that ask for a list of controls ("which safeguards…", "what rights…").
static LISTING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:which|what|list)\b(?:\s+\S+){0,5}?\s+(?:controls|recommendations|practices|criteria|safeguards|specifications|specs|requirements|articles|rights|obligations|principles|sections|chapters)\b|\b(?:overview|summari[sz]e|summary of|list (?:all|the))\b").unwrap()
});

/// Words that name a control attribute (severity, level, obligation, risk).
static ATTRIBUTE_WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:critical|high|medium|low|level [12]|addressable|required|automated|manual|risk|severity)\b").unwrap()
});

/// The understanding of a question against a KB snapshot (pure: same inputs, same answer).
pub fn read(s: &Snapshot, question: &str) -> Understanding {
    let v = vocabulary::vocabulary();
    let lower = question.to_lowercase();
    let words = vocabulary::words(question);
    let found = v.find(question);

    // Frameworks, each with the byte offset of its first word and any version after it.
    let mut mentions: Vec<Mention> = Vec::new();
    let mut consumed_versions: Vec<String> = Vec::new();
    let offsets = word_offsets(&lower, &words);
    let mut other_framework = false;
    for m in &found {
        match m.target {
            Target::Framework(id) => {
                let mut versions = Vec::new();
                let mut i = m.start + m.len;
                while let Some(w) = words.get(i) {
                    if matches!(
                        w.as_str(),
                        "aws" | "foundations" | "benchmark" | "version" | "dss" | "security"
                    ) {
                        i += 1;
                        continue;
                    }
                    if let Some(caps) = VERSION_WORD.captures(w)
                        && let Some(f) = s
                            .versions(id)
                            .into_iter()
                            .rev()
                            .find(|f| ids::version_matches(&f.version, &caps[1]))
                    {
                        versions.push(f.version.clone());
                        consumed_versions.push(caps[1].to_string());
                    }
                    break;
                }
                let at = offsets.get(m.start).copied().unwrap_or(0);
                match mentions.iter_mut().find(|x| x.id == id) {
                    Some(x) => {
                        for v in versions {
                            if !x.versions.contains(&v) {
                                x.versions.push(v);
                            }
                        }
                    }
                    None => mentions.push(Mention {
                        id: id.to_string(),
                        at,
                        versions,
                    }),
                }
            }
            Target::OtherFramework(_) => other_framework = true,
            Target::Entry(_) => {}
        }
    }
    // "between CIS v3.0.0 and v5.0.0": a `v…` word anywhere names a version of a named framework
    // that has several.
    for w in &words {
        if let Some(rest) = w.strip_prefix('v')
            && VERSION_WORD.is_match(rest)
        {
            for m in mentions.iter_mut() {
                if let Some(f) = s
                    .versions(&m.id)
                    .into_iter()
                    .rev()
                    .find(|f| ids::version_matches(&f.version, rest))
                    && s.versions(&m.id).len() > 1
                    && !m.versions.contains(&f.version)
                {
                    m.versions.push(f.version.clone());
                    consumed_versions.push(rest.to_string());
                }
            }
        }
    }

    let controls = named_controls(s, question, &mentions, &consumed_versions);
    let services = services(s, &found, &words);

    let mut frameworks: Vec<FrameworkRef> = Vec::new();
    for m in &mentions {
        let versions = s.versions(&m.id);
        let pinned: Vec<&str> = if m.versions.is_empty() {
            versions
                .last()
                .map(|f| f.version.as_str())
                .into_iter()
                .collect()
        } else {
            m.versions.iter().map(String::as_str).collect()
        };
        for p in pinned {
            if let Some(f) = versions.iter().find(|f| f.version == p) {
                frameworks.push(FrameworkRef {
                    id: f.id.clone(),
                    version: f.version.clone(),
                    name: f.name.clone(),
                });
            }
        }
    }
    // A named control names its framework too ("What does Req. 8.4.2 require?").
    for &c in &controls {
        let f = s.framework_of(c);
        if !frameworks
            .iter()
            .any(|x| x.id == f.id && x.version == f.version)
        {
            frameworks.push(FrameworkRef {
                id: f.id.clone(),
                version: f.version.clone(),
                name: f.name.clone(),
            });
        }
    }

    let domain = found.iter().any(|m| matches!(m.target, Target::Entry(_)))
        || words.iter().any(|w| v.domain_words.contains(w))
        || !services.is_empty();
    let intent = if (CREATIVE.is_match(&lower) && mentions.is_empty() && controls.is_empty())
        || (other_framework && mentions.is_empty() && controls.is_empty())
        || (!domain && mentions.is_empty() && controls.is_empty())
    {
        Intent::OutOfScope
    } else {
        let distinct: std::collections::BTreeSet<&str> =
            mentions.iter().map(|m| m.id.as_str()).collect();
        if distinct.len() >= 3 || (distinct.len() == 2 && COMPARE.is_match(&lower)) {
            Intent::CrossFramework
        } else if REMEDIATION.is_match(&lower) {
            Intent::Remediation
        } else if !controls.is_empty() && !LISTING.is_match(&lower) {
            Intent::ControlLookup
        } else if LISTING.is_match(&lower)
            && (ATTRIBUTE_WORD.is_match(&lower) || !names_a_service(&found, &words, s))
        {
            Intent::FrameworkOverview
        } else if distinct.len() == 2 {
            Intent::CrossFramework
        } else if !services.is_empty()
            && names_a_service(&found, &words, s)
            // "Does HIPAA require…" stays a requirement question.
            && (mentions.is_empty() || !REQUIREMENT.is_match(&lower))
        {
            Intent::ServiceAssessment
        } else {
            Intent::RequirementQuestion
        }
    };
    Understanding {
        intent,
        frameworks,
        services,
        control_ids: controls.iter().map(|&c| s.citation_id(c)).collect(),
    }
}

/// Byte offset (in the lower-cased text) of each word of [`vocabulary::words`].
fn word_offsets(lower: &str, words: &[String]) -> Vec<usize> {
    let mut out = Vec::with_capacity(words.len());
    let mut from = 0;
    for w in words {
        let at = lower[from..].find(w.as_str()).map_or(from, |i| from + i);
        out.push(at);
        from = at + w.len();
    }
    out
}

/// The controls a question names, in the order it names them. An id belongs to the framework
/// named closest before it (`CIS v3 1.5 … PCI`), else to any framework the question names, else
/// to the only framework that has it; a number that is a version of something else (`TLS 1.2`)
/// or of a named framework (`PCI DSS 4.0`) is not an id.
fn named_controls(
    s: &Snapshot,
    question: &str,
    mentions: &[Mention],
    consumed_versions: &[String],
) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut candidates = search::id_candidates_at(question);
    for caps in PRINCIPAL.captures_iter(question) {
        let m = caps.get(1).expect("group");
        // `Req. 8.4.2` is no principal requirement 8.
        let rest = &question[m.end()..];
        if rest.starts_with('.') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        if !candidates.iter().any(|(at, _, _)| *at == m.start()) {
            candidates.push((m.start(), m.as_str().to_string(), m.as_str().to_string()));
        }
    }
    candidates.sort_by_key(|c| c.0);
    for (at, raw, key) in candidates {
        if consumed_versions.iter().any(|v| v == &raw) {
            continue;
        }
        // `TLS 1.2`, `version 3.0`: a version of something else, whatever framework follows.
        if NOT_AN_ID.is_match(&question[..at]) {
            continue;
        }
        let owner = mentions
            .iter()
            .filter(|m| m.at <= at)
            .max_by_key(|m| m.at)
            .into_iter()
            .chain(mentions.iter().filter(|m| m.at > at));
        let mut chosen: Vec<usize> = Vec::new();
        for m in owner {
            let versions: Vec<Option<String>> = if m.versions.is_empty() {
                vec![None]
            } else {
                m.versions.iter().cloned().map(Some).collect()
            };
            for version in versions {
                let typed = ids::TypedId {
                    framework: framework_static(&m.id),
                    version,
                    key: key.clone(),
                };
                if typed.framework.is_none() {
                    continue;
                }
                chosen.extend(s.resolve(&typed));
            }
            if !chosen.is_empty() {
                break;
            }
        }
        if chosen.is_empty() {
            let typed = ids::parse(&raw);
            let typed = ids::TypedId {
                key: key.clone(),
                ..typed
            };
            let all = s.resolve(&typed);
            let distinct: std::collections::BTreeSet<&str> =
                all.iter().map(|&c| s.framework_of(c).id.as_str()).collect();
            // Unnamed framework: only an id one framework has (a PCI number is also a CIS one).
            if distinct.len() == 1 && (mentions.is_empty() || typed.framework.is_some()) {
                chosen = all;
            }
        }
        for c in chosen {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// The `&'static str` framework id [`ids::TypedId`] wants, for the KB's frameworks.
fn framework_static(id: &str) -> Option<&'static str> {
    [
        "aws-wa-security",
        "aws-fsbp",
        "hipaa-sr",
        "pci-dss",
        "cis-aws",
        "gdpr",
        "soc2",
    ]
    .into_iter()
    .find(|f| *f == id)
}

/// Services the question names (a KB service id or name word) or implies through the vocabulary.
fn services(s: &Snapshot, found: &[vocabulary::PhraseMatch], words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if s.services.iter().any(|x| x.id == id) && !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    };
    for m in found {
        if let Target::Entry(e) = m.target {
            for id in &e.services {
                push(id);
            }
        }
    }
    for (i, w) in words.iter().enumerate() {
        // A service id that is also an English word counts after "AWS"/"Amazon" only
        // ("AWS Backup", not "back up").
        let prefixed = i > 0 && matches!(words[i - 1].as_str(), "aws" | "amazon");
        if s.services.iter().any(|x| &x.id == w) && (prefixed || !is_english(w)) {
            push(w);
        }
    }
    out
}

fn is_english(word: &str) -> bool {
    matches!(
        word,
        "account"
            | "backup"
            | "config"
            | "connect"
            | "transfer"
            | "shield"
            | "inspector"
            | "glue"
            | "organizations"
            | "athena"
    )
}

/// Whether a service is named as such (a service word), not only implied by a topic ("logging").
fn names_a_service(found: &[vocabulary::PhraseMatch], words: &[String], s: &Snapshot) -> bool {
    words
        .iter()
        .any(|w| s.services.iter().any(|x| &x.id == w) && !is_english(w))
        || found.iter().any(|m| match m.target {
            Target::Entry(e) => e.terms.iter().any(|t| e.services.iter().any(|sv| sv == t)),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_and_remediation_wording() {
        assert!(LISTING.is_match("Which HIPAA technical safeguards are addressable?"));
        assert!(LISTING.is_match("What rights do data subjects have under GDPR?"));
        assert!(LISTING.is_match("Give me an overview of PCI DSS Requirement 10."));
        assert!(!LISTING.is_match("What does Req. 8.4.2 require?"));
        assert!(REMEDIATION.is_match("How do I fix Security Hub S3.1?"));
        assert!(!REMEDIATION.is_match("What is CIS 1.5?"));
        assert!(NOT_AN_ID.is_match("flagged TLS "));
    }
}
