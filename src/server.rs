//! Start-up, serving and graceful shutdown of `cloud-optimizer serve`.
//!
//! [`Server::start`] does everything that can fail before traffic (database, migrations, Redis,
//! KB, license); [`Server::run`] serves on listeners the caller bound, so tests can bind port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::auth::{AuthState, Authenticator};
use crate::config::Config;
use crate::kb::KbState;
use crate::ratelimit::{IpLimit, RateLimiter};
use crate::redis_conn::RedisHandle;
use crate::runtime::{Components, Lifecycle};
use crate::state::{AppState, AppStateInner};
use crate::{db, http, telemetry};

pub struct Server {
    pub state: AppState,
    tasks: JoinSet<&'static str>,
}

impl Server {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        crate::ensure_crypto_provider();
        // The recorder first: a metric set before it exists (the start-up license check) is lost.
        telemetry::metrics_handle();
        let config = Arc::new(config);
        let pool = db::connect(&config.database).await?;
        if config.migrate_on_startup {
            db::migrate(&pool).await?;
        }
        let redis = match &config.redis_url {
            Some(url) => {
                use secrecy::ExposeSecret;
                let handle = RedisHandle::new(url.expose_secret()).context("REDIS_URL")?;
                handle.refresh().await;
                if !handle.is_healthy() {
                    tracing::warn!(
                        "redis is not reachable at start-up; serving with in-process fallbacks"
                    );
                }
                Some(handle)
            }
            None => None,
        };
        let authenticator = Arc::new(Authenticator::new(
            pool.clone(),
            config.bootstrap_admin_api_key.as_ref(),
        ));
        let key_limiter = Arc::new(RateLimiter::new(
            config.rate_limit_per_minute,
            redis.clone(),
            &format!("{}rl:key:", config.redis_key_prefix),
        ));
        let ip_limiter = Arc::new(RateLimiter::new(
            config.rate_limit_ip_per_minute,
            redis.clone(),
            &format!("{}rl:ip:", config.redis_key_prefix),
        ));
        let components = Arc::new(Components::new(
            config.neo4j.is_some(),
            config.marketplace.enabled,
        ));
        let kb_graph = match &config.neo4j {
            Some(neo4j) => Some(Arc::new(crate::kb::graph::KbGraph::connect(neo4j).await)),
            None => None,
        };
        let marketplace = crate::marketplace::Marketplace::new(
            config.marketplace.clone(),
            pool.clone(),
            components.clone(),
        )
        .await?;
        let lifecycle = Lifecycle::default();
        let lifecycle_stop = lifecycle.stop.clone();
        let notifications = crate::notifications::NotificationsState::new(
            pool.clone(),
            config.notifications.clone(),
            &config.cors_allowed_origins,
            marketplace.clock.clone(),
            lifecycle.stop.clone(),
            components.clone(),
            redis.clone().map(|r| {
                let channel = crate::notifications::redis_bus::channel(&config.redis_key_prefix);
                (r, channel)
            }),
        );
        let llm = match &config.llm {
            Some(llm) => Some(Arc::new(
                crate::llm::Llm::new(llm)
                    .await
                    .context("configuring the LLM provider")?,
            )),
            None => None,
        };
        let kb_state = KbState {
            db: pool.clone(),
            source: Arc::new(config.kb_path.clone()),
            cache: Arc::new(crate::kb::cache::KbCache::new(config.kb_cache_entries)),
            search: Default::default(),
            graph: kb_graph,
            components: components.clone(),
            automated: Arc::new(
                crate::scans::checks::implemented()
                    .map(str::to_string)
                    .collect(),
            ),
        };
        let state = AppState::new(AppStateInner {
            config: config.clone(),
            db: pool.clone(),
            redis,
            lifecycle,
            components: components.clone(),
            auth: AuthState {
                db: pool.clone(),
                authenticator: authenticator.clone(),
                key_limiter,
            },
            ip_limit: IpLimit {
                limiter: ip_limiter,
                trusted_proxies: config.trusted_proxies.clone().into(),
            },
            scans: crate::scans::ScansState::new(
                pool.clone(),
                config.scans.clone(),
                marketplace.clone(),
                lifecycle_stop.clone(),
            ),
            documents: crate::documents::DocumentsState::new(
                pool.clone(),
                config.documents.clone(),
                marketplace.clone(),
                llm.clone(),
                lifecycle_stop.clone(),
            ),
            chat: crate::chat::ChatState::new(
                pool.clone(),
                kb_state.clone(),
                marketplace.clone(),
                config.chat.clone(),
                llm,
                lifecycle_stop.clone(),
            ),
            kb: kb_state,
            marketplace,
            notifications,
        });
        // The first license check finishes before serving when it can; transient AWS errors keep
        // retrying in the background (status `pending`, trial limits) as AWS advises.
        if let Some(check) = crate::marketplace::license::check_with_retries(
            &state.marketplace,
            Duration::from_secs(10),
            &state.lifecycle.stop,
        )
        .await
        {
            crate::marketplace::license::apply(&state.marketplace, check).await;
        }
        export_initial_metrics(&state).await;
        crate::kb::refresh(&state.kb).await;
        if let Err(err) = state.notifications.hub.start_at_newest(&state.db).await {
            tracing::warn!(error = %err, "cannot read the newest notification event yet; the bus listener will");
        }

        if !authenticator.has_bootstrap_key()
            && !crate::auth::keys::any_active(&state.db)
                .await
                .unwrap_or(true)
        {
            tracing::warn!(
                "no API key exists yet: create one with `cloud-optimizer keys create --name admin --scope admin` \
                 (under compose: `docker compose exec -T app cloud-optimizer keys create --name admin --scope admin`) \
                 or set BOOTSTRAP_ADMIN_API_KEY"
            );
        }

        let mut server = Self {
            state,
            tasks: JoinSet::new(),
        };
        server.spawn_background();
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            version = %crate::version(),
            "start-up complete"
        );
        Ok(server)
    }

    /// Every background task is spawned here, stops on `lifecycle.stop`, and is awaited at shutdown.
    fn spawn_background(&mut self) {
        let stop = self.state.lifecycle.stop.clone();
        let cache = self.state.kb.cache.clone();
        let pool = self.state.db.clone();
        self.tasks.spawn({
            let stop = stop.clone();
            async move {
                cache.listen(pool, stop).await;
                "KB cache listener"
            }
        });
        let auth = self.state.auth.authenticator.clone();
        self.tasks.spawn({
            let stop = stop.clone();
            async move {
                auth.listen_for_revocations(stop).await;
                "key revocation listener"
            }
        });
        let auth = self.state.auth.authenticator.clone();
        self.tasks.spawn({
            let stop = stop.clone();
            async move {
                auth.record_usage(stop).await;
                "key usage recorder"
            }
        });
        if let Some(redis) = self.state.redis.clone() {
            self.tasks.spawn({
                let stop = stop.clone();
                async move {
                    redis.supervise(Duration::from_secs(2), stop).await;
                    "redis supervisor"
                }
            });
        }
        let market = self.state.marketplace.clone();
        self.tasks.spawn({
            let stop = stop.clone();
            async move {
                crate::marketplace::license::recheck_loop(market, stop).await;
                "license re-check"
            }
        });
        let kb = self.state.kb.clone();
        self.tasks.spawn(async move {
            crate::chat::warm_up(kb).await;
            "chat warm-up"
        });
        let kb = self.state.kb.clone();
        let kb_interval = self.state.config.kb_refresh_interval;
        self.tasks.spawn({
            let stop = stop.clone();
            async move {
                crate::kb::refresh_loop(kb, kb_interval, stop).await;
                "KB refresh"
            }
        });
        if self.state.marketplace.client.is_some() {
            let market = self.state.marketplace.clone();
            let stop = stop.clone();
            self.tasks.spawn(async move {
                crate::marketplace::reporter::run(market, stop).await;
                "metering reporter"
            });
        }
        let notifications = self.state.notifications.clone();
        self.tasks.spawn(async move {
            notifications.listen().await;
            "notification bus listener"
        });
        if self.state.notifications.redis.is_some() {
            let notifications = self.state.notifications.clone();
            self.tasks.spawn(async move {
                notifications.relay().await;
                "notification relay"
            });
        }
        let notifications = self.state.notifications.clone();
        self.tasks.spawn(async move {
            notifications.follow_revocations().await;
            "notification key revocations"
        });
        let notifications = self.state.notifications.clone();
        self.tasks.spawn(async move {
            notifications.prune_loop().await;
            "notification retention"
        });
        let notifications = self.state.notifications.clone();
        self.tasks.spawn(async move {
            notifications.close_sockets(Duration::from_secs(3)).await;
            "notification sockets"
        });
        let chat = self.state.chat.clone();
        self.tasks.spawn(async move {
            crate::chat::follow_loop(chat).await;
            "chat stream relay"
        });
        let documents = self.state.documents.clone();
        self.tasks.spawn(async move {
            crate::documents::sweep_loop(documents).await;
            "document sweep"
        });
        let documents = self.state.documents.clone();
        self.tasks.spawn(async move {
            crate::documents::drain(documents, Duration::from_secs(3)).await;
            "running document analyses"
        });
        let scans = self.state.scans.clone();
        self.tasks.spawn(async move {
            crate::scans::sweep_loop(scans).await;
            "scan lease sweeper"
        });
        let scans = self.state.scans.clone();
        self.tasks.spawn(async move {
            crate::scans::schedule_loop(scans).await;
            "scan schedule"
        });
        let scans = self.state.scans.clone();
        self.tasks.spawn(async move {
            crate::scans::drain(scans, Duration::from_secs(3)).await;
            "running scans"
        });
        let key_limiter = self.state.auth.key_limiter.clone();
        let ip_limiter = self.state.ip_limit.limiter.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return "rate limiter pruning",
                    _ = tick.tick() => {
                        key_limiter.prune();
                        ip_limiter.prune();
                    }
                }
            }
        });
    }

    pub fn router(&self) -> Router {
        http::app(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then: readiness turns 503 at once; new connections are
    /// still accepted for `SHUTDOWN_DRAIN_SECONDS` (so the load balancer sees the target leave
    /// before it is gone); then listening stops, streams and background tasks are told to stop,
    /// and in-flight requests get the rest of `SHUTDOWN_GRACE_SECONDS`.
    pub async fn run(
        mut self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let config = state.config.clone();
        let addr = listener.local_addr()?;
        if let Some(metrics_listener) = metrics_listener {
            let metrics_addr = metrics_listener.local_addr()?;
            let app = metrics_router(state.clone());
            let stop = state.lifecycle.stop.clone();
            self.tasks.spawn(async move {
                let served = axum::serve(metrics_listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "metrics listener failed");
                }
                "metrics listener"
            });
            tracing::info!(%metrics_addr, "metrics listening");
        }

        let (stop_accepting_tx, stop_accepting_rx) = tokio::sync::oneshot::channel::<()>();
        let lifecycle = state.lifecycle.clone();
        let drain = config.shutdown_drain;
        let shutdown_started = Arc::new(std::sync::OnceLock::<Instant>::new());
        let started_marker = shutdown_started.clone();
        let stop = state.lifecycle.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = shutdown => {}
                // The server ended on its own (an error): nothing left to drain.
                () = stop.cancelled() => return "shutdown watcher",
            }
            let _ = started_marker.set(Instant::now());
            lifecycle.begin_shutdown();
            tracing::info!(
                drain_secs = drain.as_secs(),
                "shutdown requested; readiness is now 503"
            );
            tokio::time::sleep(drain).await;
            lifecycle.stop.cancel();
            let _ = stop_accepting_tx.send(());
            "shutdown watcher"
        });

        tracing::info!(%addr, "listening");
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        // Without TCP_NODELAY a response written in two segments waits for the client's delayed
        // ACK (~40 ms): measured as the p99 of every response larger than a few kilobytes.
        let listener = axum::serve::ListenerExt::tap_io(http::ProblemListener(listener), |io| {
            if let Err(err) = io.get_ref().set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_accepting_rx.await;
            })
            .into_future();
        tokio::pin!(serve);

        // The grace period is counted from the shutdown signal, so wait for the server in two
        // phases: unbounded until the signal, then bounded by what is left of the grace period.
        let outcome = tokio::select! {
            result = &mut serve => Some(result),
            () = state.lifecycle.stop.cancelled() => None,
        };
        let result = match outcome {
            Some(result) => result,
            None => {
                let since = shutdown_started.get().copied().unwrap_or_else(Instant::now);
                let left = config.shutdown_grace.saturating_sub(since.elapsed());
                match tokio::time::timeout(left, &mut serve).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("grace period over; closing the remaining connections");
                        Ok(())
                    }
                }
            }
        };
        state.lifecycle.begin_shutdown();
        state.lifecycle.stop.cancel();
        self.join_background(Duration::from_secs(5)).await;
        state.db.close().await;
        tracing::info!("shutdown complete");
        result.context("HTTP server failed")
    }

    async fn join_background(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok(name))) => tracing::debug!(task = name, "background task stopped"),
                Ok(Some(Err(err))) => tracing::error!(error = %err, "background task panicked"),
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(
                        left = self.tasks.len(),
                        "background tasks did not stop in time; aborting them"
                    );
                    self.tasks.abort_all();
                    return;
                }
            }
        }
    }
}

/// Every metric the README lists is on `/metrics` from the first scrape, at its start-up value
/// (0 for what has not happened yet), not from its first event on: a dashboard or an alert then
/// sees a series, not "no data". The per-request HTTP metrics start with the first request
/// (their labels are the request's), the pool gauges and `redis_up` are read at each scrape.
async fn export_initial_metrics(state: &AppState) {
    state.marketplace.export_initial_metrics().await;
    crate::notifications::export_initial_metrics();
    crate::scans::export_initial_metrics();
    crate::documents::export_initial_metrics();
    crate::chat::export_initial_metrics(&state.chat);
    for by in ["key", "ip"] {
        metrics::counter!("http_rate_limited_total", "by" => by).increment(0);
    }
}

fn metrics_router(state: AppState) -> Router {
    let handle = telemetry::metrics_handle();
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let state = state.clone();
            async move {
                let pool = &state.db;
                let idle = pool.num_idle() as f64;
                metrics::gauge!("db_pool_connections", "state" => "idle").set(idle);
                metrics::gauge!("db_pool_connections", "state" => "active")
                    .set(pool.size() as f64 - idle);
                metrics::gauge!("db_pool_max_connections")
                    .set(f64::from(state.config.database.max_connections));
                let redis_up = state.redis.as_ref().map(|r| r.is_healthy());
                if let Some(up) = redis_up {
                    metrics::gauge!("redis_up").set(if up { 1.0 } else { 0.0 });
                }
                handle.render()
            }
        }),
    )
}

/// Resolves on SIGTERM (ECS stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
