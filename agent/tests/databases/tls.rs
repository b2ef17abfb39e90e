//! TLS to the databases, checked against real servers: what each mode encrypts, what it
//! verifies, and that nothing above `prefer` ever falls back to plaintext.
//!
//! PostgreSQL: the local server (Debian enables TLS with its self-signed "snakeoil" certificate)
//! shows what `disable` / `prefer` / `require` do on the wire (`pg_stat_ssl`); certificate checks
//! need a certificate we control, so a small proxy answers PostgreSQL's `SSLRequest` with our own
//! certificate and forwards the decrypted stream to the local server (or refuses TLS, to stand
//! for a server without it). MySQL negotiates TLS inside its handshake, so a private MariaDB is
//! started with our certificates; the shared MariaDB (TLS off) stands for a server without TLS.

use crate::support::*;
use ferry_agent::connectivity::test;
use ferry_agent::sync::{mysql, postgres};
use ferry_common::secret::Secret;
use mysql_async::prelude::Queryable;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A CA, a server certificate it signed for `names`, and an unrelated CA.
struct Certs {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl Certs {
    fn new(names: &[&str]) -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let server =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?
                .signed_by(&key, &issuer)?;
        let mut other_params = CertificateParams::new(Vec::<String>::new())?;
        other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other = other_params.self_signed(&KeyPair::generate()?)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        std::fs::write(dir.path().join("server.pem"), server.pem())?;
        std::fs::write(dir.path().join("server.key"), key.serialize_pem())?;
        std::fs::write(dir.path().join("other-ca.pem"), other.pem())?;
        Ok(Self {
            dir,
            ca_pem: ca.pem(),
        })
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(self.dir.path().join("server.pem"))?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join("server.key"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// PostgreSQL's `SSLRequest` and `GSSENCRequest` codes.
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

/// A PostgreSQL front: TLS with our certificate (or "no TLS here"), then the local server.
struct PgFront {
    addr: SocketAddr,
    tls_sessions: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgFront {
    async fn start(acceptor: Option<TlsAcceptor>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tls_sessions = Arc::new(AtomicUsize::new(0));
        let counted = tls_sessions.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let _ = Self::serve(client, acceptor, counted).await;
                });
            }
        });
        Ok(Self {
            addr,
            tls_sessions,
            task,
        })
    }

    async fn serve(
        mut client: TcpStream,
        acceptor: Option<TlsAcceptor>,
        counted: Arc<AtomicUsize>,
    ) -> std::io::Result<()> {
        loop {
            let mut head = [0u8; 8];
            client.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if len == 8 && code == SSL_REQUEST {
                if let Some(acceptor) = &acceptor {
                    client.write_all(b"S").await?;
                    let mut tls = acceptor.accept(client).await?;
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut server = TcpStream::connect("127.0.0.1:5432").await?;
                    tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
                    return Ok(());
                }
                client.write_all(b"N").await?;
            } else if len == 8 && code == GSS_REQUEST {
                client.write_all(b"N").await?;
            } else {
                let mut server = TcpStream::connect("127.0.0.1:5432").await?;
                server.write_all(&head).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                return Ok(());
            }
        }
    }

    fn url(&self, params: &str) -> String {
        format!(
            "jdbc:postgresql://127.0.0.1:{}/test?{params}",
            self.addr.port()
        )
    }
}

async fn pg(url: &str) -> Result<tokio_postgres::Client, String> {
    postgres::connect(url, PG_USER, &Secret::default()).await
}

/// Whether the server sees this session as encrypted.
async fn pg_encrypted(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

fn must_fail<T>(what: &str, r: Result<T, String>) -> String {
    match r {
        Ok(_) => panic!("{what}: connected, but it had to be refused"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_modes_encrypt_as_asked_on_the_local_server() -> anyhow::Result<()> {
    let base = "jdbc:postgresql://127.0.0.1:5432/test";
    let admin = pg(&format!("{base}?sslmode=disable"))
        .await
        .map_err(anyhow::Error::msg)?;
    let server_tls = admin
        .query_one("SHOW ssl", &[])
        .await?
        .try_get::<_, String>(0)?
        == "on";
    assert!(!pg_encrypted(&admin).await?, "sslmode=disable encrypted");

    let prefer = pg(base).await.map_err(anyhow::Error::msg)?;
    assert_eq!(
        pg_encrypted(&prefer).await?,
        server_tls,
        "the default (prefer) must encrypt exactly when the server offers TLS"
    );
    let require = pg(&format!("{base}?sslmode=require")).await;
    if server_tls {
        let require = require.map_err(anyhow::Error::msg)?;
        assert!(pg_encrypted(&require).await?);
        // The local certificate is not signed by a CA we give: verification fails.
        let certs = Certs::new(&["127.0.0.1"])?;
        let e = must_fail(
            "verify-ca against a certificate of another CA",
            pg(&format!(
                "{base}?sslmode=verify-ca&sslrootcert={}",
                certs.path("ca.pem")
            ))
            .await,
        );
        assert!(e.contains("certificate"), "{e}");
    } else {
        println!("local PostgreSQL has ssl=off: only checking that require is refused");
        must_fail("require against a server without TLS", require);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_certificates_are_verified() -> anyhow::Result<()> {
    let certs = Certs::new(&["localhost", "127.0.0.1"])?;
    let front = PgFront::start(Some(certs.acceptor()?)).await?;
    let ca = certs.path("ca.pem");

    // A trusted chain naming the address: verify-full connects, over TLS.
    let before = front.tls_sessions.load(Ordering::SeqCst);
    let c = pg(&front.url(&format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .map_err(anyhow::Error::msg)?;
    c.query_one("SELECT 1", &[]).await?;
    assert_eq!(front.tls_sessions.load(Ordering::SeqCst), before + 1);
    // pgjdbc's `ssl=true` is verify-full too.
    pg(&front.url(&format!("ssl=true&sslrootcert={ca}")))
        .await
        .map_err(anyhow::Error::msg)?;

    // The same CA given inline by a catalog data source (percent-encoded in the URL).
    let conn = ferry_common::datasource::DbConnection {
        host: "127.0.0.1".into(),
        port: front.addr.port(),
        database: "test".into(),
        username: PG_USER.into(),
        sslmode: Some("verify-full".into()),
        sslrootcert: Some(certs.ca_pem.clone()),
        ..Default::default()
    };
    let url = ferry_common::job::JdbcUrl::of(ferry_common::job::DbKind::Postgresql, &conn);
    pg(&url).await.map_err(anyhow::Error::msg)?;

    // Another CA: refused at verify-ca and verify-full, and `require` with that root too
    // (libpq: a root certificate turns require into verify-ca).
    let other = certs.path("other-ca.pem");
    for mode in ["verify-ca", "verify-full", "require"] {
        let e = must_fail(
            mode,
            pg(&front.url(&format!("sslmode={mode}&sslrootcert={other}"))).await,
        );
        assert!(e.contains("certificate"), "{mode}: {e}");
    }
    // Without a root the certificate is only checked from verify-ca up.
    pg(&front.url("sslmode=require"))
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_host_names_are_checked_only_by_verify_full() -> anyhow::Result<()> {
    let certs = Certs::new(&["db.example.com"])?;
    let front = PgFront::start(Some(certs.acceptor()?)).await?;
    let ca = certs.path("ca.pem");
    let e = must_fail(
        "verify-full with a certificate for another name",
        pg(&front.url(&format!("sslmode=verify-full&sslrootcert={ca}"))).await,
    );
    assert!(e.contains("certificate"), "{e}");
    pg(&front.url(&format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_never_falls_back_to_plaintext_above_prefer() -> anyhow::Result<()> {
    let certs = Certs::new(&["127.0.0.1"])?;
    let plain = PgFront::start(None).await?;
    let ca = certs.path("ca.pem");
    for params in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("ssl=true&sslrootcert={ca}"),
    ] {
        let e = must_fail(&params, pg(&plain.url(&params)).await);
        assert!(e.contains("TLS"), "{params}: {e}");
    }
    let c = pg(&plain.url("sslmode=prefer"))
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(!pg_encrypted(&c).await?);
    Ok(())
}

/// A MariaDB of our own with TLS from `certs`, on a free port; stopped on drop.
struct TlsMariadb {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

impl TlsMariadb {
    /// `None` (with the reason printed) where MariaDB's programs are not installed.
    async fn start(certs: &Certs) -> anyhow::Result<Option<Self>> {
        let (Some(install), Some(server)) = (find("mariadb-install-db"), find("mariadbd")) else {
            println!(
                "SKIPPED: mariadb-install-db / mariadbd not installed (apt install mariadb-server)"
            );
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let out = std::process::Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg("--user=root")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg("--user=root")
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=8M")
            .arg(format!("--ssl-ca={}", certs.path("ca.pem")))
            .arg(format!("--ssl-cert={}", certs.path("server.pem")))
            .arg(format!("--ssl-key={}", certs.path("server.key")))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let db = Self {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..300 {
            if mysql::connect(
                &db.url("sslMode=DISABLED"),
                MY_USER,
                &Secret::default(),
                &[],
            )
            .await
            .is_ok()
            {
                return Ok(Some(db));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(db._dir.path().join("error.log")).unwrap_or_default();
        anyhow::bail!("the private MariaDB did not start within 30 s: {log}")
    }

    fn url(&self, params: &str) -> String {
        format!("jdbc:mysql://127.0.0.1:{}/mysql?{params}", self.port)
    }
}

async fn my(url: &str) -> Result<mysql_async::Conn, String> {
    mysql::connect(url, MY_USER, &Secret::default(), &[]).await
}

/// The session's TLS version, empty when it is not encrypted.
async fn my_tls(conn: &mut mysql_async::Conn) -> anyhow::Result<String> {
    let row: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await?;
    Ok(row.map(|(_, v)| v).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_certificates_are_verified() -> anyhow::Result<()> {
    let certs = Certs::new(&["localhost", "127.0.0.1"])?;
    let Some(db) = TlsMariadb::start(&certs).await? else {
        return Ok(());
    };
    let ca = certs.path("ca.pem");
    for params in [
        format!("sslMode=VERIFY_IDENTITY&sslrootcert={ca}"),
        format!("sslMode=verify-full&serverSslCert={ca}"),
        format!("useSSL=true&requireSSL=true&verifyServerCertificate=true&sslca={ca}"),
        "sslMode=REQUIRED".to_string(),
        // The default (preferred) encrypts when the server offers TLS.
        String::new(),
    ] {
        let mut c = my(&db.url(&params)).await.map_err(anyhow::Error::msg)?;
        assert!(!my_tls(&mut c).await?.is_empty(), "{params}: not encrypted");
    }
    let mut plain = my(&db.url("useSSL=false"))
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(my_tls(&mut plain).await?, "", "useSSL=false encrypted");

    let other = certs.path("other-ca.pem");
    for params in [
        format!("sslMode=VERIFY_CA&sslrootcert={other}"),
        format!("sslMode=VERIFY_IDENTITY&sslrootcert={other}"),
    ] {
        let e = must_fail(&params, my(&db.url(&params)).await);
        assert!(e.to_lowercase().contains("certificate"), "{params}: {e}");
    }

    // The connectivity test names the failure class and says how the session is protected.
    let cfg = |mode: &str, root: &str| {
        serde_json::json!({"type": "mysql", "host": "127.0.0.1", "port": db.port,
            "database": "mysql", "username": MY_USER, "sslmode": mode, "sslrootcert": root})
        .to_string()
    };
    let ok = test("1".into(), &cfg("verify-full", &certs.ca_pem), "", "").await;
    assert!(ok.reachable, "{}", ok.message);
    assert!(ok.message.contains("encrypted, TLS"), "{}", ok.message);
    let bad = test("2".into(), &cfg("verify-ca", &other), "", "").await;
    assert_eq!(bad.error_kind, "tls", "{}", bad.message);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_never_falls_back_to_plaintext_above_prefer() -> anyhow::Result<()> {
    // The shared MariaDB runs without TLS.
    let mut admin = my("jdbc:mysql://127.0.0.1:3306/test?sslMode=DISABLED")
        .await
        .map_err(anyhow::Error::msg)?;
    let have: Option<(String, String)> =
        admin.query_first("SHOW VARIABLES LIKE 'have_ssl'").await?;
    if have.is_some_and(|(_, v)| v == "YES") {
        println!(
            "SKIPPED: the local MariaDB has TLS enabled; fallback is checked where it has not"
        );
        return Ok(());
    }
    let certs = Certs::new(&["127.0.0.1"])?;
    let ca = certs.path("ca.pem");
    for params in [
        "sslMode=REQUIRED".to_string(),
        "useSSL=true&requireSSL=true".to_string(),
        format!("sslMode=VERIFY_CA&sslrootcert={ca}"),
        format!("sslMode=VERIFY_IDENTITY&sslrootcert={ca}"),
    ] {
        let e = must_fail(
            &params,
            my(&format!("jdbc:mysql://127.0.0.1:3306/test?{params}")).await,
        );
        assert!(e.contains("SSL"), "{params}: {e}");
    }
    let mut c = my("jdbc:mysql://127.0.0.1:3306/test")
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(my_tls(&mut c).await?, "");

    // A connectivity test with require names TLS as the cause.
    let cfg = serde_json::json!({"type": "mysql", "host": "127.0.0.1", "port": 3306,
        "database": "test", "username": MY_USER, "sslmode": "require"})
    .to_string();
    let r = test("1".into(), &cfg, "", "").await;
    assert_eq!(r.error_kind, "tls", "{}", r.message);
    let ok = test(
        "2".into(),
        &serde_json::json!({"type": "postgresql", "host": "127.0.0.1", "port": 5432,
        "database": "test", "username": PG_USER, "sslmode": "disable"})
        .to_string(),
        "",
        "",
    )
    .await;
    assert!(ok.message.contains("not encrypted"), "{}", ok.message);
    Ok(())
}
