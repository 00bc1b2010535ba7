//! Verifying and loading the KB: errors that name what to fix, one transaction, idempotence,
//! failure isolation, replicas, bundles and the `kb.updated` event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the shipped KB with one control retitled and a new kb_version, manifest rewritten.
fn changed_kb(kb_version: &str) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("compliance");
    copy_dir(Path::new(KB_DIR), &dir);
    edit_json(&dir.join("pci-dss/controls.json"), |items| {
        let item = items.iter_mut().find(|c| c["id"] == "8.4.2").unwrap();
        item["title"] = serde_json::json!("Retitled for the reload test");
    });
    cloud_optimizer::kb::model::write_manifest(&dir, Some(kb_version)).unwrap();
    (temp, dir)
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Vec<serde_json::Value>)) {
    let mut items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut items);
    std::fs::write(path, serde_json::to_string_pretty(&items).unwrap()).unwrap();
}

fn verify_cli(dir: &Path) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .args(["kb", "verify", dir.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout),
    )
}

#[test]
fn verify_accepts_the_shipped_kb() {
    let (code, out) = verify_cli(Path::new(KB_DIR));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"));
}

#[test]
fn verify_names_file_item_and_field_of_each_problem() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("kb");
    copy_dir(Path::new(KB_DIR), &dir);
    // Each problem below is one the loader must refuse.
    edit_json(&dir.join("soc2/controls.json"), |items| {
        let copy = items.iter().find(|c| c["id"] == "CC6.1").unwrap().clone();
        items.push(copy); // duplicate id
        let cc62 = items.iter_mut().find(|c| c["id"] == "CC6.2").unwrap();
        cc62["parent"] = serde_json::json!("CC99"); // dangling parent
        cc62.as_object_mut().unwrap().remove("title"); // missing field
    });
    edit_json(&dir.join("crosswalk/relationships.json"), |items| {
        items[0]["type"] = serde_json::json!("depends_on"); // disallowed type
        items[1]["to"] = serde_json::json!("control:pci-dss@4.0.1:99.99"); // dangling reference
    });
    cloud_optimizer::kb::model::write_manifest(&dir, None).unwrap();
    // After the manifest: a changed file (checksum) and a wrong count.
    let hipaa = dir.join("hipaa/framework.json");
    let text = std::fs::read_to_string(&hipaa)
        .unwrap()
        .replace("HIPAA", "HIPAA ");
    std::fs::write(&hipaa, text).unwrap();
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let gdpr = manifest["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["path"] == "gdpr/controls.json")
        .unwrap();
    gdpr["items"] = serde_json::json!(98);
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let (code, out) = verify_cli(&dir);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "soc2/controls.json [CC6.1] .id: duplicate id",
        "soc2/controls.json [#",
        ".title: missing field `title`",
        "crosswalk/relationships.json [#0",
        ".type: \"depends_on\" is not an allowed type",
        ".to: no such control",
        "hipaa/framework.json .sha256: checksum does not match",
        "gdpr/controls.json .items: 110 items, manifest says 98",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let dangling_parent = out
        .lines()
        .any(|l| l.contains("soc2/controls.json") && l.contains(".parent: no control \"CC99\""));
    // CC6.2 lost its title, so it fails to parse and its parent is not checked; the duplicate and
    // the others still are. Both outcomes name the item.
    assert!(dangling_parent || out.contains("CC6.2"), "{out}");
}

#[tokio::test]
async fn an_unchanged_kb_is_not_loaded_again() {
    let app = spawn_app().await;
    let before: (i64, i64) = sqlx::query_as(
        "SELECT id, (SELECT last_value FROM kb_versions_id_seq) FROM kb_versions WHERE active",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let replica = spawn_replica(&app).await;
    let after: (i64, i64) = sqlx::query_as(
        "SELECT id, (SELECT last_value FROM kb_versions_id_seq) FROM kb_versions WHERE active",
    )
    .fetch_one(&replica.pool)
    .await
    .unwrap();
    assert_eq!(before, after, "no new version row was even attempted");
    let health: serde_json::Value = replica.health().await;
    assert_eq!(health["components"]["ib"], "ok");
}

#[tokio::test]
async fn a_changed_kb_loads_at_start_in_one_version_and_announces_kb_updated() {
    let db = create_migrated_database().await;
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("co_events").await.unwrap();
    let (_temp, dir) = changed_kb("2099.1.0");
    let dir_text = dir.display().to_string();
    let app = spawn_on_database(db, |env| {
        env.insert("KB_PATH".into(), dir_text);
    })
    .await;

    let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("event in time")
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
    assert_eq!(event["type"], "kb.updated");
    assert_eq!(event["data"]["kb_version"], "2099.1.0");

    let control: serde_json::Value = app.admin_json("/api/v1/kb/controls/pci-dss:8.4.2").await;
    assert_eq!(control["title"], "Retitled for the reload test");
    let versions: Vec<(String, bool)> =
        sqlx::query_as("SELECT kb_version, active FROM kb_versions")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        versions,
        vec![("2099.1.0".to_string(), true)],
        "the previous version is gone once the new one commits"
    );
}

#[tokio::test]
async fn a_failed_load_leaves_the_previous_version_serving_and_says_so() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("kb");
    copy_dir(Path::new(KB_DIR), &dir);
    std::fs::write(dir.join("gdpr/controls.json"), "[{ not json").unwrap();
    // A new manifest checksum makes the server try the load (which must then fail verification).
    let manifest = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap().replacen(
        "\"kb_version\": \"",
        "\"kb_version\": \"broken-",
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    let dir_text = dir.display().to_string();
    let app = spawn_app_with(|env| {
        env.insert("KB_PATH".into(), dir_text);
    })
    .await;
    let health: serde_json::Value = app.health().await;
    let ib = health["components"]["ib"].as_str().unwrap();
    assert!(
        ib.starts_with("failed:") && ib.contains("previous version serving"),
        "{ib}"
    );
    assert_eq!(health["status"], "degraded");
    let frameworks: serde_json::Value = app.admin_json("/api/v1/kb/frameworks").await;
    assert_eq!(
        frameworks["items"].as_array().unwrap().len(),
        8,
        "the previous KB still answers"
    );
}

#[tokio::test]
async fn replicas_starting_together_load_a_new_kb_once() {
    let db = create_migrated_database().await;
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let before: i64 = sqlx::query_scalar("SELECT id FROM kb_versions WHERE active")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (_temp, dir) = changed_kb("2099.2.0");
    let dir_text = dir.display().to_string();
    let (a, b) = tokio::join!(
        spawn_on_database(db.clone(), |env| {
            env.insert("KB_PATH".into(), dir_text.clone());
        }),
        spawn_on_database(db.clone(), |env| {
            env.insert("KB_PATH".into(), dir_text.clone());
        }),
    );
    // Ids come from one sequence: a second load would have taken before + 2 and replaced the first.
    let after: Vec<(i64, String)> = sqlx::query_as("SELECT id, kb_version FROM kb_versions")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        after,
        vec![(before + 1, "2099.2.0".to_string())],
        "exactly one replica wrote a version"
    );
    for app in [&a, &b] {
        let health: serde_json::Value = app.health().await;
        assert_eq!(health["components"]["ib"], "ok");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kb_load_accepts_a_tar_gz_bundle_url() {
    let (temp, dir) = changed_kb("2099.3.0");
    let bundle = temp.path().join("kb.tar.gz");
    let status = std::process::Command::new("tar")
        .args([
            "-czf",
            bundle.to_str().unwrap(),
            "-C",
            temp.path().to_str().unwrap(),
            dir.file_name().unwrap().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&bundle).unwrap();
    let server = axum::Router::new().route(
        "/kb.tar.gz",
        axum::routing::get(move || {
            let bytes = bytes.clone();
            async move { bytes }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { axum::serve(listener, server).await });

    let db = create_migrated_database().await;
    let env = HashMap::from([("DATABASE_URL".to_string(), database_url(&db))]);
    let run = |args: &[&str]| run_binary(&env, args);
    let url = format!("http://{addr}/kb.tar.gz");
    let output = run(&["kb", "load", &url]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("loaded kb_version 2099.3.0"));
    let again = run(&["kb", "load", &url]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));
    let missing = run(&["kb", "load", &format!("http://{addr}/missing.tar.gz")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    let stats = run(&["kb", "stats"]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(
        text.contains("kb_version 2099.3.0")
            && text.contains("pci-dss@4.0.1")
            && text.contains("maps_to"),
        "{text}"
    );
    serving.abort();
}

/// Runs only where a Neo4j server is reachable (compose's `graph` profile): no Neo4j server can
/// run on the CI machines. Ignored, so it shows as skipped; `scripts/test` runs it when
/// `NEO4J_URI` is set.
#[tokio::test]
#[ignore = "needs NEO4J_URI (compose profile graph)"]
async fn neo4j_mirror_answers_like_postgres_when_configured() {
    let uri = std::env::var("NEO4J_URI").expect("NEO4J_URI is set when ignored tests run");
    let password = std::env::var("NEO4J_PASSWORD").unwrap_or_default();
    let pg = spawn_app().await;
    let neo = spawn_app_with(|env| {
        env.insert("NEO4J_URI".into(), uri);
        env.insert("NEO4J_PASSWORD".into(), password);
    })
    .await;
    let health: serde_json::Value = neo.health().await;
    assert_eq!(health["components"]["neo4j"], "ok");
    for id in ["pci-dss:8.4.2", "hipaa-sr:164.312(a)(2)(iv)", "cis-aws:1.5"] {
        let a: serde_json::Value = pg.admin_json(&format!("/api/v1/kb/controls/{id}")).await;
        let b: serde_json::Value = neo.admin_json(&format!("/api/v1/kb/controls/{id}")).await;
        assert_eq!(b["graph_source"], "neo4j");
        assert_eq!(a["checks"], b["checks"], "{id}");
        let ids = |v: &serde_json::Value| {
            v["related"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(ids(&a), ids(&b), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_answers_and_the_chat_follow_a_new_version_loaded_by_another_process() {
    let app = spawn_app().await;
    let path = "/api/v1/kb/controls/pci-dss:8.4.2";
    let before: serde_json::Value = app.admin_json(path).await;
    // The chat's in-memory copy of the KB is read here, and must be replaced too.
    let cited_title = || async {
        let answer = ask_json(&app, &app.admin_key, "What does PCI DSS 8.4.2 require?").await;
        answer["citations"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .find(|c| c["id"] == "pci-dss:8.4.2")
            .unwrap_or_else(|| panic!("8.4.2 is cited: {answer}"))["title"]
            .clone()
    };
    assert_eq!(cited_title().await, before["title"]);
    let search_path = "/api/v1/kb/search?q=Retitled%20reload";
    let _ = app
        .get_as(search_path, &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_ne!(before["title"], "Retitled for the reload test");

    let (_temp, dir) = changed_kb("2099.4.0");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .args(["kb", "load", dir.to_str().unwrap()])
        .env_clear()
        .env("DATABASE_URL", database_url(&app.db_name))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let updated = eventually(Duration::from_secs(5), || async {
        let now: serde_json::Value = app.admin_json(path).await;
        now["title"] == "Retitled for the reload test"
    })
    .await;
    assert!(
        updated,
        "the cached control answer must follow the new version"
    );
    let followed = eventually(Duration::from_secs(5), || async {
        cited_title().await == "Retitled for the reload test"
    })
    .await;
    assert!(followed, "the chat must answer from the new version");
    let hits: serde_json::Value = app.admin_json(search_path).await;
    assert_eq!(
        hits["items"][0]["id"], "control:pci-dss@4.0.1:8.4.2",
        "search answers follow too: {hits}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kb_load_accepts_an_s3_bundle() {
    let moto = Moto::start().await;
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let (temp, dir) = changed_kb("2099.5.0");
    let bundle = temp.path().join("kb.tar.gz");
    let status = std::process::Command::new("tar")
        .args([
            "-czf",
            bundle.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    cloud_optimizer::ensure_crypto_provider();
    let credentials =
        aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "test");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(credentials)
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build(),
    );
    s3.create_bucket()
        .bucket("kb-bundles")
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("kb-bundles")
        .key("releases/kb.tar.gz")
        .body(std::fs::read(&bundle).unwrap().into())
        .send()
        .await
        .unwrap();

    let db = create_migrated_database().await;
    let env: HashMap<String, String> = [
        ("DATABASE_URL", database_url(&db)),
        ("AWS_ENDPOINT_URL_S3", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let output = run_binary(&env, &["kb", "load", "s3://kb-bundles/releases/kb.tar.gz"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("loaded kb_version 2099.5.0"));
    let missing = run_binary(&env, &["kb", "load", "s3://kb-bundles/nope.tar.gz"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NoSuchKey"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[tokio::test]
async fn an_unreachable_neo4j_degrades_health_and_graph_queries_use_postgres() {
    let app = spawn_app_with(|env| {
        env.insert(
            "NEO4J_URI".into(),
            format!("bolt://127.0.0.1:{}", free_port()),
        );
        env.insert("NEO4J_PASSWORD".into(), "not-used".into());
    })
    .await;
    let health: serde_json::Value = app.health().await;
    assert_eq!(health["components"]["neo4j"], "down");
    assert_eq!(health["status"], "degraded");
    let control: serde_json::Value = app.admin_json("/api/v1/kb/controls/pci-dss:8.4.2").await;
    assert_eq!(control["graph_source"], "postgres");
    assert!(!control["checks"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn data_edited_without_a_new_manifest_is_refused_naming_the_files() {
    let app = spawn_app().await;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("compliance");
    copy_dir(Path::new(KB_DIR), &dir);
    // The manifest still matches the active version; the data does not.
    edit_json(&dir.join("pci-dss/controls.json"), |items| {
        let item = items.iter_mut().find(|c| c["id"] == "8.4.2").unwrap();
        item["title"] = serde_json::json!("Edited by hand");
    });
    std::fs::write(dir.join("gdpr/extra.json"), "[]").unwrap();

    let env = base_env(&app.db_name);
    let output = run_binary(&env, &["kb", "load", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pci-dss/controls.json (changed)"),
        "{stderr}"
    );
    assert!(stderr.contains("gdpr/extra.json (not listed)"), "{stderr}");
    assert!(
        stderr.contains("kb manifest"),
        "says how to fix it: {stderr}"
    );

    // A server pointed at it keeps serving the loaded version and says why it did not load.
    let replica = spawn_on_database(app.db_name.clone(), |vars| {
        vars.insert("KB_PATH".into(), dir.to_str().unwrap().into());
    })
    .await;
    let health = replica.health().await;
    let ib = health["components"]["ib"].as_str().unwrap();
    assert!(ib.starts_with("failed: "), "{ib}");
    assert!(ib.contains("pci-dss/controls.json (changed)"), "{ib}");
    assert!(ib.contains("previous version serving"), "{ib}");
    let control = replica
        .admin_json("/api/v1/kb/controls/pci-dss:8.4.2")
        .await;
    assert_ne!(control["title"], "Edited by hand");
}

#[tokio::test]
async fn a_version_written_by_an_older_loader_is_loaded_again_with_alias_keys() {
    let app = spawn_app().await;
    let before: i64 = sqlx::query_scalar("SELECT id FROM kb_versions WHERE active")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // As an image from before aliases and edge strengths would have left it.
    sqlx::query("UPDATE kb_versions SET loader_version = 1 WHERE active")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE kb_controls SET alias_keys = '{}'")
        .execute(&app.pool)
        .await
        .unwrap();
    let replica = spawn_replica(&app).await;
    let after: i64 = sqlx::query_scalar("SELECT id FROM kb_versions WHERE active")
        .fetch_one(&replica.pool)
        .await
        .unwrap();
    assert_ne!(
        before, after,
        "the same data was loaded again by the current loader"
    );
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(alias_keys) FROM kb_controls c JOIN kb_versions v ON v.id = c.version_id AND v.active
         WHERE c.native_id = '164.314(a)(1)'",
    )
    .fetch_all(&replica.pool)
    .await
    .unwrap();
    assert_eq!(keys, ["164.314(a)(1)", "164.314(a)(1)(i)", "164.314(a)"]);
}

#[test]
fn verify_rejects_a_control_check_edge_without_strength_or_rationale() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("compliance");
    copy_dir(Path::new(KB_DIR), &dir);
    edit_json(&dir.join("pci-dss/relationships.json"), |edges| {
        edges[0].as_object_mut().unwrap().remove("strength");
        edges[1]["strength"] = serde_json::json!("strong");
        edges[2].as_object_mut().unwrap().remove("rationale");
    });
    cloud_optimizer::kb::model::write_manifest(&dir, None).unwrap();
    let (code, out) = verify_cli(&dir);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("pci-dss/relationships.json"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("#0 ") && l.contains("strength") && l.contains("missing")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("#1 ") && l.contains("\"strong\"")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("#2 ") && l.contains("rationale")),
        "{out}"
    );
}

#[tokio::test]
async fn supporting_mappings_are_shown_but_never_count_as_evidence() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("compliance");
    copy_dir(Path::new(KB_DIR), &dir);
    // 8.4.2 reaches IAM only through its checks, and every one of them becomes context only.
    edit_json(&dir.join("pci-dss/controls.json"), |items| {
        let item = items.iter_mut().find(|c| c["id"] == "8.4.2").unwrap();
        item["services"] = serde_json::json!([]);
    });
    edit_json(&dir.join("pci-dss/relationships.json"), |items| {
        for edge in items
            .iter_mut()
            .filter(|e| e["from"] == "control:pci-dss@4.0.1:8.4.2")
        {
            edge["strength"] = serde_json::json!("supporting");
        }
    });
    cloud_optimizer::kb::model::write_manifest(&dir, Some("2099.2.0")).unwrap();
    let dir_text = dir.display().to_string();
    let app = spawn_app_with(|env| {
        env.insert("KB_PATH".into(), dir_text);
    })
    .await;

    let control: serde_json::Value = app.admin_json("/api/v1/kb/controls/pci-dss:8.4.2").await;
    let checks = control["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    assert!(
        checks.iter().all(|c| c["strength"] == "supporting"),
        "{checks:?}"
    );
    assert!(
        control["related"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["basis"] != "shared-checks"),
        "context edges derive no related controls: {}",
        control["related"]
    );
    let iam: serde_json::Value = app
        .admin_json("/api/v1/kb/frameworks/pci-dss/controls?service=iam&limit=500")
        .await;
    let ids: Vec<&str> = iam["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["native_id"].as_str().unwrap())
        .collect();
    assert!(!ids.is_empty());
    assert!(!ids.contains(&"8.4.2"), "{ids:?}");
    let q = "/api/v1/kb/search?q=MFA%20for%20all%20access%20into%20the%20CDE&framework=pci-dss&limit=50";
    let hit = |hits: &serde_json::Value| {
        hits["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == "control:pci-dss@4.0.1:8.4.2")
    };
    assert!(hit(&app.admin_json(q).await));
    assert!(!hit(&app.admin_json(&format!("{q}&service=iam")).await));
}

fn kb_cli(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// `kb manifest` and `kb verify` agree: a manifest is written only for data `kb verify` then
/// accepts; otherwise `kb manifest` reports the problems `kb verify` reports, in the same words,
/// and leaves the manifest as it was.
#[test]
fn kb_manifest_writes_only_what_kb_verify_accepts() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("compliance");
    copy_dir(Path::new(KB_DIR), &dir);
    let path = dir.to_str().unwrap();

    // A valid edit: the manifest follows it and verification passes.
    edit_json(&dir.join("pci-dss/controls.json"), |items| {
        let item = items.iter_mut().find(|c| c["id"] == "8.4.2").unwrap();
        item["title"] = serde_json::json!("Retitled for the manifest test");
    });
    let (code, _, err) = kb_cli(&["kb", "verify", path]);
    assert_eq!(code, 1, "the edit is not in the manifest yet: {err}");
    let (code, out, err) = kb_cli(&["kb", "manifest", path, "--kb-version", "2099.9.0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("wrote "), "{out}");
    let (code, out, err) = kb_cli(&["kb", "verify", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kb_version 2099.9.0 OK"), "{out}");

    // Invalid edits: refused by both, problem for problem, and nothing written.
    let manifest_before = std::fs::read(dir.join("manifest.json")).unwrap();
    edit_json(&dir.join("soc2/controls.json"), |items| {
        let copy = items.iter().find(|c| c["id"] == "CC6.1").unwrap().clone();
        items.push(copy);
    });
    std::fs::write(dir.join("common/notes.json"), "[]").unwrap();
    let (code, out, manifest_err) = kb_cli(&["kb", "manifest", path]);
    assert_eq!(code, 1, "{manifest_err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        manifest_before,
        "a refused manifest is not written"
    );
    let problems: Vec<&str> = manifest_err
        .lines()
        .filter(|l| !l.starts_with("error: "))
        .collect();
    assert!(
        problems
            .iter()
            .any(|l| l.contains("soc2/controls.json [CC6.1] .id: duplicate id")),
        "{manifest_err}"
    );
    assert!(
        problems
            .iter()
            .any(|l| l.starts_with("common/notes.json: not a recognised KB file name")),
        "{manifest_err}"
    );
    assert!(
        manifest_err
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("error: ") && l.contains("manifest.json left unchanged")),
        "{manifest_err}"
    );
    let (code, _, verify_err) = kb_cli(&["kb", "verify", path]);
    assert_eq!(code, 1, "{verify_err}");
    for problem in &problems {
        assert!(
            verify_err.lines().any(|l| l == *problem),
            "kb verify does not say {problem:?}:\n{verify_err}"
        );
    }

    // A path that is no directory is named as such, not as a failed write.
    let missing = temp.path().join("no-such-kb");
    let (code, _, err) = kb_cli(&["kb", "manifest", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("is not a directory"),
        "{err}"
    );
}
