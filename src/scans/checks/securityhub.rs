//! Security Hub: the account is subscribed in the region with a standard or integration on.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::json;

use super::{AwsError, Ctx, Finding, Service};
use crate::scan_client;

const ENABLED: &str = "securityhub-enabled";

pub const SERVICE: Service = Service {
    id: "securityhub",
    global: false,
    checks: &[ENABLED],
    run: |ctx| Box::pin(run(ctx)),
};

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let client = scan_client!(ctx, aws_sdk_securityhub);
    let region_arn = ctx.arn("securityhub", "hub/default");
    let hub = match client.describe_hub().send().await {
        Ok(h) => h,
        // Security Hub answers these when the account is not subscribed in the region.
        Err(e)
            if matches!(
                e.code(),
                Some("InvalidAccessException" | "ResourceNotFoundException")
            ) =>
        {
            let message = e.message().map(str::to_string);
            out.fail(
                ENABLED,
                &region_arn,
                "Security Hub is not enabled in this region",
                json!({"subscribed": false, "message": message}),
            );
            return out.finish();
        }
        Err(e) => {
            out.error(&[ENABLED], &AwsError::from(e));
            return out.finish();
        }
    };
    let arn = hub.hub_arn.clone().unwrap_or(region_arn);
    let mut standards = Vec::new();
    let mut pages = client.get_enabled_standards().into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => standards.extend(
                p.standards_subscriptions
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| {
                        s.standards_status
                            .as_ref()
                            .is_some_and(|st| st.as_str() == "READY")
                    })
                    .filter_map(|s| s.standards_arn),
            ),
            Err(e) => {
                out.error_on(ENABLED, &arn, &AwsError::from(e));
                return out.finish();
            }
        }
    }
    let mut products = Vec::new();
    if standards.is_empty() {
        let mut pages = client
            .list_enabled_products_for_import()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => products.extend(p.product_subscriptions.unwrap_or_default()),
                Err(e) => {
                    out.error_on(ENABLED, &arn, &AwsError::from(e));
                    return out.finish();
                }
            }
        }
    }
    out.verdict(
        ENABLED,
        &arn,
        !standards.is_empty() || !products.is_empty(),
        if standards.is_empty() {
            format!(
                "Security Hub is enabled with {} integration(s)",
                products.len()
            )
        } else {
            format!(
                "Security Hub is enabled with {} standard(s)",
                standards.len()
            )
        },
        "Security Hub is subscribed but no standard or integration is active",
        json!({"subscribed_at": hub.subscribed_at, "enabled_standards": standards,
               "product_subscriptions": products}),
    );
    out.finish()
}
