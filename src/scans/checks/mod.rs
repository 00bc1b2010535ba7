//! The checks: Rust code on the AWS SDK, one module per AWS service.
//!
//! Each module exports a [`Service`]: its id (the KB's service id), whether it is global (run
//! once per scan) or regional (run once per region), the catalogue ids of the checks it
//! implements, and `run`, which makes **one inventory pass** for that service and region and
//! evaluates every selected check on it. Check ids are the catalogue's slugs from
//! `data/compliance/common/checks-*.json`, so findings reach the controls of every framework
//! through the KB's `maps_to` edges; there is no second mapping table.
//!
//! A check never fails the scan: an AWS error (access denied, an API the region or endpoint does
//! not offer, a timeout) becomes a finding with status `error` and the reason, for each check
//! that needed the failed call.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

pub mod accessanalyzer;
pub mod acm;
pub mod backup;
pub mod cloudfront;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod config;
pub mod dynamodb;
pub mod ec2;
pub mod ecr;
pub mod efs;
pub mod eks;
pub mod elasticache;
pub mod elb;
pub mod guardduty;
pub mod iam;
pub mod kms;
pub mod lambda;
pub mod rds;
pub mod s3;
pub mod secretsmanager;
pub mod securityhub;
pub mod sns;
pub mod sqs;

/// Every service with checks, in the order scans report them.
pub fn services() -> &'static [Service] {
    static ALL: std::sync::OnceLock<Vec<Service>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        vec![
            iam::SERVICE,
            accessanalyzer::SERVICE,
            s3::SERVICE,
            cloudtrail::SERVICE,
            config::SERVICE,
            guardduty::SERVICE,
            securityhub::SERVICE,
            cloudwatch::SERVICE,
            ec2::SERVICE,
            elb::SERVICE,
            rds::SERVICE,
            kms::SERVICE,
            lambda::SERVICE,
            ecr::SERVICE,
            eks::SERVICE,
            dynamodb::SERVICE,
            sns::SERVICE,
            sqs::SERVICE,
            secretsmanager::SERVICE,
            efs::SERVICE,
            elasticache::SERVICE,
            backup::SERVICE,
            acm::SERVICE,
            cloudfront::SERVICE,
        ]
    })
}

/// Every implemented check id (catalogue slugs), for `GET /api/v1/kb/checks` to mark automated.
pub fn implemented() -> impl Iterator<Item = &'static str> {
    services().iter().flat_map(|s| s.checks.iter().copied())
}

/// One AWS service's checks.
#[derive(Clone, Copy)]
pub struct Service {
    /// The KB's service id (`iam`, `s3`, `ec2`, …): the `service` of its findings and the name a
    /// scan request's `services` filter uses.
    pub id: &'static str,
    /// Global services run once per scan in the scan's home region.
    pub global: bool,
    /// Catalogue ids of the checks `run` evaluates.
    pub checks: &'static [&'static str],
    pub run: for<'a> fn(&'a Ctx) -> BoxFuture<'a, Vec<Finding>>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Error,
    NotApplicable,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Pass,
        Status::Fail,
        Status::Error,
        Status::NotApplicable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::NotApplicable => "not_applicable",
        }
    }
}

/// One verdict on one resource.
#[derive(Debug, Clone)]
pub struct Finding {
    pub check: &'static str,
    pub service: &'static str,
    pub resource: String,
    pub region: String,
    pub status: Status,
    /// One line a person reads: why it passed, failed or could not be decided.
    pub reason: String,
    /// The fields that decided it, as AWS returned them.
    pub evidence: Value,
}

/// What a service's `run` gets: an SDK configuration for one region with the scan's
/// credentials, the account, which checks are wanted, and the call counter.
pub struct Ctx {
    pub sdk: SdkConfig,
    pub region: String,
    pub account_id: String,
    pub partition: String,
    pub service: &'static str,
    wanted: Arc<HashSet<&'static str>>,
    calls: Arc<CallLog>,
}

/// A scan's AWS calls: how many, and how many of each operation (`IAM:GetAccountSummary`), so
/// an operator sees which permissions a scan used.
#[derive(Debug, Default)]
pub struct CallLog {
    total: AtomicU64,
    by_operation: Mutex<BTreeMap<String, u64>>,
}

impl CallLog {
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn by_operation(&self) -> BTreeMap<String, u64> {
        self.by_operation.lock().expect("call log").clone()
    }

    /// Records a call made outside a service client (the engine's own STS and EC2 calls).
    pub fn record(&self, api: &str, operation: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self
            .by_operation
            .lock()
            .expect("call log")
            .entry(format!("{api}:{operation}"))
            .or_insert(0) += 1;
    }
}

impl Ctx {
    pub fn new(
        sdk: SdkConfig,
        account_id: String,
        service: &'static str,
        wanted: Arc<HashSet<&'static str>>,
        calls: Arc<CallLog>,
    ) -> Self {
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let partition = partition_of(&region).to_string();
        Self {
            sdk,
            region,
            account_id,
            partition,
            service,
            wanted,
            calls,
        }
    }

    /// Whether any of `checks` is selected in this scan: skip inventory calls nobody needs.
    pub fn wants_any(&self, checks: &[&'static str]) -> bool {
        checks.iter().any(|c| self.wanted.contains(c))
    }

    pub fn wants(&self, check: &'static str) -> bool {
        self.wanted.contains(check)
    }

    /// The interceptor that counts this scan's AWS calls (every attempt, every page); add it to
    /// every client: `Config::builder().interceptor(ctx.counter())`.
    pub fn counter(&self) -> CallCounter {
        CallCounter {
            calls: self.calls.clone(),
            service: self.service,
        }
    }

    /// The ARN of the account itself, the resource of account-level checks.
    pub fn account_arn(&self) -> String {
        format!("arn:{}:iam::{}:root", self.partition, self.account_id)
    }

    /// A regional ARN: `arn:aws:{service}:{region}:{account}:{resource}`.
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account_id
        )
    }

    /// A collector for this service's findings.
    pub fn out(&self) -> Out<'_> {
        Out {
            ctx: self,
            findings: Vec::new(),
        }
    }
}

pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Counts attempts, so a retried or paginated call counts each request AWS sees.
#[derive(Clone, Debug)]
pub struct CallCounter {
    calls: Arc<CallLog>,
    service: &'static str,
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "ScanCallCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        match cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>() {
            Some(m) => self.calls.record(m.service(), m.name()),
            None => self.calls.record(self.service, "unknown"),
        }
        metrics::counter!("cloud_optimizer_scan_aws_calls_total", "service" => self.service)
            .increment(1);
        Ok(())
    }
}

/// Collects a service's findings; records only checks the scan selected.
pub struct Out<'a> {
    ctx: &'a Ctx,
    findings: Vec<Finding>,
}

impl Out<'_> {
    fn push(
        &mut self,
        check: &'static str,
        resource: &str,
        status: Status,
        reason: String,
        evidence: Value,
    ) {
        if self.ctx.wants(check) {
            self.findings.push(Finding {
                check,
                service: self.ctx.service,
                resource: resource.to_string(),
                region: self.ctx.region.clone(),
                status,
                reason,
                evidence,
            });
        }
    }

    /// `pass` when `ok`, else `fail`, with the reason for whichever it is.
    pub fn verdict(
        &mut self,
        check: &'static str,
        resource: &str,
        ok: bool,
        pass_reason: impl Into<String>,
        fail_reason: impl Into<String>,
        evidence: Value,
    ) {
        if ok {
            self.push(check, resource, Status::Pass, pass_reason.into(), evidence);
        } else {
            self.push(check, resource, Status::Fail, fail_reason.into(), evidence);
        }
    }

    pub fn pass(
        &mut self,
        check: &'static str,
        resource: &str,
        reason: impl Into<String>,
        evidence: Value,
    ) {
        self.push(check, resource, Status::Pass, reason.into(), evidence);
    }

    pub fn fail(
        &mut self,
        check: &'static str,
        resource: &str,
        reason: impl Into<String>,
        evidence: Value,
    ) {
        self.push(check, resource, Status::Fail, reason.into(), evidence);
    }

    /// The check does not apply (no resource of its kind in this region, a feature not in use).
    pub fn not_applicable(
        &mut self,
        check: &'static str,
        resource: &str,
        reason: impl Into<String>,
    ) {
        self.push(
            check,
            resource,
            Status::NotApplicable,
            reason.into(),
            Value::Null,
        );
    }

    /// `not_applicable` on the account for each check that found no resource to judge.
    pub fn none_found(&mut self, checks: &[&'static str], what: &str) {
        let account = self.ctx.account_arn();
        for check in checks {
            self.not_applicable(check, &account, format!("no {what} in {}", self.ctx.region));
        }
    }

    /// An `error` finding on the account for each of `checks`: the call they needed failed.
    pub fn error(&mut self, checks: &[&'static str], error: &dyn std::fmt::Display) {
        let account = self.ctx.account_arn();
        let reason = error.to_string();
        for check in checks {
            self.push(check, &account, Status::Error, reason.clone(), Value::Null);
        }
    }

    /// An `error` finding on one resource.
    pub fn error_on(&mut self, check: &'static str, resource: &str, error: &dyn std::fmt::Display) {
        self.push(
            check,
            resource,
            Status::Error,
            error.to_string(),
            Value::Null,
        );
    }

    pub fn finish(self) -> Vec<Finding> {
        self.findings
    }
}

/// An AWS SDK error as one line: the service's error code and message when AWS answered, the
/// cause chain otherwise (timeouts, connection errors).
pub fn aws_error<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_types::error::display::DisplayErrorContext;
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => format!("{}", DisplayErrorContext(e)),
            }
        }
        SdkError::TimeoutError(_) => "the AWS call timed out".to_string(),
        other => format!("{}", DisplayErrorContext(other)),
    }
}

/// [`aws_error`] as a `Display` value, for [`Out::error`].
pub struct AwsError(pub String);

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E, R> From<aws_smithy_runtime_api::client::result::SdkError<E, R>> for AwsError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn from(err: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Self {
        AwsError(aws_error(&err))
    }
}

/// Builds a service client with the scan's config and the call counter:
/// `let iam = client!(ctx, aws_sdk_iam);`
#[macro_export]
macro_rules! scan_client {
    ($ctx:expr, $krate:ident) => {
        $krate::Client::from_conf(
            $krate::config::Builder::from(&$ctx.sdk)
                .interceptor($ctx.counter())
                .build(),
        )
    };
}

/// Runs one service's checks in one region: what a scan does for each (service, region) unit,
/// and what `examples/scan_probe.rs` calls to try checks against an endpoint by hand.
pub async fn run_service(
    service: &Service,
    sdk: &SdkConfig,
    region: &str,
    account_id: &str,
    wanted: Arc<HashSet<&'static str>>,
    calls: Arc<CallLog>,
) -> Vec<Finding> {
    let sdk = sdk
        .to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .build();
    let ctx = Ctx::new(sdk, account_id.to_string(), service.id, wanted, calls);
    (service.run)(&ctx).await
}
