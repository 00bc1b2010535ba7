//! Amazon SNS: topic encryption, topic policies open to everyone and delivery status logging.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::sqs::open_statements;
use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const KMS: &str = "sns-topic-encrypted-kms";
const NOT_PUBLIC: &str = "sns-topic-not-public";
const DELIVERY_LOGGING: &str = "sns-topic-delivery-status-logging";

// `run` names `CHECKS`, not `SERVICE.checks`: a future that refers to `SERVICE` cannot be
// checked for `Send` inside `SERVICE` itself (a cycle rustc rejects).
const CHECKS: &[&str] = &[KMS, NOT_PUBLIC, DELIVERY_LOGGING];

pub const SERVICE: Service = Service {
    id: "sns",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

/// Subscription protocols SNS can log delivery status for, and the prefix of their
/// `<Prefix>SuccessFeedbackRoleArn` / `<Prefix>FailureFeedbackRoleArn` topic attributes.
const LOGGED_PROTOCOLS: &[(&str, &str)] = &[
    ("http", "HTTP"),
    ("https", "HTTP"),
    ("sqs", "SQS"),
    ("lambda", "Lambda"),
    ("firehose", "Firehose"),
    ("application", "Application"),
];

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_sns);
    let topics = match client
        .list_topics()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
    {
        Ok(topics) => topics,
        Err(e) => {
            out.error(CHECKS, &AwsError::from(e));
            return out.finish();
        }
    };
    if topics.is_empty() {
        out.none_found(CHECKS, "SNS topics");
        return out.finish();
    }

    // Which log prefixes each topic needs, from the region's subscriptions (one listing
    // instead of one per topic).
    let mut needed: HashMap<String, BTreeSet<&'static str>> = HashMap::new();
    let mut subscriptions_error = None;
    if ctx.wants(DELIVERY_LOGGING) {
        match client
            .list_subscriptions()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
        {
            Ok(subs) => {
                for sub in subs {
                    let (Some(topic), Some(protocol)) = (sub.topic_arn, sub.protocol) else {
                        continue;
                    };
                    if let Some((_, prefix)) = LOGGED_PROTOCOLS.iter().find(|(p, _)| *p == protocol)
                    {
                        needed.entry(topic).or_default().insert(*prefix);
                    }
                }
            }
            Err(e) => subscriptions_error = Some(AwsError::from(e)),
        }
    }

    for arn in topics.into_iter().filter_map(|t| t.topic_arn) {
        let name = arn.rsplit(':').next().unwrap_or(&arn).to_string();
        let attributes = match client.get_topic_attributes().topic_arn(&arn).send().await {
            Ok(r) => r.attributes.unwrap_or_default(),
            Err(e) => {
                let e = AwsError::from(e);
                for &check in CHECKS {
                    out.error_on(check, &arn, &e);
                }
                continue;
            }
        };
        let attr = |n: &str| {
            attributes
                .get(n)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };

        let key = attr("KmsMasterKeyId");
        out.verdict(
            KMS,
            &arn,
            key.is_some(),
            format!(
                "topic {name} is encrypted with KMS key {}",
                key.unwrap_or_default()
            ),
            format!("topic {name} has no KMS key, so server-side encryption is off"),
            json!({"KmsMasterKeyId": key}),
        );

        if ctx.wants(NOT_PUBLIC) {
            match attr("Policy") {
                None => out.pass(
                    NOT_PUBLIC,
                    &arn,
                    format!("topic {name} has no access policy, so only the owner account has access"),
                    json!({"Policy": null}),
                ),
                Some(policy) => match open_statements(policy, &["sns:Publish", "sns:Subscribe"]) {
                    Ok(open) => out.verdict(
                        NOT_PUBLIC,
                        &arn,
                        open.is_empty(),
                        format!("no statement of topic {name}'s policy lets everyone publish or subscribe without a restricting condition"),
                        format!("topic {name}'s policy lets any principal publish or subscribe without a restricting condition"),
                        json!({"open_statements": open}),
                    ),
                    Err(e) => out.error_on(NOT_PUBLIC, &arn, &e),
                },
            }
        }

        if ctx.wants(DELIVERY_LOGGING) {
            if let Some(e) = &subscriptions_error {
                out.error_on(DELIVERY_LOGGING, &arn, e);
                continue;
            }
            let roles: HashMap<&str, &str> = attributes
                .iter()
                .filter(|(k, v)| k.ends_with("FeedbackRoleArn") && !v.is_empty())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let logged = |prefix: &str| {
                roles.contains_key(format!("{prefix}SuccessFeedbackRoleArn").as_str())
                    || roles.contains_key(format!("{prefix}FailureFeedbackRoleArn").as_str())
            };
            let protocols = needed.get(&arn).cloned().unwrap_or_default();
            let missing: Vec<&str> = protocols.iter().copied().filter(|p| !logged(p)).collect();
            // Without subscriptions of a loggable protocol there is nothing to match roles to:
            // any configured feedback role counts, as in the Config rule.
            let ok = if protocols.is_empty() {
                !roles.is_empty()
            } else {
                missing.is_empty()
            };
            out.verdict(
                DELIVERY_LOGGING,
                &arn,
                ok,
                format!("topic {name} logs delivery status to CloudWatch Logs"),
                if protocols.is_empty() {
                    format!("topic {name} has no delivery status feedback role")
                } else {
                    format!(
                        "topic {name} does not log delivery status for its {} subscriptions",
                        missing.join(", ")
                    )
                },
                json!({"feedback_roles": roles, "subscription_protocols": protocols,
                       "protocols_not_logged": missing}),
            );
        }
    }
    out.finish()
}
