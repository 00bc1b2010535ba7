//! AWS Config: is a configuration recorder recording in this region.

use serde_json::json;

use futures_util::future::BoxFuture;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

pub const SERVICE: Service = Service {
    id: "config",
    global: false,
    checks: &["config-recorder-enabled"],
    run: start,
};

fn start(ctx: &Ctx) -> BoxFuture<'_, Vec<Finding>> {
    Box::pin(run(ctx))
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_config);
    let region_arn = ctx.arn("config", "configuration-recorder/*");
    let recorders = match client.describe_configuration_recorders().send().await {
        Ok(r) => r.configuration_recorders.unwrap_or_default(),
        Err(e) => {
            out.error(&["config-recorder-enabled"], &AwsError::from(e));
            return out.finish();
        }
    };
    let statuses = match client.describe_configuration_recorder_status().send().await {
        Ok(r) => r.configuration_recorders_status.unwrap_or_default(),
        Err(e) => {
            out.error(&["config-recorder-enabled"], &AwsError::from(e));
            return out.finish();
        }
    };
    let recording: Vec<_> = statuses
        .iter()
        .filter(|s| s.recording)
        .filter_map(|s| s.name.clone())
        .collect();
    let all_resources = recorders
        .iter()
        .any(|r| r.recording_group.as_ref().is_some_and(|g| g.all_supported));
    out.verdict(
        "config-recorder-enabled",
        &region_arn,
        !recording.is_empty(),
        format!(
            "configuration recorder {} is recording",
            recording.join(", ")
        ),
        if recorders.is_empty() {
            "no configuration recorder in this region".to_string()
        } else {
            "a configuration recorder exists but is not recording".to_string()
        },
        json!({"recorders": recorders.iter().filter_map(|r| r.name.clone()).collect::<Vec<_>>(),
               "recording": recording, "all_supported": all_resources}),
    );
    out.finish()
}
