//! Lambda: functions, their resource-based policies, runtimes, VPC attachment and function URLs.

use aws_sdk_lambda::types::{FunctionConfiguration, FunctionUrlAuthType, PackageType};
use serde_json::{Value, json};

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "lambda",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

// `run` names `CHECKS`, not `SERVICE.checks`: rustc cannot check a future that refers to
// `SERVICE` for `Send` inside `SERVICE` itself.
const CHECKS: &[&str] = &[
    "lambda-function-not-public",
    "lambda-function-supported-runtime",
    "lambda-function-in-vpc",
    "lambda-function-url-not-public",
];

/// Condition keys that pin a grant to named accounts, organisations, source resources or
/// networks, so a `"*"` principal is no longer everyone.
const LIMITING_KEYS: &[&str] = &[
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceowner",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "lambda:eventsourcetoken",
];

fn as_list(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

fn principal_is_everyone(principal: Option<&Value>) -> bool {
    match principal {
        Some(Value::String(s)) => s == "*",
        Some(Value::Object(map)) => map
            .get("AWS")
            .is_some_and(|aws| as_list(Some(aws)).iter().any(|p| p.as_str() == Some("*"))),
        _ => false,
    }
}

/// The `Allow` statements of a resource policy that grant `"*"` one of `actions` (matched
/// case-insensitively; the policy's `*` and `service:*` cover every action of the service, and a
/// wanted `service:*` covers every action the policy names in it) and are not limited: by any condition
/// when `any_condition_limits`, else only by a condition on [`LIMITING_KEYS`]. Returns the
/// statements' `Sid`s (or their index) for the evidence.
pub(super) fn public_grants(
    policy: &Value,
    actions: &[&str],
    any_condition_limits: bool,
) -> Vec<String> {
    as_list(policy.get("Statement"))
        .into_iter()
        .enumerate()
        .filter(|(_, s)| s.get("Effect").and_then(Value::as_str) == Some("Allow"))
        .filter(|(_, s)| principal_is_everyone(s.get("Principal")))
        .filter(|(_, s)| {
            as_list(s.get("Action")).iter().any(|a| {
                let a = a.as_str().unwrap_or_default().to_ascii_lowercase();
                a == "*"
                    || actions.iter().any(|wanted| {
                        let wanted = wanted.to_ascii_lowercase();
                        match wanted.strip_suffix('*') {
                            Some(prefix) => a.starts_with(prefix),
                            None => {
                                a == wanted
                                    || wanted
                                        .split_once(':')
                                        .is_some_and(|(svc, _)| a == format!("{svc}:*"))
                            }
                        }
                    })
            })
        })
        .filter(|(_, s)| {
            let conditions = s.get("Condition").and_then(Value::as_object);
            let limited = conditions.is_some_and(|ops| {
                ops.values()
                    .filter_map(Value::as_object)
                    .flat_map(|keys| keys.keys())
                    .any(|k| {
                        any_condition_limits
                            || LIMITING_KEYS.contains(&k.to_ascii_lowercase().as_str())
                    })
            });
            !limited
        })
        .map(|(i, s)| {
            s.get("Sid")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("statement {i}"))
        })
        .collect()
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_lambda);
    let functions: Vec<FunctionConfiguration> = match client
        .list_functions()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(f) => f,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if functions.is_empty() {
        out.none_found(CHECKS, "Lambda functions");
        return out.finish();
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for f in &functions {
        let name = f.function_name.as_deref().unwrap_or_default();
        let arn = f
            .function_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("lambda", &format!("function:{name}")));
        runtime_check(&mut out, &arn, name, f, &today);

        let vpc = f.vpc_config.as_ref();
        let vpc_id = vpc.and_then(|v| v.vpc_id.as_deref()).unwrap_or_default();
        let subnets = vpc.and_then(|v| v.subnet_ids.clone()).unwrap_or_default();
        out.verdict(
            "lambda-function-in-vpc",
            &arn,
            !vpc_id.is_empty() && !subnets.is_empty(),
            format!("{name} is attached to {vpc_id}"),
            format!("{name} is not attached to a VPC"),
            json!({"VpcId": vpc_id, "SubnetIds": subnets,
                   "SecurityGroupIds": vpc.and_then(|v| v.security_group_ids.clone())}),
        );

        if ctx.wants("lambda-function-not-public") {
            match client.get_policy().function_name(name).send().await {
                Ok(r) => {
                    let doc = r.policy.as_deref().unwrap_or("{}");
                    match serde_json::from_str::<Value>(doc) {
                        Ok(policy) => {
                            let public = public_grants(
                                &policy,
                                &["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"],
                                false,
                            );
                            out.verdict(
                                "lambda-function-not-public",
                                &arn,
                                public.is_empty(),
                                format!("the resource policy of {name} grants invoke only to named principals or with a source condition"),
                                format!("the resource policy of {name} lets anyone invoke it ({})", public.join(", ")),
                                json!({"public_statements": public, "policy": policy}),
                            );
                        }
                        Err(e) => out.error_on(
                            "lambda-function-not-public",
                            &arn,
                            &format!("the resource policy of {name} is not JSON: {e}"),
                        ),
                    }
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_resource_not_found_exception()) =>
                {
                    out.pass(
                        "lambda-function-not-public",
                        &arn,
                        format!("{name} has no resource-based policy"),
                        json!({"policy": null}),
                    );
                }
                Err(e) => out.error_on("lambda-function-not-public", &arn, &AwsError::from(e)),
            }
        }

        if ctx.wants("lambda-function-url-not-public") {
            match client
                .get_function_url_config()
                .function_name(name)
                .send()
                .await
            {
                Ok(r) => out.verdict(
                    "lambda-function-url-not-public",
                    &arn,
                    r.auth_type == FunctionUrlAuthType::AwsIam,
                    format!("the function URL of {name} requires AWS_IAM auth"),
                    format!(
                        "the function URL of {name} uses auth type {}, so anyone can call it",
                        r.auth_type.as_str()
                    ),
                    json!({"FunctionUrl": r.function_url, "AuthType": r.auth_type.as_str()}),
                ),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_resource_not_found_exception()) =>
                {
                    out.pass(
                        "lambda-function-url-not-public",
                        &arn,
                        format!("{name} has no function URL"),
                        json!({"FunctionUrl": null}),
                    );
                }
                Err(e) => out.error_on("lambda-function-url-not-public", &arn, &AwsError::from(e)),
            }
        }
    }
    out.finish()
}

fn runtime_check(out: &mut Out<'_>, arn: &str, name: &str, f: &FunctionConfiguration, today: &str) {
    let check = "lambda-function-supported-runtime";
    if f.package_type == Some(PackageType::Image) {
        out.not_applicable(
            check,
            arn,
            format!("{name} is a container image; its runtime is part of the image"),
        );
        return;
    }
    let Some(runtime) = f.runtime.as_ref().map(|r| r.as_str()) else {
        out.fail(
            check,
            arn,
            format!("{name} reports no runtime"),
            json!({"Runtime": null}),
        );
        return;
    };
    let deprecated = crate::aws_facts::lambda_deprecation(runtime);
    match deprecated {
        Some(date) if date <= today => out.fail(
            check,
            arn,
            format!("{name} runs on {runtime}, deprecated since {date}"),
            json!({"Runtime": runtime, "deprecated_on": date}),
        ),
        _ => out.pass(
            check,
            arn,
            match deprecated {
                Some(date) => format!("{name} runs on {runtime}, supported until {date}"),
                None => format!("{name} runs on {runtime}, which Lambda still supports"),
            },
            json!({"Runtime": runtime, "deprecated_on": deprecated}),
        ),
    }
}
