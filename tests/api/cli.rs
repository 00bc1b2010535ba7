//! The command line as an operator scripts it: the real binary as a process, its exit codes,
//! its stdout (tables or `--json`) and its stderr (one line per failure, root cause kept).

use std::collections::HashMap;

use crate::helpers::*;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the binary and asserts its exit code, printing its output when it differs.
fn run_expecting(env: &HashMap<String, String>, args: &[&str], code: i32) -> std::process::Output {
    let output = run_binary(env, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// The environment of a CLI run against `db`, without the bootstrap key.
fn cli_env(db: &str) -> HashMap<String, String> {
    let mut env = base_env(db);
    env.remove("BOOTSTRAP_ADMIN_API_KEY");
    env
}

/// A database URL on which nothing listens.
fn unreachable_env() -> HashMap<String, String> {
    HashMap::from([
        (
            "DATABASE_URL".to_string(),
            format!("postgres://postgres@127.0.0.1:{}/x", free_port()),
        ),
        (
            "DATABASE_CONNECT_TIMEOUT_SECONDS".to_string(),
            "1".to_string(),
        ),
    ])
}

#[test]
fn usage_mistakes_exit_2_with_one_error_and_no_database() {
    // No DATABASE_URL points anywhere: a usage error must be found before any connection.
    let env = unreachable_env();
    for (args, says) in [
        (
            &["keys", "create", "--name", "", "--scope", "user"][..],
            "name must not be empty",
        ),
        (
            &["keys", "create", "--name", "x", "--scope", "root"],
            "root",
        ),
        (&["usage", "report", "--hours", "99999999999"], "1..=87840"),
        (&["usage", "report", "--hours", "0"], "--hours"),
        (&["keys", "revoke", "nonsense"], "key id"),
        (&["healthcheck", "--timeout", "0"], "--timeout"),
        (&["no-such-command"], "no-such-command"),
        (&["usage", "flush"], "MARKETPLACE_ENABLED is false"),
    ] {
        let output = run_expecting(&env, args, 2);
        let text = stderr(&output);
        assert!(text.contains(says), "{args:?}: {text}");
        assert_eq!(text.matches(says).count(), 1, "{args:?}: said once: {text}");
        assert!(text.starts_with("error: "), "{args:?}: {text}");
    }
}

#[test]
fn configuration_that_cannot_work_is_refused_by_config_check_and_serve() {
    for (var, value) in [
        ("LOG_LEVEL", "verbose"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("KB_PATH", "/no/such/knowledge-base"),
    ] {
        let mut env = unreachable_env();
        env.insert("PORT".into(), free_port().to_string());
        env.insert("METRICS_PORT".into(), "0".into());
        env.insert(var.into(), value.into());
        for command in [&["config", "check"][..], &["serve"]] {
            let output = run_expecting(&env, command, 2);
            let text = stderr(&output);
            assert_eq!(text.trim().lines().count(), 1, "{var}: one line: {text}");
            assert!(text.contains(var) && text.contains(value), "{text}");
            assert!(
                text.starts_with("error: invalid configuration: "),
                "{var}: the one format of every failure: {text}"
            );
            assert!(stdout(&output).is_empty(), "{}", stdout(&output));
        }
    }
    // Marketplace on without the key that verifies its answers: the license could never be valid.
    let mut env = unreachable_env();
    env.insert("MARKETPLACE_ENABLED".into(), "true".into());
    env.insert("MARKETPLACE_PRODUCT_CODE".into(), "abc123".into());
    let output = run_expecting(&env, &["config", "check"], 2);
    assert!(
        stderr(&output).contains("MARKETPLACE_PUBLIC_KEY"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn kb_verify_reads_no_variable_but_kb_path() {
    let env = HashMap::from([
        ("PORT".to_string(), "abc".to_string()),
        ("DATABASE_URL".to_string(), "mysql://nope".to_string()),
        ("KB_PATH".to_string(), KB_DIR.to_string()),
    ]);
    let output = run_expecting(&env, &["kb", "verify"], 0);
    assert!(stdout(&output).contains("OK"), "{}", stdout(&output));
    run_expecting(&env, &["kb", "verify", KB_DIR], 0);
    // The rest of the configuration is still checked by commands that use it.
    run_expecting(&env, &["config", "check"], 2);
}

#[test]
fn an_unreachable_database_is_reported_once_with_its_root_cause_and_exit_1() {
    let env = unreachable_env();
    for command in [&["keys", "list"][..], &["kb", "stats"], &["migrate"]] {
        let output = run_expecting(&env, command, 1);
        let text = stderr(&output);
        // `migrate` logs its retries first (on stderr too); the failure is the last line.
        assert!(
            text.trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("error: cannot connect to PostgreSQL")),
            "{command:?}: {text}"
        );
        assert!(
            text.to_lowercase().contains("connection refused"),
            "{command:?}: the root cause, not only a pool timeout: {text}"
        );
        assert!(!text.contains("timed out"), "{command:?}: {text}");
        assert_eq!(
            text.matches("cannot connect to PostgreSQL").count(),
            1,
            "{command:?}: printed once (no log line repeating it): {text}\n{}",
            stdout(&output)
        );
        assert!(
            !stdout(&output).contains("cannot connect"),
            "{command:?}: not repeated in the log: {}",
            stdout(&output)
        );
    }
}

#[test]
fn healthcheck_names_the_root_cause() {
    let env = HashMap::from([("PORT".to_string(), free_port().to_string())]);
    let output = run_expecting(&env, &["healthcheck"], 1);
    let text = stderr(&output);
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
}

#[test]
fn serve_help_points_to_the_configuration_reference_and_help_lists_exit_codes() {
    // That every argument has help is a unit test of the clap definition (cli.rs).
    let env = HashMap::new();
    let serve = run_expecting(&env, &["serve", "--help"], 0);
    let text = stdout(&serve);
    assert!(
        text.contains(".env.example") && text.contains("config check"),
        "{text}"
    );
    let top = run_expecting(&env, &["--help"], 0);
    assert!(stdout(&top).contains("Exit codes"), "{}", stdout(&top));
}

#[tokio::test]
async fn read_only_commands_print_json_and_never_migrate() {
    let db = create_migrated_database().await;
    let env = cli_env(&db);
    let created = run_expecting(
        &env,
        &["keys", "create", "--name", "json", "--scope", "user"],
        0,
    );
    let key = stdout(&created).trim().to_string();

    let keys: serde_json::Value = serde_json::from_str(&stdout(&run_expecting(
        &env,
        &["keys", "list", "--json"],
        0,
    )))
    .unwrap();
    let listed = &keys.as_array().unwrap()[0];
    assert_eq!(listed["name"], "json");
    assert_eq!(listed["scope"], "user");
    assert!(key.starts_with(listed["prefix"].as_str().unwrap()));
    assert!(!keys.to_string().contains(&key), "never the key itself");

    let stats: serde_json::Value =
        serde_json::from_str(&stdout(&run_expecting(&env, &["kb", "stats", "--json"], 0))).unwrap();
    assert!(stats["kb_version"].is_string(), "{stats}");
    assert!(stats["checks"].as_i64().unwrap() > 0, "{stats}");
    assert!(!stats["controls"].as_array().unwrap().is_empty(), "{stats}");
    assert!(
        stats["relationships"].as_object().unwrap().len() > 1,
        "{stats}"
    );

    let report: serde_json::Value = serde_json::from_str(&stdout(&run_expecting(
        &env,
        &["usage", "report", "--hours", "87840", "--json"],
        0,
    )))
    .unwrap();
    assert!(report.is_array(), "{report}");

    // On a database without a schema a read-only command says what to do and changes nothing.
    let empty = create_empty_database().await;
    let env = cli_env(&empty);
    for command in [
        &["keys", "list"][..],
        &["kb", "stats"],
        &["usage", "report"],
    ] {
        let output = run_expecting(&env, command, 1);
        assert!(
            stderr(&output).contains("cloud-optimizer migrate"),
            "{command:?}: {}",
            stderr(&output)
        );
    }
    let pool = sqlx::PgPool::connect(&database_url(&empty)).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "a read-only command created tables");
}

#[tokio::test]
async fn keys_revoke_by_shown_prefix_twice_and_duplicate_names_are_refused() {
    let app = spawn_app().await;
    let env = cli_env(&app.db_name);
    let created = run_expecting(
        &env,
        &["keys", "create", "--name", "ops", "--scope", "user"],
        0,
    );
    let key = stdout(&created).trim().to_string();

    // A second active key with the same name is refused, by the CLI and by the API.
    let duplicate = run_expecting(
        &env,
        &["keys", "create", "--name", "ops", "--scope", "user"],
        1,
    );
    assert!(
        stderr(&duplicate).contains("\"ops\" exists already"),
        "{}",
        stderr(&duplicate)
    );
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": "ops", "scope": "user"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "duplicate_name").await;

    // The table shows the prefix; revoking by it works.
    let listing = stdout(&run_expecting(&env, &["keys", "list"], 0));
    let prefix = &key[..10];
    assert!(listing.contains(prefix), "{listing}");
    let revoked = run_expecting(&env, &["keys", "revoke", prefix], 0);
    assert!(
        stderr(&revoked).contains("Revoked key"),
        "{}",
        stderr(&revoked)
    );
    let again = run_expecting(&env, &["keys", "revoke", prefix], 0);
    assert!(
        stderr(&again).contains("already revoked"),
        "{}",
        stderr(&again)
    );
    let unknown = run_expecting(&env, &["keys", "revoke", "co_unknown1"], 1);
    assert!(
        stderr(&unknown).contains("no API key with prefix co_unknown1"),
        "{}",
        stderr(&unknown)
    );
    let missing_id = run_expecting(
        &env,
        &["keys", "revoke", "00000000-0000-0000-0000-000000000001"],
        1,
    );
    assert!(stderr(&missing_id).contains("no API key with id"));

    // The name is free again once its key is revoked.
    run_expecting(
        &env,
        &["keys", "create", "--name", "ops", "--scope", "user"],
        0,
    );
    let refused = app
        .get_as("/api/v1/keys/self", &key)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(refused, 401);
}

#[tokio::test]
async fn migrate_logs_plain_text_without_colours_or_notices() {
    let db = create_empty_database().await;
    let mut env = cli_env(&db);
    env.insert("LOG_FORMAT".into(), "pretty".into());
    env.insert("LOG_LEVEL".into(), "info".into());
    run_expecting(&env, &["migrate"], 0);
    // The second run finds `_sqlx_migrations`: PostgreSQL's "already exists, skipping" notice.
    let output = run_expecting(&env, &["migrate"], 0);
    let logs = format!("{}{}", stdout(&output), stderr(&output));
    assert!(logs.contains("migrations applied"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "no ANSI escapes off a terminal: {logs:?}"
    );
    assert!(!logs.contains("_sqlx_migrations"), "{logs}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_success() {
    // As `cloud-optimizer config check | head -0`: the reader is gone before the first line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .args(["config", "check"])
        .env_clear()
        .envs(unreachable_env())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// `config check` shows every variable `.env.example` documents, under the same name, and no
/// other; secrets only as set or unset.
#[test]
fn config_check_shows_every_documented_variable_and_no_other() {
    let mut env = unreachable_env();
    env.insert(
        "DATABASE_URL".into(),
        "postgres://app:hunter2-db@db.internal:5432/app".into(),
    );
    env.insert(
        "REDIS_URL".into(),
        "redis://:hunter2-redis@cache:6379".into(),
    );
    env.insert(
        "BOOTSTRAP_ADMIN_API_KEY".into(),
        "hunter2-key-hunter2-key-hunter2-key".into(),
    );
    env.insert("NEO4J_URI".into(), "bolt://graph:7687".into());
    env.insert("NEO4J_PASSWORD".into(), "hunter2-graph".into());
    env.insert("MARKETPLACE_TASK_ID".into(), "task-7".into());
    env.insert("TRIAL_LIMIT_CHAT_QUESTIONS".into(), "7".into());
    let output = run_expecting(&env, &["config", "check"], 0);
    let text = stdout(&output);
    assert!(!text.contains("hunter2"), "a secret leaked: {text}");
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shown = shown.as_object().unwrap();
    let names: std::collections::BTreeSet<String> = shown.keys().cloned().collect();
    let documented = env_example_names();
    assert_eq!(
        names.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "shown by config check but not in .env.example"
    );
    assert_eq!(
        documented.difference(&names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in .env.example but not shown by config check"
    );
    assert_eq!(
        shown["DATABASE_URL"],
        "postgres://app:***@db.internal:5432/app"
    );
    assert_eq!(shown["PGHOST"], "db.internal");
    assert_eq!(shown["PGPASSWORD"], "(set)");
    assert_eq!(shown["NEO4J_PASSWORD"], "(set)");
    assert_eq!(shown["MARKETPLACE_PUBLIC_KEY"], "(unset)");
    assert_eq!(shown["MARKETPLACE_TASK_ID"], "task-7");
    assert_eq!(shown["MARKETPLACE_LICENSE_CHECK_SECONDS"], 3600);
    assert_eq!(shown["TRIAL_LIMIT_CHAT_QUESTIONS"], 7);
    // Unset, each process draws a task id of its own: none is shown.
    env.remove("MARKETPLACE_TASK_ID");
    let output = run_expecting(&env, &["config", "check"], 0);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(shown["MARKETPLACE_TASK_ID"].is_null(), "{shown}");
}

/// stdout holds a command's result and nothing else, whatever the log settings: logs and
/// messages go to stderr, so `$(…)` and `| jq` get the result alone.
#[tokio::test]
async fn stdout_holds_only_the_result_with_stderr_discarded() {
    // Migrated, with the shipped KB loaded (for `kb stats`).
    let db = create_migrated_database().await;
    let mut env = cli_env(&db);
    env.insert("LOG_LEVEL".into(), "debug".into());
    let run = |env: &HashMap<String, String>, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
            .args(args)
            .env_clear()
            .envs(env)
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        stdout(&output)
    };
    for format in ["json", "pretty"] {
        env.insert("LOG_FORMAT".into(), format.into());
        // `migrate` has no result: it logs "migrations applied", on stderr.
        assert_eq!(run(&env, &["migrate"]), "", "{format}");
        let key = run(
            &env,
            &["keys", "create", "--name", format, "--scope", "user"],
        );
        assert!(
            key.starts_with("co_") && key.trim().lines().count() == 1,
            "{format}: {key:?}"
        );
        for command in [
            &["keys", "list", "--json"][..],
            &["kb", "stats", "--json"],
            &["usage", "report", "--json"],
            &["config", "check"],
        ] {
            let text = run(&env, command);
            // Not a terminal: one compact JSON document on one line.
            assert_eq!(text.lines().count(), 1, "{format} {command:?}: {text}");
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{format} {command:?}: {e}: {text}"));
        }
    }
}
