//! What the chat reads of the KB: the active version as one in-memory snapshot (frameworks,
//! controls with their hierarchy, checks, remediations, the control→check and related-control
//! graph) and a ranked text search over its controls. A version never changes once active, so it
//! is read once (five statements) and shared by every question until another version is active;
//! answering a question then costs one small statement (the active checksum) and work in memory.
//!
//! Ranking: BM25-style over each control's words (id and title, summary, its parent's title, the
//! titles of the checks that evidence it, its attribute values), every field with its weight, on
//! the stems of [`super::vocabulary`], so "encrypting" meets "encryption" and the vocabulary's
//! expansions meet the KB's own wording.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::PgPool;

use super::{KbState, ids, vocabulary};

#[derive(Debug)]
pub struct Framework {
    /// `cis-aws`
    pub id: String,
    pub version: String,
    /// `cis-aws@3.0.0`
    pub key: String,
    pub name: String,
}

#[derive(Debug)]
pub struct Control {
    /// `control:pci-dss@4.0.1:8.4.2`
    pub id: String,
    /// Index of its framework in [`Snapshot::frameworks`].
    pub framework: usize,
    pub native_id: String,
    pub kind: String,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub title: String,
    pub summary: String,
    pub url: String,
    pub technical: bool,
    pub services: Vec<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Checks mapped to it, with the strength of each mapping (`direct`, `partial`, `supporting`).
    pub checks: Vec<(usize, String)>,
    /// Curated `related_to` links (both directions).
    pub related: Vec<usize>,
}

#[derive(Debug)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub description: String,
    pub services: Vec<String>,
    pub severity: String,
    pub remediation: Option<usize>,
    /// Controls it evidences (direct or partial).
    pub controls: Vec<usize>,
}

#[derive(Debug)]
pub struct Remediation {
    pub id: String,
    pub title: String,
    pub steps: Vec<String>,
    pub cli: Option<String>,
    pub cloudformation: Option<String>,
    pub terraform: Option<String>,
}

#[derive(Debug)]
pub struct Service {
    pub id: String,
    pub name: String,
}

/// Kinds that group other controls (a PCI principal requirement, a CIS section, an FSBP service
/// group, a Well-Architected question): answers cite them only when asked about the group.
pub const GROUP_KINDS: &[&str] = &[
    "section",
    "chapter",
    "series",
    "service",
    "principal_requirement",
    "requirement_group",
    "appendix",
    "question",
];

/// One KB version in memory.
pub struct Snapshot {
    pub checksum: String,
    pub frameworks: Vec<Framework>,
    pub controls: Vec<Control>,
    pub checks: Vec<Check>,
    pub remediations: Vec<Remediation>,
    pub services: Vec<Service>,
    by_id: HashMap<String, usize>,
    aliases: HashMap<String, Vec<usize>>,
    /// Per control: stem → weighted frequency.
    tf: Vec<HashMap<String, f64>>,
    /// Per control: weighted length.
    len: Vec<f64>,
    avg_len: f64,
    /// stem → number of controls holding it.
    df: HashMap<String, usize>,
}

/// The snapshot of the active version, like [`snapshot`], without asking the database while
/// this replica follows `kb.updated` and nothing changed since it last asked (the KB cache's
/// rule: see `kb::cache`).
pub async fn active(kb: &KbState) -> anyhow::Result<Option<Arc<Snapshot>>> {
    if let Some(checked) = kb.cache.checked_snapshot() {
        return Ok(checked);
    }
    let at = kb.cache.generation();
    let current = snapshot(&kb.db).await?;
    kb.cache.remember_snapshot(at, current.clone());
    Ok(current)
}

/// The snapshot of the active version, or `None` when no version is loaded.
pub async fn snapshot(db: &PgPool) -> anyhow::Result<Option<Arc<Snapshot>>> {
    static CURRENT: LazyLock<Mutex<Option<Arc<Snapshot>>>> = LazyLock::new(Default::default);
    static LOADING: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);
    let Some(active) = sqlx::query!("SELECT id, checksum FROM kb_versions WHERE active")
        .fetch_optional(db)
        .await?
    else {
        return Ok(None);
    };
    // Keyed by checksum, not version id: identical content is an identical snapshot whatever
    // database it was read from (test databases are clones that share ids).
    let cached = || {
        CURRENT
            .lock()
            .expect("snapshot lock")
            .as_ref()
            .filter(|s| s.checksum == active.checksum)
            .cloned()
    };
    if let Some(s) = cached() {
        return Ok(Some(s));
    }
    let _loading = LOADING.lock().await;
    if let Some(s) = cached() {
        return Ok(Some(s));
    }
    let snapshot = Arc::new(load(db, active.id, active.checksum).await?);
    *CURRENT.lock().expect("snapshot lock") = Some(snapshot.clone());
    Ok(Some(snapshot))
}

async fn load(db: &PgPool, version: i64, checksum: String) -> anyhow::Result<Snapshot> {
    let fw_rows = sqlx::query!(
        "SELECT key, id, version, name FROM kb_frameworks WHERE version_id = $1 ORDER BY key",
        version
    )
    .fetch_all(db)
    .await?;
    let frameworks: Vec<Framework> = fw_rows
        .into_iter()
        .map(|r| Framework {
            id: r.id,
            version: r.version,
            key: r.key,
            name: r.name,
        })
        .collect();
    let fw_index: HashMap<&str, usize> = frameworks
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key.as_str(), i))
        .collect();

    let rows = sqlx::query!(
        r#"SELECT id, framework, native_id, kind, parent_id, title, summary, url, technical, services,
                  attributes, alias_keys
           FROM kb_controls WHERE version_id = $1 ORDER BY framework, native_id COLLATE kb_natural"#,
        version
    )
    .fetch_all(db)
    .await?;
    let mut controls = Vec::with_capacity(rows.len());
    let mut parents = Vec::with_capacity(rows.len());
    let mut aliases: HashMap<String, Vec<usize>> = HashMap::new();
    for r in rows {
        let Some(&framework) = fw_index.get(r.framework.as_str()) else {
            continue;
        };
        let n = controls.len();
        for key in r.alias_keys {
            aliases.entry(key).or_default().push(n);
        }
        parents.push(r.parent_id);
        controls.push(Control {
            id: r.id,
            framework,
            native_id: r.native_id,
            kind: r.kind,
            parent: None,
            children: Vec::new(),
            title: r.title,
            summary: r.summary,
            url: r.url,
            technical: r.technical,
            services: r.services,
            attributes: match r.attributes {
                serde_json::Value::Object(map) => map,
                _ => Default::default(),
            },
            checks: Vec::new(),
            related: Vec::new(),
        });
    }
    let by_id: HashMap<String, usize> = controls
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    for (i, parent) in parents.iter().enumerate() {
        if let Some(&p) = parent.as_ref().and_then(|p| by_id.get(p)) {
            controls[i].parent = Some(p);
            controls[p].children.push(i);
        }
    }

    let rem_rows = sqlx::query!(
        "SELECT id, title, steps, cli, cloudformation, terraform FROM kb_remediations
         WHERE version_id = $1 ORDER BY id",
        version
    )
    .fetch_all(db)
    .await?;
    let remediations: Vec<Remediation> = rem_rows
        .into_iter()
        .map(|r| Remediation {
            id: r.id,
            title: r.title,
            steps: r.steps,
            cli: r.cli,
            cloudformation: r.cloudformation,
            terraform: r.terraform,
        })
        .collect();
    let rem_index: HashMap<&str, usize> = remediations
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let check_rows = sqlx::query!(
        "SELECT id, title, description, services, severity, remediation_id FROM kb_checks
         WHERE version_id = $1 ORDER BY id",
        version
    )
    .fetch_all(db)
    .await?;
    let mut checks: Vec<Check> = check_rows
        .into_iter()
        .map(|r| Check {
            remediation: rem_index.get(r.remediation_id.as_str()).copied(),
            id: r.id,
            title: r.title,
            description: r.description,
            services: r.services,
            severity: r.severity,
            controls: Vec::new(),
        })
        .collect();
    let check_index: HashMap<String, usize> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();

    let edges = sqlx::query!(
        r#"SELECT type AS "kind", from_id, to_id, strength FROM kb_relationships
           WHERE version_id = $1 AND type IN ('maps_to', 'related_to')
           ORDER BY type, from_id, to_id"#,
        version
    )
    .fetch_all(db)
    .await?;
    for e in edges {
        match e.kind.as_str() {
            "maps_to" => {
                if let (Some(&c), Some(&k)) = (by_id.get(&e.from_id), check_index.get(&e.to_id)) {
                    let strength = e.strength.unwrap_or_else(|| "partial".into());
                    if strength != "supporting" {
                        checks[k].controls.push(c);
                    }
                    controls[c].checks.push((k, strength));
                }
            }
            _ => {
                if let (Some(&a), Some(&b)) = (by_id.get(&e.from_id), by_id.get(&e.to_id)) {
                    controls[a].related.push(b);
                    controls[b].related.push(a);
                }
            }
        }
    }

    let services = sqlx::query!(
        "SELECT id, name FROM kb_services WHERE version_id = $1 ORDER BY id",
        version
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| Service {
        id: r.id,
        name: r.name,
    })
    .collect();

    let mut snapshot = Snapshot {
        checksum,
        frameworks,
        controls,
        checks,
        remediations,
        services,
        by_id,
        aliases,
        tf: Vec::new(),
        len: Vec::new(),
        avg_len: 1.0,
        df: HashMap::new(),
    };
    snapshot.index();
    Ok(snapshot)
}

/// Field weights of a control's words in ranking.
const W_TITLE: f64 = 3.0;
const W_SUMMARY: f64 = 1.0;
const W_CONTEXT: f64 = 0.4;
const W_CHECK: f64 = 0.3;

impl Snapshot {
    fn index(&mut self) {
        let mut tf = Vec::with_capacity(self.controls.len());
        let mut len = Vec::with_capacity(self.controls.len());
        let mut df: HashMap<String, usize> = HashMap::new();
        for c in &self.controls {
            let mut m: HashMap<String, f64> = HashMap::new();
            let mut add = |text: &str, w: f64, once: bool| {
                for t in vocabulary::terms(text) {
                    let e = m.entry(t).or_default();
                    if once {
                        *e = e.max(w);
                    } else {
                        *e += w;
                    }
                }
            };
            add(&c.title, W_TITLE, false);
            add(&c.summary, W_SUMMARY, false);
            if let Some(p) = c.parent {
                add(&self.controls[p].title, W_CONTEXT, true);
            }
            let attrs: Vec<String> = c
                .attributes
                .iter()
                .filter(|(k, _)| k.as_str() != "resource_type")
                .map(|(_, v)| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect();
            add(&attrs.join(" "), W_CONTEXT, true);
            for s in &c.services {
                add(s, W_CONTEXT, true);
            }
            for (k, strength) in &c.checks {
                if strength != "supporting" {
                    add(&self.checks[*k].title, W_CHECK, true);
                }
            }
            len.push(m.values().sum::<f64>());
            for t in m.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            tf.push(m);
        }
        self.avg_len = (len.iter().sum::<f64>() / len.len().max(1) as f64).max(1.0);
        self.tf = tf;
        self.len = len;
        self.df = df;
    }

    /// The control with this canonical id (`control:pci-dss@4.0.1:8.4.2`).
    pub fn control(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn framework_of(&self, control: usize) -> &Framework {
        &self.frameworks[self.controls[control].framework]
    }

    /// Versions of a framework in the KB, oldest first.
    pub fn versions(&self, framework_id: &str) -> Vec<&Framework> {
        let mut v: Vec<&Framework> = self
            .frameworks
            .iter()
            .filter(|f| f.id == framework_id)
            .collect();
        v.sort_by(|a, b| ids::compare_versions(&a.version, &b.version));
        v
    }

    /// Whether this framework version is the newest of its framework.
    pub fn is_newest(&self, framework: usize) -> bool {
        let f = &self.frameworks[framework];
        self.versions(&f.id).last().is_some_and(|n| n.key == f.key)
    }

    /// The citation id of a control: `pci-dss:8.4.2` when its framework has one version in the
    /// KB, `cis-aws@3.0.0:1.5` when it has several (both resolve with `GET /kb/controls/{id}`).
    pub fn citation_id(&self, control: usize) -> String {
        let c = &self.controls[control];
        let f = &self.frameworks[c.framework];
        if self.versions(&f.id).len() > 1 {
            format!("{}:{}", f.key, c.native_id)
        } else {
            format!("{}:{}", f.id, c.native_id)
        }
    }

    /// Controls answering to a typed id (see [`ids::parse`]), the framework and version it names
    /// honoured; with no version, the newest release of each framework. Several frameworks may
    /// remain (`1.5` is PCI and CIS): the caller decides.
    pub fn resolve(&self, typed: &ids::TypedId) -> Vec<usize> {
        let mut found: Vec<usize> = self
            .aliases
            .get(&typed.key)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&c| {
                let f = self.framework_of(c);
                typed.framework.is_none_or(|w| w == f.id)
                    && typed
                        .version
                        .as_deref()
                        .is_none_or(|v| ids::version_matches(&f.version, v))
            })
            .collect();
        if typed.version.is_none() {
            let all = found.clone();
            found.retain(|&c| {
                let f = self.framework_of(c);
                !all.iter().any(|&o| {
                    let g = self.framework_of(o);
                    g.id == f.id && ids::compare_versions(&g.version, &f.version).is_gt()
                })
            });
        }
        found.sort_by(|a, b| {
            self.controls[*a]
                .framework
                .cmp(&self.controls[*b].framework)
        });
        found
    }

    /// BM25-style scores of the controls `keep` admits for weighted query stems, best first
    /// (ties by id, so the order is deterministic). Only controls sharing a stem are scored.
    pub fn rank(&self, query: &[(String, f64)], keep: impl Fn(usize) -> bool) -> Vec<(usize, f64)> {
        let n = self.controls.len() as f64;
        let mut merged: HashMap<&str, f64> = HashMap::new();
        for (t, w) in query {
            let e = merged.entry(t.as_str()).or_default();
            *e = e.max(*w);
        }
        let mut scores: Vec<(usize, f64)> = Vec::new();
        for (i, tf) in self.tf.iter().enumerate() {
            if !keep(i) {
                continue;
            }
            let mut s = 0.0;
            for (t, w) in &merged {
                if let Some(&f) = tf.get(*t) {
                    let df = *self.df.get(*t).unwrap_or(&0) as f64;
                    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                    let norm = 1.2 * (0.25 + 0.75 * self.len[i] / self.avg_len);
                    s += w * idf * f * 2.2 / (f + norm);
                }
            }
            if s > 0.0 {
                scores.push((i, s));
            }
        }
        scores.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.controls[a.0].id.cmp(&self.controls[b.0].id))
        });
        scores
    }

    /// Whether a control concerns an AWS service: directly, or through a check that evidences it.
    pub fn touches_service(&self, control: usize, service: &str) -> bool {
        let c = &self.controls[control];
        c.services.iter().any(|s| s == service)
            || c.checks.iter().any(|(k, strength)| {
                strength != "supporting" && self.checks[*k].services.iter().any(|s| s == service)
            })
    }

    /// Controls of other frameworks with the same objective: curated links first, then those
    /// sharing the most checks that evidence both.
    pub fn related(&self, control: usize) -> Vec<usize> {
        let c = &self.controls[control];
        let mut out: Vec<usize> = c
            .related
            .iter()
            .copied()
            .filter(|&o| self.controls[o].framework != c.framework)
            .collect();
        let mut shared: HashMap<usize, usize> = HashMap::new();
        for (k, strength) in &c.checks {
            if strength == "supporting" {
                continue;
            }
            for &o in &self.checks[*k].controls {
                if self.controls[o].framework != c.framework {
                    *shared.entry(o).or_default() += 1;
                }
            }
        }
        let mut shared: Vec<(usize, usize)> = shared.into_iter().collect();
        shared.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| self.controls[a.0].id.cmp(&self.controls[b.0].id))
        });
        for (o, _) in shared {
            if !out.contains(&o) {
                out.push(o);
            }
        }
        out
    }

    /// Whether the control groups others (a section, chapter, service group…).
    pub fn is_group(&self, control: usize) -> bool {
        GROUP_KINDS.contains(&self.controls[control].kind.as_str())
    }

    /// A control's obligation, level, severity or risk, as a reader wants it next to its id.
    pub fn standing(&self, control: usize) -> Option<String> {
        let a = &self.controls[control].attributes;
        let text = |k: &str| {
            a.get(k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        };
        if let Some(o) = text("obligation") {
            return Some(o);
        }
        if let Some(l) = text("level") {
            let assessment = text("assessment")
                .map(|x| format!(", {x}"))
                .unwrap_or_default();
            return Some(format!("Level {l}{assessment}"));
        }
        if let Some(s) = text("severity") {
            return Some(format!("{s} severity"));
        }
        if let Some(r) = text("risk") {
            return Some(format!("{r} risk if not followed"));
        }
        None
    }
}
