//! Runs checks against an AWS endpoint by hand and prints one JSON finding per line; for
//! writing checks against moto without the server.
//!
//! `AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
//!   cargo run --example scan_probe -- us-east-1,eu-west-1 iam,s3`

use std::collections::HashSet;
use std::sync::Arc;

use cloud_optimizer::scans::checks;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let regions: Vec<String> = args
        .get(1)
        .map(|r| r.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec!["us-east-1".into()]);
    let services: Option<HashSet<String>> = args
        .get(2)
        .map(|s| s.split(',').map(str::to_string).collect());
    let sdk = cloud_optimizer::aws::sdk_config().await;
    let sdk = sdk
        .to_builder()
        .region(aws_config::Region::new(regions[0].clone()))
        .build();
    let identity = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .expect("sts:GetCallerIdentity");
    let account = identity.account.unwrap_or_default();
    let wanted: Arc<HashSet<&'static str>> = Arc::new(checks::implemented().collect());
    let calls = Arc::new(checks::CallLog::default());
    for service in checks::services() {
        if services.as_ref().is_some_and(|s| !s.contains(service.id)) {
            continue;
        }
        let regions = if service.global {
            &regions[..1]
        } else {
            &regions[..]
        };
        for region in regions {
            let findings = checks::run_service(
                service,
                &sdk,
                region,
                &account,
                wanted.clone(),
                calls.clone(),
            )
            .await;
            for f in findings {
                println!(
                    "{}",
                    serde_json::json!({"check": f.check, "service": f.service, "region": f.region,
                        "resource": f.resource, "status": f.status, "reason": f.reason, "evidence": f.evidence})
                );
            }
        }
    }
    eprintln!("{} AWS calls: {:?}", calls.total(), calls.by_operation());
}
