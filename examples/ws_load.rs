//! Load client for the notification WebSocket (BENCHMARKS.md, "Notifications").
//!
//! Opens `--connections` sockets to `--url`, keeps them open (answering pings), reports how many
//! are open, then optionally publishes `--events` `test` events through
//! `POST /api/v1/admin/notifications/test` on `--publish` and reports, per event, how long each
//! socket took to receive it (p50/p99/max over every socket), measured on this machine's clock
//! from just before the POST.
//!
//! cargo run --release --example ws_load -- --url ws://127.0.0.1:8000/api/v1/notifications/ws \
//!     --key <admin key> --connections 10000 --hold 30 --publish http://127.0.0.1:8000 --events 5

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Args {
    urls: Vec<String>,
    key: String,
    connections: usize,
    hold: Duration,
    publish: Option<String>,
    events: usize,
}

fn args() -> Args {
    let mut out = Args {
        urls: Vec::new(),
        key: String::new(),
        connections: 1000,
        hold: Duration::from_secs(10),
        publish: None,
        events: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            // Repeat --url to spread the sockets over replicas (round robin).
            "--url" => out.urls.push(value),
            "--key" => out.key = value,
            "--connections" => out.connections = value.parse().expect("--connections"),
            "--hold" => out.hold = Duration::from_secs(value.parse().expect("--hold")),
            "--publish" => out.publish = Some(value),
            "--events" => out.events = value.parse().expect("--events"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!out.urls.is_empty(), "--url is required");
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    cloud_optimizer::ensure_crypto_provider();
    let args = args();
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // (event id, when this socket got it)
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant)>();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    for i in 0..args.connections {
        let url = args.urls[i % args.urls.len()].clone();
        let key = args.key.clone();
        let (open, failed, tx, gate) = (open.clone(), failed.clone(), tx.clone(), gate.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
            let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            drop(permit);
            open.fetch_add(1, Ordering::Relaxed);
            // Reading answers pings (tungstenite replies on the next read/flush).
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    let at = Instant::now();
                    if let Ok(event) = serde_json::from_str::<serde_json::Value>(text.as_str())
                        && let Some(id) = event["id"].as_i64()
                    {
                        let _ = tx.send((id, at));
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(tx);
    loop {
        let (o, f) = (open.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        if o + f >= args.connections || started.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "open {} failed {} in {:.1}s",
        open.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(args.hold).await;
    println!(
        "still open after {}s: {}",
        args.hold.as_secs(),
        open.load(Ordering::Relaxed)
    );

    let Some(base) = args.publish else { return };
    let client = reqwest::Client::new();
    for _ in 0..args.events {
        let sent = Instant::now();
        let response = client
            .post(format!("{base}/api/v1/admin/notifications/test"))
            .bearer_auth(&args.key)
            .json(&serde_json::json!({"load": true}))
            .send()
            .await
            .expect("publish");
        let event: serde_json::Value = response.json().await.expect("event");
        let id = event["id"].as_i64().expect("event id");
        let expected = open.load(Ordering::Relaxed);
        let mut latencies = Vec::with_capacity(expected);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while latencies.len() < expected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((got, at))) if got == id => latencies.push(at - sent),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        latencies.sort();
        println!(
            "event {id}: delivered to {}/{expected} sockets; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
            percentile(&latencies, 99.0).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
