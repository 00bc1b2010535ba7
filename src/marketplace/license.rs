//! The license: RegisterUsage at start and periodically, its PS256 signature verified against
//! the seller's public key, the outcome mapped to a [`LicenseStatus`].

use std::time::Duration;

use aws_sdk_marketplacemetering::error::ProvideErrorMetadata;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{LicenseStatus, Marketplace};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureClaims {
    product_code: String,
    #[serde(default)]
    nonce: Option<String>,
}

/// What one RegisterUsage attempt concluded.
#[derive(Debug)]
pub enum Check {
    Decided(LicenseStatus, String),
    /// Throttling, 5xx or the network: try again with backoff.
    Transient(String),
}

/// Verifies the RegisterUsage signature: PS256, our product code, our nonce. AWS's token has no
/// `exp`, so the default "exp required" rule is switched off.
pub fn verify_signature(
    token: &str,
    public_key_pem: &str,
    product_code: &str,
    nonce: &str,
) -> Result<(), String> {
    let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
        .map_err(|e| format!("public key unusable: {e}"))?;
    let mut validation = Validation::new(Algorithm::PS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<SignatureClaims>(token, &key, &validation)
        .map_err(|e| format!("signature verification failed: {e}"))?;
    if data.claims.product_code != product_code {
        return Err(format!(
            "signature is for product {:?}, not {product_code:?}",
            data.claims.product_code
        ));
    }
    if data.claims.nonce.as_deref() != Some(nonce) {
        return Err("signature does not echo our nonce (possible replay)".into());
    }
    Ok(())
}

/// The license when Marketplace is disabled: TRIAL_MODE still means a trial (limits, and
/// `expired` after TRIAL_DAYS, applied by [`Marketplace::license`]); otherwise `disabled`.
pub fn without_marketplace(config: &crate::config::MarketplaceConfig) -> (LicenseStatus, String) {
    if config.trial_mode {
        (
            LicenseStatus::Trial,
            "TRIAL_MODE=true (MARKETPLACE_ENABLED=false: usage is recorded locally)".into(),
        )
    } else {
        (
            LicenseStatus::Disabled,
            "MARKETPLACE_ENABLED=false: usage is recorded locally, nothing is sent to AWS".into(),
        )
    }
}

pub async fn check_once(market: &Marketplace) -> Check {
    let Some(client) = &market.client else {
        let (status, reason) = without_marketplace(&market.config);
        return Check::Decided(status, reason);
    };
    let config = &market.config;
    let product_code = config.product_code.clone().unwrap_or_default();
    let nonce = uuid::Uuid::new_v4().to_string();
    let result = client
        .register_usage()
        .product_code(&product_code)
        .public_key_version(config.public_key_version)
        .nonce(&nonce)
        .send()
        .await;
    match result {
        Ok(output) => {
            let Some(signature) = output.signature() else {
                return Check::Decided(
                    LicenseStatus::Invalid,
                    "RegisterUsage returned no signature".into(),
                );
            };
            let Some(pem) = &config.public_key_pem else {
                return Check::Decided(
                    LicenseStatus::Invalid,
                    "MARKETPLACE_PUBLIC_KEY is not set: the signature cannot be verified".into(),
                );
            };
            match verify_signature(signature, pem, &product_code, &nonce) {
                Ok(()) if config.trial_mode => {
                    Check::Decided(LicenseStatus::Trial, "TRIAL_MODE=true".into())
                }
                Ok(()) => Check::Decided(
                    LicenseStatus::Valid,
                    "subscribed (RegisterUsage signature verified)".into(),
                ),
                Err(reason) => Check::Decided(LicenseStatus::Invalid, reason),
            }
        }
        Err(err) => {
            let code = err.code().unwrap_or_default().to_string();
            let message = err.message().map(str::to_string).unwrap_or_else(|| {
                aws_sdk_marketplacemetering::error::DisplayErrorContext(&err).to_string()
            });
            match code.as_str() {
                "CustomerNotEntitledException" => {
                    Check::Decided(LicenseStatus::Trial, "not subscribed yet: trial limits apply".into())
                }
                "ThrottlingException" | "InternalServiceErrorException" | "" => Check::Transient(format!("{code} {message}")),
                "PlatformNotSupportedException" => Check::Decided(
                    LicenseStatus::Invalid,
                    "this platform is not supported by AWS Marketplace metering (run on ECS, EKS or Fargate, or set MARKETPLACE_ENABLED=false)".into(),
                ),
                _ => Check::Decided(LicenseStatus::Invalid, format!("{code}: {message}")),
            }
        }
    }
}

/// Runs a check with the backoff AWS advises for transient failures (up to `give_up_after`).
pub async fn check_with_retries(
    market: &Marketplace,
    give_up_after: Duration,
    stop: &CancellationToken,
) -> Option<Check> {
    use backon::{ExponentialBuilder, Retryable};
    let started = tokio::time::Instant::now();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .without_max_times();
    let checked = (|| async {
        match check_once(market).await {
            Check::Transient(reason) => Err(reason),
            decided => Ok(decided),
        }
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    // Wall-clock bound: a throttled call itself takes time (the SDK's own retries).
    .adjust(|_, delay| delay.filter(|d| started.elapsed() + *d < give_up_after))
    .notify(|reason: &String, delay: Duration| {
        tracing::warn!(
            reason,
            retry_in_ms = delay.as_millis() as u64,
            "license check failed transiently; retrying"
        );
    });
    tokio::select! {
        () = stop.cancelled() => None,
        checked = checked => Some(checked.unwrap_or_else(Check::Transient)),
    }
}

/// Applies a check's outcome: status, health component, metric, `license.changed` event.
pub async fn apply(market: &Marketplace, check: Check) {
    let (status, reason) = match check {
        Check::Decided(status, reason) => (status, reason),
        Check::Transient(reason) => {
            tracing::warn!(
                reason,
                "license check still failing; keeping the previous status"
            );
            return;
        }
    };
    let changed = market.set_license(status, reason.clone()).await;
    let effective = market.license().await;
    *market.components.marketplace.write().await = match effective.status {
        LicenseStatus::Invalid => format!("invalid: {}", effective.reason),
        other => other.as_str().to_string(),
    };
    export_metrics(effective.status);
    tracing::info!(status = effective.status.as_str(), reason = %effective.reason, "license checked");
    if changed {
        crate::events::publish_or_warn(
            &market.db,
            "license.changed",
            serde_json::json!({"status": effective.status, "reason": effective.reason}),
        )
        .await;
    }
}

/// The license gauges: 1 for the current status (and for an active trial), 0 for the others.
pub fn export_metrics(status: LicenseStatus) {
    metrics::gauge!("cloud_optimizer_active_trials").set(if status == LicenseStatus::Trial {
        1.0
    } else {
        0.0
    });
    for s in [
        LicenseStatus::Valid,
        LicenseStatus::Trial,
        LicenseStatus::Expired,
        LicenseStatus::Invalid,
        LicenseStatus::Disabled,
        LicenseStatus::Pending,
    ] {
        metrics::gauge!("cloud_optimizer_license_status", "status" => s.as_str())
            .set(if s == status { 1.0 } else { 0.0 });
    }
}

/// Re-checks every `MARKETPLACE_LICENSE_CHECK_SECONDS`, so a new subscription turns the license
/// `valid` without a redeploy.
pub async fn recheck_loop(market: std::sync::Arc<Marketplace>, stop: CancellationToken) {
    let interval = market.config.license_check_interval;
    loop {
        // A start-up check that only met transient errors keeps retrying now, not in an hour.
        let pending = market.license().await.status == LicenseStatus::Pending;
        if !pending {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
        // Without Marketplace this decides at once and refreshes health and metrics (a trial may
        // have expired meanwhile).
        if let Some(check) = check_with_retries(&market, Duration::from_secs(30 * 60), &stop).await
        {
            apply(&market, check).await;
        }
    }
}
