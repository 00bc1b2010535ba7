//! Control ids as people type them. Auditors, Prowler, Security Hub and our own users write the
//! same control many ways (`164.308(a)(7)(i)`, `164_308_a_7_i`, `Article 32(1)(a)`, `GDPR-32`,
//! `Req. 8.4.2`, `iam.6`, `CIS v3.0.0 1.5`). Every form is reduced to one lookup key; each control
//! stores the keys it answers to (`kb_controls.alias_keys`, filled at load time), so resolving a
//! typed id is one indexed lookup.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

/// What a typed id says: maybe a framework (and version), and the lookup key of the id itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedId {
    /// Framework id (`pci-dss`, `hipaa-sr`, …) named or implied by the text.
    pub framework: Option<&'static str>,
    /// Framework version named by the text (`3.0.0` in `CIS v3.0.0 1.5`).
    pub version: Option<String>,
    pub key: String,
}

/// Framework names as people write them, longest first so `pci dss` wins over `pci`.
const FRAMEWORK_WORDS: &[(&str, &str)] = &[
    ("aws-wa-security", "aws-wa-security"),
    ("well-architected", "aws-wa-security"),
    ("wellarchitected", "aws-wa-security"),
    ("aws-fsbp", "aws-fsbp"),
    ("securityhub", "aws-fsbp"),
    ("hipaa-sr", "hipaa-sr"),
    ("pci-dss", "pci-dss"),
    ("pcidss", "pci-dss"),
    ("cis-aws", "cis-aws"),
    ("hipaa", "hipaa-sr"),
    ("45cfr", "hipaa-sr"),
    ("fsbp", "aws-fsbp"),
    ("gdpr", "gdpr"),
    ("soc2", "soc2"),
    ("pci", "pci-dss"),
    ("cis", "cis-aws"),
    ("wa", "aws-wa-security"),
];

/// A framework version inside a typed id: `@3.0.0`, `v5`, `v3.0.0`, `@2016-679`.
static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:@|\bv)(\d{4}(?:-\d{2,3}){1,2}|\d{4}|\d{1,2}(?:\.\d+){0,2})\b").unwrap()
});
static PROWLER_HIPAA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^164_(\d{3})((?:_[a-z0-9]{1,4})*)$").unwrap());
static GDPR_ARTICLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:art(?:icle)?\.?-?)?(\d{1,2})((?:\([0-9a-z]{1,4}\))*)$").unwrap()
});
static WA_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^sec(\d{1,2})(?:-?bp(\d{1,2}))?$").unwrap());

/// Lower case, no white space, no decoration: the form both sides of a lookup are reduced to.
pub fn squash(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '§' | '[' | ']'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Reads a typed id: `PCI DSS Req. 8.4.2`, `control:cis-aws@3.0.0:1.5`, `gdpr:Art. 32`, `IAM.6`.
pub fn parse(raw: &str) -> TypedId {
    let lower = raw.trim().to_lowercase();
    let lower = lower.strip_prefix("control:").unwrap_or(&lower);
    // The version first, while white space still separates it from the id (`CIS v3.0.0 1.5`).
    let (version, rest) = match VERSION.captures(lower) {
        Some(caps) if caps.get(0).is_some_and(|m| m.start() > 0) => {
            let whole = caps.get(0).expect("match");
            let rest = format!("{} {}", &lower[..whole.start()], &lower[whole.end()..]);
            (Some(caps[1].to_string()), rest)
        }
        _ => (None, lower.to_string()),
    };
    let mut rest = squash(&rest);
    let mut framework = None;
    for (word, id) in FRAMEWORK_WORDS {
        if let Some(stripped) = rest.strip_prefix(word) {
            // Short words must not eat the start of an id such as `waf.1`.
            let next = stripped.chars().next();
            let boundary = next.is_none_or(|c| !c.is_ascii_alphabetic());
            // `SecurityHub.1` is an FSBP control id, not the word Security Hub before `.1`.
            if next != Some('.') && (boundary || word.len() > 3) {
                framework = Some(*id);
                rest = stripped.trim_start_matches(['-', ':']).to_string();
                break;
            }
        }
    }
    for prefix in ["requirement", "req.", "req", "recommendation", "rec."] {
        if let Some(stripped) = rest.strip_prefix(prefix)
            && stripped.starts_with(|c: char| c.is_ascii_digit())
        {
            rest = stripped.to_string();
            break;
        }
    }
    let key = key_of(&rest, framework);
    let framework = framework.or_else(|| implied_framework(&key));
    TypedId {
        framework,
        version,
        key,
    }
}

/// The lookup key of an id already stripped of framework words.
fn key_of(id: &str, framework: Option<&str>) -> String {
    if let Some(caps) = PROWLER_HIPAA.captures(id) {
        let mut out = format!("164.{}", &caps[1]);
        for part in caps[2].split('_').filter(|p| !p.is_empty()) {
            out.push('(');
            out.push_str(part);
            out.push(')');
        }
        return out;
    }
    let gdpr_context = framework == Some("gdpr") || id.starts_with("art");
    if gdpr_context && let Some(caps) = GDPR_ARTICLE.captures(id) {
        // Our GDPR controls are articles: a paragraph reference resolves to its article.
        return format!("art.{}", &caps[1]);
    }
    if let Some(caps) = WA_ID.captures(id) {
        let question: u32 = caps[1].parse().unwrap_or(0);
        return match caps.get(2) {
            Some(bp) => format!(
                "sec{question:02}-bp{:02}",
                bp.as_str().parse::<u32>().unwrap_or(0)
            ),
            None => format!("sec{question:02}"),
        };
    }
    id.to_string()
}

fn implied_framework(key: &str) -> Option<&'static str> {
    if key.starts_with("164.") {
        Some("hipaa-sr")
    } else if key.starts_with("art.") {
        Some("gdpr")
    } else if WA_ID.is_match(key) {
        Some("aws-wa-security")
    } else {
        None
    }
}

/// Whether a framework version (`5.0.0`) is the one a client named (`5.0.0`, `5.0` or `5`).
pub fn version_matches(version: &str, wanted: &str) -> bool {
    version.eq_ignore_ascii_case(wanted)
        || version
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with(['.', '-']))
}

/// Orders framework versions by their numbers (`3.0.0` < `5.0.0` < `10.0`), text as a tie-break.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn numbers(v: &str) -> Vec<u64> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    }
    numbers(a).cmp(&numbers(b)).then_with(|| a.cmp(b))
}

/// Of `(control id, framework key)` matches, the one of the newest version of each framework:
/// a client that names no version means the current release (CIS v5.0.0 over v3.0.0).
pub fn newest_per_framework(matches: &[(String, String)]) -> Vec<(String, String)> {
    let mut best: Vec<(String, String)> = Vec::new();
    for (id, framework) in matches {
        let (base, version) = framework.split_once('@').unwrap_or((framework, ""));
        match best
            .iter_mut()
            .find(|(_, f)| f.split_once('@').map_or(f.as_str(), |x| x.0) == base)
        {
            Some(slot) => {
                let current = slot.1.split_once('@').map_or("", |x| x.1);
                if compare_versions(version, current).is_gt() {
                    *slot = (id.clone(), framework.clone());
                }
            }
            None => best.push((id.clone(), framework.clone())),
        }
    }
    best.sort_by(|a, b| a.1.cmp(&b.1));
    best
}

/// A framework version named anywhere in free text (`CIS v3.0.0 1.5`, `pci-dss@4.0.1`).
pub fn version_in(text: &str) -> Option<String> {
    VERSION
        .captures(&text.to_lowercase())
        .map(|caps| caps[1].to_string())
}

/// Every key a control answers to: its own id and the other forms in use for it.
/// `native_ids` are all native ids of the same framework (to tell whether `164.314(a)` is free).
pub fn alias_keys(
    framework_id: &str,
    native_id: &str,
    kind: &str,
    extra_aliases: &[String],
    native_ids: &HashSet<String>,
) -> Vec<String> {
    let own = key_of(&squash(native_id), Some(framework_id));
    let mut keys = vec![own.clone()];
    if framework_id == "hipaa-sr" && kind == "standard" {
        // The regulation labels a standard's own text `(i)` when implementation
        // specifications follow as `(ii)`; Prowler and auditors cite it that way.
        keys.push(format!("{own}(i)"));
        // `164.314(a)` for `164.314(a)(1)` when the paragraph holds only that standard.
        if let Some(paragraph) = own.strip_suffix("(1)") {
            let sibling = format!("{paragraph}(2)");
            if !native_ids.iter().any(|n| squash(n) == sibling) {
                keys.push(paragraph.to_string());
            }
        }
    }
    for alias in extra_aliases {
        keys.push(key_of(&squash(alias), Some(framework_id)));
    }
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> (Option<&'static str>, Option<String>, String) {
        let t = parse(raw);
        (t.framework, t.version, t.key)
    }

    #[test]
    fn hipaa_forms_reduce_to_one_key() {
        for raw in [
            "164.308(a)(7)(ii)(A)",
            "164.308 (a)(7)(ii)(A)",
            "§ 164.308(a)(7)(ii)(A)",
            "45 CFR 164.308(a)(7)(ii)(A)",
            "HIPAA 164.308(a)(7)(ii)(A)",
            "164_308_a_7_ii_a",
        ] {
            assert_eq!(
                key(raw),
                (Some("hipaa-sr"), None, "164.308(a)(7)(ii)(a)".into()),
                "{raw}"
            );
        }
    }

    #[test]
    fn gdpr_forms_reduce_to_the_article() {
        for raw in [
            "Art. 32",
            "Art 32",
            "Article 32",
            "Article 32(1)(a)",
            "GDPR-32",
            "GDPR Art. 32",
            "gdpr:Art. 32",
        ] {
            assert_eq!(key(raw), (Some("gdpr"), None, "art.32".into()), "{raw}");
        }
    }

    #[test]
    fn pci_cis_fsbp_soc2_and_wa_forms() {
        assert_eq!(key("Req. 8.4.2"), (None, None, "8.4.2".into()));
        assert_eq!(
            key("PCI DSS 8.4.2"),
            (Some("pci-dss"), None, "8.4.2".into())
        );
        assert_eq!(
            key("pci-dss@4.0.1:8.4.2"),
            (Some("pci-dss"), Some("4.0.1".into()), "8.4.2".into())
        );
        assert_eq!(key("CIS 1.5"), (Some("cis-aws"), None, "1.5".into()));
        assert_eq!(
            key("CIS v3.0.0 1.5"),
            (Some("cis-aws"), Some("3.0.0".into()), "1.5".into())
        );
        assert_eq!(
            key("control:cis-aws@5.0.0:1.4"),
            (Some("cis-aws"), Some("5.0.0".into()), "1.4".into())
        );
        assert_eq!(key("cis-aws:1.5"), (Some("cis-aws"), None, "1.5".into()));
        assert_eq!(key("iam.6"), (None, None, "iam.6".into()));
        assert_eq!(key("[IAM.6]"), (None, None, "iam.6".into()));
        assert_eq!(key("CC 6.1"), (None, None, "cc6.1".into()));
        assert_eq!(
            key("SEC1-BP2"),
            (Some("aws-wa-security"), None, "sec01-bp02".into())
        );
        assert_eq!(key("WAF.1"), (None, None, "waf.1".into()));
        assert_eq!(key("SecurityHub.1"), (None, None, "securityhub.1".into()));
        assert_eq!(key("SOC 2 CC6.1"), (Some("soc2"), None, "cc6.1".into()));
        assert_eq!(
            key("Security Hub ELBv2.1"),
            (Some("aws-fsbp"), None, "elbv2.1".into())
        );
        assert_eq!(
            key("CIS v5 1.4"),
            (Some("cis-aws"), Some("5".into()), "1.4".into())
        );
    }

    #[test]
    fn versions_match_by_prefix_and_order_by_number() {
        assert!(version_matches("5.0.0", "5"));
        assert!(version_matches("5.0.0", "5.0.0"));
        assert!(!version_matches("5.0.0", "5.0.1"));
        assert!(!version_matches("50.0", "5"));
        assert!(compare_versions("10.0", "5.0.0").is_gt());
        let newest = newest_per_framework(&[
            ("control:cis-aws@5.0.0:1.4".into(), "cis-aws@5.0.0".into()),
            ("control:cis-aws@3.0.0:1.4".into(), "cis-aws@3.0.0".into()),
            ("control:pci-dss@4.0.1:1.4".into(), "pci-dss@4.0.1".into()),
        ]);
        assert_eq!(
            newest,
            vec![
                ("control:cis-aws@5.0.0:1.4".into(), "cis-aws@5.0.0".into()),
                ("control:pci-dss@4.0.1:1.4".into(), "pci-dss@4.0.1".into()),
            ]
        );
        assert_eq!(version_in("CIS v3.0.0 1.5"), Some("3.0.0".into()));
        assert_eq!(version_in("how do I encrypt s3"), None);
    }

    #[test]
    fn hipaa_standards_answer_to_their_paragraph_forms() {
        let natives: HashSet<String> = [
            "164.314(a)(1)",
            "164.314(a)(2)(i)",
            "164.308(a)(1)",
            "164.308(a)(2)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let keys = alias_keys("hipaa-sr", "164.314(a)(1)", "standard", &[], &natives);
        assert_eq!(
            keys,
            vec!["164.314(a)(1)", "164.314(a)(1)(i)", "164.314(a)"]
        );
        let keys = alias_keys("hipaa-sr", "164.308(a)(1)", "standard", &[], &natives);
        assert_eq!(
            keys,
            vec!["164.308(a)(1)", "164.308(a)(1)(i)"],
            "164.308(a) holds eight standards: it is no alias of the first"
        );
        let keys = alias_keys(
            "aws-wa-security",
            "SEC01-BP08",
            "best_practice",
            &["SEC01-BP07".into()],
            &HashSet::new(),
        );
        assert_eq!(keys, vec!["sec01-bp08", "sec01-bp07"]);
    }
}
