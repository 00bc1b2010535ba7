//! One API shape: the OpenAPI document is valid OpenAPI 3.1, every list answers the same
//! envelope, every `/api/v1` route documents its errors and rate-limit headers, and the server
//! answers what the document says (ids, timestamps, bounds, `Location`, `/`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

async fn document(app: &TestApp) -> Value {
    app.get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference} resolves")),
            )
        }
        None => value,
    }
}

/// A Python with `openapi-spec-validator`: the machine's, or a venv under `target/` that this
/// installs it into from PyPI the first time.
fn openapi_validator_python() -> PathBuf {
    let has_validator = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import openapi_spec_validator"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let system = PathBuf::from("python3");
    if has_validator(&system) {
        return system;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/openapi-validator-venv");
    let python = venv.join("bin/python");
    if !has_validator(&python) {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is installed");
        assert!(status.success(), "python3 -m venv");
        let status = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "openapi-spec-validator>=0.7",
            ])
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install openapi-spec-validator");
    }
    python
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let output = Command::new(openapi_validator_python())
        .args([
            "-m",
            "openapi_spec_validator",
            "--schema",
            "3.1",
            "--validation-errors",
            "all",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // What a generated client and /docs show first.
    assert!(
        doc["info"]["license"]["name"].is_string(),
        "{}",
        doc["info"]
    );
    let description = doc["info"]["description"].as_str().unwrap();
    // It names every capability a client can call, and only those.
    for built in [
        "`/chat`",
        "`/scans`",
        "`/documents`",
        "`/kb`",
        "`/notifications`",
    ] {
        assert!(
            description.contains(built),
            "the description says what exists: {description}"
        );
    }
    assert!(!description.contains("planned"), "{description}");
    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    let cookie = &doc["components"]["securitySchemes"]["console_session"];
    assert_eq!(cookie["type"], "apiKey");
    assert_eq!(cookie["in"], "cookie");
    assert_eq!(cookie["name"], "co_session");
}

#[tokio::test]
async fn every_list_endpoint_answers_the_one_envelope() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut lists = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(ok) = operation["responses"].get("200") else {
                continue;
            };
            let schema = resolve(
                &doc,
                &resolve(&doc, ok)["content"]["application/json"]["schema"],
            );
            assert_ne!(
                schema["type"], "array",
                "{method} {path} answers a bare array: lists answer the envelope"
            );
            if schema["properties"].get("items").is_none() {
                continue;
            }
            lists.insert(path.clone());
            let properties: BTreeSet<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                properties,
                BTreeSet::from(["items", "total", "limit", "offset", "next"]),
                "{path}"
            );
            let required: BTreeSet<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(
                required,
                BTreeSet::from(["items", "total", "limit", "offset"]),
                "{path}"
            );
            assert_eq!(schema["properties"]["items"]["type"], "array", "{path}");
            assert_eq!(
                schema["properties"]["next"]["type"],
                serde_json::json!(["string", "null"]),
                "{path}"
            );
            // Every list is paged the same way, with bounds the server enforces.
            let parameters = operation["parameters"].as_array().unwrap();
            for name in ["limit", "offset"] {
                let parameter = parameters
                    .iter()
                    .find(|p| p["name"] == name && p["in"] == "query")
                    .unwrap_or_else(|| panic!("{path} takes {name} in the query"));
                assert!(parameter["schema"]["minimum"].is_number(), "{path} {name}");
                assert!(parameter["schema"]["maximum"].is_number(), "{path} {name}");
                assert_ne!(parameter["required"], true, "{path} {name}");
            }
        }
    }
    assert_eq!(
        lists,
        BTreeSet::from(
            [
                "/api/v1/keys",
                "/api/v1/chat/conversations",
                "/api/v1/documents",
                "/api/v1/documents/{id}/findings",
                "/api/v1/kb/frameworks",
                "/api/v1/kb/frameworks/{id}/controls",
                "/api/v1/kb/checks",
                "/api/v1/kb/services",
                "/api/v1/kb/search",
                "/api/v1/notifications",
                "/api/v1/scans",
                "/api/v1/scans/{id}/findings",
            ]
            .map(String::from)
        ),
        "the walk found every list"
    );
    // Two ended scans, one with two findings, as a scan of an account leaves them (scans
    // themselves are tested against moto in scans.rs).
    let scan = uuid::Uuid::new_v4();
    for id in [scan, uuid::Uuid::new_v4()] {
        sqlx::query(
            "INSERT INTO scans (id, account_key, account_id, regions_requested, regions, status, trigger, created_at, started_at, finished_at)
             VALUES ($1, $1::text, '123456789012', '\"enabled\"', '{us-east-1}', 'succeeded', 'api', now(), now(), now())",
        )
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    for (n, check) in ["config-recorder-enabled", "iam-root-mfa-enabled"]
        .iter()
        .enumerate()
    {
        sqlx::query(
            "INSERT INTO scan_findings (scan_id, n, check_id, service, region, resource_arn, status, severity, reason, evidence, first_seen)
             VALUES ($1, $2, $3, 'iam', 'us-east-1', 'arn:aws:iam::123456789012:root', 'fail', 'high', 'seeded', '{}', now())",
        )
        .bind(scan)
        .bind(n as i32)
        .bind(check)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    // Two analysed documents, one with two findings (analysis itself is tested in documents.rs).
    let document = uuid::Uuid::new_v4();
    for id in [document, uuid::Uuid::new_v4()] {
        sqlx::query(
            "INSERT INTO documents (id, api_key_id, name, kind, size_bytes, sha256, status, progress, storage, created_at, analyzed_at)
             VALUES ($1, '00000000-0000-0000-0000-000000000000', 'design.md', 'markdown', 10, 'x', 'analyzed', 100, 'postgres', now(), now())",
        )
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    for n in 1..=2 {
        sqlx::query(
            "INSERT INTO document_findings (document_id, n, source, control_id, framework, measure, status, severity, reason, controls)
             VALUES ($1, $2, 'prose', 'gdpr:32', 'gdpr', CASE WHEN $2 = 1 THEN 'mfa' ELSE 'backups_recovery' END, 'silent', 'high', 'seeded', '[\"gdpr:32\"]')",
        )
        .bind(document)
        .bind(n)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    // And the server answers it: the first page of one item, then its `next`, to the end.
    for _ in 0..2 {
        let response = app
            .post_as("/api/v1/chat/conversations", &app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    app.create_key("first", "user").await;
    app.create_key("second", "user").await;
    for n in 0..2 {
        let response = app
            .post_as("/api/v1/admin/notifications/test", &app.admin_key)
            .json(&serde_json::json!({ "n": n }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    for path in lists {
        let first = match path.as_str() {
            "/api/v1/kb/frameworks/{id}/controls" => {
                "/api/v1/kb/frameworks/gdpr/controls?limit=1".to_string()
            }
            "/api/v1/kb/search" => "/api/v1/kb/search?q=root%20mfa&limit=1".to_string(),
            "/api/v1/scans/{id}/findings" => format!("/api/v1/scans/{scan}/findings?limit=1"),
            "/api/v1/documents/{id}/findings" => {
                format!("/api/v1/documents/{document}/findings?limit=1")
            }
            other => format!("{other}?limit=1"),
        };
        let page = app.admin_json(&first).await;
        let total = page["total"].as_i64().unwrap();
        assert!(total >= 2, "{first}: {page}");
        assert_eq!(page["limit"], 1, "{first}");
        assert_eq!(page["offset"], 0, "{first}");
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{first}");
        let next = page["next"].as_str().unwrap_or_else(|| panic!("{page}"));
        let second = app.admin_json(next).await;
        assert_eq!(second["offset"], 1, "{next}");
        assert_ne!(second["items"][0], page["items"][0], "{next}");
        assert_eq!(second["total"], total, "{next}");
        let last = app
            .admin_json(&format!(
                "{}{}offset={}",
                first,
                if first.contains('?') { "&" } else { "?" },
                total - 1
            ))
            .await;
        assert_eq!(last["items"].as_array().unwrap().len(), 1, "{first}");
        assert!(last["next"].is_null(), "the last page has no next: {last}");
    }
}

#[tokio::test]
async fn every_api_route_documents_its_errors_and_rate_limit_headers() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                let response = resolve(&doc, response);
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status}"
                );
                let content = response["content"].as_object();
                if status.starts_with('4') || status.starts_with('5') || status == "default" {
                    if path.starts_with("/health") && status == "503" {
                        continue; // the probes' own JSON, which load balancers read
                    }
                    let problem = &content.unwrap_or_else(|| panic!("{method} {path} {status}"))["application/problem+json"]
                        ["schema"]["$ref"];
                    assert_eq!(
                        problem, "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                    assert!(
                        !content.unwrap().contains_key("application/json"),
                        "{method} {path} {status}"
                    );
                }
            }
            if !path.starts_with("/api/v1/") {
                continue;
            }
            checked += 1;
            for status in ["400", "401", "403", "404", "429", "default"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
            let limited = resolve(&doc, &responses["429"]);
            for header in [
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ] {
                assert!(
                    limited["headers"][header].is_object(),
                    "{method} {path} 429 {header}"
                );
            }
            for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('2')) {
                for header in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
                    assert!(
                        response["headers"][header].is_object(),
                        "{method} {path} {status} {header}"
                    );
                }
            }
            // The console's sign-in is the one route that takes no credential but its body.
            let security = if (method.as_str(), path.as_str()) == ("post", "/api/v1/session") {
                serde_json::json!([{}])
            } else {
                serde_json::json!([{"api_key": []}, {"console_session": []}])
            };
            assert_eq!(operation["security"], security, "{method} {path}");
        }
    }
    assert!(checked >= 15, "{checked} operations");
    // Enums are referenced, so a generated client has one type for them.
    let action = &doc["components"]["schemas"]["BillableActionRequest"];
    assert_eq!(
        action["properties"]["dimension"]["$ref"],
        "#/components/schemas/Dimension"
    );
    let usage = &doc["components"]["schemas"]["DimensionUsage"];
    assert_eq!(
        usage["properties"]["dimension"]["$ref"],
        "#/components/schemas/Dimension"
    );
}

#[tokio::test]
async fn bounds_in_the_document_are_the_bounds_the_server_enforces() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let checks = &doc["paths"]["/api/v1/kb/checks"]["get"]["parameters"];
    let offset = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "offset")
        .unwrap();
    let max = offset["schema"]["maximum"].as_i64().unwrap();
    let at_max = app
        .admin_json(&format!("/api/v1/kb/checks?offset={max}"))
        .await;
    assert_eq!(at_max["items"], serde_json::json!([]));
    for (path, code) in [
        (
            "/api/v1/kb/checks?offset=9223372036854775807",
            "invalid_offset",
        ),
        (
            &*format!("/api/v1/kb/checks?offset={}", max + 1),
            "invalid_offset",
        ),
        ("/api/v1/kb/checks?offset=-1", "invalid_offset"),
        ("/api/v1/kb/checks?limit=0", "invalid_limit"),
        ("/api/v1/kb/checks?limit=501", "invalid_limit"),
        ("/api/v1/keys?limit=501", "invalid_limit"),
        ("/api/v1/kb/services?offset=1000001", "invalid_offset"),
        ("/api/v1/kb/frameworks?limit=0", "invalid_limit"),
        ("/api/v1/kb/search?q=mfa&limit=51", "invalid_limit"),
        ("/api/v1/kb/search?q=mfa&offset=1000001", "invalid_offset"),
        ("/api/v1/kb/search", "missing_query"),
        ("/api/v1/kb/search?q=%20%20", "missing_query"),
    ] {
        let response = app.get_as(path, &app.admin_key).send().await.unwrap();
        let body = assert_problem(response, 400, code).await;
        if code != "missing_query" {
            assert!(body["maximum"].is_number(), "{path}: {body}");
        }
    }
    let search = &doc["paths"]["/api/v1/kb/search"]["get"]["parameters"];
    let q = search
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "q")
        .unwrap();
    assert_eq!(q["in"], "query");
    assert_eq!(q["required"], true);
    assert_eq!(q["schema"]["type"], "string", "a query value is never null");
}

#[tokio::test]
async fn ids_and_timestamps_have_one_shape() {
    let app = spawn_app().await;
    let millis = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").unwrap();
    let (id, key) = app.create_key("shape", "user").await;
    let me = app.get_as("/api/v1/keys/self", &key).send().await.unwrap();
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["id"], id.as_str());
    assert!(me.get("key_id").is_none(), "{me}");

    // Revoked, so revoked_at is set too.
    let revoked = app
        .client
        .delete(app.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let listed = app.admin_json("/api/v1/keys").await;
    let listed = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    for field in ["created_at", "revoked_at"] {
        let at = listed[field].as_str().unwrap();
        assert!(millis.is_match(at), "{field}: {at}");
    }
    let license = app.admin_json("/api/v1/license").await;
    for field in ["trial_started_at", "trial_ends_at"] {
        let at = license[field].as_str().unwrap();
        assert!(millis.is_match(at), "{field}: {at}");
    }
    let action = app
        .post_as("/api/v1/billable-actions", &app.admin_key)
        .json(&serde_json::json!({"dimension": "ChatQuestions", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(action.status(), 201);
    let action: Value = action.json().await.unwrap();
    let at = action["created_at"].as_str().unwrap();
    assert!(millis.is_match(at), "created_at: {at}");
}

#[tokio::test]
async fn a_created_key_is_at_its_location() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": "located", "scope": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/keys/{}", created["id"].as_str().unwrap())
    );
    let found = app.admin_json(&location).await;
    assert_eq!(found["id"], created["id"]);
    assert_eq!(found["name"], "located");
    assert!(found.get("key").is_none(), "the key itself is shown once");
    let missing = app
        .get_as(
            "/api/v1/keys/00000000-0000-0000-0000-000000000001",
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_problem(missing, 404, "not_found").await;
}

#[tokio::test]
async fn search_pages_and_marks_matches_as_documented() {
    let app = spawn_app().await;
    let all = app
        .admin_json("/api/v1/kb/search?q=encryption%20at%20rest&limit=6")
        .await;
    let first = app
        .admin_json("/api/v1/kb/search?q=encryption%20at%20rest&limit=3")
        .await;
    let second = app
        .admin_json(first["next"].as_str().expect("a next page"))
        .await;
    assert_eq!(first["total"], all["total"]);
    let paged: Vec<&Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .collect();
    let whole: Vec<&Value> = all["items"].as_array().unwrap().iter().collect();
    assert_eq!(paged, whole, "two pages of 3 are the page of 6");
    for hit in whole.iter().filter(|h| h["matched"] == "text") {
        let snippet = hit["snippet"].as_str().unwrap();
        assert!(
            snippet.contains("**") && snippet.matches("**").count() % 2 == 0,
            "matched words between ** pairs: {snippet}"
        );
    }
}

#[test]
fn the_shipped_knowledge_base_never_contains_the_snippet_marker() {
    // Search snippets mark matched words with `**`; the README promises the text has none.
    fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "json")
                && std::fs::read_to_string(&path).unwrap().contains("**")
            {
                found.push(path.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(std::path::Path::new(KB_DIR), &mut found);
    assert!(found.is_empty(), "`**` in {found:?}");
}

/// Bodies PostgreSQL builds (KB lists, control and check detail, search) are written in the
/// spacing every other body has: no `"key" : value`, no line breaks between array items.
#[tokio::test]
async fn bodies_built_in_postgresql_are_as_compact_as_the_rest() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/kb/frameworks/hipaa-sr/controls?limit=5",
        "/api/v1/kb/checks?limit=5",
        "/api/v1/kb/controls/pci-dss:8.4.2",
        "/api/v1/kb/checks/s3-bucket-level-public-access-blocked",
        "/api/v1/kb/search?q=%22encryption%20at%20rest%22",
        "/api/v1/kb/search?q=encryption",
    ] {
        let response = app.get_as(path, &app.admin_key).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(!text.contains("\" : "), "{path}: {text}");
        assert!(!text.contains('\n'), "{path}: {text}");
        // The same characters serde writes (serde orders keys differently, so compare lengths).
        assert_eq!(
            text.len(),
            serde_json::to_string(&parsed).unwrap().len(),
            "{path}"
        );
    }
}
