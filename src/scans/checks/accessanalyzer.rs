//! IAM Access Analyzer (regional): an active external-access analyzer in every Region.

use aws_sdk_accessanalyzer::types::{AnalyzerStatus, Type};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "accessanalyzer",
    global: false,
    checks: &["accessanalyzer-enabled-all-regions"],
    run: start,
};

fn start(ctx: &Ctx) -> BoxFuture<'_, Vec<Finding>> {
    Box::pin(run(ctx))
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    const CHECK: &str = "accessanalyzer-enabled-all-regions";
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_accessanalyzer);
    let mut analyzers = Vec::new();
    let mut items = client.list_analyzers().into_paginator().items().send();
    while let Some(item) = items.next().await {
        match item {
            Ok(a) => analyzers.push(a),
            Err(e) => {
                out.error(&[CHECK], &AwsError::from(e));
                return out.finish();
            }
        }
    }
    // Unused-access analyzers do not report external access, so only ACCOUNT and ORGANIZATION
    // analyzers count.
    let active: Vec<&str> = analyzers
        .iter()
        .filter(|a| a.status == AnalyzerStatus::Active)
        .filter(|a| matches!(a.r#type, Type::Account | Type::Organization))
        .map(|a| a.name.as_str())
        .collect();
    out.verdict(
        CHECK,
        &ctx.arn("access-analyzer", "analyzer/*"),
        !active.is_empty(),
        format!("external access analyzer {} is active", active.join(", ")),
        if analyzers.is_empty() {
            "no IAM Access Analyzer analyzer in this region".to_string()
        } else {
            "no ACTIVE analyzer of type ACCOUNT or ORGANIZATION in this region".to_string()
        },
        json!({"analyzers": analyzers.iter().map(|a| json!({"name": a.name, "type": a.r#type.as_str(),
            "status": a.status.as_str()})).collect::<Vec<_>>()}),
    );
    out.finish()
}
