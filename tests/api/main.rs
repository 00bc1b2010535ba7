//! Integration tests: the real server over TCP against real PostgreSQL and Redis.

mod api_shape;
mod auth;
mod browser;
mod chat;
mod chat_engine;
mod cli;
mod console;
mod deployment;
mod docs;
mod documents;
mod errors;
#[path = "../support/fake_llm.rs"]
mod fake_llm;
#[path = "../support/fake_marketplace.rs"]
mod fake_marketplace;
mod health;
mod helpers;
mod kb_api;
mod kb_data;
mod kb_load;
mod layering;
mod lifecycle;
mod llm;
mod marketplace;
mod notifications;
mod ratelimit;
mod redis_tls;
mod scans;
