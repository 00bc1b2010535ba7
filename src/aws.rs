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
