//! `cloudlet server`: takes the data directory's lock, opens the store, starts the node (which
//! adopts the services an earlier server left running) and serves the API on DIR/cloudlet.sock
//! until SIGTERM or Ctrl-C. Stopping the server never stops a service.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use cloudlet_api::{Socket, UnixServer};
use cloudlet_node::{Node, NodeOptions};
use cloudlet_store::{RedbOptions, RedbStore};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ServerArgs;

/// Runs the server until a stop signal.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .with_context(|| format!("--log {:?} is not a valid filter", args.log))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let dir = &args.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create data dir {}", dir.display()))?;
    let _lock = lock_data_dir(dir)?;
    // Each thread would get a glibc malloc arena of its own; a node server needs two. Set before
    // any thread exists.
    // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(5))
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(serve(args))
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

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    let store_path = dir.join("store.redb");
    let store = RedbStore::open(&store_path, RedbOptions::default())
        .with_context(|| format!("open the store {}", store_path.display()))?;
    let node_name = match args.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .context("read the host name (or pass --node-name)")?
            .to_string_lossy()
            .into_owned(),
    };
    let exe = std::env::current_exe().context("find the cloudlet executable")?;
    let node = Node::start(
        store,
        NodeOptions {
            node_name,
            data_dir: dir.clone(),
            exe,
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
        },
    )
    .await
    .context("start the node")?;

    let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping cloudlet; services keep running"),
            _ = int.recv() => tracing::info!("SIGINT: stopping cloudlet; services keep running"),
        }
    };
    let socket = dir.join("cloudlet.sock");
    let executor = dir.join(cloudlet_node::EXECUTOR_SOCKET);
    let node = Arc::new(node);
    let api = UnixServer::bind(&socket)
        .await
        .with_context(|| format!("listen on {}", socket.display()))?;
    let exec = UnixServer::bind(&executor)
        .await
        .with_context(|| format!("listen on {}", executor.display()))?;
    tracing::info!(
        "serving the API on {} and the executor on {}",
        socket.display(),
        executor.display()
    );
    // One shutdown signal ends both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(api.serve_as(Socket::Api, node.clone(), until(stopped.clone())));
    let exec = tokio::spawn(exec.serve_as(Socket::Executor, node.clone(), until(stopped)));
    shutdown.await;
    stop.send_replace(true);
    for (task, path) in [(api, &socket), (exec, &executor)] {
        task.await
            .context("the API task panicked")?
            .with_context(|| format!("serve {}", path.display()))?;
    }
    node.shutdown().await;
    // The socket is gone with the server; keep the dir private whatever umask created it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok();
    Ok(())
}
