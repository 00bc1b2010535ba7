//! Real-time notifications: events reach WebSocket clients on every replica, replay by id,
//! tickets, refusals before the upgrade, slow clients, shutdown.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `ws://` URL of `path` on a server whose base URL is `address` (`http://host:port`).
fn ws_url(address: &str, path: &str) -> String {
    format!("{}{path}", address.replacen("http://", "ws://", 1))
}

async fn open(
    address: &str,
    path: &str,
    key: Option<&str>,
    origin: Option<&str>,
) -> Result<Socket, tungstenite::Error> {
    let mut request = ws_url(address, path).into_client_request().unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The refusal of an upgrade: its status and problem+json body.
fn refusal(result: Result<Socket, tungstenite::Error>) -> (u16, serde_json::Value) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the socket opened"),
    }
}

/// The next event on the socket (pings and pongs skipped).
async fn next_event(socket: &mut Socket) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("an event in time")
            .expect("the socket is open")
            .expect("a message");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Publishes a `test` event through the admin endpoint; returns it as the server stored it.
async fn publish_test(address: &str, data: serde_json::Value) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{address}/api/v1/admin/notifications/test"))
        .bearer_auth(BOOTSTRAP_KEY)
        .json(&data)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn list(address: &str, query: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .get(format!("{address}/api/v1/notifications{query}"))
        .bearer_auth(BOOTSTRAP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn replica(db: &str, customise: impl FnOnce(&mut HashMap<String, String>)) -> Process {
    let mut vars = base_env(db);
    vars.insert("METRICS_PORT".into(), "0".into());
    customise(&mut vars);
    Process::serve(&vars).await
}

fn http(process: &Process) -> String {
    format!("http://{}", process.addr())
}

#[tokio::test]
async fn an_event_published_on_one_replica_reaches_a_socket_on_another_and_the_listing() {
    let db = create_migrated_database().await;
    let a = replica(&db, |_| {}).await;
    let b = replica(&db, |_| {}).await;
    let mut socket = open(
        &http(&b),
        "/api/v1/notifications/ws",
        Some(BOOTSTRAP_KEY),
        None,
    )
    .await
    .unwrap();

    let published = publish_test(&http(&a), serde_json::json!({"hello": "from a"})).await;
    let received = next_event(&mut socket).await;
    assert_eq!(received, published);
    assert_eq!(received["type"], "test");
    assert_eq!(received["data"], serde_json::json!({"hello": "from a"}));

    // The listing on either replica gives the same event, byte for byte in JSON terms.
    let since = published["id"].as_i64().unwrap() - 1;
    let page = list(&http(&b), &format!("?since={since}")).await;
    assert_eq!(page["items"], serde_json::json!([published]));
    assert_eq!(page["total"], 1);
    // The API's one timestamp shape: RFC 3339, UTC, milliseconds.
    let ts = published["ts"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-12-01T06:00:00.000Z".len(), "{ts}");
    assert!(ts.ends_with('Z'), "{ts}");
    assert_eq!(page["next"], serde_json::Value::Null);
}

#[tokio::test]
async fn only_committed_events_are_delivered_in_commit_order() {
    let app = spawn_app().await;
    let mut socket = open(
        &app.address,
        "/api/v1/notifications/ws",
        Some(&app.admin_key),
        None,
    )
    .await
    .unwrap();
    let mut first = app.pool.begin().await.unwrap();
    cloud_optimizer::events::publish(&mut *first, "scan.started", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    let mut second = app.pool.begin().await.unwrap();
    cloud_optimizer::events::publish(&mut *second, "scan.started", serde_json::json!({"n": 2}))
        .await
        .unwrap();
    let mut aborted = app.pool.begin().await.unwrap();
    cloud_optimizer::events::publish(&mut *aborted, "scan.started", serde_json::json!({"n": 3}))
        .await
        .unwrap();
    second.commit().await.unwrap();
    aborted.rollback().await.unwrap();
    first.commit().await.unwrap();
    let marker = publish_test(&app.address, serde_json::json!({"marker": true})).await;

    let mut got = Vec::new();
    loop {
        let event = next_event(&mut socket).await;
        if event["id"] == marker["id"] {
            break;
        }
        got.push(event);
    }
    let order: Vec<i64> = got
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![2, 1],
        "commit order, the rolled back event never"
    );
    assert!(got[0]["id"].as_i64() < got[1]["id"].as_i64());
}

#[tokio::test]
async fn a_client_reconnecting_with_since_misses_nothing_and_gets_nothing_twice() {
    let db = create_migrated_database().await;
    let a = replica(&db, |_| {}).await;
    let b = replica(&db, |_| {}).await;
    let mut socket = open(
        &http(&b),
        "/api/v1/notifications/ws",
        Some(BOOTSTRAP_KEY),
        None,
    )
    .await
    .unwrap();
    let first = publish_test(&http(&a), serde_json::json!({"n": 1})).await;
    assert_eq!(next_event(&mut socket).await, first);
    socket.close(None).await.unwrap();
    drop(socket);

    let mut missed = Vec::new();
    for n in 2..=5 {
        missed.push(publish_test(&http(&a), serde_json::json!({"n": n})).await);
    }
    let path = format!("/api/v1/notifications/ws?since={}", first["id"]);
    let mut socket = open(&http(&b), &path, Some(BOOTSTRAP_KEY), None)
        .await
        .unwrap();
    for expected in &missed {
        assert_eq!(&next_event(&mut socket).await, expected);
    }
    let live = publish_test(&http(&a), serde_json::json!({"n": 6})).await;
    assert_eq!(next_event(&mut socket).await, live, "live after the replay");
}

#[tokio::test]
async fn subscriptions_filter_by_type_at_connect_and_by_message() {
    let app = spawn_app().await;
    let mut socket = open(
        &app.address,
        "/api/v1/notifications/ws?types=scan.*",
        Some(&app.admin_key),
        None,
    )
    .await
    .unwrap();
    publish_test(&app.address, serde_json::json!({"skipped": true})).await;
    cloud_optimizer::events::publish(&app.pool, "scan.completed", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(next_event(&mut socket).await["type"], "scan.completed");

    socket
        .send(Message::text(r#"{"subscribe": ["test"]}"#))
        .await
        .unwrap();
    // The server reads in order: its pong to this ping proves the subscription is applied.
    socket.send(Message::Ping("sync".into())).await.unwrap();
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Pong(_) => break,
            Message::Ping(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    let wanted = publish_test(&app.address, serde_json::json!({"now": "wanted"})).await;
    assert_eq!(next_event(&mut socket).await, wanted);

    socket.send(Message::text("not json")).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap();
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected a policy close, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals_come_before_the_upgrade_as_problem_json() {
    let app = spawn_app_with(|env| {
        env.insert(
            "CORS_ALLOWED_ORIGINS".into(),
            "https://console.example".into(),
        );
        env.insert("NOTIFICATIONS_MAX_CONNECTIONS".into(), "1".into());
    })
    .await;
    let path = "/api/v1/notifications/ws";
    let admin = Some(app.admin_key.as_str());
    let evil = Some("https://evil.example");
    let types = format!("{path}?types=Bad");
    let since = format!("{path}?since=999999999");
    for (url, key, origin, expected) in [
        (path, None, None, (401, "missing_api_key")),
        (path, Some("co_wrong"), None, (401, "invalid_api_key")),
        (path, admin, evil, (403, "origin_not_allowed")),
        (types.as_str(), admin, None, (400, "invalid_types")),
        (since.as_str(), admin, None, (400, "invalid_since")),
    ] {
        let (status, body) = refusal(open(&app.address, url, key, origin).await);
        assert_eq!(
            (status, body["code"].as_str()),
            (expected.0, Some(expected.1)),
            "{url} key={key:?} origin={origin:?}"
        );
    }
    // A plain GET is not an upgrade.
    assert_problem(
        app.get_as(path, &app.admin_key).send().await.unwrap(),
        400,
        "websocket_upgrade_required",
    )
    .await;

    let mut held = open(
        &app.address,
        path,
        Some(&app.admin_key),
        Some("https://console.example"),
    )
    .await
    .expect("an allowed origin connects");
    let (status, body) = refusal(open(&app.address, path, Some(&app.admin_key), None).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("too_many_connections"))
    );

    // Over NOTIFICATIONS_MAX_MESSAGE_BYTES (4 KiB by default): closed with 1009.
    let big = format!(r#"{{"subscribe": ["{}"]}}"#, "a".repeat(5000));
    held.send(Message::text(big)).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), held.next())
        .await
        .unwrap();
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a size close, got {other:?}"),
    }
    // The slot is free again once that socket is gone.
    let reopened = eventually(Duration::from_secs(10), || async {
        open(&app.address, path, Some(&app.admin_key), None)
            .await
            .is_ok()
    })
    .await;
    assert!(reopened);
}

async fn new_ticket(address: &str, key: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{address}/api/v1/notifications/ticket"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    let expires_at = body["expires_at"].as_str().unwrap();
    assert_eq!(
        expires_at.len(),
        "2026-12-01T06:00:00.000Z".len(),
        "{expires_at}"
    );
    body["ticket"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_ticket_opens_one_socket_once_on_any_replica_and_expires() {
    let db = create_migrated_database().await;
    let a = replica(&db, |_| {}).await;
    // A replica whose clock runs 31 s ahead: a fresh ticket from A is expired there.
    let late = replica(&db, |env| {
        env.insert("CO_TEST_CLOCK_OFFSET_SECONDS".into(), "31".into());
    })
    .await;
    let b = replica(&db, |_| {}).await;

    let (_, user_key) = {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/keys", http(&a)))
            .bearer_auth(BOOTSTRAP_KEY)
            .json(&serde_json::json!({"name": "browser", "scope": "user"}))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_string(),
            body["key"].as_str().unwrap().to_string(),
        )
    };
    let ticket = new_ticket(&http(&a), &user_key).await;
    let path = format!("/api/v1/notifications/ws?ticket={ticket}");
    let mut socket = open(&http(&b), &path, None, None)
        .await
        .expect("the ticket opens a socket on another replica");
    let event = publish_test(&http(&a), serde_json::json!({"for": "ticket holder"})).await;
    assert_eq!(next_event(&mut socket).await, event);

    let (status, body) = refusal(open(&http(&a), &path, None, None).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_ticket"))
    );

    let ticket = new_ticket(&http(&a), &user_key).await;
    let path = format!("/api/v1/notifications/ws?ticket={ticket}");
    let (status, body) = refusal(open(&http(&late), &path, None, None).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("ticket_expired"))
    );
    // Used up by the failed attempt too.
    let (status, body) = refusal(open(&http(&b), &path, None, None).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_ticket"))
    );
}

/// A socket whose receive buffer is tiny and which reads nothing until told to.
async fn open_slow(address: &str, path: &str) -> Socket {
    let host = address.trim_start_matches("http://");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(host.parse().unwrap()).await.unwrap();
    let mut request = ws_url(address, path).into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {BOOTSTRAP_KEY}").parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    socket
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.metrics_address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_client_that_cannot_keep_up_is_cut_with_4008_and_resumes_by_id() {
    let app = spawn_app_with(|env| {
        env.insert("NOTIFICATIONS_QUEUE".into(), "4".into());
    })
    .await;
    let start = publish_test(&app.address, serde_json::json!({"start": true})).await;
    let path = format!("/api/v1/notifications/ws?since={}", start["id"]);
    let mut slow = open_slow(&app.address, &path).await;

    // Large events until the server gives up on the client (its socket buffers fill first).
    let padding = "x".repeat(64 * 1024);
    let mut published = Vec::new();
    for n in 0..400 {
        published.push(
            publish_test(&app.address, serde_json::json!({"n": n, "pad": padding})).await["id"]
                .as_i64()
                .unwrap(),
        );
        if n % 10 == 9
            && metric(&app, "notifications_clients_cut_total{reason=\"too_slow\"}").await >= 1.0
        {
            break;
        }
    }
    assert!(
        metric(&app, "notifications_clients_cut_total{reason=\"too_slow\"}").await >= 1.0,
        "the slow client was cut"
    );

    // It reads now: events, then the close frame telling it where to resume.
    let mut received = Vec::new();
    let resume_from = loop {
        let message = tokio::time::timeout(Duration::from_secs(15), slow.next())
            .await
            .expect("the rest of the stream in time")
            .expect("a close frame before the end")
            .expect("a message");
        match message {
            Message::Text(text) => {
                let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                received.push(event["id"].as_i64().unwrap());
            }
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4008);
                let reason = frame.reason.to_string();
                let since: i64 = reason.rsplit("since=").next().unwrap().parse().unwrap();
                break since;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        Some(&resume_from),
        received.last(),
        "resume from the last one received"
    );
    assert!(
        received.len() < published.len(),
        "it was cut before the end"
    );

    let path = format!("/api/v1/notifications/ws?since={resume_from}");
    let mut socket = open(&app.address, &path, Some(&app.admin_key), None)
        .await
        .unwrap();
    let last = *published.last().unwrap();
    while received.last() != Some(&last) {
        received.push(next_event(&mut socket).await["id"].as_i64().unwrap());
    }
    assert_eq!(received, published, "every event once, in order");
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_going_away() {
    let app = spawn_app().await;
    let mut socket = open(
        &app.address,
        "/api/v1/notifications/ws",
        Some(&app.admin_key),
        None,
    )
    .await
    .unwrap();
    let stopping = tokio::spawn(app.stop());
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(frame.unwrap().code, CloseCode::Away);
    stopping.await.unwrap().unwrap();
}

/// PostgreSQL keeps a JSON number as a decimal with every digit: the largest doubles come back
/// as 309-digit integers, which must read back as the same doubles, or one such event would make
/// the list and every replay fail (found by schemathesis).
#[tokio::test]
async fn an_event_with_extreme_numbers_reads_back_as_sent() {
    let app = spawn_app().await;
    let data = serde_json::json!({"max": f64::MAX, "min": -f64::MAX, "tiny": 5e-324, "big": 5.787348169066238e16});
    // PostgreSQL writes an integral double as an integer: compared as numbers.
    let same = |got: &serde_json::Value| {
        ["max", "min", "tiny", "big"]
            .iter()
            .all(|k| got[k].as_f64() == data[k].as_f64())
    };
    let published = publish_test(&app.address, data.clone()).await;
    assert!(same(&published["data"]), "{published}");
    let listed = list(&app.address, "?types=test").await;
    let items = listed["items"].as_array().unwrap();
    assert!(same(&items.last().unwrap()["data"]), "{listed}");
}

#[tokio::test]
async fn listing_pages_and_filters_and_the_test_endpoint_needs_admin() {
    let app = spawn_app().await;
    let (_, user_key) = app.create_key("reader", "user").await;
    let response = app
        .post_as("/api/v1/admin/notifications/test", &user_key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "insufficient_scope").await;
    let response = app
        .post_as("/api/v1/admin/notifications/test", &app.admin_key)
        .json(&serde_json::json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_body").await;

    let before = list(&app.address, "?limit=1000").await;
    let start = before["items"]
        .as_array()
        .unwrap()
        .last()
        .map_or(0, |e| e["id"].as_i64().unwrap());
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(publish_test(&app.address, serde_json::json!({"n": n})).await["id"].clone());
    }
    let page = list(&app.address, &format!("?since={start}&limit=2&types=test")).await;
    assert_eq!(page["total"], 3);
    let first: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(first, ids[..2]);
    // `next` keeps the cursor and the filters and moves the offset.
    let next = page["next"].as_str().unwrap();
    let query = next.strip_prefix("/api/v1/notifications").unwrap();
    let page = list(&app.address, query).await;
    assert_eq!(page["next"], serde_json::Value::Null);
    assert_eq!(page["total"], 3);
    assert_eq!(page["offset"], 2);
    assert_eq!(page["items"][0]["id"], ids[2]);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let page = list(&app.address, &format!("?since={start}&types=kb.*")).await;
    assert_eq!(page["items"], serde_json::json!([]));
    let response = app
        .get_as("/api/v1/notifications?types=a..b", &user_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_types").await;
}

async fn notifications_health(address: &str) -> (String, String) {
    let health: serde_json::Value = reqwest::get(format!("{address}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        health["status"].as_str().unwrap().to_string(),
        health["components"]["notifications"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// A Redis server of the test's own (it may be stopped and started), and the key prefix the
/// test's replicas share: replicas of one deployment share it, hence the channel.
async fn redis_for_replicas() -> (u16, crate::ratelimit::OwnRedis, String) {
    let (port, redis) = with_free_port(|port| async move {
        let mut redis = crate::ratelimit::OwnRedis::start(port);
        redis.is_ours(port).await.then_some((port, redis))
    })
    .await;
    (
        port,
        redis,
        format!("test:{}:", uuid::Uuid::new_v4().simple()),
    )
}

/// The environment that points a replica at that Redis.
fn pointed_at(port: u16, prefix: &str) -> impl Fn(&mut HashMap<String, String>) + Copy + '_ {
    move |env| {
        env.insert("REDIS_URL".into(), format!("redis://127.0.0.1:{port}"));
        env.insert("REDIS_KEY_PREFIX".into(), prefix.to_owned());
    }
}

#[tokio::test]
async fn through_redis_an_event_crosses_replicas_and_a_redis_restart_loses_nothing() {
    use crate::ratelimit::{OwnRedis, redis_answers};
    let (port, redis, prefix) = redis_for_replicas().await;
    let with_redis = pointed_at(port, &prefix);
    let db = create_migrated_database().await;
    let a = replica(&db, with_redis).await;
    let b = replica(&db, with_redis).await;
    let ok = eventually(Duration::from_secs(10), || async {
        notifications_health(&http(&b)).await.1 == "ok"
    })
    .await;
    assert!(ok, "the bus of B connects to redis");
    let mut socket = open(
        &http(&b),
        "/api/v1/notifications/ws",
        Some(BOOTSTRAP_KEY),
        None,
    )
    .await
    .unwrap();
    let first = publish_test(&http(&a), serde_json::json!({"via": "redis"})).await;
    assert_eq!(next_event(&mut socket).await, first);

    drop(redis);
    let down = eventually(Duration::from_secs(10), || async {
        let (status, bus) = notifications_health(&http(&b)).await;
        status == "degraded" && bus.starts_with("down")
    })
    .await;
    assert!(down, "/health shows the bus down while redis is");
    let mut missed = Vec::new();
    for n in 0..3 {
        missed.push(publish_test(&http(&a), serde_json::json!({"while_down": n})).await);
    }

    let _redis = OwnRedis::start(port);
    assert!(redis_answers(port).await);
    for expected in &missed {
        assert_eq!(&next_event(&mut socket).await, expected);
    }
    let after = publish_test(&http(&a), serde_json::json!({"after": true})).await;
    assert_eq!(next_event(&mut socket).await, after);
    assert_eq!(notifications_health(&http(&b)).await.1, "ok");
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let app = spawn_app_with(|env| {
        env.insert("NOTIFICATIONS_PING_SECONDS".into(), "1".into());
    })
    .await;
    // Never read: its client library cannot answer the server's pings.
    let _silent = open(
        &app.address,
        "/api/v1/notifications/ws",
        Some(&app.admin_key),
        None,
    )
    .await
    .unwrap();
    assert_eq!(metric(&app, "notifications_connections").await, 1.0);
    let dropped = eventually(Duration::from_secs(20), || async {
        metric(&app, "notifications_clients_cut_total{reason=\"dead\"}").await >= 1.0
    })
    .await;
    assert!(dropped, "the silent peer is dropped");
    let freed = eventually(Duration::from_secs(10), || async {
        metric(&app, "notifications_connections").await == 0.0
    })
    .await;
    assert!(freed, "its connection slot is freed");
}

#[tokio::test]
async fn revoking_a_key_closes_its_open_sockets() {
    let app = spawn_app().await;
    let (id, key) = app.create_key("watcher", "user").await;
    let (_, other) = app.create_key("other", "user").await;
    let path = "/api/v1/notifications/ws";
    let mut revoked = open(&app.address, path, Some(&key), None).await.unwrap();
    let mut kept = open(&app.address, path, Some(&other), None).await.unwrap();
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(15), revoked.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.code, CloseCode::Policy);
    assert!(closed.reason.contains("revoked"), "{}", closed.reason);
    let event = publish_test(&app.address, serde_json::json!({"still": "here"})).await;
    assert_eq!(
        next_event(&mut kept).await,
        event,
        "other keys' sockets stay open"
    );
}

#[tokio::test]
async fn a_since_older_than_retention_is_refused_instead_of_skipping_events() {
    let app = spawn_app().await;
    let old = publish_test(&app.address, serde_json::json!({"n": 1})).await;
    publish_test(&app.address, serde_json::json!({"n": 2})).await;
    // Retention as the periodic task runs it, with everything past retention.
    let pruned =
        cloud_optimizer::notifications::store::prune(&app.pool, Duration::ZERO, chrono::Utc::now())
            .await
            .unwrap();
    assert!(pruned >= 2);
    let since = format!("?since={}", old["id"]);
    let response = app
        .get_as(&format!("/api/v1/notifications{since}"), &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 410, "since_expired").await;
    let (status, body) = refusal(
        open(
            &app.address,
            &format!("/api/v1/notifications/ws{since}"),
            Some(&app.admin_key),
            None,
        )
        .await,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("since_expired"))
    );
    // 0 (or nothing) still means "whatever is kept".
    assert_eq!(
        list(&app.address, "?since=0").await["items"],
        serde_json::json!([])
    );
    let fresh = publish_test(&app.address, serde_json::json!({"n": 3})).await;
    let page = list(&app.address, "").await;
    assert_eq!(page["items"], serde_json::json!([fresh]));
}

#[tokio::test]
async fn when_the_redis_relay_replica_dies_another_takes_over_and_nothing_is_lost() {
    let (port, _redis, prefix) = redis_for_replicas().await;
    let with_redis = pointed_at(port, &prefix);
    let db = create_migrated_database().await;
    let a = replica(&db, with_redis).await;
    let relaying = "relaying notification events to redis";
    assert!(
        eventually(Duration::from_secs(10), || async { a.logged(relaying) }).await,
        "the first replica becomes the relay"
    );
    let b = replica(&db, with_redis).await;
    let ok = eventually(Duration::from_secs(10), || async {
        notifications_health(&http(&b)).await.1 == "ok"
    })
    .await;
    assert!(ok, "the bus of B connects to redis");
    assert!(!b.logged(relaying), "one relay at a time");
    let mut socket = open(
        &http(&b),
        "/api/v1/notifications/ws",
        Some(BOOTSTRAP_KEY),
        None,
    )
    .await
    .unwrap();
    let first = publish_test(&http(&b), serde_json::json!({"relay": "a"})).await;
    assert_eq!(next_event(&mut socket).await, first);

    // The relay dies without a word: its PostgreSQL session, and with it the relay lock, ends.
    a.signal("KILL");
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(publish_test(&http(&b), serde_json::json!({"relay_gone": n})).await);
    }
    for expected in &published {
        assert_eq!(&next_event(&mut socket).await, expected);
    }
    assert!(b.logged(relaying), "the survivor took the relay over");
    let after = publish_test(&http(&b), serde_json::json!({"relay": "b"})).await;
    assert_eq!(next_event(&mut socket).await, after);
}
