//! Readiness probes: one check of an HTTP endpoint, a TCP port or a command, bounded by a timeout.
//!
//! The HTTP check is a minimal HTTP/1.1 GET written by hand (status line only, `Connection:
//! close`): it needs no client pool, TLS or body handling, and pulling an HTTP client into the
//! supervisor for one request line would cost more than these few lines. A status 200-399 passes,
//! as in Kubernetes.
//! Probes never change what runs; they only report. The supervisor decides.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        } => http_get(host, *port, path, headers).await,
        ProbeCheck::Exec { command } => exec(command, env, reaper).await,
    }
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &BTreeMap<String, String>,
) -> Result<(), String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("http {host}:{port}: {e}"))?;
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
