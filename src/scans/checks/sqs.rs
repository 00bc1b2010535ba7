//! Amazon SQS: queue encryption at rest and queue policies open to everyone.
//!
//! Also holds [`open_statements`], the resource-policy reading that SNS and EFS share.

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const ENCRYPTED: &str = "sqs-queue-encrypted";
const NOT_PUBLIC: &str = "sqs-queue-not-public";

// `run` names `CHECKS`, not `SERVICE.checks`: a future that refers to `SERVICE` cannot be
// checked for `Send` inside `SERVICE` itself (a cycle rustc rejects).
const CHECKS: &[&str] = &[ENCRYPTED, NOT_PUBLIC];

pub const SERVICE: Service = Service {
    id: "sqs",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_sqs);
    let urls = match client
        .list_queues()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(urls) => urls,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if urls.is_empty() {
        out.none_found(CHECKS, "SQS queues");
        return out.finish();
    }
    for url in urls {
        let name = url.rsplit('/').next().unwrap_or(&url).to_string();
        let attributes = match client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .attribute_names(QueueAttributeName::Policy)
            .attribute_names(QueueAttributeName::KmsMasterKeyId)
            .attribute_names(QueueAttributeName::SqsManagedSseEnabled)
            .send()
            .await
        {
            Ok(r) => r.attributes.unwrap_or_default(),
            Err(e) => {
                let arn = ctx.arn("sqs", &name);
                let e = AwsError::from(e);
                out.error_on(ENCRYPTED, &arn, &e);
                out.error_on(NOT_PUBLIC, &arn, &e);
                continue;
            }
        };
        let attr = |n: &QueueAttributeName| attributes.get(n).filter(|v| !v.is_empty());
        let arn = attr(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_else(|| ctx.arn("sqs", &name));

        let kms_key = attr(&QueueAttributeName::KmsMasterKeyId);
        let sse_sqs = attr(&QueueAttributeName::SqsManagedSseEnabled)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        out.verdict(
            ENCRYPTED,
            &arn,
            kms_key.is_some() || sse_sqs,
            match kms_key {
                Some(key) => format!("queue {name} is encrypted with KMS key {key} (SSE-KMS)"),
                None => format!("queue {name} is encrypted with SQS-managed keys (SSE-SQS)"),
            },
            format!("queue {name} has neither SSE-KMS nor SSE-SQS enabled"),
            json!({"KmsMasterKeyId": kms_key, "SqsManagedSseEnabled": attr(&QueueAttributeName::SqsManagedSseEnabled)}),
        );

        if ctx.wants(NOT_PUBLIC) {
            match attr(&QueueAttributeName::Policy) {
                None => out.pass(
                    NOT_PUBLIC,
                    &arn,
                    format!("queue {name} has no access policy, so only the owner account has access"),
                    json!({"Policy": null}),
                ),
                Some(policy) => match open_statements(policy, &[]) {
                    Ok(open) => out.verdict(
                        NOT_PUBLIC,
                        &arn,
                        open.is_empty(),
                        format!("no statement of queue {name}'s policy allows everyone without a restricting condition"),
                        format!("queue {name}'s policy allows any principal without a restricting condition"),
                        json!({"open_statements": open}),
                    ),
                    Err(e) => out.error_on(NOT_PUBLIC, &arn, &e),
                },
            }
        }
    }
    out.finish()
}

/// The statements of a resource policy that allow everyone (principal `*`, or `NotPrincipal`)
/// any of `actions` (all actions when empty) with no condition narrowing who that is.
///
/// A condition narrows when it pins a key that identifies the caller or the caller's origin
/// (source account, ARN, organisation, VPC, IP) to values that are not `*`. Negated, `…IfExists` and `ForAllValues` operators do
/// not narrow: a request without the key still matches them; nor does `Null`.
pub(super) fn open_statements(policy: &str, actions: &[&str]) -> Result<Vec<Value>, String> {
    let policy: Value =
        serde_json::from_str(policy).map_err(|e| format!("the policy is not valid JSON: {e}"))?;
    let statements = match policy.get("Statement") {
        Some(Value::Array(list)) => list.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(statements
        .into_iter()
        .filter(|s| {
            s.get("Effect")
                .and_then(Value::as_str)
                .is_some_and(|e| e.eq_ignore_ascii_case("allow"))
                && (s.get("NotPrincipal").is_some()
                    || s.get("Principal").is_some_and(principal_is_everyone))
                && allows_any(s, actions)
                && !s.get("Condition").is_some_and(condition_narrows)
        })
        .collect())
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn principal_is_everyone(p: &Value) -> bool {
    match p {
        Value::String(s) => s == "*",
        Value::Object(map) => map
            .get("AWS")
            .is_some_and(|aws| strings(aws).contains(&"*")),
        _ => false,
    }
}

fn allows_any(statement: &Value, actions: &[&str]) -> bool {
    if let Some(action) = statement.get("Action") {
        let patterns = strings(action);
        actions.is_empty()
            || actions
                .iter()
                .any(|a| patterns.iter().any(|p| glob_match(p, a)))
    } else if let Some(not_action) = statement.get("NotAction") {
        let excluded = strings(not_action);
        actions.is_empty()
            || actions
                .iter()
                .any(|a| !excluded.iter().any(|p| glob_match(p, a)))
    } else {
        false
    }
}

const NARROWING_KEYS: &[&str] = &[
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
];

fn condition_narrows(condition: &Value) -> bool {
    let Value::Object(operators) = condition else {
        return false;
    };
    operators.iter().any(|(operator, keys)| {
        let op = operator.strip_prefix("ForAnyValue:").unwrap_or(operator);
        let positive =
            op != "Null" && !op.contains("Not") && !op.ends_with("IfExists") && !op.contains(':');
        let Value::Object(keys) = keys else {
            return false;
        };
        positive
            && keys.iter().any(|(key, values)| {
                let key = key.to_ascii_lowercase();
                let values = strings(values);
                NARROWING_KEYS.contains(&key.as_str())
                    && !values.is_empty()
                    && !values.iter().any(|v| {
                        *v == "*"
                            || *v == "0.0.0.0/0"
                            || *v == "::/0"
                            || v.eq_ignore_ascii_case("false")
                    })
            })
    })
}

/// IAM's action matching: `*` any run of characters, `?` one, case-insensitive.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_statements_reads_principals_actions_and_conditions() {
        let open =
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"sqs:SendMessage"}]}"#;
        assert_eq!(open_statements(open, &[]).map(|s| s.len()), Ok(1));
        assert_eq!(
            open_statements(open, &["sqs:ReceiveMessage"]).map(|s| s.len()),
            Ok(0)
        );
        let narrowed = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":"SNS:*",
            "Condition":{"StringEquals":{"AWS:SourceOwner":"123456789012"}}}}"#;
        assert_eq!(
            open_statements(narrowed, &["sns:Publish"]).map(|s| s.len()),
            Ok(0)
        );
        let if_exists = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"*",
            "Condition":{"StringEqualsIfExists":{"aws:SourceAccount":"123456789012"}}}}"#;
        assert_eq!(open_statements(if_exists, &[]).map(|s| s.len()), Ok(1));
        let null_only = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"sqs:*",
            "Condition":{"Null":{"aws:SourceArn":"true"}}}}"#;
        assert_eq!(open_statements(null_only, &[]).map(|s| s.len()), Ok(1));
        let account = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1:root"},"Action":"*"}}"#;
        assert_eq!(open_statements(account, &[]).map(|s| s.len()), Ok(0));
        assert!(open_statements("not json", &[]).is_err());
    }

    #[test]
    fn glob_matches_like_iam() {
        assert!(glob_match("sqs:*", "SQS:SendMessage"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("sns:Pub?ish", "sns:publish"));
        assert!(!glob_match("sns:Subscribe", "sns:Publish"));
        assert!(glob_match(
            "elasticfilesystem:Client*",
            "elasticfilesystem:ClientWrite"
        ));
    }
}
