//! PostgreSQL: the pool, start-up retries, the version floor and embedded migrations.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::DatabaseConfig;

/// The oldest PostgreSQL we support: features used by migrations (e.g. `pg_notify` triggers,
/// multirange-free SQL) are tested on 14+.
pub const MIN_SERVER_VERSION_NUM: i32 = 140000;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects, retrying with capped exponential backoff until the configured deadline: under
/// compose or ECS the database may still be starting when we are.
///
/// Each attempt opens one plain connection first: the pool retries a refused connection on its
/// own and then reports only "pool timed out", while this keeps the root cause ("connection
/// refused", "password authentication failed", …) for the error and the log.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let started = Instant::now();
    let attempts = AtomicU32::new(0);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let probed = (|| async {
        attempts.fetch_add(1, Ordering::Relaxed);
        probe(config).await
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(is_transient)
    // Wall-clock bound: an attempt itself may take up to CONNECT_TIMEOUT.
    .adjust(|_, delay| delay.filter(|d| started.elapsed() + *d <= config.connect_deadline))
    .notify(|err, delay| {
        tracing::warn!(
            attempt = attempts.load(Ordering::Relaxed),
            retry_in_ms = delay.as_millis() as u64,
            error = %err,
            // Not `target`: the JSON log format has a `target` key of its own (the module).
            database = %config.display,
            "database not reachable yet; retrying"
        );
    })
    .await;
    if let Err(err) = probed {
        return Err(anyhow::Error::new(err).context(format!(
            "cannot connect to PostgreSQL at {} after {} attempt(s) in {:.1}s",
            config.display,
            attempts.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        )));
    }
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_with(config.options.clone())
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", config.display))?;
    check_server_version(&pool).await?;
    Ok(pool)
}

/// One connection, opened and closed, bounded in time like a pool acquire.
async fn probe(config: &DatabaseConfig) -> Result<(), sqlx::Error> {
    let connect = PgConnection::connect_with(&config.options);
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        })??;
    connection.close().await
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Authentication and "database does not exist" errors will not fix themselves by waiting…
/// except that a starting PostgreSQL container reports "the database system is starting up".
fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
        _ => false,
    }
}

async fn check_server_version(pool: &PgPool) -> anyhow::Result<()> {
    let version = sqlx::query_scalar!(r#"SELECT current_setting('server_version_num') AS "v!""#)
        .fetch_one(pool)
        .await
        .context("cannot read the PostgreSQL server version")?;
    let num: i32 = version.trim().parse().unwrap_or(0);
    if num < MIN_SERVER_VERSION_NUM {
        bail!("PostgreSQL {version} is too old: Cloud Optimizer needs PostgreSQL 14 or newer");
    }
    Ok(())
}

/// Applies pending migrations. sqlx holds a PostgreSQL advisory lock while migrating, so
/// replicas starting together wait for each other and the schema is migrated once.
///
/// Migrations that this binary does not know (applied by a newer release) are ignored: rolling back
/// to the previous image, which ECS's circuit breaker does on its own, must start against the
/// schema the newer one left. Migrations are additive for that reason (see docs/ARCHITECTURE.md).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .context("database migration failed")?;
    Ok(())
}

/// True when every embedded migration has been applied (readiness).
pub async fn migrations_applied(pool: &PgPool) -> anyhow::Result<bool> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    // An unmigrated database has no `_sqlx_migrations` yet: the query fails, and that is "not
    // applied", not an error.
    let applied = sqlx::query_scalar!("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap_or(None);
    Ok(applied.unwrap_or(0) >= latest)
}

/// Something that follows a PostgreSQL `NOTIFY` channel: told when the listener connects or is
/// lost (so it can stop trusting a cache), and given every notification.
pub trait Follower: Send + Sync {
    fn connected(&self, up: bool) -> impl std::future::Future<Output = ()> + Send;
    fn notified(&self, payload: &str) -> impl std::future::Future<Output = ()> + Send;
}

/// Follows `channel` until `stop`, reconnecting with capped backoff. Used by every replica-local
/// cache that must drop what another replica changed.
pub async fn follow(
    pool: &PgPool,
    channel: &'static str,
    follower: &impl Follower,
    stop: tokio_util::sync::CancellationToken,
) {
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(mut listener) => {
                delays = backoff();
                follower.connected(true).await;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        note = listener.recv() => match note {
                            Ok(note) => follower.notified(note.payload()).await,
                            Err(err) => {
                                tracing::warn!(error = %err, channel, "notification listener lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, channel, "cannot listen for notifications; retrying")
            }
        }
        follower.connected(false).await;
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
