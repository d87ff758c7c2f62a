//! The API's local unix sockets: binding one privately (no moment with looser permissions),
//! replacing a stale one and never another's, and serving it with each connection's peer
//! credentials (`SO_PEERCRED`) as its [`Caller`]. What each caller may do is [`crate::authz`]'s;
//! the HTTP is [`crate::server`]'s.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::limits::{Admission, Limits};
use crate::server::{Accept, Deadlines, accept_until, app, serve_http1};
use crate::{ApiError, Backend, Caller, Socket};

/// How long to wait for an existing socket to accept a probe connection before calling it live.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the API on the unix socket `path` (mode 0600) until `shutdown` completes:
/// [`UnixServer::bind`] then [`UnixServer::serve`].
pub async fn serve_unix<B: Backend>(
    path: &Path,
    backend: Arc<B>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    UnixServer::bind(path).await?.serve(backend, shutdown).await
}

/// The API's unix socket, bound and not yet serving. Binding first lets the caller fail early and
/// know when clients can connect. Dropping it removes the socket file.
#[derive(Debug)]
pub struct UnixServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file this server placed, so it never removes another's.
    identity: (u64, u64),
    limits: Limits,
}

impl UnixServer {
    /// Binds `path` with mode 0600.
    ///
    /// A stale socket file at `path` is replaced; a live one is [`ApiError::SocketInUse`], and
    /// anything that is not a socket is [`ApiError::NotASocket`] (left alone).
    ///
    /// There is no moment in which the socket is reachable with looser permissions. Not through
    /// umask, which is process-wide while other threads create files: the socket is bound inside
    /// a fresh private directory (0700) next to `path`, chmod-ed to 0600 there, and only then
    /// hard-linked to `path`. The link also refuses to replace a file that appeared at `path` in
    /// the meantime (another server starting at the same moment).
    pub async fn bind(path: &Path) -> Result<Self, ApiError> {
        let listen_error = |source| ApiError::Listen {
            path: path.to_owned(),
            source,
        };
        clear_stale_socket(path).await?;
        let file_name = path.file_name().ok_or_else(|| {
            listen_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file path",
            ))
        })?;
        let mut private_name = std::ffi::OsString::from(".");
        private_name.push(file_name);
        private_name.push(format!(".{}.bind", std::process::id()));
        let private_dir = path.with_file_name(private_name);
        let bound = bind_private(&private_dir, path);
        if let Err(error) = std::fs::remove_dir_all(&private_dir)
            && error.kind() != io::ErrorKind::NotFound
        {
            let private_dir = private_dir.display();
            tracing::warn!(path = %private_dir, %error, "cannot remove a temporary directory");
        }
        let listener = bound?;
        let metadata = std::fs::symlink_metadata(path).map_err(listen_error)?;
        tracing::info!(path = %path.display(), "api listening");
        Ok(Self {
            listener,
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
            limits: Limits::default(),
        })
    }

    /// Serves under `limits` instead of the defaults (tests shorten the deadlines).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves HTTP/1.1 until `shutdown` completes. Then it stops accepting and removes the socket
    /// file; in-flight requests get a few seconds to finish, and follow streams end at once with a
    /// final error line (dropping the backend's stream).
    pub async fn serve<B: Backend>(
        self,
        backend: Arc<B>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        self.serve_as(Socket::Api, backend, shutdown).await
    }

    /// [`UnixServer::serve`], telling the backend which socket each call came in on.
    pub async fn serve_as<B: Backend>(
        self,
        socket: Socket,
        backend: Arc<B>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let (stop, stopping) = watch::channel(false);
        let app = app(backend, stopping.clone());
        let path = self.path.clone();
        let limits = self.limits;
        let admission = Admission::new(&limits);
        let deadlines = Deadlines {
            header: limits.header_timeout,
            request: limits.request_timeout,
        };
        // Dropping the server at the end closes the listener and removes the socket file.
        accept_until(self, shutdown, stop, |stream: UnixStream| {
            let ticket = admission.admit_local();
            let cred = stream.peer_cred().ok();
            let who = Caller {
                pid: cred
                    .and_then(|c| c.pid())
                    .and_then(|p| u32::try_from(p).ok()),
                uid: cred.map(|c| c.uid()),
                socket,
                peer: None,
            };
            let serving = serve_http1(stream, app.clone(), who, deadlines, stopping.clone());
            async move {
                // Over the limit: the stream is dropped, which closes it.
                let Ok(_ticket) = ticket else { return };
                serving.await;
            }
        })
        .await;
        tracing::info!(path = %path.display(), "api stopped");
        Ok(())
    }
}

impl Accept for UnixServer {
    type Conn = UnixStream;

    async fn accept(&self) -> io::Result<UnixStream> {
        self.listener.accept().await.map(|(stream, _)| stream)
    }
}

impl Drop for UnixServer {
    /// Removes the socket file, if it is still the one this server placed there.
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if !ours {
            return;
        }
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove the api socket");
        }
    }
}

fn bind_private(private_dir: &Path, path: &Path) -> Result<UnixListener, ApiError> {
    let at = |at: &Path| {
        let path = at.to_owned();
        move |source| ApiError::Listen { path, source }
    };
    // A leftover from a crashed start that had the same pid.
    match std::fs::remove_dir_all(private_dir) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(at(private_dir)(error));
        }
        _ => {}
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(private_dir)
        .map_err(at(private_dir))?;
    let temporary = private_dir.join("sock");
    let listener = UnixListener::bind(&temporary).map_err(at(&temporary))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .map_err(at(&temporary))?;
    std::fs::hard_link(&temporary, path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            ApiError::SocketInUse {
                path: path.to_owned(),
            }
        } else {
            at(path)(source)
        }
    })?;
    Ok(listener)
}

/// Makes way for a new socket at `path`: nothing there is fine, a socket nobody listens on is
/// removed, a live socket or a non-socket is an error.
async fn clear_stale_socket(path: &Path) -> Result<(), ApiError> {
    let listen_error = |source| ApiError::Listen {
        path: path.to_owned(),
        source,
    };
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(listen_error(error)),
    };
    if !metadata.file_type().is_socket() {
        return Err(ApiError::NotASocket {
            path: path.to_owned(),
        });
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // Accepted, or so busy that its backlog is full: either way, alive.
        Ok(Ok(_)) | Err(_) => Err(ApiError::SocketInUse {
            path: path.to_owned(),
        }),
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale api socket");
            match std::fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(listen_error(error)),
                _ => Ok(()),
            }
        }
        Ok(Err(error)) => Err(listen_error(error)),
    }
}
