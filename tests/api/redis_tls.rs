//! `REDIS_URL=rediss://…`: Redis over TLS, as production.yaml wires ElastiCache (encryption in
//! transit). The server verifies the certificate against the system's roots (in the image, the
//! distroless CA bundle, which holds the Amazon roots ElastiCache certificates chain to).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{Process, base_env, create_migrated_database, eventually, with_free_port};

/// A throwaway CA and a certificate for `localhost` / 127.0.0.1 signed by it, made with the
/// openssl command line.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    // A CA that signed nothing here: trusting only it must refuse the server.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=other CA",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    /// redis-server with only a TLS port, or `None` when the port was taken meanwhile.
    async fn start(dir: &Path, port: u16) -> Option<Self> {
        let file = |name: &str| dir.join(name).display().to_string();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &file("server.pem"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.pem"),
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let listening = eventually(Duration::from_secs(5), || {
            let exited = child.try_wait().unwrap().is_some();
            async move {
                exited
                    || tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
            }
        })
        .await;
        // An exited server means another process holds the port: the connect above was theirs.
        (listening && child.try_wait().unwrap().is_none()).then_some(Self { child, port })
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis_component(server: &Process) -> String {
    let health: serde_json::Value = reqwest::get(format!("http://{}/health", server.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["components"]["redis"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn rediss_url_connects_over_tls_and_verifies_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let redis = with_free_port(|port| TlsRedis::start(dir.path(), port)).await;
    let db_name = create_migrated_database().await;
    let mut vars = base_env(&db_name);
    vars.insert(
        "REDIS_URL".into(),
        format!("rediss://localhost:{}", redis.port),
    );

    // Trusting the test CA (as the image trusts the Amazon roots): connected.
    let mut trusting = vars.clone();
    trusting.insert(
        "SSL_CERT_FILE".into(),
        dir.path().join("ca.pem").display().to_string(),
    );
    let server = Process::serve(&trusting).await;
    assert!(server.logged("redis connected"));
    let connected = eventually(Duration::from_secs(10), || async {
        redis_component(&server).await == "ok"
    })
    .await;
    assert!(connected, "redis over TLS must be ok");
    drop(server);

    // Trusting another CA only: the certificate is refused, and the server still serves.
    let mut untrusting = vars;
    untrusting.insert(
        "SSL_CERT_FILE".into(),
        dir.path().join("other.pem").display().to_string(),
    );
    // The server tries Redis once before it is ready, so by now that attempt has failed.
    let server = Process::serve(&untrusting).await;
    assert!(server.logged("redis is not reachable at start-up"));
    assert!(!server.logged("redis connected"));
    assert_eq!(redis_component(&server).await, "down");
}
