//! The report of an analysed document: per framework, the controls the document meets,
//! contradicts, leaves undetermined or is silent on, each with the findings that decided and
//! what to change; as JSON or as Markdown.
//!
//! A control's verdict combines every finding that maps to it: contradicted when any finding
//! fails or contradicts it; otherwise undetermined when a template value could not be resolved;
//! otherwise met when a finding passes or addresses it; otherwise silent.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::analysis::{Status, severity_rank};
use super::api::{Counts, Document, Finding};
use super::pipeline::FRAMEWORKS;
use crate::error::{ApiError, Problem};
use crate::kb::retrieve::Snapshot;

/// Findings by status, as the `document.analyzed` event reports them.
pub fn status_counts(statuses: impl Iterator<Item = Status>) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for s in statuses {
        *counts.entry(s.as_str()).or_insert(0) += 1;
    }
    counts
}

/// `Accept` negotiation: Markdown when asked for (and preferred to JSON), JSON for JSON, `*/*`
/// or no header; anything else is a 406.
pub fn wants_markdown(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(false);
    };
    let mut best: Option<(f32, bool)> = None;
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let markdown = match media.as_str() {
            "text/markdown" | "text/*" | "text/plain" => true,
            "application/json" | "application/*" | "*/*" => false,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, markdown));
        }
    }
    match best {
        Some((_, markdown)) => Ok(markdown),
        None => Err(ApiError::problem(
            Problem::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                "the report is available as application/json or text/markdown",
            )
            .with("available", ["application/json", "text/markdown"]),
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ControlVerdict {
    /// Citation id (`pci-dss:3.5.1`); resolves with `GET /api/v1/kb/controls/{id}`.
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    /// `contradicted`, `undetermined`, `met` or `silent`.
    pub verdict: String,
    /// The worst severity among the findings that decided.
    pub severity: String,
    /// Indexes into the report's `findings` of the findings that map to this control.
    pub findings: Vec<usize>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct VerdictCounts {
    pub contradicted: usize,
    pub undetermined: usize,
    pub met: usize,
    pub silent: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FrameworkReport {
    /// `hipaa-sr`, `pci-dss`, …
    pub framework: String,
    pub name: String,
    pub version: Option<String>,
    pub counts: VerdictCounts,
    /// Contradicted first, then undetermined, silent and met; by severity within each.
    pub controls: Vec<ControlVerdict>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Report {
    pub document: Document,
    pub counts: Counts,
    pub frameworks: Vec<FrameworkReport>,
    /// Every finding, failing and contradicted first.
    pub findings: Vec<Finding>,
}

const VERDICT_ORDER: [&str; 4] = ["contradicted", "undetermined", "silent", "met"];

fn verdict_of(status: &str) -> &'static str {
    match status {
        "fail" | "contradicted" => "contradicted",
        "unknown" => "undetermined",
        "pass" | "addressed" => "met",
        _ => "silent",
    }
}

fn verdict_rank(v: &str) -> usize {
    // The combination rule of the module docs: contradicted > undetermined > met > silent.
    match v {
        "contradicted" => 0,
        "undetermined" => 1,
        "met" => 2,
        _ => 3,
    }
}

/// The framework id of a citation id (`cis-aws@5.0.0:1.4` → `cis-aws`).
fn framework_of(citation: &str) -> &str {
    let head = citation.split(':').next().unwrap_or(citation);
    head.split('@').next().unwrap_or(head)
}

pub fn build(document: Document, findings: Vec<Finding>, kb: Option<&Snapshot>) -> Report {
    let mut per_control: HashMap<String, (String, String, Vec<usize>)> = HashMap::new();
    for (i, f) in findings.iter().enumerate() {
        let Some(controls) = f.controls.as_array() else {
            continue;
        };
        for c in controls.iter().filter_map(|c| c.as_str()) {
            let verdict = verdict_of(&f.status);
            let entry = per_control
                .entry(c.to_string())
                .or_insert_with(|| (verdict.to_string(), f.severity.clone(), Vec::new()));
            if verdict_rank(verdict) < verdict_rank(&entry.0) {
                entry.0 = verdict.to_string();
            }
            if severity_rank(&f.severity) < severity_rank(&entry.1) {
                entry.1 = f.severity.clone();
            }
            entry.2.push(i);
        }
    }
    let describe = |citation: &str| -> (String, Option<String>) {
        let Some(kb) = kb else {
            return (citation.to_string(), None);
        };
        let typed = crate::kb::ids::parse(citation);
        match kb.resolve(&typed).first() {
            Some(&c) => {
                let control = &kb.controls[c];
                (
                    control.title.clone(),
                    Some(control.url.clone()).filter(|u| !u.is_empty()),
                )
            }
            None => (citation.to_string(), None),
        }
    };
    let mut frameworks = Vec::new();
    for fw in document.frameworks.iter() {
        let mut controls: Vec<ControlVerdict> = per_control
            .iter()
            .filter(|(id, _)| framework_of(id) == fw)
            .map(|(id, (verdict, severity, idx))| {
                let (title, url) = describe(id);
                ControlVerdict {
                    id: id.clone(),
                    title,
                    url,
                    verdict: verdict.clone(),
                    severity: severity.clone(),
                    findings: idx.clone(),
                }
            })
            .collect();
        controls.sort_by(|a, b| {
            let va = VERDICT_ORDER.iter().position(|v| *v == a.verdict);
            let vb = VERDICT_ORDER.iter().position(|v| *v == b.verdict);
            va.cmp(&vb)
                .then(severity_rank(&a.severity).cmp(&severity_rank(&b.severity)))
                .then(crate::kb::ids::compare_versions(&a.id, &b.id))
        });
        let mut counts = VerdictCounts::default();
        for c in &controls {
            match c.verdict.as_str() {
                "contradicted" => counts.contradicted += 1,
                "undetermined" => counts.undetermined += 1,
                "met" => counts.met += 1,
                _ => counts.silent += 1,
            }
        }
        let (name, version) = kb
            .and_then(|kb| {
                kb.versions(fw)
                    .last()
                    .map(|f| (f.name.clone(), Some(f.version.clone())))
            })
            .unwrap_or_else(|| (fw.clone(), None));
        frameworks.push(FrameworkReport {
            framework: fw.clone(),
            name,
            version,
            counts,
            controls,
        });
    }
    frameworks.sort_by_key(|f| {
        FRAMEWORKS
            .iter()
            .position(|x| *x == f.framework)
            .unwrap_or(FRAMEWORKS.len())
    });
    let counts = document.counts.clone();
    Report {
        document,
        counts,
        frameworks,
        findings,
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn where_found(f: &Finding) -> String {
    if f.source == "template" {
        let resource = f.resource.as_deref().unwrap_or("?");
        match f.line {
            Some(line) => format!("`{resource}` (line {line})"),
            None => format!("`{resource}`"),
        }
    } else {
        let mut place = Vec::new();
        if let Some(page) = f.page {
            place.push(format!("page {page}"));
        }
        if let Some(heading) = &f.heading {
            place.push(format!("“{heading}”"));
        }
        match &f.quote {
            Some(q) if place.is_empty() => format!("“{q}”"),
            Some(q) => format!("“{q}” ({})", place.join(", ")),
            None => "not mentioned".into(),
        }
    }
}

pub fn markdown(report: &Report) -> String {
    let d = &report.document;
    let mut out = String::new();
    let _ = writeln!(out, "# Security review: {}\n", d.name);
    let _ = writeln!(
        out,
        "{} · {} bytes · SHA-256 `{}` · analysed {}\n",
        d.kind,
        d.size_bytes,
        d.sha256,
        d.analyzed_at
            .map(|a| crate::web::timestamp::format(&a))
            .unwrap_or_default()
    );
    out.push_str("## Summary\n\n| Framework | Version | Contradicted | Undetermined | Silent | Met |\n|---|---|---:|---:|---:|---:|\n");
    for fw in &report.frameworks {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&fw.name),
            cell(fw.version.as_deref().unwrap_or("")),
            fw.counts.contradicted,
            fw.counts.undetermined,
            fw.counts.silent,
            fw.counts.met
        );
    }
    out.push('\n');
    for fw in &report.frameworks {
        let _ = writeln!(out, "## {}\n", fw.name);
        if fw.controls.is_empty() {
            out.push_str("No control of this framework is decided by this document.\n\n");
            continue;
        }
        for verdict in VERDICT_ORDER {
            let controls: Vec<&ControlVerdict> = fw
                .controls
                .iter()
                .filter(|c| c.verdict == verdict)
                .collect();
            if controls.is_empty() {
                continue;
            }
            let _ = writeln!(out, "### {} ({})\n", capitalise(verdict), controls.len());
            for c in controls {
                let _ = writeln!(out, "- **{}** {} ({})", c.id, cell(&c.title), c.severity);
                if verdict == "met" {
                    continue;
                }
                for &i in c.findings.iter().take(10) {
                    let Some(f) = report.findings.get(i) else {
                        continue;
                    };
                    if verdict_of(&f.status) != verdict {
                        continue;
                    }
                    let _ = writeln!(out, "  - {}: {}", where_found(f), cell(&f.reason));
                }
            }
            out.push('\n');
        }
    }
    let failing: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| matches!(f.status.as_str(), "fail" | "unknown" | "contradicted"))
        .collect();
    if !failing.is_empty() {
        out.push_str("## Findings to act on\n\n| Severity | Status | Where | Check or control | Why |\n|---|---|---|---|---|\n");
        for f in failing {
            let what = f
                .check
                .clone()
                .or_else(|| f.control.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | `{}` | {} |",
                f.severity,
                f.status,
                cell(&where_found(f)),
                what,
                cell(&f.reason)
            );
        }
        out.push('\n');
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> Result<bool, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        wants_markdown(&h)
    }

    #[test]
    fn accept_chooses_markdown_or_json() {
        assert!(!wants_markdown(&HeaderMap::new()).unwrap());
        assert!(accept("text/markdown").unwrap());
        assert!(!accept("application/json").unwrap());
        assert!(!accept("*/*").unwrap());
        assert!(accept("application/json;q=0.5, text/markdown").unwrap());
        assert!(!accept("text/markdown;q=0.2, application/json").unwrap());
        assert!(accept("image/png").is_err());
        assert!(accept("text/markdown;q=0").is_err());
    }

    #[test]
    fn a_control_takes_the_worst_verdict_of_its_findings() {
        assert!(verdict_rank("contradicted") < verdict_rank("undetermined"));
        assert!(verdict_rank("undetermined") < verdict_rank("met"));
        assert!(verdict_rank("met") < verdict_rank("silent"));
        assert_eq!(framework_of("cis-aws@5.0.0:1.4"), "cis-aws");
        assert_eq!(framework_of("hipaa-sr:164.312(a)(2)(iv)"), "hipaa-sr");
    }
}
