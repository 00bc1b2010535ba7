//! AWS Marketplace: the license (RegisterUsage and its signature), the trial, the usage ledger
//! that every billable action writes in its own transaction, and the hourly MeterUsage reporter.
//! The AWS facts this rests on are in `docs/MARKETPLACE.md`.

pub mod api;
pub mod clock;
pub mod ledger;
pub mod license;
pub mod reporter;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::RwLock;
use utoipa::ToSchema;

use crate::config::MarketplaceConfig;
use crate::runtime::Components;
pub use api::router;
pub use clock::Clock;

/// The product's billing dimensions (one MeterUsage record per dimension per hour).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Dimension {
    SecurityScans,
    ChatQuestions,
    DocumentAnalysis,
}

impl Dimension {
    pub const ALL: [Dimension; 3] = [
        Self::SecurityScans,
        Self::ChatQuestions,
        Self::DocumentAnalysis,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecurityScans => "SecurityScans",
            Self::ChatQuestions => "ChatQuestions",
            Self::DocumentAnalysis => "DocumentAnalysis",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(raw))
    }

    pub fn trial_limit(self, config: &MarketplaceConfig) -> i64 {
        match self {
            Self::SecurityScans => config.trial_limit_scans,
            Self::ChatQuestions => config.trial_limit_chat,
            Self::DocumentAnalysis => config.trial_limit_documents,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    /// Subscribed: RegisterUsage succeeded and its signature verified.
    Valid,
    /// Trial limits apply (TRIAL_MODE, or the customer is not subscribed yet).
    Trial,
    /// The trial period is over and there is no subscription.
    Expired,
    /// The license cannot be trusted (bad signature, wrong product, unsupported platform…).
    Invalid,
    /// Marketplace disabled: nothing is sent to AWS; usage is still recorded.
    Disabled,
    /// The first check has not finished; trial limits apply meanwhile.
    Pending,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Trial => "trial",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::Disabled => "disabled",
            Self::Pending => "pending",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LicenseState {
    pub status: LicenseStatus,
    pub reason: String,
    pub last_check: Option<DateTime<Utc>>,
}

/// Shared licensing and metering state of this replica.
pub struct Marketplace {
    pub config: MarketplaceConfig,
    pub db: PgPool,
    /// `None` when Marketplace is disabled: no AWS client is ever built.
    pub client: Option<aws_sdk_marketplacemetering::Client>,
    /// The credentials the client signs with: their access key id names the AWS task a
    /// MeterUsage call came from (see `reporter`, "who may resend").
    credentials: Option<aws_sdk_marketplacemetering::config::SharedCredentialsProvider>,
    /// Every "now" of licensing and metering (tests shift it).
    pub clock: Clock,
    /// The license as last determined (before trial expiry is applied; see [`Self::license`]).
    state: RwLock<LicenseState>,
    pub trial_started_at: DateTime<Utc>,
    /// Where the license is reported for `/health` (`marketplace`).
    pub components: Arc<Components>,
}

impl Marketplace {
    /// With the system clock (or the test offset, see [`clock::TEST_OFFSET_VAR`]).
    pub async fn new(
        config: MarketplaceConfig,
        db: PgPool,
        components: Arc<Components>,
    ) -> anyhow::Result<Arc<Self>> {
        Self::with_clock(config, db, components, Clock::from_process_env()?).await
    }

    /// Reads the deployment's first start (the trial start), creating it on the very first run.
    pub async fn with_clock(
        config: MarketplaceConfig,
        db: PgPool,
        components: Arc<Components>,
        clock: Clock,
    ) -> anyhow::Result<Arc<Self>> {
        let now = clock.now();
        let first_start = async {
            sqlx::query!(
                "INSERT INTO deployment (singleton, first_started_at) VALUES (true, $1) ON CONFLICT DO NOTHING",
                now
            )
            .execute(&db)
            .await?;
            sqlx::query_scalar!("SELECT first_started_at FROM deployment")
                .fetch_one(&db)
                .await
        };
        // Without migrations (MIGRATE_ON_STARTUP=false before `migrate` ran) the server still
        // starts and reports not-ready; the trial start is then read again at the next start.
        let trial_started_at = first_start.await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read the deployment's first start; assuming now");
            now
        });
        let mut credentials = None;
        let client = if config.enabled {
            let sdk = crate::aws::sdk_config().await;
            credentials = sdk.credentials_provider();
            let conf = aws_sdk_marketplacemetering::config::Builder::from(&sdk)
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(std::time::Duration::from_secs(10))
                        .operation_timeout(std::time::Duration::from_secs(30))
                        .build(),
                )
                .build();
            Some(aws_sdk_marketplacemetering::Client::from_conf(conf))
        } else {
            None
        };
        let initial = if !config.enabled {
            let (status, reason) = license::without_marketplace(&config);
            LicenseState {
                status,
                reason,
                last_check: None,
            }
        } else {
            LicenseState {
                status: LicenseStatus::Pending,
                reason: "license check in progress".into(),
                last_check: None,
            }
        };
        Ok(Arc::new(Self {
            config,
            db,
            client,
            credentials,
            clock,
            state: RwLock::new(initial),
            trial_started_at,
            components,
        }))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The access key id this replica signs MeterUsage calls with: AWS files records per task,
    /// and the same key id is certainly the same task.
    pub async fn aws_identity(&self) -> Result<String, String> {
        use aws_sdk_marketplacemetering::config::ProvideCredentials;
        let Some(provider) = &self.credentials else {
            return Err("no AWS credentials provider is configured".into());
        };
        provider
            .provide_credentials()
            .await
            .map(|c| c.access_key_id().to_string())
            .map_err(|e| format!("AWS credentials unavailable: {e}"))
    }

    pub fn trial_ends_at(&self) -> DateTime<Utc> {
        self.trial_started_at + chrono::Duration::days(self.config.trial_days)
    }

    /// Exports every licensing and usage metric with its value at start-up (0 for what has not
    /// happened yet), so dashboards and alerts see series from the first scrape.
    pub async fn export_initial_metrics(&self) {
        license::export_metrics(self.license().await.status);
        for dimension in Dimension::ALL {
            let dim = dimension.as_str();
            metrics::counter!("cloud_optimizer_usage_events_total", "dimension" => dim)
                .increment(0);
            for outcome in reporter::REPORT_OUTCOMES {
                metrics::counter!("cloud_optimizer_usage_reports_total", "dimension" => dim, "outcome" => outcome)
                    .increment(0);
            }
        }
        if self.client.is_some() {
            // The reporter keeps these current from here on.
            self.update_gauges().await;
        } else {
            // Without Marketplace nothing is ever sent, so nothing waits for AWS.
            for dimension in Dimension::ALL {
                let dim = dimension.as_str();
                metrics::gauge!("cloud_optimizer_usage_pending_events", "dimension" => dim)
                    .set(0.0);
                metrics::gauge!("cloud_optimizer_usage_unconfirmed_units", "dimension" => dim)
                    .set(0.0);
            }
        }
    }

    /// The effective license now: a trial past its end is `expired`.
    pub async fn license(&self) -> LicenseState {
        let mut state = self.state.read().await.clone();
        if matches!(state.status, LicenseStatus::Trial | LicenseStatus::Pending)
            && self.now() >= self.trial_ends_at()
        {
            state.status = LicenseStatus::Expired;
            state.reason = format!(
                "the {}-day trial ended on {}",
                self.config.trial_days,
                self.trial_ends_at().format("%Y-%m-%d")
            );
        }
        state
    }

    /// Records a new determination; returns true when the status changed.
    pub async fn set_license(&self, status: LicenseStatus, reason: String) -> bool {
        let mut state = self.state.write().await;
        let changed = state.status != status;
        *state = LicenseState {
            status,
            reason,
            last_check: Some(self.now()),
        };
        changed
    }

    /// Whether trial limits apply to billable actions now. (`Disabled` means no Marketplace and
    /// no TRIAL_MODE: nothing to limit; TRIAL_MODE without Marketplace is `Trial`.)
    pub fn limits_apply(status: LicenseStatus) -> bool {
        match status {
            LicenseStatus::Trial | LicenseStatus::Pending => true,
            LicenseStatus::Disabled
            | LicenseStatus::Valid
            | LicenseStatus::Expired
            | LicenseStatus::Invalid => false,
        }
    }
}
