//! Retrieval for a question ([`retrieve`]: the controls to cite, each with why) and the built-in
//! answerer ([`compose`]: offline and deterministic), and the check of any answer text against
//! the KB ([`verify`]): every control id it mentions must exist.
//!
//! Citations are written in the text as `[<citation id>]` (`[pci-dss:8.4.2]`,
//! `[cis-aws@3.0.0:1.5]`), the form [`verify`] recognises, so the citations of a composed answer
//! are exactly the controls its text mentions.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex};

use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::understand::{Intent, Understanding};
use crate::kb::retrieve::Snapshot;
use crate::kb::vocabulary::{self, Target};
use crate::kb::{KbState, ids, retrieve as kb_retrieve};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Citation {
    /// Citation id; resolves with `GET /api/v1/kb/controls/{id}`.
    pub id: String,
    /// `pci-dss`
    pub framework: String,
    /// `4.0.1`
    pub version: String,
    /// Native id, `8.4.2`.
    pub control_id: String,
    pub title: String,
    pub url: String,
    /// Why this control is cited for this question, one sentence.
    pub reason: String,
}

/// A control retrieval chose, and why.
#[derive(Debug, Clone)]
struct Pick {
    control: usize,
    reason: String,
}

/// What retrieval found; opaque to the API layer.
pub struct Grounding {
    snapshot: Option<Arc<Snapshot>>,
    picks: Vec<Pick>,
    /// Frameworks the question named that hold nothing on its subject, and where the KB does.
    gaps: Vec<String>,
}

impl Grounding {
    fn empty(snapshot: Option<Arc<Snapshot>>) -> Self {
        Self {
            snapshot,
            picks: Vec::new(),
            gaps: Vec::new(),
        }
    }

    /// The KB passages as plain text for an LLM prompt: each control with its citation id, title,
    /// summary, obligation/level, mapped checks and remediation steps.
    pub fn context(&self) -> String {
        let Some(s) = &self.snapshot else {
            return String::new();
        };
        let mut out = String::new();
        for p in &self.picks {
            let c = &s.controls[p.control];
            let f = s.framework_of(p.control);
            let _ = writeln!(
                out,
                "[{}] {} {} — {}",
                s.citation_id(p.control),
                f.name,
                c.native_id,
                c.title
            );
            let _ = writeln!(out, "Summary: {}", c.summary);
            if let Some(st) = s.standing(p.control) {
                let _ = writeln!(out, "Standing: {st}");
            }
            if let Some(parent) = c.parent {
                let _ = writeln!(
                    out,
                    "Part of: [{}] {}",
                    s.citation_id(parent),
                    s.controls[parent].title
                );
            }
            let _ = writeln!(out, "Why retrieved: {}", p.reason);
            for (k, strength) in evidence(s, p.control) {
                let check = &s.checks[k];
                let _ = writeln!(
                    out,
                    "Check ({strength}): {} — {}",
                    check.title, check.description
                );
                if let Some(r) = check.remediation {
                    let r = &s.remediations[r];
                    let _ = writeln!(out, "Remediation: {}", r.title);
                    for step in &r.steps {
                        let _ = writeln!(out, "  - {step}");
                    }
                    if let Some(cli) = &r.cli {
                        let _ = writeln!(out, "  CLI: {}", cli.replace('\n', " ; "));
                    }
                }
            }
            out.push('\n');
        }
        for gap in &self.gaps {
            let _ = writeln!(out, "Note: {gap}");
        }
        out
    }

    /// The citation for a control the grounding holds, by citation id.
    pub fn citation(&self, id: &str) -> Option<Citation> {
        let s = self.snapshot.as_ref()?;
        self.picks
            .iter()
            .find(|p| s.citation_id(p.control) == id)
            .map(|p| citation(s, p.control, &p.reason))
    }

    /// [`verify_on`] the KB version this grounding was made from.
    pub fn verify(&self, text: &str) -> (Vec<Citation>, Vec<String>) {
        verify_on(self.snapshot.as_deref(), text)
    }
}

fn citation(s: &Snapshot, control: usize, reason: &str) -> Citation {
    let c = &s.controls[control];
    let f = s.framework_of(control);
    Citation {
        id: s.citation_id(control),
        framework: f.id.clone(),
        version: f.version.clone(),
        control_id: c.native_id.clone(),
        title: c.title.clone(),
        url: c.url.clone(),
        reason: reason.to_string(),
    }
}

/// Checks that evidence a control (direct first, then partial), with their strength.
fn evidence(s: &Snapshot, control: usize) -> Vec<(usize, &str)> {
    let mut out: Vec<(usize, &str)> = s.controls[control]
        .checks
        .iter()
        .filter(|(_, st)| st != "supporting")
        .map(|(k, st)| (*k, st.as_str()))
        .collect();
    out.sort_by_key(|(k, st)| (*st != "direct", s.checks[*k].id.clone()));
    out
}

/// Retrieves the controls that answer a question: those it names, then ranked text matches in the
/// frameworks it names (or all, newest versions), with the hierarchy (a group's children, filtered
/// by the attributes the question names) and the graph (related controls in other named
/// frameworks).
pub async fn retrieve(
    kb: &KbState,
    question: &str,
    u: &Understanding,
) -> anyhow::Result<Grounding> {
    let snapshot = kb_retrieve::active(kb).await?;
    Ok(ground_on(snapshot, question, u))
}

/// [`retrieve`] on the snapshot the question was understood on: an answer stays on one KB
/// version even if another is activated meanwhile, and costs no further database round trip.
pub fn ground_on(snapshot: Option<Arc<Snapshot>>, question: &str, u: &Understanding) -> Grounding {
    match snapshot {
        Some(s) => ground(s, question, u),
        None => Grounding::empty(None),
    }
}

/// Framework ratio thresholds: a control is cited beside the best one when it scores at least
/// this share of it.
const KEEP_RATIO: f64 = 0.8;

/// [`retrieve`] on a snapshot (pure).
pub fn ground(s: Arc<Snapshot>, question: &str, u: &Understanding) -> Grounding {
    let mut g = Grounding::empty(Some(s.clone()));
    if u.intent == Intent::OutOfScope {
        return g;
    }
    let v = vocabulary::vocabulary();
    let found = v.find(question);

    // Frameworks in scope: those named (at the versions named), else the newest of each.
    let named_fw: Vec<usize> = u
        .frameworks
        .iter()
        .filter_map(|f| {
            s.frameworks
                .iter()
                .position(|x| x.id == f.id && x.version == f.version)
        })
        .collect();
    let scope: Vec<usize> = if named_fw.is_empty() {
        (0..s.frameworks.len())
            .filter(|&f| s.is_newest(f))
            .collect()
    } else {
        named_fw.clone()
    };
    let implied: BTreeSet<&str> = found
        .iter()
        .filter_map(|m| match m.target {
            Target::Entry(e) => Some(e.frameworks.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .collect();

    // Query stems: the question's own words, the vocabulary's KB wording at half weight, the
    // services named. Framework names and named ids are not topic words.
    let mut skip: BTreeSet<String> = BTreeSet::new();
    for m in &found {
        if let Target::Framework(_) | Target::OtherFramework(_) = m.target {
            let ws = vocabulary::words(question);
            for w in ws.iter().skip(m.start).take(m.len) {
                skip.extend(vocabulary::terms(w));
            }
        }
    }
    for id in &u.control_ids {
        skip.extend(vocabulary::terms(id));
    }
    let mut query: Vec<(String, f64)> = vocabulary::terms(question)
        .into_iter()
        .filter(|t| !skip.contains(t) && !t.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(|t| (t, 1.0))
        .collect();
    for m in &found {
        if let Target::Entry(e) = m.target {
            for t in &e.terms {
                for stem in vocabulary::terms(t) {
                    query.push((stem, 0.5));
                }
            }
        }
    }
    for sv in &u.services {
        query.push((sv.clone(), 0.5));
    }

    // Services the question names by a service word ("RDS", "S3 bucket", "CloudTrail"), not
    // only implies through a topic ("logging").
    let strong: Vec<&str> = u
        .services
        .iter()
        .map(String::as_str)
        .filter(|sv| {
            vocabulary::words(question).iter().any(|w| w == sv)
                || found.iter().any(|m| match m.target {
                    Target::Entry(e) => {
                        e.services.iter().any(|x| x == sv) && e.terms.iter().any(|t| t == sv)
                    }
                    _ => false,
                })
        })
        .collect();
    // A service named by its own name wins over one a generic word implies ("RDS instances" is
    // about RDS, not EC2).
    let literal: Vec<&str> = strong
        .iter()
        .copied()
        .filter(|sv| vocabulary::words(question).iter().any(|w| w == sv))
        .collect();
    let strong = if literal.is_empty() { strong } else { literal };
    let named: Vec<usize> = u
        .control_ids
        .iter()
        .flat_map(|id| s.resolve(&ids::parse(id)).into_iter().take(1))
        .collect();
    // The topics of a question, one per vocabulary phrase it holds ("vulnerability scans",
    // "pen tests"): each ranked on its own words, the KB's wording for it, and the question's
    // words outside any phrase, so the second topic of a question is not drowned by the first.
    let mut covered: BTreeSet<usize> = BTreeSet::new();
    let qwords = vocabulary::words(question);
    for m in &found {
        covered.extend(m.start..m.start + m.len);
    }
    let residual: Vec<(String, f64)> = qwords
        .iter()
        .enumerate()
        .filter(|(i, _)| !covered.contains(i))
        .flat_map(|(_, w)| vocabulary::terms(w))
        .filter(|t| !skip.contains(t) && !t.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(|t| (t, 0.3))
        .collect();
    let mut topics: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    let mut entries: Vec<&vocabulary::Entry> = Vec::new();
    for m in &found {
        let Target::Entry(e) = m.target else { continue };
        // Two phrases of one entry ("metric filter and alarm") are one topic.
        if entries.contains(&e) {
            continue;
        }
        entries.push(e);
        let phrase = qwords[m.start..m.start + m.len].join(" ");
        // The KB's wording weighs more than the words people use for it ("pen tests").
        let mut q: Vec<(String, f64)> = vocabulary::terms(&phrase)
            .into_iter()
            .map(|t| (t, 0.5))
            .collect();
        for t in &e.terms {
            q.extend(vocabulary::terms(t).into_iter().map(|t| (t, 1.0)));
        }
        q.extend(residual.iter().cloned());
        if !topics.iter().any(|(p, _)| *p == phrase) {
            topics.push((phrase, q));
        }
    }
    let overview = u.intent == Intent::FrameworkOverview;
    let filters = attribute_filters(&s, question, &scope);

    let mut picks: Vec<Pick> = named
        .iter()
        .map(|&c| Pick {
            control: c,
            reason: "The question names this control.".into(),
        })
        .collect();

    if overview {
        // Members of a named group, else of the service groups the question names, else of the
        // whole scope; narrowed by the attributes the question names.
        let mut members: Vec<usize> = Vec::new();
        for &c in &named {
            members.extend(descendants(&s, c));
        }
        if members.is_empty() && !u.services.is_empty() {
            members = (0..s.controls.len())
                .filter(|&c| {
                    scope.contains(&s.controls[c].framework)
                        && !s.is_group(c)
                        && u.services.iter().any(|sv| direct_service(&s, c, sv))
                })
                .collect();
        }
        if !filters.is_empty() {
            let base: Vec<usize> = if members.is_empty() {
                (0..s.controls.len())
                    .filter(|&c| scope.contains(&s.controls[c].framework))
                    .collect()
            } else {
                members.clone()
            };
            let filtered: Vec<usize> = base
                .into_iter()
                .filter(|&c| {
                    !s.is_group(c)
                        && filters
                            .iter()
                            .all(|(k, val)| attr(&s, c, k) == Some(val.clone()))
                })
                .collect();
            // A parent group scopes further when the question's words name one ("technical
            // safeguards" → 164.312's specifications).
            let filtered = narrow_by_group(&s, &filtered, &query);
            if !filtered.is_empty() && filtered.len() <= 15 {
                let why = filters
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                for c in filtered {
                    push(
                        &mut picks,
                        c,
                        format!("Matches what the question lists ({why})."),
                    );
                }
                return finish(g, picks);
            }
        }
        if !named.is_empty() {
            for &c in &named {
                for &child in &s.controls[c].children {
                    push(&mut picks, child, format!("Part of {}.", s.citation_id(c)));
                }
            }
            return finish(g, picks);
        }
    }

    // The graph's view of a named service: per control, how many of that service's checks
    // evidence it, as a share of the most evidenced control of its framework ("RDS" under PCI
    // is above all 3.5.1, whose checks are RDS encryption).
    let mut evidenced: HashMap<usize, f64> = HashMap::new();
    for k in s
        .checks
        .iter()
        .filter(|k| k.services.iter().any(|sv| strong.contains(&sv.as_str())))
    {
        for &c in &k.controls {
            *evidenced.entry(c).or_default() += 1.0;
        }
    }
    let mut most: HashMap<usize, f64> = HashMap::new();
    for (&c, &n) in &evidenced {
        let e = most.entry(s.controls[c].framework).or_default();
        *e = e.max(n);
    }

    // "service providers", "multi-tenant providers": the question is about those entities.
    let about_providers = qwords.windows(2).any(|w| {
        w[1].starts_with("provider")
            && matches!(w[0].as_str(), "service" | "tenant" | "multi-tenant")
    });
    // Ranked text matches.
    let boost = |c: usize| -> f64 {
        let ctl = &s.controls[c];
        let f = &s.frameworks[ctl.framework];
        let mut b = 1.0;
        if s.is_group(c) {
            b *= if overview { 0.9 } else { 0.5 };
        }
        if named_fw.is_empty() && implied.contains(f.id.as_str()) {
            b *= 1.5;
        }
        if !u.services.is_empty() && u.services.iter().any(|sv| s.touches_service(c, sv)) {
            b *= 1.2;
        }
        // A service the question names as such: controls about that service first.
        if strong.iter().any(|sv| direct_service(&s, c, sv)) {
            b *= if u.intent == Intent::ServiceAssessment {
                1.6
            } else {
                1.2
            };
        }
        if let Some(n) = evidenced.get(&c) {
            b *= 1.0 + 0.5 * n / most[&ctl.framework];
        }
        // PCI appendices and the service-provider-only requirements bind only some entities
        // (service providers, designated entities): lower unless the question is about them.
        let narrow = ctl.attributes.get("appendix").is_some_and(|v| v == true)
            || ctl.attributes.contains_key("applies_to");
        if narrow && !about_providers {
            b *= 0.5;
        }
        b
    };
    let mut ranked: Vec<(usize, f64)> = s
        .rank(&query, |c| {
            scope.contains(&s.controls[c].framework) && !named.contains(&c)
        })
        .into_iter()
        .map(|(c, sc)| (c, sc * boost(c)))
        .collect();
    ranked.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| s.controls[a.0].id.cmp(&s.controls[b.0].id))
    });

    if !named.is_empty() {
        // Other named frameworks: the controls related to the named ones there.
        let with_named: BTreeSet<usize> = named.iter().map(|&c| s.controls[c].framework).collect();
        for &f in named_fw.iter().filter(|f| !with_named.contains(f)) {
            let related: Vec<usize> = named
                .iter()
                .flat_map(|&c| s.related(c))
                .filter(|&o| s.controls[o].framework == f)
                .collect();
            let best = related.iter().copied().min_by_key(|o| {
                ranked
                    .iter()
                    .position(|(c, _)| c == o)
                    .unwrap_or(usize::MAX)
            });
            match best {
                Some(o) => {
                    let by = named
                        .iter()
                        .find(|&&c| s.related(c).contains(&o))
                        .copied()
                        .unwrap_or(named[0]);
                    push(
                        &mut picks,
                        o,
                        format!(
                            "Related to {} (same objective in {}).",
                            s.citation_id(by),
                            s.frameworks[f].name
                        ),
                    );
                }
                None => {
                    if let Some(&(c, _)) =
                        ranked.iter().find(|(c, _)| s.controls[*c].framework == f)
                    {
                        push(
                            &mut picks,
                            c,
                            "Best match for the question's subject in this framework.".into(),
                        );
                    }
                }
            }
        }
        return finish(g, picks);
    }

    let Some(&(_, top)) = ranked.first() else {
        return finish(g, picks);
    };
    // Frameworks to answer from: each named one; else those scoring near the best.
    let mut best_per_fw: HashMap<usize, f64> = HashMap::new();
    for &(c, sc) in &ranked {
        let e = best_per_fw.entry(s.controls[c].framework).or_default();
        *e = e.max(sc);
    }
    // No framework named but the vocabulary implies some ("erasure", "PHI"): answer from those.
    let implied_fw: Vec<usize> = best_per_fw
        .keys()
        .copied()
        .filter(|&f| implied.contains(s.frameworks[f].id.as_str()))
        .collect();
    let answer_fw: Vec<usize> = if named_fw.is_empty() && !implied_fw.is_empty() {
        let mut fws = implied_fw;
        fws.sort_by(|a, b| best_per_fw[b].total_cmp(&best_per_fw[a]).then(a.cmp(b)));
        fws.truncate(2);
        fws
    } else if named_fw.is_empty() {
        let mut fws: Vec<(usize, f64)> = best_per_fw
            .iter()
            .filter(|(_, sc)| **sc >= 0.85 * top)
            .map(|(f, sc)| (*f, *sc))
            .collect();
        fws.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        fws.into_iter().take(2).map(|(f, _)| f).collect()
    } else {
        named_fw.clone()
    };
    let cross = named_fw.len() > 1;
    let service_group = u.intent == Intent::ServiceAssessment && !strong.is_empty();
    let cap = if overview {
        6
    } else if cross {
        2
    } else if service_group {
        4
    } else {
        3
    };
    let ratio = if overview || service_group {
        0.6
    } else {
        KEEP_RATIO
    };
    // Cross-framework: the best match overall anchors the answer; in the other frameworks the
    // controls the graph relates to it (curated links, shared checks) come first among their
    // close text matches.
    let anchor = if cross {
        ranked.first().map(|(c, _)| *c)
    } else {
        None
    };
    for &f in &answer_fw {
        let mut in_fw: Vec<(usize, f64)> = ranked
            .iter()
            .copied()
            .filter(|(c, _)| s.controls[*c].framework == f)
            .collect();
        if let Some(a) = anchor.filter(|&a| s.controls[a].framework != f) {
            let related = s.related(a);
            let fw_top = in_fw.first().map_or(0.0, |x| x.1);
            if let Some(pos) = in_fw
                .iter()
                .take(10)
                .position(|(c, sc)| related.contains(c) && *sc >= 0.4 * fw_top)
            {
                let (c, _) = in_fw.remove(pos);
                in_fw.insert(0, (c, fw_top));
            }
        }
        // A service assessment answers with the framework's group for that service when it has
        // one small enough to list (FSBP's "Amazon EKS controls", CIS's RDS section).
        if service_group {
            let group = (0..s.controls.len()).find(|&g| {
                s.controls[g].framework == f
                    && matches!(s.controls[g].kind.as_str(), "service" | "section")
                    && !s.controls[g].children.is_empty()
                    && s.controls[g].children.len() <= 8
                    && strong.iter().any(|sv| {
                        // The group holds most of the framework's controls chiefly about that
                        // service (first listed), and only controls on it (Auto Scaling's group
                        // is not EC2's).
                        let on = (0..s.controls.len())
                            .filter(|&c| {
                                s.controls[c].framework == f
                                    && !s.is_group(c)
                                    && s.controls[c].services.first().is_some_and(|x| x == sv)
                            })
                            .count();
                        let children = &s.controls[g].children;
                        children.iter().all(|&c| direct_service(&s, c, sv))
                            && children.len() * 5 >= on * 4
                    })
            });
            // Too large to list: its critical-severity controls, then the ranking.
            let large = (0..s.controls.len()).find(|&g| {
                s.controls[g].framework == f
                    && s.controls[g].kind == "service"
                    && s.controls[g].children.len() > 8
                    && strong.iter().any(|sv| {
                        s.controls[g]
                            .title
                            .to_lowercase()
                            .contains(&format!(" {sv} "))
                            || vocabulary::words(&s.controls[g].native_id)
                                .iter()
                                .any(|w| w == sv)
                    })
            });
            if group.is_none()
                && let Some(g) = large
            {
                for &child in &s.controls[g].children {
                    if attr(&s, child, "severity").as_deref() == Some("critical") {
                        push(
                            &mut picks,
                            child,
                            format!(
                                "Critical severity in {}, the controls for this service.",
                                s.citation_id(g)
                            ),
                        );
                    }
                }
            }
            if let Some(g) = group {
                for &child in &s.controls[g].children {
                    push(
                        &mut picks,
                        child,
                        format!(
                            "Part of {}, the controls for this service.",
                            s.citation_id(g)
                        ),
                    );
                }
                continue;
            }
        }
        let Some(&(_, fw_top)) = in_fw.first() else {
            g.gaps.push(format!(
                "{} holds nothing on this subject in the knowledge base.",
                s.frameworks[f].name
            ));
            continue;
        };
        // A group near the top of an overview answers with its members ("what rights…" →
        // the chapter of rights).
        let lead = in_fw.iter().take(3).find(|(c, sc)| {
            s.is_group(*c)
                && *sc >= 0.7 * fw_top
                && (2..=15).contains(&s.controls[*c].children.len())
        });
        if overview && let Some(&(group, _)) = lead {
            push(
                &mut picks,
                group,
                "The group that holds what the question asks about.".into(),
            );
            for &child in &s.controls[group].children {
                push(
                    &mut picks,
                    child,
                    format!("Part of {}.", s.citation_id(group)),
                );
            }
            continue;
        }
        for &(c, sc) in in_fw.iter().take(cap) {
            if sc < ratio * fw_top {
                break;
            }
            let words = matched_words(&s, c, &query);
            push(
                &mut picks,
                c,
                if words.is_empty() {
                    "Best match for the question in this framework.".into()
                } else {
                    format!("Matches the question on: {}.", words.join(", "))
                },
            );
        }
        // Each topic's best control in this framework, when the question as a whole matches it
        // too.
        let full: HashMap<usize, f64> = ranked.iter().copied().collect();
        let several = topics.len() >= 2 && !overview;
        for (phrase, q) in topics.iter().filter(|_| several) {
            let mut best: Vec<(usize, f64)> = s
                .rank(q, |c| {
                    s.controls[c].framework == f && !named.contains(&c) && !s.is_group(c)
                })
                .into_iter()
                .map(|(c, sc)| (c, sc * boost(c)))
                .collect();
            best.sort_by(|a, b| {
                b.1.total_cmp(&a.1)
                    .then_with(|| s.controls[a.0].id.cmp(&s.controls[b.0].id))
            });
            let Some(&(_, topic_top)) = best.first() else {
                continue;
            };
            // Up to three when the topic has near-equal answers (internal and external pen
            // tests; the transfer articles). A sibling of the topic's best (both pen tests sit
            // under one requirement) needs less support from the whole question than a stranger.
            let first_parent = best.first().and_then(|&(c, _)| s.controls[c].parent);
            for (i, &(c, sc)) in best.iter().take(3).enumerate() {
                let sibling =
                    i > 0 && first_parent.is_some() && s.controls[c].parent == first_parent;
                let needed = if sibling { SIBLING_RATIO } else { TOPIC_RATIO };
                if sc < 0.85 * topic_top || !full.get(&c).is_some_and(|&x| x >= needed * fw_top) {
                    break;
                }
                push(
                    &mut picks,
                    c,
                    format!("Best match in {} for \"{phrase}\".", s.frameworks[f].name),
                );
            }
        }
        // The graph's answer for a named service: the control its checks evidence most.
        if u.intent == Intent::ServiceAssessment || cross {
            let mut best: Vec<(usize, f64)> = evidenced
                .iter()
                .filter(|(c, _)| s.controls[**c].framework == f && full.contains_key(*c))
                .map(|(&c, &n)| (c, n))
                .collect();
            best.sort_by(|a, b| {
                b.1.total_cmp(&a.1)
                    .then_with(|| full[&b.0].total_cmp(&full[&a.0]))
                    .then_with(|| s.controls[a.0].id.cmp(&s.controls[b.0].id))
            });
            let most = best.first().map_or(0.0, |x| x.1);
            // Ties both count (GuardDuty evidences malware detection and monitoring alike).
            for &(c, _) in best
                .iter()
                .take(2)
                .filter(|(c, n)| *n == most && full[c] >= GRAPH_RATIO * fw_top)
            {
                push(
                    &mut picks,
                    c,
                    format!(
                        "The {} control the named service's checks evidence most.",
                        s.frameworks[f].name
                    ),
                );
            }
        }
    }
    // An implementation specification is part of its standard: the standard is cited too when
    // the question as a whole supports it (a BAA is 164.308(b)(3) under 164.308(b)(1)).
    let score: HashMap<usize, f64> = ranked.iter().copied().collect();
    let standards: Vec<(usize, usize)> = picks
        .iter()
        .filter_map(|p| {
            let parent = s.controls[p.control].parent?;
            (s.controls[p.control].kind == "implementation_specification"
                && s.controls[parent].kind == "standard")
                .then_some((p.control, parent))
        })
        .collect();
    for (spec, standard) in standards {
        let fw_top = best_per_fw.get(&s.controls[standard].framework);
        if let (Some(&x), Some(&top)) = (score.get(&standard), fw_top)
            && x >= TOPIC_RATIO * top
        {
            push(
                &mut picks,
                standard,
                format!("The standard {} implements.", s.citation_id(spec)),
            );
        }
    }
    finish(g, picks)
}

/// A topic's best control is cited when the whole question scores it at least this share of
/// the framework's best.
const TOPIC_RATIO: f64 = 0.5;

/// A topic's runner-up under the same parent as its best is cited at this share.
const SIBLING_RATIO: f64 = 0.35;

/// The control a named service's checks evidence most is cited when the question scores it at
/// least this share of the framework's best (the graph alone does not make it relevant).
const GRAPH_RATIO: f64 = 0.2;

fn finish(mut g: Grounding, picks: Vec<Pick>) -> Grounding {
    g.picks = picks;
    g
}

fn push(picks: &mut Vec<Pick>, control: usize, reason: String) {
    if !picks.iter().any(|p| p.control == control) {
        picks.push(Pick { control, reason });
    }
}

fn descendants(s: &Snapshot, c: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack: Vec<usize> = s.controls[c].children.iter().rev().copied().collect();
    while let Some(x) = stack.pop() {
        out.push(x);
        stack.extend(s.controls[x].children.iter().rev().copied());
    }
    out
}

fn direct_service(s: &Snapshot, c: usize, service: &str) -> bool {
    s.controls[c].services.iter().any(|x| x == service)
}

fn attr(s: &Snapshot, c: usize, key: &str) -> Option<String> {
    s.controls[c]
        .attributes
        .get(key)
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
}

/// Attribute values the question names (`addressable`, `Level 1`, `critical`, `high risk`,
/// `availability`, `technical`), one per attribute: the first named.
fn attribute_filters(s: &Snapshot, question: &str, scope: &[usize]) -> Vec<(String, String)> {
    let words = vocabulary::words(question);
    let mut values: BTreeSet<(String, String)> = BTreeSet::new();
    for (c, ctl) in s.controls.iter().enumerate() {
        if !scope.contains(&ctl.framework) {
            continue;
        }
        for key in [
            "obligation",
            "level",
            "category",
            "safeguard",
            "severity",
            "risk",
            "assessment",
        ] {
            if let Some(v) = attr(s, c, key) {
                values.insert((key.to_string(), v));
            }
        }
    }
    let mut best: HashMap<String, (usize, String)> = HashMap::new();
    for (key, value) in values {
        let spoken = match key.as_str() {
            "level" => format!("level {value}"),
            "risk" => format!("{value} risk"),
            _ => value.replace('_', " "),
        };
        let spoken = vocabulary::words(&spoken);
        let at = (0..words.len()).find(|&i| words[i..].starts_with(&spoken));
        if let Some(at) = at {
            let e = best.entry(key).or_insert((usize::MAX, String::new()));
            if at < e.0 {
                *e = (at, value);
            }
        }
    }
    let mut out: Vec<(String, String)> = best.into_iter().map(|(k, (_, v))| (k, v)).collect();
    out.sort();
    out
}

/// Of `controls`, those under a group whose title shares a query word, when any is.
fn narrow_by_group(s: &Snapshot, controls: &[usize], query: &[(String, f64)]) -> Vec<usize> {
    let stems: BTreeSet<&str> = query
        .iter()
        .filter(|(_, w)| *w >= 1.0)
        .map(|(t, _)| t.as_str())
        .collect();
    let under = |c: usize, g: usize| {
        let mut x = s.controls[c].parent;
        while let Some(p) = x {
            if p == g {
                return true;
            }
            x = s.controls[p].parent;
        }
        false
    };
    let groups: BTreeSet<usize> = controls
        .iter()
        .flat_map(|&c| {
            let mut out = Vec::new();
            let mut x = s.controls[c].parent;
            while let Some(p) = x {
                out.push(p);
                x = s.controls[p].parent;
            }
            out
        })
        .filter(|&g| {
            let title = vocabulary::terms(&s.controls[g].title);
            // The first words of a group's title name it ("Technical safeguards: …").
            title.iter().take(2).any(|t| stems.contains(t.as_str()))
        })
        .collect();
    if groups.is_empty() {
        return controls.to_vec();
    }
    controls
        .iter()
        .copied()
        .filter(|&c| groups.iter().any(|&g| under(c, g)))
        .collect()
}

/// The question's words a control's title or summary holds.
fn matched_words(s: &Snapshot, c: usize, query: &[(String, f64)]) -> Vec<String> {
    let ctl = &s.controls[c];
    let text: BTreeSet<String> = vocabulary::terms(&format!("{} {}", ctl.title, ctl.summary))
        .into_iter()
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (t, w) in query {
        if *w >= 1.0 && text.contains(t) && !out.contains(t) {
            out.push(t.clone());
        }
    }
    out.truncate(4);
    out
}

pub struct Answer {
    /// Markdown; the lead streams it in chunks as `delta` events.
    pub text: String,
    /// Every control the text mentions, and nothing else, in order of first mention.
    pub citations: Vec<Citation>,
    /// False when the KB does not cover the question.
    pub covered: bool,
}

/// The built-in answerer: offline, deterministic (same question + same KB => same bytes).
pub fn compose(question: &str, u: &Understanding, g: &Grounding) -> Answer {
    let _ = question;
    let Some(s) = g.snapshot.as_ref() else {
        return Answer {
            text: "The knowledge base is not loaded yet, so I cannot answer from it. Please try again shortly.".into(),
            citations: Vec::new(),
            covered: false,
        };
    };
    if u.intent == Intent::OutOfScope {
        return Answer {
            text: "I answer questions about AWS security and the compliance frameworks in the knowledge base (HIPAA, SOC 2, PCI DSS, GDPR, CIS AWS Foundations, AWS Foundational Security Best Practices and the Well-Architected security pillar). This question is outside that scope, so I have nothing reliable to add.".into(),
            citations: Vec::new(),
            covered: false,
        };
    }
    if g.picks.is_empty() {
        let names: Vec<&str> = u.frameworks.iter().map(|f| f.name.as_str()).collect();
        let within = if names.is_empty() {
            String::new()
        } else {
            format!(" in {}", names.join(", "))
        };
        return Answer {
            text: format!(
                "The knowledge base does not cover this question{within}: no control matches it, so I cannot cite one. Try naming the framework, the control id or the AWS service concerned."
            ),
            citations: Vec::new(),
            covered: false,
        };
    }
    let mut text = String::new();
    let first = g.picks[0].control;
    let c = &s.controls[first];
    let f = s.framework_of(first);
    let standing = s
        .standing(first)
        .map(|x| format!(" ({x})"))
        .unwrap_or_default();
    // Direct answer first. For HIPAA's implementation specifications the obligation is the
    // answer people are after: required must be implemented; addressable must be assessed and
    // implemented or replaced by a documented, reasonable alternative.
    let obligation = c.attributes.get("obligation").and_then(|v| v.as_str());
    let lead = match obligation {
        Some("required") => format!(
            "**In short:** under {} this is [{}] *{}*, a **required** specification: it must be implemented. {}",
            f.name,
            s.citation_id(first),
            c.title,
            c.summary
        ),
        Some("addressable") => format!(
            "**In short:** under {} this is [{}] *{}*, an **addressable** specification: not optional, but you decide how. Assess it in your risk analysis, then implement it, or document why it is not reasonable and appropriate and what equivalent measure you use instead. {}",
            f.name,
            s.citation_id(first),
            c.title,
            c.summary
        ),
        _ => format!(
            "**In short:** under {} this is [{}] *{}*{standing}. {}",
            f.name,
            s.citation_id(first),
            c.title,
            c.summary
        ),
    };
    let _ = writeln!(text, "{lead}");
    if g.picks.len() > 1 {
        let _ = writeln!(
            text,
            "\nThe knowledge base points to {} controls for this question.",
            g.picks.len()
        );
    }
    for gap in &g.gaps {
        let _ = writeln!(text, "\nNote: {gap}");
    }
    text.push_str("\n### Controls\n\n");
    for p in &g.picks {
        let c = &s.controls[p.control];
        let f = s.framework_of(p.control);
        let standing = s
            .standing(p.control)
            .map(|x| format!(" — {x}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "- [{}] **{}** ({} {}){standing}. {} {}",
            s.citation_id(p.control),
            c.title,
            f.name,
            f.version,
            c.summary,
            p.reason
        );
    }
    // What to do in AWS: the remediation of the checks that evidence the cited controls.
    let mut seen_rem: BTreeSet<usize> = BTreeSet::new();
    let mut section = String::new();
    for p in &g.picks {
        // The services the question names first: "encrypt EBS volumes" wants the EBS fix before
        // the Athena one that evidences the same control.
        let mut checks = evidence(s, p.control);
        checks.sort_by_key(|&(k, strength)| {
            let named = s.checks[k].services.iter().any(|x| u.services.contains(x));
            (!named, strength != "direct", s.checks[k].id.clone())
        });
        for (k, strength) in checks {
            let check = &s.checks[k];
            let Some(r) = check.remediation else { continue };
            if seen_rem.len() >= 3 || !seen_rem.insert(r) {
                continue;
            }
            let r = &s.remediations[r];
            let _ = writeln!(
                section,
                "\n**{}** (check: {}, {strength} evidence for [{}])\n",
                r.title,
                check.title,
                s.citation_id(p.control)
            );
            for (i, step) in r.steps.iter().enumerate() {
                let _ = writeln!(section, "{}. {step}", i + 1);
            }
            for (label, lang, code) in [
                ("AWS CLI", "sh", &r.cli),
                ("CloudFormation", "yaml", &r.cloudformation),
                ("Terraform", "hcl", &r.terraform),
            ] {
                if let Some(code) = code {
                    let _ = writeln!(section, "\n{label}:\n```{lang}\n{}\n```", code.trim_end());
                }
            }
        }
    }
    if section.is_empty() {
        text.push_str("\n### What to do in AWS\n\nThe knowledge base maps no automated AWS check to these controls: they are met by process and documentation, which an auditor reviews.\n");
    } else {
        text.push_str("\n### What to do in AWS\n");
        text.push_str(&section);
    }
    let (controls, _) = mentions(s, &text);
    let citations = controls
        .into_iter()
        .map(|c| {
            let reason = g
                .picks
                .iter()
                .find(|p| p.control == c)
                .map_or("Mentioned in the answer.", |p| p.reason.as_str());
            citation(s, c, reason)
        })
        .collect();
    Answer {
        text,
        citations,
        covered: true,
    }
}

/// For LLM output: every control id the text mentions, resolved against the active KB.
/// Returns the citations of real controls (in order of mention) and the ids that do not exist.
/// An id is recognised in its citation form, `<framework>[@<version>]:<native id>`, optionally
/// after `control:` (`pci-dss:8.4.2`, `cis-aws@3.0.0:1.5`, `gdpr:Art. 32`).
pub async fn verify(kb: &KbState, text: &str) -> anyhow::Result<(Vec<Citation>, Vec<String>)> {
    let snapshot = kb_retrieve::active(kb).await?;
    Ok(verify_on(snapshot.as_deref(), text))
}

/// [`verify`] on a snapshot already in hand (a model's text is checked against the KB version
/// its answer was grounded on).
pub fn verify_on(snapshot: Option<&Snapshot>, text: &str) -> (Vec<Citation>, Vec<String>) {
    let Some(s) = snapshot else {
        return (Vec::new(), mention_pattern_unknown(text));
    };
    let (controls, unknown) = mentions(s, text);
    (
        controls
            .into_iter()
            .map(|c| citation(s, c, "Cited by the answer."))
            .collect(),
        unknown,
    )
}

/// Without a KB every id is unknown.
fn mention_pattern_unknown(text: &str) -> Vec<String> {
    static ANY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b[a-z][a-z0-9-]+(?:@[0-9][\w.\-]*)?:[A-Za-z0-9][\w.\-()]*").unwrap()
    });
    ANY.find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// The pattern of citation ids for a KB's framework ids, built once per snapshot.
fn pattern(s: &Snapshot) -> Arc<Regex> {
    /// The checksum of the snapshot a pattern was built for, and the pattern.
    type Cached = Option<(String, Arc<Regex>)>;
    static CACHE: LazyLock<Mutex<Cached>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().expect("pattern lock");
    if let Some((checksum, re)) = cache.as_ref()
        && *checksum == s.checksum
    {
        return re.clone();
    }
    let mut names: Vec<&str> = s.frameworks.iter().map(|f| f.id.as_str()).collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names.dedup();
    let alternatives = names
        .iter()
        .map(|n| regex::escape(n))
        .collect::<Vec<_>>()
        .join("|");
    let re = Arc::new(
        Regex::new(&format!(
            r"(?i)(?:\bcontrol:)?\b((?:{alternatives})(?:@[0-9][0-9A-Za-z.\-]*[0-9A-Za-z])?):\s?(Art(?:icle)?\.?\s?\d{{1,3}}|Chapter\s[IVXLC]+|[A-Za-z0-9][A-Za-z0-9.\-]*(?:\([A-Za-z0-9]{{1,5}}\))*)"
        ))
        .expect("citation pattern"),
    );
    *cache = Some((s.checksum.clone(), re.clone()));
    re
}

/// The controls a text mentions by citation id (first mention order) and the ids that name no
/// control.
pub fn mentions(s: &Snapshot, text: &str) -> (Vec<usize>, Vec<String>) {
    let re = pattern(s);
    let mut found: Vec<usize> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for caps in re.captures_iter(text) {
        let framework = &caps[1];
        let native = caps[2].trim_end_matches(['.', '-']);
        let written = format!("{framework}:{native}");
        let typed = ids::parse(&written);
        let hit = s.resolve(&typed).into_iter().find(|&c| {
            let f = s.framework_of(c);
            framework.to_lowercase().starts_with(&f.id)
        });
        match hit {
            Some(c) => {
                if !found.contains(&c) {
                    found.push(c);
                }
            }
            None => {
                if !unknown.contains(&written) {
                    unknown.push(written);
                }
            }
        }
    }
    (found, unknown)
}
