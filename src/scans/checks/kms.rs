//! KMS (regional): customer managed keys' rotation, scheduled deletion and key policy.
//!
//! The checks on IAM policies granting decryption on every key
//! (`kms-*-policies-no-decrypt-all-keys`) read IAM policies and live in the IAM module, which
//! inventories those policies once per scan.

use aws_sdk_kms::types::{
    KeyManagerType, KeyMetadata, KeySpec, KeyState, KeyUsageType, OriginType,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::iam::{is_allow, parse_policy, statements, strings};
use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const CHECKS: &[&str] = &[
    "kms-key-rotation-enabled",
    "kms-key-not-pending-deletion",
    "kms-key-not-public",
];

pub const SERVICE: Service = Service {
    id: "kms",
    global: false,
    checks: CHECKS,
    run: start,
};

fn start(ctx: &Ctx) -> BoxFuture<'_, Vec<Finding>> {
    Box::pin(run(ctx))
}

const ROTATION: &str = "kms-key-rotation-enabled";
const DELETION: &str = "kms-key-not-pending-deletion";
const PUBLIC: &str = "kms-key-not-public";

/// Condition keys that tie a wildcard principal to an account, organisation, network or
/// calling service: a statement with one of them is not open to the world.
const RESTRICTING_CONDITION_KEYS: &[&str] = &[
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceowner",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceip",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:userid",
    "aws:username",
    "kms:calleraccount",
];

/// What one customer managed key needs, fetched once.
struct Key {
    arn: String,
    meta: KeyMetadata,
    rotation: Option<Result<bool, AwsError>>,
    policy: Option<Result<Option<String>, AwsError>>,
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let kms = scan_client!(ctx, aws_sdk_kms);
    let mut ids = Vec::new();
    let mut items = kms.list_keys().into_paginator().items().send();
    while let Some(item) = items.next().await {
        match item {
            Ok(k) => ids.extend(k.key_arn.or(k.key_id)),
            Err(e) => {
                out.error(CHECKS, &AwsError::from(e));
                return out.finish();
            }
        }
    }

    let kms = &kms;
    let results = futures_util::stream::iter(ids)
        .map(|id| async move {
            let meta = match kms.describe_key().key_id(&id).send().await {
                Ok(r) => r.key_metadata,
                Err(e) => return Err((id, AwsError::from(e))),
            };
            let Some(meta) = meta else {
                return Err((id, AwsError("DescribeKey returned no key metadata".into())));
            };
            // AWS managed keys are rotated by AWS and their policies are AWS's.
            if meta.key_manager != Some(KeyManagerType::Customer) {
                return Ok(None);
            }
            let arn = meta
                .arn
                .clone()
                .unwrap_or_else(|| ctx.arn("kms", &format!("key/{}", meta.key_id)));
            let rotation = if ctx.wants(ROTATION) && rotation_applies(&meta) {
                Some(
                    kms.get_key_rotation_status()
                        .key_id(&meta.key_id)
                        .send()
                        .await
                        .map(|r| r.key_rotation_enabled)
                        .map_err(AwsError::from),
                )
            } else {
                None
            };
            let policy = if ctx.wants(PUBLIC) {
                Some(
                    kms.get_key_policy()
                        .key_id(&meta.key_id)
                        .policy_name("default")
                        .send()
                        .await
                        .map(|r| r.policy)
                        .map_err(AwsError::from),
                )
            } else {
                None
            };
            Ok(Some(Key {
                arn,
                meta,
                rotation,
                policy,
            }))
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;

    let mut customer = 0;
    let mut rotatable = 0;
    for result in results {
        let key = match result {
            Ok(Some(k)) => k,
            Ok(None) => continue,
            Err((id, e)) => {
                let arn = if id.starts_with("arn:") {
                    id
                } else {
                    ctx.arn("kms", &format!("key/{id}"))
                };
                for check in CHECKS {
                    out.error_on(check, &arn, &e);
                }
                continue;
            }
        };
        customer += 1;
        let meta = &key.meta;
        let state = meta.key_state.as_ref().map(|s| s.as_str().to_string());
        out.verdict(
            DELETION,
            &key.arn,
            meta.key_state != Some(KeyState::PendingDeletion),
            format!(
                "key {} is {}",
                meta.key_id,
                state.as_deref().unwrap_or("in an unknown state")
            ),
            format!(
                "key {} is scheduled for deletion on {}",
                meta.key_id,
                meta.deletion_date
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "an unknown date".into())
            ),
            json!({"KeyState": state, "DeletionDate": meta.deletion_date.map(|d| d.to_string()),
                   "PendingDeletionWindowInDays": meta.pending_deletion_window_in_days}),
        );
        match key.rotation {
            Some(Ok(enabled)) => {
                rotatable += 1;
                out.verdict(
                    ROTATION,
                    &key.arn,
                    enabled,
                    format!("automatic rotation is enabled for key {}", meta.key_id),
                    format!("automatic rotation is disabled for key {}", meta.key_id),
                    json!({"KeyRotationEnabled": enabled, "KeySpec": meta.key_spec.as_ref().map(|s| s.as_str()),
                           "Origin": meta.origin.as_ref().map(|o| o.as_str())}),
                );
            }
            Some(Err(e)) => {
                rotatable += 1;
                out.error_on(ROTATION, &key.arn, &e);
            }
            None => {}
        }
        match key.policy {
            Some(Ok(Some(raw))) => match parse_policy(&raw) {
                Some(doc) => {
                    let open = public_statements(&doc);
                    out.verdict(
                        PUBLIC,
                        &key.arn,
                        open.is_empty(),
                        format!("the policy of key {} grants no unconditioned wildcard principal", meta.key_id),
                        format!("the policy of key {} allows Principal \"*\" without a restricting condition", meta.key_id),
                        json!({"offending": open}),
                    );
                }
                None => out.error_on(PUBLIC, &key.arn, &"the key policy is not valid JSON"),
            },
            Some(Ok(None)) => out.error_on(PUBLIC, &key.arn, &"GetKeyPolicy returned no policy"),
            Some(Err(e)) => out.error_on(PUBLIC, &key.arn, &e),
            None => {}
        }
    }
    if customer == 0 {
        out.none_found(CHECKS, "customer managed KMS keys");
    } else if rotatable == 0 {
        out.none_found(
            &[ROTATION],
            "enabled customer managed symmetric KMS keys with AWS-generated key material",
        );
    }
    out.finish()
}

/// Automatic rotation exists only for enabled symmetric encryption keys whose material KMS
/// generated itself (not imported, not in a custom key store).
fn rotation_applies(meta: &KeyMetadata) -> bool {
    meta.key_state == Some(KeyState::Enabled)
        && meta
            .key_spec
            .as_ref()
            .is_none_or(|s| *s == KeySpec::SymmetricDefault)
        && meta
            .key_usage
            .as_ref()
            .is_none_or(|u| *u == KeyUsageType::EncryptDecrypt)
        && meta
            .origin
            .as_ref()
            .is_none_or(|o| *o == OriginType::AwsKms)
}

fn wildcard_principal(statement: &Value) -> bool {
    match statement.get("Principal") {
        Some(Value::String(s)) => s == "*",
        Some(Value::Object(map)) => map
            .get("AWS")
            .is_some_and(|v| strings(Some(v)).contains(&"*")),
        _ => false,
    }
}

fn restricted(statement: &Value) -> bool {
    let Some(Value::Object(operators)) = statement.get("Condition") else {
        return false;
    };
    operators.values().any(|keys| {
        keys.as_object().is_some_and(|keys| {
            keys.keys()
                .any(|k| RESTRICTING_CONDITION_KEYS.contains(&k.to_ascii_lowercase().as_str()))
        })
    })
}

fn public_statements(doc: &Value) -> Vec<Value> {
    statements(doc)
        .into_iter()
        .filter(|s| is_allow(s) && wildcard_principal(s) && !restricted(s))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_principals_need_a_restricting_condition() {
        let open = json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}]});
        assert_eq!(public_statements(&open).len(), 1);
        let scoped = json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
            "Condition": {"StringEquals": {"kms:CallerAccount": "123456789012"}}}]});
        assert!(public_statements(&scoped).is_empty());
        let account = json!({"Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"}});
        assert!(public_statements(&account).is_empty());
    }
}
