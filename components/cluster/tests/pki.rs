//! `ServerPki` on real files with real TLS handshakes on loopback: what `open` writes and keeps,
//! the admin credentials it hands out, renewal at two thirds of a (short) lifetime, node
//! certificates, and a CA rotation's overlap (the old CA's certificates work until the rotation
//! is finished, also across a restart, and the cross certificate lets peers that trust only the
//! old CA verify the server's new certificate, as a server and as a client). Every wait is
//! bounded by a timeout or computed from a certificate's renewal time.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_api::AdminConfig;
use cloudlet_cluster::ClusterError;
use cloudlet_cluster::pki::{
    ADMIN_CONF_FILE, CROSS_CA_CERT_FILE, PKI_DIR, PREVIOUS_CA_CERT_FILE, PkiOptions,
    SERVER_CERT_FILE, SERVER_KEY_FILE, ServerPki,
};
use cloudlet_pki::{
    Identity, KeyPair, ReloadingResolver, Role, certs_from_pem, client_config, pin_of,
    server_config, verified_client_config_without_cert,
};
use jiff::Timestamp;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

const WAIT: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);

fn options(cert_lifetime: Duration) -> PkiOptions {
    PkiOptions {
        server_name: "server".into(),
        sans: vec!["cloudlet.example".into(), "10.9.8.7".into()],
        cert_lifetime,
        server_url: "https://127.0.0.1:6443".into(),
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn serial_of_resolver(pki: &ServerPki) -> String {
    let current = pki.resolver().current();
    Identity::from_der(current.end_entity_cert().unwrap())
        .unwrap()
        .serial
}

fn identity_of_file(path: &Path) -> Identity {
    Identity::from_pem(&fs::read_to_string(path).unwrap()).unwrap()
}

/// The client an operator builds from `admin.conf`.
fn admin_client(data: &Path) -> Arc<ClientConfig> {
    let conf = AdminConfig::load(&data.join(ADMIN_CONF_FILE)).unwrap();
    let resolver = Arc::new(ReloadingResolver::new(&conf.cert, &conf.key).unwrap());
    Arc::new(client_config(&certs_from_pem(&conf.ca).unwrap(), resolver).unwrap())
}

/// A node's client: its certificate (signed by whichever CA signs now) and `roots`.
fn node_client(
    pki: &ServerPki,
    node: &str,
    roots: &[CertificateDer<'static>],
) -> Arc<ClientConfig> {
    let key = KeyPair::generate().unwrap();
    let (cert, _) = pki.sign_node(&key.csr_pem(node).unwrap(), node).unwrap();
    let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
    Arc::new(client_config(roots, resolver).unwrap())
}

/// One handshake as each side saw it: the server, the client's identity (`None`: no
/// certificate) or why it refused; the client, the server's identity or why it refused.
struct Handshake {
    server_saw: Result<Option<Identity>, String>,
    client_saw: Result<Identity, String>,
}

async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Handshake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().map(|c| c[0].clone());
        Ok::<_, String>(peer.map(|der| Identity::from_der(&der).unwrap()))
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let connected = timeout(WAIT, TlsConnector::from(client).connect(name, tcp))
        .await
        .unwrap();
    let client_saw = match &connected {
        Ok(tls) => {
            Ok(Identity::from_der(&tls.get_ref().1.peer_certificates().unwrap()[0]).unwrap())
        }
        Err(e) => Err(e.to_string()),
    };
    // TLS 1.3: the client is done before the server has checked its certificate; keep the
    // connection open until the server has decided.
    let server_saw = timeout(WAIT, accept).await.unwrap().unwrap();
    drop(connected);
    Handshake {
        server_saw,
        client_saw,
    }
}

#[test]
fn open_writes_private_files_and_reopen_keeps_the_ca_with_a_new_server_cert() {
    let data = tempfile::tempdir().unwrap();
    let pki_dir = data.path().join(PKI_DIR);
    let before = Timestamp::now();
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();

    assert_eq!(mode(&pki_dir), 0o700);
    for key in ["ca.key", SERVER_KEY_FILE] {
        assert_eq!(mode(&pki_dir.join(key)), 0o600, "{key}");
    }
    for cert in ["ca.crt", SERVER_CERT_FILE] {
        assert_eq!(mode(&pki_dir.join(cert)), 0o644, "{cert}");
    }
    assert_eq!(mode(&data.path().join(ADMIN_CONF_FILE)), 0o600);
    assert!(!pki_dir.join(PREVIOUS_CA_CERT_FILE).exists());
    let mut names: Vec<_> = fs::read_dir(&pki_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "ca.key", "server.crt", "server.key"]);

    // The server certificate: the server's name and role, backdated a minute for clock skew,
    // valid for the lifetime from now; the file is what the resolver serves.
    let server = identity_of_file(&pki_dir.join(SERVER_CERT_FILE));
    assert_eq!(
        (server.role, server.name.as_str()),
        (Role::Server, "server")
    );
    assert_eq!(server.serial, serial_of_resolver(&pki));
    let backdated = before.as_second() - server.not_before.as_second();
    assert!((59..=61).contains(&backdated), "{backdated}");
    assert_eq!(
        server.not_after.as_second() - server.not_before.as_second(),
        3660
    );

    // The bundle is the CA; the pin is its certificate's; the hash is the bundle's.
    let ca_pem = fs::read_to_string(pki_dir.join("ca.crt")).unwrap();
    let bundle = certs_from_pem(&pki.ca_bundle_pem()).unwrap();
    assert_eq!(bundle, certs_from_pem(&ca_pem).unwrap());
    assert_eq!(pki.pin(), pin_of(&bundle[0]));
    assert_eq!(pki.ca_hash(), pin_of(pki.ca_bundle_pem().as_bytes()));
    let expiries: Vec<_> = pki.expiries().into_iter().map(|(what, _)| what).collect();
    assert_eq!(expiries, ["ca", "server", "admin"]);

    let admin_conf = fs::read_to_string(data.path().join(ADMIN_CONF_FILE)).unwrap();
    let conf = AdminConfig::load(&data.path().join(ADMIN_CONF_FILE)).unwrap();
    assert_eq!(conf.server, "https://127.0.0.1:6443");
    assert_eq!(conf.ca, pki.ca_bundle_pem());
    let admin = Identity::from_pem(&conf.cert).unwrap();
    assert_eq!((admin.role, admin.name.as_str()), (Role::Admin, "admin"));

    let (pin, old_serial) = (pki.pin(), server.serial);
    drop(pki);
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    assert_eq!(pki.pin(), pin);
    let server = identity_of_file(&pki_dir.join(SERVER_CERT_FILE));
    assert_ne!(server.serial, old_serial);
    assert_eq!(server.serial, serial_of_resolver(&pki));
    // admin.conf was still good: kept as it was.
    assert_eq!(
        fs::read_to_string(data.path().join(ADMIN_CONF_FILE)).unwrap(),
        admin_conf
    );
}

#[test]
fn reopen_rewrites_an_admin_conf_that_is_unreadable_for_another_url_or_from_another_ca() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join(ADMIN_CONF_FILE);
    drop(ServerPki::open(data.path(), options(HOUR)).unwrap());

    fs::write(&path, "not: [an admin config").unwrap();
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    assert_eq!(AdminConfig::load(&path).unwrap().ca, pki.ca_bundle_pem());
    assert_eq!(mode(&path), 0o600);
    drop(pki);

    let mut moved = options(HOUR);
    moved.server_url = "https://10.9.8.7:6443".into();
    drop(ServerPki::open(data.path(), moved).unwrap());
    assert_eq!(
        AdminConfig::load(&path).unwrap().server,
        "https://10.9.8.7:6443"
    );

    // A new CA (the old one's files gone): the admin.conf of the old one is replaced.
    let old = AdminConfig::load(&path).unwrap();
    fs::remove_dir_all(data.path().join(PKI_DIR)).unwrap();
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    let new = AdminConfig::load(&path).unwrap();
    assert_ne!(new.ca, old.ca);
    assert_ne!(new.cert, old.cert);
    assert_eq!(new.ca, pki.ca_bundle_pem());
}

#[tokio::test]
async fn admin_conf_and_the_server_authenticate_each_other_over_tls() {
    let data = tempfile::tempdir().unwrap();
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    let admin = admin_client(data.path());

    // Every SAN: the configured ones, localhost and 127.0.0.1.
    for name in ["localhost", "127.0.0.1", "cloudlet.example", "10.9.8.7"] {
        let h = handshake(pki.server_tls(false), Arc::clone(&admin), name).await;
        let client = h.server_saw.unwrap().unwrap();
        assert_eq!((client.role, client.name.as_str()), (Role::Admin, "admin"));
        let server = h.client_saw.unwrap();
        assert_eq!(
            (server.role, server.name.as_str()),
            (Role::Server, "server")
        );
    }
    let h = handshake(
        pki.server_tls(false),
        Arc::clone(&admin),
        "elsewhere.example",
    )
    .await;
    assert!(h.client_saw.is_err());
    assert!(h.server_saw.is_err());

    // Without a certificate: only where anonymous clients are allowed.
    let roots = certs_from_pem(&pki.ca_bundle_pem()).unwrap();
    let anonymous = Arc::new(verified_client_config_without_cert(&roots).unwrap());
    let h = handshake(pki.server_tls(true), Arc::clone(&anonymous), "localhost").await;
    assert_eq!(h.server_saw.unwrap(), None);
    let h = handshake(pki.server_tls(false), anonymous, "localhost").await;
    assert!(h.server_saw.is_err());

    // A certificate from another CA is refused.
    let other = tempfile::tempdir().unwrap();
    let stranger = ServerPki::open(other.path(), options(HOUR)).unwrap();
    let h = handshake(
        pki.server_tls(true),
        node_client(&stranger, "n9", &roots),
        "localhost",
    )
    .await;
    assert!(h.server_saw.is_err());

    // Configs are cached until the trust changes.
    assert!(Arc::ptr_eq(&pki.server_tls(false), &pki.server_tls(false)));
    assert!(Arc::ptr_eq(&pki.client_tls(), &pki.client_tls()));
}

#[test]
fn renew_due_waits_for_two_thirds_of_the_life_and_the_resolver_serves_the_new_cert() {
    let data = tempfile::tempdir().unwrap();
    let pki_dir = data.path().join(PKI_DIR);
    let pki = ServerPki::open(data.path(), options(Duration::from_secs(3))).unwrap();
    assert_eq!(pki.renew_due().unwrap(), Vec::<String>::new());
    let first = pki.next_renewal();
    assert!(first > Timestamp::now());
    let old_server = serial_of_resolver(&pki);
    let old_admin = fs::read_to_string(data.path().join(ADMIN_CONF_FILE)).unwrap();

    let mut renewed = Vec::new();
    // The server and admin certificates may have been issued either side of a second boundary:
    // their two-thirds points are then a second apart.
    while renewed.len() < 2 {
        sleep_until(pki.next_renewal());
        let now = pki.renew_due().unwrap();
        assert!(!now.is_empty());
        renewed.extend(now);
    }
    renewed.sort();
    assert_eq!(renewed, ["admin", "server"]);

    let new_server = serial_of_resolver(&pki);
    assert_ne!(new_server, old_server);
    assert_eq!(
        identity_of_file(&pki_dir.join(SERVER_CERT_FILE)).serial,
        new_server
    );
    assert_ne!(
        fs::read_to_string(data.path().join(ADMIN_CONF_FILE)).unwrap(),
        old_admin
    );
    AdminConfig::load(&data.path().join(ADMIN_CONF_FILE)).unwrap();
    assert!(pki.next_renewal() > first);
}

fn sleep_until(at: Timestamp) {
    let wait = at.duration_since(Timestamp::now());
    if wait.is_positive() {
        std::thread::sleep(wait.unsigned_abs());
    }
}

#[test]
fn sign_node_certifies_the_csr_key_as_the_node_and_nothing_else() {
    let data = tempfile::tempdir().unwrap();
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    let key = KeyPair::generate().unwrap();
    // The CSR asks for another name: the CA decides.
    let csr = key.csr_pem("someone-else").unwrap();

    let sans = |cert: &str| -> Vec<String> {
        let der = certs_from_pem(cert).unwrap().remove(0);
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ext = x.subject_alternative_name().unwrap().unwrap();
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    };

    let before = Timestamp::now();
    let (cert, id) = pki.sign_node(&csr, "node-1").unwrap();
    assert_eq!((id.role, id.name.as_str()), (Role::Node, "node-1"));
    assert_eq!(id, Identity::from_pem(&cert).unwrap());
    // One SAN, the node's name: the address it reported, or names in its CSR, never.
    assert_eq!(sans(&cert), ["dns:node-1"]);
    let remaining = id.not_after.as_second() - before.as_second();
    assert!((3599..=3601).contains(&remaining), "{remaining}");
    // The certified key is the CSR's: the pair loads, another key does not.
    ReloadingResolver::new(&cert, &key.to_pem()).unwrap();
    let other = KeyPair::generate().unwrap();
    assert!(ReloadingResolver::new(&cert, &other.to_pem()).is_err());

    let err = pki.sign_node("garbage", "node-1").unwrap_err();
    assert!(matches!(err, ClusterError::Pki(_)), "{err}");
}

#[tokio::test]
async fn client_tls_reaches_a_node_as_the_server() {
    let data = tempfile::tempdir().unwrap();
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    let key = KeyPair::generate().unwrap();
    let (cert, _) = pki
        .sign_node(&key.csr_pem("node-1").unwrap(), "node-1")
        .unwrap();
    let roots = certs_from_pem(&pki.ca_bundle_pem()).unwrap();
    let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
    let agent = Arc::new(server_config(&roots, resolver, false).unwrap());

    let h = handshake(agent, pki.client_tls(), "node-1").await;
    let server = h.server_saw.unwrap().unwrap();
    assert_eq!(
        (server.role, server.name.as_str()),
        (Role::Server, "server")
    );
    let node = h.client_saw.unwrap();
    assert_eq!((node.role, node.name.as_str()), (Role::Node, "node-1"));
}

#[tokio::test]
async fn rotation_trusts_the_old_ca_until_finished_also_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let pki_dir = data.path().join(PKI_DIR);
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    let (old_pin, old_hash, old_bundle) = (pki.pin(), pki.ca_hash(), pki.ca_bundle_pem());
    let old_ca = certs_from_pem(&old_bundle).unwrap().remove(0);
    let old_admin = fs::read_to_string(data.path().join(ADMIN_CONF_FILE)).unwrap();
    let old_server_tls = pki.server_tls(false);
    // A node certificate signed by the old CA, kept across the rotation.
    let key = KeyPair::generate().unwrap();
    let (old_node_cert, _) = pki
        .sign_node(&key.csr_pem("node-1").unwrap(), "node-1")
        .unwrap();
    let old_node = Arc::new(ReloadingResolver::new(&old_node_cert, &key.to_pem()).unwrap());

    pki.rotate_ca().unwrap();

    assert_ne!(pki.pin(), old_pin);
    assert_ne!(pki.ca_hash(), old_hash);
    let bundle = certs_from_pem(&pki.ca_bundle_pem()).unwrap();
    assert_eq!(bundle.len(), 2);
    assert_eq!(pin_of(&bundle[0]), pki.pin(), "the new signer comes first");
    assert_eq!(bundle[1], old_ca);
    assert_eq!(
        certs_from_pem(&fs::read_to_string(pki_dir.join(PREVIOUS_CA_CERT_FILE)).unwrap()).unwrap(),
        std::slice::from_ref(&old_ca)
    );
    assert_eq!(
        pki.expiries()
            .into_iter()
            .map(|(what, _)| what)
            .collect::<Vec<_>>(),
        ["ca", "ca (previous)", "server", "admin"]
    );
    assert!(!Arc::ptr_eq(&pki.server_tls(false), &old_server_tls));

    // The server certificate and admin.conf are the new CA's: a client trusting only the new CA
    // accepts the server, and the server accepts the new admin certificate.
    assert_ne!(
        fs::read_to_string(data.path().join(ADMIN_CONF_FILE)).unwrap(),
        old_admin
    );
    let only_new = &bundle[..1];
    let h = handshake(
        pki.server_tls(false),
        admin_client(data.path()),
        "localhost",
    )
    .await;
    assert_eq!(h.server_saw.unwrap().unwrap().role, Role::Admin);
    let new_node = node_client(&pki, "node-2", only_new);
    let h = handshake(pki.server_tls(false), new_node, "localhost").await;
    assert_eq!(h.server_saw.unwrap().unwrap().name, "node-2");

    // The old CA's node certificate still passes.
    let old_node_client = Arc::new(client_config(&bundle, Arc::clone(&old_node)).unwrap());
    let h = handshake(
        pki.server_tls(false),
        Arc::clone(&old_node_client),
        "localhost",
    )
    .await;
    assert_eq!(h.server_saw.unwrap().unwrap().name, "node-1");

    // One rotation at a time.
    let err = pki.rotate_ca().unwrap_err();
    assert!(matches!(err, ClusterError::Conflict(_)), "{err}");

    // A restart mid-rotation trusts both still.
    let (pin, bundle_pem) = (pki.pin(), pki.ca_bundle_pem());
    drop(pki);
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    assert_eq!(pki.pin(), pin);
    assert_eq!(pki.ca_bundle_pem(), bundle_pem);
    let h = handshake(
        pki.server_tls(false),
        Arc::clone(&old_node_client),
        "localhost",
    )
    .await;
    assert_eq!(h.server_saw.unwrap().unwrap().name, "node-1");

    // Finished: the old CA's certificate is refused, the new CA's still passes.
    assert!(pki.finish_rotation().unwrap());
    assert!(!pki.finish_rotation().unwrap());
    assert!(!pki_dir.join(PREVIOUS_CA_CERT_FILE).exists());
    let bundle = certs_from_pem(&pki.ca_bundle_pem()).unwrap();
    assert_eq!(pin_of(&bundle[0]), pin);
    assert_eq!(bundle.len(), 1);
    let h = handshake(pki.server_tls(false), old_node_client, "localhost").await;
    assert!(h.server_saw.is_err());
    let h = handshake(
        pki.server_tls(false),
        node_client(&pki, "node-3", &bundle),
        "localhost",
    )
    .await;
    assert_eq!(h.server_saw.unwrap().unwrap().name, "node-3");
    // admin.conf no longer carries the old CA, and still works.
    let conf = AdminConfig::load(&data.path().join(ADMIN_CONF_FILE)).unwrap();
    assert_eq!(conf.ca, pki.ca_bundle_pem());
    let h = handshake(
        pki.server_tls(false),
        admin_client(data.path()),
        "localhost",
    )
    .await;
    assert_eq!(h.server_saw.unwrap().unwrap().role, Role::Admin);
    assert_eq!(
        pki.expiries()
            .into_iter()
            .map(|(what, _)| what)
            .collect::<Vec<_>>(),
        ["ca", "server", "admin"]
    );
}

#[test]
fn server_pki_is_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<ServerPki>();
}

/// The certificates the server presents, leaf first.
fn served_chain(pki: &ServerPki) -> Vec<CertificateDer<'static>> {
    pki.resolver().current().cert.clone()
}

/// A client without a certificate trusting only `roots`: a joining agent's.
fn anonymous(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    Arc::new(verified_client_config_without_cert(roots).unwrap())
}

/// The listener of an agent that joined before the rotation: its certificate from the old CA,
/// trusting only `roots`.
fn agent_listener(
    pki: &ServerPki,
    roots: &[CertificateDer<'static>],
) -> (Arc<ServerConfig>, Arc<ReloadingResolver>) {
    let key = KeyPair::generate().unwrap();
    let (cert, _) = pki
        .sign_node(&key.csr_pem("node-1").unwrap(), "node-1")
        .unwrap();
    let resolver = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
    let config = server_config(roots, Arc::clone(&resolver), false).unwrap();
    (Arc::new(config), resolver)
}

/// Asserts that peers trusting only `old` (the CA before the rotation) verify the server: a
/// node of the old CA and a joining agent reach it, and an agent's listener accepts its client
/// certificate; and that peers trusting only `new` do too.
async fn both_cas_verify_the_server(
    pki: &ServerPki,
    old: &CertificateDer<'static>,
    new: &CertificateDer<'static>,
    old_node: &Arc<ReloadingResolver>,
    listener: &Arc<ServerConfig>,
) {
    let only_old = std::slice::from_ref(old);
    let only_new = std::slice::from_ref(new);

    let old_node = Arc::new(client_config(only_old, Arc::clone(old_node)).unwrap());
    let h = handshake(pki.server_tls(false), old_node, "localhost").await;
    assert_eq!(h.client_saw.unwrap().role, Role::Server);
    assert_eq!(h.server_saw.unwrap().unwrap().name, "node-1");
    let h = handshake(pki.server_tls(true), anonymous(only_old), "localhost").await;
    assert_eq!(h.client_saw.unwrap().role, Role::Server);
    assert_eq!(h.server_saw.unwrap(), None);

    let h = handshake(pki.server_tls(true), anonymous(only_new), "localhost").await;
    assert_eq!(h.client_saw.unwrap().role, Role::Server);
    let new_node = node_client(pki, "node-2", only_new);
    let h = handshake(pki.server_tls(false), new_node, "localhost").await;
    assert_eq!(h.client_saw.unwrap().role, Role::Server);
    assert_eq!(h.server_saw.unwrap().unwrap().name, "node-2");

    // The server reaching an agent that has not fetched the new bundle yet.
    let h = handshake(Arc::clone(listener), pki.client_tls(), "node-1").await;
    assert_eq!(h.client_saw.unwrap().name, "node-1");
    let server = h.server_saw.unwrap().unwrap();
    assert_eq!(
        (server.role, server.name.as_str()),
        (Role::Server, "server")
    );
}

#[tokio::test]
async fn during_a_rotation_peers_trusting_only_the_old_ca_verify_the_server_until_finished() {
    let data = tempfile::tempdir().unwrap();
    let pki_dir = data.path().join(PKI_DIR);
    let cross_file = pki_dir.join(CROSS_CA_CERT_FILE);
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    let old = certs_from_pem(&pki.ca_bundle_pem()).unwrap().remove(0);
    let only_old = std::slice::from_ref(&old);
    // An agent of the old CA, trusting only the old CA (as a client and as a listener).
    let key = KeyPair::generate().unwrap();
    let (cert, _) = pki
        .sign_node(&key.csr_pem("node-1").unwrap(), "node-1")
        .unwrap();
    let old_node = Arc::new(ReloadingResolver::new(&cert, &key.to_pem()).unwrap());
    let (listener, _) = agent_listener(&pki, only_old);
    assert_eq!(served_chain(&pki).len(), 1);
    assert!(!cross_file.exists());

    pki.rotate_ca().unwrap();
    let new = certs_from_pem(&pki.ca_bundle_pem()).unwrap().remove(0);
    assert_eq!(pin_of(&new), pki.pin());

    // The chain: the new CA's server certificate, then the cross certificate of the file, which
    // is also in server.crt; the bundle holds only the two CAs.
    let cross = certs_from_pem(&fs::read_to_string(&cross_file).unwrap()).unwrap();
    assert_eq!(cross.len(), 1);
    assert_eq!(mode(&cross_file), 0o644);
    let chain = served_chain(&pki);
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], cross[0]);
    let on_disk = fs::read_to_string(pki_dir.join(SERVER_CERT_FILE)).unwrap();
    assert_eq!(certs_from_pem(&on_disk).unwrap(), chain);
    assert_eq!(
        certs_from_pem(&pki.ca_bundle_pem()).unwrap(),
        [new.clone(), old.clone()]
    );
    // Node certificates are the certificate alone: only the server, trusting both, checks them.
    let (node_cert, _) = pki
        .sign_node(&KeyPair::generate().unwrap().csr_pem("n").unwrap(), "n")
        .unwrap();
    assert_eq!(certs_from_pem(&node_cert).unwrap().len(), 1);

    both_cas_verify_the_server(&pki, &old, &new, &old_node, &listener).await;

    // A restart mid-rotation serves the cross certificate with its new server certificate.
    let serial = serial_of_resolver(&pki);
    drop(pki);
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    assert_ne!(serial_of_resolver(&pki), serial);
    assert_eq!(served_chain(&pki)[1..], cross);
    both_cas_verify_the_server(&pki, &old, &new, &old_node, &listener).await;

    // Finished: the server's certificate alone, and the old CA alone verifies nothing.
    assert!(pki.finish_rotation().unwrap());
    assert!(!cross_file.exists());
    let chain = served_chain(&pki);
    assert_eq!(chain.len(), 1);
    let on_disk = fs::read_to_string(pki_dir.join(SERVER_CERT_FILE)).unwrap();
    assert_eq!(certs_from_pem(&on_disk).unwrap(), chain);
    let h = handshake(pki.server_tls(true), anonymous(only_old), "localhost").await;
    let err = h.client_saw.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let h = handshake(listener, pki.client_tls(), "node-1").await;
    assert!(h.server_saw.is_err());
    let only_new = std::slice::from_ref(&new);
    let h = handshake(pki.server_tls(true), anonymous(only_new), "localhost").await;
    assert_eq!(h.client_saw.unwrap().role, Role::Server);
    let (new_listener, _) = agent_listener(&pki, only_new);
    let h = handshake(new_listener, pki.client_tls(), "node-1").await;
    assert_eq!(h.server_saw.unwrap().unwrap().role, Role::Server);

    // And across a restart.
    drop(pki);
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    assert_eq!(served_chain(&pki).len(), 1);
    assert!(!cross_file.exists());
}

#[tokio::test]
async fn renewals_during_a_rotation_keep_the_cross_certificate() {
    let data = tempfile::tempdir().unwrap();
    let pki = ServerPki::open(data.path(), options(Duration::from_secs(3))).unwrap();
    let old = certs_from_pem(&pki.ca_bundle_pem()).unwrap().remove(0);
    pki.rotate_ca().unwrap();
    let (serial, cross) = (serial_of_resolver(&pki), served_chain(&pki)[1].clone());

    while serial_of_resolver(&pki) == serial {
        sleep_until(pki.next_renewal());
        pki.renew_due().unwrap();
    }
    assert_eq!(served_chain(&pki)[1..], [cross]);
    let h = handshake(
        pki.server_tls(true),
        anonymous(std::slice::from_ref(&old)),
        "localhost",
    )
    .await;
    assert_eq!(h.client_saw.unwrap().role, Role::Server);
}

#[tokio::test]
async fn a_joining_agent_verifies_the_server_with_whichever_ca_its_token_pins() {
    let data = tempfile::tempdir().unwrap();
    let pki = ServerPki::open(data.path(), options(HOUR)).unwrap();
    let old_pin = pki.pin();
    pki.rotate_ca().unwrap();

    // As the agent does: download the bundle, keep only the CA the token pins, verify with it.
    let pinned = |pin: &str| -> Vec<CertificateDer<'static>> {
        certs_from_pem(&pki.ca_bundle_pem())
            .unwrap()
            .into_iter()
            .filter(|c| pin_of(c) == pin)
            .collect()
    };
    for pin in [pki.pin(), old_pin.clone()] {
        let roots = pinned(&pin);
        assert_eq!(roots.len(), 1);
        let h = handshake(pki.server_tls(true), anonymous(&roots), "localhost").await;
        assert_eq!(h.client_saw.unwrap().role, Role::Server, "pin {pin}");
        assert_eq!(h.server_saw.unwrap(), None);
    }

    // Once finished, the old CA is no longer in the bundle: a token pinning it finds nothing.
    pki.finish_rotation().unwrap();
    assert!(pinned(&old_pin).is_empty());
    let roots = pinned(&pki.pin());
    let h = handshake(pki.server_tls(true), anonymous(&roots), "localhost").await;
    assert_eq!(h.client_saw.unwrap().role, Role::Server);
}
