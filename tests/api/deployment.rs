//! The deployment files only set variables the binary reads.

use std::collections::{BTreeSet, HashMap};

use cloud_optimizer::config::{Config, Env};

/// Every variable name the configuration asks for.
fn names_read() -> BTreeSet<&'static str> {
    let env = Env::from_map(HashMap::new());
    Config::from_env(&env).unwrap();
    // Optional blocks only read their other variables when switched on.
    let env_with_options = Env::from_map(HashMap::from([
        ("NEO4J_URI".to_string(), "bolt://x:7687".to_string()),
        ("NEO4J_PASSWORD".to_string(), "x".to_string()),
        ("KB_REFRESH_INTERVAL".to_string(), "600".to_string()),
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
    let text = std::fs::read_to_string(".env.example").unwrap();
    let documented: BTreeSet<String> = text
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
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
