//! ECR: private repositories, their scanning, tag mutability, lifecycle and repository policies,
//! and the registry's scanning rules.

use aws_sdk_ecr::types::{ImageTagMutability, Repository, ScanFrequency};
use serde_json::{Value, json};

use super::lambda::public_grants;
use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "ecr",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

// `run` names `CHECKS`, not `SERVICE.checks`: rustc cannot check a future that refers to
// `SERVICE` for `Send` inside `SERVICE` itself.
const CHECKS: &[&str] = &[
    "ecr-image-scanning-enabled",
    "ecr-tag-immutability",
    "ecr-lifecycle-policy",
    "ecr-repository-not-public",
];

/// ECR's repository filters: `*` matches any run of characters.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_ecr);
    let repos: Vec<Repository> = match client
        .describe_repositories()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if repos.is_empty() {
        out.none_found(CHECKS, "ECR repositories");
        return out.finish();
    }

    // Registry rules that scan on push or continuously, as (frequency, filters); Err when the
    // registry configuration could not be read.
    let registry_rules: Result<Vec<(String, Vec<String>)>, AwsError> =
        if ctx.wants("ecr-image-scanning-enabled") {
            client
                .get_registry_scanning_configuration()
                .send()
                .await
                .map(|r| {
                    r.scanning_configuration
                        .and_then(|c| c.rules)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|rule| {
                            matches!(
                                rule.scan_frequency,
                                ScanFrequency::ScanOnPush | ScanFrequency::ContinuousScan
                            )
                        })
                        .map(|rule| {
                            (
                                rule.scan_frequency.as_str().to_string(),
                                rule.repository_filters
                                    .into_iter()
                                    .map(|f| f.filter)
                                    .collect(),
                            )
                        })
                        .collect()
                })
                .map_err(AwsError::from)
        } else {
            Ok(Vec::new())
        };

    for repo in &repos {
        let name = repo.repository_name.as_deref().unwrap_or_default();
        let arn = repo
            .repository_arn
            .clone()
            .unwrap_or_else(|| ctx.arn("ecr", &format!("repository/{name}")));

        if ctx.wants("ecr-image-scanning-enabled") {
            let scan_on_push = repo
                .image_scanning_configuration
                .as_ref()
                .is_some_and(|c| c.scan_on_push);
            let matching: Vec<String> = match &registry_rules {
                Ok(rules) => rules
                    .iter()
                    .filter(|(_, filters)| filters.iter().any(|f| wildcard_match(f, name)))
                    .map(|(freq, _)| freq.clone())
                    .collect(),
                Err(_) => Vec::new(),
            };
            match (&registry_rules, scan_on_push || !matching.is_empty()) {
                (_, true) => out.pass(
                    "ecr-image-scanning-enabled",
                    &arn,
                    if scan_on_push {
                        format!("{name} scans images on push")
                    } else {
                        format!(
                            "registry scanning rules scan {name} ({})",
                            matching.join(", ")
                        )
                    },
                    json!({"scanOnPush": scan_on_push, "registry_rule_frequencies": matching}),
                ),
                (Err(e), false) => out.error_on("ecr-image-scanning-enabled", &arn, e),
                (Ok(_), false) => out.fail(
                    "ecr-image-scanning-enabled",
                    &arn,
                    format!("{name} does not scan on push and no registry scanning rule covers it"),
                    json!({"scanOnPush": scan_on_push, "registry_rule_frequencies": matching}),
                ),
            }
        }

        let mutability = repo.image_tag_mutability.as_ref().map(|m| m.as_str());
        out.verdict(
            "ecr-tag-immutability",
            &arn,
            repo.image_tag_mutability == Some(ImageTagMutability::Immutable),
            format!("tags in {name} are immutable"),
            format!(
                "tags in {name} can be overwritten (tag mutability {})",
                mutability.unwrap_or("not reported")
            ),
            json!({"imageTagMutability": mutability}),
        );

        if ctx.wants("ecr-lifecycle-policy") {
            match client
                .get_lifecycle_policy()
                .repository_name(name)
                .send()
                .await
            {
                Ok(r) => out.pass(
                    "ecr-lifecycle-policy",
                    &arn,
                    format!("{name} has a lifecycle policy"),
                    json!({"lifecyclePolicyText": r.lifecycle_policy_text}),
                ),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_lifecycle_policy_not_found_exception()) =>
                {
                    out.fail(
                        "ecr-lifecycle-policy",
                        &arn,
                        format!("{name} has no lifecycle policy"),
                        json!({"lifecyclePolicyText": null}),
                    )
                }
                Err(e) => out.error_on("ecr-lifecycle-policy", &arn, &AwsError::from(e)),
            }
        }

        if ctx.wants("ecr-repository-not-public") {
            match client
                .get_repository_policy()
                .repository_name(name)
                .send()
                .await
            {
                Ok(r) => {
                    match serde_json::from_str::<Value>(r.policy_text.as_deref().unwrap_or("{}")) {
                        Ok(policy) => {
                            let public = public_grants(&policy, &["ecr:*"], true);
                            out.verdict(
                            "ecr-repository-not-public",
                            &arn,
                            public.is_empty(),
                            format!("the policy of {name} grants nothing to everyone without conditions"),
                            format!(
                                "the policy of {name} grants access to everyone ({})",
                                public.join(", ")
                            ),
                            json!({"public_statements": public, "policy": policy}),
                        );
                        }
                        Err(e) => out.error_on(
                            "ecr-repository-not-public",
                            &arn,
                            &format!("the policy of {name} is not JSON: {e}"),
                        ),
                    }
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_repository_policy_not_found_exception()) =>
                {
                    out.pass(
                        "ecr-repository-not-public",
                        &arn,
                        format!("{name} has no repository policy"),
                        json!({"policy": null}),
                    )
                }
                Err(e) => out.error_on("ecr-repository-not-public", &arn, &AwsError::from(e)),
            }
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "app"));
        assert!(wildcard_match("prod-*", "prod-api"));
        assert!(wildcard_match("*-api", "prod-api"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("prod-*", "dev-api"));
        assert!(!wildcard_match("a*a", "a"));
        assert!(wildcard_match("app", "app"));
    }
}
