//! Findings as downloads: our JSON, CSV, OCSF 1.1 Detection Findings (what Prowler writes and
//! Security Lake reads) and ASFF (what Security Hub's BatchImportFindings takes).

use serde_json::{Value, json};

use super::api::{FindingView, Scan};

/// `(content type, body)` for `format` (already validated).
pub fn render(
    format: &str,
    scan: &Scan,
    account: &str,
    findings: &[FindingView],
) -> (&'static str, String) {
    match format {
        "csv" => ("text/csv; charset=utf-8", csv(findings)),
        "ocsf" => (
            "application/json",
            ocsf(scan, account, findings).to_string(),
        ),
        "asff" => (
            "application/json",
            asff(scan, account, findings).to_string(),
        ),
        _ => (
            "application/json",
            json!({"scan": scan, "findings": findings}).to_string(),
        ),
    }
}

fn csv_field(value: &str) -> String {
    // A leading =, +, - or @ would run as a formula in a spreadsheet (CSV injection).
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn csv(findings: &[FindingView]) -> String {
    let mut out = String::from(
        "check,title,service,region,resource,resource_type,status,severity,reason,first_seen,evidence\r\n",
    );
    for f in findings {
        let fields = [
            f.check.as_str(),
            f.title.as_str(),
            f.service.as_str(),
            f.region.as_str(),
            f.resource.as_str(),
            f.resource_type.as_str(),
            f.status.as_str(),
            f.severity.as_str(),
            f.reason.as_str(),
            &crate::web::timestamp::format(&f.first_seen),
            &f.evidence.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|v| csv_field(v)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn severity_id(severity: &str) -> u8 {
    match severity {
        "informational" => 1,
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        _ => 0,
    }
}

fn ocsf(scan: &Scan, account: &str, findings: &[FindingView]) -> Value {
    let time = scan.finished_at.unwrap_or(scan.created_at);
    let items: Vec<Value> = findings
        .iter()
        .map(|f| {
            let status_code = match f.status.as_str() {
                "pass" => "PASS",
                "fail" => "FAIL",
                _ => "MANUAL",
            };
            json!({
                "class_uid": 2004,
                "class_name": "Detection Finding",
                "category_uid": 2,
                "category_name": "Findings",
                "type_uid": 200401,
                "type_name": "Detection Finding: Create",
                "activity_id": 1,
                "activity_name": "Create",
                "severity_id": severity_id(&f.severity),
                "severity": capitalise(&f.severity),
                "status_id": 1,
                "status": "New",
                "status_code": status_code,
                "status_detail": f.reason,
                "time": time.timestamp_millis(),
                "time_dt": crate::web::timestamp::format(&time),
                "metadata": {
                    "version": "1.1.0",
                    "event_code": f.check,
                    "product": {"name": "Cloud Optimizer", "vendor_name": "Cloud Optimizer", "version": env!("CARGO_PKG_VERSION")},
                    "profiles": ["cloud", "datetime"],
                },
                "finding_info": {
                    "uid": format!("cloud-optimizer-{}-{}-{}-{}", f.check, account, f.region, f.resource),
                    "title": f.title,
                    "desc": f.reason,
                    "first_seen_time": f.first_seen.timestamp_millis(),
                    "types": ["Software and Configuration Checks"],
                },
                "resources": [{
                    "uid": f.resource,
                    "type": f.resource_type,
                    "region": f.region,
                    "cloud_partition": super::checks::partition_of(&f.region),
                    "group": {"name": f.service},
                    "data": {"details": f.evidence},
                }],
                "cloud": {
                    "provider": "aws",
                    "region": f.region,
                    "account": {"uid": account, "type": "AWS Account", "type_id": 10},
                },
                "unmapped": {"scan_id": scan.id, "check_status": f.status},
            })
        })
        .collect();
    Value::Array(items)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn asff(scan: &Scan, account: &str, findings: &[FindingView]) -> Value {
    let time = crate::web::timestamp::format(&scan.finished_at.unwrap_or(scan.created_at));
    let items: Vec<Value> = findings
        .iter()
        .map(|f| {
            let region = if f.region == "global" { "us-east-1" } else { &f.region };
            let partition = super::checks::partition_of(region);
            let compliance = match f.status.as_str() {
                "pass" => "PASSED",
                "fail" => "FAILED",
                "error" => "WARNING",
                _ => "NOT_AVAILABLE",
            };
            let label = match f.severity.as_str() {
                "informational" => "INFORMATIONAL",
                "low" => "LOW",
                "high" => "HIGH",
                "critical" => "CRITICAL",
                _ => "MEDIUM",
            };
            let resource_type = if f.resource_type.is_empty() {
                "Other".to_string()
            } else {
                // Security Hub spells AWS::S3::Bucket as AwsS3Bucket.
                f.resource_type.replace("::", "")
            };
            // ASFF's limits are in characters; cutting bytes could split one.
            let title: String = f.title.chars().take(256).collect();
            let description: String = f.reason.chars().take(1024).collect();
            json!({
                "SchemaVersion": "2018-10-08",
                "Id": format!("cloud-optimizer/{account}/{region}/{}/{}", f.check, f.resource),
                "ProductArn": format!("arn:{partition}:securityhub:{region}:{account}:product/{account}/default"),
                "GeneratorId": format!("cloud-optimizer-{}", f.check),
                "AwsAccountId": account,
                "Types": ["Software and Configuration Checks/AWS Security Best Practices"],
                "FirstObservedAt": crate::web::timestamp::format(&f.first_seen),
                "CreatedAt": time,
                "UpdatedAt": time,
                "Severity": {"Label": label},
                "Title": title,
                "Description": description,
                "Resources": [{"Type": resource_type, "Id": f.resource, "Partition": partition, "Region": region}],
                "Compliance": {"Status": compliance},
                "RecordState": "ACTIVE",
                "Workflow": {"Status": "NEW"},
                "ProductFields": {"ProviderName": "Cloud Optimizer", "ScanId": scan.id.to_string(), "Service": f.service},
            })
        })
        .collect();
    json!({"Findings": items})
}
