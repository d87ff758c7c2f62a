//! [`ServerPki`]: the server's own certificates. It owns `DIR/pki` (the cluster CA, the CA it
//! replaced and the cross certificate between them while a rotation overlaps, the server's
//! certificate) and `DIR/admin.conf`, decides
//! when each certificate is renewed, signs the nodes' CSRs, and builds the rustls configs from
//! the current trust.
//!
//! It never lets a private key leave this machine (nodes send CSRs; only certificates go out),
//! never writes a key with a mode other than 0600, and never replaces a file in place: every file
//! is written whole beside its target and renamed over it.
//!
//! # Files and crashes
//!
//! - `ca.crt`, `ca.key`: the signer. A new signer (the first one, or a rotation's) is saved whole
//!   into `ca-next/` first, then moved into place key first. [`ServerPki::open`] finishes a move
//!   that had begun (the key already moved) and discards one that had not, so after any crash
//!   `ca.crt` and `ca.key` match, and open refuses a pair that does not.
//! - `ca-previous.crt`: the CA a rotation replaced, still trusted until
//!   [`ServerPki::finish_rotation`]. It is written before the new signer is moved into place, so
//!   the old CA is trusted whenever the new one signs; a rotation discarded by open takes it away
//!   again (it is then the same certificate as `ca.crt`). Its key is not kept.
//! - `ca-cross.crt`: the new signer's certificate cross-signed by the CA it replaced
//!   ([`Ca::cross_sign`], made while the old key is still loaded, the only moment it can be). It
//!   is written just before `ca-previous.crt` and removed just after it, so it exists whenever
//!   `ca-previous.crt` does; open removes one without `ca-previous.crt` (a rotation discarded or
//!   finished by a crash). Open ignores, with a warning, one that does not certify the signer's
//!   key under the previous CA, and a rotation begun by a version without cross certificates
//!   has none: its overlap then works as it did, without the bridge described below.
//! - `server.crt`, `server.key`: a copy of the server's certificate chain for the operator's
//!   tools. A new one is issued at every open and the process serves the pair it holds in memory,
//!   so a pair torn by a crash is never used.
//! - `DIR/admin.conf` (0600): the operator's credentials. Open rewrites it when it is missing,
//!   unreadable, not for this server's URL, not issued by the current signer, does not carry the
//!   current CA bundle, or is past two thirds of its certificate's life; so a crash between a
//!   rotation and its rewrite is repaired at the next start.
//!
//! # The overlap of a rotation
//!
//! Agents trust the CA bundle they fetched last, which before they notice a rotation is only the
//! old CA. During the overlap the server's chain is its certificate (from the new CA) followed
//! by the cross certificate, in the resolver and in `server.crt`: a peer trusting only the old CA
//! verifies it (leaf, cross, old root), one trusting the new CA too (leaf, new root). So an agent
//! keeps a verified link to the server, learns from its heartbeat that the bundle changed,
//! fetches it over that link, and renews its certificate with the new CA; and the server's
//! client certificate ([`ServerPki::client_tls`] presents the same chain) still passes the
//! agents' own listeners, which may still trust only the old CA. A joining agent keeps, of the
//! bundle, only the CA its token pins, and verifies the server with either. (The path through
//! the cross certificate passes verifiers that ignore a trust anchor's path length, as webpki
//! does: see [`Ca::cross_sign`].)
//!
//! Node and admin certificates are returned and written without the cross certificate: only the
//! server verifies them, and it trusts both CAs for the whole overlap.
//!
//! Its methods do blocking file I/O and key generation: call them from `spawn_blocking` (or at
//! start) in async code.

use std::fmt;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use cloudlet_api::{AdminConfig, ApiError};
use cloudlet_pki::{
    CA_CERT_FILE, CA_KEY_FILE, Ca, CertSpec, Identity, KeyPair, PkiError, ReloadingResolver, Role,
    certs_from_pem, client_config, server_config, write_certificate, write_private_key,
};
use jiff::{SignedDuration, Timestamp};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::ClusterError;

/// The PKI directory inside the data directory (mode 0700).
pub const PKI_DIR: &str = "pki";
/// The CA a rotation replaced, trusted until the rotation is finished (in [`PKI_DIR`]).
pub const PREVIOUS_CA_CERT_FILE: &str = "ca-previous.crt";
/// The signer's certificate cross-signed by the CA a rotation replaced, sent after the server's
/// certificate until the rotation is finished (in [`PKI_DIR`], mode 0644).
pub const CROSS_CA_CERT_FILE: &str = "ca-cross.crt";
/// The server's certificate (in [`PKI_DIR`], mode 0644).
pub const SERVER_CERT_FILE: &str = "server.crt";
/// The server's key (in [`PKI_DIR`], mode 0600).
pub const SERVER_KEY_FILE: &str = "server.key";
/// The operator's credentials, in the data directory (mode 0600).
pub const ADMIN_CONF_FILE: &str = "admin.conf";
/// Where a new signer is saved whole before it is moved into place (in [`PKI_DIR`]).
const STAGING_DIR: &str = "ca-next";
/// A key of the previous CA, from a layout that kept one: never needed, always deleted.
const PREVIOUS_CA_KEY_FILE: &str = "ca-previous.key";
/// The longest a certificate is backdated, so a node whose clock is a little behind accepts it.
const MAX_BACKDATE: Duration = Duration::from_secs(60);
/// The common name of the admin certificate in `admin.conf`.
const ADMIN_NAME: &str = "admin";

/// What the server's certificates say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiOptions {
    /// The server certificate's common name.
    pub server_name: String,
    /// The server certificate's subject alternative names: DNS names or IP literals. `localhost`
    /// and `127.0.0.1` are always added.
    pub sans: Vec<String>,
    /// How long server, admin and node certificates are valid (renewed at two thirds).
    pub cert_lifetime: Duration,
    /// The API's URL, written into `admin.conf`.
    pub server_url: String,
}

/// The server's CA, certificate and admin credentials; shared as `Arc<ServerPki>`.
pub struct ServerPki {
    dir: PathBuf,
    admin_conf: PathBuf,
    options: PkiOptions,
    resolver: Arc<ReloadingResolver>,
    state: RwLock<State>,
}

struct State {
    signer: Ca,
    previous: Option<CaCert>,
    /// SHA-256 of the bundle of `signer` and `previous`, kept with them: every heartbeat's answer
    /// carries it (thousands a second with thousands of agents).
    bundle_hash: String,
    /// The signer cross-signed by `previous` (PEM); only during a rotation.
    cross: Option<String>,
    /// The server certificate in the resolver, the pin of the CA that signed it, and whether the
    /// cross certificate follows it there.
    server: Identity,
    server_signer: String,
    server_cross: bool,
    /// The admin certificate in `admin.conf`, and the hash of the bundle written with it.
    admin: Identity,
    admin_bundle: String,
    tls: Tls,
}

/// A trusted CA certificate without its key.
struct CaCert {
    pem: String,
    der: CertificateDer<'static>,
}

/// The configs built from the current trust.
struct Tls {
    server: Arc<ServerConfig>,
    server_anonymous: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl State {
    fn bundle(&self) -> String {
        bundle_pem(&self.signer, self.previous.as_ref())
    }

    fn server_due(&self, now: Timestamp) -> bool {
        now >= self.server.renew_at()
            || self.server_signer != self.signer.pin()
            || self.server_cross != self.cross.is_some()
    }

    fn admin_due(&self, now: Timestamp) -> bool {
        now >= self.admin.renew_at() || self.admin_bundle != sha256_hex(&self.bundle())
    }
}

impl ServerPki {
    /// Opens `DATA_DIR/pki` (made with mode 0700): loads the CA, or creates one valid ten years;
    /// finishes or discards a CA change a crash interrupted; issues a fresh server certificate;
    /// and rewrites `DATA_DIR/admin.conf` unless it is still good (see the module docs).
    pub fn open(data_dir: &Path, options: PkiOptions) -> Result<ServerPki, ClusterError> {
        if !options.server_url.starts_with("https://") {
            return Err(ClusterError::Invalid(format!(
                "server URL {:?} is not https://HOST:PORT",
                options.server_url
            )));
        }
        let dir = data_dir.join(PKI_DIR);
        private_dir(&dir)?;
        recover_staged_signer(&dir)?;
        remove_if_present(&dir.join(PREVIOUS_CA_KEY_FILE))?;
        let signer = if dir.join(CA_CERT_FILE).exists() {
            load_signer(&dir)?
        } else if dir.join(CA_KEY_FILE).exists() {
            return Err(ClusterError::Invalid(format!(
                "{} exists without {CA_CERT_FILE}: restore {CA_CERT_FILE}, or remove both to \
                 make a new CA (every node must then join again)",
                dir.join(CA_KEY_FILE).display()
            )));
        } else {
            let ca = Ca::create()?;
            install_signer(&dir, &ca, None)?;
            ca
        };
        let previous = load_previous(&dir, &signer)?;
        let cross = load_cross(&dir, &signer, previous.as_ref())?;

        let (cert, key) = issue_server(&dir, &options, &signer, cross.as_deref())?;
        let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem())?);
        let mut roots = vec![signer.cert_der().clone()];
        roots.extend(previous.iter().map(|p| p.der.clone()));
        let tls = build_tls(&roots, &resolver)?;

        let bundle = bundle_pem(&signer, previous.as_ref());
        let admin_conf = data_dir.join(ADMIN_CONF_FILE);
        let admin = match current_admin(&admin_conf, &options.server_url, &signer, &bundle) {
            Some(admin) => admin,
            None => write_admin(&admin_conf, &options, &signer, &bundle)?,
        };
        let state = State {
            server: Identity::from_pem(&cert)?,
            server_signer: signer.pin(),
            server_cross: cross.is_some(),
            admin,
            admin_bundle: sha256_hex(&bundle),
            bundle_hash: sha256_hex(&bundle),
            signer,
            previous,
            cross,
            tls,
        };
        Ok(ServerPki {
            dir,
            admin_conf,
            options,
            resolver,
            state: RwLock::new(state),
        })
    }

    /// The server's own certificate, swapped in place when it is renewed.
    pub fn resolver(&self) -> Arc<ReloadingResolver> {
        Arc::clone(&self.resolver)
    }

    /// What the server is reached as: its `--tls-san` names and its URL's host.
    pub fn server_names(&self) -> Vec<String> {
        let mut names = self.options.sans.clone();
        names.extend(crate::backend::host_of(&self.options.server_url).map(str::to_owned));
        names
    }

    /// Every trusted CA as PEM, the current signer first (then the previous CA during a
    /// rotation): what agents trust and what `admin.conf` carries.
    pub fn ca_bundle_pem(&self) -> String {
        self.read().bundle()
    }

    /// SHA-256 (lowercase hex) of [`ServerPki::ca_bundle_pem`]: agents fetch the bundle again
    /// when it changes.
    pub fn ca_hash(&self) -> String {
        self.read().bundle_hash.clone()
    }

    /// The current signer's pin: what new join tokens embed. A joining agent keeps, of the
    /// bundle it downloads, only the CA whose pin its token names and verifies the server with
    /// it alone: the server's certificate is the signer's, and during a rotation the cross
    /// certificate lets a token that still names the previous CA verify it too.
    pub fn pin(&self) -> String {
        self.read().signer.pin()
    }

    /// The pins a join token may carry: the signer's, and during a rotation the previous CA's
    /// (an agent pinning it still verifies the server, through the cross certificate).
    pub fn accepted_pins(&self) -> Vec<String> {
        let state = self.read();
        let mut pins = vec![state.signer.pin()];
        pins.extend(
            state
                .previous
                .as_ref()
                .map(|p| cloudlet_pki::pin_of(&p.der)),
        );
        pins
    }

    /// Signs a node's CSR: role node, common name `node`, one SAN: `node` as a DNS name (what
    /// the server checks when it reaches the agent), valid for the configured lifetime. Only the
    /// CSR's public key is used: nothing the joiner asks for (names, addresses, extensions)
    /// reaches the certificate. The PEM is the certificate alone, also during a rotation (see the
    /// module docs).
    pub fn sign_node(&self, csr_pem: &str, node: &str) -> Result<(String, Identity), ClusterError> {
        let spec = spec(Role::Node, node, self.options.cert_lifetime)?;
        let cert = self.read().signer.sign_csr(csr_pem, &spec.dns_name(node))?;
        let identity = Identity::from_pem(&cert)?;
        Ok((cert, identity))
    }

    /// A server config presenting the server's certificate (with the cross certificate during
    /// a rotation) and requiring a client certificate from a trusted CA (with `anonymous`, also
    /// letting clients without one in: joining agents). The same config is returned until the
    /// trust changes.
    pub fn server_tls(&self, anonymous: bool) -> Arc<ServerConfig> {
        let state = self.read();
        Arc::clone(if anonymous {
            &state.tls.server_anonymous
        } else {
            &state.tls.server
        })
    }

    /// A client config presenting the server's certificate (to reach the agents' APIs; with the
    /// cross certificate during a rotation, for agents that trust only the old CA yet) and
    /// trusting the trusted CAs. The same config is returned until the trust changes.
    pub fn client_tls(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.read().tls.client)
    }

    /// When each certificate expires: `ca`, `ca (previous)` during a rotation, `server`, `admin`.
    pub fn expiries(&self) -> Vec<(String, Timestamp)> {
        let state = self.read();
        let mut out = Vec::new();
        if let Ok(at) = state.signer.not_after() {
            out.push(("ca".to_owned(), at));
        }
        if let Some(at) = state.previous.as_ref().and_then(|p| not_after(&p.der)) {
            out.push(("ca (previous)".to_owned(), at));
        }
        out.push(("server".to_owned(), state.server.not_after));
        out.push(("admin".to_owned(), state.admin.not_after));
        out
    }

    /// The serial of the server's own certificate (lowercase hex).
    pub fn server_serial(&self) -> String {
        self.read().server.serial.clone()
    }

    /// When [`ServerPki::renew_due`] next has something to do: the earliest two-thirds point of
    /// the server and admin certificates (now, if one is already due).
    pub fn next_renewal(&self) -> Timestamp {
        let state = self.read();
        let now = Timestamp::now();
        if state.server_due(now) || state.admin_due(now) {
            return now;
        }
        state.server.renew_at().min(state.admin.renew_at())
    }

    /// Renews what is due: the server certificate (files and resolver) and `admin.conf`, each
    /// when past two thirds of its life or issued under a trust that has changed since. Returns
    /// what it renewed (`server`, `admin`).
    pub fn renew_due(&self) -> Result<Vec<String>, ClusterError> {
        let mut state = self.write();
        self.renew(&mut state)
    }

    /// Makes a new CA the signer. The old one stays trusted (as `ca-previous.crt`) until
    /// [`ServerPki::finish_rotation`], so certificates it signed keep working while every node
    /// renews; the server certificate and `admin.conf` are reissued by the new CA at once, and
    /// the server's certificate is sent with the new CA cross-signed by the old one, so peers
    /// that trust only the old CA still verify it (see the module docs).
    ///
    /// Refused while a previous CA is still trusted: finish that rotation first. If reissuing
    /// fails once the new CA is in place, the rotation stands and the reissue is due at once
    /// ([`ServerPki::next_renewal`] is now).
    pub fn rotate_ca(&self) -> Result<(), ClusterError> {
        let mut state = self.write();
        if state.previous.is_some() {
            return Err(ClusterError::Conflict(
                "a CA rotation is already under way: finish it (once every node has renewed \
                 its certificate) before starting another"
                    .to_owned(),
            ));
        }
        let new = Ca::create()?;
        // The old key is dropped below: this is the one moment it can vouch for the new CA.
        let cross = state.signer.cross_sign(&new)?;
        let old = CaCert {
            pem: state.signer.cert_pem().to_owned(),
            der: state.signer.cert_der().clone(),
        };
        let tls = build_tls(&[new.cert_der().clone(), old.der.clone()], &self.resolver)?;
        install_signer(&self.dir, &new, Some((&old.pem, &cross)))?;
        state.signer = new;
        state.previous = Some(old);
        state.bundle_hash = sha256_hex(&state.bundle());
        state.cross = Some(cross);
        state.tls = tls;
        self.renew(&mut state)?;
        Ok(())
    }

    /// Stops trusting the CA a rotation replaced (once every node holds a certificate of the new
    /// one), reissues the server certificate without the cross certificate after it, and
    /// rewrites `admin.conf` without the old CA. `false` if no rotation was under way.
    pub fn finish_rotation(&self) -> Result<bool, ClusterError> {
        let mut state = self.write();
        if state.previous.is_none() {
            return Ok(false);
        }
        let tls = build_tls(&[state.signer.cert_der().clone()], &self.resolver)?;
        // The previous CA first: the cross certificate exists whenever it does.
        remove_if_present(&self.dir.join(PREVIOUS_CA_CERT_FILE))?;
        remove_if_present(&self.dir.join(CROSS_CA_CERT_FILE))?;
        sync_dir(&self.dir)?;
        state.previous = None;
        state.bundle_hash = sha256_hex(&state.bundle());
        state.cross = None;
        state.tls = tls;
        self.renew(&mut state)?;
        Ok(true)
    }

    fn renew(&self, state: &mut State) -> Result<Vec<String>, ClusterError> {
        let now = Timestamp::now();
        let mut renewed = Vec::new();
        if state.server_due(now) {
            let cross = state.cross.as_deref();
            let (cert, key) = issue_server(&self.dir, &self.options, &state.signer, cross)?;
            self.resolver.set(&cert, &key.to_pem())?;
            state.server = Identity::from_pem(&cert)?;
            state.server_signer = state.signer.pin();
            state.server_cross = cross.is_some();
            renewed.push("server".to_owned());
        }
        if state.admin_due(now) {
            let bundle = state.bundle();
            state.admin = write_admin(&self.admin_conf, &self.options, &state.signer, &bundle)?;
            state.admin_bundle = sha256_hex(&bundle);
            renewed.push("admin".to_owned());
        }
        Ok(renewed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every change to the state is made whole under the write lock or not at all.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ServerPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("ServerPki")
            .field("dir", &self.dir)
            .field("pin", &state.signer.pin())
            .field("rotating", &state.previous.is_some())
            .field("server_serial", &state.server.serial)
            .finish_non_exhaustive()
    }
}

/// A spec for `name` in `role`, valid `lifetime` from now, backdated a little for clock skew (a
/// tenth of the lifetime, at most [`MAX_BACKDATE`], whole seconds).
fn spec(role: Role, name: &str, lifetime: Duration) -> Result<CertSpec, ClusterError> {
    let backdate = Duration::from_secs((lifetime / 10).min(MAX_BACKDATE).as_secs());
    let not_before = SignedDuration::try_from(backdate)
        .ok()
        .and_then(|d| Timestamp::now().checked_sub(d).ok())
        .unwrap_or_else(Timestamp::now);
    Ok(CertSpec::new(role, name).not_before(not_before).lifetime(
        lifetime.checked_add(backdate).ok_or_else(|| {
            ClusterError::Invalid(format!("certificate lifetime {lifetime:?} is too long"))
        })?,
    ))
}

/// Adds `host` as an IP SAN if it is an IP literal, else as a DNS SAN.
/// Issues the server's certificate and writes its two files (key first). Returns the chain (the
/// certificate, then `cross` if given) and the key.
fn issue_server(
    dir: &Path,
    options: &PkiOptions,
    signer: &Ca,
    cross: Option<&str>,
) -> Result<(String, KeyPair), ClusterError> {
    let mut spec = spec(Role::Server, &options.server_name, options.cert_lifetime)?;
    let (mut ips, mut dns): (Vec<IpAddr>, Vec<&str>) = (Vec::new(), Vec::new());
    let always = ["localhost", "127.0.0.1"];
    for host in options.sans.iter().map(|h| h.trim()).chain(always) {
        match host.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Err(_) if !host.is_empty() && !dns.contains(&host) => dns.push(host),
            _ => {}
        }
    }
    for name in dns {
        spec = spec.dns_name(name);
    }
    for ip in ips {
        spec = spec.ip(ip);
    }
    let (cert, key) = signer.issue(&spec)?;
    let mut chain = pem_block(&cert);
    if let Some(cross) = cross {
        chain.push_str(&pem_block(cross));
    }
    write_private_key(&dir.join(SERVER_KEY_FILE), &key.to_pem())?;
    write_certificate(&dir.join(SERVER_CERT_FILE), &chain)?;
    Ok((chain, key))
}

/// Issues an admin certificate and writes `admin.conf` with it and `bundle`.
fn write_admin(
    path: &Path,
    options: &PkiOptions,
    signer: &Ca,
    bundle: &str,
) -> Result<Identity, ClusterError> {
    let (cert, key) = signer.issue(&spec(Role::Admin, ADMIN_NAME, options.cert_lifetime)?)?;
    let conf = AdminConfig {
        server: options.server_url.clone(),
        ca: bundle.to_owned(),
        cert,
        key: key.to_pem(),
    };
    conf.save(path).map_err(|e| match e {
        ApiError::Config { path, reason } => ClusterError::Io {
            path,
            source: io::Error::other(reason),
        },
        other => ClusterError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    })?;
    Ok(Identity::from_pem(&conf.cert)?)
}

/// The admin certificate of the `admin.conf` at `path` if the file is still good: readable (which
/// includes a key that belongs to the certificate), for `server_url`, with `bundle`, and an admin
/// certificate `signer` issued that is not yet due.
fn current_admin(path: &Path, server_url: &str, signer: &Ca, bundle: &str) -> Option<Identity> {
    let conf = AdminConfig::load(path).ok()?;
    if conf.server != server_url || conf.ca != bundle {
        return None;
    }
    let der = certs_from_pem(&conf.cert).ok()?.into_iter().next()?;
    let identity = Identity::from_der(&der).ok()?;
    let good = identity.role == Role::Admin
        && Timestamp::now() < identity.renew_at()
        && issued_by(&der, signer.cert_der());
    good.then_some(identity)
}

/// Whether `cert` is a client certificate `ca` issued and valid now (checked as a TLS server
/// checks a client).
fn issued_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'static>) -> bool {
    let mut roots = RootCertStore::empty();
    if roots.add(ca.clone()).is_err() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .is_ok_and(|v| v.verify_client_cert(cert, &[], UnixTime::now()).is_ok())
}

fn build_tls(
    roots: &[CertificateDer<'static>],
    resolver: &Arc<ReloadingResolver>,
) -> Result<Tls, ClusterError> {
    Ok(Tls {
        server: Arc::new(server_config(roots, Arc::clone(resolver), false)?),
        server_anonymous: Arc::new(server_config(roots, Arc::clone(resolver), true)?),
        client: Arc::new(client_config(roots, Arc::clone(resolver))?),
    })
}

/// Loads `ca.crt` and `ca.key`, refusing a key that does not belong to the certificate.
fn load_signer(dir: &Path) -> Result<Ca, ClusterError> {
    let ca = Ca::load(dir)?;
    let key_path = dir.join(CA_KEY_FILE);
    let key_pem = fs::read_to_string(&key_path).map_err(|source| ClusterError::Io {
        path: key_path.clone(),
        source,
    })?;
    // The resolver checks that a key matches its certificate; a CA certificate is one too.
    if ReloadingResolver::new(ca.cert_pem(), &key_pem).is_err() {
        return Err(PkiError::Certificate {
            reason: format!(
                "{} does not belong to {}",
                key_path.display(),
                dir.join(CA_CERT_FILE).display()
            ),
        }
        .into());
    }
    Ok(ca)
}

/// The previous CA, if a rotation is under way (one equal to the signer is no rotation).
fn load_previous(dir: &Path, signer: &Ca) -> Result<Option<CaCert>, ClusterError> {
    let path = dir.join(PREVIOUS_CA_CERT_FILE);
    let pem = match fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ClusterError::Io { path, source }),
    };
    let der = certs_from_pem(&pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Certificate {
            reason: format!("{}: no certificate in the file", path.display()),
        })?;
    if &der == signer.cert_der() {
        remove_if_present(&path)?;
        return Ok(None);
    }
    Ok(Some(CaCert { pem, der }))
}

/// The cross certificate of the rotation under way: `None`, and the file removed, without a
/// previous CA; `None`, with a warning, if the file is missing or does not certify `signer`'s
/// subject and key under `previous` (see the module docs).
fn load_cross(
    dir: &Path,
    signer: &Ca,
    previous: Option<&CaCert>,
) -> Result<Option<String>, ClusterError> {
    let path = dir.join(CROSS_CA_CERT_FILE);
    let Some(previous) = previous else {
        remove_if_present(&path)?;
        return Ok(None);
    };
    let pem = match fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                "{} is missing: peers that trust only the previous CA cannot verify this \
                 server until they fetch the new bundle",
                path.display()
            );
            return Ok(None);
        }
        Err(source) => return Err(ClusterError::Io { path, source }),
    };
    if !bridges(&pem, signer.cert_der(), &previous.der) {
        tracing::warn!(
            "{} does not certify the CA in {CA_CERT_FILE} under the one in \
             {PREVIOUS_CA_CERT_FILE}: not sent",
            path.display()
        );
        return Ok(None);
    }
    Ok(Some(pem))
}

/// Whether `cross_pem` is one certificate with `signer`'s subject and key, issued by `previous`.
/// A structural check of files this process wrote into a private directory: whoever could forge
/// a signature there holds the CA key anyway.
fn bridges(cross_pem: &str, signer: &CertificateDer<'_>, previous: &CertificateDer<'_>) -> bool {
    let parse = |der| {
        x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, c)| c)
    };
    let certs = certs_from_pem(cross_pem).unwrap_or_default();
    let ([cross], Some(signer), Some(previous)) =
        (certs.as_slice(), parse(signer), parse(previous))
    else {
        return false;
    };
    parse(cross).is_some_and(|cross| {
        cross.subject().as_raw() == signer.subject().as_raw()
            && cross.public_key().raw == signer.public_key().raw
            && cross.issuer().as_raw() == previous.subject().as_raw()
    })
}

/// Makes `ca` the signer: saved whole into the staging directory, then (for a rotation, given
/// the old certificate and the cross certificate as PEM) the cross certificate and the old
/// certificate saved, in that order, then moved into place key first. See
/// [`recover_staged_signer`] for what a crash at each step leaves.
fn install_signer(dir: &Path, ca: &Ca, rotation: Option<(&str, &str)>) -> Result<(), ClusterError> {
    let staging = dir.join(STAGING_DIR);
    remove_dir_if_present(&staging)?;
    private_dir(&staging)?;
    ca.save(&staging)?;
    if let Some((previous_pem, cross_pem)) = rotation {
        write_certificate(&dir.join(CROSS_CA_CERT_FILE), cross_pem)?;
        write_certificate(&dir.join(PREVIOUS_CA_CERT_FILE), previous_pem)?;
    }
    rename(&staging.join(CA_KEY_FILE), &dir.join(CA_KEY_FILE))?;
    rename(&staging.join(CA_CERT_FILE), &dir.join(CA_CERT_FILE))?;
    sync_dir(dir)?;
    remove_dir_if_present(&staging)
}

/// Repairs what a crash in [`install_signer`] left:
///
/// - the staged key still in the staging directory: the signer was not changed; the staging
///   directory is removed, and with it a previous CA equal to the signer and then the cross
///   certificate (the rotation is discarded, as if it never began);
/// - the key moved but not the certificate: the move is finished.
fn recover_staged_signer(dir: &Path) -> Result<(), ClusterError> {
    let staging = dir.join(STAGING_DIR);
    if !staging.exists() {
        return Ok(());
    }
    let staged_cert = staging.join(CA_CERT_FILE);
    if !staging.join(CA_KEY_FILE).exists() && staged_cert.exists() {
        rename(&staged_cert, &dir.join(CA_CERT_FILE))?;
        sync_dir(dir)?;
    }
    // Either way the staging directory is done with; a previous CA equal to the signer (a
    // discarded rotation) is dropped by `load_previous`, then its cross certificate by
    // `load_cross`.
    remove_dir_if_present(&staging)
}

/// Creates `dir` if needed and gives it mode 0700.
fn private_dir(dir: &Path) -> Result<(), ClusterError> {
    let io_err = |source| ClusterError::Io {
        path: dir.to_path_buf(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io_err)
}

fn rename(from: &Path, to: &Path) -> Result<(), ClusterError> {
    fs::rename(from, to).map_err(|source| ClusterError::Io {
        path: from.to_path_buf(),
        source,
    })
}

/// Makes the renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ClusterError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ClusterError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn remove_if_present(path: &Path) -> Result<(), ClusterError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ClusterError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn remove_dir_if_present(path: &Path) -> Result<(), ClusterError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ClusterError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn not_after(der: &CertificateDer<'_>) -> Option<Timestamp> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Timestamp::from_second(cert.validity().not_after.timestamp()).ok()
}

/// Every trusted CA as PEM, `signer` first.
fn bundle_pem(signer: &Ca, previous: Option<&CaCert>) -> String {
    let mut bundle = pem_block(signer.cert_pem());
    if let Some(previous) = previous {
        bundle.push_str(&pem_block(&previous.pem));
    }
    bundle
}

/// A PEM block ending in exactly one newline, so blocks concatenate cleanly.
fn pem_block(pem: &str) -> String {
    format!("{}\n", pem.trim_end())
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::ServerName;

    use super::*;

    fn options() -> PkiOptions {
        PkiOptions {
            server_name: "server".into(),
            sans: Vec::new(),
            cert_lifetime: Duration::from_secs(3600),
            server_url: "https://127.0.0.1:6443".into(),
        }
    }

    /// The pins of the CAs (among those `admin.conf` trusts) that issued the admin certificate
    /// and the server certificate on disk.
    fn issuers(data: &Path) -> (String, String) {
        let conf = AdminConfig::load(&data.join(ADMIN_CONF_FILE)).unwrap();
        let cas = certs_from_pem(&conf.ca).unwrap();
        let admin = certs_from_pem(&conf.cert).unwrap().remove(0);
        let server = fs::read_to_string(data.join(PKI_DIR).join(SERVER_CERT_FILE)).unwrap();
        let server = certs_from_pem(&server).unwrap().remove(0);
        let pin = |ok: &dyn Fn(&CertificateDer<'static>) -> bool| {
            cloudlet_pki::pin_of(cas.iter().find(|ca| ok(ca)).unwrap())
        };
        (
            pin(&|ca| issued_by(&admin, ca)),
            pin(&|ca| server_issued_by(&server, ca)),
        )
    }

    /// Whether a server certificate for `localhost` chains to `ca` (checked as a client checks
    /// a server).
    fn server_issued_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'static>) -> bool {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    /// Stages `new` as a rotation would, up to (not including) moving the key.
    fn stage_rotation(pki_dir: &Path, new: &Ca) {
        let staging = pki_dir.join(STAGING_DIR);
        private_dir(&staging).unwrap();
        new.save(&staging).unwrap();
        let old = Ca::load(pki_dir).unwrap();
        write_certificate(
            &pki_dir.join(CROSS_CA_CERT_FILE),
            &old.cross_sign(new).unwrap(),
        )
        .unwrap();
        fs::copy(
            pki_dir.join(CA_CERT_FILE),
            pki_dir.join(PREVIOUS_CA_CERT_FILE),
        )
        .unwrap();
    }

    /// The certificates the resolver serves, leaf first.
    fn served_chain(pki: &ServerPki) -> Vec<CertificateDer<'static>> {
        pki.resolver().current().cert.clone()
    }

    #[test]
    fn the_ca_hash_follows_a_rotation_and_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ServerPki::open(dir.path(), options()).unwrap();
        let fresh = |pki: &ServerPki| sha256_hex(&pki.ca_bundle_pem());
        let first = pki.ca_hash();
        assert_eq!(first, fresh(&pki));
        pki.rotate_ca().unwrap();
        assert_eq!(pki.ca_hash(), fresh(&pki));
        assert_ne!(pki.ca_hash(), first);
        assert!(pki.finish_rotation().unwrap());
        assert_eq!(pki.ca_hash(), fresh(&pki));
    }

    #[test]
    fn a_rotation_staged_but_not_moved_is_discarded_at_open() {
        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        let pin = ServerPki::open(data.path(), options()).unwrap().pin();
        stage_rotation(&pki_dir, &Ca::create().unwrap());

        let pki = ServerPki::open(data.path(), options()).unwrap();
        assert_eq!(pki.pin(), pin);
        assert_eq!(certs_from_pem(&pki.ca_bundle_pem()).unwrap().len(), 1);
        assert!(!pki_dir.join(STAGING_DIR).exists());
        assert!(!pki_dir.join(PREVIOUS_CA_CERT_FILE).exists());
        assert!(!pki_dir.join(CROSS_CA_CERT_FILE).exists());
        assert_eq!(served_chain(&pki).len(), 1);
        assert_eq!(issuers(data.path()), (pin.clone(), pin));
    }

    #[test]
    fn a_rotation_whose_key_moved_is_finished_at_open_and_reissues_admin_conf() {
        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        let old = ServerPki::open(data.path(), options()).unwrap().pin();
        let new = Ca::create().unwrap();
        stage_rotation(&pki_dir, &new);
        rename(
            &pki_dir.join(STAGING_DIR).join(CA_KEY_FILE),
            &pki_dir.join(CA_KEY_FILE),
        )
        .unwrap();
        // Here ca.key is the new CA's and ca.crt the old one's.

        let pki = ServerPki::open(data.path(), options()).unwrap();
        assert_eq!(pki.pin(), new.pin());
        let bundle = certs_from_pem(&pki.ca_bundle_pem()).unwrap();
        let pins: Vec<_> = bundle.iter().map(|c| cloudlet_pki::pin_of(c)).collect();
        assert_eq!(pins, [new.pin(), old]);
        assert!(!pki_dir.join(STAGING_DIR).exists());
        // The cross certificate written before the crash follows the server's certificate.
        let cross = fs::read_to_string(pki_dir.join(CROSS_CA_CERT_FILE)).unwrap();
        let chain = served_chain(&pki);
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1..], certs_from_pem(&cross).unwrap());
        // admin.conf (by the old CA, without the new one) was rewritten by the new CA.
        assert_eq!(issuers(data.path()), (new.pin(), new.pin()));
        assert_eq!(
            AdminConfig::load(&data.path().join(ADMIN_CONF_FILE))
                .unwrap()
                .ca,
            pki.ca_bundle_pem()
        );
    }

    #[test]
    fn a_cross_certificate_without_a_previous_ca_is_removed_at_open() {
        // A crash in finish_rotation between removing the previous CA and the cross certificate.
        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        let pki = ServerPki::open(data.path(), options()).unwrap();
        pki.rotate_ca().unwrap();
        drop(pki);
        fs::remove_file(pki_dir.join(PREVIOUS_CA_CERT_FILE)).unwrap();

        let pki = ServerPki::open(data.path(), options()).unwrap();
        assert!(!pki_dir.join(CROSS_CA_CERT_FILE).exists());
        assert_eq!(served_chain(&pki).len(), 1);
        assert_eq!(certs_from_pem(&pki.ca_bundle_pem()).unwrap().len(), 1);
    }

    #[test]
    fn a_rotation_without_a_usable_cross_certificate_serves_the_certificate_alone() {
        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        let pki = ServerPki::open(data.path(), options()).unwrap();
        pki.rotate_ca().unwrap();
        let bundle = pki.ca_bundle_pem();
        drop(pki);
        let cross = pki_dir.join(CROSS_CA_CERT_FILE);

        // Another CA's cross certificate (a mixed-up restore): not sent, the file left alone.
        let stranger = Ca::create().unwrap();
        let wrong = stranger.cross_sign(&Ca::load(&pki_dir).unwrap()).unwrap();
        write_certificate(&cross, &wrong).unwrap();
        let pki = ServerPki::open(data.path(), options()).unwrap();
        assert_eq!(pki.ca_bundle_pem(), bundle, "still rotating");
        assert_eq!(served_chain(&pki).len(), 1);
        assert_eq!(fs::read_to_string(&cross).unwrap(), wrong);
        drop(pki);

        // None at all (a rotation begun by a version without cross certificates).
        fs::remove_file(&cross).unwrap();
        let pki = ServerPki::open(data.path(), options()).unwrap();
        assert_eq!(pki.ca_bundle_pem(), bundle, "still rotating");
        assert_eq!(served_chain(&pki).len(), 1);
        // Finishing works as ever.
        assert!(pki.finish_rotation().unwrap());
        assert_eq!(served_chain(&pki).len(), 1);
    }

    #[test]
    fn bridges_checks_subject_key_and_issuer() {
        let (old, new, other) = (
            Ca::create().unwrap(),
            Ca::create().unwrap(),
            Ca::create().unwrap(),
        );
        let cross = old.cross_sign(&new).unwrap();
        assert!(bridges(&cross, new.cert_der(), old.cert_der()));
        assert!(!bridges(&cross, other.cert_der(), old.cert_der()));
        assert!(!bridges(&cross, new.cert_der(), other.cert_der()));
        assert!(!bridges(&cross, old.cert_der(), new.cert_der()));
        let two = format!("{cross}{cross}");
        assert!(!bridges(&two, new.cert_der(), old.cert_der()));
        assert!(!bridges("", new.cert_der(), old.cert_der()));
    }

    #[test]
    fn a_first_ca_whose_key_moved_is_finished_and_one_not_moved_is_made_again() {
        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        private_dir(&pki_dir).unwrap();
        let staging = pki_dir.join(STAGING_DIR);
        private_dir(&staging).unwrap();
        let first = Ca::create().unwrap();
        first.save(&staging).unwrap();
        rename(&staging.join(CA_KEY_FILE), &pki_dir.join(CA_KEY_FILE)).unwrap();
        assert_eq!(
            ServerPki::open(data.path(), options()).unwrap().pin(),
            first.pin()
        );

        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        let staging = pki_dir.join(STAGING_DIR);
        private_dir(&staging).unwrap();
        first.save(&staging).unwrap();
        let pki = ServerPki::open(data.path(), options()).unwrap();
        assert_ne!(pki.pin(), first.pin());
        assert!(!staging.exists());
    }

    #[test]
    fn open_refuses_a_ca_key_that_is_not_the_certificates_or_has_no_certificate() {
        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        drop(ServerPki::open(data.path(), options()).unwrap());
        let key = KeyPair::generate().unwrap();
        key.save(&pki_dir.join(CA_KEY_FILE)).unwrap();
        let err = ServerPki::open(data.path(), options())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.key does not belong to"), "{err}");

        fs::remove_file(pki_dir.join(CA_CERT_FILE)).unwrap();
        let err = ServerPki::open(data.path(), options())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists without ca.crt"), "{err}");
    }

    #[test]
    fn open_refuses_a_server_url_that_is_not_https() {
        let data = tempfile::tempdir().unwrap();
        let mut options = options();
        options.server_url = "http://127.0.0.1:6443".into();
        let err = ServerPki::open(data.path(), options).unwrap_err();
        assert!(
            matches!(&err, ClusterError::Invalid(m) if m.contains("http://")),
            "{err}"
        );
        assert!(!data.path().join(PKI_DIR).exists());
    }

    #[test]
    fn a_previous_ca_key_is_deleted() {
        let data = tempfile::tempdir().unwrap();
        let pki_dir = data.path().join(PKI_DIR);
        private_dir(&pki_dir).unwrap();
        let stray = pki_dir.join(PREVIOUS_CA_KEY_FILE);
        KeyPair::generate().unwrap().save(&stray).unwrap();
        drop(ServerPki::open(data.path(), options()).unwrap());
        assert!(!stray.exists());
    }

    #[test]
    fn backdating_is_a_tenth_of_the_lifetime_at_most_a_minute() {
        let cases = [(3, 0), (30, 3), (3600, 60), (90 * 24 * 3600, 60)];
        for (lifetime, back) in cases {
            let lifetime = Duration::from_secs(lifetime);
            let now = Timestamp::now().as_second();
            let spec = spec(Role::Node, "n", lifetime).unwrap();
            let (cert, _) = Ca::create().unwrap().issue(&spec).unwrap();
            let id = Identity::from_pem(&cert).unwrap();
            let backdated = now - id.not_before.as_second();
            assert!(
                (back..=back + 1).contains(&backdated),
                "{lifetime:?}: {backdated}"
            );
            let life = id.not_after.as_second() - id.not_before.as_second();
            assert_eq!(
                life,
                i64::try_from(lifetime.as_secs()).unwrap() + back,
                "{lifetime:?}"
            );
        }
    }
}
