//! Infrastructure as code: CloudFormation and Terraform templates evaluated statically with the
//! catalogue's checks.
//!
//! Each format is parsed into one model (`value::Value` per resource), so a rule is written once
//! and its verdict uses the same check id a live scan reports. Whatever a template leaves to
//! deploy time (parameters, variables, conditions, computed attributes) is reported as
//! `Status::Unknown` with the expression, never guessed.

mod cfn;
mod rules;
mod terraform;
mod value;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};

use super::analysis::{AnalysisError, Kind, Limits, TemplateFinding};

pub struct IacReport {
    pub findings: Vec<TemplateFinding>,
    /// Resources declared (all types, including ones no rule covers).
    pub resources: usize,
    /// Distinct resource types as written (`AWS::S3::Bucket`, `aws_s3_bucket`).
    pub resource_types: Vec<String>,
}

/// Which conventions a document follows: property names, defaults and reference syntax differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Cfn,
    Tf,
}

/// One declared resource, its settings resolved as far as the document allows.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    /// Logical id or Terraform address.
    pub name: String,
    pub ty: String,
    pub line: Option<u32>,
    pub props: value::Value,
}

/// A parsed document.
#[derive(Debug)]
pub(crate) struct Model {
    pub format: Format,
    pub resources: Vec<Resource>,
}

/// Evaluates a template. `kind` is Cloudformation, Terraform or TerraformPlan (others: Malformed
/// error).
pub fn analyse(kind: Kind, bytes: &[u8], limits: &Limits) -> Result<IacReport, AnalysisError> {
    limits.check_time()?;
    let model = match kind {
        Kind::Cloudformation => cfn::parse(bytes, limits)?,
        Kind::Terraform => terraform::parse_hcl(bytes, limits)?,
        Kind::TerraformPlan => terraform::parse_plan(bytes, limits)?,
        other => {
            return Err(AnalysisError::Malformed(format!(
                "a {} document is not a template",
                other.as_str()
            )));
        }
    };
    let mut findings = rules::evaluate(&model, limits)?;
    findings.sort_by(|a, b| {
        (a.resource.as_str(), a.check.as_str()).cmp(&(b.resource.as_str(), b.check.as_str()))
    });
    let resource_types: BTreeSet<String> = model.resources.iter().map(|r| r.ty.clone()).collect();
    Ok(IacReport {
        findings,
        resources: model.resources.len(),
        resource_types: resource_types.into_iter().collect(),
    })
}

/// Recognises a template by content: Some(Kind::Cloudformation) for YAML/JSON with a `Resources`
/// mapping whose entries have `Type: AWS::…` (or `AWSTemplateFormatVersion`),
/// Some(Kind::TerraformPlan) for JSON with `format_version` and
/// `planned_values`/`resource_changes`/`values`, Some(Kind::Terraform) for HCL with at least one
/// `resource`/`module`/`provider`/`variable`/`data` block. None otherwise.
pub fn detect(bytes: &[u8]) -> Option<Kind> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(trimmed).ok()?;
        let obj = json.as_object()?;
        if obj.contains_key("format_version")
            && ["planned_values", "resource_changes", "values"]
                .iter()
                .any(|k| obj.contains_key(*k))
        {
            return Some(Kind::TerraformPlan);
        }
        return cfn::looks_like_template_json(&json).then_some(Kind::Cloudformation);
    }
    if (text.contains("AWSTemplateFormatVersion") || text.contains("Resources"))
        && cfn::looks_like_template_yaml(text)
    {
        return Some(Kind::Cloudformation);
    }
    terraform::looks_like_hcl(text).then_some(Kind::Terraform)
}

/// The catalogue ids the static rules evaluate (for docs and tests).
pub fn rule_ids() -> Vec<&'static str> {
    rules::ids()
}

/// The first line (1-based) of `text` at or after line `from` (0-based) that matches.
pub(crate) fn find_line(text: &str, from: usize, re: &regex::Regex) -> Option<u32> {
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| re.is_match(l))
        .and_then(|(i, _)| u32::try_from(i + 1).ok())
}

/// The first line (1-based) at or after line `from` (0-based) where each mapping key is written,
/// in one pass over the text. A regex per resource over the whole text made a 1,000-resource
/// template take minutes. YAML: a key at the start of a line (after indentation), optionally
/// quoted; JSON: every `"key" :` of the line.
pub(crate) fn key_lines(text: &str, from: usize, is_json: bool) -> HashMap<&str, u32> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().skip(from) {
        let Ok(n) = u32::try_from(i + 1) else { break };
        if is_json {
            let mut rest = line;
            while let Some(start) = rest.find('"') {
                let body = &rest[start + 1..];
                let Some(end) = closing_quote(body) else {
                    break;
                };
                let after = &body[end + 1..];
                if after.trim_start().starts_with(':') {
                    out.entry(&body[..end]).or_insert(n);
                }
                rest = after;
            }
        } else {
            let t = line.trim_start();
            let (t, quote) = match t.chars().next() {
                Some(q @ ('"' | '\'')) => (&t[1..], Some(q)),
                _ => (t, None),
            };
            let key = match quote {
                Some(q) => t.find(q).and_then(|end| {
                    t[end + 1..]
                        .trim_start()
                        .starts_with(':')
                        .then(|| &t[..end])
                }),
                None => t.find(':').map(|end| t[..end].trim_end()),
            };
            if let Some(key) = key.filter(|k| !k.is_empty()) {
                out.entry(key).or_insert(n);
            }
        }
    }
    out
}

/// The index of the `"` that closes a JSON string whose body starts `s`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// The line (1-based) of each `resource "type" "name"` block header, in one pass.
pub(crate) fn resource_lines(text: &str) -> HashMap<(&str, &str), u32> {
    fn quoted(s: &str) -> Option<(&str, &str)> {
        let body = s.strip_prefix('"')?;
        let end = body.find('"')?;
        Some((&body[..end], &body[end + 1..]))
    }
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Ok(n) = u32::try_from(i + 1) else { break };
        let Some(rest) = line.trim_start().strip_prefix("resource") else {
            continue;
        };
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        let Some((ty, rest)) = quoted(rest.trim_start()) else {
            continue;
        };
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        if let Some((name, _)) = quoted(rest.trim_start()) {
            out.entry((ty, name)).or_insert(n);
        }
    }
    out
}
