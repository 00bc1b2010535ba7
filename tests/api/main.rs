//! Integration tests: the real server over TCP against real PostgreSQL and Redis.

mod auth;
mod deployment;
mod errors;
mod health;
mod helpers;
mod kb_api;
mod kb_data;
mod kb_load;
mod lifecycle;
mod ratelimit;
