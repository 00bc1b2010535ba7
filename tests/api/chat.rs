//! The security Q&A chat through the real server: streams, JSON answers, conversations,
//! billing, resuming a stream on another replica, and the answer quality over the question set.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use std::time::Duration;

use crate::fake_llm::{Api, FakeLlm, Reply, Then};
use crate::helpers::{
    BOOTSTRAP_KEY, Process, TestApp, ask_json, assert_problem, base_env, create_migrated_database,
    database_url, eventually, spawn_app, spawn_app_with, spawn_replica, used_in,
};

const HIPAA_EBS: &str = "Does HIPAA require us to encrypt the EBS volumes that hold patient data?";

/// One Server-Sent Event as a client sees it.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

/// Parses a whole `text/event-stream` body (comments and keep-alives skipped).
fn parse_sse(body: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let (mut id, mut event, mut data) = (None, String::from("message"), Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if !data.is_empty() {
            out.push(Sse {
                id,
                event,
                data: serde_json::from_str(&data.join("\n")).expect("event data is JSON"),
            });
        }
    }
    out
}

/// Asks over SSE and reads the stream to its end: (status, headers, events).
async fn ask_stream(
    app: &TestApp,
    key: &str,
    path: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Vec<Sse>) {
    let response = app
        .post_as(path, key)
        .header("Accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap();
    (status, headers, parse_sse(&text))
}

/// Reads a streamed answer until its first event (the `start`) and parses what arrived.
async fn first_event(response: &mut reqwest::Response) -> Vec<Sse> {
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = response.chunk().await.unwrap().expect("the start event");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    parse_sse(&seen)
}

/// The stored events of a message, as `GET /api/v1/chat/messages/{id}/events` replays them.
async fn stored_events(app: &TestApp, id: &str) -> Vec<Sse> {
    let body = app
        .get_as(
            &format!("/api/v1/chat/messages/{id}/events"),
            &app.admin_key,
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_sse(&body)
}

#[tokio::test]
async fn a_question_streams_numbered_events_that_match_the_stored_answer() {
    let app = spawn_app().await;
    let (status, headers, events) = ask_stream(
        &app,
        &app.admin_key,
        "/api/v1/chat",
        json!({ "question": HIPAA_EBS }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");

    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.id.as_deref(), Some((n + 1).to_string().as_str()));
    }
    let start = &events[0].data;
    let id = start["message_id"].as_str().unwrap().to_string();
    assert!(start["intent"].is_string(), "{start}");
    assert!(
        start["frameworks"].is_array() && start["services"].is_array(),
        "{start}"
    );

    let citations: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "citation")
        .map(|e| &e.data)
        .collect();
    assert!(
        !citations.is_empty(),
        "a HIPAA question cites HIPAA: {names:?}"
    );
    let streamed: String = events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    let done = &events.last().unwrap().data;
    assert_eq!(done["message_id"], id.as_str());
    assert_eq!(
        done["billing"],
        json!({"dimension": "ChatQuestions", "billed": true})
    );
    assert_eq!(done["citations"].as_array().unwrap().len(), citations.len());
    assert!(done["duration_ms"].is_i64(), "{done}");

    // Every citation names a control the KB serves, at the version it cites.
    for citation in &citations {
        for field in [
            "id",
            "framework",
            "version",
            "control_id",
            "title",
            "url",
            "reason",
        ] {
            assert!(citation[field].is_string(), "{field} in {citation}");
        }
        let cid = citation["id"].as_str().unwrap();
        let control = app
            .get_as(
                &format!("/api/v1/kb/controls/{}", urlencode(cid)),
                &app.admin_key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(control.status(), 200, "{cid} resolves");
        let control: Value = control.json().await.unwrap();
        assert_eq!(control["native_id"], citation["control_id"], "{cid}");
        assert!(
            control["framework"]
                .as_str()
                .unwrap()
                .ends_with(&format!("@{}", citation["version"].as_str().unwrap())),
            "{cid}: {}",
            control["framework"]
        );
    }

    let stored: Value = app.admin_json(&format!("/api/v1/chat/messages/{id}")).await;
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["question"], HIPAA_EBS);
    assert_eq!(stored["answer"].as_str().unwrap(), streamed);
    assert_eq!(stored["citations"], done["citations"]);
    assert_eq!(stored["billing"]["billed"], true);
    assert_eq!(app.used("ChatQuestions").await, 1);
}

fn urlencode(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Many SSE clients close the connection as soon as they read `done` (an `EventSource` closed in
/// its `done` handler, a script that has what it wants). `done` must mean the answer is stored,
/// complete and billed once: nothing a client does after it may undo that.
#[tokio::test]
async fn a_client_that_hangs_up_on_done_finds_the_answer_stored_complete() {
    let app = spawn_app().await;
    for n in 1..=5 {
        let mut response = app
            .post_as("/api/v1/chat", &app.admin_key)
            .header("Accept", "text/event-stream")
            .json(&json!({ "question": HIPAA_EBS }))
            .send()
            .await
            .unwrap();
        let mut seen = String::new();
        // Up to the blank line that ends the done event, and not a byte further.
        while !seen
            .find("event: done")
            .is_some_and(|at| seen[at..].contains("\n\n"))
        {
            let chunk = response
                .chunk()
                .await
                .unwrap()
                .expect("the stream reaches done");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(response);
        let events = parse_sse(&seen);
        let done = events.iter().find(|e| e.event == "done").unwrap();
        let id = done.data["message_id"].as_str().unwrap();
        // At once, not eventually: the event is sent after the answer is stored.
        let message = stored(&app, id).await;
        assert_eq!(message["status"], "complete", "{message}");
        assert!(!message["answer"].as_str().unwrap().is_empty());
        assert_eq!(message["billing"]["billed"], true);
        assert_eq!(
            stored_events(&app, id).await.last().unwrap().event,
            "done",
            "the stored events end with done"
        );
        assert_eq!(app.used("ChatQuestions").await, n);
    }
}

#[tokio::test]
async fn json_answers_by_default_and_when_streaming_is_off() {
    let app = spawn_app().await;
    let answer = ask_json(&app, &app.admin_key, HIPAA_EBS).await;
    for field in ["answer", "citations", "intent", "frameworks", "billing"] {
        assert!(!answer[field].is_null(), "{field} in {answer}");
    }
    assert_eq!(answer["status"], "complete");
    assert!(!answer["answer"].as_str().unwrap().is_empty());

    // An explicit preference for JSON over the stream wins.
    let response = app
        .post_as("/api/v1/chat", &app.admin_key)
        .header("Accept", "text/event-stream;q=0.5, application/json")
        .json(&json!({ "question": HIPAA_EBS }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let refused = app
        .post_as("/api/v1/chat", &app.admin_key)
        .header("Accept", "text/html")
        .json(&json!({ "question": HIPAA_EBS }))
        .send()
        .await
        .unwrap();
    assert_problem(refused, 406, "not_acceptable").await;

    let app = spawn_app_with(|env| {
        env.insert("CHAT_STREAMING_ENABLED".into(), "false".into());
    })
    .await;
    let response = app
        .post_as("/api/v1/chat", &app.admin_key)
        .header("Accept", "text/event-stream")
        .json(&json!({ "question": HIPAA_EBS }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "complete");
}

#[tokio::test]
async fn conversations_belong_to_their_key_keep_their_messages_and_can_be_deleted() {
    let app = spawn_app().await;
    let (_, alice) = app.create_key("alice", "user").await;
    let (_, bob) = app.create_key("bob", "user").await;

    // No body, an empty object and a title all create one.
    let bare = app
        .post_as("/api/v1/chat/conversations", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 201);
    let location = bare.headers()["location"].to_str().unwrap().to_string();
    let bare: Value = bare.json().await.unwrap();
    assert_eq!(
        location,
        format!(
            "/api/v1/chat/conversations/{}",
            bare["id"].as_str().unwrap()
        )
    );
    assert_eq!(bare["title"], Value::Null);
    let titled: Value = app
        .post_as("/api/v1/chat/conversations", &alice)
        .json(&json!({"title": "PCI scoping"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(titled["title"], "PCI scoping");
    let empty = app
        .post_as("/api/v1/chat/conversations", &alice)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 201);
    let too_long = app
        .post_as("/api/v1/chat/conversations", &alice)
        .json(&json!({"title": "x".repeat(201)}))
        .send()
        .await
        .unwrap();
    assert_problem(too_long, 422, "title_too_long").await;

    let id = bare["id"].as_str().unwrap();
    let path = format!("/api/v1/chat/conversations/{id}/messages");
    let first = app
        .post_as(&path, &alice)
        .json(&json!({"content": HIPAA_EBS}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["conversation_id"], id);
    let (_, _, events) = ask_stream(
        &app,
        &alice,
        &path,
        json!({"content": "And which AWS Config rules check that?"}),
    )
    .await;
    assert_eq!(events.last().unwrap().event, "done");

    let detail: Value = app
        .get_as(&format!("/api/v1/chat/conversations/{id}"), &alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = detail["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{detail}");
    assert_eq!(messages[0]["question"], HIPAA_EBS);
    assert_eq!(messages[0]["id"], first["message_id"]);
    assert_eq!(
        messages[1]["question"],
        "And which AWS Config rules check that?"
    );
    assert_eq!(
        detail["title"].as_str().unwrap(),
        &HIPAA_EBS[..HIPAA_EBS.len().min(80)]
    );

    // Most recently used first, paged with the list envelope.
    let page: Value = app
        .get_as("/api/v1/chat/conversations?limit=2", &alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"][0]["id"], id);
    assert_eq!(page["items"][0]["messages"], 2);
    assert_eq!(page["next"], "/api/v1/chat/conversations?limit=2&offset=2");

    // Bob sees none of it and cannot write to it.
    let theirs: Value = app
        .get_as("/api/v1/chat/conversations", &bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["total"], 0);
    for response in [
        app.get_as(&format!("/api/v1/chat/conversations/{id}"), &bob)
            .send()
            .await
            .unwrap(),
        app.post_as(&path, &bob)
            .json(&json!({"content": "hello"}))
            .send()
            .await
            .unwrap(),
    ] {
        assert_problem(response, 404, "conversation_not_found").await;
    }
    let message = first["message_id"].as_str().unwrap();
    let response = app
        .get_as(&format!("/api/v1/chat/messages/{message}"), &bob)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "message_not_found").await;

    let deleted = app
        .delete_as(&format!("/api/v1/chat/conversations/{id}"), &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .get_as(&format!("/api/v1/chat/messages/{message}"), &alice)
        .send()
        .await
        .unwrap();
    assert_problem(gone, 404, "message_not_found").await;
    let again = app
        .delete_as(&format!("/api/v1/chat/conversations/{id}"), &alice)
        .send()
        .await
        .unwrap();
    assert_problem(again, 404, "conversation_not_found").await;
}

#[tokio::test]
async fn a_question_is_billed_once_refused_at_the_limit_and_out_of_scope_is_free() {
    let app = spawn_app_with(|env| {
        env.insert("TRIAL_MODE".into(), "true".into());
        env.insert("TRIAL_LIMIT_CHAT_QUESTIONS".into(), "1".into());
    })
    .await;
    let send = |key: &'static str, accept: &'static str| {
        app.post_as("/api/v1/chat", &app.admin_key)
            .header("Idempotency-Key", key)
            .header("Accept", accept)
            .json(&json!({ "question": HIPAA_EBS }))
            .send()
    };
    let first = send("q-1", "application/json").await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["billing"]["billed"], true);

    // The retry (even as a stream) gets the same answer, not a second charge.
    let retry = send("q-1", "application/json").await.unwrap();
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["message_id"], first["message_id"]);
    assert_eq!(retry["answer"], first["answer"]);
    assert_eq!(retry["citations"], first["citations"]);
    let streamed = send("q-1", "text/event-stream").await.unwrap();
    let events = parse_sse(&streamed.text().await.unwrap());
    assert_eq!(events[0].data["message_id"], first["message_id"]);
    assert_eq!(events.last().unwrap().event, "done");
    assert_eq!(app.used("ChatQuestions").await, 1);

    // A different question under the same key is a client error.
    let reused = app
        .post_as("/api/v1/chat", &app.admin_key)
        .header("Idempotency-Key", "q-1")
        .json(&json!({ "question": "What is PCI DSS 8.4.2?" }))
        .send()
        .await
        .unwrap();
    assert_problem(reused, 422, "idempotency_key_reused").await;

    // The trial is used up: refused before any work, nothing stored.
    let refused = app
        .post_as("/api/v1/chat", &app.admin_key)
        .header("Accept", "text/event-stream")
        .json(&json!({ "question": "What does PCI DSS 8.4.2 require?" }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(refused, 402, "trial_limit_reached").await;
    assert_eq!(problem["dimension"], "ChatQuestions");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // Out of scope costs nothing, even past the limit.
    let free = ask_json(
        &app,
        &app.admin_key,
        "What's a good recipe for banana bread?",
    )
    .await;
    assert_eq!(free["intent"], "out_of_scope");
    assert_eq!(
        free["billing"],
        json!({"dimension": "ChatQuestions", "billed": false})
    );
    assert_eq!(free["citations"], json!([]));
    assert_eq!(app.used("ChatQuestions").await, 1);
}

#[tokio::test]
async fn a_stream_resumes_after_its_last_event_id_on_any_replica() {
    let app = spawn_app().await;
    let replica = spawn_replica(&app).await;
    let (_, _, events) = ask_stream(
        &app,
        &app.admin_key,
        "/api/v1/chat",
        json!({ "question": HIPAA_EBS }),
    )
    .await;
    let id = events[0].data["message_id"].as_str().unwrap();
    let path = format!("/api/v1/chat/messages/{id}/events");

    for server in [&app, &replica] {
        let all = server.get_as(&path, &app.admin_key).send().await.unwrap();
        assert_eq!(all.headers()["content-type"], "text/event-stream");
        let all = parse_sse(&all.text().await.unwrap());
        assert_eq!(all.len(), events.len());
        let rest = server
            .get_as(&path, &app.admin_key)
            .header("Last-Event-ID", "2")
            .send()
            .await
            .unwrap();
        let rest = parse_sse(&rest.text().await.unwrap());
        assert_eq!(rest.len(), events.len() - 2);
        assert_eq!(rest[0].id.as_deref(), Some("3"));
        for (got, sent) in rest.iter().zip(&events[2..]) {
            assert_eq!(got.event, sent.event);
            assert_eq!(got.data, sent.data);
        }
    }
    let bad = app
        .get_as(&path, &app.admin_key)
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400, "invalid_last_event_id").await;
    let (_, other) = app.create_key("other", "user").await;
    let hidden = app.get_as(&path, &other).send().await.unwrap();
    assert_problem(hidden, 404, "message_not_found").await;
}

#[tokio::test]
async fn bad_questions_get_problems_that_say_what_to_fix() {
    let app = spawn_app().await;
    let cases = [
        (json!({"question": "   "}), 422, "empty_question"),
        (
            json!({"question": "x".repeat(4001)}),
            422,
            "question_too_long",
        ),
        (json!({"questoin": "typo"}), 422, "invalid_question"),
        (json!({"question": 42}), 422, "invalid_question"),
    ];
    for (body, status, code) in cases {
        let response = app
            .post_as("/api/v1/chat", &app.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, status, code).await;
    }
    let not_json = app
        .post_as("/api/v1/chat", &app.admin_key)
        .body("Does HIPAA require encryption?")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, 415, "unsupported_media_type").await;
    let bad_id = app
        .post_as("/api/v1/chat/conversations/nope/messages", &app.admin_key)
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_id, 400, "invalid_conversation_id").await;
    let missing = app
        .post_as(
            &format!(
                "/api/v1/chat/conversations/{}/messages",
                uuid::Uuid::new_v4()
            ),
            &app.admin_key,
        )
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .unwrap();
    assert_problem(missing, 404, "conversation_not_found").await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "no refused question is stored");
}

/// The question set of `tests/chat/questions.json`, scored as `bench/chat_eval.py --chat` scores
/// it: the built-in answerer must cite what a correct answer must cite, little else, and never a
/// control that does not exist: the goal, recall ≥ 0.95 and precision ≥ 0.8 pooled over ids
/// (0.956 and 0.845 today, see BENCHMARKS.md).
#[tokio::test]
async fn the_built_in_answerer_cites_the_right_controls_over_the_question_set() {
    let app = spawn_app_with(|env| {
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "100000".into());
    })
    .await;
    let questions: Vec<Value> =
        serde_json::from_str(include_str!("../chat/questions.json")).unwrap();
    let (kb, newest) = kb_controls(&app).await;
    let (mut must, mut found, mut cited, mut relevant, mut invented) = (0, 0, 0, 0, Vec::new());
    let mut misses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for q in &questions {
        let answer = ask_json(&app, &app.admin_key, q["question"].as_str().unwrap()).await;
        let ids: BTreeSet<String> = answer["citations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| normalise(c["id"].as_str().unwrap(), &newest))
            .collect();
        let must_cite: BTreeSet<String> = q["must_cite"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| normalise(c.as_str().unwrap(), &newest))
            .collect();
        let may_cite: BTreeSet<String> = q["may_cite"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| normalise(c.as_str().unwrap(), &newest))
            .collect();
        must += must_cite.len();
        found += must_cite.intersection(&ids).count();
        cited += ids.len();
        relevant += ids
            .iter()
            .filter(|id| must_cite.contains(*id) || may_cite.contains(*id))
            .count();
        invented.extend(ids.iter().filter(|id| !kb.contains(*id)).cloned());
        let missed: Vec<String> = must_cite.difference(&ids).cloned().collect();
        if !missed.is_empty() {
            misses.insert(q["id"].as_str().unwrap().to_string(), missed);
        }
    }
    let recall = found as f64 / must.max(1) as f64;
    let precision = relevant as f64 / cited.max(1) as f64;
    assert!(invented.is_empty(), "invented ids: {invented:?}");
    assert!(
        recall >= 0.95 && precision >= 0.8,
        "recall {recall:.3} precision {precision:.3}; missed: {misses:?}"
    );
}

/// Every control of the active KB as `<framework>@<version>:<native id>`, lower-cased, and the
/// newest version of each framework (what an id without a version means).
async fn kb_controls(app: &TestApp) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT f.id, f.version, c.framework, c.native_id FROM kb_controls c
         JOIN kb_frameworks f ON f.version_id = c.version_id AND f.key = c.framework
         WHERE c.version_id = (SELECT id FROM kb_versions WHERE active)",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (framework, version, key, native) in rows {
        ids.insert(format!("{key}:{native}").to_lowercase());
        let entry = newest.entry(framework.to_lowercase()).or_default();
        if version_key(&version) > version_key(entry) {
            *entry = version.to_lowercase();
        }
    }
    (ids, newest)
}

fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `pci-dss:8.4.2` → `pci-dss@4.0.1:8.4.2`; an id without a version means the newest.
fn normalise(id: &str, newest: &BTreeMap<String, String>) -> String {
    let id = id.strip_prefix("control:").unwrap_or(id).to_lowercase();
    let (framework, native) = id.split_once(':').expect("framework:id");
    if framework.contains('@') {
        return id;
    }
    match newest.get(framework) {
        Some(version) => format!("{framework}@{version}:{native}"),
        None => id,
    }
}

/// A server answering through the fake LLM as an OpenAI-compatible provider.
async fn llm_app(fake: &FakeLlm, extra: &[(&str, &str)]) -> TestApp {
    let vars = fake.env(Api::OpenAi);
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spawn_app_with(move |env| {
        env.extend(vars);
        env.extend(extra);
    })
    .await
}

async fn stored(app: &TestApp, id: &str) -> Value {
    app.admin_json(&format!("/api/v1/chat/messages/{id}")).await
}

#[tokio::test]
async fn an_llm_answer_streams_with_its_real_citations_and_without_invented_ones() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::text(&[
        "Encryption at rest is addressable under HIPAA ",
        "[hipaa-sr:164.312(a)(2)(iv)]: assess it in your risk analysis.\n",
        "PCI DSS also asks for it [pci-dss:99.99.99] and ",
        "[pci-dss:3.5.1].\n",
    ]));
    let app = llm_app(&fake, &[]).await;
    let (_, _, events) = ask_stream(
        &app,
        &app.admin_key,
        "/api/v1/chat",
        json!({ "question": HIPAA_EBS }),
    )
    .await;
    assert_eq!(events[0].data["answerer"], "openai");
    let cited: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "citation")
        .map(|e| e.data["id"].as_str().unwrap())
        .collect();
    assert_eq!(cited, ["hipaa-sr:164.312(a)(2)(iv)", "pci-dss:3.5.1"]);
    // A citation is announced before the text that names it.
    let first_citation = events.iter().position(|e| e.event == "citation").unwrap();
    let first_delta = events.iter().position(|e| e.event == "delta").unwrap();
    assert!(first_citation < first_delta);
    let text: String = events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert!(!text.contains("99.99.99"), "{text}");
    assert!(text.contains("(unverified reference removed)"), "{text}");
    let done = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().event, "done");
    assert_eq!(done["removed_ids"], json!(["pci-dss:99.99.99"]));
    assert_eq!(done["answerer"], "openai");

    // The model saw our rules and the KB passages with the question.
    let request = fake.last_request();
    assert_eq!(request.model, "fake-model");
    assert!(request.system().unwrap().contains("Cite only ids"));
    let user = request.user().unwrap();
    assert!(user.contains(HIPAA_EBS), "{user}");
    assert!(
        user.contains("hipaa-sr:164.312(a)(2)(iv)"),
        "the KB passages: {user}"
    );

    let message = stored(&app, events[0].data["message_id"].as_str().unwrap()).await;
    assert_eq!(message["answer"].as_str().unwrap(), text);
    assert_eq!(message["answerer"], "openai");
    assert_eq!(message["removed_ids"], json!(["pci-dss:99.99.99"]));
}

#[tokio::test]
async fn an_llm_that_fails_hands_over_to_the_built_in_answer_with_a_notice() {
    let fake = FakeLlm::start().await;
    let app = llm_app(&fake, &[]).await;
    fake.set_reply(Reply::rate_limited(7));
    let answer = ask_json(&app, &app.admin_key, HIPAA_EBS).await;
    assert_eq!(answer["status"], "complete");
    assert_eq!(answer["answerer"], "builtin");
    assert_eq!(answer["billing"]["billed"], true);
    assert!(!answer["citations"].as_array().unwrap().is_empty());

    // Failing after some text: the notice says the text so far is replaced.
    fake.set_reply(Reply::text(&["Partial first line.\n", "and more"]).then(Then::Fail));
    let (_, _, events) = ask_stream(
        &app,
        &app.admin_key,
        "/api/v1/chat",
        json!({ "question": HIPAA_EBS }),
    )
    .await;
    let notice = events
        .iter()
        .find(|e| e.event == "notice")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(notice.data["code"], "llm_upstream_error");
    assert_eq!(notice.data["restart"], true);
    let done = &events.last().unwrap().data;
    assert_eq!(done["answerer"], "builtin");
    let message = stored(&app, done["message_id"].as_str().unwrap()).await;
    assert!(
        !message["answer"]
            .as_str()
            .unwrap()
            .contains("Partial first line")
    );
    assert_eq!(
        message["answer"], answer["answer"],
        "the built-in answer is deterministic"
    );
}

#[tokio::test]
async fn an_answer_past_chat_timeout_ends_with_an_error_and_is_refunded() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::stall());
    // REQUEST_TIMEOUT_SECONDS does not cut answers short: CHAT_TIMEOUT_SECONDS bounds them.
    let app = llm_app(
        &fake,
        &[
            ("CHAT_TIMEOUT_SECONDS", "2"),
            ("LLM_TIMEOUT_SECONDS", "600"),
            ("REQUEST_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    let (_, _, events) = ask_stream(
        &app,
        &app.admin_key,
        "/api/v1/chat",
        json!({ "question": HIPAA_EBS }),
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error", "{events:?}");
    assert_eq!(last.data["code"], "chat_timeout");
    let message = stored(&app, last.data["message_id"].as_str().unwrap()).await;
    assert_eq!(message["status"], "failed");
    assert_eq!(message["error"], "chat_timeout");
    assert_eq!(message["billing"]["billed"], false);
    assert_eq!(app.used("ChatQuestions").await, 0, "refunded");

    // As JSON, the failure is the request's: a 504 that names the message.
    let response = app
        .post_as("/api/v1/chat", &app.admin_key)
        .json(&json!({ "question": HIPAA_EBS }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 504, "chat_timeout").await;
    assert!(problem["message_id"].is_string(), "{problem}");
    assert_eq!(problem["billing"]["billed"], false);
    assert_eq!(app.used("ChatQuestions").await, 0, "refunded");
}

#[tokio::test]
async fn a_client_that_leaves_stops_the_answer_at_once_and_leaves_it_incomplete() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::stall());
    let app = llm_app(&fake, &[("LLM_TIMEOUT_SECONDS", "600")]).await;
    let mut response = app
        .post_as("/api/v1/chat", &app.admin_key)
        .header("Accept", "text/event-stream")
        .json(&json!({ "question": HIPAA_EBS }))
        .send()
        .await
        .unwrap();
    let start = first_event(&mut response).await;
    assert_eq!(start[0].event, "start");
    let id = start[0].data["message_id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.open_streams() == 1
        })
        .await,
        "the model was asked"
    );
    // The start event is stored with the message: a reader on another replica gets it while
    // the model has not said a word.
    let replica = spawn_replica(&app).await;
    let mut follower = replica
        .get_as(
            &format!("/api/v1/chat/messages/{id}/events"),
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(10), first_event(&mut follower))
        .await
        .expect("the start event of a stalled answer reaches another replica");
    assert_eq!(followed[0].event, "start");
    assert_eq!(followed[0].id.as_deref(), Some("1"));
    assert_eq!(followed[0].data, start[0].data);
    drop(follower);
    drop(response);
    // The model's stream is closed: nothing keeps generating for a client that left.
    tokio::time::timeout(Duration::from_secs(10), fake.streams_closed())
        .await
        .expect("the upstream request was dropped with the client");
    assert!(
        eventually(Duration::from_secs(10), || async {
            stored(&app, &id).await["status"] == "incomplete"
        })
        .await
    );
    let message = stored(&app, &id).await;
    assert_eq!(message["error"], "client_disconnected");
    assert_eq!(
        message["billing"]["billed"], true,
        "the client's choice, not our failure"
    );
    // What was sent is kept and can be read again.
    assert_eq!(stored_events(&app, &id).await[0].event, "start");
}

/// A replica killed mid-answer (SIGKILL: no shutdown, no final event) leaves its message
/// `streaming`. Once that is older than any answer could take, another replica's sweep ends it
/// as `answer_abandoned` with a final event readers can follow, and refunds it.
#[tokio::test]
async fn an_answer_whose_server_died_is_ended_and_refunded_by_another_replica() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::stall());
    let db = create_migrated_database().await;
    let mut env = base_env(&db);
    env.extend(fake.env(Api::OpenAi));
    env.insert("LLM_TIMEOUT_SECONDS".into(), "600".into());
    env.insert("CHAT_TIMEOUT_SECONDS".into(), "30".into());
    env.insert("METRICS_PORT".into(), "0".into());
    let client = reqwest::Client::new();
    let first = Process::serve(&env).await;
    let mut response = client
        .post(format!("http://{}/api/v1/chat", first.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .header("Accept", "text/event-stream")
        .json(&json!({ "question": HIPAA_EBS }))
        .send()
        .await
        .unwrap();
    let start = first_event(&mut response).await;
    let id = start[0].data["message_id"].as_str().unwrap().to_string();
    let seen_id = start[0].id.clone().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.open_streams() == 1
        })
        .await,
        "the model was asked"
    );
    drop(first);
    drop(response);

    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let (status, billed): (String, bool) =
        sqlx::query_as("SELECT status, billed FROM chat_messages WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), billed),
        ("streaming", true),
        "left behind"
    );
    // The clock moves past CHAT_TIMEOUT_SECONDS and the sweep's grace.
    sqlx::query("UPDATE chat_messages SET created_at = created_at - interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();

    let second = Process::serve(&env).await;
    let events = format!("http://{}/api/v1/chat/messages/{id}/events", second.addr());
    let body = tokio::time::timeout(Duration::from_secs(90), async {
        client
            .get(&events)
            .bearer_auth(BOOTSTRAP_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await
    .expect("the follower's stream ends once the sweep ends the message");
    let followed = parse_sse(&body);
    let last = followed.last().unwrap();
    assert_eq!(last.event, "error", "{followed:?}");
    assert_eq!(last.data["code"], "answer_abandoned");
    assert!(
        last.data["message"]
            .as_str()
            .unwrap()
            .ends_with("this question was not billed"),
        "{}",
        last.data
    );
    let message = second
        .bootstrap_json(&format!("/api/v1/chat/messages/{id}"))
        .await;
    assert_eq!(message["status"], "incomplete", "{message}");
    assert_eq!(message["error"], "answer_abandoned");
    assert_eq!(message["billing"]["billed"], false, "{message}");
    let usage = second.bootstrap_json("/api/v1/usage").await;
    assert_eq!(used_in(&usage, "ChatQuestions"), 0, "refunded: {usage}");
    // The first client, resuming after the last event it saw (which its writer may never have
    // stored), still gets the end.
    let rest = client
        .get(&events)
        .bearer_auth(BOOTSTRAP_KEY)
        .header("Last-Event-ID", seen_id)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rest = parse_sse(&rest);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].event, "error");
    assert_eq!(rest[0].data["code"], "answer_abandoned");
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_a_final_event() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::stall());
    let app = llm_app(&fake, &[("LLM_TIMEOUT_SECONDS", "600")]).await;
    let request = app
        .post_as("/api/v1/chat", &app.admin_key)
        .header("Accept", "text/event-stream")
        .json(&json!({ "question": HIPAA_EBS }));
    let reader = tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() });
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.open_streams() == 1
        })
        .await,
        "the answer is under way"
    );
    let pool = app.pool.clone();
    app.stop().await.unwrap();
    let events = parse_sse(&reader.await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last.event, "error", "{events:?}");
    assert_eq!(last.data["code"], "server_shutting_down");
    let (status, billed): (String, bool) =
        sqlx::query_as("SELECT status, billed FROM chat_messages")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), billed), ("incomplete", false));
}

/// Bedrock as a customer runs it: the binary, the AWS credential chain and region from the
/// environment, the endpoint override every AWS SDK honours (here the fake's event-stream).
#[tokio::test(flavor = "multi_thread")]
async fn bedrock_answers_through_the_aws_sdk_with_the_task_credentials() {
    let fake = FakeLlm::start().await;
    fake.set_reply(Reply::text(&[
        "Yes: encryption at rest is an addressable specification ",
        "[hipaa-sr:164.312(a)(2)(iv)].\n",
    ]));
    let db = create_migrated_database().await;
    let mut env = base_env(&db);
    for (k, v) in [
        ("LLM_PROVIDER", "bedrock"),
        ("LLM_MODEL", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &fake.endpoint()),
        ("METRICS_PORT", "0"),
    ] {
        env.insert(k.into(), v.into());
    }
    let server = Process::serve(&env).await;
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/v1/chat", server.port))
        .bearer_auth(crate::helpers::BOOTSTRAP_KEY)
        .json(&json!({ "question": HIPAA_EBS }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["answerer"], "bedrock", "{answer}");
    assert_eq!(answer["citations"][0]["id"], "hipaa-sr:164.312(a)(2)(iv)");
    assert!(
        answer["answer"]
            .as_str()
            .unwrap()
            .starts_with("Yes: encryption")
    );
    let request = fake.last_request();
    assert_eq!(request.model, "anthropic.claude-3-5-sonnet-20240620-v1:0");
    let authorization = request.header("authorization").unwrap_or_default();
    assert!(
        authorization.contains("/us-east-1/bedrock/aws4_request"),
        "signed with SigV4 for Bedrock: {authorization}"
    );
}
