//! The bounds of the API's listeners: how many connections a listener holds, how many of them
//! may be unverified (in their TLS handshake, or anonymous) in all and from one client address,
//! and the deadlines every connection and request runs under.
//!
//! Why it exists: an anonymous client may reach the TLS port. Without these bounds, idle or
//! trickling connections use up the server's file descriptors; then the agents' heartbeats fail,
//! healthy nodes are declared lost and their services move. With them, a flood of anonymous
//! connections only ever fills its own shares: connections with a verified client
//! certificate keep a share of their own, and the handshake, the request head and the whole
//! request each have a deadline.
//!
//! This module admits, counts and times; it never looks at what a request asks (that is
//! the authorization) and never reads a certificate (the TLS config's verifier does).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Connections one listener holds at most, of every kind. Thousands of agents each keep one
/// connection to the server (clusterbench runs 3,000); this leaves room for them and for
/// operators. Never more than the process's file-descriptor limit allows (see [`FD_RESERVE`]).
pub const MAX_CONNECTIONS: usize = 8192;

/// Connections in their TLS handshake, at most, per listener. A handshake takes a place here
/// only until it completes (within [`HANDSHAKE_TIMEOUT`]): a verified client then needs none, an
/// anonymous one a place in [`MAX_ANONYMOUS`]. With every place taken, a new connection takes
/// the place of the handshake stalled longest, if that one has taken [`STALLED_HANDSHAKE`].
pub const MAX_HANDSHAKES: usize = 1024;

/// A handshake this old is stalled, not slow: a real one takes a few round trips, milliseconds.
/// Clients that connect and send nothing fill the handshake places from many addresses; each
/// new connection closes the oldest of them instead of being refused, so a node reconnecting
/// during such a flood still gets in.
pub const STALLED_HANDSHAKE: Duration = Duration::from_secs(1);

/// Connections without a client certificate, after their handshake, at most, per listener. They
/// may only join, read the CA bundle and ask for health, which takes one request each; joins are
/// rare. So an anonymous flood never holds more than this, and never a handshake place.
pub const MAX_ANONYMOUS: usize = 256;

/// Unverified connections (in the handshake, or anonymous) from one client address, at most: one
/// host cannot take a whole share (1/16 of the handshakes). Room for a fleet behind one address:
/// clusterbench joins 16 agents at once from 127.0.0.1, each with two anonymous connections, and
/// agents' handshakes are a few milliseconds each; a join refused here is retried.
pub const MAX_UNVERIFIED_PER_ADDRESS: usize = 64;

/// File descriptors kept for everything but connections (the store, logs, shims' pipes, agents'
/// clients): a listener never holds more than the soft `RLIMIT_NOFILE` minus this many.
pub const FD_RESERVE: usize = 512;

/// How long a client gets to complete its TLS handshake. A handshake is a few round trips.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's head (request line and headers) may take to arrive, counted from the
/// first moment the server waits for it: after the handshake, and after each answer on a kept
/// connection. Bytes trickled in do not extend it. So an idle anonymous or local connection is
/// closed after this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The same for a client with a verified certificate: its connection may idle between requests
/// this long (an agent beats every few seconds on one kept connection; a longer `--heartbeat`
/// merely reconnects).
pub const VERIFIED_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a request may take from its head to the head of its answer: reading its body and
/// the handler. A streaming answer (logs, events, exec) is bounded only until it starts. No
/// handler waits on purpose; the longest do a few calls to agents, each bounded by the client's
/// own deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest request body (a whole cluster file or a directory of manifests is the largest
/// there is; axum's default, kept).
pub const MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// The largest request head, and read buffer, per connection: request heads are a few hundred
/// bytes; hyper's default (~400 KiB) times [`MAX_HANDSHAKES`] would be 400 MiB an anonymous
/// flood could make the server hold.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The bounds a listener serves under. [`Limits::default`] is the documented constants; tests
/// shorten the deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// [`MAX_HANDSHAKES`].
    pub max_handshakes: usize,
    /// [`MAX_ANONYMOUS`].
    pub max_anonymous: usize,
    /// [`MAX_UNVERIFIED_PER_ADDRESS`].
    pub max_unverified_per_address: usize,
    /// [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// [`VERIFIED_IDLE_TIMEOUT`].
    pub verified_idle_timeout: Duration,
    /// [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_handshakes: MAX_HANDSHAKES,
            max_anonymous: MAX_ANONYMOUS,
            max_unverified_per_address: MAX_UNVERIFIED_PER_ADDRESS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            verified_idle_timeout: VERIFIED_IDLE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// The file descriptors connections may use: the soft `RLIMIT_NOFILE` less [`FD_RESERVE`]
/// (at least 16, so a tiny limit still serves something).
fn fd_budget() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    soft.saturating_sub(FD_RESERVE).max(16)
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The listener holds [`Limits::max_connections`].
    Full,
    /// [`Limits::max_handshakes`] handshakes are under way.
    Handshakes,
    /// [`Limits::max_anonymous`] anonymous connections are open.
    Anonymous,
    /// Its address holds its share of unverified connections.
    Address,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Self::Full => "the listener is full",
            Self::Handshakes => "too many TLS handshakes under way",
            Self::Anonymous => "too many connections without a client certificate",
            Self::Address => "too many unverified connections from this address",
        }
    }
}

/// One listener's admission: its permits and its count of unverified connections per address.
#[derive(Debug)]
pub(crate) struct Admission {
    all: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// The handshakes under way, oldest first, each holding its place.
    handshaking: Arc<Mutex<Handshaking>>,
    anonymous: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
    refused: AtomicU64,
    limits: Limits,
}

/// The handshakes under way, by admission order.
#[derive(Debug, Default)]
struct Handshaking {
    next: u64,
    places: BTreeMap<u64, Place>,
}

/// A handshake's place: its permit, when it began, and the sender whose drop tells its
/// connection it was closed for a newer one.
#[derive(Debug)]
struct Place {
    permit: OwnedSemaphorePermit,
    since: Instant,
    _evict: oneshot::Sender<()>,
}

impl Admission {
    /// Permits for `limits`, within the process's file descriptors: handshakes and anonymous
    /// connections together never take more than half of the listener.
    pub(crate) fn new(limits: &Limits) -> Self {
        let all = limits.max_connections.min(fd_budget()).max(2);
        let anonymous = limits.max_anonymous.min(all / 4).max(1);
        let handshakes = limits.max_handshakes.min(all / 4).max(1);
        Self {
            all: Arc::new(Semaphore::new(all)),
            handshakes: Arc::new(Semaphore::new(handshakes)),
            handshaking: Arc::default(),
            anonymous: Arc::new(Semaphore::new(anonymous)),
            per_address: Arc::new(Mutex::new(HashMap::new())),
            max_per_address: limits.max_unverified_per_address.max(1),
            refused: AtomicU64::new(0),
            limits: *limits,
        }
    }

    /// The limits it admits by, and the deadlines its connections run under.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place for a new connection from `address`, for its handshake, or why there is none.
    /// Never waits: a connection over a limit is closed at once.
    pub(crate) fn admit(&self, address: IpAddr) -> Result<Ticket, Refused> {
        let admitted = self.try_admit(address);
        self.count(admitted.as_ref().err().copied(), Some(address));
        admitted
    }

    /// A place for a local (unix socket) connection: only the listener's limit applies.
    pub(crate) fn admit_local(&self) -> Result<Ticket, Refused> {
        let admitted = match Arc::clone(&self.all).try_acquire_owned() {
            Ok(all) => Ok(Ticket {
                _all: all,
                handshake: None,
                evicted: None,
                anonymous: None,
                address: None,
            }),
            Err(_) => Err(Refused::Full),
        };
        self.count(admitted.as_ref().err().copied(), None);
        admitted
    }

    /// The client completed its handshake without a certificate: it leaves the handshakes for
    /// the anonymous share (still counted against its address), or is refused.
    pub(crate) fn anonymous(&self, ticket: &mut Ticket) -> Result<(), Refused> {
        ticket.handshake = None;
        ticket.evicted = None;
        let got = Arc::clone(&self.anonymous)
            .try_acquire_owned()
            .map(|permit| ticket.anonymous = Some(permit))
            .map_err(|_| Refused::Anonymous);
        self.count(got.err(), ticket.address.as_ref().map(|a| a.address));
        got
    }

    /// Counts a refusal: said once, then every thousandth (a flood must not flood the log).
    fn count(&self, refused: Option<Refused>, address: Option<IpAddr>) {
        let Some(why) = refused else { return };
        let total = self
            .refused
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let address = address.map_or_else(|| "local".to_owned(), |a| a.to_string());
        if total == 1 || total.is_multiple_of(1000) {
            tracing::warn!(%address, refused = total, "api connection closed: {}", why.as_str());
        } else {
            tracing::debug!(%address, "api connection closed: {}", why.as_str());
        }
    }

    fn try_admit(&self, address: IpAddr) -> Result<Ticket, Refused> {
        let all = Arc::clone(&self.all)
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        let mut counts = self
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return Err(Refused::Address);
        }
        let (handshake, evicted) = self.handshake_place()?;
        *count = count.saturating_add(1);
        drop(counts);
        Ok(Ticket {
            _all: all,
            handshake: Some(handshake),
            evicted: Some(evicted),
            anonymous: None,
            address: Some(AddressCount {
                address,
                counts: Arc::clone(&self.per_address),
            }),
        })
    }

    /// A place for a handshake: a free one, else the place of the handshake stalled longest
    /// (its connection is told through its receiver, and closes).
    fn handshake_place(&self) -> Result<(HandshakePlace, oneshot::Receiver<()>), Refused> {
        let mut handshaking = self
            .handshaking
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let permit = match Arc::clone(&self.handshakes).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let stalled = handshaking
                    .places
                    .first_key_value()
                    .is_some_and(|(_, oldest)| oldest.since.elapsed() >= STALLED_HANDSHAKE);
                match handshaking.places.pop_first() {
                    Some((_, oldest)) if stalled => {
                        tracing::debug!("api: a stalled tls handshake makes way for a new one");
                        oldest.permit
                    }
                    Some((id, oldest)) => {
                        handshaking.places.insert(id, oldest);
                        return Err(Refused::Handshakes);
                    }
                    None => return Err(Refused::Handshakes),
                }
            }
        };
        let id = handshaking.next;
        handshaking.next = id.wrapping_add(1);
        let (evict, evicted) = oneshot::channel();
        handshaking.places.insert(
            id,
            Place {
                permit,
                since: Instant::now(),
                _evict: evict,
            },
        );
        let place = HandshakePlace {
            id,
            handshaking: Arc::clone(&self.handshaking),
        };
        Ok((place, evicted))
    }

    /// How many connections were closed by a limit so far.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A connection's places; dropping it (the connection ended) frees them.
#[derive(Debug)]
pub(crate) struct Ticket {
    _all: OwnedSemaphorePermit,
    handshake: Option<HandshakePlace>,
    /// Fails (its sender dropped) when a newer connection took this handshake's place.
    evicted: Option<oneshot::Receiver<()>>,
    anonymous: Option<OwnedSemaphorePermit>,
    address: Option<AddressCount>,
}

impl Ticket {
    /// Completes when a newer connection took this one's handshake place (never after the
    /// handshake, or for a local connection).
    pub(crate) async fn evicted(&mut self) {
        match self.evicted.as_mut() {
            // Nothing is ever sent: the sender is dropped with the place.
            Some(evicted) => {
                let _ = evicted.await;
            }
            None => std::future::pending().await,
        }
    }

    /// The client presented a verified certificate: it leaves the unverified shares.
    pub(crate) fn verified(&mut self) {
        self.handshake = None;
        self.evicted = None;
        self.anonymous = None;
        self.address = None;
    }
}

/// A handshake's place among those under way; dropping it gives the place back (if a newer
/// connection has not taken it already).
#[derive(Debug)]
struct HandshakePlace {
    id: u64,
    handshaking: Arc<Mutex<Handshaking>>,
}

impl Drop for HandshakePlace {
    fn drop(&mut self) {
        let place = self
            .handshaking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .places
            .remove(&self.id);
        // Its permit and sender go outside the lock.
        drop(place);
    }
}

/// One unverified connection counted against its address until dropped.
#[derive(Debug)]
struct AddressCount {
    address: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressCount {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(all: usize, handshakes: usize, anonymous: usize, per_address: usize) -> Limits {
        Limits {
            max_connections: all,
            max_handshakes: handshakes,
            max_anonymous: anonymous,
            max_unverified_per_address: per_address,
            ..Limits::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_share_refuses_past_its_limit_and_a_closed_connection_frees_its_place() {
        let admission = Admission::new(&limits(16, 4, 2, 2));
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refused::Address);
        let mut b1 = admission.admit(b).unwrap();
        let mut b2 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(c).unwrap_err(), Refused::Handshakes);
        // A verified connection leaves the handshakes and its address's count.
        b2.verified();
        let mut c1 = admission.admit(c).unwrap();
        drop(a1);
        let _a3 = admission.admit(a).unwrap();
        // Anonymous after the handshake: a handshake place frees, the anonymous share fills,
        // and the address still counts it.
        admission.anonymous(&mut b1).unwrap();
        admission.anonymous(&mut c1).unwrap();
        let mut c2 = admission.admit(c).unwrap();
        assert_eq!(admission.admit(c).unwrap_err(), Refused::Address);
        assert_eq!(
            admission.anonymous(&mut c2).unwrap_err(),
            Refused::Anonymous
        );
        let _b3 = admission.admit(b).unwrap();
        assert_eq!(admission.refused(), 4);
    }

    #[test]
    fn verified_connections_fill_only_the_listener() {
        let admission = Admission::new(&limits(8, 2, 2, 2));
        let a = ip("10.0.0.1");
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut ticket = admission.admit(a).unwrap();
            ticket.verified();
            held.push(ticket);
        }
        assert_eq!(admission.admit(a).unwrap_err(), Refused::Full);
        assert_eq!(admission.admit_local().unwrap_err(), Refused::Full);
    }
}
