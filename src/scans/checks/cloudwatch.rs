//! CloudWatch: the CIS monitoring alarms, and the retention and encryption of log groups.
//!
//! The CIS alarms (section 4 of the CIS AWS Foundations Benchmark) are judged per region: the
//! API activity of a region is watched when a multi-Region trail that applies to it (logging
//! all read and write management events) delivers to a CloudWatch Logs log group with a metric
//! filter for the CIS pattern, a CloudWatch alarm is defined on that filter's metric, and the
//! alarm notifies an SNS topic with at least one confirmed subscriber. The log group, its
//! alarms and the topic live in the trail's delivery region, which may not be the region
//! evaluated, so those calls go to the regions their ARNs name.

use std::collections::HashMap;

use aws_sdk_cloudwatch::types::MetricAlarm;
use aws_sdk_cloudwatchlogs::types::MetricFilter;
use serde_json::{Value, json};

use super::cloudtrail;
use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

const RETENTION: &str = "cloudwatch-log-group-retention-set";
const LOG_GROUP_KMS: &str = "cloudwatch-log-group-kms-encrypted";

/// The retention CIS and Prowler ask for by default; never-expire also passes.
const MIN_RETENTION_DAYS: i32 = 365;

/// A CIS alarm check: its id, what it watches (for reasons), and the terms its metric filter
/// pattern must contain, compared with whitespace and quotes removed.
struct Alarm {
    check: &'static str,
    what: &'static str,
    terms: &'static [&'static str],
}

const ALARMS: &[Alarm] = &[
    Alarm {
        check: "cloudwatch-alarm-unauthorized-api-calls",
        what: "unauthorized API calls",
        terms: &[
            "$.errorCode=*UnauthorizedOperation",
            "$.errorCode=AccessDenied*",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-console-signin-without-mfa",
        what: "console sign-ins without MFA",
        terms: &[
            "$.eventName=ConsoleLogin",
            "$.additionalEventData.MFAUsed!=Yes",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-root-user-activity",
        what: "root user activity",
        terms: &[
            "$.userIdentity.type=Root",
            "$.userIdentity.invokedByNOTEXISTS",
            "$.eventType!=AwsServiceEvent",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-iam-policy-changes",
        what: "IAM policy changes",
        terms: &[
            "$.eventName=DeleteGroupPolicy",
            "$.eventName=DeleteRolePolicy",
            "$.eventName=DeleteUserPolicy",
            "$.eventName=PutGroupPolicy",
            "$.eventName=PutRolePolicy",
            "$.eventName=PutUserPolicy",
            "$.eventName=CreatePolicy",
            "$.eventName=DeletePolicy",
            "$.eventName=CreatePolicyVersion",
            "$.eventName=DeletePolicyVersion",
            "$.eventName=AttachRolePolicy",
            "$.eventName=DetachRolePolicy",
            "$.eventName=AttachUserPolicy",
            "$.eventName=DetachUserPolicy",
            "$.eventName=AttachGroupPolicy",
            "$.eventName=DetachGroupPolicy",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-cloudtrail-config-changes",
        what: "CloudTrail configuration changes",
        terms: &[
            "$.eventName=CreateTrail",
            "$.eventName=UpdateTrail",
            "$.eventName=DeleteTrail",
            "$.eventName=StartLogging",
            "$.eventName=StopLogging",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-console-auth-failures",
        what: "failed console sign-ins",
        terms: &[
            "$.eventName=ConsoleLogin",
            "$.errorMessage=Failedauthentication",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-kms-key-disable-or-deletion",
        what: "disabling or scheduled deletion of KMS keys",
        terms: &[
            "$.eventSource=kms.amazonaws.com",
            "$.eventName=DisableKey",
            "$.eventName=ScheduleKeyDeletion",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-s3-bucket-policy-changes",
        what: "S3 bucket policy and ACL changes",
        terms: &[
            "$.eventSource=s3.amazonaws.com",
            "$.eventName=PutBucketAcl",
            "$.eventName=PutBucketPolicy",
            "$.eventName=PutBucketCors",
            "$.eventName=PutBucketLifecycle",
            "$.eventName=PutBucketReplication",
            "$.eventName=DeleteBucketPolicy",
            "$.eventName=DeleteBucketCors",
            "$.eventName=DeleteBucketLifecycle",
            "$.eventName=DeleteBucketReplication",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-config-changes",
        what: "AWS Config configuration changes",
        terms: &[
            "$.eventSource=config.amazonaws.com",
            "$.eventName=StopConfigurationRecorder",
            "$.eventName=DeleteDeliveryChannel",
            "$.eventName=PutDeliveryChannel",
            "$.eventName=PutConfigurationRecorder",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-security-group-changes",
        what: "security group changes",
        terms: &[
            "$.eventName=AuthorizeSecurityGroupIngress",
            "$.eventName=AuthorizeSecurityGroupEgress",
            "$.eventName=RevokeSecurityGroupIngress",
            "$.eventName=RevokeSecurityGroupEgress",
            "$.eventName=CreateSecurityGroup",
            "$.eventName=DeleteSecurityGroup",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-network-acl-changes",
        what: "network ACL changes",
        terms: &[
            "$.eventName=CreateNetworkAcl",
            "$.eventName=CreateNetworkAclEntry",
            "$.eventName=DeleteNetworkAcl",
            "$.eventName=DeleteNetworkAclEntry",
            "$.eventName=ReplaceNetworkAclEntry",
            "$.eventName=ReplaceNetworkAclAssociation",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-network-gateway-changes",
        what: "network gateway changes",
        terms: &[
            "$.eventName=CreateCustomerGateway",
            "$.eventName=DeleteCustomerGateway",
            "$.eventName=AttachInternetGateway",
            "$.eventName=CreateInternetGateway",
            "$.eventName=DeleteInternetGateway",
            "$.eventName=DetachInternetGateway",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-route-table-changes",
        what: "route table changes",
        terms: &[
            "$.eventName=CreateRoute",
            "$.eventName=CreateRouteTable",
            "$.eventName=ReplaceRoute",
            "$.eventName=ReplaceRouteTableAssociation",
            "$.eventName=DeleteRouteTable",
            "$.eventName=DeleteRoute",
            "$.eventName=DisassociateRouteTable",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-vpc-changes",
        what: "VPC changes",
        // The ClassicLink events of older CIS versions are left out: ClassicLink is retired.
        terms: &[
            "$.eventName=CreateVpc",
            "$.eventName=DeleteVpc",
            "$.eventName=ModifyVpcAttribute",
            "$.eventName=AcceptVpcPeeringConnection",
            "$.eventName=CreateVpcPeeringConnection",
            "$.eventName=DeleteVpcPeeringConnection",
            "$.eventName=RejectVpcPeeringConnection",
        ],
    },
    Alarm {
        check: "cloudwatch-alarm-organizations-changes",
        what: "AWS Organizations changes",
        terms: &[
            "$.eventSource=organizations.amazonaws.com",
            "$.eventName=AcceptHandshake",
            "$.eventName=AttachPolicy",
            "$.eventName=CreateAccount",
            "$.eventName=CreateOrganizationalUnit",
            "$.eventName=CreatePolicy",
            "$.eventName=DeclineHandshake",
            "$.eventName=DeleteOrganization",
            "$.eventName=DeleteOrganizationalUnit",
            "$.eventName=DeletePolicy",
            "$.eventName=DetachPolicy",
            "$.eventName=DisablePolicyType",
            "$.eventName=EnablePolicyType",
            "$.eventName=InviteAccountToOrganization",
            "$.eventName=LeaveOrganization",
            "$.eventName=MoveAccount",
            "$.eventName=RemoveAccountFromOrganization",
            "$.eventName=UpdatePolicy",
            "$.eventName=UpdateOrganizationalUnit",
        ],
    },
];

const ALARM_CHECKS: &[&str] = &[
    "cloudwatch-alarm-unauthorized-api-calls",
    "cloudwatch-alarm-console-signin-without-mfa",
    "cloudwatch-alarm-root-user-activity",
    "cloudwatch-alarm-iam-policy-changes",
    "cloudwatch-alarm-cloudtrail-config-changes",
    "cloudwatch-alarm-console-auth-failures",
    "cloudwatch-alarm-kms-key-disable-or-deletion",
    "cloudwatch-alarm-s3-bucket-policy-changes",
    "cloudwatch-alarm-config-changes",
    "cloudwatch-alarm-security-group-changes",
    "cloudwatch-alarm-network-acl-changes",
    "cloudwatch-alarm-network-gateway-changes",
    "cloudwatch-alarm-route-table-changes",
    "cloudwatch-alarm-vpc-changes",
    "cloudwatch-alarm-organizations-changes",
];

pub const SERVICE: Service = Service {
    id: "cloudwatch",
    global: false,
    checks: &[
        "cloudwatch-alarm-unauthorized-api-calls",
        "cloudwatch-alarm-console-signin-without-mfa",
        "cloudwatch-alarm-root-user-activity",
        "cloudwatch-alarm-iam-policy-changes",
        "cloudwatch-alarm-cloudtrail-config-changes",
        "cloudwatch-alarm-console-auth-failures",
        "cloudwatch-alarm-kms-key-disable-or-deletion",
        "cloudwatch-alarm-s3-bucket-policy-changes",
        "cloudwatch-alarm-config-changes",
        "cloudwatch-alarm-security-group-changes",
        "cloudwatch-alarm-network-acl-changes",
        "cloudwatch-alarm-network-gateway-changes",
        "cloudwatch-alarm-route-table-changes",
        "cloudwatch-alarm-vpc-changes",
        "cloudwatch-alarm-organizations-changes",
        RETENTION,
        LOG_GROUP_KMS,
    ],
    run: |ctx| Box::pin(run(ctx)),
};

/// A filter pattern with whitespace and double quotes removed, so spacing and optional
/// quoting do not change what it matches.
fn normalise(pattern: &str) -> String {
    pattern
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .collect()
}

fn matches_terms(pattern: &str, terms: &[&str]) -> bool {
    let p = normalise(pattern);
    terms.iter().all(|t| p.contains(&normalise(t)))
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    if ctx.wants_any(&[RETENTION, LOG_GROUP_KMS]) {
        log_groups(ctx, &mut out).await;
    }
    if ctx.wants_any(ALARM_CHECKS) {
        alarms(ctx, &mut out).await;
    }
    out.finish()
}

async fn log_groups(ctx: &Ctx, out: &mut Out<'_>) {
    let logs = scan_client!(ctx, aws_sdk_cloudwatchlogs);
    let mut groups = Vec::new();
    let mut pages = logs.describe_log_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => groups.extend(p.log_groups.unwrap_or_default()),
            Err(e) => {
                out.error(&[RETENTION, LOG_GROUP_KMS], &AwsError::from(e));
                return;
            }
        }
    }
    if groups.is_empty() {
        out.none_found(&[RETENTION, LOG_GROUP_KMS], "CloudWatch Logs log groups");
        return;
    }
    for g in groups {
        let name = g.log_group_name.as_deref().unwrap_or("");
        let arn = g
            .log_group_arn
            .clone()
            .or_else(|| {
                g.arn
                    .as_deref()
                    .map(|a| a.trim_end_matches(":*").to_string())
            })
            .unwrap_or_else(|| ctx.arn("logs", &format!("log-group:{name}")));
        let days = g.retention_in_days;
        out.verdict(
            RETENTION,
            &arn,
            days.is_none_or(|d| d >= MIN_RETENTION_DAYS),
            match days {
                Some(d) => format!("events are kept {d} days (minimum {MIN_RETENTION_DAYS})"),
                None => "events never expire".to_string(),
            },
            format!(
                "events are kept {} days, less than {MIN_RETENTION_DAYS}",
                days.unwrap_or(0)
            ),
            json!({"retentionInDays": days, "minimum": MIN_RETENTION_DAYS}),
        );
        let key = g.kms_key_id.as_deref().filter(|k| !k.is_empty());
        out.verdict(
            LOG_GROUP_KMS,
            &arn,
            key.is_some(),
            format!("encrypted with KMS key {}", key.unwrap_or("")),
            "no KMS key is associated (service-managed encryption only)",
            json!({"kmsKeyId": key}),
        );
    }
}

/// `arn:aws:logs:REGION:ACCOUNT:log-group:NAME[:*]` → (region, name).
fn log_group_of(arn: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    if parts.len() < 7 || parts[5] != "log-group" {
        return None;
    }
    let name = parts[6].trim_end_matches(":*");
    Some((parts[3].to_string(), name.to_string()))
}

/// The region an ARN names (`arn:partition:service:region:…`).
fn region_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// Clients and answers for one region the alarm chain leads to; each is read once.
struct Remote {
    logs: aws_sdk_cloudwatchlogs::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    alarms: Option<Result<Vec<MetricAlarm>, AwsError>>,
}

fn regional(ctx: &Ctx, region: &str) -> Remote {
    let sdk = ctx
        .sdk
        .to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .build();
    Remote {
        logs: aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
                .interceptor(ctx.counter())
                .build(),
        ),
        cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&sdk)
                .interceptor(ctx.counter())
                .build(),
        ),
        alarms: None,
    }
}

fn sns_in(ctx: &Ctx, region: &str) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(&ctx.sdk)
            .region(aws_config::Region::new(region.to_string()))
            .interceptor(ctx.counter())
            .build(),
    )
}

/// A log group a qualifying trail delivers to, with its metric filters.
struct Watched {
    trail: String,
    region: String,
    group: String,
    filters: Vec<MetricFilter>,
}

async fn alarms(ctx: &Ctx, out: &mut Out<'_>) {
    let resource = ctx.arn("cloudwatch", "alarm:*");
    let ct = scan_client!(ctx, aws_sdk_cloudtrail);
    let states = match cloudtrail::trails(ctx, &ct, true).await {
        Ok(s) => s,
        Err(e) => {
            out.error(ALARM_CHECKS, &e);
            return;
        }
    };
    let qualifying: Vec<_> = states
        .iter()
        .filter(|s| s.multi_region() && s.logging())
        .filter(|s| matches!(s.all_management, Some(Ok(true))))
        .collect();
    let with_group: Vec<(&str, (String, String))> = qualifying
        .iter()
        .filter_map(|s| {
            s.trail
                .cloud_watch_logs_log_group_arn
                .as_deref()
                .and_then(log_group_of)
                .map(|g| (s.arn.as_str(), g))
        })
        .collect();
    if with_group.is_empty() {
        let reason = if qualifying.is_empty() {
            "no logging multi-Region trail recording all management events applies to this region"
        } else {
            "no logging multi-Region trail delivers to CloudWatch Logs"
        };
        let evidence = json!({"trails": states.iter().map(|s| json!({
            "trail": s.arn, "multi_region": s.multi_region(), "is_logging": s.logging(),
            "log_group": s.trail.cloud_watch_logs_log_group_arn})).collect::<Vec<_>>()});
        for a in ALARMS {
            out.fail(a.check, &resource, reason, evidence.clone());
        }
        return;
    }
    let mut remotes: HashMap<String, Remote> = HashMap::new();
    let mut watched = Vec::new();
    for (trail, (region, group)) in with_group {
        let remote = remotes
            .entry(region.clone())
            .or_insert_with(|| regional(ctx, &region));
        let mut filters = Vec::new();
        let mut pages = remote
            .logs
            .describe_metric_filters()
            .log_group_name(&group)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => filters.extend(p.metric_filters.unwrap_or_default()),
                Err(e) => {
                    out.error(ALARM_CHECKS, &AwsError::from(e));
                    return;
                }
            }
        }
        watched.push(Watched {
            trail: trail.to_string(),
            region,
            group,
            filters,
        });
    }
    let mut topics: HashMap<String, Result<usize, AwsError>> = HashMap::new();
    for a in ALARMS {
        if !ctx.wants(a.check) {
            continue;
        }
        match judge(ctx, a, &watched, &mut remotes, &mut topics).await {
            Ok((true, reason, evidence)) => out.pass(a.check, &resource, reason, evidence),
            Ok((false, reason, evidence)) => out.fail(a.check, &resource, reason, evidence),
            Err(e) => out.error_on(a.check, &resource, &e),
        }
    }
}

/// Follows trail → log group → metric filter → alarm → SNS topic for one CIS alarm; the
/// first complete chain passes, otherwise the furthest step reached explains the failure.
async fn judge(
    ctx: &Ctx,
    a: &Alarm,
    watched: &[Watched],
    remotes: &mut HashMap<String, Remote>,
    topics: &mut HashMap<String, Result<usize, AwsError>>,
) -> Result<(bool, String, Value), AwsError> {
    let mut furthest = (
        0,
        format!(
            "no metric filter on the trail's log group matches the CIS pattern for {}",
            a.what
        ),
    );
    let mut chain = Vec::new();
    for w in watched {
        for f in &w.filters {
            let pattern = f.filter_pattern.as_deref().unwrap_or("");
            if !matches_terms(pattern, a.terms) {
                continue;
            }
            let filter = f.filter_name.as_deref().unwrap_or("");
            let Some(remote) = remotes.get_mut(&w.region) else {
                continue;
            };
            if remote.alarms.is_none() {
                remote.alarms = Some(describe_alarms(&remote.cloudwatch).await);
            }
            let all = match &remote.alarms {
                Some(Ok(list)) => list,
                Some(Err(e)) => return Err(AwsError(e.0.clone())),
                None => continue,
            };
            for t in f.metric_transformations.iter().flatten() {
                let on_metric: Vec<&MetricAlarm> = all
                    .iter()
                    .filter(|al| {
                        al.metric_name.as_deref() == Some(t.metric_name.as_str())
                            && al.namespace.as_deref() == Some(t.metric_namespace.as_str())
                    })
                    .collect();
                if on_metric.is_empty() {
                    if furthest.0 < 1 {
                        furthest = (
                            1,
                            format!(
                                "metric filter {filter} matches {} but no alarm watches metric {}/{}",
                                a.what, t.metric_namespace, t.metric_name
                            ),
                        );
                    }
                    continue;
                }
                for al in on_metric {
                    let name = al.alarm_name.as_deref().unwrap_or("");
                    for action in al.alarm_actions.iter().flatten() {
                        if !action.starts_with("arn:") || !action.contains(":sns:") {
                            continue;
                        }
                        if !topics.contains_key(action) {
                            let region =
                                region_of(action).unwrap_or(ctx.region.as_str()).to_string();
                            let count = subscribers(&sns_in(ctx, &region), action).await;
                            topics.insert(action.clone(), count);
                        }
                        let count = match topics.get(action) {
                            Some(Ok(n)) => *n,
                            Some(Err(e)) => return Err(AwsError(e.0.clone())),
                            None => 0,
                        };
                        chain.push(json!({"trail": w.trail, "log_group": w.group,
                            "log_group_region": w.region, "metric_filter": filter,
                            "filter_pattern": pattern, "metric": format!("{}/{}", t.metric_namespace, t.metric_name),
                            "alarm": name, "topic": action, "confirmed_subscriptions": count}));
                        if count > 0 {
                            return Ok((
                                true,
                                format!(
                                    "filter {filter} on {} feeds alarm {name}, which notifies {action}",
                                    w.group
                                ),
                                json!({"chain": chain}),
                            ));
                        }
                    }
                    if furthest.0 < 2 {
                        furthest = (
                            2,
                            format!(
                                "alarm {name} on the {} metric notifies no SNS topic with a confirmed subscriber",
                                a.what
                            ),
                        );
                    }
                }
            }
        }
    }
    let groups: Vec<&str> = watched.iter().map(|w| w.group.as_str()).collect();
    Ok((
        false,
        furthest.1,
        json!({"log_groups": groups, "chain": chain, "required_terms": a.terms}),
    ))
}

async fn describe_alarms(
    client: &aws_sdk_cloudwatch::Client,
) -> Result<Vec<MetricAlarm>, AwsError> {
    let mut all = Vec::new();
    let mut pages = client.describe_alarms().into_paginator().send();
    while let Some(page) = pages.next().await {
        all.extend(
            page.map_err(AwsError::from)?
                .metric_alarms
                .unwrap_or_default(),
        );
    }
    Ok(all)
}

/// Confirmed subscriptions of a topic (pending ones have no subscription ARN yet).
async fn subscribers(client: &aws_sdk_sns::Client, topic: &str) -> Result<usize, AwsError> {
    let mut count = 0;
    let mut pages = client
        .list_subscriptions_by_topic()
        .topic_arn(topic)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        count += page
            .map_err(AwsError::from)?
            .subscriptions
            .unwrap_or_default()
            .iter()
            .filter(|s| {
                s.subscription_arn
                    .as_deref()
                    .is_some_and(|a| a.starts_with("arn:"))
            })
            .count();
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cis_patterns_match_with_any_spacing() {
        let unauthorized = r#"{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") && ($.sourceIPAddress!="delivery.logs.amazonaws.com") }"#;
        assert!(matches_terms(unauthorized, ALARMS[0].terms));
        let root = r#"{$.userIdentity.type="Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType !="AwsServiceEvent"}"#;
        assert!(matches_terms(root, ALARMS[2].terms));
        let failures =
            r#"{ ($.eventName = ConsoleLogin) && ($.errorMessage = "Failed authentication") }"#;
        assert!(matches_terms(failures, ALARMS[5].terms));
        assert!(!matches_terms(
            r#"{ $.eventName = "CreateTrail" }"#,
            ALARMS[4].terms
        ));
    }

    #[test]
    fn alarm_table_covers_every_alarm_check() {
        let ids: Vec<&str> = ALARMS.iter().map(|a| a.check).collect();
        assert_eq!(ids, ALARM_CHECKS);
    }

    #[test]
    fn log_group_arns() {
        assert_eq!(
            log_group_of("arn:aws:logs:eu-west-1:123456789012:log-group:trail:logs:*"),
            Some(("eu-west-1".into(), "trail:logs".into()))
        );
        assert_eq!(log_group_of("arn:aws:sns:eu-west-1:1:topic"), None);
    }
}
