//! The static checks: each verdict uses a catalogue check id and means what the live check
//! means, read from the template instead of the account. A value the template leaves to deploy
//! time gives `Unknown` with its expression; a property left out takes the service's documented
//! default.

use super::value::{Cond, Read, Value, fmt_num};
use super::{Format, Model, Resource};
use crate::aws_facts;
use crate::documents::analysis::{AnalysisError, Limits, Status, TemplateFinding};

/// One verdict with its reason.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Pass(String),
    Fail(String),
    Unknown(String),
}

/// Every check id a rule below can report.
const IDS: &[&str] = &[
    // S3
    "s3-bucket-level-public-access-blocked",
    "s3-bucket-default-encryption",
    "s3-bucket-kms-encryption",
    "s3-bucket-versioning-enabled",
    "s3-bucket-server-access-logging",
    "s3-bucket-requires-tls",
    "s3-bucket-acls-disabled",
    "s3-bucket-no-public-read",
    "s3-bucket-no-public-write",
    "s3-bucket-object-lock-enabled",
    "s3-bucket-lifecycle-configured",
    // Security groups
    "vpc-sg-no-ingress-ssh-from-internet",
    "vpc-sg-no-ingress-rdp-from-internet",
    "vpc-sg-no-ipv4-admin-ports-open",
    "vpc-sg-no-ipv6-admin-ports-open",
    "vpc-sg-no-all-ports-open",
    "vpc-sg-no-database-ports-open",
    "vpc-sg-no-cleartext-admin-ports-open",
    "vpc-sg-no-high-risk-ports-open",
    "vpc-sg-only-authorized-ports-open",
    // VPC
    "vpc-subnet-no-auto-public-ip",
    "vpc-flow-logs-enabled",
    // RDS
    "rds-instance-storage-encrypted",
    "rds-instance-not-publicly-accessible",
    "rds-instance-multi-az",
    "rds-instance-backup-enabled",
    "rds-instance-deletion-protection",
    "rds-instance-iam-auth-enabled",
    "rds-instance-auto-minor-version-upgrade",
    "rds-instance-copy-tags-to-snapshot",
    "rds-instance-logs-to-cloudwatch",
    "rds-enhanced-monitoring-enabled",
    "rds-instance-custom-admin-username",
    "rds-cluster-storage-encrypted",
    "rds-cluster-deletion-protection",
    "rds-cluster-iam-auth-enabled",
    "rds-cluster-copy-tags-to-snapshot",
    "rds-cluster-custom-admin-username",
    // EC2, EBS, Auto Scaling
    "ebs-volume-encrypted",
    "ec2-imdsv2-required",
    "ec2-instance-no-public-ip",
    "ec2-instances-use-iam-roles",
    "ec2-instance-detailed-monitoring",
    "ec2-launch-template-imdsv2-required",
    "ec2-launch-template-no-public-ip",
    "ec2-launch-template-ebs-encrypted",
    "autoscaling-launch-config-imdsv2",
    "autoscaling-launch-config-no-public-ip",
    "autoscaling-group-uses-launch-template",
    // CloudTrail, KMS, logs
    "cloudtrail-multi-region-trail-enabled",
    "cloudtrail-log-file-validation-enabled",
    "cloudtrail-encrypted-with-kms",
    "cloudtrail-cloudwatch-logs-integration",
    "kms-key-rotation-enabled",
    "kms-key-not-public",
    "cloudwatch-log-group-kms-encrypted",
    "cloudwatch-log-group-retention-set",
    // DynamoDB
    "dynamodb-table-pitr-enabled",
    "dynamodb-table-encrypted-kms",
    "dynamodb-table-deletion-protection",
    // Load balancers
    "elb-alb-drops-invalid-headers",
    "elb-deletion-protection-enabled",
    "elb-access-logging-enabled",
    "elb-alb-desync-mitigation",
    "elb-v2-multi-az",
    "elb-alb-waf-attached",
    "elbv2-listener-encrypted-protocol",
    "elb-v2-strong-tls-policy",
    "elb-alb-http-redirects-to-https",
    "elb-clb-listeners-use-tls",
    // CloudFront
    "cloudfront-viewer-https-required",
    "cloudfront-access-logging",
    "cloudfront-waf-enabled",
    "cloudfront-default-root-object",
    "cloudfront-s3-origin-access-control",
    "cloudfront-custom-certificate",
    "cloudfront-recommended-tls-policy",
    "cloudfront-origin-traffic-encrypted",
    "cloudfront-no-deprecated-origin-ssl",
    // Lambda
    "lambda-function-supported-runtime",
    "lambda-function-in-vpc",
    "lambda-function-url-not-public",
    "lambda-function-not-public",
    // Messaging, storage, caches, search, warehouses
    "sqs-queue-encrypted",
    "sns-topic-encrypted-kms",
    "efs-file-system-encrypted",
    "elasticache-replication-group-encrypted-at-rest",
    "elasticache-replication-group-encrypted-in-transit",
    "elasticache-replication-group-auto-failover",
    "opensearch-domain-encrypted-at-rest",
    "opensearch-domain-node-to-node-encryption",
    "opensearch-domain-in-vpc",
    "elasticsearch-domain-encrypted-at-rest",
    "elasticsearch-domain-node-to-node-encryption",
    "elasticsearch-domain-in-vpc",
    "redshift-cluster-not-publicly-accessible",
    "redshift-cluster-encrypted-at-rest",
    "redshift-cluster-enhanced-vpc-routing",
    "redshift-cluster-custom-admin-username",
    // Containers
    "ecr-image-scanning-enabled",
    "ecr-tag-immutability",
    "eks-endpoint-not-public",
    "eks-secrets-encrypted",
    "eks-audit-logging",
    "ecs-container-not-privileged",
    "ecs-task-definition-no-host-pid",
    "ecs-service-no-public-ip",
    // API Gateway, Secrets Manager, IAM, CodeBuild
    "apigateway-xray-tracing",
    "apigateway-execution-logging",
    "apigateway-cache-encrypted",
    "apigateway-v2-access-logging",
    "secretsmanager-rotation-enabled",
    "iam-policy-no-full-admin-privileges",
    "iam-user-no-direct-policies",
    "codebuild-no-privileged-mode",
];

pub(crate) fn ids() -> Vec<&'static str> {
    IDS.to_vec()
}

pub(crate) fn evaluate(m: &Model, limits: &Limits) -> Result<Vec<TemplateFinding>, AnalysisError> {
    let mut out = Vec::new();
    for r in &m.resources {
        limits.check_time()?;
        let mut e = E {
            m,
            r,
            out: Vec::new(),
        };
        e.dispatch();
        by_case(m, r, &mut e.out);
        for (check, v) in e.out {
            let (status, reason) = match v {
                V::Pass(s) => (Status::Pass, s),
                V::Fail(s) => (Status::Fail, s),
                V::Unknown(s) => (Status::Unknown, s),
            };
            out.push(TemplateFinding {
                check: check.to_string(),
                status,
                resource: r.name.clone(),
                resource_type: r.ty.clone(),
                line: r.line,
                reason,
            });
        }
    }
    Ok(out)
}

/// How many distinct comparisons a resource's conditions may rest on before its verdicts are
/// left unknown instead of tried case by case (2^n cases).
const MAX_CASE_ATOMS: usize = 5;

/// The value of each of a resource's conditions in one case (`None`: not decided by it).
type Values = Vec<Option<bool>>;
type Verdicts = Vec<(&'static str, V)>;

/// Verdicts left unknown by a condition the template spells out (`!If`, `cond ? a : b`) are
/// tried in every case of the resource's conditions: one verdict in every case is that verdict;
/// different ones stay unknown, saying what each case gives. Conditions are read as formulas
/// over their comparisons, so cases that cannot happen together (`IsProd` and `IsNotProd` both
/// true) are not tried; a comparison is otherwise free, which can only leave a verdict
/// unknown, never decide one wrongly.
fn by_case(m: &Model, r: &Resource, out: &mut [(&'static str, V)]) {
    if !out.iter().any(|(_, v)| matches!(v, V::Unknown(_))) {
        return;
    }
    let mut choices = Vec::new();
    r.props.choices(&mut choices);
    let mut atoms = Vec::new();
    let mut labels: Vec<(&str, &Cond)> = Vec::new();
    for c in &choices {
        c.cond.atoms(&mut atoms);
        // A label is how a reader names a condition; two different conditions may read alike
        // (Terraform predicates are shortened), so both the name and the formula must match.
        if !labels
            .iter()
            .any(|(l, cond)| *l == c.label && **cond == c.cond)
        {
            labels.push((&c.label, &c.cond));
        }
    }
    if atoms.is_empty() || atoms.len() > MAX_CASE_ATOMS {
        return;
    }
    // The same values of the conditions pick the same branches: one case per combination.
    let mut cases: Vec<(Values, Verdicts)> = Vec::new();
    for bits in 0..1u32 << atoms.len() {
        let world: Vec<(&str, bool)> = atoms
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, bits & (1 << i) != 0))
            .collect();
        let values: Vec<Option<bool>> = labels.iter().map(|(_, c)| c.eval(&world)).collect();
        if cases.iter().any(|(v, _)| *v == values) {
            continue;
        }
        let case = Resource {
            props: r.props.in_world(&world).unwrap_or(Value::Null),
            ..r.clone()
        };
        let mut e = E {
            m,
            r: &case,
            out: Vec::new(),
        };
        e.dispatch();
        cases.push((values, e.out));
    }
    for (check, v) in out.iter_mut() {
        if !matches!(v, V::Unknown(_)) {
            continue;
        }
        let per: Option<Vec<(&Values, &V)>> = cases
            .iter()
            .map(|(values, vs)| {
                vs.iter()
                    .find(|(c, _)| c == check)
                    .map(|(_, v)| (values, v))
            })
            .collect();
        let Some(per) = per else {
            continue;
        };
        if per.iter().all(|(_, v)| matches!(v, V::Unknown(_))) {
            continue;
        }
        // The conditions this verdict turns on: changing one alone changes the outcome. When
        // none does alone (conditions that always move together), all of them are named.
        let mut relevant: Vec<usize> = (0..labels.len())
            .filter(|&i| {
                per.iter().any(|(a, va)| {
                    per.iter().any(|(b, vb)| {
                        va != vb && (0..labels.len()).all(|j| j == i || a[j] == b[j])
                    })
                })
            })
            .collect();
        if relevant.is_empty() && per.iter().any(|(_, v)| *v != per[0].1) {
            relevant = (0..labels.len()).collect();
        }
        let describe = |values: &Values| {
            relevant
                .iter()
                .map(|&i| match values[i] {
                    Some(b) => format!("{} is {b}", labels[i].0),
                    None => format!("{} is undecided", labels[i].0),
                })
                .collect::<Vec<_>>()
                .join(" and ")
        };
        // "true" cases first, as a reader says them.
        let mut lines: Vec<(Vec<u8>, String)> = Vec::new();
        for (values, v) in &per {
            let order = relevant
                .iter()
                .map(|&i| match values[i] {
                    Some(true) => 0,
                    Some(false) => 1,
                    None => 2,
                })
                .collect();
            let line = format!("when {}, {}", describe(values), v.reason());
            if !lines.iter().any(|(_, l)| *l == line) {
                lines.push((order, line));
            }
        }
        lines.sort();
        let each: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
        let names = relevant
            .iter()
            .map(|&i| labels[i].0)
            .collect::<Vec<_>>()
            .join(", ");
        let first = per[0].1.reason();
        let agreed = || {
            if relevant.is_empty() {
                format!("{first}, in every case of the conditions it depends on")
            } else {
                format!("in every case of {names}: {}", each.join("; "))
            }
        };
        *v = if per.iter().all(|(_, v)| matches!(v, V::Pass(_))) {
            V::Pass(agreed())
        } else if per.iter().all(|(_, v)| matches!(v, V::Fail(_))) {
            V::Fail(agreed())
        } else {
            V::Unknown(format!("depends on {names}: {}", each.join("; ")))
        };
    }
}

impl V {
    fn reason(&self) -> &str {
        match self {
            V::Pass(s) | V::Fail(s) | V::Unknown(s) => s,
        }
    }
}

/// One method setting of a REST API stage.
struct MethodSetting<'a> {
    /// Whether it covers every resource and method (`/*` `*`, Terraform `*/*`); `None` when
    /// the setting does not say which methods it covers.
    every: Option<bool>,
    label: String,
    level: Option<&'a Value>,
    caching: Option<&'a Value>,
    encrypted: Option<&'a Value>,
}

/// Execution logs at ERROR or INFO for every method: a setting covering all methods at one of
/// those levels (the last such setting wins), and no narrower setting turning logging off.
fn execution_logging(settings: &[MethodSetting], tf: bool) -> V {
    let (field, all) = if tf {
        ("logging_level", "*/*")
    } else {
        ("LoggingLevel", "/* and *")
    };
    let mut logged = None;
    let mut unsure = None;
    for m in settings {
        let level = match m.level.map(Value::text).unwrap_or(Read::Absent) {
            Read::Known(l) => Some(l),
            Read::Absent => None,
            Read::Unknown(expr) => {
                return V::Unknown(unknown_reason(&format!("{} {field}", m.label), &expr));
            }
        };
        let logs = matches!(level.as_deref(), Some("ERROR" | "INFO"));
        match m.every {
            Some(true) => {
                logged = logs.then(|| {
                    format!(
                        "{} logs at {}",
                        m.label,
                        level.as_deref().unwrap_or_default()
                    )
                });
            }
            Some(false) if level.is_some() && !logs => {
                return V::Fail(format!(
                    "{} sets {field} {}, which turns execution logging off for those methods; set ERROR or INFO",
                    m.label,
                    level.as_deref().unwrap_or_default()
                ));
            }
            // A narrower setting without a level may or may not keep the stage's.
            Some(false) if level.is_none() => {
                unsure.get_or_insert_with(|| format!("{} sets no {field}", m.label));
            }
            Some(false) => {}
            None => {
                unsure.get_or_insert_with(|| {
                    format!("{} does not say which methods it applies to", m.label)
                });
            }
        }
    }
    match (logged, unsure) {
        (Some(_), Some(why)) => V::Unknown(format!(
            "{why}; whether those methods are logged is decided by API Gateway, not the template"
        )),
        (Some(why), None) => V::Pass(why),
        (None, _) => V::Fail(format!(
            "no method setting covering every method ({all}) sets {field} to ERROR or INFO; \
             execution logging is off by default"
        )),
    }
}

/// With the stage's cache on, every method set to cache encrypts its cache data (off by
/// default), as Security Hub's APIGateway.5 reads it.
fn cache_encryption(settings: &[MethodSetting], tf: bool) -> V {
    let field = if tf {
        "cache_data_encrypted"
    } else {
        "CacheDataEncrypted"
    };
    let mut cached = 0;
    for m in settings {
        match m.caching.map(Value::bool).unwrap_or(Read::Absent) {
            Read::Known(true) => {}
            Read::Known(false) | Read::Absent => continue,
            Read::Unknown(expr) => {
                return V::Unknown(unknown_reason(&format!("{} caching", m.label), &expr));
            }
        }
        cached += 1;
        match m.encrypted.map(Value::bool).unwrap_or(Read::Absent) {
            Read::Known(true) => {}
            Read::Known(false) | Read::Absent => {
                return V::Fail(format!(
                    "{} caches responses without encrypting them; set {field} to true",
                    m.label
                ));
            }
            Read::Unknown(expr) => {
                return V::Unknown(unknown_reason(
                    &format!("{} cache encryption", m.label),
                    &expr,
                ));
            }
        }
    }
    if cached == 0 {
        V::Pass("the stage has a cache cluster but no method setting turns caching on".into())
    } else {
        V::Pass("every method setting that caches encrypts its cache data".into())
    }
}

/// What a missing property means.
#[derive(Clone, Copy)]
enum Absent {
    /// The service's default value.
    Default(bool),
    /// Missing is a failure, with what to do.
    Fail(&'static str),
    /// Missing is a pass, with why.
    Pass(&'static str),
    /// Missing leaves the verdict to something outside the template.
    Unknown(&'static str),
}

fn unknown_reason(name: &str, expr: &str) -> String {
    format!("{name} depends on {expr}, which is only known at deploy time")
}

fn absent(name: &str, a: Absent, want: bool) -> V {
    match a {
        Absent::Default(d) if d == want => {
            V::Pass(format!("{name} is not set and defaults to {d}"))
        }
        Absent::Default(d) => V::Fail(format!(
            "{name} is not set and defaults to {d}; set it to {want}"
        )),
        Absent::Fail(msg) => V::Fail(format!("{name} is not set; {msg}")),
        Absent::Pass(msg) => V::Pass(format!("{name} is not set; {msg}")),
        Absent::Unknown(msg) => V::Unknown(format!("{name} is not set; {msg}")),
    }
}

/// A boolean setting that must be `want`.
fn boolean(v: Option<&Value>, name: &str, want: bool, a: Absent) -> V {
    match v.map(Value::bool).unwrap_or(Read::Absent) {
        Read::Known(b) if b == want => V::Pass(format!("{name} is {b}")),
        Read::Known(b) => V::Fail(format!("{name} is {b}; set it to {want}")),
        Read::Unknown(expr) => V::Unknown(unknown_reason(name, &expr)),
        Read::Absent => absent(name, a, want),
    }
}

/// A setting that must be present (a key, a log group, a configuration block).
fn present(v: Option<&Value>, name: &str, missing: &str) -> V {
    match v.map(Value::presence).unwrap_or(Read::Known(false)) {
        Read::Known(true) => V::Pass(format!("{name} is set")),
        Read::Known(false) | Read::Absent => V::Fail(format!("{name} is not set; {missing}")),
        Read::Unknown(expr) => V::Unknown(unknown_reason(name, &expr)),
    }
}

/// A text setting judged by `ok`; `default` is what a missing value means.
fn text(
    v: Option<&Value>,
    name: &str,
    ok: impl Fn(&str) -> bool,
    default: Option<&str>,
    hint: &str,
) -> V {
    let read = v.map(Value::text).unwrap_or(Read::Absent);
    let (s, defaulted) = match read {
        Read::Known(s) => (s, false),
        Read::Unknown(expr) => return V::Unknown(unknown_reason(name, &expr)),
        Read::Absent => match default {
            Some(d) => (d.to_string(), true),
            None => return V::Fail(format!("{name} is not set; {hint}")),
        },
    };
    let what = if defaulted {
        format!("{name} is not set and defaults to {s}")
    } else {
        format!("{name} is {s}")
    };
    if ok(&s) {
        V::Pass(what)
    } else {
        V::Fail(format!("{what}; {hint}"))
    }
}

/// A number that must be at least `min`.
fn at_least(v: Option<&Value>, name: &str, min: f64, default: Option<f64>) -> V {
    let (n, defaulted) = match v.map(Value::num).unwrap_or(Read::Absent) {
        Read::Known(n) => (n, false),
        Read::Unknown(expr) => return V::Unknown(unknown_reason(name, &expr)),
        Read::Absent => match default {
            Some(d) => (d, true),
            None => {
                return V::Fail(format!(
                    "{name} is not set; set it to at least {}",
                    fmt_num(min)
                ));
            }
        },
    };
    let what = if defaulted {
        format!("{name} is not set and defaults to {}", fmt_num(n))
    } else {
        format!("{name} is {}", fmt_num(n))
    };
    if n >= min {
        V::Pass(what)
    } else {
        V::Fail(format!("{what}; set it to at least {}", fmt_num(min)))
    }
}

fn tri_or(items: impl IntoIterator<Item = Read<bool>>) -> Read<bool> {
    let mut unknown = None;
    for i in items {
        match i {
            Read::Known(true) => return Read::Known(true),
            Read::Unknown(e) => unknown = unknown.or(Some(e)),
            _ => {}
        }
    }
    match unknown {
        Some(e) => Read::Unknown(e),
        None => Read::Known(false),
    }
}

fn tri_and(a: Read<bool>, b: Read<bool>) -> Read<bool> {
    match (a, b) {
        (Read::Known(false), _) | (_, Read::Known(false)) => Read::Known(false),
        (Read::Known(true), Read::Known(true)) => Read::Known(true),
        (Read::Unknown(e), _) | (_, Read::Unknown(e)) => Read::Unknown(e),
        _ => Read::Known(false),
    }
}

/// Whether `v` points at resource `r`: a reference, or (plan JSON, literal names) its name.
fn points_to(v: Option<&Value>, r: &Resource) -> bool {
    match v {
        Some(Value::Ref { target, .. }) => target == &r.name,
        Some(Value::Str(s)) => ["bucket", "id", "name", "arn"].iter().any(|k| {
            r.props
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|own| own == s)
        }),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/// The statements of a policy document; `Err` with the expression when it is not in the
/// template.
fn statements(doc: &Value) -> Result<Vec<Value>, String> {
    let doc = match doc {
        Value::Str(s) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(j) => super::value::from_json(&j),
            Err(_) => return Err(super::value::truncate(s, 60)),
        },
        Value::Ref { expr, .. } | Value::Unknown { expr, .. } => return Err(expr.clone()),
        other => other.clone(),
    };
    match doc.get("Statement") {
        Some(Value::List(items)) => Ok(items.clone()),
        Some(Value::Map(m)) => Ok(vec![Value::Map(m.clone())]),
        Some(other) if other.is_unresolved() => Err(other.short()),
        _ => Ok(Vec::new()),
    }
}

fn lower_items(v: Option<&Value>) -> Vec<String> {
    v.map(|v| {
        v.items()
            .iter()
            .filter_map(|i| i.as_str().map(str::to_ascii_lowercase))
            .collect()
    })
    .unwrap_or_default()
}

fn is_allow(st: &Value) -> bool {
    st.get("Effect").and_then(Value::as_str) == Some("Allow")
}

fn everyone(st: &Value) -> bool {
    let Some(p) = st.get("Principal") else {
        return false;
    };
    if p.as_str() == Some("*") {
        return true;
    }
    p.get("AWS")
        .is_some_and(|a| a.items().iter().any(|i| i.as_str() == Some("*")))
}

fn unconditioned(st: &Value) -> bool {
    st.get("Condition")
        .is_none_or(|c| c.entries().is_empty() && !c.is_unresolved())
}

/// Whether an action list grants any of `wanted` (lower case, `*` suffix wildcards on both sides).
fn grants(actions: &[String], wanted: &[&str]) -> bool {
    actions.iter().any(|a| {
        wanted.iter().any(|w| {
            a == w
                || a.strip_suffix('*').is_some_and(|p| w.starts_with(p))
                || w.strip_suffix('*').is_some_and(|p| a.starts_with(p))
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Evaluation of one resource
// ---------------------------------------------------------------------------------------------

struct E<'a> {
    m: &'a Model,
    r: &'a Resource,
    out: Vec<(&'static str, V)>,
}

impl<'a> E<'a> {
    fn cfn(&self) -> bool {
        self.m.format == Format::Cfn
    }

    /// The property name in this document's format.
    fn k(&self, cfn: &'static str, tf: &'static str) -> &'static str {
        if self.cfn() { cfn } else { tf }
    }

    fn p(&self, path: &str) -> Option<&'a Value> {
        self.r.props.path(path)
    }

    fn put(&mut self, id: &'static str, v: V) {
        debug_assert!(IDS.contains(&id), "{id} missing from IDS");
        self.out.push((id, v));
    }

    /// Other resources of `types` whose `attr` points at this one.
    fn attached(&self, types: &[&str], attr: &str) -> Vec<&'a Resource> {
        self.m
            .resources
            .iter()
            .filter(|o| types.contains(&o.ty.as_str()) && points_to(o.props.get(attr), self.r))
            .collect()
    }

    fn companion(&self, ty: &str, attr: &str) -> Option<&'a Resource> {
        self.attached(&[ty], attr).into_iter().next()
    }

    /// A declared resource by name (logical id or address).
    fn find(&self, v: Option<&Value>) -> Option<&'a Resource> {
        match v {
            Some(Value::Ref { target, .. }) => self.m.resources.iter().find(|o| &o.name == target),
            _ => None,
        }
    }

    fn bool(
        &mut self,
        id: &'static str,
        cfn: &'static str,
        tf: &'static str,
        want: bool,
        a: Absent,
    ) {
        let name = self.k(cfn, tf);
        let v = boolean(self.p(name), name, want, a);
        self.put(id, v);
    }

    fn dispatch(&mut self) {
        match self.r.ty.as_str() {
            "AWS::S3::Bucket" | "aws_s3_bucket" => self.s3(),
            "AWS::EC2::SecurityGroup" | "aws_security_group" => self.security_group(),
            "AWS::EC2::SecurityGroupIngress"
            | "aws_security_group_rule"
            | "aws_vpc_security_group_ingress_rule" => self.detached_ingress(),
            "AWS::EC2::Subnet" | "aws_subnet" => self.bool(
                "vpc-subnet-no-auto-public-ip",
                "MapPublicIpOnLaunch",
                "map_public_ip_on_launch",
                false,
                Absent::Default(false),
            ),
            "AWS::EC2::VPC" | "aws_vpc" => self.vpc(),
            "AWS::RDS::DBInstance" | "aws_db_instance" | "aws_rds_cluster_instance" => {
                self.rds_instance()
            }
            "AWS::RDS::DBCluster" | "aws_rds_cluster" => self.rds_cluster(),
            "AWS::EC2::Volume" | "aws_ebs_volume" => self.bool(
                "ebs-volume-encrypted",
                "Encrypted",
                "encrypted",
                true,
                Absent::Fail(
                    "the volume is encrypted only if the account turns on EBS encryption by default; set it to true",
                ),
            ),
            "AWS::EC2::Instance" | "aws_instance" => self.instance(),
            "AWS::EC2::LaunchTemplate" | "aws_launch_template" => self.launch_template(),
            "AWS::AutoScaling::LaunchConfiguration" | "aws_launch_configuration" => {
                self.launch_configuration()
            }
            "AWS::AutoScaling::AutoScalingGroup" | "aws_autoscaling_group" => self.asg(),
            "AWS::CloudTrail::Trail" | "aws_cloudtrail" => self.trail(),
            "AWS::KMS::Key" | "aws_kms_key" => self.kms(),
            "AWS::Logs::LogGroup" | "aws_cloudwatch_log_group" => self.log_group(),
            "AWS::DynamoDB::Table" | "aws_dynamodb_table" => self.dynamodb(),
            "AWS::ElasticLoadBalancingV2::LoadBalancer" | "aws_lb" | "aws_alb" => self.elbv2(),
            "AWS::ElasticLoadBalancingV2::Listener" | "aws_lb_listener" | "aws_alb_listener" => {
                self.listener()
            }
            "AWS::ElasticLoadBalancing::LoadBalancer" | "aws_elb" => self.clb(),
            "AWS::CloudFront::Distribution" | "aws_cloudfront_distribution" => self.cloudfront(),
            "AWS::Lambda::Function" | "aws_lambda_function" => self.lambda(),
            "AWS::Lambda::Url" | "aws_lambda_function_url" => {
                let name = self.k("AuthType", "authorization_type");
                let v = text(
                    self.p(name),
                    name,
                    |s| s == "AWS_IAM",
                    None,
                    "use AWS_IAM so anonymous callers cannot invoke the function",
                );
                self.put("lambda-function-url-not-public", v);
            }
            "AWS::Lambda::Permission" | "aws_lambda_permission" => self.lambda_permission(),
            "AWS::SQS::Queue" | "aws_sqs_queue" => self.sqs(),
            "AWS::SNS::Topic" | "aws_sns_topic" => {
                let name = self.k("KmsMasterKeyId", "kms_master_key_id");
                let v = present(self.p(name), name, "set a KMS key so stored messages are encrypted");
                self.put("sns-topic-encrypted-kms", v);
            }
            "AWS::EFS::FileSystem" | "aws_efs_file_system" => self.bool(
                "efs-file-system-encrypted",
                "Encrypted",
                "encrypted",
                true,
                Absent::Default(false),
            ),
            "AWS::ElastiCache::ReplicationGroup" | "aws_elasticache_replication_group" => {
                self.elasticache()
            }
            "AWS::OpenSearchService::Domain" | "aws_opensearch_domain" => self.search(true),
            "AWS::Elasticsearch::Domain" | "aws_elasticsearch_domain" => self.search(false),
            "AWS::Redshift::Cluster" | "aws_redshift_cluster" => self.redshift(),
            "AWS::ECR::Repository" | "aws_ecr_repository" => self.ecr(),
            "AWS::EKS::Cluster" | "aws_eks_cluster" => self.eks(),
            "AWS::ECS::TaskDefinition" | "aws_ecs_task_definition" => self.task_definition(),
            "AWS::ECS::Service" | "aws_ecs_service" => self.ecs_service(),
            "AWS::ApiGateway::Stage" | "aws_api_gateway_stage" => self.rest_stage(),
            "AWS::ApiGatewayV2::Stage" | "aws_apigatewayv2_stage" => {
                let name = self.k("AccessLogSettings.DestinationArn", "access_log_settings.destination_arn");
                let v = present(self.p(name), name, "send access logs to a CloudWatch Logs group");
                self.put("apigateway-v2-access-logging", v);
            }
            "AWS::SecretsManager::Secret" | "aws_secretsmanager_secret" => self.secret(),
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" | "aws_iam_policy"
            | "aws_iam_role_policy" | "aws_iam_user_policy" | "aws_iam_group_policy" => {
                let name = self.k("PolicyDocument", "policy");
                if let Some(doc) = self.p(name) {
                    let v = admin_policy(doc, name);
                    self.put("iam-policy-no-full-admin-privileges", v);
                }
            }
            "AWS::IAM::Role" | "AWS::IAM::Group" => self.inline_policies(),
            "AWS::IAM::User" | "aws_iam_user" => self.iam_user(),
            "AWS::CodeBuild::Project" | "aws_codebuild_project" => self.bool(
                "codebuild-no-privileged-mode",
                "Environment.PrivilegedMode",
                "environment.privileged_mode",
                false,
                Absent::Default(false),
            ),
            _ => {}
        }
    }

    // ---- S3 ------------------------------------------------------------------------------

    fn s3(&mut self) {
        let cfn = self.cfn();
        // Block Public Access: missing means the defaults S3 has given new buckets since 2023.
        let bpa: Option<(&Value, String)> = if cfn {
            self.p("PublicAccessBlockConfiguration")
                .map(|v| (v, "PublicAccessBlockConfiguration.".to_string()))
        } else {
            self.companion("aws_s3_bucket_public_access_block", "bucket")
                .map(|c| (&c.props, format!("{} ", c.name)))
        };
        let names: [&str; 4] = if cfn {
            [
                "BlockPublicAcls",
                "BlockPublicPolicy",
                "IgnorePublicAcls",
                "RestrictPublicBuckets",
            ]
        } else {
            [
                "block_public_acls",
                "block_public_policy",
                "ignore_public_acls",
                "restrict_public_buckets",
            ]
        };
        let flag = |i: usize| -> Read<bool> {
            match &bpa {
                None => Read::Known(true),
                Some((cfg, _)) => match cfg.get(names[i]).map(Value::bool) {
                    Some(Read::Absent) | None if !cfg.is_unresolved() => Read::Known(false),
                    Some(r) => r,
                    None => Read::Unknown(cfg.short()),
                },
            }
        };
        let v = match &bpa {
            None => V::Pass(
                "no Block Public Access configuration is declared, and S3 turns all four settings on for new buckets".into(),
            ),
            Some((_, prefix)) => {
                let mut fail = None;
                let mut unknown = None;
                for (i, n) in names.iter().enumerate() {
                    match flag(i) {
                        Read::Known(false) => fail = fail.or(Some(format!("{prefix}{n} is false or not set"))),
                        Read::Unknown(e) => unknown = unknown.or(Some(unknown_reason(&format!("{prefix}{n}"), &e))),
                        _ => {}
                    }
                }
                match (fail, unknown) {
                    (Some(f), _) => V::Fail(format!("{f}; set all four Block Public Access settings to true")),
                    (None, Some(u)) => V::Unknown(u),
                    _ => V::Pass(format!("all four Block Public Access settings in {} are true", prefix.trim_end_matches(['.', ' ']))),
                }
            }
        };
        self.put("s3-bucket-level-public-access-blocked", v);

        // Default encryption.
        let (algo, algo_name): (Option<&Value>, String) = if cfn {
            let rule = self
                .p("BucketEncryption.ServerSideEncryptionConfiguration")
                .map(|c| c.items().first().copied().unwrap_or(c));
            (
                rule.and_then(|r| r.path("ServerSideEncryptionByDefault.SSEAlgorithm")),
                "BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm".into(),
            )
        } else if let Some(c) = self.companion(
            "aws_s3_bucket_server_side_encryption_configuration",
            "bucket",
        ) {
            (
                c.props
                    .path("rule.apply_server_side_encryption_by_default.sse_algorithm"),
                format!("{} sse_algorithm", c.name),
            )
        } else {
            (
                self.p("server_side_encryption_configuration.rule.apply_server_side_encryption_by_default.sse_algorithm"),
                "server_side_encryption_configuration sse_algorithm".into(),
            )
        };
        let default_enc = match algo.map(Value::text).unwrap_or(Read::Absent) {
            Read::Absent => V::Pass(
                "no default encryption is declared, and S3 encrypts every new object with SSE-S3 by default".into(),
            ),
            Read::Known(a) => V::Pass(format!("{algo_name} is {a}")),
            Read::Unknown(e) => V::Unknown(unknown_reason(&algo_name, &e)),
        };
        self.put("s3-bucket-default-encryption", default_enc);
        let kms = match algo.map(Value::text).unwrap_or(Read::Absent) {
            Read::Absent => V::Fail(
                "no default encryption with a KMS key is declared (S3 uses SSE-S3); set the SSE algorithm to aws:kms".into(),
            ),
            Read::Known(a) if a == "aws:kms" || a == "aws:kms:dsse" => {
                V::Pass(format!("{algo_name} is {a}"))
            }
            Read::Known(a) => V::Fail(format!(
                "{algo_name} is {a} (S3-managed keys); use aws:kms with a KMS key"
            )),
            Read::Unknown(e) => V::Unknown(unknown_reason(&algo_name, &e)),
        };
        self.put("s3-bucket-kms-encryption", kms);

        // Versioning.
        let v = if cfn {
            text(
                self.p("VersioningConfiguration.Status"),
                "VersioningConfiguration.Status",
                |s| s == "Enabled",
                None,
                "set it to Enabled",
            )
        } else if let Some(c) = self.companion("aws_s3_bucket_versioning", "bucket") {
            text(
                c.props.path("versioning_configuration.status"),
                &format!("{} versioning_configuration.status", c.name),
                |s| s == "Enabled",
                None,
                "set it to Enabled",
            )
        } else if self.p("versioning").is_some() {
            boolean(
                self.p("versioning.enabled"),
                "versioning.enabled",
                true,
                Absent::Default(false),
            )
        } else {
            V::Fail(
                "versioning is not configured; add an aws_s3_bucket_versioning with status Enabled"
                    .into(),
            )
        };
        self.put("s3-bucket-versioning-enabled", v);

        // Server access logging.
        let v = if cfn {
            present(
                self.p("LoggingConfiguration"),
                "LoggingConfiguration",
                "deliver server access logs to a log bucket",
            )
        } else if let Some(c) = self.companion("aws_s3_bucket_logging", "bucket") {
            V::Pass(format!("{} delivers server access logs", c.name))
        } else {
            present(
                self.p("logging"),
                "logging",
                "add an aws_s3_bucket_logging that delivers server access logs",
            )
        };
        self.put("s3-bucket-server-access-logging", v);

        // Bucket policies: TLS only, public grants.
        let policies: Vec<(&Value, String)> = if cfn {
            self.attached(&["AWS::S3::BucketPolicy"], "Bucket")
                .into_iter()
                .filter_map(|p| {
                    p.props
                        .get("PolicyDocument")
                        .map(|d| (d, format!("{}.PolicyDocument", p.name)))
                })
                .collect()
        } else {
            let mut v: Vec<(&Value, String)> = self
                .attached(&["aws_s3_bucket_policy"], "bucket")
                .into_iter()
                .filter_map(|p| {
                    p.props
                        .get("policy")
                        .map(|d| (d, format!("{} policy", p.name)))
                })
                .collect();
            if let Some(d) = self.p("policy") {
                v.push((d, "policy".into()));
            }
            v
        };
        let mut tls = V::Fail("no bucket policy denies requests where aws:SecureTransport is false; add a Deny statement for s3:* with that condition".into());
        let mut public_read: Read<bool> = Read::Known(false);
        let mut public_write: Read<bool> = Read::Known(false);
        let mut read_from = String::new();
        let mut write_from = String::new();
        for (doc, name) in &policies {
            match statements(doc) {
                Err(expr) => {
                    if !matches!(tls, V::Pass(_)) {
                        tls = V::Unknown(unknown_reason(name, &expr));
                    }
                    if public_read == Read::Known(false) {
                        public_read = Read::Unknown(expr.clone());
                        read_from = name.clone();
                    }
                    if public_write == Read::Known(false) {
                        public_write = Read::Unknown(expr.clone());
                        write_from = name.clone();
                    }
                }
                Ok(sts) => {
                    for st in &sts {
                        let actions = lower_items(st.get("Action"));
                        let secure = st
                            .get("Condition")
                            .and_then(|c| c.get("Bool"))
                            .map(|b| {
                                b.entries().iter().any(|(k, v)| {
                                    k.eq_ignore_ascii_case("aws:SecureTransport")
                                        && v.items().iter().any(|x| x.bool() == Read::Known(false))
                                })
                            })
                            .unwrap_or(false);
                        if st.get("Effect").and_then(Value::as_str) == Some("Deny")
                            && secure
                            && everyone(st)
                            && (actions.iter().any(|a| a == "s3:*" || a == "*"))
                        {
                            tls = V::Pass(format!(
                                "{name} denies s3:* when aws:SecureTransport is false"
                            ));
                        }
                        if is_allow(st) && everyone(st) && unconditioned(st) {
                            if grants(&actions, &["s3:getobject", "s3:listbucket"]) {
                                public_read = Read::Known(true);
                                read_from = name.clone();
                            }
                            if grants(&actions, &["s3:putobject", "s3:deleteobject"]) {
                                public_write = Read::Known(true);
                                write_from = name.clone();
                            }
                        }
                    }
                }
            }
        }
        self.put("s3-bucket-requires-tls", tls);

        // ACLs.
        let acl: Option<(&Value, String)> = if cfn {
            self.p("AccessControl")
                .map(|v| (v, "AccessControl".to_string()))
        } else if let Some(c) = self.companion("aws_s3_bucket_acl", "bucket") {
            c.props.get("acl").map(|v| (v, format!("{} acl", c.name)))
        } else {
            self.p("acl").map(|v| (v, "acl".to_string()))
        };
        let acl_text = acl.as_ref().map(|(v, _)| v.text());
        let public_acl = |grant: &[&str]| -> Read<bool> {
            match &acl_text {
                Some(Read::Known(a)) => {
                    let a = a.to_ascii_lowercase().replace('-', "");
                    Read::Known(grant.iter().any(|g| a == *g))
                }
                Some(Read::Unknown(e)) => Read::Unknown(e.clone()),
                _ => Read::Known(false),
            }
        };
        let acl_name = acl.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
        for (id, acl_grants, policy, from) in [
            (
                "s3-bucket-no-public-read",
                &["publicread", "publicreadwrite", "authenticatedread"][..],
                public_read.clone(),
                read_from.clone(),
            ),
            (
                "s3-bucket-no-public-write",
                &["publicreadwrite"][..],
                public_write.clone(),
                write_from.clone(),
            ),
        ] {
            let what = if id.ends_with("read") {
                "read"
            } else {
                "write"
            };
            let by_acl = tri_and(public_acl(acl_grants), negate(flag(2)));
            let by_policy = tri_and(policy, negate(flag(3)));
            let v = match (by_acl, by_policy) {
                (Read::Known(true), _) => V::Fail(format!(
                    "{acl_name} grants public {what} access and IgnorePublicAcls is off; use a private ACL or turn Block Public Access on"
                )),
                (_, Read::Known(true)) => V::Fail(format!(
                    "{from} lets anyone {what} objects without a condition and RestrictPublicBuckets is off; remove the grant or turn Block Public Access on"
                )),
                (Read::Unknown(e), _) | (_, Read::Unknown(e)) => V::Unknown(format!(
                    "public {what} access depends on {e}, which is only known at deploy time"
                )),
                _ => V::Pass(format!(
                    "neither the ACL nor a bucket policy grants anonymous {what} access that Block Public Access lets through"
                )),
            };
            self.put(id, v);
        }

        // Object ownership.
        let ownership: Option<(&Value, String)> = if cfn {
            self.p("OwnershipControls.Rules")
                .map(|r| (r, "OwnershipControls.Rules[0].ObjectOwnership".to_string()))
        } else {
            self.companion("aws_s3_bucket_ownership_controls", "bucket")
                .and_then(|c| {
                    c.props
                        .get("rule")
                        .map(|r| (r, format!("{} rule.object_ownership", c.name)))
                })
        };
        let v = match ownership {
            Some((rules, name)) => {
                let first = rules.items().first().copied();
                let key = if cfn { "ObjectOwnership" } else { "object_ownership" };
                text(
                    first.and_then(|f| if f.is_unresolved() { Some(f) } else { f.get(key) }),
                    &name,
                    |s| s == "BucketOwnerEnforced",
                    None,
                    "set it to BucketOwnerEnforced so only policies grant access",
                )
            }
            None => match &acl_text {
                Some(Read::Known(a))
                    if !a.eq_ignore_ascii_case("private") && !a.eq_ignore_ascii_case("BucketOwnerFullControl") =>
                {
                    V::Fail(format!(
                        "{acl_name} is {a}, which needs ACLs enabled; drop it and use BucketOwnerEnforced object ownership"
                    ))
                }
                Some(Read::Unknown(e)) => V::Unknown(unknown_reason(&acl_name, e)),
                _ => V::Pass(
                    "object ownership is not declared, and new buckets default to BucketOwnerEnforced (ACLs disabled)".into(),
                ),
            },
        };
        self.put("s3-bucket-acls-disabled", v);

        // Object Lock.
        let v = if cfn {
            boolean(
                self.p("ObjectLockEnabled"),
                "ObjectLockEnabled",
                true,
                Absent::Default(false),
            )
        } else if self.p("object_lock_enabled").is_some() {
            boolean(
                self.p("object_lock_enabled"),
                "object_lock_enabled",
                true,
                Absent::Default(false),
            )
        } else if self.p("object_lock_configuration").is_some() {
            text(
                self.p("object_lock_configuration.object_lock_enabled"),
                "object_lock_configuration.object_lock_enabled",
                |s| s == "Enabled",
                Some("Enabled"),
                "set it to Enabled",
            )
        } else {
            V::Fail(
                "object_lock_enabled is not set; set it to true when the bucket is created".into(),
            )
        };
        self.put("s3-bucket-object-lock-enabled", v);

        // Lifecycle.
        let (rules, name, key, on): LifecycleRules<'_> = if cfn {
            (
                self.p("LifecycleConfiguration.Rules"),
                "LifecycleConfiguration.Rules".into(),
                "Status",
                |v| v.text().map_known(|s| s == "Enabled"),
            )
        } else if let Some(c) = self.companion("aws_s3_bucket_lifecycle_configuration", "bucket") {
            (
                c.props.get("rule"),
                format!("{} rule", c.name),
                "status",
                |v| v.text().map_known(|s| s == "Enabled"),
            )
        } else {
            (
                self.p("lifecycle_rule"),
                "lifecycle_rule".into(),
                "enabled",
                Value::bool,
            )
        };
        let v = match rules {
            None => V::Fail(format!(
                "{name} is not set; add a lifecycle rule that expires or transitions objects"
            )),
            Some(rules) if rules.is_unresolved() => {
                V::Unknown(unknown_reason(&name, &rules.short()))
            }
            Some(rules) => {
                let any = tri_or(rules.items().iter().map(|r| {
                    if r.is_unresolved() {
                        Read::Unknown(r.short())
                    } else {
                        match r.get(key).map(on) {
                            Some(Read::Absent) | None => Read::Known(false),
                            Some(x) => x,
                        }
                    }
                }));
                match any {
                    Read::Known(true) => V::Pass(format!("{name} has an enabled rule")),
                    Read::Unknown(e) => V::Unknown(unknown_reason(&name, &e)),
                    _ => V::Fail(format!("{name} has no enabled rule; enable at least one")),
                }
            }
        };
        self.put("s3-bucket-lifecycle-configured", v);
    }

    // ---- Security groups -----------------------------------------------------------------

    fn security_group(&mut self) {
        let mut perms = Vec::new();
        if self.cfn() {
            if let Some(list) = self.p("SecurityGroupIngress") {
                for (i, item) in list.items().into_iter().enumerate() {
                    perms.push(perm_cfn(item, format!("SecurityGroupIngress[{i}]")));
                }
            }
            for o in self.attached(&["AWS::EC2::SecurityGroupIngress"], "GroupId") {
                perms.push(perm_cfn(&o.props, o.name.clone()));
            }
        } else {
            if let Some(list) = self.p("ingress") {
                for (i, item) in list.items().into_iter().enumerate() {
                    perms.push(perm_tf(item, format!("ingress block {}", i + 1), false));
                }
            }
            for o in self.attached(&["aws_security_group_rule"], "security_group_id") {
                if let Some(p) = tf_rule_perm(o) {
                    perms.push(p);
                }
            }
            for o in self.attached(
                &["aws_vpc_security_group_ingress_rule"],
                "security_group_id",
            ) {
                perms.push(perm_tf(&o.props, o.name.clone(), true));
            }
        }
        self.sg_checks(&perms);
    }

    /// A standalone ingress rule whose group is not declared in the document is judged alone.
    fn detached_ingress(&mut self) {
        let (attr, group_types): (&str, &[&str]) = if self.cfn() {
            ("GroupId", &["AWS::EC2::SecurityGroup"])
        } else {
            ("security_group_id", &["aws_security_group"])
        };
        let group = self.find(self.p(attr));
        if group.is_some_and(|g| group_types.contains(&g.ty.as_str())) {
            return;
        }
        let perm = match self.r.ty.as_str() {
            "AWS::EC2::SecurityGroupIngress" => Some(perm_cfn(&self.r.props, "this rule".into())),
            "aws_security_group_rule" => tf_rule_perm(self.r),
            _ => Some(perm_tf(&self.r.props, "this rule".into(), true)),
        };
        if let Some(p) = perm {
            self.sg_checks(&[p]);
        }
    }

    fn sg_checks(&mut self, perms: &[Perm]) {
        struct Spec {
            id: &'static str,
            ports: Ports,
            udp: bool,
            v4: bool,
            v6: bool,
            what: &'static str,
        }
        let specs = [
            Spec {
                id: "vpc-sg-no-ingress-ssh-from-internet",
                ports: Ports::List(&[22]),
                udp: false,
                v4: true,
                v6: true,
                what: "port 22 (SSH)",
            },
            Spec {
                id: "vpc-sg-no-ingress-rdp-from-internet",
                ports: Ports::List(&[3389]),
                udp: false,
                v4: true,
                v6: true,
                what: "port 3389 (RDP)",
            },
            Spec {
                id: "vpc-sg-no-ipv4-admin-ports-open",
                ports: Ports::List(&[22, 3389]),
                udp: true,
                v4: true,
                v6: false,
                what: "port 22 or 3389",
            },
            Spec {
                id: "vpc-sg-no-ipv6-admin-ports-open",
                ports: Ports::List(&[22, 3389]),
                udp: true,
                v4: false,
                v6: true,
                what: "port 22 or 3389",
            },
            Spec {
                id: "vpc-sg-no-all-ports-open",
                ports: Ports::All,
                udp: true,
                v4: true,
                v6: true,
                what: "every port",
            },
            Spec {
                id: "vpc-sg-no-database-ports-open",
                ports: Ports::Named(aws_facts::DATABASE_PORTS),
                udp: false,
                v4: true,
                v6: true,
                what: "a database port",
            },
            Spec {
                id: "vpc-sg-no-cleartext-admin-ports-open",
                ports: Ports::List(&[20, 21, 23]),
                udp: false,
                v4: true,
                v6: true,
                what: "FTP or Telnet (20, 21, 23)",
            },
            Spec {
                id: "vpc-sg-no-high-risk-ports-open",
                ports: Ports::List(aws_facts::HIGH_RISK_PORTS),
                udp: false,
                v4: true,
                v6: true,
                what: "a high-risk port",
            },
            Spec {
                id: "vpc-sg-only-authorized-ports-open",
                ports: Ports::Unauthorized,
                udp: true,
                v4: true,
                v6: true,
                what: "a port other than 80 and 443",
            },
        ];
        for s in specs {
            let mut fail = None;
            let mut unknown = None;
            for p in perms {
                let open = match (s.v4, s.v6) {
                    (true, true) => tri_or([p.v4.clone(), p.v6.clone()]),
                    (true, false) => p.v4.clone(),
                    _ => p.v6.clone(),
                };
                let hit = tri_and(open, p.covers(s.ports, s.udp));
                match hit {
                    Read::Known(true) => {
                        fail = fail.or(Some(format!(
                            "{} opens {} to {}; restrict the source to known ranges",
                            p.origin,
                            s.what,
                            p.sources(s.v4, s.v6)
                        )))
                    }
                    Read::Unknown(e) => {
                        unknown = unknown.or(Some(format!(
                            "{} depends on {e}, which is only known at deploy time",
                            p.origin
                        )))
                    }
                    _ => {}
                }
            }
            let range = match (s.v4, s.v6) {
                (true, true) => "0.0.0.0/0 or ::/0",
                (true, false) => "0.0.0.0/0",
                _ => "::/0",
            };
            let v = match (fail, unknown) {
                (Some(f), _) => V::Fail(f),
                (None, Some(u)) => V::Unknown(u),
                _ => V::Pass(format!("no ingress rule opens {} to {range}", s.what)),
            };
            self.put(s.id, v);
        }
    }

    // ---- VPC -------------------------------------------------------------------------------

    fn vpc(&mut self) {
        let logs = if self.cfn() {
            self.attached(&["AWS::EC2::FlowLog"], "ResourceId")
        } else {
            self.attached(&["aws_flow_log"], "vpc_id")
        };
        let v = match logs.first() {
            Some(l) => V::Pass(format!("flow log {} captures this VPC's traffic", l.name)),
            None => {
                V::Fail("no flow log in the document captures this VPC's traffic; add one".into())
            }
        };
        self.put("vpc-flow-logs-enabled", v);
    }

    // ---- RDS -------------------------------------------------------------------------------

    fn rds_instance(&mut self) {
        let cfn = self.cfn();
        let engine = self
            .p(self.k("Engine", "engine"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if engine == "docdb" || engine == "neptune" {
            return;
        }
        // Aurora members inherit storage, backups and most settings from their cluster.
        let member = self.r.ty == "aws_rds_cluster_instance"
            || (cfn && self.p("DBClusterIdentifier").is_some())
            || engine.starts_with("aurora");
        let public = if cfn {
            Absent::Unknown(
                "the default depends on whether the DB subnet group's VPC has an internet gateway; set it to false",
            )
        } else {
            Absent::Default(false)
        };
        self.bool(
            "rds-instance-not-publicly-accessible",
            "PubliclyAccessible",
            "publicly_accessible",
            false,
            public,
        );
        self.bool(
            "rds-instance-auto-minor-version-upgrade",
            "AutoMinorVersionUpgrade",
            "auto_minor_version_upgrade",
            true,
            Absent::Default(true),
        );
        let name = self.k("MonitoringInterval", "monitoring_interval");
        let v = at_least(self.p(name), name, 1.0, Some(0.0));
        self.put("rds-enhanced-monitoring-enabled", v);
        if member {
            return;
        }
        self.bool(
            "rds-instance-storage-encrypted",
            "StorageEncrypted",
            "storage_encrypted",
            true,
            Absent::Default(false),
        );
        self.bool(
            "rds-instance-multi-az",
            "MultiAZ",
            "multi_az",
            true,
            Absent::Default(false),
        );
        let name = self.k("BackupRetentionPeriod", "backup_retention_period");
        let v = at_least(self.p(name), name, 1.0, Some(1.0));
        self.put("rds-instance-backup-enabled", v);
        self.bool(
            "rds-instance-deletion-protection",
            "DeletionProtection",
            "deletion_protection",
            true,
            Absent::Default(false),
        );
        if engine.is_empty() || ["mysql", "mariadb", "postgres"].contains(&engine.as_str()) {
            self.bool(
                "rds-instance-iam-auth-enabled",
                "EnableIAMDatabaseAuthentication",
                "iam_database_authentication_enabled",
                true,
                Absent::Default(false),
            );
        }
        self.bool(
            "rds-instance-copy-tags-to-snapshot",
            "CopyTagsToSnapshot",
            "copy_tags_to_snapshot",
            true,
            Absent::Default(false),
        );
        let name = self.k(
            "EnableCloudwatchLogsExports",
            "enabled_cloudwatch_logs_exports",
        );
        let v = match self.p(name) {
            Some(v) if v.is_unresolved() => V::Unknown(unknown_reason(name, &v.short())),
            Some(v) => {
                let exported: Vec<String> = v
                    .items()
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect();
                let missing: Vec<&str> = aws_facts::rds_expected_logs(&engine)
                    .unwrap_or_default()
                    .iter()
                    .filter(|l| !exported.iter().any(|e| e == *l))
                    .copied()
                    .collect();
                if exported.is_empty() {
                    V::Fail(format!(
                        "{name} is empty; export the engine's logs to CloudWatch Logs"
                    ))
                } else if missing.is_empty() {
                    V::Pass(format!("{name} exports {}", exported.join(", ")))
                } else {
                    V::Fail(format!(
                        "{name} does not export {}; add them",
                        missing.join(", ")
                    ))
                }
            }
            None => V::Fail(format!(
                "{name} is not set; export the engine's logs to CloudWatch Logs"
            )),
        };
        self.put("rds-instance-logs-to-cloudwatch", v);
        let name = self.k("MasterUsername", "username");
        if let Some(u) = self.p(name) {
            let v = text(
                Some(u),
                name,
                |s| !aws_facts::is_default_admin(s),
                None,
                "use a name that is not a well-known default",
            );
            self.put("rds-instance-custom-admin-username", v);
        }
    }

    fn rds_cluster(&mut self) {
        let engine = self
            .p(self.k("Engine", "engine"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if engine == "docdb" || engine == "neptune" {
            return;
        }
        self.bool(
            "rds-cluster-storage-encrypted",
            "StorageEncrypted",
            "storage_encrypted",
            true,
            Absent::Default(false),
        );
        self.bool(
            "rds-cluster-deletion-protection",
            "DeletionProtection",
            "deletion_protection",
            true,
            Absent::Default(false),
        );
        self.bool(
            "rds-cluster-iam-auth-enabled",
            "EnableIAMDatabaseAuthentication",
            "iam_database_authentication_enabled",
            true,
            Absent::Default(false),
        );
        self.bool(
            "rds-cluster-copy-tags-to-snapshot",
            "CopyTagsToSnapshot",
            "copy_tags_to_snapshot",
            true,
            Absent::Default(false),
        );
        let name = self.k("MasterUsername", "master_username");
        if let Some(u) = self.p(name) {
            let v = text(
                Some(u),
                name,
                |s| !aws_facts::is_default_admin(s),
                None,
                "use a name that is not a well-known default",
            );
            self.put("rds-cluster-custom-admin-username", v);
        }
    }

    // ---- EC2 -------------------------------------------------------------------------------

    fn instance(&mut self) {
        let cfn = self.cfn();
        let tokens = self.k("MetadataOptions.HttpTokens", "metadata_options.http_tokens");
        let from_template = self
            .p(self.k("LaunchTemplate", "launch_template"))
            .is_some();
        let v = match self.p(tokens) {
            None if from_template => V::Unknown(format!(
                "{tokens} is not set, so the launch template decides; check that template's metadata options"
            )),
            v => text(
                v,
                tokens,
                |s| s == "required",
                Some("optional"),
                "set it to required so only IMDSv2 is answered",
            ),
        };
        self.put("ec2-imdsv2-required", v);

        // A public address comes from the instance's own setting, else from its subnet.
        let assoc: Vec<&Value> = if cfn {
            self.p("NetworkInterfaces")
                .map(|n| {
                    n.items()
                        .into_iter()
                        .filter_map(|i| i.get("AssociatePublicIpAddress"))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.p("associate_public_ip_address").into_iter().collect()
        };
        let name = self.k(
            "NetworkInterfaces[].AssociatePublicIpAddress",
            "associate_public_ip_address",
        );
        let v = if !assoc.is_empty() {
            match tri_or(assoc.iter().map(|a| a.bool())) {
                Read::Known(true) => V::Fail(format!(
                    "{name} is true; launch it without a public address"
                )),
                Read::Unknown(e) => V::Unknown(unknown_reason(name, &e)),
                _ => V::Pass(format!("{name} is false")),
            }
        } else {
            let subnet_attr = self.k("SubnetId", "subnet_id");
            let subnet = self.p(subnet_attr).or_else(|| {
                if cfn {
                    self.p("NetworkInterfaces")
                        .and_then(|n| n.items().first().and_then(|i| i.get("SubnetId")))
                } else {
                    None
                }
            });
            match (subnet, self.find(subnet)) {
                (_, Some(s)) => {
                    let map = self.k("MapPublicIpOnLaunch", "map_public_ip_on_launch");
                    match s.props.get(map).map(Value::bool).unwrap_or(Read::Absent) {
                        Read::Known(true) => V::Fail(format!(
                            "{name} is not set and subnet {} has {map} true; set it to false",
                            s.name
                        )),
                        Read::Unknown(e) => {
                            V::Unknown(unknown_reason(&format!("subnet {}'s {map}", s.name), &e))
                        }
                        _ => V::Pass(format!(
                            "{name} is not set and subnet {} does not map public addresses",
                            s.name
                        )),
                    }
                }
                (Some(sv), None) => V::Unknown(format!(
                    "{name} is not set, so the subnet decides, and {} is only known at deploy time",
                    sv.short()
                )),
                (None, None) => V::Unknown(format!(
                    "{name} and {subnet_attr} are not set, so the default subnet decides; set {name} to false"
                )),
            }
        };
        self.put("ec2-instance-no-public-ip", v);

        let name = self.k("IamInstanceProfile", "iam_instance_profile");
        let v = present(
            self.p(name),
            name,
            "attach an instance profile instead of storing keys on the host",
        );
        self.put("ec2-instances-use-iam-roles", v);
        self.bool(
            "ec2-instance-detailed-monitoring",
            "Monitoring",
            "monitoring",
            true,
            Absent::Default(false),
        );
    }

    fn launch_template(&mut self) {
        let cfn = self.cfn();
        let data: &Value = if cfn {
            match self.p("LaunchTemplateData") {
                Some(d) => d,
                None => return,
            }
        } else {
            &self.r.props
        };
        let tokens = self.k(
            "LaunchTemplateData.MetadataOptions.HttpTokens",
            "metadata_options.http_tokens",
        );
        let v = text(
            data.path(if cfn {
                "MetadataOptions.HttpTokens"
            } else {
                "metadata_options.http_tokens"
            }),
            tokens,
            |s| s == "required",
            Some("optional"),
            "set it to required so instances only answer IMDSv2",
        );
        self.put("ec2-launch-template-imdsv2-required", v);

        let (nis, key) = if cfn {
            ("NetworkInterfaces", "AssociatePublicIpAddress")
        } else {
            ("network_interfaces", "associate_public_ip_address")
        };
        let name = format!("{nis}[].{key}");
        let reads: Vec<Read<bool>> = data
            .get(nis)
            .map(|n| {
                n.items()
                    .into_iter()
                    .map(|i| i.get(key).map(Value::bool).unwrap_or(Read::Known(false)))
                    .collect()
            })
            .unwrap_or_default();
        let v = match tri_or(reads) {
            Read::Known(true) => V::Fail(format!(
                "{name} is true; launch instances without public addresses"
            )),
            Read::Unknown(e) => V::Unknown(unknown_reason(&name, &e)),
            _ => V::Pass(format!("no network interface sets {key} to true")),
        };
        self.put("ec2-launch-template-no-public-ip", v);

        let (bdm, ebs, enc) = if cfn {
            ("BlockDeviceMappings", "Ebs", "Encrypted")
        } else {
            ("block_device_mappings", "ebs", "encrypted")
        };
        if let Some(maps) = data.get(bdm) {
            let mut fail = None;
            let mut unknown = None;
            for (i, m) in maps.items().into_iter().enumerate() {
                let Some(e) = m.get(ebs) else { continue };
                match e.get(enc).map(Value::bool).unwrap_or(Read::Absent) {
                    Read::Known(true) => {}
                    Read::Unknown(x) => {
                        unknown =
                            unknown.or(Some(unknown_reason(&format!("{bdm}[{i}].{ebs}.{enc}"), &x)))
                    }
                    _ => {
                        fail = fail.or(Some(format!(
                            "{bdm}[{i}].{ebs}.{enc} is false or not set; set it to true"
                        )))
                    }
                }
            }
            let v = match (fail, unknown) {
                (Some(f), _) => V::Fail(f),
                (None, Some(u)) => V::Unknown(u),
                _ => V::Pass(format!("every EBS volume in {bdm} is encrypted")),
            };
            self.put("ec2-launch-template-ebs-encrypted", v);
        }
    }

    fn launch_configuration(&mut self) {
        let name = self.k("MetadataOptions.HttpTokens", "metadata_options.http_tokens");
        let v = text(
            self.p(name),
            name,
            |s| s == "required",
            Some("optional"),
            "set it to required",
        );
        self.put("autoscaling-launch-config-imdsv2", v);
        self.bool(
            "autoscaling-launch-config-no-public-ip",
            "AssociatePublicIpAddress",
            "associate_public_ip_address",
            false,
            Absent::Unknown("the subnets' MapPublicIpOnLaunch decides; set it to false"),
        );
    }

    fn asg(&mut self) {
        let cfn = self.cfn();
        let lt = self
            .p(self.k("LaunchTemplate", "launch_template"))
            .is_some()
            || self
                .p(self.k("MixedInstancesPolicy", "mixed_instances_policy"))
                .is_some();
        let lc = self.k("LaunchConfigurationName", "launch_configuration");
        let v = if lt {
            V::Pass("the group launches from a launch template".into())
        } else if self.p(lc).is_some() {
            V::Fail(format!(
                "{lc} is set; launch from a launch template instead of a launch configuration"
            ))
        } else if cfn && self.p("InstanceId").is_some() {
            V::Fail("InstanceId is set; launch from a launch template".into())
        } else {
            V::Unknown("no launch template or configuration is declared".into())
        };
        self.put("autoscaling-group-uses-launch-template", v);
    }

    // ---- CloudTrail, KMS, logs -------------------------------------------------------------

    fn trail(&mut self) {
        let cfn = self.cfn();
        let multi = self.k("IsMultiRegionTrail", "is_multi_region_trail");
        let logging = self.k("IsLogging", "enable_logging");
        let mr = boolean(self.p(multi), multi, true, Absent::Default(false));
        let on = boolean(self.p(logging), logging, true, Absent::Default(!cfn));
        let selectors = self.k("EventSelectors", "event_selector");
        let mgmt = match self.p(selectors) {
            None => V::Pass("management events are recorded by default".into()),
            Some(s) if s.is_unresolved() => V::Unknown(unknown_reason(selectors, &s.short())),
            Some(s) => {
                let (rw, inc) = if cfn {
                    ("ReadWriteType", "IncludeManagementEvents")
                } else {
                    ("read_write_type", "include_management_events")
                };
                let ok = s.items().iter().any(|sel| {
                    sel.get(rw).and_then(Value::as_str).unwrap_or("All") == "All"
                        && sel.get(inc).map(Value::bool).unwrap_or(Read::Known(true))
                            == Read::Known(true)
                });
                if ok {
                    V::Pass(format!(
                        "{selectors} record read and write management events"
                    ))
                } else {
                    V::Fail(format!(
                        "no entry of {selectors} records both read and write management events"
                    ))
                }
            }
        };
        let v = match (mr, on, mgmt) {
            (V::Fail(f), _, _) | (_, V::Fail(f), _) | (_, _, V::Fail(f)) => V::Fail(f),
            (V::Unknown(u), _, _) | (_, V::Unknown(u), _) | (_, _, V::Unknown(u)) => V::Unknown(u),
            _ => V::Pass(format!(
                "{multi} and {logging} are true and management events are recorded"
            )),
        };
        self.put("cloudtrail-multi-region-trail-enabled", v);
        self.bool(
            "cloudtrail-log-file-validation-enabled",
            "EnableLogFileValidation",
            "enable_log_file_validation",
            true,
            Absent::Default(false),
        );
        let key = self.k("KMSKeyId", "kms_key_id");
        let v = present(
            self.p(key),
            key,
            "encrypt log files with a KMS key (SSE-KMS)",
        );
        self.put("cloudtrail-encrypted-with-kms", v);
        let group = self.k("CloudWatchLogsLogGroupArn", "cloud_watch_logs_group_arn");
        let role = self.k("CloudWatchLogsRoleArn", "cloud_watch_logs_role_arn");
        let v = match (
            present(
                self.p(group),
                group,
                "deliver the trail to a CloudWatch Logs group",
            ),
            present(
                self.p(role),
                role,
                "give CloudTrail a role to deliver to CloudWatch Logs",
            ),
        ) {
            (V::Fail(f), _) | (_, V::Fail(f)) => V::Fail(f),
            (V::Unknown(u), _) | (_, V::Unknown(u)) => V::Unknown(u),
            _ => V::Pass(format!("{group} and {role} are set")),
        };
        self.put("cloudtrail-cloudwatch-logs-integration", v);
    }

    fn kms(&mut self) {
        let spec = self.k("KeySpec", "customer_master_key_spec");
        let symmetric = self
            .p(spec)
            .and_then(Value::as_str)
            .is_none_or(|s| s == "SYMMETRIC_DEFAULT");
        if symmetric {
            self.bool(
                "kms-key-rotation-enabled",
                "EnableKeyRotation",
                "enable_key_rotation",
                true,
                Absent::Default(false),
            );
        }
        let policy = self.k("KeyPolicy", "policy");
        let v = match self.p(policy) {
            None => V::Pass(format!(
                "{policy} is not set, so the default policy grants only the account"
            )),
            Some(doc) => match statements(doc) {
                Err(e) => V::Unknown(unknown_reason(policy, &e)),
                Ok(sts) => match sts
                    .iter()
                    .position(|s| is_allow(s) && everyone(s) && unconditioned(s))
                {
                    Some(i) => V::Fail(format!(
                        "{policy} statement {} allows any principal (\"*\") without a condition; name the principals or add a condition",
                        i + 1
                    )),
                    None => V::Pass(format!(
                        "no statement of {policy} allows an unconditioned \"*\" principal"
                    )),
                },
            },
        };
        self.put("kms-key-not-public", v);
    }

    fn log_group(&mut self) {
        let key = self.k("KmsKeyId", "kms_key_id");
        let v = present(
            self.p(key),
            key,
            "encrypt the log group with a customer managed KMS key",
        );
        self.put("cloudwatch-log-group-kms-encrypted", v);
        let name = self.k("RetentionInDays", "retention_in_days");
        let v = match self.p(name).map(Value::num).unwrap_or(Read::Absent) {
            Read::Absent => V::Pass(format!("{name} is not set, so events never expire")),
            Read::Known(0.0) => V::Pass(format!("{name} is 0, so events never expire")),
            _ => at_least(self.p(name), name, 365.0, None),
        };
        self.put("cloudwatch-log-group-retention-set", v);
    }

    fn dynamodb(&mut self) {
        self.bool(
            "dynamodb-table-pitr-enabled",
            "PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled",
            "point_in_time_recovery.enabled",
            true,
            Absent::Default(false),
        );
        let name = self.k(
            "SSESpecification.SSEEnabled",
            "server_side_encryption.enabled",
        );
        let v = match self.p(name).map(Value::bool).unwrap_or(Read::Absent) {
            Read::Known(true) => V::Pass(format!("{name} is true, so the table uses a KMS key")),
            Read::Known(false) | Read::Absent => V::Fail(format!(
                "{name} is false or not set, so the table uses an AWS owned key; set it to true"
            )),
            Read::Unknown(e) => V::Unknown(unknown_reason(name, &e)),
        };
        self.put("dynamodb-table-encrypted-kms", v);
        self.bool(
            "dynamodb-table-deletion-protection",
            "DeletionProtectionEnabled",
            "deletion_protection_enabled",
            true,
            Absent::Default(false),
        );
    }

    // ---- Load balancers --------------------------------------------------------------------

    /// A CloudFormation load balancer attribute (`LoadBalancerAttributes` key/value list).
    fn lb_attr(&self, key: &str) -> Option<&'a Value> {
        self.p("LoadBalancerAttributes")?
            .items()
            .into_iter()
            .find(|a| a.get("Key").and_then(Value::as_str) == Some(key))
            .and_then(|a| a.get("Value"))
    }

    fn elbv2(&mut self) {
        let cfn = self.cfn();
        let ty = self
            .p(self.k("Type", "load_balancer_type"))
            .and_then(Value::as_str)
            .unwrap_or("application");
        let alb = ty == "application";
        let attr = |e: &Self,
                    cfn_key: &'static str,
                    tf_key: &'static str|
         -> (Option<&'a Value>, &'static str) {
            if cfn {
                (e.lb_attr(cfn_key), cfn_key)
            } else {
                (e.p(tf_key), tf_key)
            }
        };
        if alb {
            let (v, n) = attr(
                self,
                "routing.http.drop_invalid_header_fields.enabled",
                "drop_invalid_header_fields",
            );
            let v = boolean(v, n, true, Absent::Default(false));
            self.put("elb-alb-drops-invalid-headers", v);
            let (v, n) = attr(self, "access_logs.s3.enabled", "access_logs.enabled");
            let v = boolean(v, n, true, Absent::Default(false));
            self.put("elb-access-logging-enabled", v);
            let (v, n) = attr(
                self,
                "routing.http.desync_mitigation_mode",
                "desync_mitigation_mode",
            );
            let v = text(
                v,
                n,
                |s| s == "defensive" || s == "strictest",
                Some("defensive"),
                "set it to defensive or strictest",
            );
            self.put("elb-alb-desync-mitigation", v);
            let waf = if cfn {
                self.attached(&["AWS::WAFv2::WebACLAssociation"], "ResourceArn")
            } else {
                self.attached(&["aws_wafv2_web_acl_association"], "resource_arn")
            };
            let v = match waf.first() {
                Some(a) => V::Pass(format!("{} attaches a web ACL", a.name)),
                None => V::Fail("no web ACL association in the document targets this load balancer; associate a WAF web ACL".into()),
            };
            self.put("elb-alb-waf-attached", v);
        }
        let (v, n) = attr(
            self,
            "deletion_protection.enabled",
            "enable_deletion_protection",
        );
        let v = boolean(v, n, true, Absent::Default(false));
        self.put("elb-deletion-protection-enabled", v);

        let (subnets, mappings) = (
            self.k("Subnets", "subnets"),
            self.k("SubnetMappings", "subnet_mapping"),
        );
        let v = match self.p(subnets).or_else(|| self.p(mappings)) {
            None => V::Unknown(format!("neither {subnets} nor {mappings} is set")),
            Some(s) if s.is_unresolved() => V::Unknown(unknown_reason(subnets, &s.short())),
            Some(s) => {
                let n = s.items().len();
                if n >= 2 {
                    V::Pass(format!("the load balancer is attached to {n} subnets"))
                } else {
                    V::Fail(format!(
                        "the load balancer is attached to {n} subnet; use subnets in at least two Availability Zones"
                    ))
                }
            }
        };
        self.put("elb-v2-multi-az", v);
    }

    fn listener(&mut self) {
        let cfn = self.cfn();
        let pname = self.k("Protocol", "protocol");
        let lb = self.find(self.p(self.k("LoadBalancerArn", "load_balancer_arn")));
        let proto = match self.p(pname).map(Value::text).unwrap_or(Read::Absent) {
            Read::Known(p) => p.to_ascii_uppercase(),
            Read::Unknown(e) => {
                self.put(
                    "elbv2-listener-encrypted-protocol",
                    V::Unknown(unknown_reason(pname, &e)),
                );
                return;
            }
            // Terraform's default for an ALB; a listener without protocol is HTTP.
            Read::Absent => "HTTP".into(),
        };
        let lb_ty = lb.and_then(|l| {
            l.props
                .get(if cfn { "Type" } else { "load_balancer_type" })
                .and_then(Value::as_str)
        });
        let alb = match lb_ty {
            Some(t) => t == "application",
            None => matches!(proto.as_str(), "HTTP" | "HTTPS"),
        };
        let wanted = if alb { "HTTPS" } else { "TLS" };
        let v = if proto == wanted {
            V::Pass(format!("{pname} is {proto}"))
        } else {
            V::Fail(format!(
                "{pname} is {proto}; use {wanted} so traffic is encrypted in transit"
            ))
        };
        self.put("elbv2-listener-encrypted-protocol", v);
        if proto == "HTTPS" || proto == "TLS" {
            let name = self.k("SslPolicy", "ssl_policy");
            let v = text(
                self.p(name),
                name,
                aws_facts::strong_elb_tls_policy,
                Some("ELBSecurityPolicy-2016-08"),
                "use a TLS 1.2+ policy such as ELBSecurityPolicy-TLS13-1-2-2021-06",
            );
            self.put("elb-v2-strong-tls-policy", v);
        }
        if proto == "HTTP" && alb {
            let (actions, ty, redirect, rproto) = if cfn {
                ("DefaultActions", "Type", "RedirectConfig", "Protocol")
            } else {
                ("default_action", "type", "redirect", "protocol")
            };
            let v = match self.p(actions) {
                Some(a) if a.is_unresolved() => V::Unknown(unknown_reason(actions, &a.short())),
                Some(a) => {
                    let redirects = a.items().iter().any(|x| {
                        x.get(ty).and_then(Value::as_str) == Some("redirect")
                            && x.get(redirect)
                                .and_then(|r| r.get(rproto))
                                .and_then(Value::as_str)
                                == Some("HTTPS")
                    });
                    if redirects {
                        V::Pass(format!("the HTTP listener's {actions} redirect to HTTPS"))
                    } else {
                        V::Fail(format!(
                            "the HTTP listener's {actions} serve clear text; redirect to HTTPS"
                        ))
                    }
                }
                None => V::Fail(format!("{actions} is not set; redirect HTTP to HTTPS")),
            };
            self.put("elb-alb-http-redirects-to-https", v);
        }
    }

    fn clb(&mut self) {
        // The catalogue check covers Classic Load Balancers too. Terraform's `access_logs` block
        // is on unless it says otherwise (`enabled` defaults to true for `aws_elb`).
        let v = if self.cfn() {
            boolean(
                self.p("AccessLoggingPolicy.Enabled"),
                "AccessLoggingPolicy.Enabled",
                true,
                Absent::Default(false),
            )
        } else if self.p("access_logs").is_some() {
            boolean(
                self.p("access_logs.enabled"),
                "access_logs.enabled",
                true,
                Absent::Default(true),
            )
        } else {
            V::Fail("access_logs is not set; send access logs to an S3 bucket".into())
        };
        self.put("elb-access-logging-enabled", v);
        let (list, key) = if self.cfn() {
            ("Listeners", "Protocol")
        } else {
            ("listener", "lb_protocol")
        };
        let Some(ls) = self.p(list) else { return };
        let mut fail = None;
        let mut unknown = None;
        for (i, l) in ls.items().into_iter().enumerate() {
            match l.get(key).map(Value::text).unwrap_or(Read::Absent) {
                Read::Known(p) if matches!(p.to_ascii_uppercase().as_str(), "HTTPS" | "SSL") => {}
                Read::Known(p) => {
                    fail = fail.or(Some(format!("{list}[{i}].{key} is {p}; use HTTPS or SSL")))
                }
                Read::Unknown(e) => {
                    unknown = unknown.or(Some(unknown_reason(&format!("{list}[{i}].{key}"), &e)))
                }
                Read::Absent => unknown = unknown.or(Some(format!("{list}[{i}].{key} is not set"))),
            }
        }
        let v = match (fail, unknown) {
            (Some(f), _) => V::Fail(f),
            (None, Some(u)) => V::Unknown(u),
            _ => V::Pass(format!("every entry of {list} uses HTTPS or SSL")),
        };
        self.put("elb-clb-listeners-use-tls", v);
    }

    // ---- CloudFront ------------------------------------------------------------------------

    fn cloudfront(&mut self) {
        let cfn = self.cfn();
        let d: &Value = if cfn {
            match self.p("DistributionConfig") {
                Some(d) => d,
                None => return,
            }
        } else {
            &self.r.props
        };
        let (dcb, cbs, vpp) = if cfn {
            (
                "DefaultCacheBehavior",
                "CacheBehaviors",
                "ViewerProtocolPolicy",
            )
        } else {
            (
                "default_cache_behavior",
                "ordered_cache_behavior",
                "viewer_protocol_policy",
            )
        };
        let mut behaviors: Vec<(String, &Value)> = Vec::new();
        if let Some(b) = d.get(dcb) {
            behaviors.push((dcb.to_string(), b));
        }
        if let Some(list) = d.get(cbs) {
            for (i, b) in list.items().into_iter().enumerate() {
                behaviors.push((format!("{cbs}[{i}]"), b));
            }
        }
        let mut fail = None;
        let mut unknown = None;
        let mut https_only_viewers = true;
        for (name, b) in &behaviors {
            match b.get(vpp).map(Value::text).unwrap_or(Read::Absent) {
                Read::Known(p) if p == "https-only" || p == "redirect-to-https" => {
                    if p != "https-only" {
                        https_only_viewers = false;
                    }
                }
                Read::Known(p) => {
                    https_only_viewers = false;
                    fail = fail.or(Some(format!(
                        "{name}.{vpp} is {p}; use redirect-to-https or https-only"
                    )));
                }
                Read::Unknown(e) => {
                    https_only_viewers = false;
                    unknown = unknown.or(Some(unknown_reason(&format!("{name}.{vpp}"), &e)));
                }
                Read::Absent => {
                    https_only_viewers = false;
                    fail = fail.or(Some(format!(
                        "{name}.{vpp} is not set; use redirect-to-https or https-only"
                    )));
                }
            }
        }
        let v = match (fail, unknown) {
            (Some(f), _) => V::Fail(f),
            (None, Some(u)) => V::Unknown(u),
            _ => V::Pass(format!(
                "every cache behavior's {vpp} is redirect-to-https or https-only"
            )),
        };
        self.put("cloudfront-viewer-https-required", v);

        let (logging, waf, root) = if cfn {
            ("Logging.Bucket", "WebACLId", "DefaultRootObject")
        } else {
            ("logging_config.bucket", "web_acl_id", "default_root_object")
        };
        let v = present(
            d.path(logging),
            logging,
            "deliver standard access logs to an S3 bucket",
        );
        self.put("cloudfront-access-logging", v);
        let v = present(d.path(waf), waf, "associate a WAF web ACL");
        self.put("cloudfront-waf-enabled", v);
        let v = present(d.path(root), root, "set it (for example index.html)");
        self.put("cloudfront-default-root-object", v);

        // Origins.
        let (origins, s3cfg, oac, custom, opp, ssl) = if cfn {
            (
                "Origins",
                "S3OriginConfig",
                "OriginAccessControlId",
                "CustomOriginConfig",
                "OriginProtocolPolicy",
                "OriginSSLProtocols",
            )
        } else {
            (
                "origin",
                "s3_origin_config",
                "origin_access_control_id",
                "custom_origin_config",
                "origin_protocol_policy",
                "origin_ssl_protocols",
            )
        };
        let origin_list: Vec<&Value> = d.get(origins).map(|o| o.items()).unwrap_or_default();
        let domain = if cfn { "DomainName" } else { "domain_name" };
        let s3_origins: Vec<(usize, &Value)> = origin_list
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.get(s3cfg).is_some()
                    || o.get(domain)
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.contains(".s3.") || d.ends_with(".s3.amazonaws.com"))
                    || o.get(domain).and_then(Value::expr).is_some_and(|e| {
                        e.contains("RegionalDomainName")
                            || e.contains("bucket_regional_domain_name")
                    })
            })
            .map(|(i, o)| (i, *o))
            .collect();
        if !s3_origins.is_empty() {
            let mut fail = None;
            let mut unknown = None;
            for (i, o) in &s3_origins {
                match o.get(oac).map(Value::presence).unwrap_or(Read::Known(false)) {
                    Read::Known(true) => {}
                    Read::Known(false) | Read::Absent => fail = fail.or(Some(format!("{origins}[{i}].{oac} is not set; use an origin access control so the bucket stays private"))),
                    Read::Unknown(e) => unknown = unknown.or(Some(unknown_reason(&format!("{origins}[{i}].{oac}"), &e))),
                }
            }
            let v = match (fail, unknown) {
                (Some(f), _) => V::Fail(f),
                (None, Some(u)) => V::Unknown(u),
                _ => V::Pass("every S3 origin uses an origin access control".into()),
            };
            self.put("cloudfront-s3-origin-access-control", v);
        }
        let customs: Vec<(usize, &Value)> = origin_list
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.get(custom).map(|c| (i, c)))
            .collect();
        if !customs.is_empty() {
            let mut fail = None;
            let mut unknown = None;
            let mut deprecated = None;
            for (i, c) in &customs {
                match c.get(opp).map(Value::text).unwrap_or(Read::Absent) {
                    Read::Known(p) if p == "https-only" => {}
                    Read::Known(p) if p == "match-viewer" && https_only_viewers => {}
                    Read::Known(p) => {
                        fail = fail.or(Some(format!(
                            "{origins}[{i}].{custom}.{opp} is {p}; use https-only"
                        )))
                    }
                    Read::Unknown(e) => {
                        unknown = unknown.or(Some(unknown_reason(
                            &format!("{origins}[{i}].{custom}.{opp}"),
                            &e,
                        )))
                    }
                    Read::Absent => {
                        fail = fail.or(Some(format!(
                            "{origins}[{i}].{custom}.{opp} is not set; use https-only"
                        )))
                    }
                }
                if let Some(p) = c.get(ssl)
                    && p.items().iter().any(|x| x.as_str() == Some("SSLv3"))
                {
                    deprecated = deprecated.or(Some(format!(
                        "{origins}[{i}].{custom}.{ssl} allows SSLv3; allow only TLSv1.2"
                    )));
                }
            }
            let v = match (fail, unknown) {
                (Some(f), _) => V::Fail(f),
                (None, Some(u)) => V::Unknown(u),
                _ => V::Pass("every custom origin is reached over HTTPS".into()),
            };
            self.put("cloudfront-origin-traffic-encrypted", v);
            let v = match deprecated {
                Some(f) => V::Fail(f),
                None => V::Pass(format!("no custom origin allows SSLv3 in {ssl}")),
            };
            self.put("cloudfront-no-deprecated-origin-ssl", v);
        }

        // Viewer certificate.
        let (vc, acm, iam, default_cert, minp) = if cfn {
            (
                "ViewerCertificate",
                "AcmCertificateArn",
                "IamCertificateId",
                "CloudFrontDefaultCertificate",
                "MinimumProtocolVersion",
            )
        } else {
            (
                "viewer_certificate",
                "acm_certificate_arn",
                "iam_certificate_id",
                "cloudfront_default_certificate",
                "minimum_protocol_version",
            )
        };
        let cert = d.get(vc);
        let custom_cert = cert
            .map(|c| {
                tri_or([
                    c.get(acm)
                        .map(Value::presence)
                        .unwrap_or(Read::Known(false)),
                    c.get(iam)
                        .map(Value::presence)
                        .unwrap_or(Read::Known(false)),
                ])
            })
            .unwrap_or(Read::Known(false));
        let v = match &custom_cert {
            Read::Known(true) => V::Pass(format!("{vc} serves a custom certificate")),
            Read::Unknown(e) => V::Unknown(unknown_reason(vc, e)),
            _ => V::Fail(format!(
                "{vc} uses the default *.cloudfront.net certificate{}; serve an ACM certificate for your own domain",
                if cert.and_then(|c| c.get(default_cert)).is_some() {
                    ""
                } else {
                    " (not set)"
                }
            )),
        };
        self.put("cloudfront-custom-certificate", v);
        if custom_cert == Read::Known(true) {
            let name = format!("{vc}.{minp}");
            let v = text(
                cert.and_then(|c| c.get(minp)),
                &name,
                |s| aws_facts::RECOMMENDED_CLOUDFRONT_TLS.contains(&s),
                Some("TLSv1"),
                "use TLSv1.2_2021 or later",
            );
            self.put("cloudfront-recommended-tls-policy", v);
        }
    }

    // ---- Lambda ----------------------------------------------------------------------------

    fn lambda(&mut self) {
        let rt = self.k("Runtime", "runtime");
        let image = self
            .p(self.k("PackageType", "package_type"))
            .and_then(Value::as_str)
            == Some("Image");
        if !image {
            let v = match self.p(rt).map(Value::text).unwrap_or(Read::Absent) {
                Read::Known(r) => match deprecated_on(&r) {
                    Some(day) => V::Fail(format!(
                        "{rt} is {r}, deprecated since {day}; move to a supported runtime"
                    )),
                    None => V::Pass(format!("{rt} is {r}, a supported runtime")),
                },
                Read::Unknown(e) => V::Unknown(unknown_reason(rt, &e)),
                Read::Absent => V::Unknown(format!("{rt} is not set")),
            };
            self.put("lambda-function-supported-runtime", v);
        }
        let subnets = self.k("VpcConfig.SubnetIds", "vpc_config.subnet_ids");
        let v = present(
            self.p(subnets),
            subnets,
            "attach the function to VPC subnets and security groups",
        );
        self.put("lambda-function-in-vpc", v);
    }

    fn lambda_permission(&mut self) {
        let cfn = self.cfn();
        let (principal, limits): (&str, &[&str]) = if cfn {
            (
                "Principal",
                &["SourceArn", "SourceAccount", "PrincipalOrgID"],
            )
        } else {
            (
                "principal",
                &["source_arn", "source_account", "principal_org_id"],
            )
        };
        let limited = limits.iter().find(|l| self.p(l).is_some());
        let v = match (
            self.p(principal).map(Value::text).unwrap_or(Read::Absent),
            limited,
        ) {
            (Read::Known(p), None) if p == "*" => V::Fail(format!(
                "{principal} is \"*\" with no source condition; name the caller or set a source ARN or account"
            )),
            (Read::Known(p), Some(l)) if p == "*" => V::Pass(format!(
                "{principal} is \"*\" but {l} limits who can invoke"
            )),
            (Read::Known(p), _) => V::Pass(format!("{principal} is {p}")),
            (Read::Unknown(e), None) => V::Unknown(unknown_reason(principal, &e)),
            (Read::Unknown(_), Some(l)) => V::Pass(format!("{l} limits who can invoke")),
            (Read::Absent, _) => V::Unknown(format!("{principal} is not set")),
        };
        self.put("lambda-function-not-public", v);
    }

    fn sqs(&mut self) {
        let (kms, managed) = (
            self.k("KmsMasterKeyId", "kms_master_key_id"),
            self.k("SqsManagedSseEnabled", "sqs_managed_sse_enabled"),
        );
        let v = match self.p(kms).map(Value::presence) {
            Some(Read::Known(true)) => V::Pass(format!("{kms} is set (SSE-KMS)")),
            Some(Read::Unknown(e)) => V::Unknown(unknown_reason(kms, &e)),
            _ => boolean(
                self.p(managed),
                managed,
                true,
                Absent::Pass("new queues use SSE-SQS by default"),
            ),
        };
        self.put("sqs-queue-encrypted", v);
    }

    fn elasticache(&mut self) {
        self.bool(
            "elasticache-replication-group-encrypted-at-rest",
            "AtRestEncryptionEnabled",
            "at_rest_encryption_enabled",
            true,
            Absent::Default(false),
        );
        self.bool(
            "elasticache-replication-group-encrypted-in-transit",
            "TransitEncryptionEnabled",
            "transit_encryption_enabled",
            true,
            Absent::Default(false),
        );
        self.bool(
            "elasticache-replication-group-auto-failover",
            "AutomaticFailoverEnabled",
            "automatic_failover_enabled",
            true,
            Absent::Default(false),
        );
    }

    fn search(&mut self, opensearch: bool) {
        let (rest, n2n) = if opensearch {
            (
                "opensearch-domain-encrypted-at-rest",
                "opensearch-domain-node-to-node-encryption",
            )
        } else {
            (
                "elasticsearch-domain-encrypted-at-rest",
                "elasticsearch-domain-node-to-node-encryption",
            )
        };
        self.bool(
            rest,
            "EncryptionAtRestOptions.Enabled",
            "encrypt_at_rest.enabled",
            true,
            Absent::Default(false),
        );
        self.bool(
            n2n,
            "NodeToNodeEncryptionOptions.Enabled",
            "node_to_node_encryption.enabled",
            true,
            Absent::Default(false),
        );
        let name = self.k("VPCOptions.SubnetIds", "vpc_options.subnet_ids");
        let v = present(
            self.p(name),
            name,
            "place the domain in VPC subnets so it has no public endpoint",
        );
        self.put(
            if opensearch {
                "opensearch-domain-in-vpc"
            } else {
                "elasticsearch-domain-in-vpc"
            },
            v,
        );
    }

    fn redshift(&mut self) {
        self.bool(
            "redshift-cluster-not-publicly-accessible",
            "PubliclyAccessible",
            "publicly_accessible",
            false,
            Absent::Default(false),
        );
        self.bool(
            "redshift-cluster-encrypted-at-rest",
            "Encrypted",
            "encrypted",
            true,
            Absent::Unknown("whether the cluster is encrypted is left to the provisioning default; set it to true"),
        );
        self.bool(
            "redshift-cluster-enhanced-vpc-routing",
            "EnhancedVpcRouting",
            "enhanced_vpc_routing",
            true,
            Absent::Default(false),
        );
        let name = self.k("MasterUsername", "master_username");
        if let Some(u) = self.p(name) {
            let v = text(
                Some(u),
                name,
                |s| s != "awsuser",
                None,
                "use a name other than awsuser",
            );
            self.put("redshift-cluster-custom-admin-username", v);
        }
    }

    fn ecr(&mut self) {
        self.bool(
            "ecr-image-scanning-enabled",
            "ImageScanningConfiguration.ScanOnPush",
            "image_scanning_configuration.scan_on_push",
            true,
            Absent::Fail("turn on scan on push (or enhanced scanning in the registry)"),
        );
        let name = self.k("ImageTagMutability", "image_tag_mutability");
        let v = text(
            self.p(name),
            name,
            |s| s.starts_with("IMMUTABLE"),
            Some("MUTABLE"),
            "set it to IMMUTABLE",
        );
        self.put("ecr-tag-immutability", v);
    }

    fn eks(&mut self) {
        let cfn = self.cfn();
        let (public, cidrs) = if cfn {
            (
                "ResourcesVpcConfig.EndpointPublicAccess",
                "ResourcesVpcConfig.PublicAccessCidrs",
            )
        } else {
            (
                "vpc_config.endpoint_public_access",
                "vpc_config.public_access_cidrs",
            )
        };
        let v = match self.p(public).map(Value::bool).unwrap_or(Read::Absent) {
            Read::Known(false) => V::Pass(format!("{public} is false")),
            Read::Unknown(e) => V::Unknown(unknown_reason(public, &e)),
            _ => match self.p(cidrs) {
                Some(c) if c.is_unresolved() => V::Unknown(unknown_reason(cidrs, &c.short())),
                Some(c)
                    if !c.items().is_empty()
                        && !c.items().iter().any(|x| x.as_str() == Some("0.0.0.0/0")) =>
                {
                    V::Pass(format!("the public endpoint is limited to {cidrs}"))
                }
                _ => V::Fail(format!(
                    "{public} is true or not set and {cidrs} does not restrict it; disable the public endpoint or limit it to known ranges"
                )),
            },
        };
        self.put("eks-endpoint-not-public", v);
        let (enc, res) = if cfn {
            ("EncryptionConfig", "Resources")
        } else {
            ("encryption_config", "resources")
        };
        let v = match self.p(enc) {
            None => V::Fail(format!(
                "{enc} is not set; encrypt Kubernetes secrets with a KMS key"
            )),
            Some(e) if e.is_unresolved() => V::Unknown(unknown_reason(enc, &e.short())),
            Some(e) => {
                let has = e.items().iter().any(|c| {
                    c.get(res)
                        .is_some_and(|r| r.items().iter().any(|x| x.as_str() == Some("secrets")))
                });
                if has {
                    V::Pass(format!("{enc} encrypts secrets"))
                } else {
                    V::Fail(format!(
                        "{enc} does not cover secrets; add secrets to its resources"
                    ))
                }
            }
        };
        self.put("eks-secrets-encrypted", v);
        let types = self.k(
            "Logging.ClusterLogging.EnabledTypes",
            "enabled_cluster_log_types",
        );
        let v = match self.p(types) {
            None => V::Fail(format!("{types} is not set; enable the audit log")),
            Some(t) if t.is_unresolved() => V::Unknown(unknown_reason(types, &t.short())),
            Some(t) => {
                let audit = t.items().iter().any(|x| {
                    x.as_str() == Some("audit")
                        || x.get("Type").and_then(Value::as_str) == Some("audit")
                });
                if audit {
                    V::Pass(format!("{types} includes audit"))
                } else {
                    V::Fail(format!("{types} does not include audit; add it"))
                }
            }
        };
        self.put("eks-audit-logging", v);
    }

    fn task_definition(&mut self) {
        let cfn = self.cfn();
        let name = self.k("ContainerDefinitions", "container_definitions");
        let defs = match self.p(name) {
            Some(Value::Str(s)) => match serde_json::from_str::<serde_json::Value>(s) {
                Ok(j) => super::value::from_json(&j),
                Err(_) => Value::unknown(super::value::truncate(s, 40)),
            },
            Some(v) => v.clone(),
            None => Value::Null,
        };
        let privileged = if cfn { "Privileged" } else { "privileged" };
        let v = if defs.is_unresolved() {
            V::Unknown(unknown_reason(name, &defs.short()))
        } else {
            let reads = defs.items().into_iter().map(|c| {
                if c.is_unresolved() {
                    Read::Unknown(c.short())
                } else {
                    match c
                        .get(privileged)
                        .map(Value::bool)
                        .unwrap_or(Read::Known(false))
                    {
                        Read::Absent => Read::Known(false),
                        r => r,
                    }
                }
            });
            match tri_or(reads) {
                Read::Known(true) => V::Fail(format!(
                    "a container in {name} sets {privileged} to true; remove it"
                )),
                Read::Unknown(e) => V::Unknown(unknown_reason(&format!("{name} {privileged}"), &e)),
                _ => V::Pass(format!("no container in {name} is privileged")),
            }
        };
        self.put("ecs-container-not-privileged", v);
        let pid = self.k("PidMode", "pid_mode");
        let v = text(
            self.p(pid),
            pid,
            |s| s != "host",
            Some("task"),
            "do not share the host's process namespace",
        );
        self.put("ecs-task-definition-no-host-pid", v);
    }

    fn ecs_service(&mut self) {
        let name = self.k(
            "NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp",
            "network_configuration.assign_public_ip",
        );
        let v = if self.cfn() {
            text(
                self.p(name),
                name,
                |s| s == "DISABLED",
                Some("DISABLED"),
                "set it to DISABLED",
            )
        } else {
            boolean(self.p(name), name, false, Absent::Default(false))
        };
        if self
            .p(self.k("NetworkConfiguration", "network_configuration"))
            .is_some()
        {
            self.put("ecs-service-no-public-ip", v);
        }
    }

    // ---- API Gateway REST stages ---------------------------------------------------------

    fn rest_stage(&mut self) {
        self.bool(
            "apigateway-xray-tracing",
            "TracingEnabled",
            "xray_tracing_enabled",
            true,
            Absent::Default(false),
        );
        let settings = match self.method_settings() {
            Ok(s) => s,
            Err(expr) => {
                let why = unknown_reason("the stage's method settings", &expr);
                self.put("apigateway-execution-logging", V::Unknown(why.clone()));
                self.put("apigateway-cache-encrypted", V::Unknown(why));
                return;
            }
        };
        let tf = !self.cfn();
        let v = execution_logging(&settings, tf);
        self.put("apigateway-execution-logging", v);
        // Without a cache cluster nothing is cached, and the live check reads only stages that
        // cache.
        let cluster = self.k("CacheClusterEnabled", "cache_cluster_enabled");
        match self.p(cluster).map(Value::bool).unwrap_or(Read::Absent) {
            Read::Known(true) => {
                let v = cache_encryption(&settings, tf);
                self.put("apigateway-cache-encrypted", v);
            }
            Read::Unknown(expr) => {
                self.put(
                    "apigateway-cache-encrypted",
                    V::Unknown(unknown_reason(cluster, &expr)),
                );
            }
            Read::Known(false) | Read::Absent => {}
        }
    }

    /// The stage's method settings, each as (methods it covers, whether it covers every
    /// method, the setting block): inline in CloudFormation, `aws_api_gateway_method_settings`
    /// resources naming the stage in Terraform. `Err` with the expression when the list is left
    /// to deploy time.
    fn method_settings(&self) -> Result<Vec<MethodSetting<'a>>, String> {
        if self.cfn() {
            let Some(list) = self.p("MethodSettings") else {
                return Ok(Vec::new());
            };
            if list.is_unresolved() {
                return Err(list.short());
            }
            let mut out = Vec::new();
            for m in list.items() {
                if m.is_unresolved() {
                    return Err(m.short());
                }
                let text = |key: &str| match m.get(key) {
                    Some(v) => v.scalar_text().map(Some).ok_or_else(|| v.short()),
                    None => Ok(None),
                };
                let (path, method) = (text("ResourcePath")?, text("HttpMethod")?);
                out.push(MethodSetting {
                    // Which methods a setting without both is applied to is not documented.
                    every: match (path.as_deref(), method.as_deref()) {
                        (Some(p), Some(m)) => Some(p == "/*" && m == "*"),
                        _ => None,
                    },
                    label: format!(
                        "MethodSettings {} {}",
                        method.as_deref().unwrap_or("(no HttpMethod)"),
                        path.as_deref().unwrap_or("(no ResourcePath)")
                    ),
                    level: m.get("LoggingLevel"),
                    caching: m.get("CachingEnabled"),
                    encrypted: m.get("CacheDataEncrypted"),
                });
            }
            return Ok(out);
        }
        // Terraform: settings resources naming this stage, by reference or by its literal
        // name; one whose stage is left to deploy time may be this stage's.
        let own = self.p("stage_name").and_then(Value::as_str);
        let mut out = Vec::new();
        for o in self
            .m
            .resources
            .iter()
            .filter(|o| o.ty == "aws_api_gateway_method_settings")
        {
            let stage = o.props.get("stage_name");
            let ours = match stage {
                Some(Value::Ref { target, .. }) => target == &self.r.name,
                Some(Value::Str(name)) => own == Some(name.as_str()),
                Some(v) if v.is_unresolved() => {
                    return Err(format!("{} stage_name {}", o.name, v.short()));
                }
                _ => false,
            };
            if !ours {
                continue;
            }
            let path = match o.props.get("method_path") {
                Some(v) => Some(v.scalar_text().ok_or_else(|| v.short())?),
                None => None,
            };
            let block = o.props.get("settings");
            if let Some(b) = block.filter(|b| b.is_unresolved()) {
                return Err(b.short());
            }
            out.push(MethodSetting {
                every: path.as_deref().map(|p| p == "*/*"),
                label: format!(
                    "{} ({})",
                    o.name,
                    path.as_deref().unwrap_or("no method_path")
                ),
                level: block.and_then(|b| b.get("logging_level")),
                caching: block.and_then(|b| b.get("caching_enabled")),
                encrypted: block.and_then(|b| b.get("cache_data_encrypted")),
            });
        }
        Ok(out)
    }

    fn secret(&mut self) {
        let rot = if self.cfn() {
            self.attached(&["AWS::SecretsManager::RotationSchedule"], "SecretId")
        } else {
            self.attached(&["aws_secretsmanager_secret_rotation"], "secret_id")
        };
        let v = match rot.first() {
            Some(r) => V::Pass(format!("{} rotates this secret", r.name)),
            None => {
                V::Fail("no rotation schedule in the document rotates this secret; add one".into())
            }
        };
        self.put("secretsmanager-rotation-enabled", v);
    }

    fn inline_policies(&mut self) {
        let Some(list) = self.p("Policies") else {
            return;
        };
        let mut verdicts = Vec::new();
        for (i, p) in list.items().into_iter().enumerate() {
            if let Some(doc) = p.get("PolicyDocument") {
                verdicts.push(admin_policy(doc, &format!("Policies[{i}].PolicyDocument")));
            }
        }
        let v = verdicts
            .iter()
            .find(|v| matches!(v, V::Fail(_)))
            .or_else(|| verdicts.iter().find(|v| matches!(v, V::Unknown(_))))
            .or_else(|| verdicts.first())
            .cloned();
        if let Some(v) = v {
            self.put("iam-policy-no-full-admin-privileges", v);
        }
    }

    fn iam_user(&mut self) {
        if self.cfn() {
            self.inline_policies();
            let direct = ["Policies", "ManagedPolicyArns"].into_iter().find(|k| {
                self.p(k)
                    .is_some_and(|v| v.presence() != Read::Known(false))
            });
            let v = match direct {
                Some(k) => V::Fail(format!(
                    "{k} attaches policies directly to the user; grant access through a group or role"
                )),
                None => V::Pass("no policy is attached directly to the user".into()),
            };
            self.put("iam-user-no-direct-policies", v);
        } else {
            let direct = self.attached(
                &["aws_iam_user_policy", "aws_iam_user_policy_attachment"],
                "user",
            );
            let v = match direct.first() {
                Some(p) => V::Fail(format!(
                    "{} attaches a policy directly to the user; grant access through a group or role",
                    p.name
                )),
                None => {
                    V::Pass("no policy in the document is attached directly to the user".into())
                }
            };
            self.put("iam-user-no-direct-policies", v);
        }
    }
}

/// Where a bucket's lifecycle rules are, what they are called, the key that switches a rule on
/// and how to read it.
type LifecycleRules<'v> = (
    Option<&'v Value>,
    String,
    &'static str,
    fn(&Value) -> Read<bool>,
);

fn negate(r: Read<bool>) -> Read<bool> {
    match r {
        Read::Known(b) => Read::Known(!b),
        other => other,
    }
}

impl Read<String> {
    fn map_known(self, f: impl Fn(&str) -> bool) -> Read<bool> {
        match self {
            Read::Known(s) => Read::Known(f(&s)),
            Read::Unknown(e) => Read::Unknown(e),
            Read::Absent => Read::Absent,
        }
    }
}

/// `Action: "*"` with `Resource: "*"` in an Allow statement.
fn admin_policy(doc: &Value, name: &str) -> V {
    match statements(doc) {
        Err(e) => V::Unknown(unknown_reason(name, &e)),
        Ok(sts) => {
            let admin = sts.iter().position(|s| {
                is_allow(s)
                    && lower_items(s.get("Action"))
                        .iter()
                        .any(|a| a == "*" || a == "*:*")
                    && lower_items(s.get("Resource")).iter().any(|r| r == "*")
            });
            match admin {
                Some(i) => V::Fail(format!(
                    "{name} statement {} allows every action on every resource; grant only the actions needed",
                    i + 1
                )),
                None => V::Pass(format!("{name} grants no \"*\" action on \"*\"")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Security group permissions
// ---------------------------------------------------------------------------------------------

/// One ingress permission, normalised across the formats.
struct Perm {
    origin: String,
    proto: Read<String>,
    from: Read<f64>,
    to: Read<f64>,
    v4: Read<bool>,
    v6: Read<bool>,
}

#[derive(Clone, Copy)]
enum Ports {
    List(&'static [i32]),
    Named(&'static [(i32, &'static str)]),
    All,
    Unauthorized,
}

impl Perm {
    fn unknown(origin: String, expr: String) -> Perm {
        Perm {
            origin,
            proto: Read::Unknown(expr.clone()),
            from: Read::Unknown(expr.clone()),
            to: Read::Unknown(expr.clone()),
            v4: Read::Unknown(expr.clone()),
            v6: Read::Unknown(expr),
        }
    }

    fn sources(&self, v4: bool, v6: bool) -> &'static str {
        match (
            v4 && self.v4 == Read::Known(true),
            v6 && self.v6 == Read::Known(true),
        ) {
            (true, true) => "0.0.0.0/0 and ::/0",
            (false, true) => "::/0",
            _ => "0.0.0.0/0",
        }
    }

    fn covers(&self, ports: Ports, udp: bool) -> Read<bool> {
        let proto = match &self.proto {
            Read::Known(p) => p.to_ascii_lowercase(),
            Read::Unknown(e) => return Read::Unknown(e.clone()),
            Read::Absent => "-1".into(),
        };
        let all = matches!(proto.as_str(), "-1" | "all");
        let tcp = matches!(proto.as_str(), "tcp" | "6");
        let is_udp = matches!(proto.as_str(), "udp" | "17");
        if !(all || tcp || (udp && is_udp)) {
            // ICMP and other protocols carry no ports these checks name; an unauthorized-port
            // check still counts them as opened beyond 80/443.
            return Read::Known(matches!(ports, Ports::Unauthorized) && !is_udp);
        }
        if all {
            return Read::Known(true);
        }
        let (from, to) = match (&self.from, &self.to) {
            (Read::Known(a), Read::Known(b)) => (*a as i64, *b as i64),
            (Read::Unknown(e), _) | (_, Read::Unknown(e)) => return Read::Unknown(e.clone()),
            _ => (0, 65535),
        };
        let (from, to) = if from == -1 && to == -1 {
            (0, 65535)
        } else {
            (from, to)
        };
        Read::Known(match ports {
            Ports::List(list) => list.iter().any(|p| (from..=to).contains(&i64::from(*p))),
            Ports::Named(list) => list
                .iter()
                .any(|(p, _)| (from..=to).contains(&i64::from(*p))),
            Ports::All => from <= 1 && to >= 65535,
            Ports::Unauthorized => !((from == 80 || from == 443) && from == to),
        })
    }
}

fn cidr_open(v: Option<&Value>, any: &str) -> Read<bool> {
    match v {
        None | Some(Value::Null) => Read::Known(false),
        Some(v) if v.is_unresolved() => Read::Unknown(v.short()),
        Some(v) => tri_or(v.items().into_iter().map(|i| match i {
            Value::Str(s) => Read::Known(s.trim() == any),
            other if other.is_unresolved() => Read::Unknown(other.short()),
            _ => Read::Known(false),
        })),
    }
}

fn perm_cfn(item: &Value, origin: String) -> Perm {
    if item.is_unresolved() {
        return Perm::unknown(origin, item.short());
    }
    Perm {
        proto: item
            .get("IpProtocol")
            .map(Value::text)
            .unwrap_or(Read::Absent),
        from: item.get("FromPort").map(Value::num).unwrap_or(Read::Absent),
        to: item.get("ToPort").map(Value::num).unwrap_or(Read::Absent),
        v4: cidr_open(item.get("CidrIp"), "0.0.0.0/0"),
        v6: cidr_open(item.get("CidrIpv6"), "::/0"),
        origin,
    }
}

/// `vpc_rule`: the `aws_vpc_security_group_ingress_rule` attribute names.
fn perm_tf(item: &Value, origin: String, vpc_rule: bool) -> Perm {
    if item.is_unresolved() {
        return Perm::unknown(origin, item.short());
    }
    let (proto, v4, v6) = if vpc_rule {
        ("ip_protocol", "cidr_ipv4", "cidr_ipv6")
    } else {
        ("protocol", "cidr_blocks", "ipv6_cidr_blocks")
    };
    Perm {
        proto: item.get(proto).map(Value::text).unwrap_or(Read::Absent),
        from: item
            .get("from_port")
            .map(Value::num)
            .unwrap_or(Read::Absent),
        to: item.get("to_port").map(Value::num).unwrap_or(Read::Absent),
        v4: cidr_open(item.get(v4), "0.0.0.0/0"),
        v6: cidr_open(item.get(v6), "::/0"),
        origin,
    }
}

/// An `aws_security_group_rule` of type ingress (egress rules are not what these checks read).
fn tf_rule_perm(r: &Resource) -> Option<Perm> {
    match r.props.get("type").map(Value::text) {
        Some(Read::Known(t)) if t == "ingress" => Some(perm_tf(&r.props, r.name.clone(), false)),
        Some(Read::Unknown(e)) => Some(Perm::unknown(r.name.clone(), e)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Reference facts: `crate::aws_facts`, shared with the live checks
// ---------------------------------------------------------------------------------------------

fn deprecated_on(runtime: &str) -> Option<&'static str> {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    aws_facts::lambda_deprecation(runtime).filter(|day| **day <= *today)
}
