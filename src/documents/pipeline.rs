//! One document from bytes to finding rows: recognise the type, run the analyser it needs and map
//! every verdict to the KB (a template finding through its check's control mappings, exactly as a
//! live scan finding; a prose finding through its control id). Pure and synchronous: it runs on a
//! blocking thread, bounded by [`Limits`].

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use super::analysis::{AnalysisError, Kind, Limits, Sentence, Status, severity_rank};
use super::{iac, prose};
use crate::kb::ids;
use crate::kb::retrieve::Snapshot;

/// The frameworks a document can be analysed against, in report order.
pub const FRAMEWORKS: [&str; 7] = [
    "hipaa-sr",
    "soc2",
    "pci-dss",
    "gdpr",
    "cis-aws",
    "aws-fsbp",
    "aws-wa-security",
];

/// Names people use for the frameworks, mapped to the KB's ids.
pub fn framework_id(raw: &str) -> Option<&'static str> {
    let squashed: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect();
    Some(match squashed.as_str() {
        "hipaa" | "hipaasr" | "hipaasecurityrule" => "hipaa-sr",
        "soc2" | "soc" => "soc2",
        "pci" | "pcidss" => "pci-dss",
        "gdpr" => "gdpr",
        "cis" | "cisaws" => "cis-aws",
        "fsbp" | "awsfsbp" | "securityhub" => "aws-fsbp",
        "wa" | "wellarchitected" | "awswasecurity" | "awswellarchitected" => "aws-wa-security",
        _ => return None,
    })
}

/// Recognises a document from its content; `None` is a type we do not read.
pub fn detect(bytes: &[u8]) -> Option<Kind> {
    iac::detect(bytes).or_else(|| prose::detect(bytes))
}

/// A finding ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub source: &'static str,
    pub check: Option<String>,
    pub control: Option<String>,
    pub framework: Option<String>,
    pub measure: Option<String>,
    pub status: Status,
    pub severity: String,
    pub service: Option<String>,
    pub resource: Option<String>,
    pub resource_type: Option<String>,
    pub line: Option<i32>,
    pub page: Option<i32>,
    pub heading: Option<String>,
    pub quote: Option<String>,
    pub reason: String,
    /// Citation ids of every control the finding decides.
    pub controls: Vec<String>,
}

pub struct Outcome {
    pub rows: Vec<Row>,
    /// Framework ids the findings cover.
    pub frameworks: Vec<String>,
    pub facts: Value,
    /// The sentences of a prose document (empty for a template), for the LLM enrichment pass
    /// that runs after this pure step.
    pub sentences: Vec<Sentence>,
}

/// Analyses one document against `requested` frameworks (ids; empty: all that apply).
pub fn run(
    kind: Kind,
    bytes: &[u8],
    limits: &Limits,
    requested: &[String],
    kb: &Snapshot,
) -> Result<Outcome, AnalysisError> {
    if kind.is_template() {
        template(kind, bytes, limits, requested, kb)
    } else {
        prose_document(kind, bytes, limits, requested, kb)
    }
}

fn template(
    kind: Kind,
    bytes: &[u8],
    limits: &Limits,
    requested: &[String],
    kb: &Snapshot,
) -> Result<Outcome, AnalysisError> {
    let report = iac::analyse(kind, bytes, limits)?;
    let frameworks: Vec<String> = if requested.is_empty() {
        FRAMEWORKS.iter().map(|f| f.to_string()).collect()
    } else {
        requested.to_vec()
    };
    let checks: HashMap<&str, usize> = kb
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.strip_prefix("check:kb:").unwrap_or(&c.id), i))
        .collect();
    let mut rows = Vec::with_capacity(report.findings.len());
    for f in report.findings {
        let check = checks.get(f.check.as_str()).map(|&i| &kb.checks[i]);
        let mut controls: Vec<String> = check
            .map(|c| {
                c.controls
                    .iter()
                    .copied()
                    .filter(|&ctl| {
                        let fw = kb.framework_of(ctl);
                        frameworks.contains(&fw.id) && kb.is_newest(kb.controls[ctl].framework)
                    })
                    .map(|ctl| kb.citation_id(ctl))
                    .collect()
            })
            .unwrap_or_default();
        controls.sort();
        controls.dedup();
        rows.push(Row {
            source: "template",
            severity: check.map_or_else(|| "medium".to_string(), |c| c.severity.clone()),
            service: check.and_then(|c| c.services.first().cloned()),
            check: Some(f.check),
            control: None,
            framework: None,
            measure: None,
            status: f.status,
            resource: Some(f.resource),
            resource_type: Some(f.resource_type),
            line: f.line.and_then(|l| i32::try_from(l).ok()),
            page: None,
            heading: None,
            quote: None,
            reason: f.reason,
            controls,
        });
    }
    rows.sort_by(|a, b| {
        status_rank(a.status)
            .cmp(&status_rank(b.status))
            .then(severity_rank(&a.severity).cmp(&severity_rank(&b.severity)))
            .then(a.resource.cmp(&b.resource))
            .then(a.check.cmp(&b.check))
    });
    let facts = json!({
        "resources": report.resources,
        "resource_types": report.resource_types,
        "checks_evaluated": rows.iter().filter_map(|r| r.check.as_deref()).collect::<BTreeSet<_>>().len(),
    });
    Ok(Outcome {
        rows,
        frameworks,
        facts,
        sentences: Vec::new(),
    })
}

fn status_rank(s: Status) -> usize {
    match s {
        Status::Fail | Status::Contradicted => 0,
        Status::Unknown | Status::Silent => 1,
        Status::Pass | Status::Addressed => 2,
    }
}

fn prose_document(
    kind: Kind,
    bytes: &[u8],
    limits: &Limits,
    requested: &[String],
    kb: &Snapshot,
) -> Result<Outcome, AnalysisError> {
    let sentences = prose::extract(kind, bytes, limits)?;
    limits.check_time()?;
    let wanted = (!requested.is_empty()).then_some(requested);
    let (facts, findings) = prose::analyse(&sentences, wanted);
    let mut rows = Vec::with_capacity(findings.len());
    for f in findings {
        // A control id the KB does not hold is never reported (a test holds the measure table
        // to the shipped KB; a KB refreshed without one of them loses only that finding).
        let typed = ids::parse(&f.control);
        let Some(&control) = kb.resolve(&typed).first() else {
            tracing::warn!(control = %f.control, "measure table names a control the KB does not hold");
            continue;
        };
        let citation = kb.citation_id(control);
        let framework = kb.framework_of(control).id.clone();
        rows.push(Row {
            source: "prose",
            check: None,
            control: Some(citation.clone()),
            framework: Some(framework),
            measure: Some(f.measure),
            status: f.status,
            severity: f.severity,
            service: None,
            resource: None,
            resource_type: None,
            line: None,
            page: f
                .quote
                .as_ref()
                .and_then(|q| q.page)
                .and_then(|p| i32::try_from(p).ok()),
            heading: f.quote.as_ref().and_then(|q| q.heading.clone()),
            quote: f.quote.map(|q| q.text),
            reason: f.reason,
            controls: vec![citation],
        });
    }
    let frameworks = facts.frameworks.clone();
    let facts = serde_json::to_value(&facts).unwrap_or(Value::Null);
    Ok(Outcome {
        rows,
        frameworks,
        facts,
        sentences,
    })
}
