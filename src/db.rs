//! PostgreSQL: the pool, start-up retries, the version floor and embedded migrations.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

/// The oldest PostgreSQL we support: features used by migrations (e.g. `pg_notify` triggers,
/// multirange-free SQL) are tested on 14+.
pub const MIN_SERVER_VERSION_NUM: i32 = 140000;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects, retrying with capped exponential backoff until the configured deadline: under
/// compose or ECS the database may still be starting when we are.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(300))
            .connect_with(config.options.clone())
            .await;
        match result {
            Ok(pool) => {
                check_server_version(&pool).await?;
                return Ok(pool);
            }
            Err(err) => {
                let elapsed = started.elapsed();
                if elapsed + delay > config.connect_deadline || !is_transient(&err) {
                    return Err(anyhow::Error::new(err).context(format!(
                        "cannot connect to PostgreSQL at {} after {attempt} attempt(s) in {:.1}s",
                        config.display,
                        elapsed.as_secs_f64()
                    )));
                }
                tracing::warn!(
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %err,
                    target = %config.display,
                    "database not reachable yet; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

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
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
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
    let mut delay = Duration::from_millis(200);
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(mut listener) => {
                delay = Duration::from_millis(200);
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
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
