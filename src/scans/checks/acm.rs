//! ACM (regional): certificates in use renewed before they expire, RSA key length.

use aws_sdk_acm::types::{Filters, KeyAlgorithm};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const CHECKS: &[&str] = &[
    "acm-certificate-renewed-before-expiry",
    "acm-rsa-certificate-key-length",
];

pub const SERVICE: Service = Service {
    id: "acm",
    global: false,
    checks: CHECKS,
    run: start,
};

fn start(ctx: &Ctx) -> BoxFuture<'_, Vec<Finding>> {
    Box::pin(run(ctx))
}

const EXPIRY: &str = "acm-certificate-renewed-before-expiry";
const KEY_LENGTH: &str = "acm-rsa-certificate-key-length";
const EXPIRY_WINDOW_DAYS: i64 = 30;

/// The fields both checks read; from the list when it carries them, else from DescribeCertificate.
struct Cert {
    arn: String,
    domain: String,
    key_algorithm: Option<KeyAlgorithm>,
    not_after: Option<DateTime<Utc>>,
    in_use: Option<bool>,
    status: Option<String>,
}

fn time(t: Option<aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0))
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let acm = scan_client!(ctx, aws_sdk_acm);
    // Without a key-type filter ListCertificates returns RSA_2048 certificates only.
    let every_key_type = Filters::builder()
        .set_key_types(Some(
            KeyAlgorithm::values()
                .iter()
                .map(|v| KeyAlgorithm::from(*v))
                .collect(),
        ))
        .build();
    let mut certs = Vec::new();
    let mut items = acm
        .list_certificates()
        .includes(every_key_type)
        .into_paginator()
        .items()
        .send();
    while let Some(item) = items.next().await {
        match item {
            Ok(c) => {
                let Some(arn) = c.certificate_arn else {
                    continue;
                };
                certs.push(Cert {
                    arn,
                    domain: c.domain_name.unwrap_or_default(),
                    key_algorithm: c.key_algorithm,
                    not_after: time(c.not_after),
                    in_use: c.in_use,
                    status: c.status.map(|s| s.as_str().to_string()),
                });
            }
            Err(e) => {
                out.error(CHECKS, &AwsError::from(e));
                return out.finish();
            }
        }
    }
    if certs.is_empty() {
        out.none_found(CHECKS, "ACM certificates");
        return out.finish();
    }

    let acm = &acm;
    let certs = futures_util::stream::iter(certs)
        .map(|mut c| async move {
            if c.key_algorithm.is_some() && c.in_use.is_some() {
                return Ok(c);
            }
            let detail = acm
                .describe_certificate()
                .certificate_arn(&c.arn)
                .send()
                .await
                .map_err(|e| (c.arn.clone(), AwsError::from(e)))?;
            if let Some(d) = detail.certificate {
                c.key_algorithm = c.key_algorithm.or(d.key_algorithm);
                c.not_after = c.not_after.or(time(d.not_after));
                c.in_use = c.in_use.or(d.in_use_by.map(|users| !users.is_empty()));
            }
            Ok(c)
        })
        .buffer_unordered(8)
        .collect::<Vec<Result<Cert, (String, AwsError)>>>()
        .await;

    let now = Utc::now();
    for cert in certs {
        let c = match cert {
            Ok(c) => c,
            Err((arn, e)) => {
                for check in CHECKS {
                    out.error_on(check, &arn, &e);
                }
                continue;
            }
        };
        let algorithm = c.key_algorithm.as_ref().map(|k| k.as_str().to_string());
        let evidence = json!({"DomainName": c.domain, "KeyAlgorithm": algorithm,
            "NotAfter": c.not_after.map(|t| t.to_rfc3339()), "InUse": c.in_use, "Status": c.status});

        if c.in_use != Some(true) {
            out.not_applicable(
                EXPIRY,
                &c.arn,
                format!("certificate {} is not in use", c.domain),
            );
        } else {
            match c.not_after {
                Some(t) => out.verdict(
                    EXPIRY,
                    &c.arn,
                    t - now > Duration::days(EXPIRY_WINDOW_DAYS),
                    format!("certificate {} is valid until {}", c.domain, t.to_rfc3339()),
                    format!(
                        "certificate {} expires {}, within {EXPIRY_WINDOW_DAYS} days (or already expired)",
                        c.domain,
                        t.to_rfc3339()
                    ),
                    evidence.clone(),
                ),
                None => out.fail(
                    EXPIRY,
                    &c.arn,
                    format!("certificate {} is in use but has no expiry date", c.domain),
                    evidence.clone(),
                ),
            }
        }

        match algorithm.as_deref() {
            Some(a) if a.starts_with("RSA_") => {
                let bits: Option<u32> = a["RSA_".len()..].parse().ok();
                out.verdict(
                    KEY_LENGTH,
                    &c.arn,
                    bits.is_some_and(|b| b >= 2048),
                    format!("certificate {} uses {a}", c.domain),
                    format!("certificate {} uses {a}, shorter than 2048 bits", c.domain),
                    evidence,
                );
            }
            Some(a) => out.not_applicable(
                KEY_LENGTH,
                &c.arn,
                format!("certificate {} uses a non-RSA key ({a})", c.domain),
            ),
            None => out.error_on(
                KEY_LENGTH,
                &c.arn,
                &"ACM returned no key algorithm for the certificate",
            ),
        }
    }
    out.finish()
}
