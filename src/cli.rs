//! The command line: `serve` (default), `migrate`, `healthcheck`, `config check`, `keys …`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::auth::keys::{self, KeyName, Scope};
use crate::config::{Config, Env};
use crate::server::{self, Server};
use crate::{db, telemetry};

#[derive(Parser)]
#[command(
    name = "cloud-optimizer",
    about = "Security advisor for AWS",
    disable_version_flag = true
)]
struct Cli {
    /// Print the version (v{app}-ib{knowledge base}) and exit.
    #[arg(short = 'V', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit (for a one-off ECS task).
    Migrate,
    /// Exit 0 when the local server answers /health/ready with 200 (the image's HEALTHCHECK).
    Healthcheck {
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Usage ledger and AWS Marketplace metering.
    Usage {
        #[command(subcommand)]
        command: UsageCommand,
    },
    /// Knowledge base: verify, load, stats, manifest.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Report usage to AWS now: closed hours, and every pending report whatever its claim age
    /// (clears stops caused by permanent errors). Exits 1 when anything is left unconfirmed.
    Flush {
        /// Also report the current, unfinished hour (AWS then takes no more records for it).
        #[arg(long)]
        include_current_hour: bool,
    },
    /// Print the ledger by hour and dimension with what was reported.
    Report {
        /// How many hours back.
        #[arg(long, default_value_t = 48)]
        hours: i64,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Validate a KB directory without a database (schema, checksums, ids, references, counts).
    Verify {
        /// Defaults to KB_PATH.
        path: Option<std::path::PathBuf>,
    },
    /// Load a KB (directory, https:// or s3:// .tar.gz bundle) into the database; no-op when unchanged.
    Load {
        /// Defaults to KB_PATH.
        path: Option<String>,
    },
    /// Counts per framework and relationship type of the loaded KB.
    Stats,
    /// Rewrite manifest.json from the files (checksums, sizes, counts) after editing data.
    Manifest {
        path: Option<std::path::PathBuf>,
        /// Set a new kb_version.
        #[arg(long)]
        kb_version: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the environment and print the effective configuration, secrets redacted.
    Check,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "user"])]
        scope: String,
    },
    /// List keys.
    List,
    /// Revoke a key by id.
    Revoke { id: uuid::Uuid },
}

pub fn main() -> ExitCode {
    crate::ensure_crypto_provider();
    let cli = Cli::parse();
    if cli.version {
        println!("cloud-optimizer {}", crate::version());
        return ExitCode::SUCCESS;
    }
    let env = Env::from_process();
    let config = match Config::from_env(&env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    // Commands that need no configuration or database.
    match &command {
        Command::Kb {
            command: KbCommand::Verify { path },
        } => {
            let path = path.clone().unwrap_or_else(|| config.kb_path.clone());
            return kb_verify(&path);
        }
        Command::Kb {
            command: KbCommand::Manifest { path, kb_version },
        } => {
            let path = path.clone().unwrap_or_else(|| config.kb_path.clone());
            return match crate::kb::model::write_manifest(&path, kb_version.as_deref()) {
                Ok(m) => {
                    println!(
                        "wrote {} ({} files, kb_version {})",
                        path.join("manifest.json").display(),
                        m.files.len(),
                        m.kb_version
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Healthcheck { timeout } => healthcheck(&config, timeout).await,
            Command::Config {
                command: ConfigCommand::Check,
            } => {
                println!("{}", serde_json::to_string_pretty(&config.redacted())?);
                Ok(())
            }
            Command::Keys { command } => keys_command(config, command).await,
            Command::Kb { command } => kb_command(config, command).await,
            Command::Usage { command } => usage_command(config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "exiting");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&config)?;
    let addr = std::net::SocketAddr::new(config.bind_address, config.port);
    let metrics_addr = config
        .metrics_port
        .map(|p| std::net::SocketAddr::new(config.bind_address, p));
    // Bind first: a port in use is reported before any database work.
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (PORT): {e}"))?;
    let metrics_listener = match metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (METRICS_PORT): {e}"))?,
        ),
        None => None,
    };
    let server = Server::start(config).await?;
    server
        .run(listener, metrics_listener, server::shutdown_signal())
        .await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&config)?;
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn healthcheck(config: &Config, timeout: u64) -> anyhow::Result<()> {
    let host = if config.bind_address.is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind_address
    };
    let url = format!(
        "http://{}/health/ready",
        std::net::SocketAddr::new(host, config.port)
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout.max(1)))
        .build()?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        anyhow::bail!("{url} answered {}", response.status())
    }
}

async fn keys_command(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    match command {
        KeysCommand::Create { name, scope } => {
            let name = KeyName::parse(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let scope: Scope = scope
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--scope: {e}"))?;
            let created = keys::create(&pool, &name, scope).await?;
            eprintln!(
                "Created {} key {:?} (id {}). It is shown once; store it now:",
                created.info.scope.as_str(),
                created.info.name,
                created.info.id
            );
            println!("{}", created.key);
        }
        KeysCommand::List => {
            let list = keys::list(&pool).await?;
            println!(
                "{:<36}  {:<6}  {:<10}  {:<20}  {:<20}  NAME",
                "ID", "SCOPE", "PREFIX", "LAST USED", "REVOKED"
            );
            for key in list {
                let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "{:<36}  {:<6}  {:<10}  {:<20}  {:<20}  {}",
                    key.id,
                    key.scope.as_str(),
                    key.prefix,
                    fmt(key.last_used_at),
                    fmt(key.revoked_at),
                    key.name
                );
            }
        }
        KeysCommand::Revoke { id } => match keys::revoke(&pool, id).await? {
            Some(_) => eprintln!("Revoked key {id}."),
            None => anyhow::bail!("no API key with id {id}"),
        },
    }
    Ok(())
}

fn kb_verify(path: &std::path::Path) -> ExitCode {
    match crate::kb::model::read_and_verify(path) {
        Ok(kb) => {
            println!(
                "{}: kb_version {} OK — {} frameworks, {} controls, {} checks, {} remediations, {} services, {} relationships",
                path.display(),
                kb.kb_version,
                kb.frameworks.len(),
                kb.controls.len(),
                kb.checks.len(),
                kb.remediations.len(),
                kb.services.len(),
                kb.relationships.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            for issue in &err.issues {
                eprintln!("{issue}");
            }
            eprintln!("{}: {} problem(s)", path.display(), err.issues.len());
            ExitCode::FAILURE
        }
    }
}

async fn kb_command(config: Config, command: KbCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    match command {
        KbCommand::Load { path } => {
            let raw = path.unwrap_or_else(|| config.kb_path.display().to_string());
            let source = crate::kb::source::Source::parse(&raw)?;
            let materialized = crate::kb::source::materialize(&source).await?;
            match crate::kb::load::load_dir(&pool, &materialized.dir, &source.describe()).await? {
                crate::kb::load::Outcome::Unchanged { kb_version } => {
                    println!("unchanged: kb_version {kb_version} is already active")
                }
                crate::kb::load::Outcome::Loaded {
                    kb_version,
                    entities,
                    relationships,
                    elapsed,
                } => println!(
                    "loaded kb_version {kb_version}: {entities} entities, {relationships} relationships in {} ms",
                    elapsed.as_millis()
                ),
            }
        }
        KbCommand::Stats => {
            let version: Option<(String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                "SELECT kb_version, source, loaded_at FROM kb_versions WHERE active",
            )
            .fetch_optional(&pool)
            .await?;
            let Some((kb_version, source, loaded_at)) = version else {
                anyhow::bail!("no knowledge base is loaded; run `cloud-optimizer kb load`");
            };
            println!("kb_version {kb_version} from {source}, loaded {loaded_at}");
            let rows: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT framework, kind, count(*) FROM kb_controls WHERE version_id = (SELECT id FROM kb_versions WHERE active)
                 GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .fetch_all(&pool)
            .await?;
            println!("\n{:<28} {:<30} {:>6}", "FRAMEWORK", "KIND", "COUNT");
            for (framework, kind, n) in rows {
                println!("{framework:<28} {kind:<30} {n:>6}");
            }
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT 'checks', count(*) FROM kb_checks WHERE version_id = (SELECT id FROM kb_versions WHERE active)
                 UNION ALL SELECT 'remediations', count(*) FROM kb_remediations WHERE version_id = (SELECT id FROM kb_versions WHERE active)
                 UNION ALL SELECT 'aws services', count(*) FROM kb_services WHERE version_id = (SELECT id FROM kb_versions WHERE active)",
            )
            .fetch_all(&pool)
            .await?;
            println!();
            for (what, n) in rows {
                println!("{what:<59} {n:>6}");
            }
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT type, count(*) FROM kb_relationships WHERE version_id = (SELECT id FROM kb_versions WHERE active)
                 GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(&pool)
            .await?;
            println!("\n{:<59} {:>6}", "RELATIONSHIP", "COUNT");
            for (kind, n) in rows {
                println!("{kind:<59} {n:>6}");
            }
        }
        KbCommand::Verify { .. } | KbCommand::Manifest { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
    Ok(())
}

/// One line of `usage report`: what was recorded in an hour and which reports it went into.
struct LedgerRow {
    hour: chrono::DateTime<chrono::Utc>,
    dimension: String,
    events: i64,
    refunded: i64,
    reported: i64,
    reports: Option<String>,
}

async fn usage_command(config: Config, command: UsageCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    match command {
        UsageCommand::Flush {
            include_current_hour,
        } => {
            if !config.marketplace.enabled {
                anyhow::bail!(
                    "MARKETPLACE_ENABLED is false: usage is recorded locally and never sent to AWS"
                );
            }
            let unblocked = crate::marketplace::reporter::unblock_all(&pool).await?;
            if unblocked > 0 {
                eprintln!("cleared {unblocked} reporting stop(s) caused by permanent errors");
            }
            let market = crate::marketplace::Marketplace::new(
                config.marketplace.clone(),
                pool.clone(),
                std::sync::Arc::new(crate::runtime::Components::new(false, true)),
            )
            .await?;
            let scope = if include_current_hour {
                crate::marketplace::reporter::Scope::IncludingCurrentHour
            } else {
                crate::marketplace::reporter::Scope::ClosedHours
            };
            // An operator's flush resends every pending report now (see `Marketplace::report`);
            // the CLI never registers as a serving replica.
            let summary = market.report(scope, true).await?;
            println!(
                "sent {}, retrying later {}, failed {}, folded into a later hour {}, unconfirmed {}, skipped {}",
                summary.sent,
                summary.retried_later,
                summary.failed,
                summary.folded,
                summary.unconfirmed,
                summary.skipped
            );
            if summary.left_unsent() > 0 {
                anyhow::bail!(
                    "{} usage report(s) were not confirmed by AWS (skipped: held by a live replica or being sent; \
                     unconfirmed: AWS may already bill them, never resent); see `cloud-optimizer usage report` \
                     and GET /api/v1/usage",
                    summary.left_unsent()
                );
            }
        }
        UsageCommand::Report { hours } => {
            let now = crate::marketplace::Clock::from_process_env()?.now();
            let since = now - chrono::Duration::hours(hours);
            let rows = sqlx::query_as!(
                LedgerRow,
                r#"SELECT date_trunc('hour', e.occurred_at) AS "hour!", e.dimension,
                        count(*) FILTER (WHERE e.refunded_at IS NULL) AS "events!",
                        count(*) FILTER (WHERE e.refunded_at IS NOT NULL) AS "refunded!",
                        count(*) FILTER (WHERE r.status = 'sent' AND e.refunded_at IS NULL) AS "reported!",
                        string_agg(DISTINCT r.status || ' ' || to_char(r.hour, 'MM-DD HH24:00'), ', ') AS reports
                 FROM usage_events e LEFT JOIN usage_reports r ON r.id = e.report_id
                 WHERE e.occurred_at > $1
                 GROUP BY 1, 2 ORDER BY 1, 2"#,
                since
            )
            .fetch_all(&pool)
            .await?;
            println!(
                "{:<17} {:<17} {:>7} {:>9} {:>9}  REPORTED IN",
                "HOUR (UTC)", "DIMENSION", "EVENTS", "REFUNDED", "REPORTED"
            );
            for row in rows {
                println!(
                    "{:<17} {:<17} {:>7} {:>9} {:>9}  {}",
                    row.hour.format("%Y-%m-%d %H:00"),
                    row.dimension,
                    row.events,
                    row.refunded,
                    row.reported,
                    row.reports.unwrap_or_else(|| "-".into())
                );
            }
        }
    }
    Ok(())
}
