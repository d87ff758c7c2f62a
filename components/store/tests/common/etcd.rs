//! A real etcd process for tests: one member on free loopback ports, its data in a temp dir,
//! killed when dropped. Readiness is awaited by polling the client, not by sleeping.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cloudlet_store::{EtcdOptions, EtcdStore, EtcdTls, Store};
use tempfile::TempDir;
use tokio::time::Instant;

/// Debian's etcd-server package.
const ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer its first request on a loaded 2-core machine.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// PEM files for mutual TLS: a CA, etcd's server certificate (localhost, 127.0.0.1) and a
/// client certificate, all signed by the CA.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

impl TlsFiles {
    pub fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (
                write(&format!("{name}.pem"), cert.pem()),
                write(&format!("{name}-key.pem"), key.serialize_pem()),
            )
        };
        TlsFiles {
            ca: write("ca.pem", ca_cert.pem()),
            server: leaf(
                vec!["localhost".into(), "127.0.0.1".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
                "server",
            ),
            client: leaf(
                vec!["client".into()],
                ExtendedKeyUsagePurpose::ClientAuth,
                "client",
            ),
        }
    }

    /// The client side: CA and client certificate.
    pub fn client_tls(&self) -> EtcdTls {
        EtcdTls {
            ca: self.ca.clone(),
            client: Some(self.client.clone()),
            server_name: None,
        }
    }
}

/// One etcd member, killed (SIGKILL) and reaped on drop.
pub struct Etcd {
    child: Child,
    command: Vec<String>,
    pub endpoint: String,
    dir: TempDir,
    pub tls: Option<TlsFiles>,
}

fn spawn(args: &[String], dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .unwrap();
    Command::new(ETCD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("start {ETCD} (apt-get install etcd-server): {err}"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Etcd {
    /// Starts etcd; with `tls`, client connections are HTTPS with required client certificates.
    pub fn start(tls: bool) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| TlsFiles::generate(dir.path()));
        let (client_port, peer_port) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = vec![
            "--name=e1".to_string(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=e1={peer}"),
        ];
        if let Some(files) = &tls {
            command.extend([
                format!("--cert-file={}", files.server.0.display()),
                format!("--key-file={}", files.server.1.display()),
                format!("--trusted-ca-file={}", files.ca.display()),
                "--client-cert-auth".to_string(),
            ]);
        }
        let child = spawn(&command, dir.path());
        Etcd {
            child,
            command,
            endpoint,
            dir,
            tls,
        }
    }

    /// SIGKILLs etcd and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same data and ports (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.command, self.dir.path());
    }

    /// etcd's pid, to stop (SIGSTOP) and continue it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn options(&self, namespace: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.endpoint.clone()],
            namespace: namespace.to_string(),
            tls: self.tls.as_ref().map(TlsFiles::client_tls),
            ..EtcdOptions::default()
        }
    }

    /// A store under `namespace`, once etcd answers.
    pub async fn store(&mut self, namespace: &str) -> EtcdStore {
        let store = EtcdStore::connect(self.options(namespace)).await.unwrap();
        self.wait_ready(&store).await;
        store
    }

    /// Polls the store until etcd answers (fails fast if etcd exited).
    pub async fn wait_ready(&mut self, store: &EtcdStore) {
        let started = Instant::now();
        loop {
            match store.current_revision().await {
                Ok(_) => return,
                Err(err) => {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        panic!("etcd exited with {status}:\n{}", self.log());
                    }
                    if started.elapsed() > READY_WITHIN {
                        panic!(
                            "etcd not ready within {READY_WITHIN:?}: {err}\n{}",
                            self.log()
                        );
                    }
                    // Polling a process that gives no readiness event of its own.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
