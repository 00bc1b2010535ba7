//! The command line: `serve` (default), `migrate`, `healthcheck`, `config check`, `keys …`,
//! `kb …`, `usage …`.
//!
//! Exit codes: 0 success; 1 a valid command that failed (database unreachable, key not found,
//! invalid KB data, …); 2 the command line or the configuration is wrong (clap's own usage
//! errors exit 2 too). A failure is printed once, on stderr, with its whole cause chain.

/// `println!` for command output: a reader that goes away (`cloud-optimizer kb stats | head -2`)
/// ends the command quietly with success, as Unix tools do, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout(), $($arg)*) {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("cannot write to stdout: {err}");
        }
    }};
}

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::auth::keys::{self, KeyName, Scope};
use crate::config::{Config, ConfigError, Env};
use crate::server::{self, Server};
use crate::{db, telemetry};

const CONFIG_HELP: &str = "Configuration comes from environment variables only. Every variable, \
its default and what it does: the README's \"Configuration\" section and .env.example. \
`cloud-optimizer config check` validates the environment and prints the effective configuration \
(secrets redacted).";

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the command failed (database unreachable, \
key not found, invalid KB data, …); 2 wrong usage or invalid configuration.";

/// Prints a command's JSON result: indented for a person at a terminal, one compact line when
/// stdout is a pipe or a file (`| jq`, `> keys.json`), always through serde_json.
fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    out!("{text}");
    Ok(())
}

/// Longest window `usage report --hours` accepts: ten years.
const MAX_REPORT_HOURS: i64 = 24 * 366 * 10;

#[derive(Parser)]
#[command(
    name = "cloud-optimizer",
    about = "Security advisor for AWS",
    disable_version_flag = true,
    after_help = EXIT_CODES
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
    #[command(after_help = CONFIG_HELP)]
    Serve,
    /// Apply database migrations and exit (for a one-off ECS task).
    Migrate,
    /// Exit 0 when the local server answers /health/ready with 200 (the image's HEALTHCHECK).
    Healthcheck {
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=300))]
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
        /// How many hours back (1 to 87840, ten years).
        #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(i64).range(1..=MAX_REPORT_HOURS))]
        hours: i64,
        /// Print JSON (an array of rows) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Validate a KB directory without a database (schema, checksums, ids, references, counts).
    /// Reads no variable but KB_PATH.
    Verify {
        /// The KB directory (holding manifest.json); defaults to KB_PATH.
        path: Option<std::path::PathBuf>,
    },
    /// Load a KB (directory, https:// or s3:// .tar.gz bundle) into the database; no-op when unchanged.
    Load {
        /// A KB directory, or an https:// or s3:// URL of a .tar.gz bundle; defaults to KB_PATH.
        path: Option<String>,
    },
    /// Counts per framework and relationship type of the loaded KB.
    Stats {
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite manifest.json from the files (checksums, sizes, counts) after editing data; only
    /// when the data then passes `kb verify` (otherwise its problems, and nothing written).
    /// Reads no variable but KB_PATH.
    Manifest {
        /// The KB directory to rewrite the manifest of; defaults to KB_PATH.
        path: Option<std::path::PathBuf>,
        /// Set a new kb_version.
        #[arg(long)]
        kb_version: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the environment and print the effective configuration, secrets redacted.
    #[command(after_help = CONFIG_HELP)]
    Check,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once on stdout (only its hash is stored).
    Create {
        /// A label, 1-100 characters, unique among active keys.
        #[arg(long, value_parser = parse_key_name)]
        name: KeyName,
        /// `admin` may manage keys; `user` may use the API.
        #[arg(long, value_parser = ["admin", "user"])]
        scope: String,
    },
    /// List keys, revoked ones included.
    List {
        /// Print JSON (an array of keys) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; effective at once on every replica.
    Revoke {
        /// The key's id, or the prefix `keys list` shows (co_…).
        #[arg(value_parser = parse_key_ref)]
        key: KeyRef,
    },
}

fn parse_key_name(raw: &str) -> Result<KeyName, String> {
    KeyName::parse(raw)
}

/// How `keys revoke` names a key.
#[derive(Clone, Debug)]
enum KeyRef {
    Id(uuid::Uuid),
    Prefix(String),
}

fn parse_key_ref(raw: &str) -> Result<KeyRef, String> {
    if let Ok(id) = raw.parse() {
        return Ok(KeyRef::Id(id));
    }
    if raw.starts_with(keys::KEY_PREFIX) && raw.len() > keys::KEY_PREFIX.len() {
        return Ok(KeyRef::Prefix(raw.to_string()));
    }
    Err("expected a key id (a UUID) or the prefix `keys list` shows (co_…)".into())
}

/// A mistake in how a command was called that only shows once it runs: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

pub fn main() -> ExitCode {
    crate::ensure_crypto_provider();
    // Usage errors and --help are clap's: exit 2 and 0.
    let cli = Cli::parse();
    if cli.version {
        out!("cloud-optimizer {}", crate::version());
        return ExitCode::SUCCESS;
    }
    let env = Env::from_process();
    let command = cli.command.unwrap_or(Command::Serve);
    // KB files only: no database, and no variable but KB_PATH (a bad PORT must not stop them).
    match &command {
        Command::Kb {
            command: KbCommand::Verify { path },
        } => {
            let path = path
                .clone()
                .unwrap_or_else(|| crate::config::kb_path(&env).into());
            return kb_verify(&path);
        }
        Command::Kb {
            command: KbCommand::Manifest { path, kb_version },
        } => {
            let path = path
                .clone()
                .unwrap_or_else(|| crate::config::kb_path(&env).into());
            return kb_manifest(&path, kb_version.as_deref());
        }
        _ => {}
    }
    let config = match Config::from_env(&env) {
        Ok(config) => config,
        Err(err) => return finish(Err(err.into())),
    };
    if matches!(
        command,
        Command::Serve
            | Command::Config {
                command: ConfigCommand::Check
            }
    ) && let Err(err) = config.check_kb_path_exists()
    {
        return finish(Err(err.into()));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            return finish(Err(
                anyhow::Error::new(err).context("cannot start the async runtime")
            ));
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Healthcheck { timeout } => healthcheck(&config, timeout).await,
            Command::Config {
                command: ConfigCommand::Check,
            } => print_json(&config.redacted()),
            Command::Keys { command } => keys_command(config, command).await,
            Command::Kb { command } => kb_command(config, command).await,
            Command::Usage { command } => usage_command(config, command).await,
        }
    });
    finish(result)
}

/// Prints a failure once (stderr, `error: ` and the whole cause chain) and picks the exit code.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    let usage = err
        .chain()
        .any(|cause| cause.is::<UsageError>() || cause.is::<ConfigError>());
    // One format for every failure, as clap prints its own usage errors.
    eprintln!("error: {}", error_chain(&err));
    ExitCode::from(if usage { 2 } else { 1 })
}

/// The cause chain joined by ": ", skipping a cause whose text its context already quotes
/// (`cannot parse x: bad at line 3` followed by `bad at line 3`).
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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
        .timeout(Duration::from_secs(timeout))
        .build()?;
    // The error's sources carry the root cause ("Connection refused", "operation timed out").
    let response = client
        .get(&url)
        .send()
        .await
        .context("the server did not answer")?;
    if response.status().is_success() {
        Ok(())
    } else {
        anyhow::bail!("{url} answered {}", response.status())
    }
}

/// For commands that only read: no migrations (they are `migrate`'s and `serve`'s job, and a
/// reader must not change the schema under running replicas), but a clear word when there is
/// no schema yet.
async fn connect_read_only(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let pool = db::connect(&config.database).await?;
    let migrated =
        sqlx::query_scalar!(r#"SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS "migrated!""#)
            .fetch_one(&pool)
            .await?;
    if !migrated {
        anyhow::bail!(
            "the database at {} has no schema yet: run `cloud-optimizer migrate` (or start the server) first",
            config.database.display
        );
    }
    Ok(pool)
}

/// For commands that write: the schema they write into must be there.
async fn connect_and_migrate(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    Ok(pool)
}

fn format_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

async fn keys_command(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { name, scope } => {
            let pool = connect_and_migrate(&config).await?;
            let scope: Scope = scope.parse().map_err(UsageError)?;
            let created = keys::create(&pool, &name, scope).await?;
            eprintln!(
                "Created {} key {:?} (id {}). It is shown once; store it now:",
                created.info.scope.as_str(),
                created.info.name,
                created.info.id
            );
            out!("{}", created.key);
        }
        KeysCommand::List { json } => {
            let pool = connect_read_only(&config).await?;
            let list = keys::list(&pool).await?;
            if json {
                return print_json(&list);
            }
            out!(
                "{:<36}  {:<10}  {:<6}  {:<19}  {:<19}  NAME",
                "ID",
                "PREFIX",
                "SCOPE",
                "LAST USED",
                "REVOKED"
            );
            for key in list {
                out!(
                    "{:<36}  {:<10}  {:<6}  {:<19}  {:<19}  {}",
                    key.id,
                    key.prefix,
                    key.scope.as_str(),
                    format_time(key.last_used_at),
                    format_time(key.revoked_at),
                    key.name
                );
            }
        }
        KeysCommand::Revoke { key } => {
            let pool = connect_and_migrate(&config).await?;
            let id = match &key {
                KeyRef::Id(id) => *id,
                KeyRef::Prefix(prefix) => {
                    let ids = keys::ids_with_prefix(&pool, prefix).await?;
                    match ids.as_slice() {
                        [] => anyhow::bail!("no API key with prefix {prefix}"),
                        [id] => *id,
                        many => anyhow::bail!(
                            "{} keys share the prefix {prefix}; revoke one by id: {}",
                            many.len(),
                            many.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
            };
            match keys::revoke(&pool, id).await? {
                keys::Revocation::Revoked(info) => {
                    eprintln!(
                        "Revoked key {} ({:?}, {}).",
                        info.id, info.name, info.prefix
                    )
                }
                keys::Revocation::AlreadyRevoked(info) => eprintln!(
                    "Key {} ({:?}, {}) was already revoked at {}.",
                    info.id,
                    info.name,
                    info.prefix,
                    format_time(info.revoked_at)
                ),
                keys::Revocation::NotFound => anyhow::bail!("no API key with id {id}"),
            }
        }
    }
    Ok(())
}

fn kb_verify(path: &std::path::Path) -> ExitCode {
    match crate::kb::model::read_and_verify(path) {
        Ok(kb) => {
            out!(
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
        Err(err) => kb_invalid(path, &err, ""),
    }
}

/// `kb verify` and `kb manifest` report invalid data alike: one line per problem, then the
/// failure in the format of every other one.
fn kb_invalid(
    path: &std::path::Path,
    err: &crate::kb::model::VerifyError,
    consequence: &str,
) -> ExitCode {
    for issue in &err.issues {
        eprintln!("{issue}");
    }
    eprintln!(
        "error: {}: {} problem(s){consequence}",
        path.display(),
        err.issues.len()
    );
    ExitCode::FAILURE
}

fn kb_manifest(path: &std::path::Path, kb_version: Option<&str>) -> ExitCode {
    use crate::kb::model::ManifestError;
    match crate::kb::model::write_verified_manifest(path, kb_version) {
        Ok(manifest) => {
            out!(
                "wrote {} ({} files, kb_version {})",
                path.join("manifest.json").display(),
                manifest.files.len(),
                manifest.kb_version
            );
            ExitCode::SUCCESS
        }
        Err(ManifestError::Invalid(err)) => kb_invalid(
            path,
            &err,
            "; manifest.json left unchanged (fix these, then run `kb manifest` again)",
        ),
        Err(err) => finish(Err(err.into())),
    }
}

/// What `kb stats --json` prints.
#[derive(Serialize)]
struct KbStats {
    kb_version: String,
    source: String,
    #[serde(with = "crate::web::timestamp")]
    loaded_at: chrono::DateTime<chrono::Utc>,
    /// Controls per framework and kind.
    controls: Vec<ControlCount>,
    checks: i64,
    remediations: i64,
    services: i64,
    /// Relationships per type.
    relationships: std::collections::BTreeMap<String, i64>,
}

#[derive(Serialize)]
struct ControlCount {
    framework: String,
    kind: String,
    count: i64,
}

async fn kb_stats(pool: &sqlx::PgPool) -> anyhow::Result<KbStats> {
    let version =
        sqlx::query!("SELECT id, kb_version, source, loaded_at FROM kb_versions WHERE active")
            .fetch_optional(pool)
            .await?;
    let Some(version) = version else {
        anyhow::bail!("no knowledge base is loaded; run `cloud-optimizer kb load`");
    };
    let controls = sqlx::query_as!(
        ControlCount,
        r#"SELECT framework, kind, count(*) AS "count!" FROM kb_controls WHERE version_id = $1
           GROUP BY 1, 2 ORDER BY 1, 2"#,
        version.id
    )
    .fetch_all(pool)
    .await?;
    let totals = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM kb_checks WHERE version_id = $1) AS "checks!",
                  (SELECT count(*) FROM kb_remediations WHERE version_id = $1) AS "remediations!",
                  (SELECT count(*) FROM kb_services WHERE version_id = $1) AS "services!""#,
        version.id
    )
    .fetch_one(pool)
    .await?;
    let relationships = sqlx::query!(
        r#"SELECT type AS "kind!", count(*) AS "count!" FROM kb_relationships WHERE version_id = $1
           GROUP BY 1 ORDER BY 1"#,
        version.id
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.kind, row.count))
    .collect();
    Ok(KbStats {
        kb_version: version.kb_version,
        source: version.source,
        loaded_at: version.loaded_at,
        controls,
        checks: totals.checks,
        remediations: totals.remediations,
        services: totals.services,
        relationships,
    })
}

async fn kb_command(config: Config, command: KbCommand) -> anyhow::Result<()> {
    match command {
        KbCommand::Load { path } => {
            let pool = connect_and_migrate(&config).await?;
            let raw = path.unwrap_or_else(|| config.kb_path.display().to_string());
            let source =
                crate::kb::source::Source::parse(&raw).map_err(|e| UsageError(format!("{e:#}")))?;
            let materialized = crate::kb::source::materialize(&source).await?;
            match crate::kb::load::load_dir(&pool, &materialized.dir, &source.describe()).await? {
                crate::kb::load::Outcome::Unchanged { kb_version } => {
                    out!("unchanged: kb_version {kb_version} is already active")
                }
                crate::kb::load::Outcome::Loaded {
                    kb_version,
                    entities,
                    relationships,
                    elapsed,
                } => out!(
                    "loaded kb_version {kb_version}: {entities} entities, {relationships} relationships in {} ms",
                    elapsed.as_millis()
                ),
            }
        }
        KbCommand::Stats { json } => {
            let pool = connect_read_only(&config).await?;
            let stats = kb_stats(&pool).await?;
            if json {
                return print_json(&stats);
            }
            out!(
                "kb_version {} from {}, loaded {} UTC",
                stats.kb_version,
                stats.source,
                format_time(Some(stats.loaded_at))
            );
            out!("\n{:<28} {:<30} {:>6}", "FRAMEWORK", "KIND", "COUNT");
            for row in &stats.controls {
                out!("{:<28} {:<30} {:>6}", row.framework, row.kind, row.count);
            }
            out!("");
            for (what, n) in [
                ("checks", stats.checks),
                ("remediations", stats.remediations),
                ("aws services", stats.services),
            ] {
                out!("{what:<59} {n:>6}");
            }
            out!("\n{:<59} {:>6}", "RELATIONSHIP", "COUNT");
            for (kind, n) in &stats.relationships {
                out!("{kind:<59} {n:>6}");
            }
        }
        KbCommand::Verify { .. } | KbCommand::Manifest { .. } => {
            unreachable!("handled before the configuration is read")
        }
    }
    Ok(())
}

/// One line of `usage report`: what was recorded in an hour and which reports it went into.
#[derive(Serialize)]
struct LedgerRow {
    hour: chrono::DateTime<chrono::Utc>,
    dimension: String,
    events: i64,
    refunded: i64,
    reported: i64,
    /// The reports these events went into, as `status MM-DD HH:00`.
    reports: Option<String>,
}

async fn usage_command(config: Config, command: UsageCommand) -> anyhow::Result<()> {
    match command {
        UsageCommand::Flush {
            include_current_hour,
        } => {
            if !config.marketplace.enabled {
                return Err(UsageError(
                    "MARKETPLACE_ENABLED is false: usage is recorded locally and never sent to AWS"
                        .into(),
                )
                .into());
            }
            let pool = connect_and_migrate(&config).await?;
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
            out!(
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
        UsageCommand::Report { hours, json } => {
            let pool = connect_read_only(&config).await?;
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
            if json {
                return print_json(&rows);
            }
            out!(
                "{:<17} {:<17} {:>7} {:>9} {:>9}  REPORTED IN",
                "HOUR (UTC)",
                "DIMENSION",
                "EVENTS",
                "REFUNDED",
                "REPORTED"
            );
            for row in rows {
                out!(
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no help");
            }
            for sub in command.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                assert!(
                    sub.get_about().is_some(),
                    "{path} {} has no help",
                    sub.get_name()
                );
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let cli = Cli::command();
        cli.clone().debug_assert();
        walk(&cli, "cloud-optimizer");
    }

    #[test]
    fn an_error_chain_does_not_repeat_what_its_context_quotes() {
        let err = anyhow::anyhow!("bad token at line 948")
            .context("kb.json: bad token at line 948")
            .context("cannot load the KB");
        assert_eq!(
            error_chain(&err),
            "cannot load the KB: kb.json: bad token at line 948"
        );
    }
}
