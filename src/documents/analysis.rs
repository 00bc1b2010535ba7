//! What an analysis produces, whatever the document: the shared vocabulary of the template
//! analysers (`iac`), the prose analyser (`prose`) and the capability around them (storage, API,
//! report). Pure data: no I/O here.

use std::time::Instant;

use serde::Serialize;

/// A document's type, recognised from its content (never from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Pdf,
    Docx,
    Markdown,
    Text,
    /// CloudFormation, YAML (with the short-form tags) or JSON.
    Cloudformation,
    /// Terraform HCL (`.tf`).
    Terraform,
    /// `terraform show -json` of a plan (or of a state).
    TerraformPlan,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Pdf,
        Kind::Docx,
        Kind::Markdown,
        Kind::Text,
        Kind::Cloudformation,
        Kind::Terraform,
        Kind::TerraformPlan,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Markdown => "markdown",
            Kind::Text => "text",
            Kind::Cloudformation => "cloudformation",
            Kind::Terraform => "terraform",
            Kind::TerraformPlan => "terraform_plan",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Infrastructure as code (findings per resource and check) rather than prose (findings per
    /// control and statement).
    pub fn is_template(self) -> bool {
        matches!(
            self,
            Kind::Cloudformation | Kind::Terraform | Kind::TerraformPlan
        )
    }
}

/// Finding severities, most severe first (the catalogue's scale).
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "informational"];

/// A severity's place in [`SEVERITIES`] (an unknown one sorts last), for ordering findings.
pub fn severity_rank(severity: &str) -> usize {
    SEVERITIES
        .iter()
        .position(|s| *s == severity)
        .unwrap_or(SEVERITIES.len())
}

/// The verdict of one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Template: the resource satisfies the check.
    Pass,
    /// Template: the resource breaks the check.
    Fail,
    /// Template: the value that decides is an intrinsic function, a variable or a reference that
    /// cannot be resolved statically; reported, never guessed.
    Unknown,
    /// Prose: the document states a measure that meets the control.
    Addressed,
    /// Prose: the document states the opposite of what the control requires.
    Contradicted,
    /// Prose: the control applies to what the document describes, and it says nothing about it.
    Silent,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pass,
        Status::Fail,
        Status::Unknown,
        Status::Addressed,
        Status::Contradicted,
        Status::Silent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
            Status::Addressed => "addressed",
            Status::Contradicted => "contradicted",
            Status::Silent => "silent",
        }
    }
}

/// One verdict of a template check on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFinding {
    /// The catalogue id of the check (`s3-bucket-level-public-access-blocked`), the same id a live
    /// scan reports; its severity, title and control mappings come from the KB.
    pub check: String,
    /// `Pass`, `Fail` or `Unknown`.
    pub status: Status,
    /// CloudFormation logical id (`LogsBucket`) or Terraform address (`aws_s3_bucket.logs`,
    /// `module.net.aws_security_group.web`).
    pub resource: String,
    /// `AWS::S3::Bucket` or `aws_s3_bucket`, as written in the document.
    pub resource_type: String,
    /// 1-based line where the resource is declared (its logical id / `resource` block), when known
    /// (plan JSON has no useful lines: `None`).
    pub line: Option<u32>,
    /// Why, in one sentence a reader can act on, naming the property that decided
    /// (`PublicAccessBlockConfiguration.RestrictPublicBuckets is false`), or for `Unknown` the
    /// unresolved expression (`BucketEncryption depends on !If [UseKms, …]`).
    pub reason: String,
}

/// One sentence of a prose document with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    pub text: String,
    /// 1-based page (PDF only).
    pub page: Option<u32>,
    /// The nearest heading above it (Markdown `#`, DOCX heading styles, PDF: none).
    pub heading: Option<String>,
}

/// One verdict of a prose analysis on one control.
#[derive(Debug, Clone, PartialEq)]
pub struct ProseFinding {
    /// The control as `GET /api/v1/kb/controls/{id}` accepts it: `<framework>:<native id>`
    /// (`hipaa-sr:164.312(a)(2)(iv)`, `pci-dss:3.5.1`), with the version when the KB holds
    /// several (`cis-aws@3.0.0:2.2.1`). The capability resolves it to the canonical id.
    pub control: String,
    /// `Addressed`, `Contradicted` or `Silent`.
    pub status: Status,
    /// The measure it is about (`encryption_at_rest`, `mfa`, …).
    pub measure: String,
    /// `critical` … `informational`.
    pub severity: String,
    /// The sentence that decided (`Addressed`, `Contradicted`); `None` when `Silent`.
    pub quote: Option<Sentence>,
    /// Why, and for `Contradicted`/`Silent` what to change or add.
    pub reason: String,
}

/// What a prose document says, beyond its findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProseFacts {
    /// KB service ids (`s3`, `rds`, `ebs`, …) named in the text.
    pub services: Vec<String>,
    /// `health_records`, `cardholder_data`, `personal_data`.
    pub data_kinds: Vec<String>,
    /// Measures stated (ids as in `ProseFinding::measure`).
    pub measures: Vec<String>,
    /// Framework ids in scope (`hipaa-sr`, `pci-dss`, `gdpr`, `soc2`, `cis-aws`, `aws-fsbp`,
    /// `aws-wa-security`): the ones asked for, else the ones the content implies.
    pub frameworks: Vec<String>,
    pub sentences: usize,
    pub pages: Option<u32>,
}

/// Why a document could not be analysed: stored on the document and shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// Broken or truncated content (`YAML line 12: mapping values are not allowed here`).
    #[error("{0}")]
    Malformed(String),
    /// A resource bound was hit (nesting depth, expanded size, entry count, time).
    #[error("{0}")]
    TooComplex(String),
}

/// The bounds every parser honours; an analysis past its deadline stops with `TooComplex`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadline: Instant,
    /// Most bytes any decompressed part may expand to (DOCX entries, PDF streams).
    pub max_expanded_bytes: u64,
    /// Deepest nesting accepted in YAML/JSON/HCL/XML.
    pub max_depth: usize,
}

impl Limits {
    pub fn check_time(&self) -> Result<(), AnalysisError> {
        if Instant::now() > self.deadline {
            Err(AnalysisError::TooComplex(
                "the analysis took longer than allowed".into(),
            ))
        } else {
            Ok(())
        }
    }
}
