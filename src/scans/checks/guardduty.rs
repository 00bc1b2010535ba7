//! GuardDuty: a detector is on in each region, its protection plans, and open high-severity
//! findings.
//!
//! GuardDuty allows one detector per account and region. Without one, GuardDuty is off and so
//! is every protection plan, so the feature checks fail on the region rather than not apply.

use std::collections::HashMap;

use aws_sdk_guardduty::operation::get_detector::GetDetectorOutput;
use aws_sdk_guardduty::types::{Condition, FindingCriteria};
use serde_json::{Value, json};

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

const ENABLED: &str = "guardduty-enabled";
const HIGH_FINDINGS: &str = "guardduty-high-severity-findings-addressed";

/// A protection plan check: the detector feature it needs and, for runtime agent management,
/// the additional configuration that must be on as well.
struct Feature {
    check: &'static str,
    /// Features any of which turns the plan on.
    features: &'static [&'static str],
    additional: Option<&'static str>,
    what: &'static str,
}

const FEATURES: &[Feature] = &[
    Feature {
        check: "guardduty-s3-protection-enabled",
        features: &["S3_DATA_EVENTS"],
        additional: None,
        what: "S3 Protection (S3_DATA_EVENTS)",
    },
    Feature {
        check: "guardduty-eks-audit-log-monitoring-enabled",
        features: &["EKS_AUDIT_LOGS"],
        additional: None,
        what: "EKS Audit Log Monitoring (EKS_AUDIT_LOGS)",
    },
    Feature {
        check: "guardduty-lambda-protection-enabled",
        features: &["LAMBDA_NETWORK_LOGS"],
        additional: None,
        what: "Lambda Protection (LAMBDA_NETWORK_LOGS)",
    },
    Feature {
        check: "guardduty-rds-protection-enabled",
        features: &["RDS_LOGIN_EVENTS"],
        additional: None,
        what: "RDS Protection (RDS_LOGIN_EVENTS)",
    },
    Feature {
        check: "guardduty-ec2-malware-protection-enabled",
        features: &["EBS_MALWARE_PROTECTION"],
        additional: None,
        what: "Malware Protection for EC2 (EBS_MALWARE_PROTECTION)",
    },
    Feature {
        check: "guardduty-runtime-monitoring-enabled",
        features: &["RUNTIME_MONITORING"],
        additional: None,
        what: "Runtime Monitoring (RUNTIME_MONITORING)",
    },
    // Runtime Monitoring superseded EKS Runtime Monitoring; either carries the EKS add-on.
    Feature {
        check: "guardduty-eks-runtime-monitoring-enabled",
        features: &["EKS_RUNTIME_MONITORING", "RUNTIME_MONITORING"],
        additional: Some("EKS_ADDON_MANAGEMENT"),
        what: "EKS Runtime Monitoring with EKS_ADDON_MANAGEMENT",
    },
    Feature {
        check: "guardduty-ecs-runtime-monitoring-enabled",
        features: &["RUNTIME_MONITORING"],
        additional: Some("ECS_FARGATE_AGENT_MANAGEMENT"),
        what: "Runtime Monitoring with ECS_FARGATE_AGENT_MANAGEMENT",
    },
    Feature {
        check: "guardduty-ec2-runtime-monitoring-enabled",
        features: &["RUNTIME_MONITORING"],
        additional: Some("EC2_AGENT_MANAGEMENT"),
        what: "Runtime Monitoring with EC2_AGENT_MANAGEMENT",
    },
];

const FEATURE_CHECKS: &[&str] = &[
    "guardduty-s3-protection-enabled",
    "guardduty-eks-audit-log-monitoring-enabled",
    "guardduty-lambda-protection-enabled",
    "guardduty-rds-protection-enabled",
    "guardduty-ec2-malware-protection-enabled",
    "guardduty-runtime-monitoring-enabled",
    "guardduty-eks-runtime-monitoring-enabled",
    "guardduty-ecs-runtime-monitoring-enabled",
    "guardduty-ec2-runtime-monitoring-enabled",
];

pub const SERVICE: Service = Service {
    id: "guardduty",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

// `run` names the checks through this constant, not `SERVICE.checks`: reading SERVICE inside
// `run` makes the compiler's Send check of `run`'s future depend on itself.
const CHECKS: &[&str] = &[
    ENABLED,
    HIGH_FINDINGS,
    "guardduty-s3-protection-enabled",
    "guardduty-eks-audit-log-monitoring-enabled",
    "guardduty-lambda-protection-enabled",
    "guardduty-rds-protection-enabled",
    "guardduty-ec2-malware-protection-enabled",
    "guardduty-runtime-monitoring-enabled",
    "guardduty-eks-runtime-monitoring-enabled",
    "guardduty-ecs-runtime-monitoring-enabled",
    "guardduty-ec2-runtime-monitoring-enabled",
];

/// GuardDuty's "High" band starts at 7.0.
const HIGH_SEVERITY: i64 = 7;

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_guardduty);
    let mut ids = Vec::new();
    let mut pages = client.list_detectors().into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => ids.extend(p.detector_ids.unwrap_or_default()),
            Err(e) => {
                out.error(CHECKS, &AwsError::from(e));
                return out.finish();
            }
        }
    }
    if ids.is_empty() {
        let region_arn = ctx.arn("guardduty", "detector/*");
        for check in [ENABLED].iter().chain(FEATURE_CHECKS).copied() {
            out.fail(
                check,
                &region_arn,
                "GuardDuty has no detector in this region",
                json!({"detectors": []}),
            );
        }
        out.not_applicable(
            HIGH_FINDINGS,
            &region_arn,
            "GuardDuty has no detector in this region",
        );
        return out.finish();
    }
    for id in ids {
        let arn = ctx.arn("guardduty", &format!("detector/{id}"));
        let detector = match client.get_detector().detector_id(&id).send().await {
            Ok(d) => d,
            Err(e) => {
                let e = AwsError::from(e);
                for check in CHECKS {
                    out.error_on(check, &arn, &e);
                }
                continue;
            }
        };
        let status = detector.status.as_ref().map(|s| s.as_str().to_string());
        let on = status.as_deref() == Some("ENABLED");
        out.verdict(
            ENABLED,
            &arn,
            on,
            format!("detector {id} is ENABLED"),
            format!(
                "detector {id} is {}",
                status.as_deref().unwrap_or("in an unknown state")
            ),
            json!({"detector": id, "status": status}),
        );
        if ctx.wants_any(FEATURE_CHECKS) {
            features(&mut out, &arn, &detector, on);
        }
        if ctx.wants(HIGH_FINDINGS) {
            high_findings(&client, &mut out, &arn, &id).await;
        }
    }
    out.finish()
}

/// Feature name → (status, additional configuration name → status).
type FeatureMap = HashMap<String, (String, HashMap<String, String>)>;

fn features(out: &mut Out<'_>, arn: &str, d: &GetDetectorOutput, on: bool) {
    let mut map: FeatureMap = HashMap::new();
    for f in d.features.iter().flatten() {
        let Some(name) = f.name.as_ref() else {
            continue;
        };
        let extra = f
            .additional_configuration
            .iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a.name.as_ref()?.as_str().to_string(),
                    a.status.as_ref().map_or("", |s| s.as_str()).to_string(),
                ))
            })
            .collect();
        let status = f.status.as_ref().map_or("", |s| s.as_str()).to_string();
        map.insert(name.as_str().to_string(), (status, extra));
    }
    // Detectors read through the older data-source API report S3 and EKS audit logs there;
    // the field is deprecated but still the only place those accounts show them.
    #[allow(deprecated)]
    let sources = d.data_sources.as_ref();
    let legacy_s3 = sources
        .and_then(|s| s.s3_logs.as_ref())
        .and_then(|s| s.status.as_ref())
        .map(|s| s.as_str().to_string());
    let legacy_eks = sources
        .and_then(|s| s.kubernetes.as_ref())
        .and_then(|k| k.audit_logs.as_ref())
        .and_then(|a| a.status.as_ref())
        .map(|s| s.as_str().to_string());
    for legacy in [
        ("S3_DATA_EVENTS", legacy_s3),
        ("EKS_AUDIT_LOGS", legacy_eks),
    ] {
        if let (name, Some(status)) = legacy {
            map.entry(name.to_string())
                .or_insert_with(|| (status, HashMap::new()));
        }
    }
    for f in FEATURES {
        let enabled_feature = f
            .features
            .iter()
            .find(|name| map.get(**name).is_some_and(|(s, _)| s == "ENABLED"));
        let additional_on = match (f.additional, enabled_feature) {
            (None, _) => true,
            (Some(extra), Some(name)) => map
                .get(*name)
                .and_then(|(_, x)| x.get(extra))
                .is_some_and(|s| s == "ENABLED"),
            (Some(_), None) => false,
        };
        let evidence: Value = json!({
            "detector_status_enabled": on,
            "features": f.features.iter().map(|n| json!({"name": n,
                "status": map.get(*n).map(|(s, _)| s.as_str()),
                "additional": map.get(*n).map(|(_, x)| x.clone())})).collect::<Vec<_>>(),
        });
        let reason = if !on {
            format!("the detector is suspended, so {} is off", f.what)
        } else if enabled_feature.is_none() {
            format!("{} is not enabled", f.what)
        } else {
            format!(
                "{} is enabled but {} is not",
                enabled_feature.map_or("", |n| n),
                f.additional.unwrap_or("")
            )
        };
        out.verdict(
            f.check,
            arn,
            on && enabled_feature.is_some() && additional_on,
            format!("{} is enabled", f.what),
            reason,
            evidence,
        );
    }
}

async fn high_findings(client: &aws_sdk_guardduty::Client, out: &mut Out<'_>, arn: &str, id: &str) {
    let criteria = FindingCriteria::builder()
        .criterion(
            "severity",
            Condition::builder()
                .greater_than_or_equal(HIGH_SEVERITY)
                .build(),
        )
        .criterion(
            "service.archived",
            Condition::builder().equals("false").build(),
        )
        .build();
    // One page says whether any exist; the count is a lower bound past 50.
    match client
        .list_findings()
        .detector_id(id)
        .finding_criteria(criteria)
        .max_results(50)
        .send()
        .await
    {
        Ok(r) => {
            let found = r.finding_ids.unwrap_or_default();
            let more = r.next_token.is_some_and(|t| !t.is_empty());
            out.verdict(
                HIGH_FINDINGS,
                arn,
                found.is_empty(),
                "no unarchived finding with severity 7.0 or above",
                format!(
                    "{}{} unarchived finding(s) with severity 7.0 or above",
                    found.len(),
                    if more { "+" } else { "" }
                ),
                json!({"open_high_findings": found.iter().take(10).collect::<Vec<_>>(),
                       "count": found.len(), "more": more}),
            );
        }
        Err(e) => out.error_on(HIGH_FINDINGS, arn, &AwsError::from(e)),
    }
}
