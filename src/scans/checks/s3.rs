//! S3: the account's Block Public Access setting and every general purpose bucket.
//!
//! Buckets are global (ListBuckets returns all of them from any region), so the service runs
//! once per scan. Each bucket's configuration must be read from its own region, so the bucket's
//! region comes from ListBuckets (`BucketRegion`) or GetBucketLocation, and per-bucket calls go
//! to a client for that region. The public read/write verdicts and the CloudTrail log-bucket
//! checks share [`exposure`], which combines the ACL, the bucket policy and the bucket- and
//! account-level Block Public Access the way S3 applies them.

use std::collections::HashMap;

use aws_sdk_s3::types::{Grant, LifecycleRule, ServerSideEncryption, ServerSideEncryptionRule};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use super::{AwsError, Ctx, Finding, Out, Service};
use crate::scan_client;

const ACCOUNT_BPA: &str = "s3-account-public-access-blocked";
const BUCKET_BPA: &str = "s3-bucket-level-public-access-blocked";
const DEFAULT_ENCRYPTION: &str = "s3-bucket-default-encryption";
const KMS_ENCRYPTION: &str = "s3-bucket-kms-encryption";
const REQUIRES_TLS: &str = "s3-bucket-requires-tls";
const VERSIONING: &str = "s3-bucket-versioning-enabled";
const ACCESS_LOGGING: &str = "s3-bucket-server-access-logging";
const PUBLIC_READ: &str = "s3-bucket-no-public-read";
const PUBLIC_WRITE: &str = "s3-bucket-no-public-write";
const ACLS_DISABLED: &str = "s3-bucket-acls-disabled";
const MFA_DELETE: &str = "s3-bucket-mfa-delete-enabled";
const LIFECYCLE: &str = "s3-bucket-lifecycle-configured";
const VERSIONED_LIFECYCLE: &str = "s3-versioned-bucket-lifecycle-configured";
const OBJECT_LOCK: &str = "s3-bucket-object-lock-enabled";
const EVENT_NOTIFICATIONS: &str = "s3-bucket-event-notifications";
const CROSS_REGION_REPLICATION: &str = "s3-bucket-cross-region-replication";
const CROSS_ACCOUNT: &str = "s3-bucket-cross-account-access-restricted";

pub const SERVICE: Service = Service {
    id: "s3",
    global: true,
    checks: &[
        ACCOUNT_BPA,
        BUCKET_BPA,
        DEFAULT_ENCRYPTION,
        KMS_ENCRYPTION,
        REQUIRES_TLS,
        VERSIONING,
        ACCESS_LOGGING,
        PUBLIC_READ,
        PUBLIC_WRITE,
        ACLS_DISABLED,
        MFA_DELETE,
        LIFECYCLE,
        VERSIONED_LIFECYCLE,
        OBJECT_LOCK,
        EVENT_NOTIFICATIONS,
        CROSS_REGION_REPLICATION,
        CROSS_ACCOUNT,
    ],
    run: |ctx| Box::pin(run(ctx)),
};

/// Per-bucket checks: those that need the bucket list at all.
const BUCKET_CHECKS: &[&str] = &[
    BUCKET_BPA,
    DEFAULT_ENCRYPTION,
    KMS_ENCRYPTION,
    REQUIRES_TLS,
    VERSIONING,
    ACCESS_LOGGING,
    PUBLIC_READ,
    PUBLIC_WRITE,
    ACLS_DISABLED,
    MFA_DELETE,
    LIFECYCLE,
    VERSIONED_LIFECYCLE,
    OBJECT_LOCK,
    EVENT_NOTIFICATIONS,
    CROSS_REGION_REPLICATION,
    CROSS_ACCOUNT,
];

/// Requests in flight at once across buckets: enough to hide latency on accounts with
/// hundreds of buckets without tripping S3's per-account request throttling.
const CONCURRENCY: usize = 8;

/// One piece of a bucket's configuration.
pub(super) enum Fetched<T> {
    /// No selected check needed it.
    Skipped,
    /// S3 answered that the configuration does not exist (no policy, no lifecycle, …).
    Absent,
    Got(T),
    Failed(AwsError),
}

impl<T> Fetched<T> {
    /// The configuration (`None` when absent), or the error that prevented reading it;
    /// `Err(None)` when it was not fetched.
    pub(super) fn ready(&self) -> Result<Option<&T>, Option<&AwsError>> {
        match self {
            Fetched::Skipped => Err(None),
            Fetched::Absent => Ok(None),
            Fetched::Got(v) => Ok(Some(v)),
            Fetched::Failed(e) => Err(Some(e)),
        }
    }
}

/// Maps an S3 answer to [`Fetched`]: the error codes in `absent` mean "not configured".
async fn fetch<T, E, R>(
    wanted: bool,
    absent: &[&str],
    call: impl std::future::Future<Output = Result<T, SdkError<E, R>>>,
) -> Fetched<T>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if !wanted {
        return Fetched::Skipped;
    }
    match call.await {
        Ok(v) => Fetched::Got(v),
        Err(e) if e.code().is_some_and(|c| absent.contains(&c)) => Fetched::Absent,
        Err(e) => Fetched::Failed(AwsError::from(e)),
    }
}

/// The four Block Public Access settings; a missing setting counts as off.
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct Bpa {
    block_public_acls: bool,
    ignore_public_acls: bool,
    block_public_policy: bool,
    restrict_public_buckets: bool,
}

impl Bpa {
    fn all(&self) -> bool {
        self.block_public_acls
            && self.ignore_public_acls
            && self.block_public_policy
            && self.restrict_public_buckets
    }

    /// S3 applies the stricter of the account and bucket settings, flag by flag.
    fn or(self, other: Bpa) -> Bpa {
        Bpa {
            block_public_acls: self.block_public_acls || other.block_public_acls,
            ignore_public_acls: self.ignore_public_acls || other.ignore_public_acls,
            block_public_policy: self.block_public_policy || other.block_public_policy,
            restrict_public_buckets: self.restrict_public_buckets || other.restrict_public_buckets,
        }
    }

    fn json(&self) -> Value {
        json!({
            "BlockPublicAcls": self.block_public_acls,
            "IgnorePublicAcls": self.ignore_public_acls,
            "BlockPublicPolicy": self.block_public_policy,
            "RestrictPublicBuckets": self.restrict_public_buckets,
        })
    }
}

/// A client for `region` with the scan's credentials and call counter.
pub(super) fn client_in(ctx: &Ctx, region: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&ctx.sdk)
            .region(aws_config::Region::new(region.to_string()))
            .interceptor(ctx.counter())
            .build(),
    )
}

pub(super) fn bucket_arn(ctx: &Ctx, bucket: &str) -> String {
    format!("arn:{}:s3:::{bucket}", ctx.partition)
}

/// The account-level Block Public Access (`None`: never configured, i.e. all off).
pub(super) async fn account_bpa(ctx: &Ctx) -> Result<Option<Bpa>, AwsError> {
    let control = scan_client!(ctx, aws_sdk_s3control);
    let answer = control
        .get_public_access_block()
        .account_id(&ctx.account_id)
        .send()
        .await;
    match answer {
        Ok(r) => Ok(Some(
            r.public_access_block_configuration
                .map(|c| Bpa {
                    block_public_acls: c.block_public_acls.unwrap_or(false),
                    ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
                    block_public_policy: c.block_public_policy.unwrap_or(false),
                    restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
                })
                .unwrap_or_default(),
        )),
        Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => Ok(None),
        Err(e) => Err(AwsError::from(e)),
    }
}

/// The region a bucket lives in: GetBucketLocation answers from any region; an empty
/// constraint is us-east-1 and the legacy `EU` is eu-west-1.
pub(super) async fn bucket_region(
    client: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<String, AwsError> {
    let r = client
        .get_bucket_location()
        .bucket(bucket)
        .send()
        .await
        .map_err(AwsError::from)?;
    Ok(match r.location_constraint.as_ref().map(|c| c.as_str()) {
        None | Some("") => "us-east-1".to_string(),
        Some("EU") => "eu-west-1".to_string(),
        Some(other) => other.to_string(),
    })
}

/// Which parts of a bucket's configuration to read.
#[derive(Default, Clone, Copy)]
pub(super) struct Needs {
    pub bpa: bool,
    pub encryption: bool,
    pub policy: bool,
    pub versioning: bool,
    pub logging: bool,
    pub acl: bool,
    pub ownership: bool,
    pub lifecycle: bool,
    pub object_lock: bool,
    pub notifications: bool,
    pub replication: bool,
}

/// What a bucket's configuration calls returned.
pub(super) struct Details {
    pub bpa: Fetched<Bpa>,
    pub encryption: Fetched<Vec<ServerSideEncryptionRule>>,
    pub policy: Fetched<String>,
    /// Versioning status and MFA delete status, as S3 spells them (`None` when never set).
    pub versioning: Fetched<(Option<String>, Option<String>)>,
    /// The target bucket of server access logs (`Absent` when logging is off).
    pub logging: Fetched<String>,
    pub acl: Fetched<Vec<Grant>>,
    /// The Object Ownership setting of the bucket's ownership controls.
    pub ownership: Fetched<String>,
    pub lifecycle: Fetched<Vec<LifecycleRule>>,
    pub object_lock: Fetched<Option<String>>,
    /// The kinds of destinations events are sent to (`SNS`, `SQS`, `Lambda`, `EventBridge`).
    pub notifications: Fetched<Vec<&'static str>>,
    /// Destination bucket ARNs of enabled replication rules.
    pub replication: Fetched<Vec<String>>,
}

/// Reads the parts of one bucket's configuration that `needs` asks for, with a client for the
/// bucket's region.
pub(super) async fn bucket_details(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    needs: Needs,
) -> Details {
    let bpa = fetch(
        needs.bpa,
        &["NoSuchPublicAccessBlockConfiguration"],
        client.get_public_access_block().bucket(bucket).send(),
    )
    .await;
    let bpa = map(bpa, |r| {
        let c = r.public_access_block_configuration;
        Bpa {
            block_public_acls: c.as_ref().and_then(|c| c.block_public_acls) == Some(true),
            ignore_public_acls: c.as_ref().and_then(|c| c.ignore_public_acls) == Some(true),
            block_public_policy: c.as_ref().and_then(|c| c.block_public_policy) == Some(true),
            restrict_public_buckets: c.as_ref().and_then(|c| c.restrict_public_buckets)
                == Some(true),
        }
    });
    let encryption = fetch(
        needs.encryption,
        &["ServerSideEncryptionConfigurationNotFoundError"],
        client.get_bucket_encryption().bucket(bucket).send(),
    )
    .await;
    let encryption = map(encryption, |r| {
        r.server_side_encryption_configuration
            .map(|c| c.rules)
            .unwrap_or_default()
    });
    let policy = fetch(
        needs.policy,
        &["NoSuchBucketPolicy"],
        client.get_bucket_policy().bucket(bucket).send(),
    )
    .await;
    let policy = flat(map(policy, |r| r.policy));
    let versioning = fetch(
        needs.versioning,
        &[],
        client.get_bucket_versioning().bucket(bucket).send(),
    )
    .await;
    let versioning = map(versioning, |r| {
        (
            r.status.map(|s| s.as_str().to_string()),
            r.mfa_delete.map(|s| s.as_str().to_string()),
        )
    });
    let logging = fetch(
        needs.logging,
        &[],
        client.get_bucket_logging().bucket(bucket).send(),
    )
    .await;
    let logging = flat(map(logging, |r| {
        r.logging_enabled
            .map(|l| l.target_bucket)
            .filter(|t| !t.is_empty())
    }));
    let acl = fetch(
        needs.acl,
        &[],
        client.get_bucket_acl().bucket(bucket).send(),
    )
    .await;
    let acl = map(acl, |r| r.grants.unwrap_or_default());
    let ownership = fetch(
        needs.ownership,
        &["OwnershipControlsNotFoundError"],
        client.get_bucket_ownership_controls().bucket(bucket).send(),
    )
    .await;
    let ownership = flat(map(ownership, |r| {
        r.ownership_controls
            .and_then(|c| c.rules.into_iter().next())
            .map(|rule| rule.object_ownership.as_str().to_string())
    }));
    let lifecycle = fetch(
        needs.lifecycle,
        &["NoSuchLifecycleConfiguration"],
        client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send(),
    )
    .await;
    let lifecycle = map(lifecycle, |r| r.rules.unwrap_or_default());
    let object_lock = fetch(
        needs.object_lock,
        &["ObjectLockConfigurationNotFoundError"],
        client.get_object_lock_configuration().bucket(bucket).send(),
    )
    .await;
    let object_lock = map(object_lock, |r| {
        r.object_lock_configuration
            .and_then(|c| c.object_lock_enabled)
            .map(|s| s.as_str().to_string())
    });
    let notifications = fetch(
        needs.notifications,
        &[],
        client
            .get_bucket_notification_configuration()
            .bucket(bucket)
            .send(),
    )
    .await;
    let notifications = map(notifications, |r| {
        let mut kinds = Vec::new();
        if r.topic_configurations.is_some_and(|c| !c.is_empty()) {
            kinds.push("SNS");
        }
        if r.queue_configurations.is_some_and(|c| !c.is_empty()) {
            kinds.push("SQS");
        }
        if r.lambda_function_configurations
            .is_some_and(|c| !c.is_empty())
        {
            kinds.push("Lambda");
        }
        if r.event_bridge_configuration.is_some() {
            kinds.push("EventBridge");
        }
        kinds
    });
    let replication = fetch(
        needs.replication,
        &["ReplicationConfigurationNotFoundError"],
        client.get_bucket_replication().bucket(bucket).send(),
    )
    .await;
    let replication = map(replication, |r| {
        r.replication_configuration
            .map(|c| {
                c.rules
                    .into_iter()
                    .filter(|rule| rule.status.as_str() == "Enabled")
                    .filter_map(|rule| rule.destination.map(|d| d.bucket))
                    .collect()
            })
            .unwrap_or_default()
    });
    Details {
        bpa,
        encryption,
        policy,
        versioning,
        logging,
        acl,
        ownership,
        lifecycle,
        object_lock,
        notifications,
        replication,
    }
}

fn map<T, U>(f: Fetched<T>, g: impl FnOnce(T) -> U) -> Fetched<U> {
    match f {
        Fetched::Skipped => Fetched::Skipped,
        Fetched::Absent => Fetched::Absent,
        Fetched::Got(v) => Fetched::Got(g(v)),
        Fetched::Failed(e) => Fetched::Failed(e),
    }
}

/// A configuration that came back empty counts as absent.
fn flat<T>(f: Fetched<Option<T>>) -> Fetched<T> {
    match f {
        Fetched::Got(Some(v)) => Fetched::Got(v),
        Fetched::Got(None) | Fetched::Absent => Fetched::Absent,
        Fetched::Skipped => Fetched::Skipped,
        Fetched::Failed(e) => Fetched::Failed(e),
    }
}

/// Who may read or write a bucket anonymously, after Block Public Access is applied.
pub(super) struct Exposure {
    /// Why anyone could list or read objects (empty: nobody).
    pub read: Vec<String>,
    /// Why anyone could upload, overwrite or delete objects (empty: nobody).
    pub write: Vec<String>,
    pub evidence: Value,
}

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
const READ_ACTIONS: &[&str] = &[
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:ListBucket",
    "s3:ListBucketVersions",
];
const WRITE_ACTIONS: &[&str] = &["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"];
/// Condition keys that pin a statement to known networks, accounts or organisations, which
/// makes an `*` principal non-public in S3's own evaluation.
const RESTRICTING_KEYS: &[&str] = &[
    "aws:sourceip",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourcevpcarn",
    "aws:sourcearn",
    "aws:sourceaccount",
    "aws:sourceowner",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:userid",
    "s3:dataaccesspointaccount",
    "s3:dataaccesspointarn",
];

/// Combines the ACL, bucket policy and effective Block Public Access (bucket OR account) of a
/// bucket. ACL grants count unless IgnorePublicAcls is on or ACLs are disabled by Object
/// Ownership; policy statements count unless RestrictPublicBuckets is on.
pub(super) fn exposure(
    grants: &[Grant],
    ownership: Option<&str>,
    policy: Option<&str>,
    bucket_bpa: Bpa,
    account_bpa: Option<Bpa>,
) -> Exposure {
    let bpa = bucket_bpa.or(account_bpa.unwrap_or_default());
    let acls_disabled = ownership == Some("BucketOwnerEnforced");
    let mut read = Vec::new();
    let mut write = Vec::new();
    let mut public_grants = Vec::new();
    for grant in grants {
        let Some(uri) = grant.grantee.as_ref().and_then(|g| g.uri.as_deref()) else {
            continue;
        };
        if uri != ALL_USERS && uri != AUTHENTICATED_USERS {
            continue;
        }
        let permission = grant.permission.as_ref().map_or("", |p| p.as_str());
        let who = uri.rsplit('/').next().unwrap_or(uri);
        public_grants.push(json!({"grantee": uri, "permission": permission}));
        if bpa.ignore_public_acls || acls_disabled {
            continue;
        }
        if matches!(permission, "READ" | "FULL_CONTROL") {
            read.push(format!("the ACL grants {permission} to {who}"));
        }
        if matches!(permission, "WRITE" | "WRITE_ACP" | "FULL_CONTROL") {
            write.push(format!("the ACL grants {permission} to {who}"));
        }
    }
    let mut public_statements = Vec::new();
    if let Some(text) = policy {
        match serde_json::from_str::<Value>(text) {
            Ok(doc) => {
                for (i, st) in statements(&doc).enumerate() {
                    if !allows(st) || !public_principal(st) || restricted(st) {
                        continue;
                    }
                    let sid = st
                        .get("Sid")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("#{i}"), str::to_string);
                    public_statements.push(sid.clone());
                    if bpa.restrict_public_buckets {
                        continue;
                    }
                    if let Some(a) = READ_ACTIONS.iter().find(|a| grants_action(st, a)) {
                        read.push(format!("policy statement {sid} allows {a} to everyone"));
                    }
                    if let Some(a) = WRITE_ACTIONS.iter().find(|a| grants_action(st, a)) {
                        write.push(format!("policy statement {sid} allows {a} to everyone"));
                    }
                }
            }
            Err(_) => {
                let why = "the bucket policy is not valid JSON, so it cannot be ruled out";
                read.push(why.to_string());
                write.push(why.to_string());
            }
        }
    }
    Exposure {
        read,
        write,
        evidence: json!({
            "effective_block_public_access": bpa.json(),
            "account_block_public_access": account_bpa.map(|b| b.json()),
            "object_ownership": ownership,
            "public_acl_grants": public_grants,
            "public_policy_statements": public_statements,
        }),
    }
}

fn statements(doc: &Value) -> impl Iterator<Item = &Value> {
    match doc.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>().into_iter(),
        Some(one @ Value::Object(_)) => vec![one].into_iter(),
        _ => Vec::new().into_iter(),
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn allows(st: &Value) -> bool {
    st.get("Effect").and_then(Value::as_str) == Some("Allow")
}

/// `"*"`, `{"AWS": "*"}` or a list containing `*`: anyone.
fn public_principal(st: &Value) -> bool {
    match st.get("Principal") {
        Some(Value::String(s)) => s == "*",
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(k, _)| k.as_str() == "AWS" || k.as_str() == "CanonicalUser")
            .any(|(_, v)| strings(Some(v)).contains(&"*")),
        _ => false,
    }
}

fn restricted(st: &Value) -> bool {
    st.get("Condition")
        .and_then(Value::as_object)
        .is_some_and(|ops| {
            ops.values()
                .filter_map(Value::as_object)
                .flat_map(|keys| keys.keys())
                .any(|k| RESTRICTING_KEYS.contains(&k.to_ascii_lowercase().as_str()))
        })
}

/// Whether the statement's Action (or NotAction) covers `action`, with IAM wildcards.
fn grants_action(st: &Value, action: &str) -> bool {
    if let Some(not) = st.get("NotAction") {
        return !strings(Some(not)).iter().any(|p| glob(p, action));
    }
    strings(st.get("Action")).iter().any(|p| glob(p, action))
}

/// IAM-style wildcard match (`*`, `?`), case-insensitive as IAM action names are.
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Deny statements on every S3 action when aws:SecureTransport is false.
fn tls_deny_statements(doc: &Value) -> Vec<String> {
    statements(doc)
        .enumerate()
        .filter(|(_, st)| st.get("Effect").and_then(Value::as_str) == Some("Deny"))
        .filter(|(_, st)| {
            strings(st.get("Action"))
                .iter()
                .any(|a| *a == "*" || a.eq_ignore_ascii_case("s3:*"))
        })
        .filter(|(_, st)| {
            st.get("Condition")
                .and_then(Value::as_object)
                .is_some_and(|ops| {
                    ops.iter()
                        .filter(|(op, _)| matches!(op.as_str(), "Bool" | "BoolIfExists"))
                        .filter_map(|(_, keys)| keys.as_object())
                        .flat_map(|keys| keys.iter())
                        .any(|(k, v)| {
                            k.eq_ignore_ascii_case("aws:SecureTransport")
                                && match v {
                                    Value::Bool(b) => !b,
                                    Value::String(s) => s.eq_ignore_ascii_case("false"),
                                    Value::Array(l) => l.iter().any(|x| {
                                        x == &Value::Bool(false)
                                            || x.as_str()
                                                .is_some_and(|s| s.eq_ignore_ascii_case("false"))
                                    }),
                                    _ => false,
                                }
                        })
                })
        })
        .map(|(i, st)| {
            st.get("Sid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{i}"), str::to_string)
        })
        .collect()
}

const SENSITIVE_ACTIONS: &[&str] = &[
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutBucketAcl",
    "s3:PutObjectAcl",
    "s3:PutEncryptionConfiguration",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketOwnershipControls",
    "s3:DeleteBucket",
];

/// Allow statements that give principals outside `account` a sensitive action:
/// `(statement, principal, action)`.
fn cross_account_grants(doc: &Value, account: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for (i, st) in statements(doc).enumerate() {
        if !allows(st) {
            continue;
        }
        let principals: Vec<&str> = match st.get("Principal") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Object(map)) => {
                map.get("AWS").map(|v| strings(Some(v))).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let foreign = principals.iter().find(|p| {
            let p: &str = p;
            if p == "*" {
                return !restricted(st);
            }
            let id = if p.starts_with("arn:") {
                p.split(':').nth(4).unwrap_or("")
            } else {
                p
            };
            id != account
        });
        let Some(principal) = foreign else { continue };
        if let Some(action) = SENSITIVE_ACTIONS.iter().find(|a| grants_action(st, a)) {
            let sid = st
                .get("Sid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{i}"), str::to_string);
            found.push((sid, principal.to_string(), action.to_string()));
        }
    }
    found
}

struct Bucket {
    name: String,
    arn: String,
    region: Result<String, AwsError>,
}

async fn run(ctx: &Ctx) -> Vec<Finding> {
    let mut out = ctx.out();
    let public = [PUBLIC_READ, PUBLIC_WRITE];
    let account = if ctx.wants_any(&[ACCOUNT_BPA, PUBLIC_READ, PUBLIC_WRITE]) {
        Some(account_bpa(ctx).await)
    } else {
        None
    };
    match &account {
        Some(Ok(bpa)) => {
            let bpa_or_off = bpa.unwrap_or_default();
            out.verdict(
                ACCOUNT_BPA,
                &ctx.account_arn(),
                bpa_or_off.all(),
                "all four account-level Block Public Access settings are on",
                if bpa.is_none() {
                    "account-level Block Public Access is not configured".to_string()
                } else {
                    "account-level Block Public Access is not fully on".to_string()
                },
                json!({"configured": bpa.is_some(), "settings": bpa_or_off.json()}),
            );
        }
        Some(Err(e)) => out.error(&[ACCOUNT_BPA], e),
        None => {}
    }
    if !ctx.wants_any(BUCKET_CHECKS) {
        return out.finish();
    }
    let home = scan_client!(ctx, aws_sdk_s3);
    let mut listed = Vec::new();
    let mut pages = home.list_buckets().into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => listed.extend(p.buckets.unwrap_or_default()),
            Err(e) => {
                out.error(BUCKET_CHECKS, &AwsError::from(e));
                return out.finish();
            }
        }
    }
    let listed: Vec<(String, Option<String>)> = listed
        .into_iter()
        .filter_map(|b| b.name.map(|n| (n, b.bucket_region)))
        .collect();
    if listed.is_empty() {
        out.none_found(BUCKET_CHECKS, "S3 buckets");
        return out.finish();
    }
    // The futures own what they use: borrowing into `buffered` streams trips the compiler's
    // Send check for the whole service future.
    let located: Vec<(String, Result<String, AwsError>)> = stream::iter(listed)
        .map(|(name, region)| {
            let home = home.clone();
            async move {
                let region = match region.filter(|r| !r.is_empty()) {
                    Some(r) => Ok(r),
                    None => bucket_region(&home, &name).await,
                };
                (name, region)
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let buckets: Vec<Bucket> = located
        .into_iter()
        .map(|(name, region)| Bucket {
            arn: bucket_arn(ctx, &name),
            name,
            region,
        })
        .collect();
    let regions: HashMap<&str, &str> = buckets
        .iter()
        .filter_map(|b| {
            b.region
                .as_ref()
                .ok()
                .map(|r| (b.name.as_str(), r.as_str()))
        })
        .collect();
    let mut clients: HashMap<String, aws_sdk_s3::Client> = HashMap::new();
    for b in &buckets {
        if let Ok(r) = &b.region {
            clients
                .entry(r.clone())
                .or_insert_with(|| client_in(ctx, r));
        }
    }
    let needs = Needs {
        bpa: ctx.wants_any(&[BUCKET_BPA, PUBLIC_READ, PUBLIC_WRITE]),
        encryption: ctx.wants_any(&[DEFAULT_ENCRYPTION, KMS_ENCRYPTION]),
        policy: ctx.wants_any(&[REQUIRES_TLS, PUBLIC_READ, PUBLIC_WRITE, CROSS_ACCOUNT]),
        versioning: ctx.wants_any(&[VERSIONING, MFA_DELETE, VERSIONED_LIFECYCLE]),
        logging: ctx.wants(ACCESS_LOGGING),
        acl: ctx.wants_any(&[PUBLIC_READ, PUBLIC_WRITE]),
        ownership: ctx.wants_any(&[ACLS_DISABLED, PUBLIC_READ, PUBLIC_WRITE]),
        lifecycle: ctx.wants_any(&[LIFECYCLE, VERSIONED_LIFECYCLE]),
        object_lock: ctx.wants(OBJECT_LOCK),
        notifications: ctx.wants(EVENT_NOTIFICATIONS),
        replication: ctx.wants(CROSS_REGION_REPLICATION),
    };
    let jobs: Vec<(String, Option<aws_sdk_s3::Client>)> = buckets
        .iter()
        .map(|b| {
            let client = b.region.as_ref().ok().and_then(|r| clients.get(r)).cloned();
            (b.name.clone(), client)
        })
        .collect();
    let details: Vec<Option<Details>> = stream::iter(jobs)
        .map(|(name, client)| async move {
            match client {
                Some(c) => Some(bucket_details(&c, &name, needs).await),
                None => None,
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    for (b, d) in buckets.iter().zip(details) {
        let (Ok(region), Some(d)) = (&b.region, d) else {
            if let Err(e) = &b.region {
                for check in BUCKET_CHECKS {
                    out.error_on(check, &b.arn, e);
                }
            }
            continue;
        };
        evaluate(ctx, &mut out, b, region, &d, &account, &public);
        if ctx.wants(CROSS_REGION_REPLICATION) {
            replication_verdict(&mut out, b, region, &d, &regions, &home).await;
        }
    }
    out.finish()
}

/// Emits `error` for `checks` when `f` failed and returns the configuration otherwise.
fn need<'a, T>(
    out: &mut Out<'_>,
    checks: &[&'static str],
    arn: &str,
    f: &'a Fetched<T>,
) -> Option<Option<&'a T>> {
    match f.ready() {
        Ok(v) => Some(v),
        Err(Some(e)) => {
            for check in checks {
                out.error_on(check, arn, e);
            }
            None
        }
        Err(None) => None,
    }
}

fn evaluate(
    ctx: &Ctx,
    out: &mut Out<'_>,
    b: &Bucket,
    region: &str,
    d: &Details,
    account: &Option<Result<Option<Bpa>, AwsError>>,
    public: &[&'static str],
) {
    let arn = b.arn.as_str();
    if let Some(bpa) = need(out, &[BUCKET_BPA], arn, &d.bpa) {
        let settings = bpa.copied().unwrap_or_default();
        out.verdict(
            BUCKET_BPA,
            arn,
            settings.all(),
            "all four bucket-level Block Public Access settings are on",
            if bpa.is_none() {
                "bucket-level Block Public Access is not configured"
            } else {
                "bucket-level Block Public Access is not fully on"
            },
            json!({"configured": bpa.is_some(), "settings": settings.json(), "region": region}),
        );
    }
    if let Some(rules) = need(
        out,
        &[DEFAULT_ENCRYPTION, KMS_ENCRYPTION],
        arn,
        &d.encryption,
    ) {
        let algorithms: Vec<String> = rules
            .into_iter()
            .flatten()
            .filter_map(|r| r.apply_server_side_encryption_by_default.as_ref())
            .map(|d| d.sse_algorithm.as_str().to_string())
            .collect();
        let kms_keys: Vec<&str> = rules
            .into_iter()
            .flatten()
            .filter_map(|r| r.apply_server_side_encryption_by_default.as_ref())
            .filter_map(|d| d.kms_master_key_id.as_deref())
            .collect();
        let evidence = json!({"sse_algorithms": algorithms, "kms_master_key_ids": kms_keys});
        out.verdict(
            DEFAULT_ENCRYPTION,
            arn,
            !algorithms.is_empty(),
            format!("default encryption is {}", algorithms.join(", ")),
            "no default server-side encryption rule is set",
            evidence.clone(),
        );
        let kms = [
            ServerSideEncryption::AwsKms.as_str(),
            ServerSideEncryption::AwsKmsDsse.as_str(),
        ];
        out.verdict(
            KMS_ENCRYPTION,
            arn,
            algorithms.iter().any(|a| kms.contains(&a.as_str())),
            format!("default encryption uses {}", algorithms.join(", ")),
            if algorithms.is_empty() {
                "no default server-side encryption rule is set".to_string()
            } else {
                format!(
                    "default encryption is {}, not SSE-KMS or DSSE-KMS",
                    algorithms.join(", ")
                )
            },
            evidence,
        );
    }
    let policy_doc = match need(out, &[], arn, &d.policy) {
        Some(Some(text)) => Some(serde_json::from_str::<Value>(text).map_err(|e| e.to_string())),
        _ => None,
    };
    if ctx.wants(REQUIRES_TLS)
        && let Some(policy) = need(out, &[REQUIRES_TLS], arn, &d.policy)
    {
        match (policy, &policy_doc) {
            (None, _) => out.fail(
                REQUIRES_TLS,
                arn,
                "the bucket has no policy, so plain HTTP requests are not denied",
                json!({"policy": null}),
            ),
            (Some(_), Some(Ok(doc))) => {
                let sids = tls_deny_statements(doc);
                out.verdict(
                    REQUIRES_TLS,
                    arn,
                    !sids.is_empty(),
                    format!(
                        "policy statement {} denies s3:* when aws:SecureTransport is false",
                        sids.join(", ")
                    ),
                    "no policy statement denies all S3 actions when aws:SecureTransport is false",
                    json!({"deny_statements": sids}),
                );
            }
            (Some(_), _) => out.fail(
                REQUIRES_TLS,
                arn,
                "the bucket policy is not valid JSON",
                json!({"policy_parse_error": true}),
            ),
        }
    }
    if ctx.wants(CROSS_ACCOUNT)
        && let Some(policy) = need(out, &[CROSS_ACCOUNT], arn, &d.policy)
    {
        match (policy, &policy_doc) {
            (None, _) => out.pass(
                CROSS_ACCOUNT,
                arn,
                "the bucket has no policy",
                json!({"policy": null}),
            ),
            (Some(_), Some(Ok(doc))) => {
                let grants = cross_account_grants(doc, &ctx.account_id);
                out.verdict(
                    CROSS_ACCOUNT,
                    arn,
                    grants.is_empty(),
                    "the bucket policy gives no other account a sensitive action",
                    grants
                        .first()
                        .map(|(sid, who, what)| {
                            format!("policy statement {sid} allows {what} to {who}")
                        })
                        .unwrap_or_default(),
                    json!({"cross_account_grants": grants.iter()
                        .map(|(sid, who, what)| json!({"statement": sid, "principal": who, "action": what}))
                        .collect::<Vec<_>>()}),
                );
            }
            (Some(_), _) => out.fail(
                CROSS_ACCOUNT,
                arn,
                "the bucket policy is not valid JSON",
                json!({"policy_parse_error": true}),
            ),
        }
    }
    let versioning = need(
        out,
        &[VERSIONING, MFA_DELETE, VERSIONED_LIFECYCLE],
        arn,
        &d.versioning,
    );
    let (status, mfa) = match versioning {
        Some(Some((s, m))) => (s.as_deref(), m.as_deref()),
        _ => (None, None),
    };
    if versioning.is_some() {
        let evidence = json!({"Status": status, "MFADelete": mfa});
        out.verdict(
            VERSIONING,
            arn,
            status == Some("Enabled"),
            "versioning is enabled",
            match status {
                Some(s) => format!("versioning is {s}"),
                None => "versioning was never enabled".to_string(),
            },
            evidence.clone(),
        );
        out.verdict(
            MFA_DELETE,
            arn,
            mfa == Some("Enabled"),
            "MFA delete is enabled",
            format!("MFA delete is {}", mfa.unwrap_or("not set")),
            evidence,
        );
    }
    if let Some(target) = need(out, &[ACCESS_LOGGING], arn, &d.logging) {
        out.verdict(
            ACCESS_LOGGING,
            arn,
            target.is_some(),
            format!(
                "server access logs go to bucket {}",
                target.map_or("", |t| t.as_str())
            ),
            "server access logging is off",
            json!({"target_bucket": target}),
        );
    }
    if let Some(ownership) = need(out, &[ACLS_DISABLED], arn, &d.ownership) {
        out.verdict(
            ACLS_DISABLED,
            arn,
            ownership.map(String::as_str) == Some("BucketOwnerEnforced"),
            "Object Ownership is BucketOwnerEnforced, so ACLs are disabled",
            format!(
                "Object Ownership is {}, so ACLs still grant access",
                ownership.map_or("not configured", |o| o.as_str())
            ),
            json!({"object_ownership": ownership}),
        );
    }
    if let Some(rules) = need(out, &[LIFECYCLE, VERSIONED_LIFECYCLE], arn, &d.lifecycle) {
        let enabled: Vec<&str> = rules
            .into_iter()
            .flatten()
            .filter(|r| r.status.as_str() == "Enabled")
            .map(|r| r.id.as_deref().unwrap_or("(unnamed)"))
            .collect();
        let evidence = json!({"enabled_rules": enabled, "rules": rules.map_or(0, Vec::len)});
        out.verdict(
            LIFECYCLE,
            arn,
            !enabled.is_empty(),
            format!("lifecycle rule {} is enabled", enabled.join(", ")),
            "no enabled lifecycle rule",
            evidence.clone(),
        );
        if versioning.is_some() {
            if status == Some("Enabled") {
                out.verdict(
                    VERSIONED_LIFECYCLE,
                    arn,
                    !enabled.is_empty(),
                    format!(
                        "versioned bucket has enabled lifecycle rule {}",
                        enabled.join(", ")
                    ),
                    "versioned bucket has no enabled lifecycle rule",
                    evidence,
                );
            } else {
                out.not_applicable(VERSIONED_LIFECYCLE, arn, "versioning is not enabled");
            }
        }
    }
    if let Some(lock) = need(out, &[OBJECT_LOCK], arn, &d.object_lock) {
        let lock = lock.and_then(|l| l.as_deref());
        out.verdict(
            OBJECT_LOCK,
            arn,
            lock == Some("Enabled"),
            "Object Lock is enabled",
            "Object Lock is not enabled",
            json!({"ObjectLockEnabled": lock}),
        );
    }
    if let Some(kinds) = need(out, &[EVENT_NOTIFICATIONS], arn, &d.notifications) {
        let kinds = kinds.cloned().unwrap_or_default();
        out.verdict(
            EVENT_NOTIFICATIONS,
            arn,
            !kinds.is_empty(),
            format!("events are sent to {}", kinds.join(", ")),
            "no event notification is configured",
            json!({"destinations": kinds}),
        );
    }
    if ctx.wants_any(public) {
        public_verdicts(out, arn, d, account, public);
    }
}

fn public_verdicts(
    out: &mut Out<'_>,
    arn: &str,
    d: &Details,
    account: &Option<Result<Option<Bpa>, AwsError>>,
    public: &[&'static str],
) {
    let (bpa, acl, ownership, policy) = (
        d.bpa.ready(),
        d.acl.ready(),
        d.ownership.ready(),
        d.policy.ready(),
    );
    let account_bpa = match account {
        Some(Ok(a)) => Ok(*a),
        Some(Err(e)) => Err(Some(e)),
        None => Err(None),
    };
    let (Ok(bpa), Ok(acl), Ok(ownership), Ok(policy)) = (bpa, acl, ownership, policy) else {
        let failed = [
            d.bpa.ready().err(),
            d.acl.ready().err(),
            d.ownership.ready().err(),
            d.policy.ready().err(),
        ];
        if let Some(e) = failed.into_iter().flatten().flatten().next() {
            for check in public {
                out.error_on(check, arn, e);
            }
        }
        return;
    };
    // An unreadable account setting is treated as off: the bucket's own configuration then
    // decides, which can only overstate exposure.
    let account_bpa = account_bpa.unwrap_or(None);
    let e = exposure(
        acl.map_or(&[][..], Vec::as_slice),
        ownership.map(String::as_str),
        policy.map(String::as_str),
        bpa.copied().unwrap_or_default(),
        account_bpa,
    );
    out.verdict(
        PUBLIC_READ,
        arn,
        e.read.is_empty(),
        "neither the ACL nor the bucket policy lets anonymous users list or read it",
        e.read.join("; "),
        e.evidence.clone(),
    );
    out.verdict(
        PUBLIC_WRITE,
        arn,
        e.write.is_empty(),
        "neither the ACL nor the bucket policy lets anonymous users write to it",
        e.write.join("; "),
        e.evidence,
    );
}

async fn replication_verdict(
    out: &mut Out<'_>,
    b: &Bucket,
    region: &str,
    d: &Details,
    regions: &HashMap<&str, &str>,
    home: &aws_sdk_s3::Client,
) {
    let Some(destinations) = need(out, &[CROSS_REGION_REPLICATION], &b.arn, &d.replication) else {
        return;
    };
    let destinations = destinations.cloned().unwrap_or_default();
    let mut found = Vec::new();
    for dest in &destinations {
        let name = dest.rsplit(":::").next().unwrap_or(dest);
        let dest_region = match regions.get(name) {
            Some(r) => Ok(r.to_string()),
            None => bucket_region(home, name).await,
        };
        match dest_region {
            Ok(r) => found.push(json!({"bucket": dest, "region": r})),
            Err(e) => found.push(json!({"bucket": dest, "region": null, "error": e.0})),
        }
    }
    let other = found
        .iter()
        .filter_map(|f| f["region"].as_str())
        .find(|r| *r != region)
        .map(str::to_string);
    out.verdict(
        CROSS_REGION_REPLICATION,
        &b.arn,
        other.is_some(),
        format!(
            "an enabled replication rule copies objects to {}",
            other.as_deref().unwrap_or("")
        ),
        if destinations.is_empty() {
            "no enabled replication rule".to_string()
        } else {
            format!("every enabled replication rule stays in {region}")
        },
        json!({"bucket_region": region, "destinations": found}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_iam() {
        assert!(glob("s3:*", "s3:GetObject"));
        assert!(glob("s3:Get*", "s3:getobject"));
        assert!(glob("*", "s3:PutObject"));
        assert!(!glob("s3:List*", "s3:GetObject"));
        assert!(glob("s3:?etObject", "s3:GetObject"));
    }

    #[test]
    fn tls_deny_needs_all_actions_and_secure_transport_false() {
        let doc = json!({"Statement": [
            {"Sid": "a", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            {"Sid": "b", "Effect": "Deny", "Principal": "*", "Action": ["s3:*"],
             "Condition": {"Bool": {"aws:SecureTransport": false}}}]});
        assert_eq!(tls_deny_statements(&doc), vec!["b".to_string()]);
    }

    #[test]
    fn public_policy_is_restricted_by_bpa_and_conditions() {
        let policy = json!({"Statement": [{"Sid": "pub", "Effect": "Allow", "Principal": "*",
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]})
        .to_string();
        let e = exposure(&[], None, Some(&policy), Bpa::default(), None);
        assert_eq!(e.read.len(), 1);
        assert!(e.write.is_empty());
        let restrict = Bpa {
            restrict_public_buckets: true,
            ..Bpa::default()
        };
        assert!(
            exposure(&[], None, Some(&policy), Bpa::default(), Some(restrict))
                .read
                .is_empty()
        );
        let vpc = json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
            "Action": "s3:*", "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}}}]})
        .to_string();
        assert!(
            exposure(&[], None, Some(&vpc), Bpa::default(), None)
                .write
                .is_empty()
        );
    }

    #[test]
    fn cross_account_sensitive_actions() {
        let doc = json!({"Statement": [
            {"Sid": "own", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
             "Action": "s3:*"},
            {"Sid": "read", "Effect": "Allow", "Principal": {"AWS": "222222222222"},
             "Action": "s3:GetObject"},
            {"Sid": "acl", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::333333333333:role/x"]},
             "Action": "s3:PutBucketAcl"}]});
        let found = cross_account_grants(&doc, "111111111111");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "acl");
    }
}
