//! EKS: clusters' API endpoint exposure, control plane logging, secrets encryption and
//! Kubernetes version.

use aws_sdk_eks::types::{Cluster, LogType};
use serde_json::json;

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "eks",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

// `run` names `CHECKS`, not `SERVICE.checks`: rustc cannot check a future that refers to
// `SERVICE` for `Send` inside `SERVICE` itself.
const CHECKS: &[&str] = &[
    "eks-endpoint-not-public",
    "eks-audit-logging",
    "eks-secrets-encrypted",
    "eks-cluster-supported-version",
];

/// Kubernetes minor versions and the day EKS standard support ends (14 months after release).
/// Older minors are out of standard support; newer ones are not listed yet and are in it.
const STANDARD_SUPPORT_ENDS: &[(u32, &str)] = &[
    (23, "2023-10-11"),
    (24, "2024-01-31"),
    (25, "2024-05-01"),
    (26, "2024-06-11"),
    (27, "2024-07-24"),
    (28, "2024-11-26"),
    (29, "2025-03-23"),
    (30, "2025-07-23"),
    (31, "2025-11-26"),
    (32, "2026-03-23"),
    (33, "2026-07-29"),
    (34, "2026-12-02"),
];

/// Whether `version` ("1.NN") is in standard support on `today` (YYYY-MM-DD), with the end date
/// when known. `None` when the version cannot be parsed.
fn in_standard_support(version: &str, today: &str) -> Option<(bool, Option<&'static str>)> {
    let (major, minor) = version.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    let minor: u32 = minor.split('.').next()?.parse().ok()?;
    if major != 1 {
        return Some((major > 1, None));
    }
    let (first, _) = STANDARD_SUPPORT_ENDS.first()?;
    if minor < *first {
        return Some((false, None));
    }
    match STANDARD_SUPPORT_ENDS.iter().find(|(m, _)| *m == minor) {
        Some((_, end)) => Some((today < *end, Some(end))),
        None => Some((true, None)),
    }
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_eks);
    let names: Vec<String> = match client
        .list_clusters()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(n) => n,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if names.is_empty() {
        out.none_found(CHECKS, "EKS clusters");
        return out.finish();
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for name in &names {
        let fallback_arn = ctx.arn("eks", &format!("cluster/{name}"));
        match client.describe_cluster().name(name).send().await {
            Ok(r) => match r.cluster {
                Some(cluster) => evaluate(&mut out, &fallback_arn, name, &cluster, &today),
                None => {
                    for check in CHECKS {
                        out.error_on(check, &fallback_arn, &"DescribeCluster returned no cluster");
                    }
                }
            },
            Err(e) => {
                let e = AwsError::from(e);
                for check in CHECKS {
                    out.error_on(check, &fallback_arn, &e);
                }
            }
        }
    }
    out.finish()
}

fn evaluate(out: &mut Out<'_>, fallback_arn: &str, name: &str, c: &Cluster, today: &str) {
    let arn = c.arn.as_deref().unwrap_or(fallback_arn);

    let vpc = c.resources_vpc_config.as_ref();
    let public = vpc.map(|v| v.endpoint_public_access);
    let private = vpc.map(|v| v.endpoint_private_access);
    let cidrs = vpc
        .and_then(|v| v.public_access_cidrs.clone())
        .unwrap_or_default();
    let open_to_all = cidrs.is_empty() || cidrs.iter().any(|c| c == "0.0.0.0/0" || c == "::/0");
    let evidence = json!({"endpointPublicAccess": public, "endpointPrivateAccess": private,
                          "publicAccessCidrs": cidrs});
    match public {
        Some(false) => out.pass(
            "eks-endpoint-not-public",
            arn,
            format!("the API endpoint of {name} is private only"),
            evidence,
        ),
        Some(true) if !open_to_all => out.pass(
            "eks-endpoint-not-public",
            arn,
            format!(
                "the public API endpoint of {name} is limited to {}",
                cidrs.join(", ")
            ),
            evidence,
        ),
        Some(true) => out.fail(
            "eks-endpoint-not-public",
            arn,
            format!("the API endpoint of {name} is reachable from the whole internet"),
            evidence,
        ),
        None => out.fail(
            "eks-endpoint-not-public",
            arn,
            format!("{name} reports no endpoint access configuration"),
            evidence,
        ),
    }

    let enabled: Vec<&str> = c
        .logging
        .as_ref()
        .and_then(|l| l.cluster_logging.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|s| s.enabled == Some(true))
        .flat_map(|s| s.types.as_deref().unwrap_or_default())
        .map(LogType::as_str)
        .collect();
    out.verdict(
        "eks-audit-logging",
        arn,
        enabled.contains(&"audit"),
        format!("{name} sends audit logs to CloudWatch Logs"),
        format!("audit logging is off on {name}"),
        json!({"enabled_log_types": enabled}),
    );

    // EKS now encrypts all API data by default and deprecated the `resources` list; what the
    // check asks for is envelope encryption under a KMS key of the account, i.e. a provider key.
    let secrets_keys: Vec<&str> = c
        .encryption_config
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.provider.as_ref()?.key_arn.as_deref())
        .collect();
    out.verdict(
        "eks-secrets-encrypted",
        arn,
        !secrets_keys.is_empty(),
        format!(
            "Kubernetes secrets of {name} are envelope-encrypted with {}",
            secrets_keys.join(", ")
        ),
        format!("Kubernetes secrets of {name} are not envelope-encrypted with KMS"),
        json!({"secrets_key_arns": secrets_keys}),
    );

    let version = c.version.as_deref().unwrap_or_default();
    match in_standard_support(version, today) {
        Some((ok, end)) => out.verdict(
            "eks-cluster-supported-version",
            arn,
            ok,
            match end {
                Some(end) => {
                    format!("{name} runs Kubernetes {version}, in standard support until {end}")
                }
                None => format!("{name} runs Kubernetes {version}, in standard support"),
            },
            match end {
                Some(end) => {
                    format!("{name} runs Kubernetes {version}, out of standard support since {end}")
                }
                None => format!("{name} runs Kubernetes {version}, out of standard support"),
            },
            json!({"version": version, "standard_support_ends": end}),
        ),
        None => out.fail(
            "eks-cluster-supported-version",
            arn,
            format!("{name} reports no recognisable Kubernetes version ({version:?})"),
            json!({"version": c.version}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::in_standard_support;

    #[test]
    fn versions() {
        assert_eq!(
            in_standard_support("1.22", "2026-01-01"),
            Some((false, None))
        );
        assert_eq!(
            in_standard_support("1.32", "2026-01-01"),
            Some((true, Some("2026-03-23")))
        );
        assert_eq!(
            in_standard_support("1.32", "2026-03-23"),
            Some((false, Some("2026-03-23")))
        );
        assert_eq!(
            in_standard_support("1.40", "2026-01-01"),
            Some((true, None))
        );
        assert_eq!(in_standard_support("x", "2026-01-01"), None);
    }
}
