//! The shipped knowledge base: verified, complete at the pinned versions, and accurate on
//! well-known identifiers. Sizes are those of docs/KB-DATA.md ("Frameworks: versions, true sizes and traps") unless a comment says why not.

use std::collections::HashMap;
use std::path::Path;

use cloud_optimizer::kb::model::{Control, Kb, read_and_verify};

use crate::helpers::KB_DIR;

fn kb() -> Kb {
    read_and_verify(Path::new(KB_DIR)).unwrap_or_else(|e| {
        panic!(
            "shipped KB must verify:\n{}",
            e.issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn of<'a>(kb: &'a Kb, framework: &str) -> Vec<&'a Control> {
    kb.controls
        .iter()
        .filter(|c| c.framework.starts_with(&format!("{framework}@")))
        .collect()
}

fn count(controls: &[&Control], kind: &str) -> usize {
    controls.iter().filter(|c| c.file.kind == kind).count()
}

fn get<'a>(controls: &[&'a Control], id: &str) -> &'a Control {
    controls
        .iter()
        .find(|c| c.native_id == id)
        .copied()
        .unwrap_or_else(|| panic!("{id} missing"))
}

fn attr(c: &Control, name: &str) -> String {
    match c.file.attributes.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[test]
fn hipaa_security_rule_is_complete_with_the_flags_in_force() {
    let kb = kb();
    let hipaa = of(&kb, "hipaa-sr");
    let in_safeguards = |c: &&&Control| {
        ["164.308", "164.310", "164.312"]
            .iter()
            .any(|s| c.native_id.starts_with(s))
    };
    let standards: Vec<_> = hipaa
        .iter()
        .filter(|c| c.file.kind == "standard")
        .filter(in_safeguards)
        .collect();
    let specs: Vec<_> = hipaa
        .iter()
        .filter(|c| c.file.kind == "implementation_specification")
        .filter(in_safeguards)
        .collect();
    assert_eq!(standards.len(), 18);
    assert_eq!(specs.len(), 36);
    assert_eq!(
        specs
            .iter()
            .filter(|c| attr(c, "obligation") == "required")
            .count(),
        14
    );
    assert_eq!(
        specs
            .iter()
            .filter(|c| attr(c, "obligation") == "addressable")
            .count(),
        22
    );
    assert_eq!(
        attr(get(&hipaa, "164.312(a)(2)(iv)"), "obligation"),
        "addressable",
        "encryption and decryption"
    );
    assert_eq!(
        attr(get(&hipaa, "164.308(a)(1)(ii)(A)"), "obligation"),
        "required",
        "risk analysis"
    );
    assert_eq!(
        attr(get(&hipaa, "164.312(a)(2)(i)"), "obligation"),
        "required",
        "unique user identification"
    );
    assert_eq!(
        get(&hipaa, "164.312(b)").file.kind,
        "standard",
        "audit controls"
    );
    assert!(hipaa.iter().any(|c| c.native_id.starts_with("164.314")));
    assert!(hipaa.iter().any(|c| c.native_id.starts_with("164.316")));
}

#[test]
fn soc2_has_all_61_criteria() {
    let kb = kb();
    let soc2 = of(&kb, "soc2");
    let criteria: Vec<_> = soc2.iter().filter(|c| c.file.kind == "criterion").collect();
    assert_eq!(criteria.len(), 61);
    let series = |prefix: &str| {
        criteria
            .iter()
            .filter(|c| c.native_id.starts_with(prefix))
            .count()
    };
    assert_eq!(series("CC"), 33);
    assert_eq!(series("A1."), 3);
    assert_eq!(series("C1."), 2);
    assert_eq!(series("PI1."), 5);
    assert_eq!(
        criteria
            .iter()
            .filter(|c| c.native_id.starts_with('P') && !c.native_id.starts_with("PI"))
            .count(),
        18
    );
    for id in ["CC6.1", "CC7.2", "CC9.2", "A1.3", "P8.1"] {
        get(&soc2, id);
    }
}

#[test]
fn pci_dss_4_0_1_has_every_numbered_requirement() {
    let kb = kb();
    let pci = of(&kb, "pci-dss");
    assert_eq!(count(&pci, "principal_requirement"), 12);
    let requirements: Vec<_> = pci
        .iter()
        .filter(|c| c.file.kind == "requirement")
        .collect();
    let body = requirements
        .iter()
        .filter(|c| !c.native_id.starts_with('A'))
        .count();
    assert_eq!(body, 250);
    assert_eq!(requirements.len(), 280, "with appendices A1-A3");
    assert!(
        requirements
            .iter()
            .all(|c| !c.native_id.ends_with(".a") && !c.native_id.ends_with(".b")),
        "no testing procedures"
    );
    assert!(get(&pci, "8.4.2").file.title.to_lowercase().contains("mfa"));
    for id in ["1.2.1", "3.5.1", "10.2.1", "12.10.1", "A1.1.1", "A3.5.1"] {
        get(&pci, id);
    }
}

#[test]
fn gdpr_has_99_articles_in_11_chapters() {
    let kb = kb();
    let gdpr = of(&kb, "gdpr");
    assert_eq!(count(&gdpr, "article"), 99);
    assert_eq!(count(&gdpr, "chapter"), 11);
    assert_eq!(attr(get(&gdpr, "Art. 32"), "chapter"), "4");
    assert_eq!(attr(get(&gdpr, "Art. 17"), "chapter"), "3");
    assert!(
        get(&gdpr, "Art. 33")
            .file
            .title
            .to_lowercase()
            .contains("breach")
    );
}

#[test]
fn cis_aws_is_version_3_0_0_with_its_own_numbering() {
    let kb = kb();
    let cis: Vec<&Control> = kb
        .controls
        .iter()
        .filter(|c| c.framework == "cis-aws@3.0.0")
        .collect();
    let recs: Vec<_> = cis
        .iter()
        .filter(|c| c.file.kind == "recommendation")
        .collect();
    assert_eq!(recs.len(), 62);
    // The v3.0.0 benchmark (checked against three independent sources, see docs/KB-DATA.md) has
    // 40 Level 1 and 22 Level 2: 2.1.2 and 4.1 are Level 2. Prowler's file carries older flags.
    assert_eq!(recs.iter().filter(|c| attr(c, "level") == "1").count(), 40);
    assert_eq!(recs.iter().filter(|c| attr(c, "level") == "2").count(), 22);
    // v3.0.0 numbering: 1.5 is root MFA (it is 1.4 in v5.0.0), 1.4 is no root access keys.
    let root_mfa = get(&cis, "1.5").file.title.to_lowercase();
    assert!(
        root_mfa.contains("root") && root_mfa.contains("mfa"),
        "{root_mfa}"
    );
    assert!(
        get(&cis, "1.4")
            .file
            .title
            .to_lowercase()
            .contains("access key")
    );
}

#[test]
fn fsbp_contains_only_members_of_the_standard() {
    let kb = kb();
    let fsbp = of(&kb, "aws-fsbp");
    let controls = count(&fsbp, "control");
    assert!((200..=350).contains(&controls), "{controls} FSBP controls");
    for not_member in [
        "IAM.9",
        "IAM.15",
        "IAM.16",
        "KMS.4",
        "EC2.13",
        "CloudTrail.7",
    ] {
        assert!(
            fsbp.iter().all(|c| c.native_id != not_member),
            "{not_member} is not an FSBP control"
        );
    }
    let iam6 = get(&fsbp, "IAM.6");
    assert!(
        iam6.file.title.to_lowercase().contains("hardware"),
        "{}",
        iam6.file.title
    );
    assert_eq!(attr(iam6, "severity"), "critical");
    get(&fsbp, "S3.1");
}

#[test]
fn well_architected_security_pillar_has_its_questions_and_best_practices() {
    let kb = kb();
    let wa = of(&kb, "aws-wa-security");
    assert_eq!(count(&wa, "question"), 11);
    let bps = count(&wa, "best_practice");
    assert!((55..=70).contains(&bps), "{bps} best practices");
    get(&wa, "SEC08-BP02");
}

#[test]
fn catalogue_has_the_manifest_s_checks_each_with_remediation_and_services() {
    let kb = kb();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(KB_DIR).join("manifest.json")).unwrap(),
    )
    .unwrap();
    // The README promises the manifest's total (468 today), not "some".
    assert_eq!(
        Some(kb.checks.len() as u64),
        manifest["totals"]["checks"].as_u64(),
        "checks in the catalogue vs the manifest's total"
    );
    let remediations: HashMap<&str, _> =
        kb.remediations.iter().map(|r| (r.id.as_str(), r)).collect();
    for check in &kb.checks {
        let r = remediations[check.remediation.as_str()];
        assert!(!r.steps.is_empty());
        assert!(r.cli.is_some() || r.cloudformation.is_some() || r.terraform.is_some());
    }
    let with_security_hub = kb
        .checks
        .iter()
        .filter(|c| !c.refs.security_hub.is_empty())
        .count();
    assert!(
        with_security_hub >= 150,
        "{with_security_hub} checks reference Security Hub"
    );
}

#[test]
fn every_technical_control_maps_to_checks_and_crosswalk_links_frameworks() {
    let kb = kb();
    let mapped: std::collections::HashSet<&str> = kb
        .relationships
        .iter()
        .filter(|r| r.kind == "maps_to")
        .map(|r| r.from.as_str())
        .collect();
    for control in kb.controls.iter().filter(|c| c.file.technical) {
        assert!(
            mapped.contains(control.id.as_str()),
            "{} has no checks",
            control.id
        );
    }
    let related = kb
        .relationships
        .iter()
        .filter(|r| r.kind == "related_to")
        .count();
    assert!(related >= 60, "{related} crosswalk links");
}

#[test]
fn manifest_records_upstream_sources_with_licences() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(KB_DIR).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let upstream = manifest["upstream"].as_array().unwrap();
    assert!(upstream.len() >= 3);
    assert!(
        upstream
            .iter()
            .all(|u| u["license"].as_str().is_some_and(|l| !l.is_empty()))
    );
    assert!(
        upstream
            .iter()
            .any(|u| u["name"].as_str().unwrap().contains("Prowler"))
    );
}

fn checks_of<'a>(kb: &'a Kb, control_id: &str) -> Vec<&'a str> {
    kb.relationships
        .iter()
        .filter(|r| r.kind == "maps_to" && r.from == control_id)
        .map(|r| r.to.as_str())
        .collect()
}

#[test]
fn every_control_check_edge_has_a_strength_and_its_own_rationale() {
    let kb = kb();
    let edges: Vec<_> = kb
        .relationships
        .iter()
        .filter(|r| r.kind == "maps_to")
        .collect();
    assert!(edges.len() > 1_500, "{} edges", edges.len());
    let mut rationales = std::collections::HashSet::new();
    for edge in &edges {
        assert!(
            matches!(
                edge.strength.as_deref(),
                Some("direct" | "partial" | "supporting")
            ),
            "{} -> {}",
            edge.from,
            edge.to
        );
        let rationale = edge.rationale.as_deref().unwrap_or_default();
        assert!(!rationale.trim().is_empty(), "{} -> {}", edge.from, edge.to);
        rationales.insert(rationale);
    }
    // One line per pair, not one boilerplate sentence pasted across hundreds of edges.
    assert!(
        rationales.len() * 10 > edges.len() * 9,
        "{} distinct rationales for {} edges",
        rationales.len(),
        edges.len()
    );
}

#[test]
fn the_audits_loose_mappings_are_gone_and_obvious_ones_are_there() {
    let kb = kb();
    // Clearinghouse isolation is organisational: no AWS check evidences it.
    assert!(checks_of(&kb, "control:hipaa-sr@2013:164.308(a)(4)(ii)(A)").is_empty());
    // Network security controls between trusted and untrusted networks: security groups / NACLs.
    let pci_141 = checks_of(&kb, "control:pci-dss@4.0.1:1.4.1");
    assert!(
        pci_141
            .iter()
            .any(|c| c.contains("-sg-") || c.contains("nacl")),
        "{pci_141:?}"
    );
    // Monitoring is evidenced by detective checks, not by preventive configuration.
    let cc72 = checks_of(&kb, "control:soc2@2017:CC7.2");
    assert!(!cc72.is_empty());
    assert!(
        cc72.iter()
            .all(|c| !c.contains("imdsv2") && !c.contains("-sg-")),
        "{cc72:?}"
    );
    // Data protection by default: protective defaults, not generic account hygiene.
    let art25 = checks_of(&kb, "control:gdpr@2016-679:Art. 25");
    assert!(!art25.is_empty() && art25.len() <= 10, "{art25:?}");
    assert!(
        art25.iter().all(|c| !c.contains("password")
            && !c.contains("support-role")
            && !c.contains("cloudwatch-alarm")),
        "{art25:?}"
    );
    // HIPAA's encryption specification maps directly to encryption at rest.
    let hipaa = checks_of(&kb, "control:hipaa-sr@2013:164.312(a)(2)(iv)");
    assert!(hipaa.iter().any(|c| c.contains("encrypt")), "{hipaa:?}");
}

#[test]
fn cis_aws_v5_sits_beside_v3_with_its_own_numbering_and_a_crosswalk() {
    let kb = kb();
    let v5: Vec<&Control> = kb
        .controls
        .iter()
        .filter(|c| c.framework == "cis-aws@5.0.0")
        .collect();
    let recs: Vec<&&Control> = v5
        .iter()
        .filter(|c| c.file.kind == "recommendation")
        .collect();
    assert_eq!(recs.len(), 63);
    assert_eq!(recs.iter().filter(|c| attr(c, "level") == "1").count(), 41);
    assert_eq!(recs.iter().filter(|c| attr(c, "level") == "2").count(), 22);
    // Root-user MFA is 1.5 in v3.0.0 and 1.4 in v5.0.0.
    assert_eq!(
        checks_of(&kb, "control:cis-aws@5.0.0:1.4"),
        checks_of(&kb, "control:cis-aws@3.0.0:1.5")
    );
    assert!(kb.relationships.iter().any(|r| r.kind == "related_to"
        && r.from == "control:cis-aws@5.0.0:1.4"
        && r.to == "control:cis-aws@3.0.0:1.5"));
    assert!(of(&kb, "cis-aws").len() > 120, "both versions are served");
}

#[test]
fn audit_fixes_hold() {
    let kb = kb();
    let fsbp = of(&kb, "aws-fsbp");
    assert_eq!(
        attr(get(&fsbp, "RDS.11"), "resource_type"),
        "AWS::RDS::DBInstance"
    );
    for article in of(&kb, "gdpr") {
        assert!(
            article.file.url.starts_with("https://eur-lex.europa.eu/"),
            "{} {}",
            article.native_id,
            article.file.url
        );
    }
    for service in ["connect", "datasync", "servicecatalog", "workspaces"] {
        assert!(kb.services.iter().any(|s| s.id == service), "{service}");
    }
}
