//! Integration tests: the real server over TCP against real PostgreSQL and Redis.

mod auth;
mod deployment;
mod errors;
mod health;
mod helpers;
mod lifecycle;
mod ratelimit;
