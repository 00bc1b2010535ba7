//! Secrets Manager (regional): rotation configured, rotated recently, rotation keeping to its
//! schedule, unused secrets. ListSecrets carries every field these checks read.

use chrono::{DateTime, Duration, Utc};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const CHECKS: &[&str] = &[
    "secretsmanager-rotation-enabled",
    "secretsmanager-rotated-recently",
    "secretsmanager-rotation-succeeds",
    "secretsmanager-unused-secrets-removed",
];

pub const SERVICE: Service = Service {
    id: "secretsmanager",
    global: false,
    checks: CHECKS,
    run: start,
};

fn start(ctx: &Ctx) -> BoxFuture<'_, Vec<Finding>> {
    Box::pin(run(ctx))
}

const ROTATION: &str = "secretsmanager-rotation-enabled";
const ROTATED: &str = "secretsmanager-rotated-recently";
const SUCCEEDS: &str = "secretsmanager-rotation-succeeds";
const UNUSED: &str = "secretsmanager-unused-secrets-removed";
/// Security Hub's default for both "rotated within" and "accessed within".
const MAX_AGE_DAYS: i64 = 90;
/// A rotation window lasts at most 24 hours, so a rotation is late only a day after it was due.
const ROTATION_GRACE_DAYS: i64 = 1;

fn time(t: Option<aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0))
}

fn stamp(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339())
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_secretsmanager);
    let mut secrets = Vec::new();
    let mut pages = client.list_secrets().into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => secrets.extend(p.secret_list.unwrap_or_default()),
            Err(e) => {
                out.error(CHECKS, &AwsError::from(e));
                return out.finish();
            }
        }
    }
    if secrets.is_empty() {
        out.none_found(CHECKS, "Secrets Manager secrets");
        return out.finish();
    }
    let now = Utc::now();
    let max_age = Duration::days(MAX_AGE_DAYS);
    for s in secrets {
        let name = s.name.clone().unwrap_or_default();
        let arn = s
            .arn
            .clone()
            .unwrap_or_else(|| ctx.arn("secretsmanager", &format!("secret:{name}")));
        let enabled = s.rotation_enabled == Some(true);
        let function = s.rotation_lambda_arn.clone().filter(|a| !a.is_empty());
        let managed_by = s.owning_service.clone();
        let created = time(s.created_date);
        let rotated = time(s.last_rotated_date);
        let accessed = time(s.last_accessed_date);
        let next = time(s.next_rotation_date);
        let days = s
            .rotation_rules
            .as_ref()
            .and_then(|r| r.automatically_after_days);
        let schedule = s
            .rotation_rules
            .as_ref()
            .and_then(|r| r.schedule_expression.clone());
        let evidence = json!({
            "RotationEnabled": s.rotation_enabled,
            "RotationLambdaARN": function,
            "OwningService": managed_by,
            "AutomaticallyAfterDays": days,
            "ScheduleExpression": schedule,
            "CreatedDate": stamp(created),
            "LastRotatedDate": stamp(rotated),
            "LastAccessedDate": stamp(accessed),
            "NextRotationDate": stamp(next),
        });

        out.verdict(
            ROTATION,
            &arn,
            enabled && (function.is_some() || managed_by.is_some()),
            format!("secret {name} rotates automatically"),
            if enabled {
                format!("secret {name} has rotation enabled but no rotation function or managing service")
            } else {
                format!("automatic rotation is not enabled for secret {name}")
            },
            evidence.clone(),
        );

        // A secret never rotated is as old as its creation.
        let age_from = rotated.or(created);
        out.verdict(
            ROTATED,
            &arn,
            age_from.is_some_and(|t| now - t <= max_age),
            format!(
                "secret {name} was last rotated (or created) {}",
                stamp(age_from).unwrap_or_default()
            ),
            match age_from {
                Some(t) => format!(
                    "secret {name} has not been rotated since {}, more than {MAX_AGE_DAYS} days",
                    t.to_rfc3339()
                ),
                None => format!("secret {name} has neither a rotation nor a creation date"),
            },
            evidence.clone(),
        );

        let used_from = accessed.or(created);
        out.verdict(
            UNUSED,
            &arn,
            used_from.is_some_and(|t| now - t <= max_age),
            match accessed {
                Some(t) => format!("secret {name} was last accessed {}", t.to_rfc3339()),
                None => format!(
                    "secret {name} was never accessed but is younger than {MAX_AGE_DAYS} days"
                ),
            },
            match accessed {
                Some(t) => format!(
                    "secret {name} has not been accessed since {}, more than {MAX_AGE_DAYS} days",
                    t.to_rfc3339()
                ),
                None => {
                    format!("secret {name} was never accessed in more than {MAX_AGE_DAYS} days")
                }
            },
            evidence.clone(),
        );

        if !enabled {
            out.not_applicable(
                SUCCEEDS,
                &arn,
                format!("rotation is not enabled for secret {name}"),
            );
            continue;
        }
        let due = next.or_else(|| days.and_then(|d| age_from.map(|t| t + Duration::days(d))));
        match due {
            Some(due) => out.verdict(
                SUCCEEDS,
                &arn,
                now - due <= Duration::days(ROTATION_GRACE_DAYS),
                format!(
                    "secret {name} is on schedule: next rotation due {}",
                    due.to_rfc3339()
                ),
                format!(
                    "the rotation of secret {name} due {} has not completed (last rotated {})",
                    due.to_rfc3339(),
                    stamp(rotated).unwrap_or_else(|| "never".into())
                ),
                evidence,
            ),
            None => out.error_on(
                SUCCEEDS,
                &arn,
                &format!("secret {name} has rotation enabled but no readable schedule or next rotation date"),
            ),
        }
    }
    out.finish()
}
