//! Test harness: each test gets its own database, cloned from a migrated template, and the real
//! server on `127.0.0.1:0`, against the machine's real PostgreSQL and Redis.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the
//! maintenance database; `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) the Redis.
//! `TEST_LOG=1` shows the server's logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloud_optimizer::config::{Config, Env};
use cloud_optimizer::server::Server;
use sha2::Digest;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const BOOTSTRAP_KEY: &str = "test-bootstrap-admin-key-0123456789abcdef";

pub fn maintenance_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn database_url(name: &str) -> String {
    let mut url = url::Url::parse(&maintenance_url()).expect("TEST_DATABASE_URL is a URL");
    url.set_path(name);
    url.to_string()
}

pub const KB_DIR: &str = "data/compliance";

/// The template's name changes whenever a migration or the shipped KB does, so a stale template
/// is never used.
fn template_name() -> String {
    let mut hasher = sha2::Sha256::new();
    for migration in cloud_optimizer::db::MIGRATOR.iter() {
        hasher.update(migration.version.to_le_bytes());
        hasher.update(&*migration.checksum);
    }
    hasher.update(
        cloud_optimizer::kb::load::manifest_checksum(std::path::Path::new(KB_DIR)).unwrap(),
    );
    format!("co_template_{}", &hex::encode(hasher.finalize())[..12])
}

/// Creates an empty database (no schema) and returns its name.
pub async fn create_empty_database() -> String {
    cloud_optimizer::telemetry::init_for_tests();
    let name = unique_db_name();
    let mut conn = PgConnection::connect(&maintenance_url())
        .await
        .expect("connect to PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .expect("create database");
    name
}

fn unique_db_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "co_test_{secs}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A fresh, migrated database cloned from the template (made once, under an advisory lock,
/// since nextest runs every test in its own process).
pub async fn create_migrated_database() -> String {
    cloud_optimizer::telemetry::init_for_tests();
    let template = template_name();
    let mut conn = PgConnection::connect(&maintenance_url())
        .await
        .expect("connect to PostgreSQL");
    conn.execute("SELECT pg_advisory_lock(727274)")
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    if !exists {
        drop_stale_databases(&mut conn).await;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{template}\""
        )))
        .await
        .unwrap();
        let pool = PgPool::connect(&database_url(&template)).await.unwrap();
        cloud_optimizer::db::migrate(&pool)
            .await
            .expect("migrate template");
        // The shipped KB is in the template, so a server starting on a clone finds it unchanged.
        cloud_optimizer::kb::load::load_dir(&pool, std::path::Path::new(KB_DIR), KB_DIR)
            .await
            .expect("the shipped KB loads");
        pool.close().await;
    }
    let name = unique_db_name();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
    )))
    .await
    .expect("clone template database");
    conn.execute("SELECT pg_advisory_unlock(727274)")
        .await
        .unwrap();
    name
}

/// Test databases older than two hours and old templates are dropped when a template is made.
async fn drop_stale_databases(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'co_test_%' OR datname LIKE 'co_template_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for name in names {
        let stale = if let Some(rest) = name.strip_prefix("co_test_") {
            rest.split('_')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|t| now.saturating_sub(t) > 7200)
        } else {
            true
        };
        if stale {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .await;
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub metrics_address: String,
    pub client: reqwest::Client,
    pub db_name: String,
    pub pool: PgPool,
    /// An admin key (the bootstrap key) that works from the first request.
    pub admin_key: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn base_env(db_name: &str) -> HashMap<String, String> {
    HashMap::from([
        ("DATABASE_URL".to_string(), database_url(db_name)),
        (
            "BOOTSTRAP_ADMIN_API_KEY".to_string(),
            BOOTSTRAP_KEY.to_string(),
        ),
        ("LOG_FORMAT".to_string(), "pretty".to_string()),
        (
            "DATABASE_CONNECT_TIMEOUT_SECONDS".to_string(),
            "10".to_string(),
        ),
        ("SHUTDOWN_DRAIN_SECONDS".to_string(), "0".to_string()),
        ("SHUTDOWN_GRACE_SECONDS".to_string(), "5".to_string()),
        (
            "REDIS_KEY_PREFIX".to_string(),
            format!("test:{}:", uuid::Uuid::new_v4().simple()),
        ),
    ])
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the real server in process with extra environment set by `customise`.
pub async fn spawn_app_with(customise: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    let db_name = create_migrated_database().await;
    spawn_on_database(db_name, customise).await
}

/// A second replica serving the same database as `app`.
pub async fn spawn_replica(app: &TestApp) -> TestApp {
    spawn_on_database(app.db_name.clone(), |_| {}).await
}

pub async fn spawn_on_database(
    db_name: String,
    customise: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    cloud_optimizer::telemetry::init_for_tests();
    let mut vars = base_env(&db_name);
    customise(&mut vars);
    let config = Config::from_env(&Env::from_map(vars)).expect("test configuration is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let metrics_address = format!("http://{}", metrics_listener.local_addr().unwrap());
    let server = Server::start(config).await.expect("server starts");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(listener, Some(metrics_listener), async move {
        let _ = rx.await;
    }));
    let pool = PgPool::connect(&database_url(&db_name)).await.unwrap();
    TestApp {
        address,
        metrics_address,
        // As real clients do: `Accept-Encoding: gzip` on every request and bodies decoded, so
        // a response whose Content-Encoding lies about its body fails the test that reads it.
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .gzip(true)
            .build()
            .unwrap(),
        db_name,
        pool,
        admin_key: BOOTSTRAP_KEY.to_string(),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn get_as(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(key)
    }

    pub fn post_as(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(key)
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        self.get("/health")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn delete_as(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).bearer_auth(key)
    }

    /// Units of a billing dimension used so far (`GET /api/v1/usage`).
    pub async fn used(&self, dimension: &str) -> i64 {
        used_in(&self.admin_json("/api/v1/usage").await, dimension)
    }

    /// `GET path` with the admin key; the response must be a success, its body JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let response = self.get_as(path, &self.admin_key).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Creates a key through the API and returns (id, key).
    pub async fn create_key(&self, name: &str, scope: &str) -> (String, String) {
        create_key_at(&self.address, &self.admin_key, name, scope).await
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().unwrap().await.expect("server task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Units of `dimension` used, from a `GET /api/v1/usage` body.
pub fn used_in(usage: &serde_json::Value, dimension: &str) -> i64 {
    usage["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dimension"] == dimension)
        .unwrap_or_else(|| panic!("{dimension} in {usage}"))["used"]
        .as_i64()
        .unwrap()
}

/// Creates a key through the API of the server at `address` (`http://…`) with `admin_key`, and
/// returns (id, key).
pub async fn create_key_at(
    address: &str,
    admin_key: &str,
    name: &str,
    scope: &str,
) -> (String, String) {
    let response = reqwest::Client::new()
        .post(format!("{address}/api/v1/keys"))
        .bearer_auth(admin_key)
        .json(&serde_json::json!({"name": name, "scope": scope}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "creating a key");
    let body: serde_json::Value = response.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_string(),
        body["key"].as_str().unwrap().to_string(),
    )
}

/// Asserts a problem+json error and returns its body.
pub async fn assert_problem(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "content type"
    );
    let has_request_id = response.headers().contains_key("x-request-id");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "problem code in {body}");
    assert_eq!(body["status"], status);
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    assert!(body["request_id"].is_string(), "request id in body: {body}");
    assert!(has_request_id, "X-Request-Id header");
    body
}

/// Polls `check` every 25 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A loopback port that was free a moment ago (bound then released). Another test may take it
/// before it is used, so use it only where nothing needs to listen on it (an unreachable
/// address), or with a retry: [`Process::serve`], [`with_free_port`].
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts something that must listen on a port of its own (`start` returns `None` when the
/// port turned out to be taken), with a new port each time, a few times.
pub async fn with_free_port<T, F, Fut>(mut start: F) -> T
where
    F: FnMut(u16) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..5 {
        if let Some(started) = start(free_port()).await {
            return started;
        }
    }
    panic!("no free port after 5 attempts");
}

/// The variables `.env.example` documents: its `NAME=value` lines, commented out or not.
pub fn env_example_names() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(".env.example")
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

/// Runs the real binary to completion with exactly `env` (nothing inherited).
pub fn run_binary(env: &HashMap<String, String>, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .unwrap()
}

/// The real binary, killed when dropped. Its output is kept line by line in `output` (and
/// shown with `TEST_LOG=1`).
pub struct Process {
    pub child: Child,
    pub port: u16,
    pub output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(vars: &HashMap<String, String>, args: &[&str]) -> Self {
        let port: u16 = vars.get("PORT").and_then(|p| p.parse().ok()).unwrap_or(0);
        let show_logs = std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
            .args(args)
            .env_clear()
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the binary");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let output = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    if show_logs {
                        eprintln!("{line}");
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            port,
            output,
        }
    }

    /// `serve` on a port of its own, ready (and on a metrics port of its own when `METRICS_PORT`
    /// is `free`). A port found free may be taken by another test before the binary binds it;
    /// the binary then exits at once, and other ports are tried.
    pub async fn serve(vars: &HashMap<String, String>) -> Self {
        with_free_port(|port| async move {
            let mut vars = vars.clone();
            vars.insert("PORT".into(), port.to_string());
            if vars.get("METRICS_PORT").is_some_and(|p| p == "free") {
                vars.insert("METRICS_PORT".into(), free_port().to_string());
            }
            let mut process = Self::spawn(&vars, &["serve"]);
            // Our own "listening" line, not the readiness of whoever else holds the port.
            let listening = eventually(Duration::from_secs(30), || {
                let exited = process.child.try_wait().unwrap().is_some();
                let bound = process.logged(&format!(":{port}"));
                async move { exited || bound }
            })
            .await;
            if !listening || process.child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(
                wait_ready(process.addr(), Duration::from_secs(30)).await,
                "replica on {port} not ready"
            );
            Some(process)
        })
        .await
    }

    /// True when a line of output contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.output.lock().unwrap().iter().any(|l| l.contains(text))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `GET path` with the bootstrap admin key; the body as JSON.
    pub async fn bootstrap_json(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr()))
            .bearer_auth(BOOTSTRAP_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET /health/ready` on the process answers 200.
pub async fn wait_ready(addr: SocketAddr, within: Duration) -> bool {
    let client = reqwest::Client::new();
    eventually(within, || {
        let client = client.clone();
        async move {
            matches!(client.get(format!("http://{addr}/health/ready")).send().await, Ok(r) if r.status() == 200)
        }
    })
    .await
}

/// A response read off a raw TCP connection, for requests no HTTP client library will send
/// (a 100 KB URL, a control byte in a header).
pub struct RawResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Sends `request` as is and reads the answer until the server closes the connection (send
/// `Connection: close`).
pub async fn raw_request(address: &str, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

impl RawResponse {
    /// Asserts a problem+json error, as [`assert_problem`] does, and returns its body.
    pub fn assert_problem(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "status");
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/problem+json"),
            "content type"
        );
        let body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {:?}", String::from_utf8_lossy(&self.body));
        });
        assert_eq!(body["code"], code, "problem code in {body}");
        assert_eq!(body["status"], status);
        let id = body["request_id"].as_str().expect("request id in the body");
        assert_eq!(
            self.headers.get("x-request-id").map(String::as_str),
            Some(id)
        );
        body
    }
}

/// moto (the AWS wire protocols, PyPI `moto[server]`; scripts/test installs it): a customer's
/// bucket for KB bundles and a whole AWS account for scans.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Moto {
    pub async fn start() -> Self {
        with_free_port(|port| async move {
            let mut child = std::process::Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // Without this moto invents ~1,300 public AMIs in every region.
                .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect(
                    "moto_server is installed (pip install 'moto[server]'; scripts/test does it)",
                );
            let up = eventually(Duration::from_secs(20), || {
                let exited = child.try_wait().unwrap().is_some();
                async move {
                    exited
                        || tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .is_ok()
                }
            })
            .await;
            // Exited: another test took the port first.
            let alive = child.try_wait().unwrap().is_none();
            let moto = Self { child, port };
            (up && alive).then_some(moto)
        })
        .await
    }
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener that accepts connections and never answers: an AWS endpoint whose calls hang
/// until the caller gives up. Counts connections accepted and connections the caller closed.
pub struct BlackHole {
    port: u16,
    pub accepted: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
}

impl BlackHole {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    // Read the request and beyond; 0 bytes means the client closed.
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            accepted,
            closed,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Asks the chat one question as JSON with `key` and returns the answer (the request must succeed).
pub async fn ask_json(app: &TestApp, key: &str, question: &str) -> serde_json::Value {
    let response = app
        .post_as("/api/v1/chat", key)
        .json(&serde_json::json!({ "question": question }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{question}");
    response.json().await.unwrap()
}
