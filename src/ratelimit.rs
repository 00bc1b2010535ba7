//! Request rate limits per API key and per client IP.
//!
//! Both backends implement GCRA (the generic cell rate algorithm) with the same parameters, so a
//! client sees the same limits whichever is in use: `governor` in process, and a small Lua script
//! in Redis when `REDIS_URL` is set, so that every replica draws from one budget. When Redis fails
//! the in-process limiter takes over at once and Redis is used again as soon as it answers.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter as Governor};
use ipnet::IpNet;

use crate::error::{Problem, problem_response};
use crate::redis_conn::RedisHandle;

type KeyedLimiter<K> = Governor<
    K,
    governor::state::keyed::DefaultKeyedStateStore<K>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Outcome of one check, enough to fill the `RateLimit-*` headers.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the budget is whole again.
    pub reset_secs: u64,
    /// Seconds to wait before the next request can pass (0 when allowed).
    pub retry_after_secs: u64,
}

/// Keyed by what is limited (a key id, an IP address): no allocation per check in process.
pub struct RateLimiter<K: std::hash::Hash + Eq + Clone + std::fmt::Display> {
    per_minute: u32,
    redis_prefix: String,
    local: KeyedLimiter<K>,
    redis: Option<RedisHandle>,
}

/// KEYS[1] bucket; ARGV[1] emission interval (ms), ARGV[2] burst. Uses the Redis clock so that
/// replicas with skewed clocks agree. Returns {allowed, remaining, retry_after_ms, reset_ms}.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return {1, math.floor((now - allow_at) / emission), 0, new_tat - now}
"#;

impl<K: std::hash::Hash + Eq + Clone + std::fmt::Display> RateLimiter<K> {
    pub fn new(per_minute: u32, redis: Option<RedisHandle>, redis_prefix: &str) -> Self {
        let burst = NonZeroU32::new(per_minute.max(1)).expect("non-zero");
        let quota = Quota::per_minute(burst).allow_burst(burst);
        Self {
            per_minute,
            redis_prefix: redis_prefix.to_string(),
            local: Governor::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            redis,
        }
    }

    pub async fn check(&self, bucket: &K) -> Decision {
        if let Some(redis) = &self.redis
            && let Some(decision) = self.check_redis(redis, bucket).await
        {
            return decision;
        }
        self.check_local(bucket)
    }

    async fn check_redis(&self, redis: &RedisHandle, bucket: &K) -> Option<Decision> {
        let emission_ms = 60_000.0 / f64::from(self.per_minute);
        let script = redis::Script::new(GCRA_SCRIPT);
        let mut invocation = script.key(format!("{}{bucket}", self.redis_prefix));
        invocation.arg(emission_ms).arg(self.per_minute);
        let reply: Vec<i64> = redis
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let [allowed, remaining, retry_ms, reset_ms] = reply[..] else {
            return None;
        };
        Some(Decision {
            allowed: allowed == 1,
            limit: self.per_minute,
            remaining: remaining.clamp(0, i64::from(self.per_minute)) as u32,
            reset_secs: ms_to_secs(reset_ms),
            retry_after_secs: if allowed == 1 {
                0
            } else {
                ms_to_secs(retry_ms).max(1)
            },
        })
    }

    fn check_local(&self, bucket: &K) -> Decision {
        let emission = Duration::from_secs_f64(60.0 / f64::from(self.per_minute));
        match self.local.check_key(bucket) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.per_minute.saturating_sub(remaining);
                Decision {
                    allowed: true,
                    limit: self.per_minute,
                    remaining,
                    reset_secs: (emission * used).as_secs_f64().ceil() as u64,
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    limit: self.per_minute,
                    remaining: 0,
                    reset_secs: (emission * self.per_minute).as_secs(),
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }

    /// Forgets idle in-process buckets; called periodically so memory stays bounded.
    pub fn prune(&self) {
        self.local.retain_recent();
        self.local.shrink_to_fit();
    }
}

fn ms_to_secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000)
}

/// Adds the IETF draft `RateLimit-*` headers (and `Retry-After` when refused).
pub fn apply_headers(headers: &mut HeaderMap, decision: &Decision) {
    let put = |headers: &mut HeaderMap, name: &'static str, value: u64| {
        headers.insert(name, HeaderValue::from(value));
    };
    put(headers, "ratelimit-limit", u64::from(decision.limit));
    put(
        headers,
        "ratelimit-remaining",
        u64::from(decision.remaining),
    );
    put(headers, "ratelimit-reset", decision.reset_secs);
    if !decision.allowed {
        put(headers, "retry-after", decision.retry_after_secs);
    }
}

pub fn too_many_requests(decision: &Decision, what: &str) -> Response {
    let problem = Problem::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "{what} exceeded {} requests per minute; retry after {} s",
            decision.limit, decision.retry_after_secs
        ),
    )
    .with("limit", decision.limit)
    .with("retry_after", decision.retry_after_secs);
    let mut response = problem_response(problem);
    apply_headers(response.headers_mut(), decision);
    response
}

/// The address a request came from: the TCP peer, or the right-most untrusted address of
/// `X-Forwarded-For` when the peer is a trusted proxy (an ALB appends the client it saw).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// What the per-IP middleware needs.
#[derive(Clone)]
pub struct IpLimit {
    pub limiter: Arc<RateLimiter<IpAddr>>,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXY_CIDRS`).
    pub trusted_proxies: Arc<[IpNet]>,
}

/// Per-IP limit, applied before authentication so that key guessing is throttled too.
/// Health probes from load balancers are never limited.
pub async fn limit_by_ip(State(state): State<IpLimit>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/health") {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = client_ip(peer, request.headers(), &state.trusted_proxies);
    let decision = state.limiter.check(&ip).await;
    if !decision.allowed {
        metrics::counter!("http_rate_limited_total", "by" => "ip").increment(1);
        return too_many_requests(&decision, "this client address");
    }
    next.run(request).await.into_response()
}

pub type SharedRateLimiter<K> = Arc<RateLimiter<K>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &headers, &[]), peer);
    }

    #[test]
    fn forwarded_for_from_trusted_proxy_yields_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.7"),
        );
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = client_ip("10.0.0.5".parse().unwrap(), &headers, &trusted);
        assert_eq!(
            ip,
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "spoofed left-most entry must be ignored"
        );
    }

    #[test]
    fn local_limiter_refuses_after_the_budget() {
        let limiter: RateLimiter<String> = RateLimiter::new(3, None, "t:");
        let k = "k".to_string();
        let results: Vec<bool> = (0..4).map(|_| limiter.check_local(&k).allowed).collect();
        assert_eq!(results, vec![true, true, true, false]);
        let refused = limiter.check_local(&k);
        assert!(refused.retry_after_secs >= 1);
        assert!(
            limiter.check_local(&"other".to_string()).allowed,
            "buckets are independent"
        );
    }
}
