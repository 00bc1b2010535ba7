//! Cloud Optimizer: a security advisor for AWS in one binary.
//!
//! `main.rs` only parses the command line; everything else lives here so tests can start the
//! real server on a port of their choosing.
#![forbid(unsafe_code)]

// Base: import no capability.
pub mod aws;
pub mod aws_facts;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod redis_conn;
pub mod runtime;
pub mod telemetry;
pub mod web;

// Capabilities: import the base, never each other's internals or the composition root.
pub mod auth;
pub mod chat;
pub mod documents;
pub mod health;
pub mod kb;
pub mod llm;
pub mod marketplace;
pub mod notifications;
pub mod ratelimit;
pub mod scans;

// Composition root: builds the state, merges the routers, runs the process.
pub mod cli;
pub mod console;
pub mod docs;
pub mod http;
pub mod server;
pub mod state;

/// The version of the knowledge base shipped with this build (from `data/compliance/manifest.json`).
pub fn shipped_kb_version() -> String {
    static MANIFEST: &str = include_str!("../data/compliance/manifest.json");
    serde_json::from_str::<serde_json::Value>(MANIFEST)
        .ok()
        .and_then(|m| {
            m.get("kb_version")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `v{crate version}-ib{kb version}`, as printed by `--version` and reported by `/health`.
pub fn version() -> String {
    format!("v{}-ib{}", env!("CARGO_PKG_VERSION"), shipped_kb_version())
}

/// Makes `ring` the process's rustls provider (one TLS stack for PostgreSQL, AWS, OTLP and
/// bundle downloads). Idempotent; called before any client is built.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
