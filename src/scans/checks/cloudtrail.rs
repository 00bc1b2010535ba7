//! CloudTrail: which trails log this region's activity, and how each trail is configured.
//!
//! Trails are account resources with a home region, and a multi-Region trail also applies to
//! every other region (DescribeTrails lists it there as a "shadow" trail). So the service runs
//! per region: the region-level checks (a trail is logging here, a multi-Region trail covers
//! here) count every trail that applies to the region, shadows included, while the per-trail
//! checks judge each trail once, in its home region, so a multi-Region trail yields one
//! finding rather than one per region.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput;
use aws_sdk_cloudtrail::types::Trail;
use serde_json::{Value, json};

use super::s3;
use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const TRAIL_ENABLED: &str = "cloudtrail-trail-enabled";
const MULTI_REGION: &str = "cloudtrail-multi-region-trail-enabled";
const LOG_VALIDATION: &str = "cloudtrail-log-file-validation-enabled";
const KMS: &str = "cloudtrail-encrypted-with-kms";
const CLOUDWATCH: &str = "cloudtrail-cloudwatch-logs-integration";
const BUCKET_NOT_PUBLIC: &str = "cloudtrail-log-bucket-not-public";
const BUCKET_LOGGING: &str = "cloudtrail-log-bucket-access-logging";

pub const SERVICE: Service = Service {
    id: "cloudtrail",
    global: false,
    checks: CHECKS,
    run: |ctx| Box::pin(run(ctx)),
};

// `run` names the checks through this constant, not `SERVICE.checks`: reading SERVICE inside
// `run` makes the compiler's Send check of `run`'s future depend on itself.
const CHECKS: &[&str] = &[
    TRAIL_ENABLED,
    MULTI_REGION,
    LOG_VALIDATION,
    KMS,
    CLOUDWATCH,
    BUCKET_NOT_PUBLIC,
    BUCKET_LOGGING,
];

const PER_TRAIL: &[&str] = &[
    LOG_VALIDATION,
    KMS,
    CLOUDWATCH,
    BUCKET_NOT_PUBLIC,
    BUCKET_LOGGING,
];

/// CloudWatch Logs delivery older than this means the integration has stopped working.
const DELIVERY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A trail that applies to the region, with what GetTrailStatus and GetEventSelectors said.
pub(super) struct TrailState {
    pub trail: Trail,
    pub arn: String,
    pub status: Result<GetTrailStatusOutput, AwsError>,
    /// Whether the trail records read and write management events (`None`: not asked).
    pub all_management: Option<Result<bool, AwsError>>,
}

impl TrailState {
    pub fn logging(&self) -> bool {
        self.status
            .as_ref()
            .is_ok_and(|s| s.is_logging == Some(true))
    }

    pub fn multi_region(&self) -> bool {
        self.trail.is_multi_region_trail == Some(true)
    }
}

/// Every trail that applies to the region (shadow trails included) with its status; the
/// event selectors are read for logging multi-Region trails when `selectors` is set, as
/// only those can satisfy the multi-Region check.
pub(super) async fn trails(
    ctx: &Ctx,
    client: &aws_sdk_cloudtrail::Client,
    selectors: bool,
) -> Result<Vec<TrailState>, AwsError> {
    let listed = client
        .describe_trails()
        .include_shadow_trails(true)
        .send()
        .await
        .map_err(AwsError::from)?
        .trail_list
        .unwrap_or_default();
    let mut states = Vec::new();
    for trail in listed {
        let arn = trail
            .trail_arn
            .clone()
            .or_else(|| {
                trail
                    .name
                    .as_ref()
                    .map(|n| ctx.arn("cloudtrail", &format!("trail/{n}")))
            })
            .unwrap_or_else(|| ctx.arn("cloudtrail", "trail/unnamed"));
        // A shadow trail's status must be asked for by ARN.
        let status = client
            .get_trail_status()
            .name(&arn)
            .send()
            .await
            .map_err(AwsError::from);
        let mut state = TrailState {
            trail,
            arn,
            status,
            all_management: None,
        };
        if selectors && state.multi_region() && state.logging() {
            // Event selectors are read in the trail's home region: CloudTrail resolves a
            // shadow trail's ARN there only for GetTrailStatus.
            let home = state
                .trail
                .home_region
                .clone()
                .unwrap_or(ctx.region.clone());
            let client = if home == ctx.region {
                client.clone()
            } else {
                aws_sdk_cloudtrail::Client::from_conf(
                    aws_sdk_cloudtrail::config::Builder::from(&ctx.sdk)
                        .region(aws_config::Region::new(home))
                        .interceptor(ctx.counter())
                        .build(),
                )
            };
            state.all_management = Some(
                client
                    .get_event_selectors()
                    .trail_name(&state.arn)
                    .send()
                    .await
                    .map(|r| {
                        let basic = r.event_selectors.unwrap_or_default().iter().any(|s| {
                            s.include_management_events != Some(false)
                                && s.read_write_type
                                    .as_ref()
                                    .is_none_or(|t| t.as_str() == "All")
                        });
                        let advanced =
                            r.advanced_event_selectors
                                .unwrap_or_default()
                                .iter()
                                .any(|s| {
                                    let management = s.field_selectors.iter().any(|f| {
                                        f.field == "eventCategory"
                                            && f.equals.as_ref().is_some_and(|e| {
                                                e.iter().any(|v| v == "Management")
                                            })
                                    });
                                    // A readOnly selector limits the trail to reads or writes.
                                    let one_sided =
                                        s.field_selectors.iter().any(|f| f.field == "readOnly");
                                    management && !one_sided
                                });
                        basic || advanced
                    })
                    .map_err(AwsError::from),
            );
        }
        states.push(state);
    }
    Ok(states)
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_cloudtrail);
    let region_arn = ctx.arn("cloudtrail", "trail/*");
    let states = match trails(ctx, &client, ctx.wants(MULTI_REGION)).await {
        Ok(s) => s,
        Err(e) => {
            out.error(CHECKS, &e);
            return out.finish();
        }
    };
    let summary: Vec<Value> = states
        .iter()
        .map(|s| {
            json!({"trail": s.arn, "home_region": s.trail.home_region,
                   "multi_region": s.multi_region(),
                   "is_logging": s.status.as_ref().ok().and_then(|st| st.is_logging),
                   "status_error": s.status.as_ref().err().map(|e| e.0.clone()),
                   "all_management_events": s.all_management.as_ref().and_then(|r| r.as_ref().ok())})
        })
        .collect();
    let logging: Vec<&str> = states
        .iter()
        .filter(|s| s.logging())
        .map(|s| s.arn.as_str())
        .collect();
    let status_errors: Vec<&AwsError> = states
        .iter()
        .filter_map(|s| s.status.as_ref().err())
        .collect();
    if !logging.is_empty() || status_errors.is_empty() {
        out.verdict(
            TRAIL_ENABLED,
            &region_arn,
            !logging.is_empty(),
            format!("trail {} is logging in this region", logging.join(", ")),
            if states.is_empty() {
                "no trail applies to this region"
            } else {
                "no trail that applies to this region is logging"
            },
            json!({"trails": summary}),
        );
    } else {
        out.error_on(TRAIL_ENABLED, &region_arn, status_errors[0]);
    }
    if ctx.wants(MULTI_REGION) {
        let good: Vec<&str> = states
            .iter()
            .filter(|s| matches!(s.all_management, Some(Ok(true))))
            .map(|s| s.arn.as_str())
            .collect();
        let unknown = states.iter().find_map(|s| match &s.all_management {
            Some(Err(e)) => Some(e),
            _ => None,
        });
        match (good.is_empty(), unknown.or(status_errors.first().copied())) {
            (true, Some(e)) => out.error_on(MULTI_REGION, &region_arn, e),
            _ => out.verdict(
                MULTI_REGION,
                &region_arn,
                !good.is_empty(),
                format!(
                    "multi-Region trail {} is logging all read and write management events",
                    good.join(", ")
                ),
                if states.iter().any(|s| s.multi_region() && s.logging()) {
                    "no logging multi-Region trail records both read and write management events"
                } else if states.iter().any(TrailState::multi_region) {
                    "the multi-Region trails that apply here are not logging"
                } else {
                    "no multi-Region trail applies to this region"
                },
                json!({"trails": summary}),
            ),
        }
    }
    let owned: Vec<&TrailState> = states
        .iter()
        .filter(|s| s.trail.home_region.as_deref() == Some(ctx.region.as_str()))
        .collect();
    if states.is_empty() {
        out.none_found(PER_TRAIL, "CloudTrail trails");
        return out.finish();
    }
    for s in &owned {
        let t = &s.trail;
        out.verdict(
            LOG_VALIDATION,
            &s.arn,
            t.log_file_validation_enabled == Some(true),
            "log file integrity validation is on",
            "log file integrity validation is off",
            json!({"LogFileValidationEnabled": t.log_file_validation_enabled}),
        );
        let key = t.kms_key_id.as_deref().filter(|k| !k.is_empty());
        out.verdict(
            KMS,
            &s.arn,
            key.is_some(),
            format!("log files are encrypted with KMS key {}", key.unwrap_or("")),
            "log files are not encrypted with a KMS key (SSE-S3 only)",
            json!({"KmsKeyId": key}),
        );
        if ctx.wants(CLOUDWATCH) {
            cloudwatch_verdict(&mut out, s);
        }
    }
    if ctx.wants_any(&[BUCKET_NOT_PUBLIC, BUCKET_LOGGING]) {
        bucket_verdicts(ctx, &mut out, &owned).await;
    }
    out.finish()
}

fn cloudwatch_verdict(out: &mut super::Out<'_>, s: &TrailState) {
    let t = &s.trail;
    let group = t
        .cloud_watch_logs_log_group_arn
        .as_deref()
        .filter(|g| !g.is_empty());
    let role = t
        .cloud_watch_logs_role_arn
        .as_deref()
        .filter(|r| !r.is_empty());
    let (Some(group), Some(role)) = (group, role) else {
        out.fail(
            CLOUDWATCH,
            &s.arn,
            "the trail has no CloudWatch Logs log group and delivery role",
            json!({"CloudWatchLogsLogGroupArn": group, "CloudWatchLogsRoleArn": role}),
        );
        return;
    };
    let status = match &s.status {
        Ok(st) => st,
        Err(e) => {
            out.error_on(CLOUDWATCH, &s.arn, e);
            return;
        }
    };
    let last = status.latest_cloud_watch_logs_delivery_time;
    let age = last.and_then(|d| {
        SystemTime::try_from(d)
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
    });
    let evidence = json!({"CloudWatchLogsLogGroupArn": group, "CloudWatchLogsRoleArn": role,
        "LatestCloudWatchLogsDeliveryTime": last.map(|d| d.to_string()),
        "LatestCloudWatchLogsDeliveryError": status.latest_cloud_watch_logs_delivery_error});
    match age {
        Some(a) if a <= DELIVERY_MAX_AGE => out.pass(
            CLOUDWATCH,
            &s.arn,
            format!("events reach log group {group}; last delivery within a day"),
            evidence,
        ),
        Some(_) => out.fail(
            CLOUDWATCH,
            &s.arn,
            format!("log group {group} is configured but the last delivery is over a day old"),
            evidence,
        ),
        None => out.fail(
            CLOUDWATCH,
            &s.arn,
            format!("log group {group} is configured but CloudTrail reports no delivery"),
            evidence,
        ),
    }
}

/// The log-bucket checks: each destination bucket is read once even when several trails
/// share it.
async fn bucket_verdicts(ctx: &Ctx, out: &mut super::Out<'_>, owned: &[&TrailState]) {
    let home = s3::client_in(ctx, &ctx.region);
    let needs = s3::Needs {
        bpa: ctx.wants(BUCKET_NOT_PUBLIC),
        policy: ctx.wants(BUCKET_NOT_PUBLIC),
        acl: ctx.wants(BUCKET_NOT_PUBLIC),
        ownership: ctx.wants(BUCKET_NOT_PUBLIC),
        logging: ctx.wants(BUCKET_LOGGING),
        ..s3::Needs::default()
    };
    let account = if ctx.wants(BUCKET_NOT_PUBLIC) {
        // Unreadable counts as off: the bucket's own settings then decide.
        s3::account_bpa(ctx).await.unwrap_or(None)
    } else {
        None
    };
    let mut read: HashMap<String, Result<s3::Details, AwsError>> = HashMap::new();
    for s in owned {
        let Some(bucket) = s.trail.s3_bucket_name.as_deref().filter(|b| !b.is_empty()) else {
            out.fail(
                BUCKET_NOT_PUBLIC,
                &s.arn,
                "the trail names no S3 bucket",
                json!({"S3BucketName": null}),
            );
            out.fail(
                BUCKET_LOGGING,
                &s.arn,
                "the trail names no S3 bucket",
                json!({"S3BucketName": null}),
            );
            continue;
        };
        if !read.contains_key(bucket) {
            let details = match s3::bucket_region(&home, bucket).await {
                Ok(region) => {
                    let client = if region == ctx.region {
                        home.clone()
                    } else {
                        s3::client_in(ctx, &region)
                    };
                    Ok(s3::bucket_details(&client, bucket, needs).await)
                }
                Err(e) => Err(e),
            };
            read.insert(bucket.to_string(), details);
        }
        let bucket_arn = s3::bucket_arn(ctx, bucket);
        let details = match read.get(bucket) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                out.error_on(BUCKET_NOT_PUBLIC, &s.arn, e);
                out.error_on(BUCKET_LOGGING, &s.arn, e);
                continue;
            }
            None => continue,
        };
        if ctx.wants(BUCKET_NOT_PUBLIC) {
            let parts = (
                details.bpa.ready(),
                details.acl.ready(),
                details.ownership.ready(),
                details.policy.ready(),
            );
            match parts {
                (Ok(bpa), Ok(acl), Ok(ownership), Ok(policy)) => {
                    let e = s3::exposure(
                        acl.map_or(&[][..], Vec::as_slice),
                        ownership.map(String::as_str),
                        policy.map(String::as_str),
                        bpa.copied().unwrap_or_default(),
                        account,
                    );
                    let mut evidence = e.evidence;
                    evidence["bucket"] = json!(bucket_arn);
                    let why: Vec<String> = e.read.iter().chain(&e.write).cloned().collect();
                    out.verdict(
                        BUCKET_NOT_PUBLIC,
                        &s.arn,
                        why.is_empty(),
                        format!("log bucket {bucket} is not readable or writable by anyone"),
                        format!("log bucket {bucket} is public: {}", why.join("; ")),
                        evidence,
                    );
                }
                (a, b, c, d) => {
                    let failed = [a.err(), b.err(), c.err(), d.err()];
                    if let Some(e) = failed.into_iter().flatten().flatten().next() {
                        out.error_on(BUCKET_NOT_PUBLIC, &s.arn, e);
                    }
                }
            }
        }
        if ctx.wants(BUCKET_LOGGING) {
            match details.logging.ready() {
                Ok(target) => out.verdict(
                    BUCKET_LOGGING,
                    &s.arn,
                    target.is_some(),
                    format!(
                        "log bucket {bucket} delivers access logs to {}",
                        target.map_or("", |t| t.as_str())
                    ),
                    format!("log bucket {bucket} has server access logging off"),
                    json!({"bucket": bucket_arn, "target_bucket": target}),
                ),
                Err(Some(e)) => out.error_on(BUCKET_LOGGING, &s.arn, e),
                Err(None) => {}
            }
        }
    }
}
