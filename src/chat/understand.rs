//! Placeholder until the understanding step lands (same interface).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::kb::KbState;

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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FrameworkRef {
    pub id: String,
    pub version: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Understanding {
    pub intent: Intent,
    pub frameworks: Vec<FrameworkRef>,
    pub services: Vec<String>,
    pub control_ids: Vec<String>,
}

pub async fn understand(_kb: &KbState, question: &str) -> anyhow::Result<Understanding> {
    let lower = question.to_lowercase();
    let intent = if lower.contains("weather") || lower.contains("recipe") {
        Intent::OutOfScope
    } else {
        Intent::RequirementQuestion
    };
    Ok(Understanding {
        intent,
        frameworks: vec![],
        services: vec![],
        control_ids: vec![],
    })
}
