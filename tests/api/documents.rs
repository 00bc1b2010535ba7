//! Architecture-document analysis through the real server: uploads as a browser or an SDK sends
//! them (multipart), the background analysis, findings, reports, billing, storage in
//! PostgreSQL and in S3 (moto), and the refusals of bad uploads.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::fake_llm::{Api, FakeLlm, Reply};
use crate::helpers::{
    BOOTSTRAP_KEY, Moto, Process, TestApp, assert_problem, base_env, create_migrated_database,
    database_url, eventually, spawn_app, spawn_app_with,
};

const TEMPLATE: &str = r#"AWSTemplateFormatVersion: "2010-09-09"
Description: Patient records store
Parameters:
  Env:
    Type: String
    Default: prod
Resources:
  RecordsBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "records-${Env}"
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        IgnorePublicAcls: true
        BlockPublicPolicy: false
        RestrictPublicBuckets: false
  WebSecurityGroup:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: web
      SecurityGroupIngress:
        - IpProtocol: tcp
          FromPort: 22
          ToPort: 22
          CidrIp: 0.0.0.0/0
  DataVolume:
    Type: AWS::EC2::Volume
    Properties:
      AvailabilityZone: us-east-1a
      Size: 100
      Encrypted: true
"#;

const DESIGN: &str = "# Telehealth platform design

## Data

The platform stores patient health records (PHI) for clinics in the United States.
Records live in Amazon S3 and in an Amazon RDS PostgreSQL database.

## Security

All data at rest is encrypted with AWS KMS customer managed keys.
Backups are not taken for the reporting database.
";

fn form(name: &str, bytes: &[u8]) -> Form {
    Form::new().part(
        "file",
        Part::bytes(bytes.to_vec()).file_name(name.to_string()),
    )
}

async fn upload(app: &TestApp, form: Form) -> reqwest::Response {
    app.post_as("/api/v1/documents", &app.admin_key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let response = app.get_as(path, key).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// Waits for the analysis to end and returns the document.
async fn finished(app: &TestApp, id: &str) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    let done = eventually(Duration::from_secs(30), || {
        let request = app.get_as(&format!("/api/v1/documents/{id}"), &app.admin_key);
        let last = &last;
        async move {
            let document: Value = request.send().await.unwrap().json().await.unwrap();
            let ended = matches!(document["status"].as_str(), Some("analyzed" | "failed"));
            *last.borrow_mut() = document;
            ended
        }
    })
    .await;
    let last = last.into_inner();
    assert!(done, "the analysis ended: {last}");
    last
}

async fn findings(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let page = get(
        app,
        &app.admin_key,
        &format!("/api/v1/documents/{id}/findings?limit=1000{query}"),
    )
    .await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_template_is_analysed_into_findings_mapped_to_controls_and_billed_once() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/documents", &app.admin_key)
        .header("Idempotency-Key", "upload-1")
        .multipart(form("records.yaml", TEMPLATE.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id_location = response.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(id_location, format!("/api/v1/documents/{id}"));
    assert_eq!(accepted["kind"], "cloudformation", "recognised by content");
    assert_eq!(accepted["name"], "records.yaml");
    assert_eq!(accepted["size_bytes"], TEMPLATE.len());
    assert!(matches!(
        accepted["status"].as_str(),
        Some("received" | "analyzing" | "analyzed")
    ));

    // A retry with the same key is the same document, not a second analysis or charge.
    let replay = app
        .post_as("/api/v1/documents", &app.admin_key)
        .header("Idempotency-Key", "upload-1")
        .multipart(form("records.yaml", TEMPLATE.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], id.as_str());

    let document = finished(&app, &id).await;
    assert_eq!(document["status"], "analyzed", "{document}");
    assert_eq!(document["progress"], 100);
    assert_eq!(document["facts"]["resources"], 3, "{document}");
    assert_eq!(app.used("DocumentAnalysis").await, 1);

    let all = findings(&app, &id, "").await;
    let find = |check: &str, resource: &str| {
        all.iter()
            .find(|f| f["check"] == check && f["resource"] == resource)
            .unwrap_or_else(|| panic!("{check} on {resource} in {all:#?}"))
            .clone()
    };
    let ssh = find("vpc-sg-no-ingress-ssh-from-internet", "WebSecurityGroup");
    assert_eq!(ssh["status"], "fail");
    assert_eq!(ssh["source"], "template");
    assert_eq!(ssh["line"], 17, "the line of the logical id");
    assert_eq!(ssh["resource_type"], "AWS::EC2::SecurityGroup");
    assert_eq!(ssh["file"], "records.yaml");
    assert!(ssh["title"].is_string() && ssh["severity"].is_string());
    let public = find("s3-bucket-level-public-access-blocked", "RecordsBucket");
    assert_eq!(public["status"], "fail");
    let volume = find("ebs-volume-encrypted", "DataVolume");
    assert_eq!(volume["status"], "pass");
    // Failing findings come first.
    assert_ne!(all[0]["status"], "pass");
    // The document's counts are its findings by status, every status present (0 when none).
    for status in [
        "pass",
        "fail",
        "unknown",
        "addressed",
        "contradicted",
        "silent",
    ] {
        let n = all.iter().filter(|f| f["status"] == status).count();
        assert_eq!(document["counts"][status], n, "{status}: {document}");
    }
    assert!(document["counts"]["fail"].as_i64().unwrap() >= 2);

    // Every control a finding decides is a real KB control.
    let controls: Vec<String> = all
        .iter()
        .flat_map(|f| f["controls"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(!controls.is_empty());
    let mut checked = std::collections::BTreeSet::new();
    for control in controls
        .iter()
        .filter(|c| checked.insert(c.to_string()))
        .take(40)
    {
        let response = app
            .get_as(&format!("/api/v1/kb/controls/{control}"), &app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{control} resolves");
    }

    // Filters.
    let failing = findings(&app, &id, "&status=fail").await;
    assert!(failing.iter().all(|f| f["status"] == "fail"));
    assert!(failing.len() >= 2);
    let pci = findings(&app, &id, "&framework=pci-dss").await;
    assert!(!pci.is_empty());
    assert!(pci.iter().all(|f| {
        f["controls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("pci-dss"))
    }));
    let by_check = findings(&app, &id, "&check=ebs-volume-encrypted").await;
    assert_eq!(by_check.len(), 1);
    let one_control = ssh["controls"][0].as_str().unwrap().to_string();
    let by_control = findings(&app, &id, &format!("&control={}", urlencode(&one_control))).await;
    assert!(
        by_control
            .iter()
            .any(|f| f["resource"] == "WebSecurityGroup")
    );
    let bad = app
        .get_as(
            &format!("/api/v1/documents/{id}/findings?status=broken"),
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400, "invalid_filter").await;
    let bad = app
        .get_as(
            &format!("/api/v1/documents/{id}/findings?framework=nist"),
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400, "invalid_filter").await;

    // The report, as JSON and as Markdown.
    let report = get(
        &app,
        &app.admin_key,
        &format!("/api/v1/documents/{id}/report"),
    )
    .await;
    let frameworks: Vec<&str> = report["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["framework"].as_str().unwrap())
        .collect();
    assert!(
        frameworks.contains(&"pci-dss") && frameworks.contains(&"hipaa-sr"),
        "{frameworks:?}"
    );
    let cis = report["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["framework"] == "cis-aws")
        .unwrap();
    assert!(
        cis["counts"]["contradicted"].as_i64().unwrap() >= 1,
        "{cis}"
    );
    let first = &cis["controls"][0];
    assert_eq!(first["verdict"], "contradicted");
    assert!(first["title"].as_str().unwrap().len() > 3);
    let markdown = app
        .get_as(&format!("/api/v1/documents/{id}/report"), &app.admin_key)
        .header("Accept", "text/markdown")
        .send()
        .await
        .unwrap();
    assert_eq!(markdown.status(), 200);
    assert!(
        markdown.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let text = markdown.text().await.unwrap();
    assert!(
        text.starts_with("# Security review: records.yaml"),
        "{text}"
    );
    assert!(text.contains("`WebSecurityGroup` (line 17)"), "{text}");
    let refused = app
        .get_as(&format!("/api/v1/documents/{id}/report"), &app.admin_key)
        .header("Accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_problem(refused, 406, "not_acceptable").await;

    // The notifications feed announced it.
    let events = get(
        &app,
        &app.admin_key,
        "/api/v1/notifications?types=document.*&limit=100",
    )
    .await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["id"] == id.as_str())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"document.received"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"document.analyzed"), "{kinds:?}");
    assert!(kinds.contains(&"document.progress"), "{kinds:?}");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_design_document_is_read_for_what_it_states_and_what_it_contradicts() {
    let app = spawn_app().await;
    let response = upload(&app, form("telehealth.md", DESIGN.as_bytes())).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["kind"], "markdown");
    let id = accepted["id"].as_str().unwrap().to_string();
    let document = finished(&app, &id).await;
    assert_eq!(document["status"], "analyzed", "{document}");
    let facts = &document["facts"];
    let has =
        |field: &str, value: &str| facts[field].as_array().unwrap().iter().any(|v| v == value);
    assert!(has("data_kinds", "health_records"), "{facts}");
    assert!(has("frameworks", "hipaa-sr"), "{facts}");
    assert!(has("services", "s3") && has("services", "rds"), "{facts}");
    assert!(has("measures", "encryption_at_rest"), "{facts}");

    let all = findings(&app, &id, "&framework=hipaa-sr").await;
    let addressed = all
        .iter()
        .find(|f| f["status"] == "addressed" && f["measure"] == "encryption_at_rest")
        .unwrap_or_else(|| panic!("encryption at rest addressed in {all:#?}"));
    assert!(
        addressed["quote"]
            .as_str()
            .unwrap()
            .contains("encrypted with AWS KMS"),
        "{addressed}"
    );
    assert_eq!(addressed["heading"], "Security");
    assert_eq!(addressed["source"], "prose");
    let contradicted = all
        .iter()
        .find(|f| f["status"] == "contradicted")
        .unwrap_or_else(|| panic!("the missing backups contradict a control: {all:#?}"));
    assert!(
        contradicted["quote"]
            .as_str()
            .unwrap()
            .contains("Backups are not taken"),
        "{contradicted}"
    );
    for f in &all {
        let control = f["control"].as_str().unwrap();
        let response = app
            .get_as(&format!("/api/v1/kb/controls/{control}"), &app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{control} resolves");
    }
    let markdown = app
        .get_as(&format!("/api/v1/documents/{id}/report"), &app.admin_key)
        .header("Accept", "text/markdown")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(markdown.contains("Backups are not taken"), "{markdown}");
}

#[tokio::test]
async fn bad_uploads_get_problems_that_say_what_to_fix_and_cost_nothing() {
    let app = spawn_app_with(|env| {
        env.insert("DOCUMENT_MAX_BYTES".into(), "4096".into());
    })
    .await;
    // A type we do not read, recognised by content whatever its name says.
    let png = [
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0xff, 0x00,
    ];
    let body = assert_problem(
        upload(&app, form("design.md", &png)).await,
        415,
        "unsupported_document_type",
    )
    .await;
    assert!(body["accepted"].as_array().unwrap().len() >= 5, "{body}");
    // Not multipart at all.
    let json = app
        .post_as("/api/v1/documents", &app.admin_key)
        .json(&serde_json::json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(json, 415, "multipart_required").await;
    // No file part, an empty file, an unknown field, an unknown framework.
    assert_problem(
        upload(&app, Form::new().text("name", "x")).await,
        422,
        "file_required",
    )
    .await;
    assert_problem(upload(&app, form("empty.md", b"")).await, 422, "empty_file").await;
    assert_problem(
        upload(&app, form("a.md", b"# Design\n").text("owner", "me")).await,
        422,
        "unknown_field",
    )
    .await;
    let body = assert_problem(
        upload(
            &app,
            form("a.md", b"# Design\n").text("frameworks", "hipaa, nist"),
        )
        .await,
        422,
        "unknown_framework",
    )
    .await;
    assert!(
        body["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "hipaa-sr")
    );
    // Too large: the file, and a body far over the limit.
    let big = vec![b'a'; 5000];
    let body = assert_problem(
        upload(&app, form("big.txt", &big)).await,
        413,
        "document_too_large",
    )
    .await;
    assert_eq!(body["max_bytes"], 4096);
    let huge = vec![b'a'; 200 * 1024];
    let response = upload(&app, form("huge.txt", &huge)).await;
    assert_eq!(response.status(), 413);
    // A bad id, a missing document.
    let response = app
        .get_as("/api/v1/documents/not-a-uuid", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_document_id").await;
    let response = app
        .get_as(
            "/api/v1/documents/00000000-0000-4000-8000-000000000000",
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "document_not_found").await;
    assert_eq!(
        app.used("DocumentAnalysis").await,
        0,
        "nothing refused was charged"
    );
}

#[tokio::test]
async fn a_document_that_cannot_be_read_fails_clearly_and_is_refunded() {
    let app = spawn_app().await;
    // A PDF header and then nothing a PDF reader can use.
    let broken = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R\nstream\nx\x9c\xff\xff";
    let response = upload(&app, form("broken.pdf", broken)).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["kind"], "pdf");
    let id = accepted["id"].as_str().unwrap().to_string();
    let document = finished(&app, &id).await;
    assert_eq!(document["status"], "failed", "{document}");
    assert_eq!(
        document["error"]["code"], "malformed_document",
        "{document}"
    );
    assert!(document["error"]["message"].as_str().unwrap().len() > 5);
    assert_eq!(app.used("DocumentAnalysis").await, 0, "refunded");
    let report = app
        .get_as(&format!("/api/v1/documents/{id}/report"), &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(report, 409, "document_not_analyzed").await;
    let events = get(
        &app,
        &app.admin_key,
        "/api/v1/notifications?types=document.failed",
    )
    .await;
    let failed = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["id"] == id.as_str())
        .unwrap_or_else(|| panic!("document.failed in {events}"))
        .clone();
    assert_eq!(failed["data"]["refunded"], true);
    assert_eq!(failed["data"]["code"], "malformed_document");
}

#[tokio::test]
async fn documents_belong_to_their_key_and_deleting_removes_everything() {
    let app = spawn_app().await;
    let (_, alice) = app.create_key("alice", "user").await;
    let (_, bob) = app.create_key("bob", "user").await;
    let response = app
        .post_as("/api/v1/documents", &alice)
        .multipart(form("design.md", DESIGN.as_bytes()).text("name", "Telehealth v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["name"], "Telehealth v2");
    let id = accepted["id"].as_str().unwrap().to_string();
    finished(&app, &id).await;

    let mine = get(&app, &alice, "/api/v1/documents").await;
    assert_eq!(mine["total"], 1);
    let theirs = get(&app, &bob, "/api/v1/documents").await;
    assert_eq!(theirs["total"], 0);
    for path in [
        format!("/api/v1/documents/{id}"),
        format!("/api/v1/documents/{id}/findings"),
        format!("/api/v1/documents/{id}/report"),
    ] {
        let response = app.get_as(&path, &bob).send().await.unwrap();
        assert_problem(response, 404, "document_not_found").await;
    }
    let response = app
        .delete_as(&format!("/api/v1/documents/{id}"), &bob)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "document_not_found").await;
    // An admin sees every document.
    let all = get(
        &app,
        &app.admin_key,
        "/api/v1/documents?status=analyzed&kind=markdown",
    )
    .await;
    assert_eq!(all["total"], 1);
    let bad = app
        .get_as("/api/v1/documents?kind=exe", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400, "invalid_filter").await;

    let response = app
        .delete_as(&format!("/api/v1/documents/{id}"), &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .get_as(&format!("/api/v1/documents/{id}"), &alice)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "document_not_found").await;
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM document_findings) + (SELECT count(*) FROM document_contents)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "findings and file removed with the document");
}

#[tokio::test]
async fn files_can_live_in_an_encrypted_s3_bucket() {
    let moto = Moto::start().await;
    let endpoint = moto.endpoint();
    cloud_optimizer::ensure_crypto_provider();
    let client = reqwest::Client::new();
    let created = client
        .put(format!("{endpoint}/customer-documents"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "bucket created in moto");
    // The AWS SDK reads its endpoint override from the process environment: the real binary.
    let db = create_migrated_database().await;
    let mut env = base_env(&db);
    for (k, v) in [
        ("DOCUMENTS_BUCKET", "customer-documents"),
        ("AWS_ENDPOINT_URL_S3", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("METRICS_PORT", "0"),
    ] {
        env.insert(k.into(), v.into());
    }
    let server = Process::serve(&env).await;
    let base = format!("http://{}", server.addr());
    let response = client
        .post(format!("{base}/api/v1/documents"))
        .bearer_auth(BOOTSTRAP_KEY)
        .multipart(form("records.yaml", TEMPLATE.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    let document = std::cell::RefCell::new(Value::Null);
    let done = eventually(Duration::from_secs(30), || {
        let request = client
            .get(format!("{base}/api/v1/documents/{id}"))
            .bearer_auth(BOOTSTRAP_KEY);
        let document = &document;
        async move {
            let now: Value = request.send().await.unwrap().json().await.unwrap();
            let ended = now["status"] == "analyzed" || now["status"] == "failed";
            *document.borrow_mut() = now;
            ended
        }
    })
    .await;
    let document = document.into_inner();
    assert!(done && document["status"] == "analyzed", "{document}");
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM document_contents")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing in PostgreSQL");
    let s3 = s3_client(&endpoint);
    let object = s3
        .get_object()
        .bucket("customer-documents")
        .key(format!("documents/{id}"))
        .send()
        .await
        .expect("the file is in the bucket");
    assert_eq!(
        object.server_side_encryption().map(|e| e.as_str()),
        Some("AES256")
    );
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(bytes.as_ref(), TEMPLATE.as_bytes());

    let response = client
        .delete(format!("{base}/api/v1/documents/{id}"))
        .bearer_auth(BOOTSTRAP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let gone = s3
        .head_object()
        .bucket("customer-documents")
        .key(format!("documents/{id}"))
        .send()
        .await;
    assert!(
        gone.is_err_and(|e| e.raw_response().is_some_and(|r| r.status().as_u16() == 404)),
        "the object goes with the document"
    );
}

/// An S3 client of moto, signed with moto's test credentials.
fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .http_client(http)
            .build(),
    )
}

#[tokio::test]
async fn a_document_left_by_a_stopped_replica_is_analysed_by_another() {
    let app = spawn_app().await;
    // What a replica that died right after accepting an upload leaves behind: the document
    // `received`, its file stored, its lease run out. One transaction: the sweep must not take
    // the document before its file is there.
    let id = uuid::Uuid::new_v4();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO documents (id, api_key_id, name, kind, size_bytes, sha256, status, storage,
                               lease_owner, lease_expires_at, created_at)
         VALUES ($1, '00000000-0000-0000-0000-000000000000', 'left.md', 'markdown', $2, 'x',
                 'received', 'postgres', 'a-dead-replica', now() - interval '1 minute', now())",
    )
    .bind(id)
    .bind(DESIGN.len() as i64)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO document_contents (document_id, content) VALUES ($1, $2)")
        .bind(id)
        .bind(DESIGN.as_bytes())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let document = finished(&app, &id.to_string()).await;
    assert_eq!(document["status"], "analyzed", "{document}");
    let attempts: i16 = sqlx::query_scalar("SELECT attempts FROM documents WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn the_trial_limit_refuses_a_document_before_any_work() {
    let app = spawn_app_with(|env| {
        env.insert("TRIAL_MODE".into(), "true".into());
        env.insert("TRIAL_LIMIT_DOCUMENT_ANALYSIS".into(), "1".into());
    })
    .await;
    let first = upload(&app, form("design.md", DESIGN.as_bytes())).await;
    assert_eq!(first.status(), 202);
    let refused = upload(&app, form("design.md", DESIGN.as_bytes())).await;
    assert_problem(refused, 402, "trial_limit_reached").await;
    let listed = get(&app, &app.admin_key, "/api/v1/documents").await;
    assert_eq!(listed["total"], 1, "the refused upload left nothing behind");
    assert_eq!(app.used("DocumentAnalysis").await, 1);
}

#[tokio::test]
async fn retention_deletes_old_files_and_keeps_their_findings() {
    // Documents from before the server starts: the retention pass runs at start-up, then hourly.
    let db = create_migrated_database().await;
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let (old, recent) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (id, age) in [(old, "3 days"), (recent, "1 hour")] {
        sqlx::query(
            "INSERT INTO documents (id, api_key_id, name, kind, size_bytes, sha256, status, progress, storage,
                                   created_at, analyzed_at)
             VALUES ($1, '00000000-0000-0000-0000-000000000000', 'design.md', 'markdown', 5, 'x', 'analyzed',
                     100, 'postgres', now() - $2::interval, now() - $2::interval)",
        )
        .bind(id)
        .bind(age)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO document_contents (document_id, content) VALUES ($1, 'hello')")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO document_findings (document_id, n, source, control_id, framework, measure, status,
                                           severity, reason, controls)
             VALUES ($1, 1, 'prose', 'gdpr:32', 'gdpr', 'mfa', 'silent', 'high', 'seeded', '[\"gdpr:32\"]')",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    }
    let app = crate::helpers::spawn_on_database(db, |env| {
        env.insert("DOCUMENT_RETENTION_DAYS".into(), "2".into());
    })
    .await;
    let deleted = eventually(Duration::from_secs(20), || {
        let request = app.get_as(&format!("/api/v1/documents/{old}"), &app.admin_key);
        async move {
            let document: Value = request.send().await.unwrap().json().await.unwrap();
            document["file_deleted"] == true
        }
    })
    .await;
    assert!(deleted, "the old file was deleted");
    let contents: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT document_id FROM document_contents")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(contents, vec![recent], "only the recent file is left");
    let kept = findings(&app, &old.to_string(), "").await;
    assert_eq!(kept.len(), 1, "findings outlive the file");
    let recent_doc = get(&app, &app.admin_key, &format!("/api/v1/documents/{recent}")).await;
    assert_eq!(recent_doc["file_deleted"], false);
}

const CLAIMS_DESIGN: &str = "# Claims portal design

## Data

The portal stores patient health records (PHI) for insurers.
Records live in Amazon S3.

## Access

Every engineer passes a background check and a manager approval before receiving access to production data.
";

/// A server whose documents are enriched by the fake LLM as an OpenAI-compatible provider.
async fn llm_app(fake: &FakeLlm, extra: &[(&str, &str)]) -> TestApp {
    llm_app_for(fake, Api::OpenAi, extra).await
}

async fn llm_app_for(fake: &FakeLlm, api: Api, extra: &[(&str, &str)]) -> TestApp {
    let vars = fake.env(api);
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spawn_app_with(move |env| {
        env.extend(vars);
        env.extend(extra);
    })
    .await
}

async fn analysed(app: &TestApp, name: &str, bytes: &[u8]) -> (String, Value) {
    let response = upload(app, form(name, bytes)).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    let document = finished(app, &id).await;
    assert_eq!(document["status"], "analyzed", "{document}");
    (id, document)
}

#[tokio::test]
async fn the_llm_can_add_findings_only_with_real_controls_and_real_quotes() {
    let fake = FakeLlm::start().await;
    // Split across chunks and wrapped in prose, as models answer.
    fake.set_reply(Reply::text(&[
        "Here are the additional findings:\n```json\n[",
        r#"{"control": "hipaa-sr:164.308(a)(3)(ii)(B)", "status": "addressed",
            "quote": "Every engineer passes a background check and a manager approval before receiving access to production data.",
            "reason": "Workforce members are vetted before they get access to ePHI."},"#,
        r#"{"control": "hipaa-sr:164.999(z)", "status": "addressed",
            "quote": "Records live in Amazon S3.", "reason": "An invented control."},"#,
        r#"{"control": "hipaa-sr:164.312(c)(1)", "status": "contradicted",
            "quote": "Records are never checked for tampering.", "reason": "An invented quote."}"#,
        "]\n```",
    ]));
    let app = llm_app(&fake, &[]).await;
    let (id, document) = analysed(&app, "claims.md", CLAIMS_DESIGN.as_bytes()).await;

    let llm = &document["facts"]["llm"];
    assert_eq!(llm["provider"], "openai", "{llm}");
    assert_eq!(llm["model"], "fake-model", "{llm}");
    assert_eq!(llm["proposed"], 3, "{llm}");
    assert_eq!(llm["kept"], 1, "{llm}");
    assert_eq!(
        llm["dropped_unknown_ids"],
        serde_json::json!(["hipaa-sr:164.999(z)"]),
        "{llm}"
    );
    assert_eq!(llm["dropped_unquoted"], 1, "{llm}");
    assert!(llm["error"].is_null(), "{llm}");

    let all = findings(&app, &id, "").await;
    let proposed: Vec<&Value> = all
        .iter()
        .filter(|f| f["measure"] == "llm_enrichment")
        .collect();
    assert_eq!(proposed.len(), 1, "{all:#?}");
    let kept = proposed[0];
    assert_eq!(kept["control"], "hipaa-sr:164.308(a)(3)(ii)(B)", "{kept}");
    assert_eq!(kept["status"], "addressed");
    assert_eq!(kept["source"], "prose");
    assert_eq!(kept["heading"], "Access");
    assert!(
        kept["quote"]
            .as_str()
            .unwrap()
            .starts_with("Every engineer passes a background check"),
        "{kept}"
    );
    assert!(
        kept["reason"]
            .as_str()
            .unwrap()
            .starts_with("Proposed by the language model"),
        "{kept}"
    );
    assert!(
        all.iter().any(|f| f["measure"] != "llm_enrichment"),
        "the built-in findings stay: {all:#?}"
    );
    assert!(
        !all.iter().any(|f| f["control"] == "hipaa-sr:164.312(c)(1)"),
        "{all:#?}"
    );

    // One request, with the scope, the findings made and the document's sentences.
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let user = requests[0].user().unwrap();
    assert!(user.contains("Frameworks in scope: hipaa-sr"), "{user}");
    assert!(user.contains("## Access\nEvery engineer passes"), "{user}");
    assert!(requests[0].system().unwrap().contains("ONLY a JSON array"));
}

/// The same pass through Anthropic's Messages API (its named-event stream): the provider does
/// not change what is sent or what is kept.
#[tokio::test]
async fn enrichment_through_the_anthropic_api_keeps_only_what_holds() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::text(&[
        "[",
        r#"{"control": "hipaa-sr:164.308(a)(3)(ii)(B)", "status": "addressed",
            "quote": "Every engineer passes a background check and a manager approval before receiving access to production data.",
            "reason": "Workforce members are vetted."},"#,
        r#"{"control": "soc2:CC6.1", "status": "silent", "quote": null, "reason": "Already decided by the rules."}"#,
        "]",
    ]));
    let app = llm_app_for(&fake, Api::Anthropic, &[]).await;
    let (id, document) = analysed(&app, "claims.md", CLAIMS_DESIGN.as_bytes()).await;
    let llm = &document["facts"]["llm"];
    assert_eq!(llm["provider"], "anthropic", "{llm}");
    assert_eq!(
        (llm["proposed"].as_u64(), llm["kept"].as_u64()),
        (Some(2), Some(1)),
        "{llm}"
    );
    assert_eq!(llm["dropped_duplicates"], 1, "{llm}");
    let all = findings(&app, &id, "").await;
    let kept: Vec<&Value> = all
        .iter()
        .filter(|f| f["measure"] == "llm_enrichment")
        .collect();
    assert_eq!(kept.len(), 1, "{all:#?}");
    assert_eq!(kept[0]["control"], "hipaa-sr:164.308(a)(3)(ii)(B)");
    let request = fake.last_request();
    assert!(request.path.ends_with("/v1/messages"), "{}", request.path);
    assert!(request.system().unwrap().contains("ONLY a JSON array"));
    assert!(
        request
            .user()
            .unwrap()
            .contains("Frameworks in scope: hipaa-sr")
    );
}

#[tokio::test]
async fn an_llm_failure_leaves_the_built_in_findings_and_says_why() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::status(500, "the model is overloaded"));
    let app = llm_app(&fake, &[("LLM_TIMEOUT_SECONDS", "1")]).await;
    let (id, document) = analysed(&app, "claims.md", CLAIMS_DESIGN.as_bytes()).await;
    let llm = &document["facts"]["llm"];
    assert_eq!(llm["error"]["code"], "llm_upstream_error", "{llm}");
    assert!(
        llm["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the model is overloaded"),
        "{llm}"
    );
    assert_eq!(llm["kept"], 0, "{llm}");
    let all = findings(&app, &id, "").await;
    assert!(!all.is_empty());
    assert!(
        all.iter().all(|f| f["measure"] != "llm_enrichment"),
        "{all:#?}"
    );
    // Analysed, so charged: the model's failure is not the customer's.
    assert_eq!(app.used("DocumentAnalysis").await, 1);

    // A model that never answers costs the LLM timeout, not the document.
    fake.set_reply(Reply::stall());
    let (_, document) = analysed(&app, "claims-again.md", CLAIMS_DESIGN.as_bytes()).await;
    assert_eq!(
        document["facts"]["llm"]["error"]["code"], "llm_timeout",
        "{document}"
    );

    // Templates are decided by the static checks alone.
    let asked = fake.requests().len();
    let (_, document) = analysed(&app, "template.yaml", TEMPLATE.as_bytes()).await;
    assert!(document["facts"].get("llm").is_none(), "{document}");
    assert_eq!(fake.requests().len(), asked);
}
