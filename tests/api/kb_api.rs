//! `/api/v1/kb`: frameworks, controls with their graph, checks, services and search.

use crate::helpers::*;

#[tokio::test]
async fn frameworks_are_listed_with_counts() {
    let app = spawn_app().await;
    let frameworks = app.admin_json("/api/v1/kb/frameworks").await;
    let keys: Vec<&str> = frameworks
        .as_array()
        .unwrap()
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
    let soc2 = frameworks
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "soc2")
        .unwrap();
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
        .get_as("/api/v1/kb/controls/no-colon", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_control_id").await;
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
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|c| {
        c["severity"] == "critical"
            && c["services"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("s3"))
    }));
    let id = items[0]["id"].as_str().unwrap();
    let check = app.admin_json(&format!("/api/v1/kb/checks/{id}")).await;
    assert!(
        check["remediation"]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(!check["controls"].as_array().unwrap().is_empty());

    let services = app.admin_json("/api/v1/kb/services").await;
    let s3 = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "s3")
        .unwrap();
    assert!(s3["checks"].as_i64().unwrap() > 10 && s3["controls"].as_i64().unwrap() > 10);
    let detail = app.admin_json("/api/v1/kb/services/S3").await;
    assert_eq!(
        detail["checks"].as_array().unwrap().len() as i64,
        s3["checks"].as_i64().unwrap()
    );
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
        ("CIS 1.5 root", "control:cis-aws@3.0.0:1.5"),
        ("IAM.6", "control:aws-fsbp@1.0.0:IAM.6"),
    ] {
        let hits = app
            .admin_json(&format!("/api/v1/kb/search?q={}", urlencode(q)))
            .await;
        assert_eq!(hits[0]["id"], expected, "{q}: {hits}");
        assert_eq!(hits[0]["matched"], "id");
    }
}

#[tokio::test]
async fn search_ranks_text_matches_with_snippets_and_filters() {
    let app = spawn_app().await;
    let hits = app
        .admin_json("/api/v1/kb/search?q=encrypt%20S3%20buckets%20at%20rest&limit=10")
        .await;
    let hits = hits.as_array().unwrap();
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
    for hit in filtered
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "control")
    {
        assert_eq!(hit["framework"], "hipaa-sr@2013");
    }
    let by_service = app
        .admin_json("/api/v1/kb/search?q=encryption&service=rds&limit=20")
        .await;
    for hit in by_service
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "check")
    {
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

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
