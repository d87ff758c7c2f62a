//! Readiness probes: one check of an HTTP endpoint, a TCP port or a command, bounded by a timeout.
//!
//! The HTTP check is a minimal HTTP/1.1 GET written by hand (status line only, `Connection:
//! close`): it needs no client pool or body handling, and pulling an HTTP client into the
//! supervisor for one request line would cost more than these few lines. Over HTTPS the same
//! request goes through rustls with `cloudlet_pki::probe_client_config` (the certificate is not
//! verified, as the kubelet's probes). A status 200-399 passes, as in Kubernetes.
//! Probes never change what runs; they only report. The supervisor decides.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::reaper::{ChildExit, Reaper};

/// What a probe checks: the manifest's resolved probe (`cloudlet_spec::Probe`), used as is.
pub use cloudlet_spec::Probe as ProbeCheck;
/// A probe and its timing, defaults applied (`cloudlet_spec::Readiness`), used as is.
pub use cloudlet_spec::Readiness as ProbeSpec;

/// Runs one check; `Err` says why it failed. An exec probe runs with `env` added: the service's
/// own environment, as a Kubernetes exec probe runs in its container's.
pub async fn check(
    probe: &ProbeCheck,
    timeout: Duration,
    env: &BTreeMap<String, String>,
    reaper: &Reaper,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, check_inner(probe, env, reaper)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn check_inner(
    probe: &ProbeCheck,
    env: &BTreeMap<String, String>,
    reaper: &Reaper,
) -> Result<(), String> {
    match probe {
        ProbeCheck::Tcp { host, port } => TcpStream::connect((host.as_str(), *port))
            .await
            .map(drop)
            .map_err(|e| format!("tcp {host}:{port}: {e}")),
        ProbeCheck::Http {
            host,
            port,
            path,
            headers,
            tls,
        } => http_get(host, *port, path, headers, *tls).await,
        ProbeCheck::Exec { command } => exec(command, env, reaper).await,
    }
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &BTreeMap<String, String>,
    tls: bool,
) -> Result<(), String> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("http {host}:{port}: {e}"))?;
    if !tls {
        return http_exchange(tcp, host, port, path, headers).await;
    }
    let config =
        cloudlet_pki::probe_client_config().map_err(|e| format!("https {host}:{port}: {e}"))?;
    // Any name will do: the certificate is not verified. An IP address is sent as no SNI.
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("https {host}:{port}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("https {host}:{port}: TLS handshake: {e}"))?;
    http_exchange(stream, host, port, path, headers).await
}

/// Sends the GET over `stream` and judges the status line.
async fn http_exchange<T: AsyncRead + AsyncWrite + Unpin>(
    mut stream: T,
    host: &str,
    port: u16,
    path: &str,
    headers: &BTreeMap<String, String>,
) -> Result<(), String> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    if !headers.keys().any(|k| k.eq_ignore_ascii_case("user-agent")) {
        req.push_str("User-Agent: cloudlet-probe\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("http {host}:{port}: send: {e}"))?;
    // The status line fits in the first read of any sane server; read up to 1 KiB.
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    while got < buf.len() {
        let n = stream
            .read(&mut buf[got..])
            .await
            .map_err(|e| format!("http {host}:{port}: read: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
        if buf[..got].contains(&b'\n') {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    let status_line = head.lines().next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("http {host}:{port}{path}: not an HTTP answer: {status_line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("http {host}:{port}{path}: status {code}"))
    }
}

async fn exec(
    argv: &[String],
    env: &BTreeMap<String, String>,
    reaper: &Reaper,
) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("exec: empty command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let (child, exit) = reaper
        .spawn(&mut cmd)
        .map_err(|e| format!("exec {program}: {e}"))?;
    // Kill the probe's process group if the timeout drops us first.
    let guard = KillOnDrop(child.id());
    let result = match exit.await {
        Ok(ChildExit::Code(0)) => Ok(()),
        Ok(ChildExit::Code(c)) => Err(format!("exec {program}: exit code {c}")),
        Ok(ChildExit::Signal(s)) => Err(format!("exec {program}: killed by signal {s}")),
        Err(_) => Err(format!("exec {program}: lost track of the process")),
    };
    std::mem::forget(guard);
    result
}

use std::os::unix::process::CommandExt;

#[derive(Debug)]
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::sync::Arc;

    use tokio::net::TcpListener;

    use super::*;

    /// A server on loopback that answers every connection `200 OK` (plain, or over TLS with a
    /// self-signed certificate).
    async fn server(tls: bool) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["service.local".into()]).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                answer(s).await;
                            }
                        }
                        None => answer(tcp).await,
                    }
                });
            }
        });
        port
    }

    async fn answer<T: AsyncRead + AsyncWrite + Unpin>(mut s: T) {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npong")
            .await;
        let _ = s.shutdown().await;
    }

    #[tokio::test]
    async fn https_probes_pass_without_verifying_and_schemes_do_not_mix() {
        let headers = BTreeMap::new();
        let https = server(true).await;
        let http = server(false).await;
        http_get("127.0.0.1", https, "/ping", &headers, true)
            .await
            .unwrap();
        http_get("127.0.0.1", http, "/ping", &headers, false)
            .await
            .unwrap();
        // Plain HTTP to a TLS port, and TLS to a plain port, fail.
        assert!(
            http_get("127.0.0.1", https, "/ping", &headers, false)
                .await
                .is_err()
        );
        let err = http_get("127.0.0.1", http, "/ping", &headers, true)
            .await
            .unwrap_err();
        assert!(err.contains("TLS handshake"), "{err}");
    }
}
