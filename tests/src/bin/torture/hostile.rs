//! The hostile phase: malformed and hostile requests over TLS (anonymous, from an attacker's
//! namespace) and over `cloudlet.sock` (as root: past authorization, into the handlers), with a
//! well-formed `healthz` every [`PROBE_EVERY`] requests, while the agents heartbeat.
//!
//! The requests never ask for anything that would change the cluster if it were accepted
//! (no valid run, exec, apply or CA rotation): every one is broken in its framing, its body or
//! its names. It counts how each was answered; it never judges a 4xx (refusing is right).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudlet_tests::fleet::{Fleet, SERVER_PORT};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::Rows;
use crate::heartbeats;

/// A well-formed `healthz` goes after this many hostile requests (per thread).
const PROBE_EVERY: u64 = 10;
/// How long one request may take, connect to answer: longer than the server's own deadline on
/// a request head (10 s), so a request the server gives up on counts as closed by it.
const DEADLINE: Duration = Duration::from_secs(15);
/// Client threads per transport. Many requests are meant to be given up on by the server (a
/// head never finished: cut at its 10 s deadline), so the TLS side needs many waiting at once;
/// 32 stays under the server's 64 unverified connections per address.
const THREADS: u64 = 32;

/// How the requests were answered.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    ok_2xx: AtomicU64,
    refused_4xx: AtomicU64,
    failed_5xx: AtomicU64,
    closed: AtomicU64,
    timed_out: AtomicU64,
    probes: AtomicU64,
    probe_failures: AtomicU64,
    slowest_probe_ms: AtomicU64,
}

impl Tally {
    fn count(&self, answer: &Answer) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let counter = match answer {
            Answer::Status(200..=299) => &self.ok_2xx,
            Answer::Status(400..=499) => &self.refused_4xx,
            Answer::Status(_) => &self.failed_5xx,
            Answer::Closed => &self.closed,
            Answer::TimedOut => &self.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Status(u16),
    /// The server closed (or reset) the connection without a status line.
    Closed,
    TimedOut,
}

/// Cuts connections that overrun [`DEADLINE`] (socket timeouts alone do not bound a TLS
/// exchange: a read inside rustls was seen blocking for minutes), so one stuck request cannot
/// stall a client thread.
#[derive(Debug, Default)]
pub struct Watchdog {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (Instant, Cut)>>,
    fired: Mutex<HashSet<u64>>,
}

/// A handle that can cut a connection from another thread.
#[derive(Debug)]
pub enum Cut {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Watchdog {
    /// Watches the connection `cut` (a clone of it) from now; returns its id for [`Watchdog::done`].
    pub fn watch(&self, cut: Cut) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, (Instant::now() + DEADLINE, cut));
        id
    }

    /// The exchange on `id` is over: whether the watchdog had to cut it.
    pub fn done(&self, id: u64) -> bool {
        lock(&self.open).remove(&id);
        lock(&self.fired).remove(&id)
    }

    /// Cuts what overran, every 200 ms, until `stop`.
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut open = lock(&self.open);
            let late: Vec<u64> = open
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in late {
                if let Some((_, cut)) = open.remove(&id) {
                    let _ = match cut {
                        Cut::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
                        Cut::Unix(s) => s.shutdown(std::net::Shutdown::Both),
                    };
                    lock(&self.fired).insert(id);
                }
            }
            drop(open);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the requests go.
#[derive(Clone)]
enum Target {
    Tls {
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    },
    Socket(std::path::PathBuf),
}

/// Sends `requests` hostile requests (half per transport) at `fleet`'s server and adds the
/// phase's rows.
pub fn run(fleet: &Fleet, requests: u64, server_pid: u32, rows: &mut Rows) {
    let server = fleet.net().node("s");
    let addr = SocketAddr::from((server.addr, SERVER_PORT));
    let ca_pem = std::fs::read_to_string(fleet.data_dir("s").join("pki/ca.crt")).expect("CA");
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM");
    let config = cloudlet_tests::https::client_trusting(ca, &rustls::version::TLS13);
    let tls = Target::Tls {
        addr,
        config,
        name: ServerName::IpAddress(server.addr.into()),
    };
    let socket = Target::Socket(fleet.data_dir("s").join("cloudlet.sock"));
    let client_ns = format!("/run/netns/{}", fleet.net().node("attacker").ns);
    let (over_tls, over_socket) = (Tally::default(), Tally::default());
    let stop = AtomicBool::new(false);
    let dog = Watchdog::default();
    let started = Instant::now();
    let seen = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| heartbeats::watch(fleet, &stop));
        scope.spawn(|| dog.run(&stop));
        let per_thread = requests / 2 / THREADS;
        let mut clients = Vec::new();
        for t in 0..THREADS {
            let (tls, tally, ns, dog) = (tls.clone(), &over_tls, client_ns.as_str(), &dog);
            clients.push(scope.spawn(move || {
                enter_netns(ns);
                drive(&tls, t, per_thread, tally, dog);
            }));
            let (socket, tally) = (socket.clone(), &over_socket);
            clients.push(scope.spawn(move || drive(&socket, t, per_thread, tally, dog)));
        }
        for c in clients {
            c.join().expect("a client thread panicked");
        }
        stop.store(true, Ordering::Relaxed);
        watcher.join().expect("the heartbeat watch panicked")
    });
    let took = started.elapsed();
    let log = fleet.log("s");
    let panics = log.matches("panicked").count() as u64;
    const P: &str = "hostile";
    for (how, t) in [("TLS", &over_tls), ("socket", &over_socket)] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        rows.info(P, &format!("requests over {how}"), get(&t.sent));
        rows.info(P, &format!("  answered 2xx ({how})"), get(&t.ok_2xx));
        rows.info(P, &format!("  refused 4xx ({how})"), get(&t.refused_4xx));
        rows.info(
            P,
            &format!("  closed by the server ({how})"),
            get(&t.closed),
        );
        rows.zero(P, &format!("  answered 5xx ({how})"), get(&t.failed_5xx));
        rows.zero(
            P,
            &format!("  no answer in 15 s ({how})"),
            get(&t.timed_out),
        );
        rows.info(P, &format!("  healthz probes ({how})"), get(&t.probes));
        rows.zero(
            P,
            &format!("  healthz probes failed ({how})"),
            get(&t.probe_failures),
        );
        rows.info(
            P,
            &format!("  slowest healthz probe ({how})"),
            format!("{} ms", get(&t.slowest_probe_ms)),
        );
    }
    rows.info(P, "duration", format!("{:.1} s", took.as_secs_f64()));
    rows.zero(P, "server panics", panics);
    rows.check(
        P,
        "server still running (same pid)",
        server_pid,
        cloudlet_tests::alive(server_pid),
    );
    agent_rows(fleet, P, &seen, rows);
}

/// The rows about the agents' heartbeats during a phase.
pub fn agent_rows(fleet: &Fleet, phase: &'static str, seen: &heartbeats::Seen, rows: &mut Rows) {
    rows.info(phase, "node list polls", seen.polls);
    rows.zero(phase, "node list polls unanswered", seen.failed_polls);
    rows.zero(phase, "agent polls not Ready", seen.not_ready);
    rows.check(
        phase,
        "oldest agent heartbeat seen",
        format!("{:.1} s", seen.max_age.as_secs_f64()),
        seen.max_age < Duration::from_secs(10),
    );
    rows.zero(phase, "NodeLost events", heartbeats::nodes_lost(fleet));
}

/// Moves this thread into the network namespace at `path` (sockets it opens live there).
pub fn enter_netns(path: &str) {
    let ns = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// One client thread: `count` hostile requests, a probe every [`PROBE_EVERY`].
fn drive(target: &Target, thread: u64, count: u64, tally: &Tally, dog: &Watchdog) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let tls = matches!(target, Target::Tls { .. });
    for i in 0..count {
        let (bytes, plain) = if tls {
            hostile_tls(i * THREADS + thread, &mut rng)
        } else {
            (hostile_socket(i * THREADS + thread, &mut rng), false)
        };
        if crate::stopping() {
            return;
        }
        tally.count(&send(target, &bytes, plain, dog));
        if (i + 1) % PROBE_EVERY == 0 {
            let started = Instant::now();
            let answer = send(
                target,
                b"GET /v1/healthz HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n",
                false,
                dog,
            );
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tally.probes.fetch_add(1, Ordering::Relaxed);
            tally.slowest_probe_ms.fetch_max(ms, Ordering::Relaxed);
            if answer != Answer::Status(200) {
                eprintln!("torture: healthz answered {answer:?}");
                tally.probe_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends `bytes` on a new connection (`plain`: raw TCP to the TLS port), reads the status
/// line; the watchdog cuts it at [`DEADLINE`].
fn send(target: &Target, bytes: &[u8], plain: bool, dog: &Watchdog) -> Answer {
    let (answer, id) = match target {
        Target::Socket(path) => {
            let Ok(s) = UnixStream::connect(path) else {
                return Answer::Closed;
            };
            let Ok(cut) = s.try_clone() else {
                return Answer::Closed;
            };
            let id = dog.watch(Cut::Unix(cut));
            (exchange(s, bytes), id)
        }
        Target::Tls { addr, config, name } => {
            let Ok(tcp) = TcpStream::connect_timeout(addr, DEADLINE) else {
                return Answer::Closed;
            };
            let Ok(cut) = tcp.try_clone() else {
                return Answer::Closed;
            };
            let id = dog.watch(Cut::Tcp(cut));
            let answer = if plain {
                exchange(tcp, bytes)
            } else {
                match ClientConnection::new(Arc::clone(config), name.clone()) {
                    Ok(conn) => exchange_tls(StreamOwned::new(conn, tcp), bytes),
                    Err(_) => Answer::Closed,
                }
            };
            (answer, id)
        }
    };
    if dog.done(id) {
        Answer::TimedOut
    } else {
        answer
    }
}

trait Deadline {
    fn deadline(&self) -> std::io::Result<()>;
}

impl Deadline for TcpStream {
    fn deadline(&self) -> std::io::Result<()> {
        self.set_read_timeout(Some(DEADLINE))?;
        self.set_write_timeout(Some(DEADLINE))
    }
}

impl Deadline for UnixStream {
    fn deadline(&self) -> std::io::Result<()> {
        self.set_read_timeout(Some(DEADLINE))?;
        self.set_write_timeout(Some(DEADLINE))
    }
}

fn exchange<S: Read + Write + Deadline>(mut stream: S, bytes: &[u8]) -> Answer {
    if stream.deadline().is_err() {
        return Answer::Closed;
    }
    // A server that answers before reading everything (413, 431) may reset the rest: fine.
    let _ = stream.write_all(bytes);
    read_status(&mut stream)
}

fn exchange_tls(mut stream: StreamOwned<ClientConnection, TcpStream>, bytes: &[u8]) -> Answer {
    if stream.sock.deadline().is_err() {
        return Answer::Closed;
    }
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
    read_status(&mut stream)
}

/// The status of the first response line, read within [`DEADLINE`] (at most 64 KiB).
fn read_status(stream: &mut impl Read) -> Answer {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(2).any(|w| w == b"\r\n") || buf.len() > 65_536 {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    return Answer::TimedOut;
                }
                break;
            }
            Err(_) => break,
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .map_or(Answer::Closed, Answer::Status)
}

/// xorshift64*: deterministic, so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[3]).collect()
    }
}

fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: s\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The `i`th hostile request for the anonymous TLS listener, and whether it goes as plain TCP.
fn hostile_tls(i: u64, rng: &mut Rng) -> (Vec<u8>, bool) {
    let kind = i % 16;
    let bytes = match kind {
        0 => {
            let len = usize::try_from(rng.below(4096) + 1).unwrap_or(1);
            rng.bytes(len)
        }
        1 => b"GARBAGE /\x00\x01 HTTP/9.9\r\n\r\n".to_vec(),
        2 => request("GET", "/v1/healthz", &format!("x-big: {}\r\n", "a".repeat(70_000)), b""),
        3 => request("GET", "/v1/healthz", &"x-h: v\r\n".repeat(5_000), b""),
        4 => request("POST", "/v1/join", "", b"{\"token\": [1,2,"),
        5 => {
            let names = ["../../etc".to_owned(), "a".repeat(300), "n1".to_owned(), "\u{0}".to_owned()];
            let name = names[usize::try_from(rng.below(4)).unwrap_or(0)].clone();
            request(
            "POST",
            "/v1/join",
            "",
            &json(&serde_json::json!({
                "token": "K10abc::x.y",
                "node_name": name,
                "csr": "-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
                "labels": (0..2_000).map(|n| (format!("k{n}"), "v".repeat(300))).collect::<std::collections::BTreeMap<_, _>>(),
                "address": format!("https://{}:1", "h".repeat(5_000)),
            })),
        )
        }
        6 => request("POST", "/v1/apply", "", &vec![b'x'; 3 << 20]),
        7 => b"POST /v1/join HTTP/1.1\r\nhost: s\r\ncontent-length: 99999999999999\r\n\r\n{\"a\":".to_vec(),
        8 => request("GET", "/v1/services/..%2F..%2F..%2Fetc%2Fpasswd/logs", "", b""),
        9 => b"POST /v1/join HTTP/1.1\r\nhost: s\r\ntransfer-encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nxx\r\n".to_vec(),
        10 => b"GET /v1/\xff\xfe\xfd HTTP/1.1\r\nhost: s\r\n\r\n".to_vec(),
        11 => b"POST /v1/join HTTP/1.1\r\nhost: s\r\ncontent-le".to_vec(),
        12 => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00".to_vec(),
        13 => request("GET", "/v1/healthz", "", b""),
        14 => request("POST", "/v1/nodes/n1/heartbeat", "", b"{\"deltas\": 1}"),
        _ => request("GET", "/v1/events?follow=true&limit=99999999999999999999999&since=%ff", "", b""),
    };
    // Kind 13 is plain HTTP on the TLS port.
    (bytes, kind == 13)
}

/// YAML in an apply request.
fn apply(content: &str) -> Vec<u8> {
    request(
        "POST",
        "/v1/apply",
        "",
        &json(&serde_json::json!({"files": [{"name": "hostile.yaml", "content": content}]})),
    )
}

/// The `i`th hostile request for the root-only socket: past authorization, each must be refused
/// by validation.
fn hostile_socket(i: u64, rng: &mut Rng) -> Vec<u8> {
    let service = "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: hostile\nspec:\n  command: [/bin/true]\n";
    match i % 16 {
        0 => {
            let len = usize::try_from(rng.below(4096) + 1).unwrap_or(1);
            rng.bytes(len)
        }
        1 => apply("{{{{ not: yaml: [\n  - : :"),
        2 => {
            // Billion laughs.
            let mut y = String::from(
                "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
            );
            for (n, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
                .iter()
                .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
            {
                y.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            }
            apply(&y)
        }
        3 => apply(&format!("{}{}", "[".repeat(20_000), "]".repeat(20_000))),
        4 => apply(&format!(
            "{service}  restart: {{backoff: {{initial: 2600000000000000h, max: 2600000000000000h}}}}\n"
        )),
        5 => apply(&service.replace("name: hostile", "name: ../../etc")),
        6 => apply(&"---\n".repeat(20_000)),
        7 => apply(&format!(
            "{service}  files:\n    - path: /proc/self/mem\n      content: x\n"
        )),
        8 => apply(&format!(
            "{service}  resources: {{memory: 99999999999999999999999Gi, cpu: -1}}\n"
        )),
        9 => request(
            "GET",
            "/v1/services/..%2F..%2Fetc/logs?tail=99999999999999999999",
            "",
            b"",
        ),
        10 => request("POST", "/v1/exec", "", b"{\"command\": \"not a list\"}"),
        11 => request(
            "GET",
            "/v1/events?limit=-1&since=yesterday&service=%00",
            "",
            b"",
        ),
        12 => request("DELETE", "/v1/services/%00%2e%2e", "", b""),
        13 => request(
            "POST",
            "/v1/cluster",
            "",
            &json(&serde_json::json!({"content": "spec: {region: {replicas: -5}}"})),
        ),
        14 => request("POST", "/v1/tokens", "", b"{\"ttl_seconds\": \"forever\"}"),
        _ => request(
            "GET",
            "/v1/healthz",
            &format!("x-big: {}\r\n", "a".repeat(70_000)),
            b"",
        ),
    }
}
