//! `cloudlet server` and `cloudlet agent`: take the data directory's lock, open the store, bind
//! the API socket, start the node (whose supervisor adopts the services an earlier process left
//! running in its own task, so the API never waits for adoption) and serve until SIGTERM
//! or Ctrl-C. The server adds the control plane (PKI, placement) and serves the cluster's API on
//! DIR/cloudlet.sock and on --listen (mutual TLS); the agent joins a server and serves its node's
//! API to it. Stopping either never stops a service. Wiring only: no decisions live here.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::net::SocketAddr;

use anyhow::{Context, bail};
use cloudlet_api::{Socket, TlsConfigSource, TlsServer, UnixServer};
use cloudlet_cluster::pki::{PkiOptions, ServerPki};
use cloudlet_cluster::{ClusterOptions, ControlPlane};
use cloudlet_footprint::programs;
use cloudlet_node::agent::{self, AgentOptions};
use cloudlet_node::{Node, NodeOptions};
use cloudlet_store::{RedbOptions, RedbStore};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{AgentArgs, NodeArgs, ServerArgs};

/// Runs the server until a stop signal.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let runtime = prepare(&args.node)?;
    runtime.block_on(serve(args))
}

/// Runs an agent until a stop signal.
pub fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let runtime = prepare(&args.node)?;
    runtime.block_on(agent(args))
}

/// Logging, the data dir and its lock, the allocator and the runtime: what every long-running
/// role needs before it starts.
fn prepare(args: &NodeArgs) -> anyhow::Result<Prepared> {
    // `Targets` (LEVEL, TARGET=LEVEL, comma-separated) rather than `EnvFilter`: the same
    // directives operators use, without a regex engine in the binary (~150 KiB of text).
    // The parse error's Display already includes its source: no context chain, or it repeats.
    let filter: Targets = args.log.parse().map_err(|e| {
        anyhow::anyhow!(
            "--log {:?} is not a valid filter ({e}); LEVEL or TARGET=LEVEL, comma-separated, \
             e.g. info,cloudlet_supervisor=debug",
            args.log
        )
    })?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    let dir = &args.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(crate::private::DIR_MODE)
        .create(dir)
        .with_context(|| format!("create data dir {}", dir.display()))?;
    crate::private::dir(dir)?;
    if !args.no_private_exe {
        run_from_private_copy(dir);
    }
    let lock = lock_data_dir(dir)?;
    let bin = dir.join("bin");
    if let Ok(this) = std::env::current_exe()
        && programs::is_private_copy(&bin, &this)
    {
        remove_other_versions(&bin, programs::SERVER_PREFIX, &this);
    }
    // Each thread would get a glibc malloc arena of its own; one serves a node server (`make
    // bench`: a second arena held ~550 KiB of a 30-service server's 2.2 MiB of heap, and the two
    // workers never contend enough to show in the restart latency). Set before any thread exists.
    // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(5))
        .enable_all()
        .build()
        .context("start the async runtime")?;
    Ok(Prepared {
        runtime,
        _lock: lock,
    })
}

/// Re-executes this process (same pid, same arguments) from its private copy in `DIR/bin` (see
/// `cloudlet_footprint::programs`), with `argv[0]` the installed binary's path so that
/// [`installed_exe`] and `ps` name it. Returns where it cannot: a failure costs memory, never
/// service, and is logged.
fn run_from_private_copy(dir: &Path) {
    let bin = dir.join("bin");
    let copy = match programs::private_copy(&bin) {
        Ok(Some(copy)) => copy,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("running from the installed binary (larger): {e}");
            return;
        }
    };
    let installed = match installed_exe() {
        Ok(installed) => installed,
        Err(e) => {
            tracing::warn!("running from the installed binary (larger): {e:#}");
            return;
        }
    };
    let args: Vec<CString> = std::iter::once(installed.into_os_string())
        .chain(std::env::args_os().skip(1))
        .filter_map(|a| CString::new(a.into_vec()).ok())
        .collect();
    let Ok(path) = CString::new(copy.clone().into_os_string().into_vec()) else {
        return;
    };
    // Only returns on failure; on success the new image starts from `main` with the same pid,
    // descriptors (std opens its own close-on-exec) and environment.
    let Err(e) = nix::unistd::execv(&path, &args);
    tracing::warn!(
        "running from the installed binary (larger): exec {}: {e}",
        copy.display()
    );
}

/// The installed `cloudlet` binary's path (what `ctl`, a release and the `cloudlet shim`
/// fallback name), also when this process runs from its private copy: the copy was started
/// with that path as `argv[0]`.
pub fn installed_exe() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("find the cloudlet executable")?;
    let is_copy = this
        .parent()
        .is_some_and(|bin| programs::is_private_copy(bin, &this));
    if is_copy
        && let Some(first) = std::env::args_os().next().map(PathBuf::from)
        && first.is_absolute()
    {
        return Ok(first);
    }
    // Replaced on disk since it started: the path still names the installed binary.
    let text = this.as_os_str().to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => this,
    })
}

/// Removes the other versions of a program in `bin`; logged, never fatal (they cost disk only).
fn remove_other_versions(bin: &Path, prefix: &str, keep: &Path) {
    match programs::remove_others(bin, prefix, keep) {
        Ok(removed) => {
            for path in removed {
                tracing::info!("removed the older program {}", path.display());
            }
        }
        Err(e) => tracing::warn!("{e}"),
    }
}

/// The runtime, and the data dir's lock held as long as it.
struct Prepared {
    runtime: tokio::runtime::Runtime,
    _lock: Flock<File>,
}

impl Prepared {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

/// How long a starting server waits for the data dir's lock before it refuses.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Holds an exclusive lock on DIR/cloudlet.lock for the server's life.
fn lock_data_dir(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join("cloudlet.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // A server killed a moment ago may leave the lock held for a few milliseconds by a child it
    // was forking (the descriptor closes at that child's exec): wait a bounded moment before
    // deciding another server owns the directory.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut file = file;
    let outcome = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => break other,
        }
    };
    match outcome {
        Ok(mut lock) => {
            lock.set_len(0).ok();
            lock.rewind().ok();
            write!(lock, "{}", std::process::id()).ok();
            Ok(lock)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok();
            bail!(
                "another cloudlet server (pid {}) is using {}: stop it first or use another --data-dir",
                pid.trim(),
                dir.display()
            )
        }
        Err((_, e)) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

fn node_name(args: &NodeArgs) -> anyhow::Result<String> {
    Ok(match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("read the host name (or pass --node-name)")?
            .to_string_lossy()
            .into_owned(),
    })
}

/// The largest `--network` file read.
const MAX_NETWORK_FILE: u64 = 1 << 20;

fn node_options(args: &NodeArgs, node_name: String) -> anyhow::Result<NodeOptions> {
    let network = match &args.network {
        None => None,
        Some(path) => {
            let mut text = String::new();
            File::open(path)
                .and_then(|f| f.take(MAX_NETWORK_FILE + 1).read_to_string(&mut text))
                .with_context(|| format!("read --network {}", path.display()))?;
            if text.len() as u64 > MAX_NETWORK_FILE {
                bail!(
                    "--network {}: larger than {MAX_NETWORK_FILE} bytes; a node network is a few \
                     bridges and ports",
                    path.display()
                );
            }
            Some(
                cloudlet_netovs::network::parse(&path.display().to_string(), &text)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .spec,
            )
        }
    };
    Ok(NodeOptions {
        network,
        node_name,
        data_dir: args.data_dir.clone(),
        exe: shim_exe(&args.data_dir)?,
        log_retention: args.log_retention,
        max_events: args.max_events,
        cgroup_root: args.cgroup_root.clone(),
        monitor: cloudlet_node::monitor::MonitorOptions {
            reserve: args.reserve,
            thresholds: cloudlet_host::Thresholds {
                disk_warn_free_pct: args.disk_warn_pct,
                disk_critical_free_pct: args.disk_critical_pct,
                ..Default::default()
            },
            disk_paths: args.disk_paths.clone(),
            interval: args.monitor_interval,
        },
    })
}

/// Start-up is over: hands back the program text and heap it alone needed (see
/// `cloudlet_footprint`). A failure costs memory, never service: it is logged.
async fn give_back_startup_memory() {
    match tokio::task::spawn_blocking(cloudlet_footprint::trim).await {
        Ok(Ok(t)) => tracing::info!(
            "gave back start-up memory: program text {} -> {} KiB resident, anonymous {} -> {} KiB",
            t.text_before,
            t.text_after,
            t.anon_before,
            t.anon_after
        ),
        Ok(Err(e)) => tracing::warn!("could not give back start-up memory: {e}"),
        Err(e) => tracing::warn!("could not give back start-up memory: {e}"),
    }
}

/// The small shim program this binary embeds (`build.rs` builds it).
const SHIM_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloudlet-shim"));

/// The program each service's shim runs from: the embedded one, written out to `DIR/bin` once per
/// version; this binary itself (`cloudlet shim`) where the data dir cannot hold it (a `noexec`
/// mount, a write that fails), with a warning, since every shim then maps the server's binary.
fn shim_exe(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let this = installed_exe()?;
    let dir = data_dir.join("bin");
    let installed = match programs::install(&dir, programs::SHIM_PREFIX, SHIM_PROGRAM) {
        Ok(installed) => installed,
        Err(e) => {
            tracing::warn!("shims run as `cloudlet shim` (larger): writing the shim program: {e}");
            return Ok(this);
        }
    };
    match programs::executable_here(&dir) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                "shims run as `cloudlet shim` (larger): {} is on a noexec mount",
                dir.display()
            );
            return Ok(this);
        }
        Err(e) => tracing::warn!("{e}; trying the shim program anyway"),
    }
    if installed.written {
        tracing::info!("wrote the shim program {}", installed.exe.display());
    }
    remove_other_versions(&dir, programs::SHIM_PREFIX, &installed.exe);
    Ok(installed.exe)
}

fn open_store(dir: &Path) -> anyhow::Result<RedbStore> {
    let store_path = dir.join("store.redb");
    RedbStore::open(&store_path, RedbOptions::default())
        .with_context(|| format!("open the store {}", store_path.display()))
}

/// The address others reach this host at: the one given, the listen address when it is
/// specific, else this host's first non-loopback IPv4 address.
fn advertise(given: Option<&str>, listen: SocketAddr) -> String {
    if let Some(a) = given {
        return a.to_owned();
    }
    if !listen.ip().is_unspecified() {
        return listen.ip().to_string();
    }
    nix::ifaddrs::getifaddrs()
        .ok()
        .and_then(|mut addrs| {
            addrs.find_map(|a| {
                let ip = a.address?.as_sockaddr_in()?.ip();
                (!ip.is_loopback()).then(|| ip.to_string())
            })
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

fn https_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// SIGTERM or SIGINT, whichever comes first.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping cloudlet; services keep running"),
            _ = int.recv() => tracing::info!("SIGINT: stopping cloudlet; services keep running"),
        }
    })
}

/// Binds the API's unix socket. The API socket is bound before the node starts, and the node's
/// supervisor adopts and replays in its own task, so `ctl` reaches a server whose adoption is
/// slow or stuck (and can delete what a service's state breaks).
async fn bind_unix(path: &Path) -> anyhow::Result<UnixServer> {
    UnixServer::bind(path)
        .await
        .with_context(|| format!("listen on {}", path.display()))
}

/// Listeners that stop together.
struct Listeners {
    stop: tokio::sync::watch::Sender<bool>,
    stopped: tokio::sync::watch::Receiver<bool>,
    tasks: Vec<(
        String,
        tokio::task::JoinHandle<Result<(), cloudlet_api::ApiError>>,
    )>,
}

impl Listeners {
    fn new() -> Listeners {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        Listeners {
            stop,
            stopped,
            tasks: Vec::new(),
        }
    }

    fn until(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    async fn unix<B: cloudlet_api::Backend>(
        &mut self,
        path: &Path,
        socket: Socket,
        backend: Arc<B>,
    ) -> anyhow::Result<()> {
        let server = bind_unix(path).await?;
        self.serve_unix(path, server, socket, backend);
        Ok(())
    }

    /// Serves a socket bound earlier (see [`bind_unix`]).
    fn serve_unix<B: cloudlet_api::Backend>(
        &mut self,
        path: &Path,
        server: UnixServer,
        socket: Socket,
        backend: Arc<B>,
    ) {
        let until = self.until();
        self.tasks.push((
            path.display().to_string(),
            tokio::spawn(server.serve_as(socket, backend, until)),
        ));
    }

    fn tls<B: cloudlet_api::Backend>(
        &mut self,
        server: TlsServer,
        backend: Arc<B>,
        config: TlsConfigSource,
    ) {
        let until = self.until();
        self.tasks.push((
            server.local_addr().to_string(),
            tokio::spawn(server.serve(backend, config, until)),
        ));
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        for (what, task) in self.tasks {
            task.await
                .context("an API task panicked")?
                .with_context(|| format!("serve {what}"))?;
        }
        Ok(())
    }
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let dir = args.node.data_dir.clone();
    let name = node_name(&args.node)?;
    // Every file given on the command line is checked before anything is started.
    let node_opts = node_options(&args.node, name.clone())?;
    let store = open_store(&dir)?;
    let events = cloudlet_node::events::spawn_writer(store.clone(), args.node.max_events)
        .await
        .context("start the event log")?;
    // Bound first, so that port 0 (tests) is known before the certificates name it.
    let tls = TlsServer::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let listen = tls.local_addr();
    let host = advertise(args.advertise_address.as_deref(), listen);
    let server_url = https_url(&host, listen.port());
    let mut sans = vec![host.clone()];
    sans.extend(args.tls_sans.iter().cloned());
    let pki = Arc::new(
        ServerPki::open(
            &dir,
            PkiOptions {
                server_name: name.clone(),
                sans,
                cert_lifetime: args.cert_lifetime,
                server_url: server_url.clone(),
            },
        )
        .context("set up the cluster's certificates")?,
    );
    let api_socket = dir.join("cloudlet.sock");
    let api_server = bind_unix(&api_socket).await?;
    let local = if args.disable_agent {
        None
    } else {
        Some(
            Node::start(store.clone(), node_opts, events.clone())
                .await
                .context("start the node")?,
        )
    };
    let cp = ControlPlane::start(
        store,
        Arc::clone(&pki),
        events,
        local.clone(),
        ClusterOptions {
            data_dir: dir.clone(),
            server_name: name,
            node_lost_after: args.node_lost_after,
            cert_lifetime: args.cert_lifetime,
            service_cert_lifetime: args.service_cert_lifetime,
            templates: crate::embedded::MANIFESTS
                .iter()
                .map(|m| (m.name.to_owned(), m.text.to_owned()))
                .collect(),
            cloudlet_exe: installed_exe()?,
        },
    )
    .await
    .context("start the control plane")?;
    tokio::spawn(cloudlet_cluster::autodeploy::run(
        cp.clone(),
        dir.join("manifests"),
    ));

    let shutdown = stop_signal()?;
    let cp = Arc::new(cp);
    let mut listeners = Listeners::new();
    listeners.serve_unix(&api_socket, api_server, Socket::Api, Arc::clone(&cp));
    if let Some(node) = &local {
        listeners
            .unix(
                &dir.join(cloudlet_node::EXECUTOR_SOCKET),
                Socket::Executor,
                Arc::new(node.clone()),
            )
            .await?;
    }
    let tls_pki = Arc::clone(&pki);
    listeners.tls(
        tls,
        Arc::clone(&cp),
        Arc::new(move || tls_pki.server_tls(true)),
    );
    tracing::info!(
        "serving the API on {} and {server_url} (mutual TLS; admin config {})",
        dir.join("cloudlet.sock").display(),
        dir.join("admin.conf").display()
    );
    crate::private::files(&dir);
    // Adoption runs after the API answers; its code is start-up code too.
    if let Some(node) = &local {
        node.adopted().await;
    }
    give_back_startup_memory().await;
    shutdown.await;
    listeners.stop().await?;
    if let Some(node) = local {
        node.shutdown().await;
    }
    // The socket is gone with the server; keep the dir private whatever umask created it.
    std::fs::set_permissions(
        &dir,
        std::fs::Permissions::from_mode(crate::private::DIR_MODE),
    )
    .ok();
    Ok(())
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let dir = args.node.data_dir.clone();
    let name = node_name(&args.node)?;
    let node_opts = node_options(&args.node, name.clone())?;
    let store = open_store(&dir)?;
    let tls = TlsServer::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let listen = tls.local_addr();
    let host = advertise(args.advertise_address.as_deref(), listen);
    let options = AgentOptions {
        server: args.server.clone(),
        token: args.token.clone(),
        labels: args.labels.clone(),
        address: https_url(&host, listen.port()),
        heartbeat: args.heartbeat,
    };
    let creds = agent::credentials(&dir, &name, &options)
        .await
        .context("join the cluster")?;
    let events = cloudlet_node::events::spawn_writer(store.clone(), args.node.max_events)
        .await
        .context("start the event log")?;
    let api_socket = dir.join("cloudlet.sock");
    let api_server = bind_unix(&api_socket).await?;
    let node = Node::start(store, node_opts, events)
        .await
        .context("start the node")?;
    let shutdown = stop_signal()?;
    let backend = Arc::new(node.clone());
    let mut listeners = Listeners::new();
    listeners.serve_unix(&api_socket, api_server, Socket::Api, Arc::clone(&backend));
    listeners
        .unix(
            &dir.join(cloudlet_node::EXECUTOR_SOCKET),
            Socket::Executor,
            Arc::clone(&backend),
        )
        .await?;
    let listener_config = creds.listener_config().context("the agent's TLS")?;
    listeners.tls(tls, Arc::clone(&backend), listener_config);
    tokio::spawn(agent::run(node.clone(), creds, options));
    tracing::info!("agent of {} serving on {listen}", args.server);
    crate::private::files(&dir);
    node.adopted().await;
    give_back_startup_memory().await;
    shutdown.await;
    listeners.stop().await?;
    node.shutdown().await;
    Ok(())
}
