//! AWS SDK configuration shared by Marketplace metering, S3 bundle downloads and scans.
//!
//! One HTTP stack for the whole binary: the SDK's hyper client with rustls on `ring`, the same
//! TLS provider sqlx and reqwest use. Endpoints follow the standard variables
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`), which is how tests reach local fakes.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

pub async fn sdk_config() -> SdkConfig {
    crate::ensure_crypto_provider();
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .load()
        .await
}

/// An S3 client on [`sdk_config`]. S3-compatible endpoints (MinIO, LocalStack, moto) set through
/// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` want path-style addressing.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = sdk_config().await;
    let custom_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(custom_endpoint)
            .build(),
    )
}
