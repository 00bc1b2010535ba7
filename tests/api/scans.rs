//! AWS account scans through the real binary against moto (the AWS wire protocols), reached
//! with the standard endpoint override a customer would use (`AWS_ENDPOINT_URL`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

fn aws_env(db: &str, endpoint: &str) -> HashMap<String, String> {
    let mut env = base_env(db);
    for (k, v) in [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("METRICS_PORT", "0"),
        ("LOG_FORMAT", "json"),
        // The tests poll a scan's state quickly.
        ("RATE_LIMIT_PER_MINUTE", "100000"),
    ] {
        env.insert(k.into(), v.into());
    }
    env
}

/// A client of one served process.
struct Api {
    base: String,
    client: reqwest::Client,
    key: String,
}

impl Api {
    fn of(process: &Process) -> Self {
        Self {
            base: format!("http://{}", process.addr()),
            client: reqwest::Client::builder().gzip(true).build().unwrap(),
            key: BOOTSTRAP_KEY.to_string(),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }

    /// Starts a scan; the answer must be a 202 with a queued scan.
    async fn scan(&self, body: Value) -> String {
        let response = self.post("/api/v1/scans").json(&body).send().await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let scan: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "POST /scans {body}: {scan}");
        let id = scan["id"].as_str().unwrap().to_string();
        assert_eq!(location, Some(format!("/api/v1/scans/{id}")));
        assert_eq!(scan["status"], "queued", "{scan}");
        id
    }

    /// Waits for the scan to end and returns it.
    async fn ended(&self, id: &str) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let ended = eventually(Duration::from_secs(180), || {
            let request = self.get(&format!("/api/v1/scans/{id}"));
            let last = &last;
            async move {
                let scan: Value = request.send().await.unwrap().json().await.unwrap();
                let running = matches!(scan["status"].as_str(), Some("queued" | "running"));
                *last.lock().unwrap() = scan;
                !running
            }
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(ended, "scan {id} did not end: {last}");
        last
    }

    async fn findings(&self, id: &str, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut next = Some(format!("/api/v1/scans/{id}/findings?limit=1000{query}"));
        while let Some(path) = next {
            let page = self.json(&path).await;
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            next = page["next"].as_str().map(str::to_string);
        }
        items
    }

    async fn usage(&self, dimension: &str) -> Value {
        let usage = self.json("/api/v1/usage").await;
        usage["dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dimension"] == dimension)
            .unwrap()
            .clone()
    }
}

/// Runs tests/scans/seed.py against moto and returns what each check must conclude.
fn seed(moto: &Moto, groups: &str) -> Vec<(String, String, String)> {
    let output = std::process::Command::new("python3")
        .args(["tests/scans/seed.py", groups])
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "seeding moto: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    body["expect"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["check"].as_str().unwrap().to_string(),
                e["resource"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The IAM action of an SDK call (`S3:GetBucketEncryption` → `s3:GetEncryptionConfiguration`).
fn iam_action(call: &str) -> String {
    let (api, operation) = call.split_once(':').unwrap();
    let prefix = match api {
        "S3 Control" => "s3",
        "Config Service" => "config",
        "CloudWatch Logs" => "logs",
        "Elastic Load Balancing v2" => "elasticloadbalancing",
        "AccessAnalyzer" => "access-analyzer",
        "Secrets Manager" => "secretsmanager",
        "EFS" => "elasticfilesystem",
        other => return format!("{}:{}", other.to_lowercase(), iam_operation(api, operation)),
    };
    format!("{prefix}:{}", iam_operation(api, operation))
}

/// Where an action's name differs from the API operation's (S3's older names).
fn iam_operation<'a>(api: &str, operation: &'a str) -> &'a str {
    match (api, operation) {
        ("S3", "ListBuckets") => "ListAllMyBuckets",
        ("S3", "HeadBucket") => "ListBucket",
        ("S3", "GetBucketEncryption") => "GetEncryptionConfiguration",
        ("S3", "GetPublicAccessBlock") => "GetBucketPublicAccessBlock",
        ("S3", "GetBucketLifecycleConfiguration") => "GetLifecycleConfiguration",
        ("S3", "GetObjectLockConfiguration") => "GetBucketObjectLockConfiguration",
        ("S3", "GetBucketReplication") => "GetReplicationConfiguration",
        ("S3", "GetBucketNotificationConfiguration") => "GetBucketNotification",
        ("S3 Control", "GetPublicAccessBlock") => "GetAccountPublicAccessBlock",
        _ => operation,
    }
}

/// `ec2:Describe*` allows `ec2:DescribeInstances`.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (pattern, action) = (pattern.to_lowercase(), action.to_lowercase());
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_automated_check_gives_the_seeded_verdict_on_the_seeded_resource() {
    let moto = Moto::start().await;
    let expected = seed(&moto, "");
    let db = create_migrated_database().await;
    let server = Process::serve(&aws_env(&db, &moto.endpoint())).await;
    let api = Api::of(&server);

    let id = api
        .scan(json!({"regions": ["us-east-1", "eu-west-1"]}))
        .await;
    let scan = api.ended(&id).await;
    assert_eq!(scan["status"], "succeeded", "{scan}");
    assert_eq!(scan["account"]["account_id"], "123456789012");
    assert_eq!(scan["progress"]["done"], scan["progress"]["total"]);
    assert!(scan["aws_calls"].as_i64().unwrap() > 0, "{scan}");
    let findings = api.findings(&id, "").await;

    let mut found: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    for f in &findings {
        found
            .entry((
                f["check"].as_str().unwrap().into(),
                f["resource"].as_str().unwrap().into(),
            ))
            .or_default()
            .insert(f["status"].as_str().unwrap().into());
    }
    let mut wrong = Vec::new();
    for (check, resource, status) in &expected {
        let got = found.get(&(check.clone(), resource.clone()));
        if !got.is_some_and(|g| g.contains(status)) {
            wrong.push(format!(
                "{check} on {resource}: expected {status}, got {got:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // The whole account, exactly: how many findings of each status every check gave. moto and
    // the seeds are deterministic, so any change here is a change of behaviour to review;
    // `SCAN_GOLDEN_UPDATE=1` rewrites the file from this run.
    let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for f in &findings {
        *counts
            .entry(f["check"].as_str().unwrap().to_string())
            .or_default()
            .entry(f["status"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let golden_path = "tests/scans/whole_account.json";
    if std::env::var("SCAN_GOLDEN_UPDATE").is_ok_and(|v| v == "1") {
        std::fs::write(
            golden_path,
            serde_json::to_string_pretty(&counts).unwrap() + "\n",
        )
        .unwrap();
    }
    let golden: BTreeMap<String, BTreeMap<String, i64>> =
        serde_json::from_str(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
    let mut differ = Vec::new();
    for check in golden.keys().chain(counts.keys()).collect::<BTreeSet<_>>() {
        if golden.get(check) != counts.get(check) {
            differ.push(format!(
                "{check}: expected {:?}, got {:?}",
                golden.get(check),
                counts.get(check)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "the whole-account scan differs from {golden_path}:\n{}",
        differ.join("\n")
    );

    // Every AWS call the scan made is one the documented read-only policy allows.
    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string("cloudformation/scan-policy.json").unwrap())
            .unwrap();
    let allowed: Vec<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .flat_map(|s| match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            _ => vec![],
        })
        .collect();
    let operations = scan["aws_calls_by_operation"].as_object().unwrap();
    assert!(operations.len() > 30, "{operations:?}");
    let missing: Vec<String> = operations
        .keys()
        .map(|op| iam_action(op))
        // Needs no permission: any principal may ask who it is.
        .filter(|action| action != "sts:GetCallerIdentity")
        .filter(|action| !allowed.iter().any(|a| action_matches(a, action)))
        .collect();
    assert!(
        missing.is_empty(),
        "calls cloudformation/scan-policy.json does not allow: {missing:?}"
    );

    // The counts the scan reports are the findings it lists.
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for f in &findings {
        *by_status
            .entry(f["status"].as_str().unwrap().into())
            .or_default() += 1;
    }
    for status in ["pass", "fail", "error", "not_applicable"] {
        assert_eq!(
            scan["counts"][status].as_i64().unwrap(),
            by_status.get(status).copied().unwrap_or(0),
            "count of {status}"
        );
    }
    let regions: BTreeSet<&str> = findings
        .iter()
        .map(|f| f["region"].as_str().unwrap())
        .collect();
    assert!(
        regions.contains("us-east-1") && regions.contains("eu-west-1"),
        "{regions:?}"
    );

    // Every automated check is seeded, and every one gave a verdict somewhere.
    let automated = api.json("/api/v1/kb/checks?automated=true&limit=500").await;
    let automated: BTreeSet<String> = automated["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["id"]
                .as_str()
                .unwrap()
                .trim_start_matches("check:kb:")
                .to_string()
        })
        .collect();
    assert!(
        automated.len() >= 100,
        "{} automated checks",
        automated.len()
    );
    let seeded: BTreeSet<String> = expected.iter().map(|(c, _, _)| c.clone()).collect();
    let unseeded: Vec<_> = automated.difference(&seeded).collect();
    assert!(
        unseeded.is_empty(),
        "automated checks no seed covers: {unseeded:?}"
    );
    let services: BTreeSet<&str> = findings
        .iter()
        .map(|f| f["service"].as_str().unwrap())
        .collect();
    assert!(
        services.len() >= 20,
        "{} services: {services:?}",
        services.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_in_another_account_is_assumed_with_its_external_id_and_nothing_secret_is_kept() {
    let moto = Moto::start().await;
    let db = create_migrated_database().await;
    let server = Process::serve(&aws_env(&db, &moto.endpoint())).await;
    let api = Api::of(&server);
    let role = "arn:aws:iam::111111111111:role/CloudOptimizerScan";
    let id = api
        .scan(json!({
            "account": {"role_arn": role, "external_id": "secret-external-id-42"},
            "regions": ["us-east-1"],
            "checks": ["config-recorder-enabled"],
        }))
        .await;
    let scan = api.ended(&id).await;
    assert_eq!(scan["status"], "succeeded", "{scan}");
    assert_eq!(scan["account"]["type"], "role");
    assert_eq!(scan["account"]["role_arn"], role);
    assert_eq!(scan["account"]["account_id"], "111111111111");
    let findings = api.findings(&id, "").await;
    assert!(!findings.is_empty());
    for f in &findings {
        assert!(
            f["resource"].as_str().unwrap().contains(":111111111111:"),
            "a finding outside the assumed account: {f}"
        );
    }
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let stored: String =
        sqlx::query_scalar("SELECT row_to_json(s)::text FROM scans s WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!stored.contains("secret-external-id-42"), "{stored}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_scan_and_its_aws_calls_and_one_scan_per_account_runs_at_a_time() {
    let moto = Moto::start().await;
    let hole = BlackHole::start().await;
    let db = create_migrated_database().await;
    let mut env = aws_env(&db, &moto.endpoint());
    env.insert("AWS_ENDPOINT_URL_CONFIG_SERVICE".into(), hole.endpoint());
    let server = Process::serve(&env).await;
    let api = Api::of(&server);
    let body =
        json!({"regions": ["us-east-1", "eu-west-1"], "checks": ["config-recorder-enabled"]});
    let id = api.scan(body.clone()).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            hole.accepted.load(Ordering::SeqCst) >= 1
        })
        .await,
        "the scan never called AWS Config"
    );
    let running = api.json(&format!("/api/v1/scans/{id}")).await;
    assert_eq!(running["status"], "running", "{running}");

    let second = api.post("/api/v1/scans").json(&body).send().await.unwrap();
    let problem = assert_problem(second, 409, "scan_already_running").await;
    assert_eq!(problem["scan_id"], id.as_str());
    let refused_delete = api
        .client
        .delete(format!("{}/api/v1/scans/{id}", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_problem(refused_delete, 409, "scan_running").await;

    let cancel = api
        .post(&format!("/api/v1/scans/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let scan = api.ended(&id).await;
    assert_eq!(scan["status"], "cancelled", "{scan}");
    // The hanging AWS calls were dropped, not left to time out.
    assert!(
        eventually(Duration::from_secs(10), || async {
            hole.closed.load(Ordering::SeqCst) == hole.accepted.load(Ordering::SeqCst)
        })
        .await,
        "calls still open after cancel: accepted {}, closed {}",
        hole.accepted.load(Ordering::SeqCst),
        hole.closed.load(Ordering::SeqCst)
    );
    let again = api
        .post(&format!("/api/v1/scans/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_problem(again, 409, "scan_finished").await;

    // The account is free again; a cancelled scan can be deleted.
    let next = api.scan(body).await;
    let cancel = api
        .post(&format!("/api/v1/scans/{next}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    api.ended(&next).await;
    let deleted = api
        .client
        .delete(format!("{}/api/v1/scans/{id}", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = api
        .get(&format!("/api/v1/scans/{id}"))
        .send()
        .await
        .unwrap();
    assert_problem(gone, 404, "not_found").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_whose_replica_dies_is_interrupted_by_the_lease_and_refunded() {
    let moto = Moto::start().await;
    let hole = BlackHole::start().await;
    let db = create_migrated_database().await;
    let mut env = aws_env(&db, &moto.endpoint());
    env.insert("AWS_ENDPOINT_URL_CONFIG_SERVICE".into(), hole.endpoint());
    env.insert("SCAN_LEASE_SECONDS".into(), "2".into());
    env.insert("TRIAL_MODE".into(), "true".into());
    let first = Process::serve(&env).await;
    let api = Api::of(&first);
    let id = api
        .scan(json!({"regions": ["us-east-1"], "checks": ["config-recorder-enabled"]}))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            hole.accepted.load(Ordering::SeqCst) >= 1
        })
        .await
    );
    assert_eq!(api.usage("SecurityScans").await["used"], 1);
    first.signal("KILL");
    drop(first);

    let second = Process::serve(&env).await;
    let api = Api::of(&second);
    let scan = api.ended(&id).await;
    assert_eq!(scan["status"], "interrupted", "{scan}");
    assert!(
        scan["error"].as_str().unwrap().contains("replica"),
        "{scan}"
    );
    // Nothing was evaluated, so the unit comes back.
    assert_eq!(api.usage("SecurityScans").await["used"], 0);
    let events = api.json("/api/v1/notifications?types=scan.*").await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "scan.failed" && e["data"]["id"] == id.as_str()),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_is_one_unit_replayed_by_its_key_refused_before_any_call_and_refunded_when_credentials_fail()
 {
    let moto = Moto::start().await;
    let db = create_migrated_database().await;
    let mut env = aws_env(&db, &moto.endpoint());
    // STS unreachable: the credentials cannot be confirmed, so no check can run.
    env.insert(
        "AWS_ENDPOINT_URL_STS".into(),
        format!("http://127.0.0.1:{}", free_port()),
    );
    env.insert("TRIAL_MODE".into(), "true".into());
    env.insert("TRIAL_LIMIT_SECURITY_SCANS".into(), "1".into());
    let server = Process::serve(&env).await;
    let api = Api::of(&server);
    let body = json!({"regions": ["us-east-1"], "checks": ["config-recorder-enabled"]});

    let first = api
        .post("/api/v1/scans")
        .header("Idempotency-Key", "scan-once")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let replay = api
        .post("/api/v1/scans")
        .header("Idempotency-Key", "scan-once")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(
        api.json("/api/v1/scans").await["total"],
        1,
        "a replay starts no second scan"
    );

    let id = first["id"].as_str().unwrap();
    let scan = api.ended(id).await;
    assert_eq!(scan["status"], "failed", "{scan}");
    assert!(
        scan["error"]
            .as_str()
            .unwrap()
            .contains("GetCallerIdentity"),
        "{scan}"
    );
    let usage = api.usage("SecurityScans").await;
    assert_eq!(usage["used"], 0, "refunded: {usage}");
    assert_eq!(usage["remaining"], 1, "{usage}");

    // The refunded unit buys the next scan; past the limit the answer is 402 and no scan exists.
    let second = api.scan(body.clone()).await;
    assert_eq!(api.ended(&second).await["status"], "failed");
    // That one failed too and was refunded; use the unit up with a scan that is charged.
    let mut charge = env.clone();
    charge.remove("AWS_ENDPOINT_URL_STS");
    drop(server);
    let server = Process::serve(&charge).await;
    let api = Api::of(&server);
    let third = api.scan(body.clone()).await;
    assert_eq!(api.ended(&third).await["status"], "succeeded");
    // The charge announced the trial used up, as every billable action does.
    let events = api
        .json("/api/v1/notifications?types=usage.threshold")
        .await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| { e["data"]["dimension"] == "SecurityScans" && e["data"]["percent"] == 100 }),
        "{events}"
    );
    let refused = api.post("/api/v1/scans").json(&body).send().await.unwrap();
    let problem = assert_problem(refused, 402, "trial_limit_reached").await;
    assert_eq!(problem["dimension"], "SecurityScans");
    assert_eq!(api.json("/api/v1/scans").await["total"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn findings_filter_export_map_to_frameworks_and_diff_between_scans() {
    let moto = Moto::start().await;
    let db = create_migrated_database().await;
    let env = aws_env(&db, &moto.endpoint());
    let server = Process::serve(&env).await;
    let api = Api::of(&server);
    let body =
        json!({"regions": ["us-east-1", "eu-west-1"], "checks": ["config-recorder-enabled"]});

    let before = api.scan(body.clone()).await;
    let scan = api.ended(&before).await;
    assert_eq!(scan["status"], "succeeded", "{scan}");
    assert_eq!(
        scan["counts"]["fail"], 2,
        "no recorder in either region: {scan}"
    );
    let findings = api.findings(&before, "").await;
    assert_eq!(findings.len(), 2);
    for f in &findings {
        assert_eq!(f["check"], "config-recorder-enabled");
        assert_eq!(f["status"], "fail");
        assert_eq!(f["service"], "config");
        assert!(f["title"].as_str().unwrap().len() > 10);
        assert!(
            f["reason"]
                .as_str()
                .unwrap()
                .contains("no configuration recorder"),
            "{f}"
        );
        assert!(["low", "medium", "high", "critical"].contains(&f["severity"].as_str().unwrap()));
    }
    assert_eq!(api.findings(&before, "&region=eu-west-1").await.len(), 1);
    assert_eq!(api.findings(&before, "&status=pass").await.len(), 0);
    assert_eq!(api.findings(&before, "&framework=cis-aws").await.len(), 2);

    // Record in us-east-1 and scan again.
    let status = std::process::Command::new("python3")
        .args(["-c", "import boto3\nc = boto3.client('config', region_name='us-east-1')\n\
c.put_configuration_recorder(ConfigurationRecorder={'name': 'default', 'roleARN': 'arn:aws:iam::123456789012:role/config', 'recordingGroup': {'allSupported': True}})\n\
c.put_delivery_channel(DeliveryChannel={'name': 'default', 's3BucketName': 'config-bucket'})\n\
c.start_configuration_recorder(ConfigurationRecorderName='default')"])
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .status()
        .unwrap();
    assert!(status.success());
    let after = api.scan(body).await;
    assert_eq!(api.ended(&after).await["counts"]["pass"], 1);

    let diff = api
        .json(&format!("/api/v1/scans/{after}/diff?against={before}"))
        .await;
    assert_eq!(diff["new"].as_array().unwrap().len(), 0, "{diff}");
    assert_eq!(diff["resolved"].as_array().unwrap().len(), 1, "{diff}");
    assert_eq!(diff["resolved"][0]["status"], "pass");
    assert_eq!(diff["resolved"][0]["previous_status"], "fail");
    assert_eq!(diff["unchanged"].as_array().unwrap().len(), 1, "{diff}");
    assert_eq!(diff["unchanged"][0]["region"], "eu-west-1");

    // Compliance: the CIS control AWS Config evidences fails before and, with one region still
    // unrecorded, still fails after; its findings name the region.
    let compliance = api
        .json(&format!(
            "/api/v1/scans/{after}/compliance?framework=cis-aws"
        ))
        .await;
    let controls = compliance["controls"].as_array().unwrap();
    let config_control = controls
        .iter()
        .find(|c| {
            c["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["check"] == "config-recorder-enabled")
        })
        .expect("a CIS control maps to config-recorder-enabled");
    assert_eq!(config_control["status"], "fail", "{config_control}");
    assert_eq!(config_control["findings"][0]["region"], "eu-west-1");
    let summary = &compliance["summary"];
    let total: i64 = ["pass", "fail", "manual", "not_covered"]
        .iter()
        .map(|s| summary[*s].as_i64().unwrap())
        .sum();
    assert_eq!(total as usize, controls.len());
    assert!(summary["manual"].as_i64().unwrap() > 0, "{summary}");
    let control_id = config_control["id"].as_str().unwrap();
    assert_eq!(
        api.findings(&after, &format!("&control={control_id}"))
            .await
            .len(),
        2
    );

    // Exports.
    let csv = api
        .get(&format!("/api/v1/scans/{before}/export?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("check,title,service,region,resource"),
        "{csv}"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    let ocsf = api
        .json(&format!("/api/v1/scans/{before}/export?format=ocsf"))
        .await;
    assert_eq!(ocsf.as_array().unwrap().len(), 2);
    assert_eq!(ocsf[0]["class_uid"], 2004);
    assert_eq!(ocsf[0]["status_code"], "FAIL");
    assert_eq!(ocsf[0]["metadata"]["event_code"], "config-recorder-enabled");
    assert_eq!(ocsf[0]["cloud"]["account"]["uid"], "123456789012");
    let asff = api
        .json(&format!("/api/v1/scans/{before}/export?format=asff"))
        .await;
    assert_eq!(asff["Findings"].as_array().unwrap().len(), 2);
    assert_eq!(asff["Findings"][0]["Compliance"]["Status"], "FAILED");
    assert_eq!(asff["Findings"][0]["SchemaVersion"], "2018-10-08");
    let json_export = api
        .json(&format!(
            "/api/v1/scans/{after}/export?format=json&status=pass"
        ))
        .await;
    assert_eq!(json_export["findings"].as_array().unwrap().len(), 1);
    assert_eq!(json_export["scan"]["id"], after.as_str());

    // Events: started and finished for each scan, through the same feed WebSockets replay.
    let events = api
        .json("/api/v1/notifications?types=scan.*&limit=1000")
        .await;
    let kinds: Vec<(String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["data"]["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for id in [&before, &after] {
        for kind in ["scan.started", "scan.finished"] {
            assert!(
                kinds.contains(&(kind.to_string(), id.to_string())),
                "{kind} for {id} in {kinds:?}"
            );
        }
    }
    let list = api.json("/api/v1/scans?limit=1").await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["id"], after.as_str(), "newest first");
    assert!(list["next"].as_str().unwrap().contains("offset=1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_requests_that_cannot_run_get_an_error_that_says_what_to_fix() {
    let app = spawn_app().await;
    let key = app.admin_key.clone();
    for (body, code) in [
        (json!({"account": "mine"}), "invalid_account"),
        (
            json!({"account": {"role_arn": "arn:aws:iam::12:role/x"}}),
            "invalid_role_arn",
        ),
        // Fewer parts than an ARN has once made the server drop the connection.
        (json!({"account": {"role_arn": ""}}), "invalid_role_arn"),
        (
            json!({"account": {"role_arn": "arn:aws:iam"}}),
            "invalid_role_arn",
        ),
        (
            json!({"account": {"role_arn": "arn:aws:iam::123456789012:role/x", "external_id": "a"}}),
            "invalid_external_id",
        ),
        (json!({"regions": []}), "invalid_regions"),
        (json!({"regions": "all"}), "invalid_regions"),
        (json!({"regions": ["moon-base-1"]}), "invalid_region"),
        (json!({"services": ["nope"]}), "unknown_service"),
        (json!({"checks": ["no-such-check"]}), "unknown_check"),
        (
            json!({"checks": ["workspaces-root-volume-encrypted"]}),
            "check_not_automated",
        ),
        (
            json!({"frameworks": ["no-such-framework"]}),
            "unknown_framework",
        ),
        (json!({"regionz": ["us-east-1"]}), "invalid_scan_request"),
    ] {
        let response = app
            .post_as("/api/v1/scans", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 422, code).await;
        if code == "unknown_service" {
            assert!(
                problem["allowed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "config")
            );
        }
    }
    let not_json = app
        .post_as("/api/v1/scans", &key)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, 400, "malformed_json").await;
    let no_scan = uuid::Uuid::new_v4();
    for (path, status, code) in [
        (
            "/api/v1/scans/not-a-uuid".to_string(),
            400,
            "invalid_scan_id",
        ),
        (format!("/api/v1/scans/{no_scan}"), 404, "not_found"),
        (
            format!("/api/v1/scans/{no_scan}/findings"),
            404,
            "not_found",
        ),
        (
            "/api/v1/scans?status=done".to_string(),
            400,
            "invalid_filter",
        ),
        (
            format!("/api/v1/scans/{no_scan}/compliance"),
            400,
            "invalid_query",
        ),
        (
            format!("/api/v1/scans/{no_scan}/export?format=xml"),
            400,
            "invalid_filter",
        ),
        (
            format!("/api/v1/scans/{no_scan}/diff?against=x"),
            400,
            "invalid_scan_id",
        ),
    ] {
        let response = app.get_as(&path, &key).send().await.unwrap();
        assert_problem(response, status, code).await;
    }
    // Nothing was accepted, so nothing was charged.
    let scans = app.admin_json("/api/v1/scans").await;
    assert_eq!(scans["total"], 0);
    let checks = app
        .admin_json("/api/v1/kb/checks/config-recorder-enabled")
        .await;
    assert_eq!(checks["automated"], true);
    let manual = app
        .admin_json("/api/v1/kb/checks/workspaces-root-volume-encrypted")
        .await;
    assert_eq!(manual["automated"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_schedule_starts_one_scan_per_period_however_many_replicas_run() {
    let moto = Moto::start().await;
    let hole = BlackHole::start().await;
    let db = create_migrated_database().await;
    let mut env = aws_env(&db, &moto.endpoint());
    // Keep the scheduled scan running (its EC2 calls hang) so the test sees it whole.
    env.insert("AWS_ENDPOINT_URL_EC2".into(), hole.endpoint());
    env.insert("SCAN_SCHEDULE".into(), "1h".into());
    let first = Process::serve(&env).await;
    let api = Api::of(&first);
    let scheduled = || async {
        let list = api.json("/api/v1/scans").await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["trigger"] == "schedule")
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            !scheduled().await.is_empty()
        })
        .await,
        "no scheduled scan started"
    );
    // The second replica's schedule ticks as it starts: the scan of the first is not due again.
    let second = Process::serve(&env).await;
    let ids = scheduled().await;
    assert_eq!(
        ids.len(),
        1,
        "one scheduled scan for both replicas: {ids:?}"
    );
    let scan = api.json(&format!("/api/v1/scans/{}", ids[0])).await;
    assert_eq!(scan["account"]["type"], "self");
    assert_eq!(scan["regions_requested"], "enabled");
    let cancel = api
        .post(&format!("/api/v1/scans/{}/cancel", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    drop(second);
}
