//! Fixture templates with their exact expected findings, and hostile inputs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{analyse, detect, rule_ids};
use crate::documents::analysis::{AnalysisError, Kind, Limits};

const CATALOGUE: [&str; 4] = [
    include_str!("../../../data/compliance/common/checks-data.json"),
    include_str!("../../../data/compliance/common/checks-fsbp-extra.json"),
    include_str!("../../../data/compliance/common/checks-identity.json"),
    include_str!("../../../data/compliance/common/checks-network.json"),
];

fn limits() -> Limits {
    Limits {
        deadline: Instant::now() + Duration::from_secs(60),
        max_expanded_bytes: 64 << 20,
        max_depth: 64,
    }
}

fn fixtures_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/documents")
        .join(sub)
}

#[test]
fn every_rule_id_is_a_catalogue_check() {
    let mut catalogue = BTreeSet::new();
    for file in CATALOGUE {
        let checks: Vec<serde_json::Value> = serde_json::from_str(file).expect("catalogue JSON");
        for c in checks {
            catalogue.insert(c["id"].as_str().expect("id").to_string());
        }
    }
    let ids = rule_ids();
    let distinct: BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "duplicate rule ids");
    assert!(ids.len() >= 60, "only {} rules", ids.len());
    for id in ids {
        assert!(catalogue.contains(id), "{id} is not in the catalogue");
    }
}

type Row = (String, String, String, Option<u32>);

fn expected(path: &Path) -> BTreeSet<Row> {
    let text = std::fs::read_to_string(path).expect("expected file");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).expect("expected JSON");
    rows.iter()
        .map(|r| {
            (
                r["check"].as_str().expect("check").to_string(),
                r["resource"].as_str().expect("resource").to_string(),
                r["status"].as_str().expect("status").to_string(),
                r["line"].as_u64().map(|l| u32::try_from(l).expect("line")),
            )
        })
        .collect()
}

fn check_dir(sub: &str, min: usize) {
    let dir = fixtures_dir(sub);
    let mut templates = 0;
    let mut seen_expected = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".expected.json") {
            continue;
        }
        templates += 1;
        let bytes = std::fs::read(&path).expect("fixture");
        let kind = match (sub, path.extension().and_then(|e| e.to_str())) {
            ("cloudformation", _) => Kind::Cloudformation,
            (_, Some("tf")) => Kind::Terraform,
            _ => Kind::TerraformPlan,
        };
        assert_eq!(detect(&bytes), Some(kind), "{name}: detect");
        let report = analyse(kind, &bytes, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.resources > 0, "{name}: no resources");
        let got: BTreeSet<Row> = report
            .findings
            .iter()
            .map(|f| {
                (
                    f.check.clone(),
                    f.resource.clone(),
                    f.status.as_str().to_string(),
                    f.line,
                )
            })
            .collect();
        assert_eq!(
            got.len(),
            report.findings.len(),
            "{name}: duplicate findings"
        );
        for f in &report.findings {
            assert!(!f.reason.is_empty(), "{name}: empty reason");
        }
        let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(&name);
        let exp_path = dir.join(format!("{stem}.expected.json"));
        seen_expected.insert(format!("{stem}.expected.json"));
        let want = expected(&exp_path);
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: missing {missing:#?}\nunexpected {extra:#?}"
        );
    }
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".expected.json") {
            assert!(seen_expected.contains(&name), "{name} has no template");
        }
    }
    assert!(templates >= min, "{sub}: only {templates} fixtures");
}

#[test]
fn cloudformation_fixtures_give_exactly_the_expected_findings() {
    check_dir("cloudformation", 15);
}

#[test]
fn terraform_fixtures_give_exactly_the_expected_findings() {
    check_dir("terraform", 16);
}

#[test]
fn findings_are_sorted_by_resource_then_check() {
    let bytes =
        std::fs::read(fixtures_dir("cloudformation").join("vpc-alb-ecs.yaml")).expect("fixture");
    let report = analyse(Kind::Cloudformation, &bytes, &limits()).expect("analyse");
    let keys: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.resource.clone(), f.check.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(
        report
            .resource_types
            .contains(&"AWS::ECS::Cluster".to_string())
    );
}

#[test]
fn a_parameter_is_unknown_and_named() {
    let yaml = b"Parameters:\n  Enc:\n    Type: String\n    Default: 'true'\nResources:\n  V:\n    Type: AWS::EC2::Volume\n    Properties:\n      Encrypted: !Ref Enc\n";
    let report = analyse(Kind::Cloudformation, yaml, &limits()).expect("analyse");
    let f = &report.findings[0];
    assert_eq!(f.status.as_str(), "unknown");
    assert!(
        f.reason.contains("Enc") && f.reason.contains("Encrypted"),
        "{}",
        f.reason
    );
    assert_eq!(f.line, Some(6));
}

fn is_too_complex(r: Result<super::IacReport, AnalysisError>) -> bool {
    matches!(r, Err(AnalysisError::TooComplex(_)))
}

#[test]
fn billion_laughs_is_refused() {
    let mut y = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        y.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    y.push_str("Resources:\n  X:\n    Type: AWS::S3::Bucket\n    Properties:\n      Tags: *i\n");
    let r = analyse(Kind::Cloudformation, y.as_bytes(), &limits());
    assert!(r.is_err(), "billion laughs accepted");
    assert_eq!(detect(y.as_bytes()), None);
}

#[test]
fn deep_nesting_is_refused_in_every_syntax() {
    let n = 10_000;
    let yaml = format!(
        "Resources:\n  X:\n    Type: AWS::S3::Bucket\n    Properties:\n      Tags: {}{}\n",
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(is_too_complex(analyse(
        Kind::Cloudformation,
        yaml.as_bytes(),
        &limits()
    )));
    let json = format!(
        "{{\"Resources\": {{\"X\": {{\"Type\": \"AWS::S3::Bucket\", \"Properties\": {}{}}}}}}}",
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(is_too_complex(analyse(
        Kind::Cloudformation,
        json.as_bytes(),
        &limits()
    )));
    let plan = format!(
        "{{\"format_version\": \"1.2\", \"planned_values\": {}{}}}",
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(is_too_complex(analyse(
        Kind::TerraformPlan,
        plan.as_bytes(),
        &limits()
    )));
    let hcl = format!(
        "resource \"aws_s3_bucket\" \"x\" {{\n  tags = {}{}\n}}\n",
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(is_too_complex(analyse(
        Kind::Terraform,
        hcl.as_bytes(),
        &limits()
    )));
    let unary = format!(
        "resource \"aws_s3_bucket\" \"x\" {{\n  force_destroy = {}true\n}}\n",
        "!".repeat(n)
    );
    assert!(is_too_complex(analyse(
        Kind::Terraform,
        unary.as_bytes(),
        &limits()
    )));
    // Just past the bound, still within the parsers' own limits.
    let yaml = format!(
        "Resources:\n  X:\n    Type: AWS::S3::Bucket\n    Properties:\n      Tags: {}{}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert!(is_too_complex(analyse(
        Kind::Cloudformation,
        yaml.as_bytes(),
        &limits()
    )));
}

#[test]
fn truncated_and_garbage_input_is_malformed() {
    let cfn = std::fs::read(fixtures_dir("cloudformation").join("cloudtrail-logging.json"))
        .expect("fixture");
    let cut = &cfn[..cfn.len() / 2];
    match analyse(Kind::Cloudformation, cut, &limits()) {
        Err(AnalysisError::Malformed(m)) => assert!(m.starts_with("JSON line"), "{m}"),
        other => panic!("{:?}", other.map(|r| r.resources)),
    }
    let yaml =
        b"Resources:\n  X:\n    Type: AWS::S3::Bucket\n    Properties: {BucketName: [unclosed\n";
    match analyse(Kind::Cloudformation, yaml, &limits()) {
        Err(AnalysisError::Malformed(m)) => assert!(m.starts_with("YAML line"), "{m}"),
        other => panic!("{:?}", other.map(|r| r.resources)),
    }
    let tf = std::fs::read(fixtures_dir("terraform").join("alb.tf")).expect("fixture");
    match analyse(Kind::Terraform, &tf[..tf.len() / 3], &limits()) {
        Err(AnalysisError::Malformed(m)) => assert!(m.starts_with("HCL line"), "{m}"),
        other => panic!("{:?}", other.map(|r| r.resources)),
    }
    let plan = std::fs::read(fixtures_dir("terraform").join("plan.json")).expect("fixture");
    assert!(matches!(
        analyse(Kind::TerraformPlan, &plan[..100], &limits()),
        Err(AnalysisError::Malformed(_))
    ));

    let mut garbage = Vec::with_capacity(4096);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        garbage.push((x & 0xff) as u8);
    }
    for kind in [Kind::Cloudformation, Kind::Terraform, Kind::TerraformPlan] {
        assert!(matches!(
            analyse(kind, &garbage, &limits()),
            Err(AnalysisError::Malformed(_))
        ));
        for len in [0, 1, 7, 64] {
            let _ = analyse(kind, &garbage[..len], &limits());
        }
    }
    assert_eq!(detect(&garbage), None);
    assert!(matches!(
        analyse(Kind::Markdown, b"# x", &limits()),
        Err(AnalysisError::Malformed(_))
    ));
}

#[test]
fn detect_recognises_each_format_and_nothing_else() {
    assert_eq!(
        detect(b"AWSTemplateFormatVersion: '2010-09-09'\nResources: {}\n"),
        Some(Kind::Cloudformation)
    );
    assert_eq!(
        detect(b"Resources:\n  B:\n    Type: AWS::S3::Bucket\n"),
        Some(Kind::Cloudformation)
    );
    assert_eq!(
        detect(br#"{"Resources": {"B": {"Type": "AWS::S3::Bucket"}}}"#),
        Some(Kind::Cloudformation)
    );
    assert_eq!(
        detect(br#"{"format_version": "1.2", "planned_values": {}}"#),
        Some(Kind::TerraformPlan)
    );
    assert_eq!(
        detect(b"variable \"x\" {\n  type = string\n}\n"),
        Some(Kind::Terraform)
    );
    assert_eq!(detect(b"# Design\n\nWe keep data in S3 and RDS.\n\n```hcl\nresource \"aws_s3_bucket\" \"x\" {\n```\n"), None);
    assert_eq!(
        detect(b"The Resources section lists what we deploy.\n"),
        None
    );
    assert_eq!(detect(b"name: ci\non: push\njobs: {}\n"), None);
    assert_eq!(detect(br#"{"name": "package", "version": "1.0.0"}"#), None);
    assert_eq!(detect(b""), None);
}

#[test]
fn an_expired_deadline_stops_the_analysis() {
    let bytes = std::fs::read(fixtures_dir("terraform").join("ec2.tf")).expect("fixture");
    let mut l = limits();
    l.deadline = Instant::now() - Duration::from_secs(1);
    assert!(is_too_complex(analyse(Kind::Terraform, &bytes, &l)));
}

fn finding<'a>(
    report: &'a super::IacReport,
    resource: &str,
    check: &str,
) -> &'a super::super::analysis::TemplateFinding {
    report
        .findings
        .iter()
        .find(|f| f.resource == resource && f.check == check)
        .unwrap_or_else(|| panic!("no {check} on {resource}"))
}

/// A condition's two branches are tried in turn: agreeing branches decide the verdict, different
/// ones leave it unknown saying what each case gives.
#[test]
fn a_condition_is_decided_when_every_case_agrees_and_explained_when_not() {
    let yaml = br#"
Parameters:
  Env: {Type: String, AllowedValues: [dev, prod]}
  KeyArn: {Type: String, Default: ""}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsNotProd: !Not [!Condition IsProd]
  IsStaging: !Equals [!Ref Env, staging]
  HasKey: !Not [!Equals ["", !Ref KeyArn]]
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault:
              SSEAlgorithm: !If [HasKey, "aws:kms", AES256]
      VersioningConfiguration:
        Status: !If [IsProd, Enabled, !If [IsNotProd, Enabled, Suspended]]
  Logs:
    Type: AWS::Logs::LogGroup
    Properties:
      RetentionInDays: !If [IsProd, 400, 30]
  Volume:
    Type: AWS::EC2::Volume
    Properties:
      Encrypted: !If [IsStaging, false, true]
"#;
    let report = analyse(Kind::Cloudformation, yaml, &limits()).expect("analyse");

    // Both algorithms encrypt.
    let f = finding(&report, "Bucket", "s3-bucket-default-encryption");
    assert_eq!(f.status.as_str(), "pass", "{}", f.reason);
    assert!(f.reason.contains("HasKey"), "{}", f.reason);
    // Only a customer managed key passes, which needs HasKey.
    let f = finding(&report, "Bucket", "s3-bucket-kms-encryption");
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
    assert!(
        f.reason.starts_with("depends on HasKey: when HasKey is "),
        "{}",
        f.reason
    );
    // IsNotProd is the negation of IsProd: "Suspended" needs both false, which cannot happen.
    let f = finding(&report, "Bucket", "s3-bucket-versioning-enabled");
    assert_eq!(f.status.as_str(), "pass", "{}", f.reason);

    let f = finding(&report, "Logs", "cloudwatch-log-group-retention-set");
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
    assert!(
        f.reason
            .contains("when IsProd is true, RetentionInDays is 400")
            && f.reason
                .contains("when IsProd is false, RetentionInDays is 30"),
        "{}",
        f.reason
    );

    // Env allows only dev and prod, so IsStaging is false and the volume is encrypted.
    let f = finding(&report, "Volume", "ebs-volume-encrypted");
    assert_eq!(f.status.as_str(), "pass", "{}", f.reason);
    assert_eq!(f.reason, "Encrypted is true");
}

#[test]
fn a_terraform_conditional_is_tried_both_ways() {
    let tf = br#"
resource "aws_db_instance" "main" {
  engine                  = "postgres"
  instance_class          = "db.t4g.micro"
  storage_encrypted       = var.env != "prod" ? true : (var.env == "prod" ? true : false)
  backup_retention_period = var.env == "prod" ? 35 : 0
  deletion_protection     = local.locked ? true : null
}
"#;
    let report = analyse(Kind::Terraform, tf, &limits()).expect("analyse");
    let f = finding(
        &report,
        "aws_db_instance.main",
        "rds-instance-storage-encrypted",
    );
    assert_eq!(f.status.as_str(), "pass", "{}", f.reason);
    let f = finding(
        &report,
        "aws_db_instance.main",
        "rds-instance-backup-enabled",
    );
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
    assert!(
        f.reason.contains("is 35") && f.reason.contains("is 0"),
        "{}",
        f.reason
    );
    // `null` leaves the default (false): the verdict depends on local.locked.
    let f = finding(
        &report,
        "aws_db_instance.main",
        "rds-instance-deletion-protection",
    );
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
    assert!(f.reason.contains("local.locked is false"), "{}", f.reason);
}

/// Conditions that name each other eight times at every level would be read 8^n times, and
/// their formulas hold 8^n nodes: each is read once, and past 1,000 nodes a condition is one
/// unknown of its own; the verdict is unknown, at once.
#[test]
fn conditions_that_multiply_are_read_once_and_capped() {
    let mut yaml = String::from("Parameters:\n  P: {Type: String}\nConditions:\n");
    for i in 0..40 {
        yaml.push_str(&format!(
            "  C{i}: !And [{}]\n",
            vec![format!("!Condition C{}", i + 1); 8].join(", ")
        ));
    }
    yaml.push_str("  C40: !Equals [!Ref P, x]\nResources:\n  V:\n    Type: AWS::EC2::Volume\n    Properties:\n      Encrypted: !If [C0, true, false]\n");
    let started = Instant::now();
    let report = analyse(Kind::Cloudformation, yaml.as_bytes(), &limits()).expect("analyse");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let f = finding(&report, "V", "ebs-volume-encrypted");
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
}

/// Found in review: each used to decide a verdict the template does not decide, or to crash.
#[test]
fn conditions_never_decide_what_the_template_leaves_open() {
    let long = "a".repeat(100);
    let yaml = format!(
        r#"
Parameters:
  Size: {{Type: String, AllowedValues: [1.0, 2.0]}}
  Env: {{Type: String}}
  Key: {{Type: String, Default: ""}}
Conditions:
  # An !If inside a condition that names the condition itself.
  Loop: !Equals [!If [Loop, x, y], x]
  # AllowedValues of numbers: CloudFormation compares the text as written.
  Small: !Equals [!Ref Size, 1.0]
  IsProd: !Equals [!Ref Env, prod]
  IsNotProd: !Not [!Condition IsProd]
  HasKey: !Not [!Equals [!Ref Key, ""]]
  Long1: !Equals [!Ref Env, "{long}1"]
  Long2: !Equals [!Ref Env, "{long}2"]
Resources:
  LoopVolume:
    Type: AWS::EC2::Volume
    Properties:
      Encrypted: !If [Loop, true, false]
  SmallVolume:
    Type: AWS::EC2::Volume
    Properties:
      Encrypted: !If [Small, false, true]
  LongVolume:
    Type: AWS::EC2::Volume
    Properties:
      Encrypted: !If [Long1, true, !If [Long2, false, true]]
  Logs:
    Type: AWS::Logs::LogGroup
    Properties:
      RetentionInDays: !If [IsProd, 400, !If [IsNotProd, 30, 1]]
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      KmsMasterKeyId: !If [HasKey, alias/topics, ""]
"#
    );
    let report = analyse(Kind::Cloudformation, yaml.as_bytes(), &limits()).expect("analyse");
    for resource in ["LoopVolume", "SmallVolume", "LongVolume"] {
        let f = finding(&report, resource, "ebs-volume-encrypted");
        assert_eq!(f.status.as_str(), "unknown", "{resource}: {}", f.reason);
    }
    // IsProd and IsNotProd always move together: the reason names them, with both cases.
    let f = finding(&report, "Logs", "cloudwatch-log-group-retention-set");
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
    assert!(f.reason.starts_with("depends on IsProd"), "{}", f.reason);
    assert!(!f.reason.contains("when ,"), "{}", f.reason);
    // An empty key is no key: unknown, not "set".
    let f = finding(&report, "Topic", "sns-topic-encrypted-kms");
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
    assert!(f.reason.contains("when HasKey is false"), "{}", f.reason);

    let tf = format!(
        r#"
resource "aws_ebs_volume" "typed" {{
  availability_zone = "eu-west-1a"
  encrypted         = 1 == "1" ? false : true
}}
resource "aws_ebs_volume" "long" {{
  availability_zone = "eu-west-1a"
  encrypted         = var.x == "{long}1" ? true : (var.x == "{long}2" ? false : true)
}}
"#
    );
    let report = analyse(Kind::Terraform, tf.as_bytes(), &limits()).expect("analyse");
    // Terraform's 1 == "1" is false (different types).
    let f = finding(&report, "aws_ebs_volume.typed", "ebs-volume-encrypted");
    assert_eq!(f.status.as_str(), "pass", "{}", f.reason);
    let f = finding(&report, "aws_ebs_volume.long", "ebs-volume-encrypted");
    assert_eq!(f.status.as_str(), "unknown", "{}", f.reason);
}

#[test]
fn rest_stage_settings_the_template_leaves_open_are_unknown() {
    let yaml = br#"
Resources:
  Stage:
    Type: AWS::ApiGateway::Stage
    Properties:
      RestApiId: api
      DeploymentId: d
      MethodSettings:
        - LoggingLevel: INFO
"#;
    let report = analyse(Kind::Cloudformation, yaml, &limits()).expect("analyse");
    let f = finding(&report, "Stage", "apigateway-execution-logging");
    assert_eq!(f.status.as_str(), "fail", "{}", f.reason);

    let tf = br#"
resource "aws_api_gateway_stage" "named" {
  rest_api_id   = "api"
  deployment_id = "d"
  stage_name    = "prod"
}
resource "aws_api_gateway_method_settings" "by_name" {
  rest_api_id = "api"
  stage_name  = "prod"
  method_path = "*/*"
  settings {
    logging_level = "ERROR"
  }
}
resource "aws_api_gateway_stage" "other" {
  rest_api_id   = "api"
  deployment_id = "d"
  stage_name    = "dev"
}
resource "aws_api_gateway_method_settings" "by_variable" {
  rest_api_id = "api"
  stage_name  = var.stage
  method_path = "*/*"
  settings {
    logging_level = "OFF"
  }
}
"#;
    let report = analyse(Kind::Terraform, tf, &limits()).expect("analyse");
    // Settings whose stage is a variable may be either stage's.
    for stage in ["aws_api_gateway_stage.named", "aws_api_gateway_stage.other"] {
        let f = finding(&report, stage, "apigateway-execution-logging");
        assert_eq!(f.status.as_str(), "unknown", "{stage}: {}", f.reason);
    }
}
