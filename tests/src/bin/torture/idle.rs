//! The idle phase: many anonymous TLS connections opened from an attacker's namespace, the
//! handshake done and then nothing sent, held open while the agents heartbeat. Counts how many
//! the server let in, how many it cut while they idled, and what the heartbeats did meanwhile.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloudlet_tests::fleet::{Fleet, SERVER_PORT};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::Rows;
use crate::heartbeats;
use crate::hostile::{agent_rows, enter_netns};

/// Threads opening connections.
const OPENERS: u64 = 8;
/// How long one connect plus handshake may take.
const OPEN_DEADLINE: Duration = Duration::from_secs(5);

type Held = StreamOwned<ClientConnection, TcpStream>;

/// Opens `count` idle connections from the `attacker` namespace, holds them `hold`, and adds
/// the phase's rows.
pub fn run(fleet: &Fleet, count: u64, hold: Duration, rows: &mut Rows) {
    let server = fleet.net().node("s");
    let addr = SocketAddr::from((server.addr, SERVER_PORT));
    let ca_pem = std::fs::read_to_string(fleet.data_dir("s").join("pki/ca.crt")).expect("CA");
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM");
    let config = cloudlet_tests::https::client_trusting(ca, &rustls::version::TLS13);
    let name = ServerName::IpAddress(server.addr.into());
    let attacker_ns = format!("/run/netns/{}", fleet.net().node("attacker").ns);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (held, refused, seen, cut) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| heartbeats::watch(fleet, &stop));
        let openers: Vec<_> = (0..OPENERS)
            .map(|t| {
                let (config, name, ns) = (Arc::clone(&config), name.clone(), attacker_ns.as_str());
                let n = count / OPENERS + u64::from(t < count % OPENERS);
                scope.spawn(move || {
                    enter_netns(ns);
                    let mut held: Vec<Held> = Vec::new();
                    let mut refused = 0u64;
                    for _ in 0..n {
                        if crate::stopping() {
                            break;
                        }
                        match open(addr, &config, &name) {
                            Some(s) => held.push(s),
                            None => refused += 1,
                        }
                    }
                    (held, refused)
                })
            })
            .collect();
        let mut held = Vec::new();
        let mut refused = 0;
        for o in openers {
            let (h, r) = o.join().expect("an opener panicked");
            held.extend(h);
            refused += r;
        }
        let opened = held.len();
        eprintln!("torture: {opened} idle connections open, {refused} refused, holding {hold:?}");
        let until = Instant::now() + hold;
        while Instant::now() < until && !crate::stopping() {
            std::thread::sleep(Duration::from_millis(200));
        }
        let cut = held.iter_mut().map(closed_by_server).filter(|c| *c).count();
        stop.store(true, Ordering::Relaxed);
        let seen = watcher.join().expect("the heartbeat watch panicked");
        (held, refused, seen, cut)
    });
    const P: &str = "idle";
    rows.info(P, "idle connections asked for", count);
    rows.info(P, "  opened (handshake done)", held.len());
    rows.info(P, "  refused or not answered at open", refused);
    rows.info(P, "  cut by the server while idle", cut);
    rows.info(P, "held for", format!("{:.0} s", hold.as_secs_f64()));
    rows.info(
        P,
        "duration",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    agent_rows(fleet, P, &seen, rows);
    drop(held);
}

/// A TCP connection and a finished TLS handshake, or `None`.
fn open(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
) -> Option<Held> {
    let tcp = TcpStream::connect_timeout(&addr, OPEN_DEADLINE).ok()?;
    tcp.set_read_timeout(Some(OPEN_DEADLINE)).ok()?;
    tcp.set_write_timeout(Some(OPEN_DEADLINE)).ok()?;
    let conn = ClientConnection::new(Arc::clone(config), name.clone()).ok()?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).ok()?;
    }
    Some(stream)
}

/// Whether the server has closed `stream` (EOF or reset) rather than left it waiting.
fn closed_by_server(stream: &mut Held) -> bool {
    if stream.sock.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        // EOF, a reset, or bytes it sent unasked (an error answer before closing).
        _ => true,
    }
}
