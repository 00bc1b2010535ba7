//! Amazon DynamoDB: point-in-time recovery, KMS encryption and deletion protection of tables.
//!
//! `dynamodb-table-capacity-autoscaling` is not here: whether a provisioned table scales is
//! recorded in Application Auto Scaling, not in DynamoDB.

use aws_sdk_dynamodb::types::{PointInTimeRecoveryStatus, SseStatus, SseType};
use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const PITR: &str = "dynamodb-table-pitr-enabled";
const KMS: &str = "dynamodb-table-encrypted-kms";
const DELETION_PROTECTION: &str = "dynamodb-table-deletion-protection";

// `run` names `CHECKS`, not `SERVICE.checks`: a future that refers to `SERVICE` cannot be
// checked for `Send` inside `SERVICE` itself (a cycle rustc rejects).
const CHECKS: &[&str] = &[PITR, KMS, DELETION_PROTECTION];

pub const SERVICE: Service = Service {
    id: "dynamodb",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_dynamodb);
    let names = match client
        .list_tables()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(names) => names,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if names.is_empty() {
        out.none_found(CHECKS, "DynamoDB tables");
        return out.finish();
    }
    for name in names {
        let mut arn = ctx.arn("dynamodb", &format!("table/{name}"));
        if ctx.wants_any(&[KMS, DELETION_PROTECTION]) {
            match client.describe_table().table_name(&name).send().await {
                Ok(r) => {
                    let table = r.table;
                    if let Some(a) = table.as_ref().and_then(|t| t.table_arn()) {
                        arn = a.to_string();
                    }
                    let sse = table.as_ref().and_then(|t| t.sse_description());
                    let sse_type = sse.and_then(|s| s.sse_type());
                    let sse_status = sse.and_then(|s| s.status());
                    let key = sse.and_then(|s| s.kms_master_key_arn());
                    // No SSEDescription means the default AWS owned key.
                    out.verdict(
                        KMS,
                        &arn,
                        sse_type == Some(&SseType::Kms) && sse_status == Some(&SseStatus::Enabled),
                        format!(
                            "table {name} is encrypted with KMS key {}",
                            key.unwrap_or("(AWS managed)")
                        ),
                        format!("table {name} is encrypted with the default AWS owned key, not a KMS key"),
                        json!({"SSEType": sse_type.map(|t| t.as_str()),
                               "SSEStatus": sse_status.map(|s| s.as_str()),
                               "KMSMasterKeyArn": key}),
                    );
                    let protected = table.as_ref().and_then(|t| t.deletion_protection_enabled());
                    out.verdict(
                        DELETION_PROTECTION,
                        &arn,
                        protected == Some(true),
                        format!("table {name} has deletion protection enabled"),
                        format!("table {name} does not have deletion protection enabled"),
                        json!({"DeletionProtectionEnabled": protected}),
                    );
                }
                Err(e) => {
                    let e = AwsError::from(e);
                    out.error_on(KMS, &arn, &e);
                    out.error_on(DELETION_PROTECTION, &arn, &e);
                }
            }
        }
        if ctx.wants(PITR) {
            match client
                .describe_continuous_backups()
                .table_name(&name)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r
                        .continuous_backups_description()
                        .and_then(|d| d.point_in_time_recovery_description())
                        .and_then(|p| p.point_in_time_recovery_status());
                    out.verdict(
                        PITR,
                        &arn,
                        status == Some(&PointInTimeRecoveryStatus::Enabled),
                        format!("table {name} has point-in-time recovery enabled"),
                        format!("table {name} does not have point-in-time recovery enabled"),
                        json!({"PointInTimeRecoveryStatus": status.map(|s| s.as_str())}),
                    );
                }
                Err(e) => out.error_on(PITR, &arn, &AwsError::from(e)),
            }
        }
    }
    out.finish()
}
