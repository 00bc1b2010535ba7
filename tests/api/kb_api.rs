//! `/api/v1/kb`: frameworks, controls with their graph, checks, services and search.

use crate::helpers::*;

#[tokio::test]
async fn frameworks_are_listed_with_counts() {
    let app = spawn_app().await;
    let frameworks = app.admin_json("/api/v1/kb/frameworks").await;
    let frameworks = items(&frameworks);
    let keys: Vec<&str> = frameworks
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "aws-fsbp@1.0.0",
            "aws-wa-security@2024-06-27",
            "cis-aws@3.0.0",
            "cis-aws@5.0.0",
            "gdpr@2016-679",
            "hipaa-sr@2013",
            "pci-dss@4.0.1",
            "soc2@2017"
        ]
    );
    let soc2 = frameworks.iter().find(|f| f["id"] == "soc2").unwrap();
    assert_eq!(soc2["counts"]["criterion"], 61);
}

#[tokio::test]
async fn controls_of_a_framework_are_paged_and_filtered() {
    let app = spawn_app().await;
    let page = app.admin_json("/api/v1/kb/frameworks/hipaa-sr/controls?kind=implementation_specification&obligation=addressable&limit=5").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert!(page["total"].as_i64().unwrap() >= 22);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["attributes"]["obligation"] == "addressable")
    );
    let next = app.admin_json("/api/v1/kb/frameworks/hipaa-sr@2013/controls?kind=implementation_specification&obligation=addressable&limit=5&offset=5").await;
    assert_ne!(page["items"][0]["id"], next["items"][0]["id"]);

    let level2 = app
        .admin_json("/api/v1/kb/frameworks/cis-aws/controls?level=2&limit=500")
        .await;
    assert_eq!(level2["total"], 22);
    let s3 = app
        .admin_json("/api/v1/kb/frameworks/pci-dss/controls?service=s3&limit=500")
        .await;
    assert!(s3["total"].as_i64().unwrap() > 0);
    // Natural order: 8.4.2 comes before 8.4.10-style ids and 10.x after 9.x.
    let pci = app
        .admin_json("/api/v1/kb/frameworks/pci-dss/controls?kind=principal_requirement")
        .await;
    let ids: Vec<&str> = pci["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["native_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"
        ]
    );
}

#[tokio::test]
async fn bad_filters_are_400_with_the_allowed_values() {
    let app = spawn_app().await;
    let response = app
        .get_as(
            "/api/v1/kb/frameworks/pci-dss/controls?kind=bogus",
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 400, "invalid_filter").await;
    assert!(
        body["allowed"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("requirement"))
    );
    let response = app
        .get_as("/api/v1/kb/checks?severity=urgent", &app.admin_key)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 400, "invalid_filter").await;
    assert_eq!(
        body["allowed"],
        serde_json::json!(["low", "medium", "high", "critical"])
    );
    let response = app
        .get_as("/api/v1/kb/search?q=mfa&service=nosuch", &app.admin_key)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 400, "invalid_filter").await;
    assert!(
        body["allowed"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("s3"))
    );
    let response = app
        .get_as("/api/v1/kb/search?q=mfa&framework=iso27001", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_filter").await;
    let response = app
        .get_as("/api/v1/kb/search", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "missing_query").await;
    let response = app
        .get_as("/api/v1/kb/checks?limit=0", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_limit").await;
    let response = app
        .get_as("/api/v1/kb/checks?colour=red", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_query").await;
}

#[tokio::test]
async fn unknown_ids_are_404_problems() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/kb/controls/pci-dss:99.99.99",
        "/api/v1/kb/checks/no-such-check",
        "/api/v1/kb/services/nosuch",
    ] {
        let response = app.get_as(path, &app.admin_key).send().await.unwrap();
        assert_problem(response, 404, "not_found").await;
    }
    let response = app
        .get_as("/api/v1/kb/frameworks/iso27001/controls", &app.admin_key)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 404, "unknown_framework").await;
    assert!(body["allowed"].as_array().unwrap().len() == 8);
    let response = app
        .get_as("/api/v1/kb/controls/no-such-id", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
    let response = app
        .get_as("/api/v1/kb/controls/control:", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_control_id").await;
    // A framework's name is a well-formed id that names no control.
    let response = app
        .get_as("/api/v1/kb/controls/aws-wa-security", &app.admin_key)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 404, "not_found").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("names the framework"),
        "{body}"
    );
}

#[tokio::test]
async fn control_ids_resolve_as_people_type_them() {
    let app = spawn_app().await;
    let hipaa_7 = "control:hipaa-sr@2013:164.308(a)(7)";
    let ba = "control:hipaa-sr@2013:164.314(a)(1)";
    let art_32 = "control:gdpr@2016-679:Art. 32";
    let mfa = "control:pci-dss@4.0.1:8.4.2";
    let cis5 = "control:cis-aws@5.0.0:1.4";
    let cis3 = "control:cis-aws@3.0.0:1.4";
    let iam6 = "control:aws-fsbp@1.0.0:IAM.6";
    let cc61 = "control:soc2@2017:CC6.1";
    for (alias, canonical) in [
        ("164.308(a)(7)(i)", hipaa_7),
        ("164.308 (a)(7)(i)", hipaa_7),
        ("164_308_a_7_i", hipaa_7),
        ("HIPAA 164.308(a)(7)", hipaa_7),
        ("164.314(a)", ba),
        ("45 CFR 164.314(a)", ba),
        ("Article 32(1)(a)", art_32),
        ("Art 32", art_32),
        ("GDPR-32", art_32),
        ("gdpr:Art. 32", art_32),
        ("Req. 8.4.2", mfa),
        ("8.4.2", mfa),
        ("PCI DSS 8.4.2", mfa),
        ("pci-dss@4.0.1:8.4.2", mfa),
        ("cis-aws:1.4", cis5),
        ("CIS 1.4", cis5),
        ("CIS v5 1.4", cis5),
        ("CIS v3.0.0 1.4", cis3),
        ("control:cis-aws@3.0.0:1.4", cis3),
        ("iam.6", iam6),
        ("[IAM.6]", iam6),
        ("Security Hub IAM.6", iam6),
        ("CC 6.1", cc61),
        ("soc2:cc6.1", cc61),
        ("SEC6-BP6", "control:aws-wa-security@2024-06-27:SEC06-BP04"),
        ("sec1-bp1", "control:aws-wa-security@2024-06-27:SEC01-BP01"),
    ] {
        let control = app
            .admin_json(&format!("/api/v1/kb/controls/{}", pathencode(alias)))
            .await;
        assert_eq!(control["id"], canonical, "{alias}");
    }
    // Named by neither framework nor version, `1.4` is CIS (newest) and PCI DSS: say which.
    let response = app
        .get_as("/api/v1/kb/controls/1.4", &app.admin_key)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 400, "ambiguous_control_id").await;
    assert_eq!(
        body["candidates"],
        serde_json::json!([cis5, "control:pci-dss@4.0.1:1.4"])
    );
    // A framework named without a version means its newest release in filters too.
    let page = app
        .admin_json("/api/v1/kb/frameworks/cis-aws/controls?limit=1")
        .await;
    assert_eq!(page["items"][0]["framework"], "cis-aws@5.0.0");
    let page = app
        .admin_json("/api/v1/kb/frameworks/cis-aws@3/controls?limit=1")
        .await;
    assert_eq!(page["items"][0]["framework"], "cis-aws@3.0.0");
}

#[tokio::test]
async fn every_control_answers_to_its_canonical_and_short_ids() {
    let app = spawn_app_with(|env| {
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "100000".into());
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "100000".into());
    })
    .await;
    let frameworks = app.admin_json("/api/v1/kb/frameworks").await;
    let mut seen = 0;
    for framework in items(&frameworks) {
        let key = framework["key"].as_str().unwrap();
        let page = app
            .admin_json(&format!(
                "/api/v1/kb/frameworks/{}/controls?limit=500",
                urlencode(key)
            ))
            .await;
        for control in page["items"].as_array().unwrap() {
            let id = control["id"].as_str().unwrap();
            let short = format!("{key}:{}", control["native_id"].as_str().unwrap());
            for form in [id, short.as_str()] {
                let got = app
                    .admin_json(&format!("/api/v1/kb/controls/{}", pathencode(form)))
                    .await;
                assert_eq!(got["id"], id, "{form}");
            }
            seen += 1;
        }
    }
    assert!(seen > 1000, "{seen} controls walked");
}

#[tokio::test]
async fn a_control_comes_with_parent_children_checks_services_remediation_and_related() {
    let app = spawn_app().await;
    let control = app
        .admin_json("/api/v1/kb/controls/control:pci-dss@4.0.1:8.4.2")
        .await;
    assert_eq!(control["id"], "control:pci-dss@4.0.1:8.4.2");
    assert_eq!(control["parent"]["native_id"], "8.4");
    let checks = control["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["id"].as_str().unwrap().contains("mfa")),
        "{checks:?}"
    );
    assert!(
        control["services"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("iam"))
    );
    assert!(!control["remediations"].as_array().unwrap().is_empty());
    for check in checks {
        assert!(
            ["direct", "partial"].contains(&check["strength"].as_str().unwrap()),
            "{check}"
        );
        assert!(!check["rationale"].as_str().unwrap().is_empty(), "{check}");
    }
    let related = control["related"].as_array().unwrap();
    assert!(
        related
            .iter()
            .all(|r| !r["framework"].as_str().unwrap().starts_with("pci-dss"))
    );
    assert!(!related.is_empty());
    assert_eq!(control["graph_source"], "postgres");

    let same = app.admin_json("/api/v1/kb/controls/pci-dss:8.4.2").await;
    assert_eq!(same["id"], control["id"]);
    let article = app.admin_json("/api/v1/kb/controls/gdpr:Art.%2032").await;
    assert_eq!(article["parent"]["native_id"], "Chapter IV");
    let standard = app
        .admin_json("/api/v1/kb/controls/hipaa-sr:164.312(a)(1)")
        .await;
    assert!(
        standard["children"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["native_id"] == "164.312(a)(2)(iv)")
    );
}

#[tokio::test]
async fn checks_and_services_link_back_to_controls() {
    let app = spawn_app().await;
    let page = app
        .admin_json("/api/v1/kb/checks?service=s3&severity=critical&limit=50")
        .await;
    let checks = items(&page);
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|c| {
        c["severity"] == "critical"
            && c["services"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("s3"))
    }));
    let id = checks[0]["id"].as_str().unwrap();
    let check = app.admin_json(&format!("/api/v1/kb/checks/{id}")).await;
    assert!(
        check["remediation"]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(!check["controls"].as_array().unwrap().is_empty());

    let services = app.admin_json("/api/v1/kb/services").await;
    let s3 = items(&services)
        .iter()
        .find(|s| s["id"] == "s3")
        .unwrap()
        .clone();
    assert!(s3["check_count"].as_i64().unwrap() > 10 && s3["control_count"].as_i64().unwrap() > 10);
    let detail = app.admin_json("/api/v1/kb/services/S3").await;
    assert_eq!(
        detail["checks"].as_array().unwrap().len() as i64,
        s3["check_count"].as_i64().unwrap()
    );
    assert_eq!(
        detail["controls"].as_array().unwrap().len() as i64,
        s3["control_count"].as_i64().unwrap()
    );
    // Every field once: the counts and the lists have names of their own.
    let text = app
        .get_as("/api/v1/kb/services/s3", &app.admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let TopLevelKeys(names) = serde_json::from_str(&text).unwrap();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "duplicate keys: {names:?}");
}

#[tokio::test]
async fn search_puts_a_named_control_first() {
    let app = spawn_app().await;
    for (q, expected) in [
        ("PCI DSS 8.4.2", "control:pci-dss@4.0.1:8.4.2"),
        (
            "HIPAA 164.312(a)(2)(iv)",
            "control:hipaa-sr@2013:164.312(a)(2)(iv)",
        ),
        (
            "what does GDPR Article 32 require",
            "control:gdpr@2016-679:Art. 32",
        ),
        ("CIS 1.5 root", "control:cis-aws@5.0.0:1.5"),
        ("CIS v3.0.0 1.5 root", "control:cis-aws@3.0.0:1.5"),
        ("IAM.6", "control:aws-fsbp@1.0.0:IAM.6"),
        // Aliases are exact ids too.
        ("PCI Req. 8.4.2", "control:pci-dss@4.0.1:8.4.2"),
        (
            "prowler 164_308_a_7_i",
            "control:hipaa-sr@2013:164.308(a)(7)",
        ),
        ("GDPR-32 processors", "control:gdpr@2016-679:Art. 32"),
        ("SEC6-BP6", "control:aws-wa-security@2024-06-27:SEC06-BP04"),
    ] {
        let hits = app
            .admin_json(&format!("/api/v1/kb/search?q={}", urlencode(q)))
            .await;
        let hits = items(&hits);
        assert_eq!(hits[0]["id"], expected, "{q}: {hits:?}");
        assert_eq!(hits[0]["matched"], "id");
    }
    // No version named: the newest CIS only, not both releases' 1.5.
    let hits = app.admin_json("/api/v1/kb/search?q=CIS%201.5").await;
    let named: Vec<&str> = items(&hits)
        .iter()
        .filter(|h| h["matched"] == "id")
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["control:cis-aws@5.0.0:1.5"]);
}

#[tokio::test]
async fn search_ranks_text_matches_with_snippets_and_filters() {
    let app = spawn_app().await;
    let hits = app
        .admin_json("/api/v1/kb/search?q=encrypt%20S3%20buckets%20at%20rest&limit=10")
        .await;
    let hits = items(&hits);
    assert!(!hits.is_empty());
    assert!(hits.iter().any(|h| h["kind"] == "check"));
    assert!(
        hits[0]["snippet"].as_str().unwrap().contains("**"),
        "snippet shows why: {}",
        hits[0]["snippet"]
    );
    let scores: Vec<f64> = hits
        .iter()
        .filter(|h| h["matched"] == "text")
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "ranked: {scores:?}"
    );

    let filtered = app
        .admin_json("/api/v1/kb/search?q=multi-factor%20authentication&framework=hipaa-sr&limit=20")
        .await;
    for hit in items(&filtered).iter().filter(|h| h["kind"] == "control") {
        assert_eq!(hit["framework"], "hipaa-sr@2013");
    }
    let by_service = app
        .admin_json("/api/v1/kb/search?q=encryption&service=rds&limit=20")
        .await;
    for hit in items(&by_service).iter().filter(|h| h["kind"] == "check") {
        let check = app
            .admin_json(&format!(
                "/api/v1/kb/checks/{}",
                hit["id"].as_str().unwrap()
            ))
            .await;
        assert!(
            check["services"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("rds"))
        );
    }
}

#[tokio::test]
async fn nul_bytes_in_kb_input_are_400_problems_not_database_errors() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/kb/search?q=%00",
        "/api/v1/kb/search?q=mfa%00",
        "/api/v1/kb/search?q=mfa&framework=%00",
        "/api/v1/kb/search?q=mfa&service=s3%00",
        "/api/v1/kb/checks/%00",
        "/api/v1/kb/checks?service=%00",
        "/api/v1/kb/services/%00",
        "/api/v1/kb/controls/pci-dss:8.4.2%00",
        "/api/v1/kb/frameworks/%00/controls",
        "/api/v1/kb/frameworks/pci-dss/controls?kind=%00",
        "/api/v1/kb/frameworks/pci-dss/controls?service=%00",
    ] {
        let response = app.get_as(path, &app.admin_key).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "application/problem+json", "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["code"].is_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn offsets_beyond_the_documented_maximum_are_400() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/kb/checks?offset=9223372036854775807",
        "/api/v1/kb/checks?offset=1000001",
        "/api/v1/kb/frameworks/pci-dss/controls?offset=1000001",
        "/api/v1/kb/checks?offset=-1",
    ] {
        let response = app.get_as(path, &app.admin_key).send().await.unwrap();
        assert_problem(response, 400, "invalid_offset").await;
    }
    let page = app.admin_json("/api/v1/kb/checks?offset=1000000").await;
    assert_eq!(page["offset"], 1_000_000);
    assert_eq!(page["items"], serde_json::json!([]));
    assert!(page["total"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn the_openapi_document_states_the_kb_parameter_constraints() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let param = |path: &str, name: &str| -> serde_json::Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"))
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has {name}"))
            .clone()
    };
    let q = param("/api/v1/kb/search", "q");
    assert_eq!(q["required"], true, "{q}");
    assert_eq!(q["schema"]["minLength"], 1, "{q}");
    assert_eq!(q["schema"]["maxLength"], 500, "{q}");
    let limit = param("/api/v1/kb/search", "limit");
    assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
    assert_eq!(limit["schema"]["maximum"], 50, "{limit}");
    for path in ["/api/v1/kb/checks", "/api/v1/kb/frameworks/{id}/controls"] {
        let offset = param(path, "offset");
        assert_eq!(offset["schema"]["minimum"], 0, "{path}: {offset}");
        assert_eq!(offset["schema"]["maximum"], 1_000_000, "{path}: {offset}");
        let limit = param(path, "limit");
        assert_eq!(limit["schema"]["minimum"], 1, "{path}: {limit}");
        assert_eq!(limit["schema"]["maximum"], 500, "{path}: {limit}");
    }
}

fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

const CONTROL_SUMMARY_KEYS: [&str; 11] = [
    "attributes",
    "framework",
    "id",
    "kind",
    "native_id",
    "parent_id",
    "services",
    "summary",
    "technical",
    "title",
    "url",
];

#[tokio::test]
async fn control_detail_has_the_documented_shape() {
    let app = spawn_app().await;
    let control = app
        .admin_json("/api/v1/kb/controls/hipaa-sr:164.312(a)(1)")
        .await;
    let mut expected: Vec<&str> = CONTROL_SUMMARY_KEYS.to_vec();
    expected.extend([
        "checks",
        "children",
        "graph_source",
        "parent",
        "related",
        "remediations",
    ]);
    expected.sort_unstable();
    assert_eq!(keys(&control), expected);
    assert_eq!(keys(&control["parent"]), CONTROL_SUMMARY_KEYS);
    assert!(control["technical"].is_boolean() && control["attributes"].is_object());
    let children = control["children"].as_array().unwrap();
    assert!(!children.is_empty());
    for child in children {
        assert_eq!(keys(child), CONTROL_SUMMARY_KEYS);
        assert_eq!(child["parent_id"], control["id"]);
    }

    let mfa = app.admin_json("/api/v1/kb/controls/pci-dss:8.4.2").await;
    assert_eq!(mfa["parent"]["id"], "control:pci-dss@4.0.1:8.4");
    let checks = mfa["checks"].as_array().unwrap();
    for check in checks {
        assert_eq!(
            keys(check),
            [
                "basis",
                "id",
                "rationale",
                "services",
                "severity",
                "strength",
                "title"
            ]
        );
    }
    let check_ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let mut sorted = check_ids.clone();
    sorted.sort_unstable();
    assert_eq!(check_ids, sorted);
    // Services: the control's own and its checks', sorted, once each.
    let services: Vec<&str> = mfa["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let mut expected_services: Vec<&str> = checks
        .iter()
        .flat_map(|c| c["services"].as_array().unwrap())
        .map(|s| s.as_str().unwrap())
        .collect();
    expected_services.sort_unstable();
    expected_services.dedup();
    assert!(expected_services.iter().all(|s| services.contains(s)));
    let mut sorted = services.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(services, sorted);
    // Remediations: those of its checks, each once, by id.
    let remediations = mfa["remediations"].as_array().unwrap();
    for remediation in remediations {
        assert_eq!(
            keys(remediation),
            ["cli", "cloudformation", "id", "steps", "terraform", "title"]
        );
    }
    let mut expected_remediations = Vec::new();
    for id in &check_ids {
        let check = app.admin_json(&format!("/api/v1/kb/checks/{id}")).await;
        expected_remediations.push(check["remediation_id"].as_str().unwrap().to_string());
    }
    expected_remediations.sort();
    expected_remediations.dedup();
    let remediation_ids: Vec<&str> = remediations
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(remediation_ids, expected_remediations);
    let related = mfa["related"].as_array().unwrap();
    assert!(related.len() <= 25);
    for r in related {
        assert_eq!(
            keys(r),
            [
                "basis",
                "framework",
                "id",
                "native_id",
                "shared_checks",
                "title"
            ]
        );
        assert!(r["shared_checks"].is_i64());
    }
    // Curated links first, then shared checks, most shared first.
    let ranks: Vec<(bool, i64)> = related
        .iter()
        .map(|r| {
            (
                r["basis"] == "shared-checks",
                -r["shared_checks"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut sorted = ranks.clone();
    sorted.sort();
    assert_eq!(ranks, sorted);
    // A control without parent: null, not missing.
    let root = app.admin_json("/api/v1/kb/controls/pci-dss:8").await;
    assert!(root["parent"].is_null() && root["parent_id"].is_null());
}

#[tokio::test]
async fn frameworks_counts_add_up_to_their_controls() {
    let app = spawn_app().await;
    let frameworks = app.admin_json("/api/v1/kb/frameworks").await;
    for f in items(&frameworks) {
        let by_kind: i64 = f["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_i64().unwrap())
            .sum();
        assert_eq!(by_kind, f["controls"].as_i64().unwrap(), "{f}");
        assert!(f["technical_controls"].as_i64().unwrap() <= by_kind);
        let page = app
            .admin_json(&format!(
                "/api/v1/kb/frameworks/{}/controls?limit=1",
                f["key"].as_str().unwrap()
            ))
            .await;
        assert_eq!(page["total"], f["controls"], "{f}");
    }
}

#[tokio::test]
async fn search_hits_have_the_documented_shape_and_no_duplicates() {
    let app = spawn_app().await;
    let hits = app
        .admin_json(
            "/api/v1/kb/search?q=PCI%20DSS%208.4.2%20multi-factor%20authentication&limit=15",
        )
        .await;
    let hits = items(&hits);
    assert_eq!(hits.len(), 15);
    assert_eq!(hits[0]["id"], "control:pci-dss@4.0.1:8.4.2");
    let mut ids: Vec<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
    for hit in hits {
        assert_eq!(
            keys(hit),
            [
                "framework",
                "id",
                "kind",
                "matched",
                "native_id",
                "score",
                "snippet",
                "title"
            ]
        );
        assert!(hit["score"].is_number());
        if hit["kind"] != "control" {
            assert!(hit["framework"].is_null() && hit["native_id"].is_null());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 15, "each hit once");
    // Only stop words: nothing to match, an empty list rather than an error.
    let none = app.admin_json("/api/v1/kb/search?q=the%20of").await;
    assert_eq!(
        none,
        serde_json::json!({"items": [], "total": 0, "limit": 10, "offset": 0, "next": null})
    );
}

#[tokio::test]
async fn search_filters_hold_for_every_kind_of_hit() {
    let app = spawn_app().await;
    let hits = app
        .admin_json("/api/v1/kb/search?q=encryption%20logging%20access&framework=pci-dss&service=s3&limit=50")
        .await;
    let hits = items(&hits);
    assert!(hits.iter().any(|h| h["kind"] == "check"), "{hits:?}");
    for hit in hits {
        let id = hit["id"].as_str().unwrap();
        match hit["kind"].as_str().unwrap() {
            "control" => {
                assert_eq!(hit["framework"], "pci-dss@4.0.1");
                let control = app
                    .admin_json(&format!("/api/v1/kb/controls/{}", pathencode(id)))
                    .await;
                assert!(
                    control["services"]
                        .as_array()
                        .unwrap()
                        .contains(&serde_json::json!("s3")),
                    "{id}"
                );
            }
            "check" => {
                let check = app.admin_json(&format!("/api/v1/kb/checks/{id}")).await;
                assert!(
                    check["services"]
                        .as_array()
                        .unwrap()
                        .contains(&serde_json::json!("s3"))
                );
                assert!(
                    check["controls"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["framework"] == "pci-dss@4.0.1"),
                    "{id}"
                );
            }
            _ => {}
        }
    }
}

/// The items of a list answer, after checking it has the envelope every list has.
fn items(page: &serde_json::Value) -> &Vec<serde_json::Value> {
    assert_eq!(
        keys(page),
        ["items", "limit", "next", "offset", "total"],
        "{page}"
    );
    page["items"].as_array().unwrap()
}

/// The top-level keys of a JSON object in the order sent, duplicates included (a `Value` would
/// keep only the last of two equal keys).
struct TopLevelKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TopLevelKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(TopLevelKeys(keys))
            }
        }
        d.deserialize_map(Visitor)
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Percent-encoding for a path segment: form encoding's `+` for a space is a literal `+` there.
fn pathencode(s: &str) -> String {
    urlencode(s).replace('+', "%20")
}

#[tokio::test]
async fn search_ranks_by_framework_names_hierarchy_and_version() {
    let app = spawn_app().await;
    let top = |hits: &serde_json::Value, n: usize| -> Vec<String> {
        hits["items"]
            .as_array()
            .unwrap()
            .iter()
            .take(n)
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The framework's name and the parent's title ("Technical safeguards") are searchable.
    let hits = app
        .admin_json("/api/v1/kb/search?q=which%20HIPAA%20technical%20safeguards%20apply%20to%20audit%20logs")
        .await;
    assert_eq!(
        top(&hits, 1),
        ["control:hipaa-sr@2013:164.312(b)"],
        "{hits}"
    );
    let hits = app
        .admin_json("/api/v1/kb/search?q=SOC%202%20change%20management")
        .await;
    assert_eq!(top(&hits, 1), ["control:soc2@2017:CC8.1"], "{hits}");
    // No version named: CIS v5.0.0 ranks above the same recommendation of v3.0.0.
    let hits = app
        .admin_json("/api/v1/kb/search?q=CIS%20root%20account%20hardware%20MFA&limit=50")
        .await;
    let ids = top(&hits, 50);
    let first_v5 = ids
        .iter()
        .position(|id| id.starts_with("control:cis-aws@5.0.0"));
    let first_v3 = ids
        .iter()
        .position(|id| id.starts_with("control:cis-aws@3.0.0"));
    assert!(first_v5.is_some(), "{ids:?}");
    assert!(first_v3.is_none_or(|v3| Some(v3) > first_v5), "{ids:?}");
}

/// Searches are answered from an in-memory index of the active version; the SQL statement that
/// ranks in PostgreSQL (still used for phrase queries) must give the same page: same hits in the
/// same order with the same scores and totals, over the evaluation questions, id queries, filters
/// and pages.
#[tokio::test]
async fn search_from_memory_answers_what_the_sql_ranking_answers() {
    let app = spawn_app_with(|env| {
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "100000".into());
    })
    .await;
    let questions: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../chat/questions.json")).unwrap();
    // (query, framework, service, limit, offset)
    type Case<'a> = (String, Option<&'a str>, Option<&'a str>, i64, i64);
    let mut cases: Vec<Case> = questions
        .iter()
        .map(|q| {
            (
                q["question"].as_str().unwrap().to_string(),
                None,
                None,
                10,
                0,
            )
        })
        .collect();
    for (q, framework, service, limit, offset) in [
        (
            "PCI DSS 8.4.2 multi-factor authentication",
            None,
            None,
            15,
            0,
        ),
        ("encrypt s3 buckets at rest", None, None, 20, 5),
        (
            "encrypt s3 buckets at rest",
            Some("pci-dss@4.0.1"),
            None,
            10,
            0,
        ),
        ("encrypt s3 buckets at rest", None, Some("s3"), 10, 0),
        ("logging", Some("cis-aws@5.0.0"), Some("cloudtrail"), 10, 0),
        ("CIS v3.0.0 1.5 root MFA", None, None, 10, 0),
        ("IAM.6 and S3.1", None, None, 10, 0),
        (
            "GDPR Article 32 and HIPAA 164.312(a)(2)(iv)",
            None,
            None,
            10,
            0,
        ),
        ("8.4.2", None, None, 10, 0),
        ("the of", None, None, 10, 0),
    ] {
        cases.push((q.to_string(), framework, service, limit, offset));
    }
    let mut compared = 0;
    for (q, framework, service, limit, offset) in cases {
        let mut url = reqwest::Url::parse(&app.url("/api/v1/kb/search")).unwrap();
        url.query_pairs_mut()
            .append_pair("q", &q)
            .append_pair("limit", &limit.to_string())
            .append_pair("offset", &offset.to_string());
        if let Some(f) = framework {
            url.query_pairs_mut().append_pair("framework", f);
        }
        if let Some(s) = service {
            url.query_pairs_mut().append_pair("service", s);
        }
        let response = app
            .client
            .get(url)
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{q}");
        let memory: serde_json::Value = response.json().await.unwrap();
        // The API ranks the query with the vocabulary's KB words added; so does the SQL side here.
        let expanded = cloud_optimizer::kb::vocabulary::expand(q.trim());
        let (sql_items, total) = cloud_optimizer::kb::search::search(
            &app.pool, &expanded, framework, service, limit, offset,
        )
        .await
        .unwrap();
        let sql: Vec<serde_json::Value> = serde_json::from_str(&sql_items).unwrap();
        assert_eq!(memory["total"], total, "total of {q:?}");
        let memory = items(&memory);
        let shape = |hits: &[serde_json::Value]| -> Vec<(String, String, String, i64)> {
            hits.iter()
                .map(|h| {
                    (
                        h["id"].as_str().unwrap().to_string(),
                        h["kind"].as_str().unwrap().to_string(),
                        h["matched"].as_str().unwrap().to_string(),
                        (h["score"].as_f64().unwrap() * 1e6).round() as i64,
                    )
                })
                .collect()
        };
        assert_eq!(shape(memory), shape(&sql), "hits of {q:?}");
        for (m, s) in memory.iter().zip(&sql) {
            if m["matched"] == "id" {
                assert_eq!(m["snippet"], s["snippet"], "{q:?}");
            }
        }
        compared += sql.len();
    }
    assert!(compared > 300, "compared {compared} hits");
}
