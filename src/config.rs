//! Configuration read from the environment once at start-up.
//!
//! Every variable the binary reads goes through [`Env`], which records the names it was asked
//! for, so a test can prove that `compose.yaml` and `.env.example` set only variables we read.
//! An invalid value is a [`ConfigError`] naming the variable; `main` turns it into exit code 2.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// One invalid or missing variable: printed as a single line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// Source of variables: the process environment, or a map in tests.
pub struct Env {
    vars: HashMap<String, String>,
    read: Mutex<BTreeSet<&'static str>>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars().collect())
    }

    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self {
            vars,
            read: Mutex::new(BTreeSet::new()),
        }
    }

    /// Names looked up so far (whether set or not).
    pub fn names_read(&self) -> BTreeSet<&'static str> {
        self.read.lock().expect("env lock").clone()
    }

    /// An unset or empty variable is `None`: compose files often set `VAR=` to mean "default".
    fn get(&self, name: &'static str) -> Option<&str> {
        self.read.lock().expect("env lock").insert(name);
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    fn secret(&self, name: &'static str) -> Option<SecretString> {
        self.get(name).map(|v| SecretString::from(v.to_string()))
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| invalid(name, format!("{raw:?} is not {expected}"))),
        }
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(invalid(name, format!("{other:?} is not true or false"))),
        }
    }

    fn seconds(&self, name: &'static str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        let value: u64 = self.parse(name, default, "a whole number of seconds")?;
        if value < min {
            return Err(invalid(name, format!("must be at least {min} seconds")));
        }
        Ok(Duration::from_secs(value))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Staging,
    Production,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Where the database is: a URL, or the standard libpq variables so that ECS can inject the
/// password alone from Secrets Manager.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub options: PgConnectOptions,
    /// For display only: host, port, database and user, never the password.
    pub display: String,
    pub max_connections: u32,
    /// Whether a password was given (in `DATABASE_URL` or `PGPASSWORD`), for display.
    pub password_set: bool,
    /// How long start-up keeps retrying an unreachable database before giving up.
    pub connect_deadline: Duration,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("target", &self.display)
            .field("max_connections", &self.max_connections)
            .field("connect_deadline", &self.connect_deadline)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct Neo4jConfig {
    pub uri: String,
    pub user: String,
    pub password: SecretString,
}

#[derive(Clone, Debug)]
pub struct MarketplaceConfig {
    pub enabled: bool,
    pub product_code: Option<String>,
    pub public_key_version: i32,
    /// PEM of the RSA public key AWS gives the seller to verify RegisterUsage signatures.
    pub public_key_pem: Option<String>,
    pub trial_mode: bool,
    pub trial_days: i64,
    pub trial_limit_scans: i64,
    pub trial_limit_chat: i64,
    pub trial_limit_documents: i64,
    pub report_interval: Duration,
    pub license_check_interval: Duration,
    /// Identifies this task's records in the ledger (defaults to a random id per process).
    pub task_id: String,
    /// Whether `task_id` came from `MARKETPLACE_TASK_ID` rather than being drawn at random.
    pub task_id_configured: bool,
}

/// Which LLM answers chat questions (`LLM_PROVIDER`); without one the built-in answerer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LlmProvider {
    /// Bedrock Runtime `ConverseStream` through the AWS SDK (the task role; no key).
    #[serde(rename = "bedrock")]
    Bedrock,
    /// Any OpenAI-compatible `/chat/completions` endpoint: OpenAI, Ollama, vLLM, LiteLLM.
    #[serde(rename = "openai")]
    OpenAi,
    /// The Anthropic Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
}

impl LlmProvider {
    pub fn name(self) -> &'static str {
        match self {
            LlmProvider::Bedrock => "bedrock",
            LlmProvider::OpenAi => "openai",
            LlmProvider::Anthropic => "anthropic",
        }
    }
}

pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The optional LLM behind the chat (`LLM_*`).
#[derive(Clone, Debug)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    /// Model id as the provider spells it (a Bedrock model or inference-profile id, `gpt-4o`, …).
    pub model: String,
    /// Required by Anthropic, optional for OpenAI-compatible servers (Ollama and vLLM need
    /// none); Bedrock signs with the AWS credentials instead.
    pub api_key: Option<SecretString>,
    /// Endpoint of the OpenAI-compatible or Anthropic API, without a trailing `/`; `None` for
    /// Bedrock, whose endpoint the AWS SDK resolves (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
    pub base_url: Option<String>,
    pub max_tokens: u32,
    /// Longest wait for the first token, and for each token after it; then the built-in answer
    /// takes over.
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub environment: Environment,
    pub bind_address: IpAddr,
    pub port: u16,
    /// `None` disables the metrics listener.
    pub metrics_port: Option<u16>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub database: DatabaseConfig,
    pub migrate_on_startup: bool,
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key we write, so several deployments can share one Redis.
    pub redis_key_prefix: String,
    pub neo4j: Option<Neo4jConfig>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Longest accepted path + query; longer URLs get a problem+json 414.
    pub max_uri_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    /// Budget per API key.
    pub rate_limit_per_minute: u32,
    /// Budget per client IP: a guard against unauthenticated abuse (key guessing, floods), set
    /// well above the per-key budget so that clients sharing one address (a NAT, an ALB without
    /// `TRUSTED_PROXY_CIDRS`) are not throttled as one.
    pub rate_limit_ip_per_minute: u32,
    pub trusted_proxies: Vec<IpNet>,
    pub bootstrap_admin_api_key: Option<SecretString>,
    pub shutdown_grace: Duration,
    pub shutdown_drain: Duration,
    pub otel_endpoint: Option<String>,
    pub otel_service_name: String,
    pub kb_path: PathBuf,
    pub kb_refresh_interval: Option<Duration>,
    /// Cached KB answers per replica; 0 turns the cache off.
    pub kb_cache_entries: usize,
    pub marketplace: MarketplaceConfig,
    pub notifications: NotificationsConfig,
    pub scans: ScansConfig,
    /// `None`: the built-in answerer answers every chat question.
    pub llm: Option<LlmConfig>,
    pub chat: ChatConfig,
    pub documents: DocumentsConfig,
}

/// Architecture-document analysis (`/api/v1/documents…`).
#[derive(Clone, Debug)]
pub struct DocumentsConfig {
    /// `DOCUMENT_MAX_BYTES`: the largest file accepted (413 above it).
    pub max_bytes: usize,
    /// `DOCUMENT_RETENTION_DAYS`: uploaded files older than this are deleted (their findings
    /// stay); `None` keeps them until the document is deleted.
    pub retention: Option<Duration>,
    /// `DOCUMENTS_BUCKET`: keep files in this S3 bucket instead of PostgreSQL.
    pub bucket: Option<String>,
    /// `DOCUMENTS_KMS_KEY_ID`: SSE-KMS with this key for the bucket's objects (SSE-S3 without).
    pub kms_key_id: Option<String>,
    /// `DOCUMENT_ANALYSIS_TIMEOUT_SECONDS`: the longest one analysis may take.
    pub analysis_timeout: Duration,
    /// `DOCUMENT_ANALYSIS_CONCURRENCY`: analyses one instance runs at once (each uses one core).
    pub concurrency: usize,
}

/// The security Q&A chat (`/api/v1/chat…`).
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// `CHAT_STREAMING_ENABLED`: `false` answers JSON whatever the client accepts.
    pub streaming: bool,
    /// `CHAT_TIMEOUT_SECONDS`: the longest one answer may take; a stream then ends with an `error`.
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct ScansConfig {
    /// `SCAN_SCHEDULE`: scan the own account this often (all enabled regions); `None` is off.
    pub schedule: Option<Duration>,
    /// (service, region) units a scan runs at once.
    pub concurrency: usize,
    /// Upper bound of one AWS call, retries included.
    pub call_timeout: Duration,
    /// How long a scan's replica may stay silent before the scan counts as interrupted.
    pub lease: Duration,
}

/// Real-time notifications (`/api/v1/notifications`, the WebSocket).
#[derive(Clone, Debug)]
pub struct NotificationsConfig {
    /// How long events are kept for replay (`?since=`).
    pub retention: Duration,
    /// WebSocket connections one instance accepts; more get 503 before the upgrade.
    pub max_connections: usize,
    /// Server ping period; a peer that has not answered by the next ping is dropped.
    pub ping_interval: Duration,
    /// Events waiting for one client; a client further behind is closed (4008) and resumes by id.
    pub queue: usize,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
}

impl Config {
    /// Reads and validates the whole configuration; the first bad variable is the error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let environment = match env
            .string("ENVIRONMENT", "development")
            .to_lowercase()
            .as_str()
        {
            "development" | "dev" | "local" => Environment::Development,
            "staging" | "test" => Environment::Staging,
            "production" | "prod" => Environment::Production,
            other => {
                return Err(invalid(
                    "ENVIRONMENT",
                    format!("{other:?} is not one of development, staging, production"),
                ));
            }
        };
        let port: u16 = env.parse("PORT", 8000, "a TCP port (1-65535)")?;
        if port == 0 {
            return Err(invalid("PORT", "0 is not a usable port"));
        }
        let bind_address = env.parse(
            "BIND_ADDRESS",
            IpAddr::from([0, 0, 0, 0]),
            "an IP address such as 0.0.0.0 or 127.0.0.1",
        )?;
        let metrics_port: u16 = env.parse("METRICS_PORT", 9464, "a TCP port, or 0 to disable")?;
        if metrics_port == port {
            return Err(invalid("METRICS_PORT", "must differ from PORT"));
        }
        let log_level = env.string("LOG_LEVEL", "info");
        check_log_level(&log_level)?;
        let log_format = match env.string("LOG_FORMAT", "json").to_lowercase().as_str() {
            "json" => LogFormat::Json,
            "pretty" | "text" => LogFormat::Pretty,
            other => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("{other:?} is not json or pretty"),
                ));
            }
        };

        let database = database_config(env)?;
        let migrate_on_startup = env.bool("MIGRATE_ON_STARTUP", true)?;

        let redis_url = env.secret("REDIS_URL");
        if let Some(url) = &redis_url {
            let parsed = url::Url::parse(url.expose_secret())
                .map_err(|e| invalid("REDIS_URL", format!("not a URL ({e})")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(invalid("REDIS_URL", "scheme must be redis:// or rediss://"));
            }
        }

        let redis_key_prefix = env.string("REDIS_KEY_PREFIX", "co:");

        let neo4j = match env.get("NEO4J_URI") {
            None => None,
            Some(uri) => Some(Neo4jConfig {
                uri: uri.to_string(),
                user: env.string("NEO4J_USER", "neo4j"),
                password: env
                    .secret("NEO4J_PASSWORD")
                    .ok_or_else(|| invalid("NEO4J_PASSWORD", "required when NEO4J_URI is set"))?,
            }),
        };

        let request_timeout = env.seconds("REQUEST_TIMEOUT_SECONDS", 30, 1)?;
        let max_body_bytes: usize =
            env.parse("MAX_BODY_BYTES", 1024 * 1024, "a number of bytes")?;
        if max_body_bytes < 1024 {
            return Err(invalid("MAX_BODY_BYTES", "must be at least 1024"));
        }
        let max_uri_bytes: usize = env.parse("MAX_URI_BYTES", 8192, "a number of bytes")?;
        // Above 65,534 bytes hyper refuses the request itself (still as problem+json).
        if !(256..=65_534).contains(&max_uri_bytes) {
            return Err(invalid("MAX_URI_BYTES", "must be between 256 and 65534"));
        }
        let cors_allowed_origins = env
            .get("CORS_ALLOWED_ORIGINS")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|origin| {
                        if origin == "*" || axum::http::HeaderValue::from_str(origin).is_ok() {
                            Ok(origin.to_string())
                        } else {
                            Err(invalid(
                                "CORS_ALLOWED_ORIGINS",
                                format!("{origin:?} is not an origin"),
                            ))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let rate_limit_per_minute: u32 =
            env.parse("RATE_LIMIT_PER_MINUTE", 100, "a whole number of requests")?;
        if rate_limit_per_minute == 0 {
            return Err(invalid("RATE_LIMIT_PER_MINUTE", "must be at least 1"));
        }
        let rate_limit_ip_per_minute: u32 = env.parse(
            "RATE_LIMIT_IP_PER_MINUTE",
            1000,
            "a whole number of requests",
        )?;
        if rate_limit_ip_per_minute == 0 {
            return Err(invalid("RATE_LIMIT_IP_PER_MINUTE", "must be at least 1"));
        }
        let trusted_proxies = env
            .get("TRUSTED_PROXY_CIDRS")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|cidr| {
                        cidr.parse::<IpNet>()
                            .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                            .map_err(|_| {
                                invalid(
                                    "TRUSTED_PROXY_CIDRS",
                                    format!("{cidr:?} is not a CIDR such as 10.0.0.0/16"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let bootstrap_admin_api_key = env.secret("BOOTSTRAP_ADMIN_API_KEY");
        if let Some(key) = &bootstrap_admin_api_key
            && key.expose_secret().chars().count() < 32
        {
            return Err(invalid(
                "BOOTSTRAP_ADMIN_API_KEY",
                "must be at least 32 characters",
            ));
        }
        let shutdown_grace = env.seconds("SHUTDOWN_GRACE_SECONDS", 25, 1)?;
        let shutdown_drain = env.seconds("SHUTDOWN_DRAIN_SECONDS", 3, 0)?;
        if shutdown_drain >= shutdown_grace {
            return Err(invalid(
                "SHUTDOWN_DRAIN_SECONDS",
                "must be shorter than SHUTDOWN_GRACE_SECONDS",
            ));
        }
        let otel_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_string);
        if let Some(endpoint) = &otel_endpoint {
            // `collector:4318` parses as a URL whose scheme is "collector": only http(s) can work.
            let scheme = url::Url::parse(endpoint).map(|u| u.scheme().to_string());
            if !matches!(scheme.as_deref(), Ok("http" | "https")) {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!(
                        "{endpoint:?} is not an http:// or https:// URL, e.g. http://collector:4318"
                    ),
                ));
            }
        }
        let otel_service_name = env.string("OTEL_SERVICE_NAME", "cloud-optimizer");
        let kb_path = kb_path(env);
        check_kb_url(&kb_path)?;
        let kb_path = PathBuf::from(kb_path);
        let kb_refresh_interval = match env.get("KB_REFRESH_INTERVAL") {
            None => None,
            Some(_) => Some(env.seconds("KB_REFRESH_INTERVAL", 0, 60)?),
        };
        let kb_cache_entries: usize = env.parse(
            "KB_CACHE_ENTRIES",
            4096,
            "a number of entries (0 disables the cache)",
        )?;
        let marketplace = marketplace_config(env)?;
        let notifications = notifications_config(env)?;
        let scans = scans_config(env)?;
        let chat = ChatConfig {
            // `STREAMING_ENABLED` is the name the deployment templates were promised first.
            streaming: match env.get("CHAT_STREAMING_ENABLED") {
                Some(_) => env.bool("CHAT_STREAMING_ENABLED", true)?,
                None => env.bool("STREAMING_ENABLED", true)?,
            },
            timeout: env.seconds("CHAT_TIMEOUT_SECONDS", 300, 1)?,
        };
        let llm = llm_config(env)?;
        let documents = documents_config(env)?;

        Ok(Self {
            environment,
            bind_address,
            port,
            metrics_port: (metrics_port != 0).then_some(metrics_port),
            log_level,
            log_format,
            database,
            migrate_on_startup,
            redis_url,
            redis_key_prefix,
            neo4j,
            request_timeout,
            max_body_bytes,
            max_uri_bytes,
            cors_allowed_origins,
            rate_limit_per_minute,
            rate_limit_ip_per_minute,
            trusted_proxies,
            bootstrap_admin_api_key,
            shutdown_grace,
            shutdown_drain,
            otel_endpoint,
            otel_service_name,
            kb_path,
            kb_refresh_interval,
            kb_cache_entries,
            marketplace,
            notifications,
            scans,
            chat,
            llm,
            documents,
        })
    }

    /// The effective configuration as shown by `config check`: one entry per variable the
    /// binary reads, under the variable's own name (a test holds it to `.env.example`). Secrets
    /// appear only as `(set)`/`(unset)`; `null` is an unset optional value.
    pub fn redacted(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        let set = |present: bool| json!(if present { "(set)" } else { "(unset)" });
        let db = &self.database;
        let m = &self.marketplace;
        let n = &self.notifications;
        let entries: Vec<(&str, Value)> = vec![
            ("ENVIRONMENT", json!(self.environment)),
            ("BIND_ADDRESS", json!(self.bind_address.to_string())),
            ("PORT", json!(self.port)),
            ("METRICS_PORT", json!(self.metrics_port.unwrap_or(0))),
            ("LOG_LEVEL", json!(self.log_level)),
            ("LOG_FORMAT", json!(self.log_format)),
            (
                "REQUEST_TIMEOUT_SECONDS",
                json!(self.request_timeout.as_secs()),
            ),
            ("MAX_BODY_BYTES", json!(self.max_body_bytes)),
            ("MAX_URI_BYTES", json!(self.max_uri_bytes)),
            ("CORS_ALLOWED_ORIGINS", json!(self.cors_allowed_origins)),
            (
                "SHUTDOWN_DRAIN_SECONDS",
                json!(self.shutdown_drain.as_secs()),
            ),
            (
                "SHUTDOWN_GRACE_SECONDS",
                json!(self.shutdown_grace.as_secs()),
            ),
            // The connection actually used, whichever variables it came from.
            ("DATABASE_URL", json!(db.display)),
            ("PGHOST", json!(db.options.get_host())),
            ("PGPORT", json!(db.options.get_port())),
            ("PGDATABASE", json!(db.options.get_database())),
            ("PGUSER", json!(db.options.get_username())),
            ("PGPASSWORD", set(db.password_set)),
            ("PGSSLMODE", json!(ssl_mode_name(db.options.get_ssl_mode()))),
            ("DATABASE_MAX_CONNECTIONS", json!(db.max_connections)),
            (
                "DATABASE_CONNECT_TIMEOUT_SECONDS",
                json!(db.connect_deadline.as_secs()),
            ),
            ("MIGRATE_ON_STARTUP", json!(self.migrate_on_startup)),
            (
                "REDIS_URL",
                json!(
                    self.redis_url
                        .as_ref()
                        .map(|u| redact_url(u.expose_secret()))
                ),
            ),
            ("REDIS_KEY_PREFIX", json!(self.redis_key_prefix)),
            (
                "BOOTSTRAP_ADMIN_API_KEY",
                set(self.bootstrap_admin_api_key.is_some()),
            ),
            ("RATE_LIMIT_PER_MINUTE", json!(self.rate_limit_per_minute)),
            (
                "RATE_LIMIT_IP_PER_MINUTE",
                json!(self.rate_limit_ip_per_minute),
            ),
            (
                "TRUSTED_PROXY_CIDRS",
                json!(
                    self.trusted_proxies
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                ),
            ),
            ("KB_PATH", json!(self.kb_path.display().to_string())),
            (
                "KB_REFRESH_INTERVAL",
                json!(self.kb_refresh_interval.map(|d| d.as_secs())),
            ),
            ("KB_CACHE_ENTRIES", json!(self.kb_cache_entries)),
            ("NEO4J_URI", json!(self.neo4j.as_ref().map(|n| &n.uri))),
            ("NEO4J_USER", json!(self.neo4j.as_ref().map(|n| &n.user))),
            ("NEO4J_PASSWORD", set(self.neo4j.is_some())),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", json!(self.otel_endpoint)),
            ("OTEL_SERVICE_NAME", json!(self.otel_service_name)),
            ("MARKETPLACE_ENABLED", json!(m.enabled)),
            ("MARKETPLACE_PRODUCT_CODE", json!(m.product_code)),
            (
                "MARKETPLACE_PUBLIC_KEY_VERSION",
                json!(m.public_key_version),
            ),
            ("MARKETPLACE_PUBLIC_KEY", set(m.public_key_pem.is_some())),
            (
                "MARKETPLACE_REPORT_INTERVAL_SECONDS",
                json!(m.report_interval.as_secs()),
            ),
            (
                "MARKETPLACE_LICENSE_CHECK_SECONDS",
                json!(m.license_check_interval.as_secs()),
            ),
            // Unset, each process draws its own id: showing one drawn here would mislead.
            (
                "MARKETPLACE_TASK_ID",
                json!(m.task_id_configured.then_some(&m.task_id)),
            ),
            ("TRIAL_MODE", json!(m.trial_mode)),
            ("TRIAL_DAYS", json!(m.trial_days)),
            ("TRIAL_LIMIT_SECURITY_SCANS", json!(m.trial_limit_scans)),
            ("TRIAL_LIMIT_CHAT_QUESTIONS", json!(m.trial_limit_chat)),
            (
                "TRIAL_LIMIT_DOCUMENT_ANALYSIS",
                json!(m.trial_limit_documents),
            ),
            (
                "NOTIFICATIONS_RETENTION_HOURS",
                json!(n.retention.as_secs() / 3600),
            ),
            ("NOTIFICATIONS_MAX_CONNECTIONS", json!(n.max_connections)),
            (
                "NOTIFICATIONS_PING_SECONDS",
                json!(n.ping_interval.as_secs()),
            ),
            ("NOTIFICATIONS_QUEUE", json!(n.queue)),
            (
                "NOTIFICATIONS_MAX_MESSAGE_BYTES",
                json!(n.max_message_bytes),
            ),
            (
                "SCAN_SCHEDULE",
                json!(
                    self.scans
                        .schedule
                        .map(|d| humantime::format_duration(d).to_string())
                        .unwrap_or_else(|| "off".into())
                ),
            ),
            ("SCAN_CONCURRENCY", json!(self.scans.concurrency)),
            (
                "SCAN_CALL_TIMEOUT_SECONDS",
                json!(self.scans.call_timeout.as_secs()),
            ),
            ("SCAN_LEASE_SECONDS", json!(self.scans.lease.as_secs())),
            ("CHAT_STREAMING_ENABLED", json!(self.chat.streaming)),
            // The older name of the same setting: the effective value too.
            ("STREAMING_ENABLED", json!(self.chat.streaming)),
            ("CHAT_TIMEOUT_SECONDS", json!(self.chat.timeout.as_secs())),
            (
                "LLM_PROVIDER",
                json!(self.llm.as_ref().map_or("none", |l| l.provider.name())),
            ),
            ("LLM_MODEL", json!(self.llm.as_ref().map(|l| &l.model))),
            (
                "LLM_API_KEY",
                set(self.llm.as_ref().is_some_and(|l| l.api_key.is_some())),
            ),
            (
                "LLM_BASE_URL",
                json!(self.llm.as_ref().and_then(|l| l.base_url.as_ref())),
            ),
            (
                "LLM_MAX_TOKENS",
                json!(self.llm.as_ref().map(|l| l.max_tokens)),
            ),
            (
                "LLM_TIMEOUT_SECONDS",
                json!(self.llm.as_ref().map(|l| l.timeout.as_secs())),
            ),
            ("DOCUMENT_MAX_BYTES", json!(self.documents.max_bytes)),
            (
                "DOCUMENT_RETENTION_DAYS",
                json!(self.documents.retention.map(|d| d.as_secs() / 86_400)),
            ),
            ("DOCUMENTS_BUCKET", json!(self.documents.bucket)),
            ("DOCUMENTS_KMS_KEY_ID", json!(self.documents.kms_key_id)),
            (
                "DOCUMENT_ANALYSIS_TIMEOUT_SECONDS",
                json!(self.documents.analysis_timeout.as_secs()),
            ),
            (
                "DOCUMENT_ANALYSIS_CONCURRENCY",
                json!(self.documents.concurrency),
            ),
        ];
        Value::Object(
            entries
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        )
    }
}

/// The `PGSSLMODE` spelling of a mode.
fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Where the KB comes from (`KB_PATH`): read on its own by `kb verify` and `kb manifest`, which
/// need no other variable.
pub fn kb_path(env: &Env) -> String {
    env.string("KB_PATH", DEFAULT_KB_PATH)
}

pub const DEFAULT_KB_PATH: &str = "data/compliance";

/// A bundle URL can only be checked for its scheme before it is fetched.
fn check_kb_url(raw: &str) -> Result<(), ConfigError> {
    if let Some((scheme, _)) = raw.split_once("://")
        && !matches!(scheme, "https" | "http" | "s3")
    {
        return Err(invalid(
            "KB_PATH",
            format!("{raw:?}: a bundle URL must be https://, http:// or s3://"),
        ));
    }
    Ok(())
}

impl Config {
    /// What only the commands that use the KB check (`serve`, `config check`): a local
    /// `KB_PATH` must be an existing directory, or a typo surfaces much later as a failed KB
    /// load in `/health`. Other commands (`keys`, `usage`, …) run from any directory.
    pub fn check_kb_path_exists(&self) -> Result<(), ConfigError> {
        let raw = self.kb_path.display().to_string();
        if !raw.contains("://") && !self.kb_path.is_dir() {
            return Err(invalid(
                "KB_PATH",
                format!("{raw:?} is not an existing directory"),
            ));
        }
        Ok(())
    }
}

/// `EnvFilter` accepts any bare word as a target name, so `LOG_LEVEL=verbose` would silently
/// mean "only events whose target is `verbose`", and the server would log nothing. A directive
/// without `=` must therefore be a level.
fn check_log_level(raw: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let problem = || {
        invalid(
            "LOG_LEVEL",
            format!(
                "{raw:?} is not a level (error, warn, info, debug, trace, off) or a filter such as info,sqlx=warn"
            ),
        )
    };
    for directive in raw.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare_word = !directive.contains(['=', '[', ':']);
        if bare_word && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(problem());
        }
    }
    if tracing_subscriber::EnvFilter::try_new(raw).is_err() {
        return Err(problem());
    }
    Ok(())
}

fn database_config(env: &Env) -> Result<DatabaseConfig, ConfigError> {
    let (options, display, password_set) = match env.get("DATABASE_URL") {
        Some(url) => {
            let parsed = url::Url::parse(url).map_err(|e| {
                invalid(
                    "DATABASE_URL",
                    format!("not a URL ({e}); expected postgres://user:password@host:5432/db"),
                )
            })?;
            if !matches!(parsed.scheme(), "postgres" | "postgresql") {
                return Err(invalid(
                    "DATABASE_URL",
                    "scheme must be postgres:// or postgresql://",
                ));
            }
            let options: PgConnectOptions = url
                .parse()
                .map_err(|e| invalid("DATABASE_URL", format!("cannot be used: {e}")))?;
            // sqlx, like libpq, takes what the URL leaves out from the PG* variables.
            let password_set = parsed.password().is_some() || env.get("PGPASSWORD").is_some();
            (options, redact_url(url), password_set)
        }
        None => {
            let host = env.string("PGHOST", "localhost");
            let port: u16 = env.parse("PGPORT", 5432, "a TCP port")?;
            let database = env.string("PGDATABASE", "cloud_optimizer");
            let user = env.string("PGUSER", "postgres");
            let mut options = PgConnectOptions::new_without_pgpass()
                .host(&host)
                .port(port)
                .database(&database)
                .username(&user);
            let password = env.secret("PGPASSWORD");
            if let Some(password) = &password {
                options = options.password(password.expose_secret());
            }
            if let Some(mode) = env.get("PGSSLMODE") {
                options = options.ssl_mode(mode.parse().map_err(|_| {
                    invalid(
                        "PGSSLMODE",
                        format!(
                            "{mode:?} is not disable, prefer, require, verify-ca or verify-full"
                        ),
                    )
                })?);
            }
            (
                options,
                format!("postgres://{user}@{host}:{port}/{database}"),
                password.is_some(),
            )
        }
    };
    let max_connections: u32 =
        env.parse("DATABASE_MAX_CONNECTIONS", 10, "a number of connections")?;
    if max_connections == 0 {
        return Err(invalid("DATABASE_MAX_CONNECTIONS", "must be at least 1"));
    }
    Ok(DatabaseConfig {
        options: options.application_name("cloud-optimizer"),
        display,
        max_connections,
        password_set,
        connect_deadline: env.seconds("DATABASE_CONNECT_TIMEOUT_SECONDS", 60, 1)?,
    })
}

fn marketplace_config(env: &Env) -> Result<MarketplaceConfig, ConfigError> {
    let enabled = env.bool("MARKETPLACE_ENABLED", false)?;
    let product_code = env.get("MARKETPLACE_PRODUCT_CODE").map(str::to_string);
    if enabled && product_code.is_none() {
        return Err(invalid(
            "MARKETPLACE_PRODUCT_CODE",
            "required when MARKETPLACE_ENABLED=true",
        ));
    }
    let public_key_version: i32 =
        env.parse("MARKETPLACE_PUBLIC_KEY_VERSION", 1, "a whole number >= 1")?;
    if public_key_version < 1 {
        return Err(invalid(
            "MARKETPLACE_PUBLIC_KEY_VERSION",
            "must be at least 1",
        ));
    }
    let public_key_pem = env
        .get("MARKETPLACE_PUBLIC_KEY")
        .map(|pem| pem.replace("\\n", "\n"));
    // Without the key no RegisterUsage answer can be verified: the license could only ever be
    // `invalid`, so refuse it at start rather than at the first billable action.
    if enabled && public_key_pem.is_none() {
        return Err(invalid(
            "MARKETPLACE_PUBLIC_KEY",
            "required when MARKETPLACE_ENABLED=true (the PEM public key AWS Marketplace gives the product)",
        ));
    }
    if let Some(pem) = &public_key_pem
        && jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_err()
    {
        return Err(invalid(
            "MARKETPLACE_PUBLIC_KEY",
            "is not a PEM-encoded RSA public key",
        ));
    }
    let limit = |name: &'static str, default: i64| -> Result<i64, ConfigError> {
        let value: i64 = env.parse(name, default, "a whole number")?;
        if value < 0 {
            return Err(invalid(name, "must not be negative"));
        }
        Ok(value)
    };
    let trial_days = limit("TRIAL_DAYS", 14)?;
    let task_id = env.get("MARKETPLACE_TASK_ID").map(str::to_string);
    Ok(MarketplaceConfig {
        enabled,
        product_code,
        public_key_version,
        public_key_pem,
        trial_mode: env.bool("TRIAL_MODE", false)?,
        trial_days,
        trial_limit_scans: limit("TRIAL_LIMIT_SECURITY_SCANS", 50)?,
        trial_limit_chat: limit("TRIAL_LIMIT_CHAT_QUESTIONS", 500)?,
        trial_limit_documents: limit("TRIAL_LIMIT_DOCUMENT_ANALYSIS", 20)?,
        report_interval: env.seconds("MARKETPLACE_REPORT_INTERVAL_SECONDS", 300, 1)?,
        license_check_interval: env.seconds("MARKETPLACE_LICENSE_CHECK_SECONDS", 3600, 10)?,
        task_id: task_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        task_id_configured: task_id.is_some(),
    })
}

fn notifications_config(env: &Env) -> Result<NotificationsConfig, ConfigError> {
    let retention_hours: u64 = env.parse(
        "NOTIFICATIONS_RETENTION_HOURS",
        24,
        "a whole number of hours",
    )?;
    if !(1..=24 * 90).contains(&retention_hours) {
        return Err(invalid(
            "NOTIFICATIONS_RETENTION_HOURS",
            "must be between 1 and 2160 (90 days)",
        ));
    }
    let max_connections: usize = env.parse(
        "NOTIFICATIONS_MAX_CONNECTIONS",
        10_000,
        "a number of connections",
    )?;
    let queue: usize = env.parse("NOTIFICATIONS_QUEUE", 256, "a number of events")?;
    if !(1..=65_536).contains(&queue) {
        return Err(invalid(
            "NOTIFICATIONS_QUEUE",
            "must be between 1 and 65536",
        ));
    }
    let max_message_bytes: usize =
        env.parse("NOTIFICATIONS_MAX_MESSAGE_BYTES", 4096, "a number of bytes")?;
    if !(128..=1024 * 1024).contains(&max_message_bytes) {
        return Err(invalid(
            "NOTIFICATIONS_MAX_MESSAGE_BYTES",
            "must be between 128 and 1048576",
        ));
    }
    Ok(NotificationsConfig {
        retention: Duration::from_secs(retention_hours * 3600),
        max_connections,
        ping_interval: env.seconds("NOTIFICATIONS_PING_SECONDS", 30, 1)?,
        queue,
        max_message_bytes,
    })
}

fn scans_config(env: &Env) -> Result<ScansConfig, ConfigError> {
    let schedule = match env.get("SCAN_SCHEDULE") {
        None => None,
        Some(raw) if raw.eq_ignore_ascii_case("off") => None,
        Some(raw) => {
            let every = humantime::parse_duration(raw).map_err(|_| {
                invalid(
                    "SCAN_SCHEDULE",
                    format!("{raw:?} is not off or a duration such as 24h, 12h or 1d"),
                )
            })?;
            if every < Duration::from_secs(15 * 60) {
                return Err(invalid("SCAN_SCHEDULE", "must be at least 15m"));
            }
            Some(every)
        }
    };
    let concurrency: usize = env.parse("SCAN_CONCURRENCY", 8, "a number of units")?;
    if !(1..=64).contains(&concurrency) {
        return Err(invalid("SCAN_CONCURRENCY", "must be between 1 and 64"));
    }
    Ok(ScansConfig {
        schedule,
        concurrency,
        call_timeout: env.seconds("SCAN_CALL_TIMEOUT_SECONDS", 30, 1)?,
        lease: env.seconds("SCAN_LEASE_SECONDS", 60, 2)?,
    })
}

fn documents_config(env: &Env) -> Result<DocumentsConfig, ConfigError> {
    let max_bytes: usize =
        env.parse("DOCUMENT_MAX_BYTES", 20 * 1024 * 1024, "a number of bytes")?;
    if !(1024..=1024 * 1024 * 1024).contains(&max_bytes) {
        return Err(invalid(
            "DOCUMENT_MAX_BYTES",
            "must be between 1024 and 1073741824 (1 GiB)",
        ));
    }
    let retention = match env.get("DOCUMENT_RETENTION_DAYS") {
        None => None,
        Some(_) => {
            let days: u64 = env.parse("DOCUMENT_RETENTION_DAYS", 0, "a whole number of days")?;
            if days == 0 {
                return Err(invalid(
                    "DOCUMENT_RETENTION_DAYS",
                    "must be at least 1 (leave it unset to keep files until deleted)",
                ));
            }
            Some(Duration::from_secs(days.saturating_mul(86_400)))
        }
    };
    let bucket = env.get("DOCUMENTS_BUCKET").map(str::to_string);
    if let Some(name) = &bucket {
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid {
            return Err(invalid(
                "DOCUMENTS_BUCKET",
                format!(
                    "{name:?} is not an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)"
                ),
            ));
        }
    }
    let concurrency: usize =
        env.parse("DOCUMENT_ANALYSIS_CONCURRENCY", 2, "a number of analyses")?;
    if !(1..=64).contains(&concurrency) {
        return Err(invalid(
            "DOCUMENT_ANALYSIS_CONCURRENCY",
            "must be between 1 and 64",
        ));
    }
    Ok(DocumentsConfig {
        max_bytes,
        retention,
        bucket,
        kms_key_id: env.get("DOCUMENTS_KMS_KEY_ID").map(str::to_string),
        analysis_timeout: env.seconds("DOCUMENT_ANALYSIS_TIMEOUT_SECONDS", 60, 1)?,
        concurrency,
    })
}

/// The LLM variables other than `LLM_PROVIDER` are read only with a provider, as Neo4j's are
/// only with `NEO4J_URI`.
fn llm_config(env: &Env) -> Result<Option<LlmConfig>, ConfigError> {
    let provider = match env
        .string("LLM_PROVIDER", "none")
        .to_ascii_lowercase()
        .as_str()
    {
        "none" => return Ok(None),
        "bedrock" => LlmProvider::Bedrock,
        "openai" => LlmProvider::OpenAi,
        "anthropic" => LlmProvider::Anthropic,
        other => {
            return Err(invalid(
                "LLM_PROVIDER",
                format!("{other:?} is not one of none, bedrock, openai, anthropic"),
            ));
        }
    };
    let model = env.get("LLM_MODEL").map(str::to_string).ok_or_else(|| {
        invalid(
            "LLM_MODEL",
            format!(
                "required when LLM_PROVIDER={}, e.g. {}",
                provider.name(),
                match provider {
                    LlmProvider::Bedrock => "anthropic.claude-3-5-sonnet-20240620-v1:0",
                    LlmProvider::OpenAi => "gpt-4o-mini (or llama3.1 on Ollama)",
                    LlmProvider::Anthropic => "claude-sonnet-4-5",
                }
            ),
        )
    })?;
    let api_key = env.secret("LLM_API_KEY");
    let base_url = env.get("LLM_BASE_URL");
    match provider {
        // Bedrock signs with the task role and resolves its endpoint like every AWS client: a
        // key or URL here would be silently ignored, so refuse it with the variable to use.
        LlmProvider::Bedrock if api_key.is_some() => {
            return Err(invalid(
                "LLM_API_KEY",
                "not used with LLM_PROVIDER=bedrock, which signs with the AWS credentials (the task role)",
            ));
        }
        LlmProvider::Bedrock if base_url.is_some() => {
            return Err(invalid(
                "LLM_BASE_URL",
                "not used with LLM_PROVIDER=bedrock: set AWS_ENDPOINT_URL_BEDROCK_RUNTIME instead",
            ));
        }
        LlmProvider::Anthropic if api_key.is_none() => {
            return Err(invalid(
                "LLM_API_KEY",
                "required when LLM_PROVIDER=anthropic",
            ));
        }
        _ => {}
    }
    let base_url = match provider {
        LlmProvider::Bedrock => None,
        LlmProvider::OpenAi => Some(base_url.unwrap_or(DEFAULT_OPENAI_BASE_URL)),
        LlmProvider::Anthropic => Some(base_url.unwrap_or(DEFAULT_ANTHROPIC_BASE_URL)),
    };
    if let Some(raw) = base_url {
        let scheme = url::Url::parse(raw).map(|u| u.scheme().to_string());
        if !matches!(scheme.as_deref(), Ok("http" | "https")) {
            return Err(invalid(
                "LLM_BASE_URL",
                format!("{raw:?} is not an http:// or https:// URL, e.g. http://ollama:11434/v1"),
            ));
        }
    }
    let max_tokens: u32 = env.parse("LLM_MAX_TOKENS", 1024, "a whole number of tokens")?;
    if !(1..=1_000_000).contains(&max_tokens) {
        return Err(invalid("LLM_MAX_TOKENS", "must be between 1 and 1000000"));
    }
    Ok(Some(LlmConfig {
        provider,
        model,
        api_key,
        base_url: base_url.map(|u| u.trim_end_matches('/').to_string()),
        max_tokens,
        timeout: env.seconds("LLM_TIMEOUT_SECONDS", 30, 1)?,
    }))
}

/// Replaces the password of a URL with `***` for display.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "(unparseable URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.port, 8000);
        assert_eq!(config.metrics_port, Some(9464));
        assert_eq!(config.rate_limit_per_minute, 100);
        assert_eq!(config.rate_limit_ip_per_minute, 1000);
        let config = Config::from_env(&env(&[("RATE_LIMIT_PER_MINUTE", "5")])).unwrap();
        assert_eq!(
            config.rate_limit_ip_per_minute, 1000,
            "the per-IP guard does not follow the per-key budget"
        );
        assert!(!config.marketplace.enabled);
    }

    #[test]
    fn bad_port_names_the_variable() {
        let err = Config::from_env(&env(&[("PORT", "eighty")])).unwrap_err();
        assert_eq!(err.var, "PORT");
        assert!(err.to_string().contains("PORT"));
    }

    #[test]
    fn short_bootstrap_key_is_rejected() {
        let err = Config::from_env(&env(&[("BOOTSTRAP_ADMIN_API_KEY", "short")])).unwrap_err();
        assert_eq!(err.var, "BOOTSTRAP_ADMIN_API_KEY");
    }

    #[test]
    fn secrets_never_show_in_debug_or_redacted_view() {
        let by_pg_variables = Config::from_env(&env(&[("PGPASSWORD", "hunter2-pg")])).unwrap();
        assert_eq!(by_pg_variables.redacted()["PGPASSWORD"], "(set)");
        assert!(!by_pg_variables.redacted().to_string().contains("hunter2"));
        let config = Config::from_env(&env(&[
            ("DATABASE_URL", "postgres://app:hunter2-db@db:5432/app"),
            ("REDIS_URL", "redis://:hunter2-redis@cache:6379"),
            (
                "BOOTSTRAP_ADMIN_API_KEY",
                "hunter2-key-hunter2-key-hunter2-key",
            ),
        ]))
        .unwrap();
        let debug = format!("{config:?}");
        let shown = config.redacted().to_string();
        for text in [debug, shown] {
            assert!(!text.contains("hunter2"), "secret leaked: {text}");
        }
    }

    #[test]
    fn config_check_shows_each_variable_read_under_its_own_name() {
        // Optional blocks read their other variables only when switched on.
        let env = env(&[
            ("NEO4J_URI", "bolt://graph:7687"),
            ("NEO4J_PASSWORD", "x"),
            ("KB_REFRESH_INTERVAL", "600"),
            ("LLM_PROVIDER", "openai"),
            ("LLM_MODEL", "gpt-4o-mini"),
        ]);
        let shown: BTreeSet<String> = Config::from_env(&env)
            .unwrap()
            .redacted()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let read: BTreeSet<String> = env.names_read().into_iter().map(String::from).collect();
        assert_eq!(shown, read);
    }

    #[test]
    fn pg_variables_build_the_connection() {
        let config = Config::from_env(&env(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGPASSWORD", "s3cret-value"),
        ]))
        .unwrap();
        assert_eq!(
            config.database.display,
            "postgres://postgres@db.internal:6543/cloud_optimizer"
        );
        assert_eq!(config.database.options.get_port(), 6543);
    }

    #[test]
    fn log_levels_and_filters_are_accepted_but_not_bare_words() {
        for ok in [
            "info",
            "WARN",
            "off",
            "info,sqlx=warn",
            "cloud_optimizer=debug",
        ] {
            assert!(Config::from_env(&env(&[("LOG_LEVEL", ok)])).is_ok(), "{ok}");
        }
        for bad in ["verbose", "info,loud"] {
            let err = Config::from_env(&env(&[("LOG_LEVEL", bad)])).unwrap_err();
            assert_eq!(err.var, "LOG_LEVEL", "{bad}");
        }
    }

    #[test]
    fn otlp_endpoint_needs_an_http_scheme() {
        let err = Config::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]))
            .unwrap_err();
        assert_eq!(err.var, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert!(
            Config::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")])).is_ok()
        );
    }

    #[test]
    fn kb_path_must_exist_locally_and_urls_need_a_known_scheme() {
        let config = Config::from_env(&env(&[("KB_PATH", "/no/such/kb")])).unwrap();
        assert_eq!(config.check_kb_path_exists().unwrap_err().var, "KB_PATH");
        let shipped = Config::from_env(&env(&[])).unwrap();
        assert!(shipped.check_kb_path_exists().is_ok());
        let err = Config::from_env(&env(&[("KB_PATH", "ftp://x/kb.tar.gz")])).unwrap_err();
        assert_eq!(err.var, "KB_PATH");
        for ok in ["s3://bucket/kb.tar.gz", "https://example.com/kb.tar.gz"] {
            let config = Config::from_env(&env(&[("KB_PATH", ok)])).unwrap();
            assert!(config.check_kb_path_exists().is_ok(), "{ok}");
        }
    }

    #[test]
    fn llm_is_off_by_default_and_each_provider_gets_its_defaults() {
        assert!(Config::from_env(&env(&[])).unwrap().llm.is_none());
        assert!(
            Config::from_env(&env(&[("LLM_PROVIDER", "None")]))
                .unwrap()
                .llm
                .is_none()
        );
        let openai = Config::from_env(&env(&[("LLM_PROVIDER", "openai"), ("LLM_MODEL", "m")]))
            .unwrap()
            .llm
            .unwrap();
        assert_eq!(openai.provider, LlmProvider::OpenAi);
        assert_eq!(
            openai.base_url.as_deref(),
            Some("https://api.openai.com/v1")
        );
        assert!(openai.api_key.is_none(), "Ollama and vLLM need no key");
        assert_eq!(openai.max_tokens, 1024);
        assert_eq!(openai.timeout, Duration::from_secs(30));
        let anthropic = Config::from_env(&env(&[
            ("LLM_PROVIDER", "anthropic"),
            ("LLM_MODEL", "m"),
            ("LLM_API_KEY", "k"),
            ("LLM_BASE_URL", "http://proxy:8080/"),
            ("LLM_MAX_TOKENS", "2048"),
            ("LLM_TIMEOUT_SECONDS", "5"),
        ]))
        .unwrap()
        .llm
        .unwrap();
        assert_eq!(anthropic.base_url.as_deref(), Some("http://proxy:8080"));
        assert_eq!(anthropic.max_tokens, 2048);
        assert_eq!(anthropic.timeout, Duration::from_secs(5));
        let bedrock = Config::from_env(&env(&[
            ("LLM_PROVIDER", "bedrock"),
            ("LLM_MODEL", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ]))
        .unwrap()
        .llm
        .unwrap();
        assert_eq!(bedrock.provider, LlmProvider::Bedrock);
        assert!(bedrock.base_url.is_none());
    }

    #[test]
    fn llm_refusals_name_the_variable_to_fix() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("LLM_PROVIDER", "gemini")], "LLM_PROVIDER"),
            (&[("LLM_PROVIDER", "openai")], "LLM_MODEL"),
            (
                &[("LLM_PROVIDER", "anthropic"), ("LLM_MODEL", "m")],
                "LLM_API_KEY",
            ),
            (
                &[
                    ("LLM_PROVIDER", "bedrock"),
                    ("LLM_MODEL", "m"),
                    ("LLM_API_KEY", "k"),
                ],
                "LLM_API_KEY",
            ),
            (
                &[
                    ("LLM_PROVIDER", "bedrock"),
                    ("LLM_MODEL", "m"),
                    ("LLM_BASE_URL", "http://x"),
                ],
                "LLM_BASE_URL",
            ),
            (
                &[
                    ("LLM_PROVIDER", "openai"),
                    ("LLM_MODEL", "m"),
                    ("LLM_BASE_URL", "ollama:11434"),
                ],
                "LLM_BASE_URL",
            ),
            (
                &[
                    ("LLM_PROVIDER", "openai"),
                    ("LLM_MODEL", "m"),
                    ("LLM_MAX_TOKENS", "0"),
                ],
                "LLM_MAX_TOKENS",
            ),
            (
                &[
                    ("LLM_PROVIDER", "openai"),
                    ("LLM_MODEL", "m"),
                    ("LLM_TIMEOUT_SECONDS", "0"),
                ],
                "LLM_TIMEOUT_SECONDS",
            ),
        ];
        for (pairs, var) in cases {
            let err = Config::from_env(&env(pairs)).unwrap_err();
            assert_eq!(err.var, *var, "{pairs:?}");
        }
        let err = Config::from_env(&env(&[("LLM_PROVIDER", "gemini")])).unwrap_err();
        assert!(
            err.problem.contains("none, bedrock, openai, anthropic"),
            "{err}"
        );
    }

    #[test]
    fn llm_api_key_is_never_shown() {
        let config = Config::from_env(&env(&[
            ("LLM_PROVIDER", "openai"),
            ("LLM_MODEL", "m"),
            ("LLM_API_KEY", "sk-hunter2"),
        ]))
        .unwrap();
        assert_eq!(config.redacted()["LLM_API_KEY"], "(set)");
        assert_eq!(config.redacted()["LLM_PROVIDER"], "openai");
        for text in [format!("{config:?}"), config.redacted().to_string()] {
            assert!(!text.contains("hunter2"), "secret leaked: {text}");
        }
    }

    #[test]
    fn proxies_accept_cidrs_and_addresses() {
        let config =
            Config::from_env(&env(&[("TRUSTED_PROXY_CIDRS", "10.0.0.0/8, 127.0.0.1")])).unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        let err = Config::from_env(&env(&[("TRUSTED_PROXY_CIDRS", "nope")])).unwrap_err();
        assert_eq!(err.var, "TRUSTED_PROXY_CIDRS");
    }
}
