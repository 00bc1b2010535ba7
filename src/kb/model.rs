//! The knowledge base as files (`data/compliance/`, format in `docs/KB-DATA.md`), read and
//! verified without a database. Every error names the file, the item and the field.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";

const NOT_A_KB_FILE: &str = "not a recognised KB file name (see docs/KB-DATA.md: framework.json, controls.json, \
     relationships.json in a framework directory; aws_services.json, checks-*.json, \
     remediations-*.json in common/)";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kb_version: String,
    #[serde(default)]
    pub schema_version: u32,
    pub files: Vec<ManifestFile>,
    #[serde(default)]
    pub totals: BTreeMap<String, usize>,
    #[serde(default)]
    pub upstream: Vec<Upstream>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub path: String,
    pub kind: FileKind,
    pub sha256: String,
    pub bytes: u64,
    pub items: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    pub url: String,
    pub license: String,
    pub used_for: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Framework,
    Controls,
    Relationships,
    Services,
    Checks,
    Remediations,
}

impl FileKind {
    /// What a file is, from where it sits.
    pub fn of_path(path: &str) -> Option<Self> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if dir.contains('/') {
            // One level only: `kb manifest` run on the folder above the KB must not take
            // `compliance/hipaa/framework.json` for a framework file.
            return None;
        }
        match (dir, name) {
            ("common", "aws_services.json") => Some(Self::Services),
            ("common", n) if n.starts_with("checks-") && n.ends_with(".json") => Some(Self::Checks),
            ("common", n) if n.starts_with("remediations-") && n.ends_with(".json") => {
                Some(Self::Remediations)
            }
            ("common", _) | ("", _) => None,
            (_, "framework.json") => Some(Self::Framework),
            (_, "controls.json") => Some(Self::Controls),
            (_, "relationships.json") => Some(Self::Relationships),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    pub id: String,
    pub version: String,
    pub name: String,
    pub publisher: String,
    pub url: String,
    pub summary: String,
    pub kinds: Vec<String>,
}

impl Framework {
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    pub id: String,
    pub kind: String,
    pub parent: Option<String>,
    pub title: String,
    pub summary: String,
    pub url: String,
    pub technical: bool,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Other ids people use for this control (older numbering, common spellings); see KB-DATA.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub description: String,
    pub services: Vec<String>,
    pub resource_type: String,
    pub severity: String,
    #[serde(default)]
    pub refs: CheckRefs,
    pub remediation: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRefs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_hub: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prowler: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remediation {
    pub id: String,
    pub title: String,
    pub steps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudformation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terraform: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub category: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Relationship {
    #[serde(rename = "type")]
    pub kind: String,
    pub from: String,
    pub to: String,
    pub basis: String,
    /// `maps_to` only: how far a passing check evidences the control (see KB-DATA.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<String>,
    /// `maps_to` only: one line, our words, why the check bears on the control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
}

/// A control with its framework resolved and its fully qualified id.
#[derive(Debug, Clone)]
pub struct Control {
    /// `control:<framework>@<version>:<native id>`
    pub id: String,
    /// `<framework>@<version>`
    pub framework: String,
    pub native_id: String,
    pub parent_id: Option<String>,
    pub file: ControlFile,
}

/// The whole verified knowledge base, ready to load.
#[derive(Debug, Clone, Default)]
pub struct Kb {
    pub kb_version: String,
    /// SHA-256 over the manifest: identifies this exact content.
    pub checksum: String,
    pub frameworks: Vec<Framework>,
    pub controls: Vec<Control>,
    pub checks: Vec<Check>,
    pub remediations: Vec<Remediation>,
    pub services: Vec<Service>,
    /// Written and derived (`part_of`, `applies_to`, `remediated_by`) edges, fully qualified.
    pub relationships: Vec<Relationship>,
}

pub const WRITTEN_TYPES: [&str; 2] = ["maps_to", "related_to"];
/// How far a passing check evidences a control (`maps_to` only; see docs/KB-DATA.md).
pub const STRENGTHS: [&str; 3] = ["direct", "partial", "supporting"];
pub const BASES: [&str; 5] = [
    "security-hub",
    "prowler",
    "aws-config-conformance-pack",
    "official-crosswalk",
    "editorial",
];
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// One problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub file: String,
    pub item: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.item.is_empty() {
            write!(f, " [{}]", self.item)?;
        }
        if !self.field.is_empty() {
            write!(f, " .{}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("knowledge base at {path} is invalid ({} problem(s)); first: {}", issues.len(), issues.first().map(ToString::to_string).unwrap_or_default())]
pub struct VerifyError {
    pub path: PathBuf,
    pub issues: Vec<Issue>,
}

struct Collector {
    issues: Vec<Issue>,
}

impl Collector {
    fn add(&mut self, file: &str, item: &str, field: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            file: file.to_string(),
            item: item.to_string(),
            field: field.to_string(),
            message: message.into(),
        });
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parses an array file item by item so an error can name the item.
fn parse_items<T: DeserializeOwned>(file: &str, bytes: &[u8], issues: &mut Collector) -> Vec<T> {
    let values: Vec<serde_json::Value> = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(err) => {
            issues.add(file, "", "", format!("not a JSON array: {err}"));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let label = value
            .get("id")
            .and_then(|v| v.as_str())
            .map(|id| format!("#{index} {id}"))
            .or_else(|| {
                value
                    .get("from")
                    .and_then(|v| v.as_str())
                    .map(|f| format!("#{index} from {f}"))
            })
            .unwrap_or_else(|| format!("#{index}"));
        match serde_json::from_value::<T>(value) {
            Ok(item) => out.push(item),
            Err(err) => {
                let message = err.to_string();
                let field = field_of(&message);
                issues.add(file, &label, &field, message);
            }
        }
    }
    out
}

/// serde names the field in its message (`missing field `title``, `unknown field `x``).
fn field_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or_default()
        .to_string()
}

fn attribute_rules(framework: &str) -> &'static [(&'static str, &'static [&'static str])] {
    match framework {
        "hipaa-sr" => &[
            ("obligation", &["required", "addressable"]),
            (
                "safeguard",
                &[
                    "administrative",
                    "physical",
                    "technical",
                    "organizational",
                    "documentation",
                ],
            ),
        ],
        "soc2" => &[(
            "category",
            &[
                "security",
                "availability",
                "confidentiality",
                "processing_integrity",
                "privacy",
            ],
        )],
        "pci-dss" => &[
            ("appendix", &["true"]),
            ("applies_to", &["service_providers"]),
        ],
        "gdpr" => &[(
            "chapter",
            &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"],
        )],
        "cis-aws" => &[
            ("level", &["1", "2"]),
            ("assessment", &["automated", "manual"]),
        ],
        "aws-fsbp" => &[
            ("severity", &["low", "medium", "high", "critical"]),
            ("resource_type", &[]),
        ],
        "aws-wa-security" => &[("risk", &["high", "medium", "low"])],
        _ => &[],
    }
}

fn attribute_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads `dir`, checks everything `docs/KB-DATA.md` promises, and returns the KB or every problem.
pub fn read_and_verify(dir: &Path) -> Result<Kb, VerifyError> {
    match std::fs::read(dir.join(MANIFEST)) {
        Ok(manifest_bytes) => verify_with_manifest(dir, &manifest_bytes),
        Err(err) => {
            let mut c = Collector { issues: Vec::new() };
            c.add(MANIFEST, "", "", format!("cannot read: {err}"));
            Err(VerifyError {
                path: dir.to_path_buf(),
                issues: c.issues,
            })
        }
    }
}

/// Verifies the files of `dir` against `manifest_bytes` (the manifest on disk, or one about to
/// be written there).
fn verify_with_manifest(dir: &Path, manifest_bytes: &[u8]) -> Result<Kb, VerifyError> {
    let mut c = Collector { issues: Vec::new() };
    let fail = |c: Collector| VerifyError {
        path: dir.to_path_buf(),
        issues: c.issues,
    };
    let manifest: Manifest = match serde_json::from_slice(manifest_bytes) {
        Ok(m) => m,
        Err(err) => {
            let message = err.to_string();
            c.add(MANIFEST, "", &field_of(&message), message);
            return Err(fail(c));
        }
    };
    let mut kb = Kb {
        kb_version: manifest.kb_version.clone(),
        checksum: sha256_hex(manifest_bytes),
        ..Kb::default()
    };

    // Files on disk that the manifest does not declare are an error: they would be ignored.
    let declared: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for path in data_files(dir) {
        if FileKind::of_path(&path).is_none() {
            // `kb manifest` cannot list it either: the name must change (or the file go).
            c.add(&path, "", "", NOT_A_KB_FILE);
        } else if !declared.contains(path.as_str()) {
            c.add(
                &path,
                "",
                "",
                "file is not listed in manifest.json (run `cloud-optimizer kb manifest`)",
            );
        }
    }

    let mut framework_dirs: HashMap<String, Framework> = HashMap::new();
    let mut control_files: Vec<(String, String, Vec<ControlFile>)> = Vec::new();
    let mut relationship_files: Vec<(String, Vec<Relationship>)> = Vec::new();
    for entry in &manifest.files {
        let path = entry.path.as_str();
        if FileKind::of_path(path) != Some(entry.kind) {
            c.add(
                MANIFEST,
                path,
                "kind",
                format!("{:?} does not match where the file sits", entry.kind),
            );
            continue;
        }
        let bytes = match std::fs::read(dir.join(path)) {
            Ok(b) => b,
            Err(err) => {
                c.add(path, "", "", format!("cannot read: {err}"));
                continue;
            }
        };
        if sha256_hex(&bytes) != entry.sha256 {
            c.add(path, "", "sha256", "checksum does not match manifest.json (file changed; run `cloud-optimizer kb manifest`)");
        }
        if bytes.len() as u64 != entry.bytes {
            c.add(
                path,
                "",
                "bytes",
                format!("{} bytes, manifest says {}", bytes.len(), entry.bytes),
            );
        }
        let dir_name = path.split('/').next().unwrap_or_default().to_string();
        let count = match entry.kind {
            FileKind::Framework => match serde_json::from_slice::<Framework>(&bytes) {
                Ok(fw) => {
                    // Several versions of one framework may sit side by side (`cis-aws/`,
                    // `cis-aws-v5/`); the key `id@version` must still be unique.
                    if let Some((other, _)) =
                        framework_dirs.iter().find(|(_, f)| f.key() == fw.key())
                    {
                        c.add(
                            path,
                            "",
                            "version",
                            format!("{} is also declared by {other}/framework.json", fw.key()),
                        );
                    }
                    framework_dirs.insert(dir_name, fw);
                    1
                }
                Err(err) => {
                    let message = err.to_string();
                    c.add(path, "", &field_of(&message), message);
                    1
                }
            },
            FileKind::Controls => {
                let items: Vec<ControlFile> = parse_items(path, &bytes, &mut c);
                let n = items.len();
                control_files.push((path.to_string(), dir_name, items));
                n
            }
            FileKind::Relationships => {
                let items: Vec<Relationship> = parse_items(path, &bytes, &mut c);
                let n = items.len();
                relationship_files.push((path.to_string(), items));
                n
            }
            FileKind::Services => {
                let items: Vec<Service> = parse_items(path, &bytes, &mut c);
                let n = items.len();
                kb.services.extend(items);
                n
            }
            FileKind::Checks => {
                let items: Vec<Check> = parse_items(path, &bytes, &mut c);
                let n = items.len();
                for check in &items {
                    verify_check(path, check, &mut c);
                }
                kb.checks.extend(items);
                n
            }
            FileKind::Remediations => {
                let items: Vec<Remediation> = parse_items(path, &bytes, &mut c);
                let n = items.len();
                for r in &items {
                    if r.steps.is_empty() || r.steps.len() > 8 {
                        c.add(path, &r.id, "steps", "needs 1 to 8 steps");
                    }
                    if r.cli.is_none() && r.cloudformation.is_none() && r.terraform.is_none() {
                        c.add(
                            path,
                            &r.id,
                            "cli",
                            "needs at least one of cli, cloudformation, terraform",
                        );
                    }
                }
                kb.remediations.extend(items);
                n
            }
        };
        if count != entry.items {
            c.add(
                path,
                "",
                "items",
                format!("{count} items, manifest says {}", entry.items),
            );
        }
    }

    let service_ids: HashSet<&str> = kb.services.iter().map(|s| s.id.as_str()).collect();
    duplicates(
        "common/aws_services.json",
        kb.services.iter().map(|s| s.id.as_str()),
        &mut c,
    );
    duplicates(
        "common/checks-*.json",
        kb.checks.iter().map(|s| s.id.as_str()),
        &mut c,
    );
    duplicates(
        "common/remediations-*.json",
        kb.remediations.iter().map(|s| s.id.as_str()),
        &mut c,
    );
    let remediation_ids: HashSet<&str> = kb.remediations.iter().map(|r| r.id.as_str()).collect();
    for check in &kb.checks {
        if !remediation_ids.contains(check.remediation.as_str()) {
            c.add(
                "common/checks",
                &check.id,
                "remediation",
                format!("no remediation {:?}", check.remediation),
            );
        }
        for service in &check.services {
            if !service_ids.contains(service.as_str()) {
                c.add(
                    "common/checks",
                    &check.id,
                    "services",
                    format!("unknown service {service:?}"),
                );
            }
        }
    }

    // Controls, per framework directory.
    for (path, dir_name, items) in control_files {
        let Some(fw) = framework_dirs.get(&dir_name) else {
            c.add(
                &path,
                "",
                "",
                format!("{dir_name}/framework.json is missing"),
            );
            continue;
        };
        let key = fw.key();
        duplicates(&path, items.iter().map(|i| i.id.as_str()), &mut c);
        let natives: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let mut alias_owner: HashMap<&str, &str> = HashMap::new();
        for item in &items {
            for alias in &item.aliases {
                if alias.trim().is_empty() || alias == &item.id {
                    c.add(
                        &path,
                        &item.id,
                        "aliases",
                        format!("{alias:?} is empty or the control's own id"),
                    );
                } else if natives.contains(alias.as_str()) {
                    c.add(
                        &path,
                        &item.id,
                        "aliases",
                        format!("{alias:?} is the native id of another control in this framework"),
                    );
                } else if let Some(owner) = alias_owner.insert(alias.as_str(), item.id.as_str()) {
                    c.add(
                        &path,
                        &item.id,
                        "aliases",
                        format!("{alias:?} is repeated (also an alias of {owner:?})"),
                    );
                }
            }
        }
        let rules = attribute_rules(&fw.id);
        for item in &items {
            if !fw.kinds.contains(&item.kind) {
                c.add(
                    &path,
                    &item.id,
                    "kind",
                    format!("{:?} is not one of {:?}", item.kind, fw.kinds),
                );
            }
            if let Some(parent) = &item.parent
                && !natives.contains(parent.as_str())
            {
                c.add(
                    &path,
                    &item.id,
                    "parent",
                    format!("no control {parent:?} in this framework"),
                );
            }
            if item.title.trim().is_empty() || item.title.chars().count() > 150 {
                c.add(&path, &item.id, "title", "must be 1-150 characters");
            }
            if item.summary.trim().is_empty() {
                c.add(&path, &item.id, "summary", "must not be empty");
            }
            if !item.url.starts_with("https://") {
                c.add(
                    &path,
                    &item.id,
                    "url",
                    "must be an https:// link to the official text",
                );
            }
            for service in &item.services {
                if !service_ids.contains(service.as_str()) {
                    c.add(
                        &path,
                        &item.id,
                        "services",
                        format!("unknown service {service:?}"),
                    );
                }
            }
            for (name, value) in &item.attributes {
                match rules.iter().find(|(n, _)| n == name) {
                    None => c.add(
                        &path,
                        &item.id,
                        &format!("attributes.{name}"),
                        format!("not an attribute of {}", fw.id),
                    ),
                    Some((_, allowed))
                        if !allowed.is_empty()
                            && !allowed.contains(&attribute_text(value).as_str()) =>
                    {
                        c.add(
                            &path,
                            &item.id,
                            &format!("attributes.{name}"),
                            format!("{value} is not one of {allowed:?}"),
                        );
                    }
                    _ => {}
                }
            }
            kb.controls.push(Control {
                id: format!("control:{key}:{}", item.id),
                framework: key.clone(),
                native_id: item.id.clone(),
                parent_id: item.parent.as_ref().map(|p| format!("control:{key}:{p}")),
                file: item.clone(),
            });
        }
    }
    // Where each framework's files sit, for messages (`cis-aws@5.0.0` lives in `cis-aws-v5/`).
    let dir_of: HashMap<String, String> = framework_dirs
        .iter()
        .map(|(dir, fw)| (fw.key(), dir.clone()))
        .collect();
    kb.frameworks = framework_dirs.into_values().collect();
    kb.frameworks.sort_by_key(|f| f.key());

    // Written relationships: allowed types, resolvable ends of the right kind, no duplicates.
    let controls: HashMap<&str, &Control> =
        kb.controls.iter().map(|c| (c.id.as_str(), c)).collect();
    let check_ids: HashSet<String> = kb
        .checks
        .iter()
        .map(|c| format!("check:kb:{}", c.id))
        .collect();
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut mapped: HashSet<String> = HashSet::new();
    let mut written = Vec::new();
    for (path, items) in relationship_files {
        for (index, rel) in items.into_iter().enumerate() {
            let item = format!("#{index} {} -> {}", rel.from, rel.to);
            if !BASES.contains(&rel.basis.as_str()) {
                c.add(
                    &path,
                    &item,
                    "basis",
                    format!("{:?} is not one of {BASES:?}", rel.basis),
                );
            }
            match rel.kind.as_str() {
                "maps_to" => {
                    if !controls.contains_key(rel.from.as_str()) {
                        c.add(&path, &item, "from", "no such control");
                    }
                    if !check_ids.contains(&rel.to) {
                        c.add(&path, &item, "to", "no such check");
                    }
                    match rel.strength.as_deref() {
                        Some(s) if STRENGTHS.contains(&s) => {}
                        Some(other) => c.add(
                            &path,
                            &item,
                            "strength",
                            format!("{other:?} is not one of {STRENGTHS:?}"),
                        ),
                        None => c.add(
                            &path,
                            &item,
                            "strength",
                            format!("missing: say how far the check evidences the control, one of {STRENGTHS:?}"),
                        ),
                    }
                    match rel.rationale.as_deref().map(str::trim) {
                        Some(r) if !r.is_empty() && r.chars().count() <= 200 => {}
                        Some(r) if !r.is_empty() => {
                            c.add(&path, &item, "rationale", "must be one line of at most 200 characters")
                        }
                        _ => c.add(
                            &path,
                            &item,
                            "rationale",
                            "missing: one line, in our words, on why the check bears on the control",
                        ),
                    }
                    mapped.insert(rel.from.clone());
                }
                "related_to" => match (
                    controls.get(rel.from.as_str()),
                    controls.get(rel.to.as_str()),
                ) {
                    (Some(a), Some(b)) if a.framework == b.framework => {
                        c.add(
                            &path,
                            &item,
                            "to",
                            "related_to links controls of different frameworks",
                        );
                    }
                    (None, _) => c.add(&path, &item, "from", "no such control"),
                    (_, None) => c.add(&path, &item, "to", "no such control"),
                    _ => {}
                },
                other => c.add(
                    &path,
                    &item,
                    "type",
                    format!("{other:?} is not an allowed type {WRITTEN_TYPES:?}"),
                ),
            }
            if !seen.insert((rel.kind.clone(), rel.from.clone(), rel.to.clone())) {
                c.add(&path, &item, "", "duplicate relationship");
            }
            written.push(rel);
        }
    }
    for control in &kb.controls {
        if control.file.technical && !mapped.contains(&control.id) {
            c.add(
                &format!(
                    "{}/relationships.json",
                    dir_of
                        .get(&control.framework)
                        .map_or_else(|| control_dir(&control.framework), String::as_str)
                ),
                &control.native_id,
                "technical",
                "a technical control needs at least one maps_to edge to a check",
            );
        }
    }

    // Totals in the manifest must agree with what was read.
    let totals = kb.totals(written.len());
    for (name, expected) in &manifest.totals {
        match totals.get(name) {
            Some(actual) if actual == expected => {}
            Some(actual) => c.add(
                MANIFEST,
                "",
                &format!("totals.{name}"),
                format!("{actual} found, manifest says {expected}"),
            ),
            None => c.add(MANIFEST, "", &format!("totals.{name}"), "not a known total"),
        }
    }

    if !c.issues.is_empty() {
        return Err(fail(c));
    }
    kb.relationships = derive_relationships(&kb);
    kb.relationships.extend(written);
    Ok(kb)
}

fn control_dir(framework_key: &str) -> &str {
    framework_key.split('@').next().unwrap_or(framework_key)
}

fn verify_check(path: &str, check: &Check, c: &mut Collector) {
    if !check
        .id
        .chars()
        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
    {
        c.add(path, &check.id, "id", "must be lower-kebab-case");
    }
    if !SEVERITIES.contains(&check.severity.as_str()) {
        c.add(
            path,
            &check.id,
            "severity",
            format!("{:?} is not one of {SEVERITIES:?}", check.severity),
        );
    }
    if check.services.is_empty() {
        c.add(path, &check.id, "services", "needs at least one service");
    }
    if check.title.trim().is_empty() || check.description.trim().is_empty() {
        c.add(
            path,
            &check.id,
            "title",
            "title and description must not be empty",
        );
    }
}

fn duplicates<'a>(file: &str, ids: impl Iterator<Item = &'a str>, c: &mut Collector) {
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            c.add(file, id, "id", "duplicate id");
        }
    }
}

/// Edges the loader derives from the items themselves.
fn derive_relationships(kb: &Kb) -> Vec<Relationship> {
    let mut out = Vec::new();
    for control in &kb.controls {
        if let Some(parent) = &control.parent_id {
            out.push(Relationship {
                kind: "part_of".into(),
                from: control.id.clone(),
                to: parent.clone(),
                basis: "framework".into(),
                strength: None,
                rationale: None,
            });
        }
    }
    for check in &kb.checks {
        let id = format!("check:kb:{}", check.id);
        for service in &check.services {
            out.push(Relationship {
                kind: "applies_to".into(),
                from: id.clone(),
                to: format!("aws_service:{service}"),
                basis: "catalogue".into(),
                strength: None,
                rationale: None,
            });
        }
        out.push(Relationship {
            kind: "remediated_by".into(),
            from: id.clone(),
            to: format!("remediation:kb:{}", check.remediation),
            basis: "catalogue".into(),
            strength: None,
            rationale: None,
        });
    }
    out
}

impl Kb {
    /// Counts as recorded in the manifest's `totals`.
    pub fn totals(&self, written_relationships: usize) -> BTreeMap<String, usize> {
        BTreeMap::from([
            ("frameworks".to_string(), self.frameworks.len()),
            ("controls".to_string(), self.controls.len()),
            ("checks".to_string(), self.checks.len()),
            ("remediations".to_string(), self.remediations.len()),
            ("services".to_string(), self.services.len()),
            ("relationships".to_string(), written_relationships),
        ])
    }

    pub fn entity_count(&self) -> usize {
        self.frameworks.len()
            + self.controls.len()
            + self.checks.len()
            + self.remediations.len()
            + self.services.len()
    }
}

/// Every `.json` data file below `dir` except the manifest, as a relative path with `/`.
pub fn data_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".json")
                && let Ok(rel) = path.strip_prefix(dir)
            {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if rel != MANIFEST {
                    out.push(rel);
                }
            }
        }
    }
    out.sort();
    out
}

/// The manifest the files of `dir` call for (checksums, sizes, counts and totals), keeping
/// `kb_version` (unless given) and `upstream` of the current one. Files whose name is not a KB
/// file are left out, and an item count is 0 for a file that is not a JSON array: verification
/// names both.
pub fn build_manifest(dir: &Path, kb_version: Option<&str>) -> std::io::Result<Manifest> {
    let previous: Option<Manifest> = std::fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut files = Vec::new();
    let mut totals: BTreeMap<String, usize> = BTreeMap::new();
    for path in data_files(dir) {
        let Some(kind) = FileKind::of_path(&path) else {
            continue;
        };
        let bytes = std::fs::read(dir.join(&path))?;
        let items = match kind {
            FileKind::Framework => 1,
            _ => serde_json::from_slice::<Vec<serde_json::Value>>(&bytes).map_or(0, |v| v.len()),
        };
        let total = match kind {
            FileKind::Framework => "frameworks",
            FileKind::Controls => "controls",
            FileKind::Relationships => "relationships",
            FileKind::Services => "services",
            FileKind::Checks => "checks",
            FileKind::Remediations => "remediations",
        };
        *totals.entry(total.to_string()).or_default() += items;
        files.push(ManifestFile {
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            path,
            kind,
            items,
        });
    }
    Ok(Manifest {
        kb_version: kb_version
            .map(str::to_string)
            .or_else(|| previous.as_ref().map(|m| m.kb_version.clone()))
            .unwrap_or_else(|| "0.1.0".into()),
        schema_version: 1,
        files,
        totals,
        upstream: previous.map(|m| m.upstream).unwrap_or_default(),
    })
}

fn manifest_text(manifest: &Manifest) -> String {
    let mut text = serde_json::to_string_pretty(manifest).expect("a manifest serialises");
    text.push('\n');
    text
}

/// Why `kb manifest` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0} is not a directory (expected a KB directory holding manifest.json)")]
    NotADirectory(PathBuf),
    #[error("cannot write the manifest of {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The data would not pass `kb verify` with the new manifest.
    #[error(transparent)]
    Invalid(VerifyError),
}

/// `kb manifest`: rewrites `manifest.json` from the files, but only when the data then passes
/// [`read_and_verify`]; otherwise nothing is written and the problems are those `kb verify`
/// would report. A manifest that vouches for data the loader refuses helps nobody.
pub fn write_verified_manifest(
    dir: &Path,
    kb_version: Option<&str>,
) -> Result<Manifest, ManifestError> {
    if !dir.is_dir() {
        return Err(ManifestError::NotADirectory(dir.to_path_buf()));
    }
    let io = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let manifest = build_manifest(dir, kb_version).map_err(io)?;
    let text = manifest_text(&manifest);
    verify_with_manifest(dir, text.as_bytes()).map_err(ManifestError::Invalid)?;
    std::fs::write(dir.join(MANIFEST), text).map_err(io)?;
    Ok(manifest)
}

/// Writes the manifest the files call for without verifying them: for tests that need data
/// with a current manifest which verification must refuse.
pub fn write_manifest(dir: &Path, kb_version: Option<&str>) -> anyhow::Result<Manifest> {
    let manifest = build_manifest(dir, kb_version)?;
    std::fs::write(dir.join(MANIFEST), manifest_text(&manifest))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, rel: &str, value: serde_json::Value) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    }

    fn control(id: &str, aliases: &[&str]) -> serde_json::Value {
        json!({
            "id": id, "kind": "recommendation", "parent": null, "title": "T", "summary": "S",
            "url": "https://example.org", "technical": false, "services": [],
            "attributes": {}, "aliases": aliases
        })
    }

    /// Two versions of one framework side by side, with the given controls in the newer one.
    fn kb_dir(newer: Vec<serde_json::Value>) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(
            dir,
            "common/aws_services.json",
            json!([{"id": "iam", "name": "IAM", "category": "security"}]),
        );
        write(dir, "common/checks-a.json", json!([]));
        write(dir, "common/remediations-a.json", json!([]));
        for (sub, version, controls) in [
            ("fw", "1.0.0", vec![control("1", &[])]),
            ("fw-v2", "2.0.0", newer),
        ] {
            write(
                dir,
                &format!("{sub}/framework.json"),
                json!({
                    "id": "fw", "version": version, "name": "F", "publisher": "P",
                    "url": "https://example.org", "summary": "S", "kinds": ["recommendation"]
                }),
            );
            write(dir, &format!("{sub}/controls.json"), json!(controls));
            write(dir, &format!("{sub}/relationships.json"), json!([]));
        }
        write_manifest(dir, Some("0.0.1")).unwrap();
        tmp
    }

    fn issues(tmp: &tempfile::TempDir) -> Vec<Issue> {
        match read_and_verify(tmp.path()) {
            Ok(_) => Vec::new(),
            Err(err) => err.issues,
        }
    }

    #[test]
    fn a_kb_file_sits_one_directory_deep() {
        assert_eq!(
            FileKind::of_path("hipaa/framework.json"),
            Some(FileKind::Framework)
        );
        assert_eq!(
            FileKind::of_path("common/checks-iam.json"),
            Some(FileKind::Checks)
        );
        for no in [
            "compliance/hipaa/framework.json",
            "framework.json",
            "common/notes.json",
        ] {
            assert_eq!(FileKind::of_path(no), None, "{no}");
        }
    }

    #[test]
    fn two_versions_of_a_framework_load_side_by_side_with_aliases() {
        let tmp = kb_dir(vec![control("1", &[]), control("2", &["1.1", "old-2"])]);
        let kb = read_and_verify(tmp.path()).unwrap();
        let keys: Vec<String> = kb.frameworks.iter().map(Framework::key).collect();
        assert_eq!(keys, ["fw@1.0.0", "fw@2.0.0"]);
        assert!(
            kb.controls
                .iter()
                .any(|c| c.id == "control:fw@2.0.0:2" && c.file.aliases == ["1.1", "old-2"])
        );
    }

    #[test]
    fn alias_must_not_be_another_native_id_or_repeat() {
        let tmp = kb_dir(vec![control("1", &["x"]), control("2", &["1", "x"])]);
        let found = issues(&tmp);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|i| i.field == "aliases" && i.item == "2"));
        assert!(found[0].message.contains("native id"));
        assert!(found[1].message.contains("repeated"));
    }

    #[test]
    fn same_framework_key_in_two_directories_is_an_error() {
        let tmp = kb_dir(vec![control("1", &[])]);
        write(
            tmp.path(),
            "fw-v2/framework.json",
            json!({
                "id": "fw", "version": "1.0.0", "name": "F", "publisher": "P",
                "url": "https://example.org", "summary": "S", "kinds": ["recommendation"]
            }),
        );
        write_manifest(tmp.path(), None).unwrap();
        assert!(
            issues(&tmp)
                .iter()
                .any(|i| i.field == "version" && i.message.contains("fw@1.0.0 is also declared"))
        );
    }
}
