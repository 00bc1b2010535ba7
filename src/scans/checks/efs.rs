//! Amazon EFS: encryption at rest, automatic backups and resource policies of file systems, and
//! the root directory and POSIX user their access points enforce.

use aws_sdk_efs::types::Status as BackupStatus;
use serde_json::json;

use super::sqs::open_statements;
use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const ENCRYPTED: &str = "efs-file-system-encrypted";
const ENCRYPTED_AT_CREATION: &str = "efs-filesystem-encryption-at-rest";
const BACKUPS: &str = "efs-automatic-backups-enabled";
const POLICY: &str = "efs-file-system-policy-not-open";
const AP_ROOT: &str = "efs-access-point-root-directory";
const AP_USER: &str = "efs-access-point-user-identity";

// `run` names `CHECKS`, not `SERVICE.checks`: a future that refers to `SERVICE` cannot be
// checked for `Send` inside `SERVICE` itself (a cycle rustc rejects).
const CHECKS: &[&str] = &[
    ENCRYPTED,
    ENCRYPTED_AT_CREATION,
    BACKUPS,
    POLICY,
    AP_ROOT,
    AP_USER,
];

pub const SERVICE: Service = Service {
    id: "efs",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_efs);
    let file_systems = match client
        .describe_file_systems()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(fs) => fs,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if file_systems.is_empty() {
        out.none_found(CHECKS, "EFS file systems");
        return out.finish();
    }
    let mut access_points = 0;
    let mut access_point_error = None;
    for fs in &file_systems {
        let id = fs.file_system_id();
        let arn = fs
            .file_system_arn()
            .map(str::to_string)
            .unwrap_or_else(|| ctx.arn("elasticfilesystem", &format!("file-system/{id}")));

        let encrypted = fs.encrypted() == Some(true);
        let evidence = json!({"Encrypted": fs.encrypted(), "KmsKeyId": fs.kms_key_id()});
        for check in [ENCRYPTED, ENCRYPTED_AT_CREATION] {
            out.verdict(
                check,
                &arn,
                encrypted,
                format!(
                    "file system {id} is encrypted at rest with KMS key {}",
                    fs.kms_key_id().unwrap_or("(AWS managed)")
                ),
                format!("file system {id} is not encrypted at rest (only possible at creation)"),
                evidence.clone(),
            );
        }

        if ctx.wants(BACKUPS) {
            match client
                .describe_backup_policy()
                .file_system_id(id)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.backup_policy().map(|p| p.status());
                    out.verdict(
                        BACKUPS,
                        &arn,
                        status == Some(&BackupStatus::Enabled),
                        format!("file system {id} has automatic backups enabled"),
                        format!("file system {id} does not have automatic backups enabled"),
                        json!({"BackupPolicy": {"Status": status.map(|s| s.as_str())}}),
                    );
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_policy_not_found()) =>
                {
                    out.fail(
                        BACKUPS,
                        &arn,
                        format!(
                            "file system {id} has no backup policy, so automatic backups are off"
                        ),
                        json!({"BackupPolicy": null}),
                    );
                }
                Err(e) => out.error_on(BACKUPS, &arn, &AwsError::from(e)),
            }
        }

        if ctx.wants(POLICY) {
            match client
                .describe_file_system_policy()
                .file_system_id(id)
                .send()
                .await
            {
                Ok(r) => match r.policy() {
                    Some(policy) => match open_statements(
                        policy,
                        &["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                    ) {
                        Ok(open) => out.verdict(
                            POLICY,
                            &arn,
                            open.is_empty(),
                            format!("file system {id}'s policy lets no principal mount or write without a restricting condition"),
                            format!("file system {id}'s policy lets any principal mount or write without a restricting condition"),
                            json!({"open_statements": open}),
                        ),
                        Err(e) => out.error_on(POLICY, &arn, &e),
                    },
                    None => no_policy(&mut out, &arn, id),
                },
                Err(e) if e.as_service_error().is_some_and(|e| e.is_policy_not_found()) => {
                    no_policy(&mut out, &arn, id)
                }
                Err(e) => out.error_on(POLICY, &arn, &AwsError::from(e)),
            }
        }

        if ctx.wants_any(&[AP_ROOT, AP_USER]) {
            let points = match client
                .describe_access_points()
                .file_system_id(id)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
            {
                Ok(points) => points,
                Err(e) => {
                    access_point_error = Some(AwsError::from(e));
                    continue;
                }
            };
            for ap in points {
                access_points += 1;
                let ap_id = ap.access_point_id().unwrap_or("?");
                let ap_arn = ap
                    .access_point_arn()
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        ctx.arn("elasticfilesystem", &format!("access-point/{ap_id}"))
                    });
                // An access point without a root directory exposes the file system's root.
                let path = ap.root_directory().and_then(|r| r.path()).unwrap_or("/");
                out.verdict(
                    AP_ROOT,
                    &ap_arn,
                    !path.trim_end_matches('/').is_empty(),
                    format!("access point {ap_id} of {id} confines clients to {path}"),
                    format!("access point {ap_id} of {id} exposes the file system root /"),
                    json!({"RootDirectory": {"Path": ap.root_directory().and_then(|r| r.path())}}),
                );
                let user = ap.posix_user();
                out.verdict(
                    AP_USER,
                    &ap_arn,
                    user.is_some(),
                    format!(
                        "access point {ap_id} of {id} enforces POSIX user {}:{}",
                        user.map_or(0, |u| u.uid()),
                        user.map_or(0, |u| u.gid())
                    ),
                    format!("access point {ap_id} of {id} does not enforce a POSIX user"),
                    json!({"PosixUser": user.map(|u| json!({"Uid": u.uid(), "Gid": u.gid(),
                        "SecondaryGids": u.secondary_gids()}))}),
                );
            }
        }
    }
    if let Some(e) = access_point_error {
        out.error(&[AP_ROOT, AP_USER], &e);
    } else if access_points == 0 {
        out.none_found(&[AP_ROOT, AP_USER], "EFS access points");
    }
    out.finish()
}

fn no_policy(out: &mut super::Out<'_>, arn: &str, id: &str) {
    out.fail(
        POLICY,
        arn,
        format!("file system {id} has no file system policy, so any client that reaches a mount target can mount and write"),
        json!({"Policy": null}),
    );
}
