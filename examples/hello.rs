//! A bare axum "hello world" JSON endpoint: the baseline the throughput benchmark compares the
//! real server against (same machine, same run). `cargo run --release --example hello -- 127.0.0.1:9000`
use axum::{Json, Router, routing::get};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let app = Router::new().route(
        "/hello",
        get(|| async { Json(serde_json::json!({"hello": "world"})) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
