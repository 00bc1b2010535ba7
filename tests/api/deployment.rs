//! The deployment files (compose, `.env.example`, CloudFormation) only set variables the binary
//! reads, and the CloudFormation templates give the container every one it needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cloud_optimizer::config::{Config, Env};

use crate::helpers::env_example_names;

/// Every variable name the configuration asks for.
fn names_read() -> BTreeSet<&'static str> {
    let env = Env::from_map(HashMap::new());
    Config::from_env(&env).unwrap();
    // Optional blocks only read their other variables when switched on.
    let env_with_options = Env::from_map(HashMap::from([
        ("NEO4J_URI".to_string(), "bolt://x:7687".to_string()),
        ("NEO4J_PASSWORD".to_string(), "x".to_string()),
        ("KB_REFRESH_INTERVAL".to_string(), "600".to_string()),
        ("LLM_PROVIDER".to_string(), "openai".to_string()),
        ("LLM_MODEL".to_string(), "gpt-4o-mini".to_string()),
    ]));
    Config::from_env(&env_with_options).unwrap();
    let mut names = env.names_read();
    names.extend(env_with_options.names_read());
    names
}

#[test]
fn compose_sets_only_variables_the_binary_reads() {
    let compose: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string("compose.yaml").unwrap()).unwrap();
    let app_env = compose["services"]["app"]["environment"]
        .as_mapping()
        .expect("app environment map");
    let known = names_read();
    assert!(!app_env.is_empty());
    for (name, _) in app_env {
        let name = name.as_str().unwrap();
        assert!(
            known.contains(name),
            "compose.yaml sets {name}, which the binary never reads"
        );
    }
}

#[test]
fn env_example_documents_only_variables_the_binary_reads_and_all_of_them() {
    let documented = env_example_names();
    let known: BTreeSet<String> = names_read().into_iter().map(str::to_string).collect();
    for name in &documented {
        assert!(
            known.contains(name),
            ".env.example documents {name}, which the binary never reads"
        );
    }
    for name in &known {
        assert!(
            documented.contains(name),
            "{name} is read but not documented in .env.example"
        );
    }
}

/// `docker run --env-file` and ECS environment files take `NAME=value` lines literally: an inline
/// comment would become part of the value.
#[test]
fn env_example_is_a_plain_env_file() {
    let text = std::fs::read_to_string(".env.example").unwrap();
    for (number, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!(".env.example:{}: not NAME=value", number + 1));
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            ".env.example:{}: {name:?} is not a variable name",
            number + 1
        );
        assert!(
            !value.contains('#') && !value.chars().any(char::is_whitespace),
            ".env.example:{}: put the comment on a line of its own (env files keep it in the value)",
            number + 1
        );
    }
}

/// One container's variables in a CloudFormation template: plain `Environment` values (`None`
/// when the value is an intrinsic function such as `!Ref`) and the names fed from `Secrets`.
#[derive(Debug)]
struct ContainerVars {
    task_definition: String,
    environment: BTreeMap<String, Option<String>>,
    secrets: BTreeSet<String>,
}

/// `!If [condition, a, b]` lists items in either branch; `!Ref AWS::NoValue` drops the item.
fn branches(item: &serde_yaml_ng::Value) -> Vec<&serde_yaml_ng::Value> {
    match item {
        serde_yaml_ng::Value::Tagged(tagged) if tagged.tag == "If" => tagged
            .value
            .as_sequence()
            .expect("!If takes a list")
            .iter()
            .skip(1)
            .filter(|b| b.is_mapping())
            .collect(),
        other => vec![other],
    }
}

fn container_vars(template: &str) -> Vec<ContainerVars> {
    let text = std::fs::read_to_string(template).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut found = Vec::new();
    for (logical_id, resource) in doc["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::ECS::TaskDefinition") {
            continue;
        }
        let containers = resource["Properties"]["ContainerDefinitions"]
            .as_sequence()
            .unwrap();
        for container in containers {
            let mut vars = ContainerVars {
                task_definition: logical_id.as_str().unwrap().to_string(),
                environment: BTreeMap::new(),
                secrets: BTreeSet::new(),
            };
            for item in container["Environment"].as_sequence().into_iter().flatten() {
                for entry in branches(item) {
                    let name = entry["Name"]
                        .as_str()
                        .expect("Environment Name")
                        .to_string();
                    // `as_str` would look through a tag and read `!Ref X` as "X".
                    let value = match &entry["Value"] {
                        serde_yaml_ng::Value::String(literal) => Some(literal.clone()),
                        _ => None,
                    };
                    vars.environment.insert(name, value);
                }
            }
            for item in container["Secrets"].as_sequence().into_iter().flatten() {
                for entry in branches(item) {
                    vars.secrets
                        .insert(entry["Name"].as_str().expect("Secret Name").to_string());
                }
            }
            found.push(vars);
        }
    }
    assert!(!found.is_empty(), "{template} defines no container");
    found
}

/// A realistic value for a variable the template fills from a parameter, resource or secret.
fn sample_value(name: &str) -> String {
    match name {
        "PGHOST" => "co.abc123.us-east-1.rds.amazonaws.com".into(),
        "PGPORT" => "5432".into(),
        "PGUSER" => "cloud_optimizer".into(),
        "PGPASSWORD" => "generated-by-secrets-manager-40-chars-xx".into(),
        "BOOTSTRAP_ADMIN_API_KEY" => "generated-by-secrets-manager-48-characters-long-x".into(),
        "REDIS_URL" => "rediss://master.co.abc123.use1.cache.amazonaws.com:6379".into(),
        "TRUSTED_PROXY_CIDRS" => "10.40.0.0/20,10.40.16.0/20".into(),
        "MARKETPLACE_PRODUCT_CODE" => "prod-abc123".into(),
        "MARKETPLACE_PUBLIC_KEY_VERSION" => "1".into(),
        "MARKETPLACE_PUBLIC_KEY" => {
            std::fs::read_to_string("tests/fixtures/marketplace-test-key.pub.pem").unwrap()
        }
        "MIGRATE_ON_STARTUP" => "true".into(),
        // The trial template's default.
        "TRIAL_MODE" => "true".into(),
        "KB_PATH" => "s3://kb-bucket/compliance.tar.gz".into(),
        "KB_REFRESH_INTERVAL" => "3600".into(),
        "LLM_MODEL" => "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        other => panic!("give {other} a sample value in tests/api/deployment.rs"),
    }
}

/// What every AWS deployment must hand the container: the database by parts (so the password can
/// be a secret of its own), TLS to RDS, the admin key, Marketplace settings, the ALB as the only
/// trusted proxy, and the KB location.
const REQUIRED_IN_AWS: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSSLMODE",
    "BOOTSTRAP_ADMIN_API_KEY",
    "MARKETPLACE_ENABLED",
    "MARKETPLACE_PRODUCT_CODE",
    // Without it a successful RegisterUsage still leaves the license invalid.
    "MARKETPLACE_PUBLIC_KEY",
    "TRIAL_MODE",
    "TRUSTED_PROXY_CIDRS",
    "KB_PATH",
    "LOG_FORMAT",
    "ENVIRONMENT",
];

/// Never plain environment values in a template.
const MUST_BE_SECRETS: &[&str] = &["PGPASSWORD", "BOOTSTRAP_ADMIN_API_KEY"];

fn check_template(template: &str, extra_required: &[&str], trial: bool) {
    let known = names_read();
    for vars in container_vars(template) {
        let where_ = format!("{template} {}", vars.task_definition);
        for name in vars.environment.keys().chain(vars.secrets.iter()) {
            assert!(
                known.contains(name.as_str()),
                "{where_} gives the container {name}, which the binary never reads"
            );
        }
        for name in REQUIRED_IN_AWS.iter().chain(extra_required) {
            assert!(
                vars.environment.contains_key(*name) || vars.secrets.contains(*name),
                "{where_} does not give the container {name}"
            );
        }
        for name in MUST_BE_SECRETS {
            assert!(
                vars.secrets.contains(*name) && !vars.environment.contains_key(*name),
                "{where_} must give {name} as an ECS secret, not an environment value"
            );
        }
        assert!(
            !vars.environment.contains_key("DATABASE_URL"),
            "{where_}: DATABASE_URL would carry the password in plain text; use the PG* parts"
        );

        // The binary accepts exactly what the template gives it.
        let mut env: HashMap<String, String> = vars
            .environment
            .iter()
            .map(|(name, value)| {
                let value = value.clone().unwrap_or_else(|| sample_value(name));
                (name.clone(), value)
            })
            .collect();
        for name in &vars.secrets {
            env.insert(name.clone(), sample_value(name));
        }
        let config = Config::from_env(&Env::from_map(env))
            .unwrap_or_else(|e| panic!("{where_}: the binary refuses its environment: {e}"));
        assert_eq!(
            config.database.display,
            "postgres://cloud_optimizer@co.abc123.us-east-1.rds.amazonaws.com:5432/cloud_optimizer",
            "{where_}: the database is not the stack's"
        );
        assert!(config.marketplace.enabled, "{where_}: Marketplace is off");
        assert!(config.marketplace.public_key_pem.is_some());
        assert_eq!(config.marketplace.trial_mode, trial, "{where_}: TRIAL_MODE");
        assert!(config.bootstrap_admin_api_key.is_some());
        assert!(!config.trusted_proxies.is_empty());
        if extra_required.contains(&"REDIS_URL") {
            assert!(config.redis_url.is_some());
        }
    }
}

#[test]
fn trial_template_gives_the_container_what_the_binary_reads_and_requires() {
    check_template("cloudformation/trial.yaml", &[], true);
}

#[test]
fn production_template_gives_the_service_and_migration_tasks_what_the_binary_reads_and_requires() {
    assert_eq!(
        container_vars("cloudformation/production.yaml").len(),
        2,
        "the service and the one-off migration task"
    );
    check_template("cloudformation/production.yaml", &["REDIS_URL"], false);
}

/// Every `.rs` file under `dir`.
fn rust_sources(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The metric names the binary records (`counter!`, `gauge!`, `histogram!` in `src/`).
fn metrics_recorded() -> BTreeSet<String> {
    let recorded = regex::Regex::new(r#"(?:counter|gauge|histogram)!\(\s*"([a-z_:]+)""#).unwrap();
    let mut files = Vec::new();
    rust_sources(std::path::Path::new("src"), &mut files);
    files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            recorded
                .captures_iter(&text)
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The Grafana dashboard and the Prometheus alert rules only query metrics the binary records
/// (a renamed metric would leave an empty panel and an alert that can never fire).
#[test]
fn dashboard_and_alerts_query_only_metrics_the_binary_records() {
    let recorded = metrics_recorded();
    assert!(recorded.contains("http_requests_total"), "{recorded:?}");
    let queried = regex::Regex::new(r"\b((?:http|db|redis|cloud_optimizer)_[a-z_]+)").unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("docker/grafana/dashboards/cloud-optimizer.json").unwrap(),
    )
    .unwrap();
    let mut expressions: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_string();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect();
    let alerts: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string("docker/prometheus/alerts.yml").unwrap())
            .unwrap();
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            expressions.push((
                rule["alert"].as_str().unwrap().to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(expressions.len() > 10);
    for (source, expression) in &expressions {
        for found in queried.captures_iter(expression) {
            let name = &found[1];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                recorded.contains(base),
                "{source} queries {name}, which the binary does not record"
            );
        }
    }
}
