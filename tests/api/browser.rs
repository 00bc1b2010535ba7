//! The web console in a real browser: Debian's Chromium, headless, driven by Playwright for
//! Python (`tests/browser/console.py`; scripts/test installs both). Each test serves the real
//! binary on a fresh database and runs one scenario against it; the scenario fails on any
//! browser console error and saves a screenshot of every page it visits under
//! `target/tmp/browser/<scenario>/`.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::helpers::*;

/// The server's environment: the tests' base, with AWS pointed at `moto` when given.
fn env(db: &str, moto: Option<&Moto>) -> HashMap<String, String> {
    let mut env = base_env(db);
    env.insert("METRICS_PORT".into(), "0".into());
    env.insert("LOG_FORMAT".into(), "json".into());
    // A browser loads several files and polls; the per-key budget is not what is tested here.
    env.insert("RATE_LIMIT_PER_MINUTE".into(), "100000".into());
    if let Some(moto) = moto {
        for (k, v) in [
            ("AWS_ENDPOINT_URL", moto.endpoint().as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            env.insert(k.into(), v.into());
        }
    }
    env
}

/// Creates a key through the API of `process` and returns it.
async fn create_key(process: &Process, name: &str, scope: &str) -> String {
    create_key_at(
        &format!("http://{}", process.addr()),
        BOOTSTRAP_KEY,
        name,
        scope,
    )
    .await
    .1
}

/// Runs one scenario of `tests/browser/console.py` against `process` signed in with `key`.
async fn scenario(process: &Process, name: &str, key: &str, extra: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(name);
    std::fs::create_dir_all(&artifacts).unwrap();
    let output = tokio::process::Command::new("python3")
        .arg(root.join("tests/browser/console.py"))
        .arg(name)
        .args(["--base-url", &format!("http://{}", process.addr())])
        .args(["--api-key", key])
        .arg("--artifacts")
        .arg(&artifacts)
        .args(extra)
        .current_dir(&root)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs (scripts/test installs Playwright and Chromium)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser scenario {name} failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server\n{}",
        output.status,
        artifacts.display(),
        process.output.lock().unwrap().join("\n"),
    );
}

#[tokio::test]
async fn every_console_page_renders_without_errors_on_a_desktop_and_a_phone() {
    let db = create_migrated_database().await;
    let process = Process::serve(&env(&db, None)).await;
    let key = create_key(&process, "console admin", "admin").await;
    scenario(&process, "pages", &key, &[]).await;
}

#[tokio::test]
async fn the_console_modules_render_hostile_markdown_safely_and_parse_any_event_stream() {
    let db = create_migrated_database().await;
    let process = Process::serve(&env(&db, None)).await;
    scenario(&process, "units", "unused", &[]).await;
}

#[tokio::test]
async fn a_question_asked_in_the_console_streams_an_answer_with_citations() {
    let db = create_migrated_database().await;
    let process = Process::serve(&env(&db, None)).await;
    let key = create_key(&process, "console user", "user").await;
    scenario(&process, "chat", &key, &[]).await;
}

#[tokio::test]
async fn an_answer_whose_connection_drops_resumes_where_it_stopped() {
    let db = create_migrated_database().await;
    let process = Process::serve(&env(&db, None)).await;
    let key = create_key(&process, "console user", "user").await;
    scenario(&process, "chat-resume", &key, &[]).await;
}

#[tokio::test]
async fn a_scan_started_in_the_console_shows_live_progress_to_the_end() {
    let moto = Moto::start().await;
    let db = create_migrated_database().await;
    let process = Process::serve(&env(&db, Some(&moto))).await;
    let key = create_key(&process, "console admin", "admin").await;
    let endpoint = moto.endpoint();
    scenario(&process, "scan", &key, &["--moto-endpoint", &endpoint]).await;
}

#[tokio::test]
async fn a_scan_cancelled_in_the_console_ends_cancelled_and_can_be_deleted() {
    // AWS never answers: the scan stays running until it is cancelled.
    let hole = BlackHole::start().await;
    let db = create_migrated_database().await;
    let mut env = env(&db, None);
    for (k, v) in [
        ("AWS_ENDPOINT_URL", hole.endpoint().as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        env.insert(k.into(), v.into());
    }
    let process = Process::serve(&env).await;
    let key = create_key(&process, "console admin", "admin").await;
    scenario(&process, "scan-cancel", &key, &[]).await;
    assert!(
        hole.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the scan never called AWS, so nothing proved it was cancelled mid-call"
    );
}

#[tokio::test]
async fn a_template_uploaded_in_the_console_gets_its_report() {
    let db = create_migrated_database().await;
    let process = Process::serve(&env(&db, None)).await;
    let key = create_key(&process, "console user", "user").await;
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/documents/cloudformation/analytics.yaml");
    assert!(fixture.exists(), "{}", fixture.display());
    scenario(
        &process,
        "document",
        &key,
        &["--fixture", fixture.to_str().unwrap()],
    )
    .await;
}

#[tokio::test]
async fn revoking_the_signed_in_key_signs_the_console_out() {
    let db = create_migrated_database().await;
    let process = Process::serve(&env(&db, None)).await;
    let key = create_key(&process, "revoke me", "admin").await;
    scenario(&process, "revoke", &key, &[]).await;
}
