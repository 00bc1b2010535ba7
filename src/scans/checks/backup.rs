//! AWS Backup: a backup plan in the region, vault encryption keys and encrypted recovery points.

use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const PLAN_EXISTS: &str = "backup-plan-exists";
const VAULT_KMS: &str = "backup-vault-kms-encrypted";
const RECOVERY_POINT: &str = "backup-recovery-point-encrypted";

// `run` names `CHECKS`, not `SERVICE.checks`: a future that refers to `SERVICE` cannot be
// checked for `Send` inside `SERVICE` itself (a cycle rustc rejects).
const CHECKS: &[&str] = &[PLAN_EXISTS, VAULT_KMS, RECOVERY_POINT];

pub const SERVICE: Service = Service {
    id: "backup",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_backup);

    if ctx.wants(PLAN_EXISTS) {
        match client
            .list_backup_plans()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
        {
            Ok(plans) => {
                let names: Vec<&str> = plans.iter().filter_map(|p| p.backup_plan_name()).collect();
                out.verdict(
                    PLAN_EXISTS,
                    &ctx.arn("backup", "backup-plan:*"),
                    !plans.is_empty(),
                    format!("{} backup plan(s) defined in {}", plans.len(), ctx.region),
                    format!("no backup plan is defined in {}", ctx.region),
                    json!({"backup_plans": names}),
                );
            }
            Err(e) => out.error(&[PLAN_EXISTS], &AwsError::from(e)),
        }
    }

    if !ctx.wants_any(&[VAULT_KMS, RECOVERY_POINT]) {
        return out.finish();
    }
    let vaults = match client
        .list_backup_vaults()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(v) => v,
        Err(e) => {
            out.error(&[VAULT_KMS, RECOVERY_POINT], &AwsError::from(e));
            return out.finish();
        }
    };
    if vaults.is_empty() {
        out.none_found(&[VAULT_KMS, RECOVERY_POINT], "backup vaults");
        return out.finish();
    }
    let mut recovery_points = 0;
    let mut listing_failed = false;
    for vault in &vaults {
        let Some(name) = vault.backup_vault_name() else {
            continue;
        };
        let arn = vault
            .backup_vault_arn()
            .map(str::to_string)
            .unwrap_or_else(|| ctx.arn("backup", &format!("backup-vault:{name}")));
        let key = vault.encryption_key_arn();
        out.verdict(
            VAULT_KMS,
            &arn,
            key.is_some_and(|k| !k.is_empty()),
            format!(
                "vault {name} encrypts recovery points with KMS key {}",
                key.unwrap_or_default()
            ),
            format!("vault {name} has no KMS encryption key"),
            json!({"EncryptionKeyArn": key,
                   "EncryptionKeyType": vault.encryption_key_type().map(|t| t.as_str())}),
        );

        if ctx.wants(RECOVERY_POINT) {
            match client
                .list_recovery_points_by_backup_vault()
                .backup_vault_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
            {
                Ok(points) => {
                    for p in points {
                        recovery_points += 1;
                        let point_arn = p.recovery_point_arn().unwrap_or(&arn);
                        out.verdict(
                            RECOVERY_POINT,
                            point_arn,
                            p.is_encrypted(),
                            format!("recovery point in vault {name} is encrypted"),
                            format!("recovery point in vault {name} is not encrypted"),
                            json!({"IsEncrypted": p.is_encrypted(),
                                   "EncryptionKeyArn": p.encryption_key_arn(),
                                   "ResourceArn": p.resource_arn()}),
                        );
                    }
                }
                Err(e) => {
                    listing_failed = true;
                    out.error_on(RECOVERY_POINT, &arn, &AwsError::from(e));
                }
            }
        }
    }
    if recovery_points == 0 && !listing_failed {
        out.none_found(&[RECOVERY_POINT], "recovery points");
    }
    out.finish()
}
