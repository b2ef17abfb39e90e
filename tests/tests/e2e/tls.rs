//! TLS with rustls on every connection to the scheduler: agents and the CLI talk over `https://`
//! with a private CA; an `https://` address never falls back to plaintext, and a plaintext client
//! gets nothing from a TLS scheduler.

use anyhow::Result;
use ferry_tests::{Cluster, bin};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::process::Command;

/// Writes `ca.pem`, `server.pem`, `server.key` (for localhost) and `other-ca.pem` into `dir`.
fn certificates(dir: &Path) -> Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let server =
        CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&server_key, &issuer)?;
    let mut other_params = CertificateParams::new(Vec::<String>::new())?;
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other_params.self_signed(&KeyPair::generate()?)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("server.pem"), server.pem())?;
    std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;
    std::fs::write(dir.join("other-ca.pem"), other.pem())?;
    Ok(())
}

fn ferry(url: &str, extra: &[&str], args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(bin("ferry")?)
        .arg("--scheduler")
        .arg(url)
        .args(extra)
        .args(args)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn agents_and_cli_speak_tls_and_never_fall_back() -> Result<()> {
    let certs = tempfile::tempdir()?;
    certificates(certs.path())?;
    let p = |n: &str| certs.path().join(n).display().to_string();
    let (cert, key, ca, other) = (
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        p("other-ca.pem"),
    );
    let mut c = Cluster::start_with(&["--tls-cert", &cert, "--tls-key", &key])?;
    assert!(c.url.starts_with("https://localhost:"), "{}", c.url);
    c.client_args = vec!["--ca-cert".into(), ca.clone()];
    let token = c.create_group("rg")?;
    c.start_agent("a1", "rg", &token)?;
    c.wait_online("rg", 1)?;
    let small = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":10}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let path = c.job_file("small.json", small)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &path])?
        .ok()?;
    let run = c.ferry(&["task", "run", "t", "--follow"])?.ok()?;
    assert!(run.stdout.contains("finished: success"), "{}", run.stdout);

    // A plaintext client gets nothing from the TLS port.
    let plain = c.url.replace("https://", "http://");
    let (code, out) = ferry(&plain, &[], &["group", "list"])?;
    assert_ne!(code, 0, "{out}");
    // https with a CA that did not sign the certificate fails; it does not fall back.
    let (code, out) = ferry(&c.url, &["--ca-cert", &other], &["group", "list"])?;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("certificate") || out.contains("Certificate"),
        "{out}"
    );
    // TLS settings with an http:// URL are an error, not silently unused.
    let (code, out) = ferry(&plain, &["--ca-cert", &ca], &["group", "list"])?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("use https://"), "{out}");
    Ok(())
}
