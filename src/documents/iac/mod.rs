//! Infrastructure as code: CloudFormation and Terraform templates evaluated statically with the
//! catalogue's checks.

use super::analysis::{AnalysisError, Kind, Limits, TemplateFinding};

pub struct IacReport {
    pub findings: Vec<TemplateFinding>,
    pub resources: usize,
    pub resource_types: Vec<String>,
}

pub fn analyse(_kind: Kind, _bytes: &[u8], _limits: &Limits) -> Result<IacReport, AnalysisError> {
    Err(AnalysisError::Malformed(
        "template analysis is not built yet".into(),
    ))
}

pub fn detect(_bytes: &[u8]) -> Option<Kind> {
    None
}

pub fn rule_ids() -> Vec<&'static str> {
    Vec::new()
}
