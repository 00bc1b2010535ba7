//! A local fake of the AWS Marketplace Metering Service (`RegisterUsage`, `MeterUsage`).
//!
//! It speaks the wire protocol of the real service (AWS JSON 1.1, see `docs/MARKETPLACE.md`
//! and `docs/FAKE-MARKETPLACE.md`), so the product's real `aws-sdk-marketplacemetering` client can
//! be pointed at it with `AWS_ENDPOINT_URL_MARKETPLACE_METERING=<endpoint>`.
//!
//! * One "task" (ECS task / EKS pod) is identified by the access key id of the SigV4
//!   `Authorization` header (`Credential=<AKID>/...`); the signature itself is not verified.
//! * Usage is kept per (task, dimension, hour); the hour is `Timestamp` rounded down.
//! * Failure modes (not entitled, throttling, 5xx, down, "accepted but never answered") can be
//!   switched at any time from the test.
//! * The server stops when the [`FakeMarketplace`] is dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, TimeZone, Timelike, Utc};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The RSA private key (2048-bit, PKCS#8) the fake signs RegisterUsage tokens with.
pub const TEST_PRIVATE_KEY_PEM: &str = include_str!("../fixtures/marketplace-test-key.pem");
/// The matching public key (SPKI), what AWS would give the seller with the product code.
pub const TEST_PUBLIC_KEY_PEM: &str = include_str!("../fixtures/marketplace-test-key.pub.pem");

/// `X-Amz-Target` of RegisterUsage.
pub const TARGET_REGISTER_USAGE: &str = "AWSMPMeteringService.RegisterUsage";
/// `X-Amz-Target` of MeterUsage.
pub const TARGET_METER_USAGE: &str = "AWSMPMeteringService.MeterUsage";

/// Oldest accepted usage, relative to now (AWS: "up to six hours in the past").
pub const MAX_RECORD_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(6);

/// How a successful `DryRun` MeterUsage is answered (AWS leaves this unconfirmed).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DryRunReply {
    /// HTTP 200 with a (fresh, unrecorded) `MeteringRecordId`.
    #[default]
    Ok,
    /// HTTP 412 with `{"__type": "DryRunOperation", ...}`, as EC2-style dry runs do.
    DryRunOperationError,
}

/// Whether a `ClientToken` is remembered per task or across all tasks (AWS leaves this
/// unconfirmed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenScope {
    /// Tokens are per task: a retry of the same token from *another* task is a new request for
    /// that task (and bills again). The pessimistic default.
    #[default]
    PerTask,
    /// Tokens are global: the same token from another task with the same parameters returns the
    /// original `MeteringRecordId`; with different parameters it is `IdempotencyConflictException`.
    Global,
}

/// One usage allocation of a stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub quantity: i64,
    /// (key, value) pairs, in request order.
    pub tags: Vec<(String, String)>,
}

/// A usage record the fake accepted (what AWS would bill).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterRecord {
    /// Access key id of the caller (stands for the ECS task / EKS pod).
    pub task: String,
    pub product_code: String,
    pub dimension: String,
    /// `Timestamp` rounded down to the hour.
    pub hour: DateTime<Utc>,
    /// The exact `Timestamp` of the first request that created the record.
    pub timestamp: DateTime<Utc>,
    pub quantity: i64,
    pub allocations: Vec<Allocation>,
    pub metering_record_id: String,
    /// `ClientToken` of the request that created the record (the SDK always sends one).
    pub client_token: Option<String>,
}

/// A running fake Metering Service. Dropping it stops the server and closes every connection.
pub struct FakeMarketplace {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    product_code: String,
    dimensions: Vec<String>,
    encoding_key: jsonwebtoken::EncodingKey,
    down: AtomicBool,
    dropped_connections: AtomicUsize,
    /// Seconds added to the system clock (the product under test is shifted the same way).
    clock_offset: AtomicI64,
    shutdown: CancellationToken,
    state: Mutex<Inner>,
}

struct Inner {
    entitled: bool,
    platform_supported: bool,
    throttle_next: usize,
    fail_next: usize,
    hang_next: usize,
    dry_run_reply: DryRunReply,
    expected_key_version: i64,
    token_scope: TokenScope,
    records: Vec<MeterRecord>,
    /// (scope, token) → (request fingerprint, metering record id). Scope is the task or "".
    tokens: HashMap<(String, String), (Value, String)>,
    calls: HashMap<String, usize>,
}

impl FakeMarketplace {
    /// Starts the fake on `127.0.0.1:<random port>` for one product and its dimensions.
    pub async fn start(product_code: &str, dimensions: &[&str]) -> FakeMarketplace {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(addr, product_code, dimensions)
            .await
            .expect("bind fake marketplace")
    }

    /// Starts the fake on a chosen address (`examples/fake_marketplace.rs` serves other
    /// containers on `0.0.0.0:8080`).
    pub async fn start_on(
        addr: SocketAddr,
        product_code: &str,
        dimensions: &[&str],
    ) -> io::Result<FakeMarketplace> {
        let encoding_key = jsonwebtoken::EncodingKey::from_rsa_pem(TEST_PRIVATE_KEY_PEM.as_bytes())
            .expect("test private key parses");
        let shared = Arc::new(Shared {
            product_code: product_code.to_owned(),
            dimensions: dimensions.iter().map(|d| (*d).to_owned()).collect(),
            encoding_key,
            down: AtomicBool::new(false),
            dropped_connections: AtomicUsize::new(0),
            clock_offset: AtomicI64::new(0),
            shutdown: CancellationToken::new(),
            state: Mutex::new(Inner {
                entitled: true,
                platform_supported: true,
                throttle_next: 0,
                fail_next: 0,
                hang_next: 0,
                dry_run_reply: DryRunReply::default(),
                expected_key_version: 1,
                token_scope: TokenScope::default(),
                records: Vec::new(),
                tokens: HashMap::new(),
                calls: HashMap::new(),
            }),
        });
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/", post(handle))
            .with_state(shared.clone());
        let listener = FakeListener {
            inner: listener,
            shared: shared.clone(),
        };
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeMarketplace {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL_MARKETPLACE_METERING` or `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM (SPKI) of the public key that verifies RegisterUsage signatures.
    pub fn public_key_pem(&self) -> String {
        TEST_PUBLIC_KEY_PEM.to_owned()
    }

    /// The product code the fake accepts.
    pub fn product_code(&self) -> &str {
        &self.shared.product_code
    }

    /// `false`: both operations answer `CustomerNotEntitledException`.
    pub fn set_entitled(&self, entitled: bool) {
        self.shared.lock().entitled = entitled;
    }

    /// `false`: RegisterUsage answers `PlatformNotSupportedException` (as on plain Docker).
    pub fn set_platform_supported(&self, supported: bool) {
        self.shared.lock().platform_supported = supported;
    }

    /// The next `n` calls (either operation) answer `ThrottlingException` (HTTP 400).
    pub fn throttle_next(&self, n: usize) {
        self.shared.lock().throttle_next = n;
    }

    /// The next `n` calls (either operation) answer `InternalServiceErrorException` (HTTP 500).
    pub fn fail_next(&self, n: usize) {
        self.shared.lock().fail_next = n;
    }

    /// While down, new TCP connections are accepted and closed at once without reading a byte,
    /// and open keep-alive connections are closed when their next request arrives. No request is
    /// answered, so nothing is counted in [`calls`](Self::calls); see
    /// [`dropped_connections`](Self::dropped_connections). The SDK reports this as
    /// `SdkError::DispatchFailure` with `is_io()`, which its retry strategy treats as transient.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` MeterUsage calls that are not answered by `throttle_next`/`fail_next` are
    /// processed exactly as normal (usage recorded, tokens remembered) but the response is never
    /// sent: the handler waits until the fake is dropped. Simulates "AWS accepted, the client
    /// never learned".
    pub fn hang_after_accept_next(&self, n: usize) {
        self.shared.lock().hang_next = n;
    }

    /// How a valid `DryRun=true` MeterUsage is answered. Default [`DryRunReply::Ok`].
    pub fn set_dry_run_reply(&self, reply: DryRunReply) {
        self.shared.lock().dry_run_reply = reply;
    }

    /// The `PublicKeyVersion` RegisterUsage accepts (default 1); any other →
    /// `InvalidPublicKeyVersionException`.
    pub fn set_expected_key_version(&self, version: i32) {
        self.shared.lock().expected_key_version = i64::from(version);
    }

    /// Whether `ClientToken`s are remembered per task (default) or globally.
    pub fn set_token_scope(&self, scope: TokenScope) {
        self.shared.lock().token_scope = scope;
    }

    /// Shifts the fake's clock (the 6-hour window, the current hour, `iat`) by `offset`: give it
    /// the same offset as the product's `CO_TEST_CLOCK_OFFSET_SECONDS`.
    pub fn set_clock_offset(&self, offset: chrono::TimeDelta) {
        self.shared
            .clock_offset
            .store(offset.num_seconds(), Ordering::SeqCst);
    }

    /// The fake's "now" (system clock plus [`set_clock_offset`](Self::set_clock_offset)).
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    /// Stores a record as if `task` had already reported `quantity` of `dimension` for the hour
    /// of `hour` without a `ClientToken` (an earlier release, another tool): a later call for
    /// that task and hour with another quantity gets `DuplicateRequestException`.
    pub fn preload_record(&self, task: &str, dimension: &str, hour: DateTime<Utc>, quantity: i64) {
        let record = MeterRecord {
            task: task.to_owned(),
            product_code: self.shared.product_code.clone(),
            dimension: dimension.to_owned(),
            hour: floor_hour(hour),
            timestamp: hour,
            quantity,
            allocations: Vec::new(),
            metering_record_id: uuid::Uuid::new_v4().to_string(),
            client_token: None,
        };
        self.shared.lock().records.push(record);
    }

    /// Every stored usage record, in the order they were created.
    pub fn records(&self) -> Vec<MeterRecord> {
        self.shared.lock().records.clone()
    }

    /// Sum of the quantities of all stored records of `dimension` (all tasks, all hours): what
    /// AWS would bill.
    pub fn total(&self, dimension: &str) -> i64 {
        self.shared
            .lock()
            .records
            .iter()
            .filter(|r| r.dimension == dimension)
            .map(|r| r.quantity)
            .sum()
    }

    /// Requests received for `target`, failures included. `target` is either the full
    /// `X-Amz-Target` (`AWSMPMeteringService.MeterUsage`) or the bare operation (`MeterUsage`).
    pub fn calls(&self, target: &str) -> usize {
        let op = target.rsplit('.').next().unwrap_or(target);
        self.shared.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// RegisterUsage requests received, failures included.
    pub fn register_calls(&self) -> usize {
        self.calls("RegisterUsage")
    }

    /// MeterUsage requests received, failures included.
    pub fn meter_calls(&self) -> usize {
        self.calls("MeterUsage")
    }

    /// Connections closed unanswered because the fake was down.
    pub fn dropped_connections(&self) -> usize {
        self.shared.dropped_connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeMarketplace {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.server.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::TimeDelta::seconds(self.clock_offset.load(Ordering::SeqCst))
    }
}

// ---------------------------------------------------------------------------------------------
// Transport: a listener that can drop connections (down mode) and closes them all on drop.

struct FakeListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for FakeListener {
    type Io = FakeIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                continue;
            };
            if self.shared.down.load(Ordering::SeqCst) {
                self.shared
                    .dropped_connections
                    .fetch_add(1, Ordering::SeqCst);
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let closed = Box::pin(self.shared.shutdown.clone().cancelled_owned());
            let io = FakeIo {
                inner: stream,
                shared: self.shared.clone(),
                closed,
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that reads EOF and refuses writes once the fake is down or dropped.
struct FakeIo {
    inner: TcpStream,
    shared: Arc<Shared>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl FakeIo {
    fn is_closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.closed.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for FakeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_closed(cx) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && self.shared.down.load(Ordering::SeqCst)
        {
            // A request arrived on a keep-alive connection while down: close it unanswered.
            self.shared
                .dropped_connections
                .fetch_add(1, Ordering::SeqCst);
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake marketplace is down",
            )));
        }
        res
    }
}

impl AsyncWrite for FakeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_closed(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol.

struct AwsError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> AwsError {
    AwsError {
        status,
        code,
        message: message.into(),
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> AwsError {
    err(StatusCode::BAD_REQUEST, code, message)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
    resp
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            json!({ "__type": self.code, "message": self.message }),
        )
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let op = match target.as_str() {
        TARGET_REGISTER_USAGE => "RegisterUsage",
        TARGET_METER_USAGE => "MeterUsage",
        _ => "",
    };
    *shared.lock().calls.entry(op.to_owned()).or_default() += 1;

    let (result, hang) = process(&shared, op, &headers, &body);
    if hang {
        // The usage is recorded; the client never gets the answer.
        shared.shutdown.cancelled().await;
    }
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

/// Returns the answer and whether to withhold it (hang_after_accept).
fn process(
    shared: &Shared,
    op: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (Result<Value, AwsError>, bool) {
    if op.is_empty() {
        return (
            Err(bad(
                "UnknownOperationException",
                "missing or unknown X-Amz-Target",
            )),
            false,
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-amz-json-1.1") {
        return (
            Err(bad(
                "SerializationException",
                format!("unexpected Content-Type {content_type:?}"),
            )),
            false,
        );
    }
    let task = match task_of(headers) {
        Ok(task) => task,
        Err(e) => return (Err(e), false),
    };
    let input: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return (
                Err(bad("SerializationException", "body is not a JSON object")),
                false,
            );
        }
    };

    let mut inner = shared.lock();
    if inner.throttle_next > 0 {
        inner.throttle_next -= 1;
        return (Err(bad("ThrottlingException", "Rate exceeded")), false);
    }
    if inner.fail_next > 0 {
        inner.fail_next -= 1;
        return (
            Err(err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServiceErrorException",
                "An internal error has occurred",
            )),
            false,
        );
    }
    match op {
        "RegisterUsage" => (register_usage(shared, &inner, &input), false),
        _ => {
            let hang = inner.hang_next > 0;
            if hang {
                inner.hang_next -= 1;
            }
            (meter_usage(shared, &mut inner, &task, &input), hang)
        }
    }
}

/// The access key id of the SigV4 `Authorization` header: the caller's "task".
fn task_of(headers: &HeaderMap) -> Result<String, AwsError> {
    let missing = || {
        err(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(missing)?;
    let credential = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("Credential="))
        .ok_or_else(|| {
            err(
                StatusCode::FORBIDDEN,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential' parameter",
            )
        })?;
    let akid = credential.split('/').next().unwrap_or("");
    if akid.is_empty() {
        return Err(err(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid",
        ));
    }
    Ok(akid.to_owned())
}

fn validation(message: impl Into<String>) -> AwsError {
    bad("ValidationException", message)
}

fn req_str<'a>(input: &'a Map<String, Value>, field: &str) -> Result<&'a str, AwsError> {
    match input.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
             Member must not be null"
        ))),
        Some(_) => Err(bad(
            "SerializationException",
            format!("{field} must be a string"),
        )),
    }
}

fn opt_int(input: &Map<String, Value>, field: &str) -> Result<Option<i64>, AwsError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            bad(
                "SerializationException",
                format!("{field} must be an integer"),
            )
        }),
    }
}

fn check_product_code(shared: &Shared, input: &Map<String, Value>) -> Result<String, AwsError> {
    let code = req_str(input, "ProductCode")?;
    if code != shared.product_code {
        return Err(bad(
            "InvalidProductCodeException",
            format!("The product code {code} is invalid"),
        ));
    }
    Ok(code.to_owned())
}

fn not_entitled() -> AwsError {
    bad(
        "CustomerNotEntitledException",
        "The customer is not subscribed to the product",
    )
}

fn register_usage(
    shared: &Shared,
    inner: &Inner,
    input: &Map<String, Value>,
) -> Result<Value, AwsError> {
    let product_code = check_product_code(shared, input)?;
    let version = opt_int(input, "PublicKeyVersion")?.ok_or_else(|| {
        validation(
            "1 validation error detected: Value null at 'publicKeyVersion' failed to satisfy \
             constraint: Member must not be null",
        )
    })?;
    if version < 1 {
        return Err(validation(format!(
            "1 validation error detected: Value '{version}' at 'publicKeyVersion' failed to \
             satisfy constraint: Member must have value greater than or equal to 1"
        )));
    }
    let nonce = match input.get("Nonce") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 255 => Some(s.clone()),
        Some(Value::String(_)) => {
            return Err(validation(
                "1 validation error detected: Value at 'nonce' failed to satisfy constraint: \
                 Member must have length less than or equal to 255",
            ));
        }
        Some(_) => return Err(bad("SerializationException", "Nonce must be a string")),
    };
    if !inner.platform_supported {
        return Err(bad(
            "PlatformNotSupportedException",
            "RegisterUsage is supported only on Amazon ECS, Amazon EKS and AWS Fargate",
        ));
    }
    if !inner.entitled {
        return Err(not_entitled());
    }
    if version != inner.expected_key_version {
        return Err(bad(
            "InvalidPublicKeyVersionException",
            format!("Public key version {version} is invalid"),
        ));
    }
    let mut claims = Map::new();
    claims.insert("productCode".into(), json!(product_code));
    claims.insert("publicKeyVersion".into(), json!(version));
    if let Some(nonce) = nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    claims.insert("iat".into(), json!(shared.now().timestamp()));
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    let token = jsonwebtoken::encode(&header, &Value::Object(claims), &shared.encoding_key)
        .map_err(|e| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServiceErrorException",
                format!("signing failed: {e}"),
            )
        })?;
    Ok(json!({ "Signature": token }))
}

fn tag_ok(s: &str, max: usize) -> bool {
    let len = s.chars().count();
    (1..=max).contains(&len)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " +-=._:/@".contains(c))
}

fn parse_allocations(
    input: &Map<String, Value>,
    quantity: i64,
) -> Result<Option<Vec<Allocation>>, AwsError> {
    let list = match input.get("UsageAllocations") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(bad(
                "SerializationException",
                "UsageAllocations must be a list",
            ));
        }
    };
    let invalid = |m: &str| bad("InvalidUsageAllocationsException", m.to_owned());
    if list.is_empty() || list.len() > 2500 {
        return Err(invalid(
            "UsageAllocations must hold between 1 and 2500 items",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut seen_tag_sets = std::collections::HashSet::new();
    for item in list {
        let item = item
            .as_object()
            .ok_or_else(|| invalid("each UsageAllocation must be an object"))?;
        let q = opt_int(item, "AllocatedUsageQuantity")?
            .ok_or_else(|| invalid("AllocatedUsageQuantity is required"))?;
        if q < 0 {
            return Err(invalid("AllocatedUsageQuantity must be >= 0"));
        }
        let mut tags = Vec::new();
        if let Some(raw) = item.get("Tags").filter(|v| !v.is_null()) {
            let raw = raw
                .as_array()
                .ok_or_else(|| bad("InvalidTagException", "Tags must be a list"))?;
            if raw.is_empty() || raw.len() > 5 {
                return Err(bad(
                    "InvalidTagException",
                    "The number of tags must be between 1 and 5",
                ));
            }
            for tag in raw {
                let key = tag.get("Key").and_then(Value::as_str).unwrap_or("");
                let value = tag.get("Value").and_then(Value::as_str).unwrap_or("");
                if !tag_ok(key, 100) || !tag_ok(value, 256) {
                    return Err(bad(
                        "InvalidTagException",
                        format!("The tag {key:?}={value:?} is invalid"),
                    ));
                }
                if tags.iter().any(|(k, _): &(String, String)| k == key) {
                    return Err(bad(
                        "InvalidTagException",
                        format!("The tag key {key:?} is repeated"),
                    ));
                }
                tags.push((key.to_owned(), value.to_owned()));
            }
        }
        let mut sorted = tags.clone();
        sorted.sort();
        if !seen_tag_sets.insert(sorted) {
            return Err(invalid(
                "each UsageAllocation must have a unique set of tags",
            ));
        }
        out.push(Allocation { quantity: q, tags });
    }
    let sum: i64 = out.iter().map(|a| a.quantity).sum();
    if sum != quantity {
        return Err(invalid(&format!(
            "The sum of AllocatedUsageQuantity ({sum}) does not equal UsageQuantity ({quantity})"
        )));
    }
    Ok(Some(out))
}

fn meter_usage(
    shared: &Shared,
    inner: &mut Inner,
    task: &str,
    input: &Map<String, Value>,
) -> Result<Value, AwsError> {
    if !inner.entitled {
        return Err(not_entitled());
    }
    let product_code = check_product_code(shared, input)?;
    let dimension = req_str(input, "UsageDimension")?.to_owned();
    if !shared.dimensions.contains(&dimension) {
        return Err(bad(
            "InvalidUsageDimensionException",
            format!(
                "The usage dimension {dimension} does not match one of the product's dimensions"
            ),
        ));
    }
    let ts_secs = match input.get("Timestamp") {
        None | Some(Value::Null) => {
            return Err(validation(
                "1 validation error detected: Value null at 'timestamp' failed to satisfy \
                 constraint: Member must not be null",
            ));
        }
        Some(v) => v.as_f64().ok_or_else(|| {
            bad(
                "SerializationException",
                "Timestamp must be a number (epoch seconds)",
            )
        })?,
    };
    let millis = (ts_secs * 1000.0).round() as i64;
    let timestamp = Utc
        .timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| bad("TimestampOutOfBoundsException", "Timestamp is out of range"))?;
    let now = shared.now();
    let hour = floor_hour(timestamp);
    if timestamp < now - MAX_RECORD_AGE || hour > floor_hour(now) {
        return Err(bad(
            "TimestampOutOfBoundsException",
            format!("The timestamp {timestamp} is out of the allowed range"),
        ));
    }
    let quantity = opt_int(input, "UsageQuantity")?.unwrap_or(0);
    if !(0..=i64::from(i32::MAX)).contains(&quantity) {
        return Err(validation(format!(
            "1 validation error detected: Value '{quantity}' at 'usageQuantity' failed to \
             satisfy constraint: Member must have value between 0 and 2147483647"
        )));
    }
    let allocations = parse_allocations(input, quantity)?;
    let client_token = match input.get("ClientToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if (1..=64).contains(&s.chars().count()) => Some(s.clone()),
        Some(_) => {
            return Err(validation(
                "1 validation error detected: Value at 'clientToken' failed to satisfy \
                 constraint: Member must have length between 1 and 64",
            ));
        }
    };
    let dry_run = input
        .get("DryRun")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if dry_run {
        return match inner.dry_run_reply {
            DryRunReply::Ok => Ok(json!({ "MeteringRecordId": uuid::Uuid::new_v4().to_string() })),
            DryRunReply::DryRunOperationError => Err(err(
                StatusCode::PRECONDITION_FAILED,
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            )),
        };
    }

    // Idempotency: every parameter except the token itself.
    let fingerprint = json!({
        "ProductCode": product_code,
        "UsageDimension": dimension,
        "TimestampMillis": millis,
        "UsageQuantity": quantity,
        "UsageAllocations": input.get("UsageAllocations").cloned().unwrap_or(Value::Null),
    });
    let token_key = client_token.as_ref().map(|t| {
        let scope = match inner.token_scope {
            TokenScope::PerTask => task.to_owned(),
            TokenScope::Global => String::new(),
        };
        (scope, t.clone())
    });
    if let Some(key) = &token_key
        && let Some((seen, id)) = inner.tokens.get(key)
    {
        if *seen == fingerprint {
            return Ok(json!({ "MeteringRecordId": id }));
        }
        return Err(err(
            StatusCode::CONFLICT,
            "IdempotencyConflictException",
            "The ClientToken is being used for multiple requests",
        ));
    }

    let allocations = allocations.unwrap_or_default();
    let id = match inner
        .records
        .iter()
        .find(|r| r.task == task && r.dimension == dimension && r.hour == hour)
    {
        Some(existing) if existing.quantity == quantity && existing.allocations == allocations => {
            existing.metering_record_id.clone()
        }
        Some(_) => {
            return Err(bad(
                "DuplicateRequestException",
                format!(
                    "A metering record has already been emitted for {dimension} at {hour} with a \
                     different usageQuantity"
                ),
            ));
        }
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            inner.records.push(MeterRecord {
                task: task.to_owned(),
                product_code,
                dimension,
                hour,
                timestamp,
                quantity,
                allocations,
                metering_record_id: id.clone(),
                client_token: client_token.clone(),
            });
            id
        }
    };
    if let Some(key) = token_key {
        inner.tokens.insert(key, (fingerprint, id.clone()));
    }
    Ok(json!({ "MeteringRecordId": id }))
}

/// `t` rounded down to the hour.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(t)
}
