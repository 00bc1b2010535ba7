//! Amazon CloudFront: how each distribution talks to viewers and origins, logs, certificates,
//! WAF, origin access control, field-level encryption and geo restriction.
//!
//! Every check reads the full distribution config (one call per distribution): the listing's
//! summaries lack the logging configuration and default root object, and some endpoints
//! (moto among them) return summaries without origins or behaviors. Standard logging v2 lives in CloudWatch Logs (delivery sources in us-east-1), read only when a
//! distribution has no legacy S3 logging.

use std::collections::HashSet;

use aws_sdk_cloudfront::types::{
    DistributionSummary, GeoRestrictionType, Origin, OriginProtocolPolicy, SslProtocol,
    SslSupportMethod, ViewerProtocolPolicy,
};
use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const VIEWER_HTTPS: &str = "cloudfront-viewer-https-required";
const ORIGIN_HTTPS: &str = "cloudfront-origin-traffic-encrypted";
const LOGGING: &str = "cloudfront-access-logging";
const ROOT_OBJECT: &str = "cloudfront-default-root-object";
const WAF: &str = "cloudfront-waf-enabled";
const TLS_POLICY: &str = "cloudfront-recommended-tls-policy";
const S3_OAC: &str = "cloudfront-s3-origin-access-control";
const LAMBDA_OAC: &str = "cloudfront-lambda-url-origin-access-control";
const FLE: &str = "cloudfront-field-level-encryption";
const GEO: &str = "cloudfront-geo-restriction";
const FAILOVER: &str = "cloudfront-origin-failover";
const CUSTOM_CERT: &str = "cloudfront-custom-certificate";
const SNI: &str = "cloudfront-sni-https";
const ORIGIN_SSL: &str = "cloudfront-no-deprecated-origin-ssl";

// `run` names `CHECKS`, not `SERVICE.checks`: a future that refers to `SERVICE` cannot be
// checked for `Send` inside `SERVICE` itself (a cycle rustc rejects).
const CHECKS: &[&str] = &[
    VIEWER_HTTPS,
    ORIGIN_HTTPS,
    LOGGING,
    ROOT_OBJECT,
    WAF,
    TLS_POLICY,
    S3_OAC,
    LAMBDA_OAC,
    FLE,
    GEO,
    FAILOVER,
    CUSTOM_CERT,
    SNI,
    ORIGIN_SSL,
];

pub const SERVICE: Service = Service {
    id: "cloudfront",
    global: true,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

fn is_s3_origin(o: &Origin) -> bool {
    // Website endpoints are plain HTTP custom origins and cannot use OAC.
    let domain = o.domain_name();
    o.s3_origin_config().is_some()
        || ((domain.contains(".s3.") || domain.contains(".s3-"))
            && domain.ends_with(".amazonaws.com")
            && !domain.contains("s3-website"))
}

fn is_lambda_url_origin(o: &Origin) -> bool {
    o.domain_name().contains(".lambda-url.") && o.domain_name().ends_with(".on.aws")
}

fn has_oac(o: &Origin) -> bool {
    o.origin_access_control_id()
        .is_some_and(|id| !id.is_empty())
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_cloudfront);
    let distributions: Vec<DistributionSummary> = match client
        .list_distributions()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(d) => d,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if distributions.is_empty() {
        out.none_found(CHECKS, "CloudFront distributions");
        return out.finish();
    }
    // Distributions with a standard logging v2 delivery, read on first need.
    let mut v2_logged: Option<Result<HashSet<String>, AwsError>> = None;

    for d in &distributions {
        let arn = d.arn();
        let id = d.id();
        let config = match client.get_distribution_config().id(id).send().await {
            Ok(r) => r.distribution_config,
            Err(e) => {
                let e = AwsError::from(e);
                for &check in CHECKS {
                    out.error_on(check, arn, &e);
                }
                continue;
            }
        };
        let Some(d) = config else {
            let e = format!("distribution {id} returned no configuration");
            for &check in CHECKS {
                out.error_on(check, arn, &e);
            }
            continue;
        };
        let origins: &[Origin] = d.origins().map(|o| o.items()).unwrap_or_default();
        let default_behavior = d.default_cache_behavior();
        let behaviors: Vec<(&str, &ViewerProtocolPolicy)> = default_behavior
            .map(|b| ("default", b.viewer_protocol_policy()))
            .into_iter()
            .chain(
                d.cache_behaviors()
                    .map(|c| c.items())
                    .unwrap_or_default()
                    .iter()
                    .map(|b| (b.path_pattern(), b.viewer_protocol_policy())),
            )
            .collect();

        // Viewer HTTPS: every behavior https-only or redirect-to-https.
        let plain_http: Vec<&str> = behaviors
            .iter()
            .filter(|(_, p)| **p == ViewerProtocolPolicy::AllowAll)
            .map(|(path, _)| *path)
            .collect();
        let viewers_https = default_behavior.is_some() && plain_http.is_empty();
        out.verdict(
            VIEWER_HTTPS,
            arn,
            viewers_https,
            format!("every cache behavior of {id} requires HTTPS or redirects to it"),
            format!(
                "cache behavior(s) {} of {id} allow plain HTTP viewers",
                plain_http.join(", ")
            ),
            json!({"behaviors": behaviors.iter().map(|(path, p)| json!({"path": path, "ViewerProtocolPolicy": p.as_str()})).collect::<Vec<_>>()}),
        );

        // Origin HTTPS: custom origins https-only, or match-viewer behind HTTPS-only viewers.
        let custom: Vec<(&Origin, &aws_sdk_cloudfront::types::CustomOriginConfig)> = origins
            .iter()
            .filter_map(|o| o.custom_origin_config().map(|c| (o, c)))
            .collect();
        let plain_origins: Vec<&str> = custom
            .iter()
            .filter(|(_, c)| match c.origin_protocol_policy() {
                OriginProtocolPolicy::HttpsOnly => false,
                OriginProtocolPolicy::MatchViewer => !viewers_https,
                _ => true,
            })
            .map(|(o, _)| o.id())
            .collect();
        out.verdict(
            ORIGIN_HTTPS,
            arn,
            plain_origins.is_empty(),
            if custom.is_empty() {
                format!("{id} has no custom origins; its S3 origins are reached over HTTPS")
            } else {
                format!("{id} reaches all its custom origins over HTTPS")
            },
            format!(
                "{id} can reach origin(s) {} over plain HTTP",
                plain_origins.join(", ")
            ),
            json!({"custom_origins": custom.iter().map(|(o, c)| json!({"id": o.id(),
                "OriginProtocolPolicy": c.origin_protocol_policy().as_str()})).collect::<Vec<_>>(),
                "viewers_https_only": viewers_https}),
        );

        // Deprecated origin SSL protocols on custom origins.
        if custom.is_empty() {
            out.not_applicable(ORIGIN_SSL, arn, format!("{id} has no custom origins"));
        } else {
            let deprecated = [SslProtocol::SsLv3, SslProtocol::TlSv1, SslProtocol::TlSv11];
            let weak: Vec<String> = custom
                .iter()
                .flat_map(|(o, c)| {
                    c.origin_ssl_protocols()
                        .map(|p| p.items())
                        .unwrap_or_default()
                        .iter()
                        .filter(|p| deprecated.contains(p))
                        .map(move |p| format!("{}: {}", o.id(), p.as_str()))
                })
                .collect();
            out.verdict(
                ORIGIN_SSL,
                arn,
                weak.is_empty(),
                format!("no custom origin of {id} allows SSLv3, TLSv1 or TLSv1.1"),
                format!(
                    "custom origins of {id} allow deprecated protocols: {}",
                    weak.join(", ")
                ),
                json!({"deprecated_origin_protocols": weak}),
            );
        }

        let web_acl = d.web_acl_id().unwrap_or_default();
        out.verdict(
            WAF,
            arn,
            !web_acl.is_empty(),
            format!("{id} is associated with web ACL {web_acl}"),
            format!("{id} has no WAF web ACL"),
            json!({"WebACLId": web_acl}),
        );

        // Viewer certificate: custom certificate, SNI, TLS policy.
        let cert = d.viewer_certificate();
        // CloudFront rejects a config that names a certificate and also asks for the default
        // one, so a named certificate is what is served.
        let custom_cert = cert.is_some_and(|c| {
            c.acm_certificate_arn().is_some_and(|a| !a.is_empty())
                || c.iam_certificate_id().is_some_and(|a| !a.is_empty())
        });
        let method = cert.and_then(|c| c.ssl_support_method());
        let min_tls = cert
            .and_then(|c| c.minimum_protocol_version())
            .map(|v| v.as_str());
        let cert_evidence = json!({
            "CloudFrontDefaultCertificate": cert.and_then(|c| c.cloud_front_default_certificate()),
            "ACMCertificateArn": cert.and_then(|c| c.acm_certificate_arn()),
            "IAMCertificateId": cert.and_then(|c| c.iam_certificate_id()),
            "SSLSupportMethod": method.map(|m| m.as_str()),
            "MinimumProtocolVersion": min_tls,
        });
        out.verdict(
            CUSTOM_CERT,
            arn,
            custom_cert,
            format!("{id} serves its own certificate"),
            format!("{id} serves the default *.cloudfront.net certificate"),
            cert_evidence.clone(),
        );
        if custom_cert {
            out.verdict(
                SNI,
                arn,
                method == Some(&SslSupportMethod::SniOnly),
                format!("{id} serves its certificate with SNI"),
                format!(
                    "{id} serves its certificate with {} instead of SNI",
                    method.map_or("an unknown method", |m| m.as_str())
                ),
                cert_evidence.clone(),
            );
        } else {
            out.not_applicable(SNI, arn, format!("{id} uses no custom certificate"));
        }
        if custom_cert && method == Some(&SslSupportMethod::SniOnly) {
            out.verdict(
                TLS_POLICY,
                arn,
                min_tls.is_some_and(|v| crate::aws_facts::RECOMMENDED_CLOUDFRONT_TLS.contains(&v)),
                format!(
                    "{id} uses the recommended viewer TLS policy {}",
                    min_tls.unwrap_or_default()
                ),
                format!(
                    "{id} allows viewer TLS policy {}, older than TLSv1.2_2021",
                    min_tls.unwrap_or("(unset)")
                ),
                cert_evidence,
            );
        } else {
            out.not_applicable(
                TLS_POLICY,
                arn,
                format!("{id} does not serve a custom certificate through SNI"),
            );
        }

        // Origin access control on S3 and Lambda function URL origins.
        for (check, kind, pick) in [
            (S3_OAC, "S3", is_s3_origin as fn(&Origin) -> bool),
            (LAMBDA_OAC, "Lambda function URL", is_lambda_url_origin),
        ] {
            let selected: Vec<&Origin> = origins.iter().filter(|o| pick(o)).collect();
            if selected.is_empty() {
                out.not_applicable(check, arn, format!("{id} has no {kind} origins"));
                continue;
            }
            let without: Vec<&str> = selected
                .iter()
                .filter(|o| !has_oac(o))
                .map(|o| o.id())
                .collect();
            out.verdict(
                check,
                arn,
                without.is_empty(),
                format!("every {kind} origin of {id} uses origin access control"),
                format!("{kind} origin(s) {} of {id} use no origin access control", without.join(", ")),
                json!({"origins": selected.iter().map(|o| json!({"id": o.id(), "DomainName": o.domain_name(),
                    "OriginAccessControlId": o.origin_access_control_id(),
                    "OriginAccessIdentity": o.s3_origin_config().map(|s| s.origin_access_identity())})).collect::<Vec<_>>()}),
            );
        }

        let fle = default_behavior.and_then(|b| b.field_level_encryption_id());
        out.verdict(
            FLE,
            arn,
            fle.is_some_and(|f| !f.is_empty()),
            format!(
                "the default cache behavior of {id} uses field-level encryption config {}",
                fle.unwrap_or_default()
            ),
            format!("the default cache behavior of {id} has no field-level encryption"),
            json!({"FieldLevelEncryptionId": fle}),
        );

        let geo = d.restrictions().and_then(|r| r.geo_restriction());
        let geo_type = geo.map(|g| g.restriction_type());
        out.verdict(
            GEO,
            arn,
            geo_type.is_some_and(|t| *t != GeoRestrictionType::None),
            format!(
                "{id} restricts viewers by country ({})",
                geo_type.map_or("", |t| t.as_str())
            ),
            format!("{id} has no geographic restriction"),
            json!({"RestrictionType": geo_type.map(|t| t.as_str()),
                   "Locations": geo.map(|g| g.items())}),
        );

        let groups = d.origin_groups().map(|g| g.items()).unwrap_or_default();
        let failover_groups: Vec<&str> = groups
            .iter()
            .filter(|g| g.members().is_some_and(|m| m.items().len() >= 2))
            .map(|g| g.id())
            .collect();
        out.verdict(
            FAILOVER,
            arn,
            !failover_groups.is_empty(),
            format!(
                "{id} fails over through origin group(s) {}",
                failover_groups.join(", ")
            ),
            format!("{id} has no origin group with a primary and a secondary origin"),
            json!({"origin_groups": groups.iter().map(|g| json!({"id": g.id(),
                "members": g.members().map_or(0, |m| m.items().len())})).collect::<Vec<_>>()}),
        );

        let root = d.default_root_object().filter(|r| !r.is_empty());
        out.verdict(
            ROOT_OBJECT,
            arn,
            root.is_some(),
            format!(
                "{id} answers the bare domain with {}",
                root.unwrap_or_default()
            ),
            format!("{id} has no default root object"),
            json!({"DefaultRootObject": root}),
        );

        if !ctx.wants(LOGGING) {
            continue;
        }
        let logging = d.logging();
        let legacy = logging.is_some_and(|l| l.enabled() && !l.bucket().is_empty());
        if legacy {
            out.pass(
                LOGGING,
                arn,
                format!(
                    "{id} delivers standard access logs to {}",
                    logging.map_or("", |l| l.bucket())
                ),
                json!({"Logging": {"Enabled": true, "Bucket": logging.map(|l| l.bucket())}}),
            );
            continue;
        }
        if v2_logged.is_none() {
            v2_logged = Some(logged_distributions(ctx).await);
        }
        match v2_logged.as_ref() {
            Some(Ok(logged)) => out.verdict(
                LOGGING,
                arn,
                logged.contains(arn),
                format!("{id} delivers standard access logs (v2) through CloudWatch Logs"),
                format!("{id} has neither S3 access logging nor a log delivery"),
                json!({"Logging": {"Enabled": logging.map(|l| l.enabled()),
                                   "Bucket": logging.map(|l| l.bucket())},
                       "log_delivery": logged.contains(arn)}),
            ),
            Some(Err(e)) => out.error_on(LOGGING, arn, e),
            None => {}
        }
    }
    out.finish()
}

/// ARNs of distributions with a standard logging v2 delivery: a delivery source on the
/// distribution that at least one delivery uses. CloudFront's delivery sources live in the
/// partition's CloudFront home region.
async fn logged_distributions(ctx: &Ctx) -> Result<HashSet<String>, AwsError> {
    let home = match ctx.partition.as_str() {
        "aws" => "us-east-1",
        _ => ctx.region.as_str(),
    };
    let logs = aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(&ctx.sdk)
            .region(aws_config::Region::new(home.to_string()))
            .interceptor(ctx.counter())
            .build(),
    );
    let sources = logs
        .describe_delivery_sources()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await?;
    let sources: Vec<_> = sources
        .into_iter()
        .filter(|s| s.service().is_none_or(|svc| svc == "cloudfront"))
        .collect();
    if sources.is_empty() {
        return Ok(HashSet::new());
    }
    let delivered: HashSet<String> = logs
        .describe_deliveries()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await?
        .into_iter()
        .filter_map(|d| d.delivery_source_name)
        .collect();
    Ok(sources
        .iter()
        .filter(|s| s.name().is_some_and(|n| delivered.contains(n)))
        .flat_map(|s| s.resource_arns().iter().cloned())
        .collect())
}
