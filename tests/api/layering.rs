//! Imports run one way: base modules import only the base; the shared capabilities (the knowledge
//! base and billing) import only the base; feature capabilities import the base and the shared
//! capabilities but never each other; only the composition root sees everything
//! (docs/ARCHITECTURE.md, "Imports run one way").

use std::collections::BTreeSet;
use std::path::Path;

const BASE: &[&str] = &[
    "aws",
    "aws_facts",
    "config",
    "db",
    "error",
    "events",
    "ratelimit",
    "redis_conn",
    "runtime",
    "telemetry",
    "web",
];
/// Capabilities other capabilities build on: answers come from the KB, billable actions charge
/// through the Marketplace ledger, the configured language model is one client for every feature
/// that uses it. They import only the base, and not each other.
const SHARED: &[&str] = &["kb", "llm", "marketplace"];
/// Feature capabilities: the base and the shared capabilities, never each other.
const FEATURES: &[&str] = &[
    "auth",
    "chat",
    "documents",
    "health",
    "notifications",
    "scans",
];
const ROOT: &[&str] = &[
    "cli", "console", "docs", "http", "lib", "main", "server", "state",
];
/// Items at the crate root that any module may use: `lib.rs`'s own (version strings, the TLS
/// provider) and `scan_client!`, which `#[macro_export]` puts there.
const LIB_ITEMS: &[&str] = &[
    "ensure_crypto_provider",
    "scan_client",
    "shipped_kb_version",
    "version",
];

/// Top-level modules named after `crate::` in a source file: `crate::kb::…` and `crate::{a, b}`.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn module_of(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_run_from_the_composition_root_through_capabilities_to_the_base() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut violations = Vec::new();
    for file in files {
        let module = module_of(&file, &src);
        let allowed: Vec<&str> = if BASE.contains(&module.as_str()) {
            BASE.to_vec()
        } else if SHARED.contains(&module.as_str()) {
            let mut allowed = BASE.to_vec();
            allowed.push(module.as_str());
            allowed
        } else if FEATURES.contains(&module.as_str()) {
            let mut allowed = BASE.to_vec();
            allowed.extend_from_slice(SHARED);
            allowed.push(module.as_str());
            allowed
        } else if ROOT.contains(&module.as_str()) {
            continue;
        } else {
            violations.push(format!(
                "{}: module `{module}` is in no layer: add it to BASE, SHARED, FEATURES or ROOT",
                file.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for import in crate_imports(&source) {
            if !allowed.contains(&import.as_str()) && !LIB_ITEMS.contains(&import.as_str()) {
                violations.push(format!(
                    "{}: `{module}` imports `crate::{import}`",
                    file.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_import_scanner_sees_grouped_and_nested_paths() {
    let found = crate_imports("use crate::{auth, kb::api};\nlet x = crate::state::AppState::new;");
    assert_eq!(
        found,
        ["auth", "kb", "state"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
