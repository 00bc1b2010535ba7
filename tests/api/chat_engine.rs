//! The chat's understanding, retrieval and built-in answerer against the shipped KB in a real
//! database: every citation resolves through `GET /api/v1/kb/controls/{id}`, the text cites
//! exactly what `verify` finds in it, answers are deterministic, out-of-scope questions cite
//! nothing.

use std::sync::Arc;

use cloud_optimizer::chat::answer::{self, Answer};
use cloud_optimizer::chat::understand::{self, Intent, Understanding};
use cloud_optimizer::kb::KbState;
use cloud_optimizer::runtime::Components;

use crate::helpers::{TestApp, spawn_app};

fn kb_state(app: &TestApp) -> KbState {
    KbState {
        db: app.pool.clone(),
        source: Arc::new("data/compliance".into()),
        cache: Arc::new(cloud_optimizer::kb::cache::KbCache::new(10)),
        search: Default::default(),
        graph: None,
        components: Arc::new(Components::new(false, false)),
        automated: Arc::new(Vec::new()),
    }
}

async fn ask(kb: &KbState, question: &str) -> (Understanding, Answer) {
    let u = understand::understand(kb, question).await.unwrap();
    let g = answer::retrieve(kb, question, &u).await.unwrap();
    let a = answer::compose(question, &u, &g);
    (u, a)
}

fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn answers_cite_real_controls_exactly_as_the_text_names_them() {
    let app = spawn_app().await;
    let kb = kb_state(&app);
    for question in [
        "Does HIPAA require us to encrypt the EBS volumes that hold patient data?",
        "What is CIS 1.5?",
        "In CIS AWS Foundations v3.0.0, how do I check recommendation 1.5?",
        "How do I fix Security Hub S3.1?",
        "What does Article 32(1)(a) require?",
        "Compare the MFA requirements of PCI DSS, HIPAA and CIS.",
        "Which HIPAA technical safeguards are addressable rather than required?",
    ] {
        let (u, a) = ask(&kb, question).await;
        assert!(a.covered, "{question}: not covered");
        assert!(!a.citations.is_empty(), "{question}: no citation");
        let (verified, unknown) = answer::verify(&kb, &a.text).await.unwrap();
        assert_eq!(
            verified,
            a.citations
                .iter()
                .map(|c| answer::Citation {
                    reason: "Cited by the answer.".into(),
                    ..c.clone()
                })
                .collect::<Vec<_>>(),
            "{question}"
        );
        assert!(unknown.is_empty(), "{question}: {unknown:?}");
        for c in &a.citations {
            assert!(
                a.text.contains(&format!("[{}]", c.id)),
                "{question}: {} not in the text",
                c.id
            );
            let body = app
                .admin_json(&format!("/api/v1/kb/controls/{}", encode(&c.id)))
                .await;
            assert_eq!(
                body["native_id"],
                c.control_id.as_str(),
                "{question}: {}",
                c.id
            );
        }
        // Same question, same KB: same bytes.
        let (_, again) = ask(&kb, question).await;
        assert_eq!(again.text, a.text);
        assert_ne!(u.intent, Intent::OutOfScope);
    }
}

#[tokio::test]
async fn understands_frameworks_versions_ids_and_services() {
    let app = spawn_app().await;
    let kb = kb_state(&app);
    let u = understand::understand(&kb, "In CIS v3.0 what does 1.5 ask for the root user?")
        .await
        .unwrap();
    assert_eq!(u.control_ids, vec!["cis-aws@3.0.0:1.5"]);
    assert_eq!(u.frameworks[0].version, "3.0.0");
    assert!(u.services.contains(&"iam".to_string()));
    let u = understand::understand(&kb, "What is CIS 1.4?")
        .await
        .unwrap();
    assert_eq!(
        u.control_ids,
        vec!["cis-aws@5.0.0:1.4"],
        "CIS alone is the newest"
    );
    let u = understand::understand(&kb, "Is TLS 1.2 enough for PCI-DSS 4?")
        .await
        .unwrap();
    assert!(u.control_ids.is_empty(), "{:?}", u.control_ids);
    assert_eq!(u.frameworks[0].id, "pci-dss");
    let u = understand::understand(&kb, "Our review cites SEC09-BP04 and 164.308(a)(7)(i)")
        .await
        .unwrap();
    assert_eq!(
        u.control_ids,
        vec!["aws-wa-security:SEC09-BP03", "hipaa-sr:164.308(a)(7)"]
    );
    let u = understand::understand(
        &kb,
        "Which Security Hub controls cover our S3 bucket and security group?",
    )
    .await
    .unwrap();
    assert_eq!(u.frameworks[0].id, "aws-fsbp");
    assert!(u.services.contains(&"s3".to_string()) && u.services.contains(&"ec2".to_string()));
}

#[tokio::test]
async fn out_of_scope_and_invented_ids() {
    let app = spawn_app().await;
    let kb = kb_state(&app);
    for question in [
        "What's the weather in Paris?",
        "Write me a poem about Kubernetes.",
        "What does NIST 800-53 AC-2 require?",
    ] {
        let (u, a) = ask(&kb, question).await;
        assert_eq!(u.intent, Intent::OutOfScope, "{question}");
        assert!(a.citations.is_empty() && !a.covered, "{question}");
    }
    let (cited, unknown) = answer::verify(
        &kb,
        "See [pci-dss:8.4.2], [pci-dss:99.1] and cis-aws@3.0.0:1.5.",
    )
    .await
    .unwrap();
    assert_eq!(
        cited.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["pci-dss:8.4.2", "cis-aws@3.0.0:1.5"]
    );
    assert_eq!(unknown, vec!["pci-dss:99.1"]);
}
