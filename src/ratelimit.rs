//! Request rate limits per API key and per client IP.
//!
//! Both backends implement GCRA (the generic cell rate algorithm) with the same parameters, so a
//! client sees the same limits whichever is in use: `governor` in process, and a small Lua script
//! in Redis when `REDIS_URL` is set, so that every replica draws from one budget. When Redis fails
//! the in-process limiter takes over at once and Redis is used again as soon as it answers.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
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
pub struct RateLimiter<K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync> {
    per_minute: u32,
    /// The script's arguments for this limiter (emission interval in ms, burst), formatted once.
    script_args: [String; 2],
    redis_prefix: String,
    local: KeyedLimiter<K>,
    redis: Option<RedisHandle>,
}

/// KEYS[i] bucket i; ARGV[2i-1] its emission interval (ms), ARGV[2i] its burst. Checks the
/// buckets in order and stops at the first refusal, so a refused request costs nothing from the
/// buckets after it (as separate checks one after the other would). Uses the Redis clock so
/// that replicas with skewed clocks agree. Returns {allowed, remaining, retry_after_ms,
/// reset_ms} per bucket checked.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local emission = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + emission
  local allow_at = new_tat - emission * burst
  if allow_at > now then
    table.insert(out, 0); table.insert(out, 0)
    table.insert(out, allow_at - now); table.insert(out, tat - now)
    return out
  end
  redis.call('SET', key, new_tat, 'PX', math.ceil(new_tat - now) + 1000)
  table.insert(out, 1); table.insert(out, math.floor((now - allow_at) / emission))
  table.insert(out, 0); table.insert(out, new_tat - now)
end
return out
"#;

/// Built once: `Script::new` hashes the source, and `invoke_async` sends `EVALSHA` with that
/// hash (loading the script only when Redis answers NOSCRIPT, e.g. after a restart).
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));

/// One bucket of one limiter, as the script takes it.
trait Bucket: Sync {
    fn add_to(&self, invocation: &mut redis::ScriptInvocation<'static>);
    fn decision(&self, reply: &[i64]) -> Option<Decision>;
    fn local(&self) -> Decision;
}

impl<K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync> Bucket
    for (&RateLimiter<K>, &K)
{
    fn add_to(&self, invocation: &mut redis::ScriptInvocation<'static>) {
        let (limiter, bucket) = self;
        invocation
            .key(format!("{}{bucket}", limiter.redis_prefix))
            .arg(limiter.script_args[0].as_str())
            .arg(limiter.script_args[1].as_str());
    }

    fn decision(&self, reply: &[i64]) -> Option<Decision> {
        let per_minute = self.0.per_minute;
        let [allowed, remaining, retry_ms, reset_ms] = *reply else {
            return None;
        };
        Some(Decision {
            allowed: allowed == 1,
            limit: per_minute,
            remaining: remaining.clamp(0, i64::from(per_minute)) as u32,
            reset_secs: ms_to_secs(reset_ms),
            retry_after_secs: if allowed == 1 {
                0
            } else {
                ms_to_secs(retry_ms).max(1)
            },
        })
    }

    fn local(&self) -> Decision {
        self.0.check_local(self.1)
    }
}

/// Checks `buckets` in order in one Redis round trip (one `EVALSHA`), stopping at the first
/// refusal; in process when Redis is off or failing. The result has one decision per bucket
/// checked: every one allowed, or the last one refused.
async fn check_buckets(redis: Option<&RedisHandle>, buckets: &[&dyn Bucket]) -> Vec<Decision> {
    if let Some(redis) = redis {
        let mut invocation = GCRA.prepare_invoke();
        for bucket in buckets {
            bucket.add_to(&mut invocation);
        }
        let reply: Option<Vec<i64>> = redis
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await;
        if let Some(reply) = reply {
            let decisions: Option<Vec<Decision>> = reply
                .chunks(4)
                .zip(buckets)
                .map(|(chunk, bucket)| bucket.decision(chunk))
                .collect();
            if let Some(decisions) = decisions.filter(|d| !d.is_empty()) {
                return decisions;
            }
        }
    }
    let mut decisions = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        let decision = bucket.local();
        decisions.push(decision);
        if !decision.allowed {
            break;
        }
    }
    decisions
}

impl<K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync> RateLimiter<K> {
    pub fn new(per_minute: u32, redis: Option<RedisHandle>, redis_prefix: &str) -> Self {
        let burst = NonZeroU32::new(per_minute.max(1)).expect("non-zero");
        let quota = Quota::per_minute(burst).allow_burst(burst);
        Self {
            per_minute,
            script_args: [
                (60_000.0 / f64::from(per_minute.max(1))).to_string(),
                per_minute.to_string(),
            ],
            redis_prefix: redis_prefix.to_string(),
            local: Governor::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            redis,
        }
    }

    pub async fn check(&self, bucket: &K) -> Decision {
        let decisions = check_buckets(self.redis.as_ref(), &[&(self, bucket)]).await;
        decisions[0]
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

/// Checks `first` and, when it allows the request, `second`, in one Redis round trip: the
/// per-IP and per-key budgets of an authenticated request. Returns the first decision and the
/// second when it was checked. Both limiters must use the same Redis (they do: one per process).
pub async fn check_pair<A, B>(
    first: (&RateLimiter<A>, &A),
    second: (&RateLimiter<B>, &B),
) -> (Decision, Option<Decision>)
where
    A: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync,
    B: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync,
{
    let redis = first.0.redis.as_ref().or(second.0.redis.as_ref());
    let decisions = check_buckets(redis, &[&first, &second]).await;
    (decisions[0], decisions.get(1).copied())
}

/// The per-IP check of an `/api/v1` request, handed from [`limit_by_ip`] to the authentication
/// middleware so that it can check both budgets in one round trip. Whoever charges the address
/// calls [`DeferredIpCheck::claim`]; the IP middleware charges it itself when nothing downstream
/// did (the path matched no route, so authentication never ran).
#[derive(Clone)]
pub struct DeferredIpCheck {
    pub ip: IpAddr,
    pub limiter: Arc<RateLimiter<IpAddr>>,
    claimed: Arc<AtomicBool>,
}

impl DeferredIpCheck {
    pub fn claim(&self) -> &Self {
        self.claimed.store(true, Ordering::Relaxed);
        self
    }
}

/// What the per-IP middleware needs.
#[derive(Clone)]
pub struct IpLimit {
    pub limiter: Arc<RateLimiter<IpAddr>>,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXY_CIDRS`).
    pub trusted_proxies: Arc<[IpNet]>,
}

/// Per-IP limit, applied before authentication so that key guessing is throttled too.
/// Health probes from load balancers are never limited. Under `/api/v1` the check is handed to
/// the authentication middleware (one Redis round trip for both budgets, see
/// [`DeferredIpCheck`]); it runs before the key is looked up there, so guessing stays throttled.
pub async fn limit_by_ip(
    State(state): State<IpLimit>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path.starts_with("/health") {
        return next.run(request).await;
    }
    let deferred = path.starts_with("/api/v1/");
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = client_ip(peer, request.headers(), &state.trusted_proxies);
    if deferred {
        let check = DeferredIpCheck {
            ip,
            limiter: state.limiter.clone(),
            claimed: Arc::new(AtomicBool::new(false)),
        };
        request.extensions_mut().insert(check.clone());
        let response = next.run(request).await;
        if check.claimed.load(Ordering::Relaxed) {
            return response;
        }
        let decision = state.limiter.check(&ip).await;
        if !decision.allowed {
            metrics::counter!("http_rate_limited_total", "by" => "ip").increment(1);
            return too_many_requests(&decision, "this client address");
        }
        return response;
    }
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
