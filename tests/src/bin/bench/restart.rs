//! The restart-latency measurement: the notify socket every service sends its pid to at start,
//! the wait for the first pid of every service, and the round-robin of SIGKILLs timed until each
//! replacement has announced itself.
//!
//! It must never signal a pid that is not a service of this run (the pid's command line must name
//! this run's notify socket), and never start or configure a supervisor.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::procs;

/// How long a killed service's replacement may take before the kill counts as a failure.
pub const REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between a replacement's arrival and the next kill.
pub const SPACING: Duration = Duration::from_millis(50);

/// The unix datagram socket the services send their pid to (`workload --notify`).
#[derive(Debug)]
pub struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    /// Binds `path`.
    pub fn bind(path: &Path) -> Result<Notify, String> {
        let socket =
            UnixDatagram::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
        Ok(Notify {
            socket,
            path: path.to_owned(),
        })
    }

    /// The socket's path, for the services' command line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next pid that arrives before `deadline` (`None` at the deadline).
    pub fn recv_until(&self, deadline: Instant) -> Result<Option<i32>, String> {
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|e| format!("setting a read timeout on {}: {e}", self.path.display()))?;
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    return text
                        .trim()
                        .parse()
                        .map(Some)
                        .map_err(|_| format!("notify datagram {text:?} is not a pid"));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receiving on {}: {e}", self.path.display())),
            }
        }
    }

    /// Waits until `count` distinct pids arrived (every service started once), at most `timeout`.
    pub fn first_pids(&self, count: usize, timeout: Duration) -> Result<Vec<i32>, String> {
        let deadline = Instant::now() + timeout;
        let mut pids = Vec::with_capacity(count);
        while pids.len() < count {
            match self.recv_until(deadline)? {
                Some(pid) if !pids.contains(&pid) => pids.push(pid),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "only {} of {count} services sent their pid within {timeout:?}",
                        pids.len()
                    ));
                }
            }
        }
        Ok(pids)
    }

    /// Pids that arrived without being waited for (restarts nobody asked for), without blocking.
    pub fn drain(&self) -> Result<Vec<i32>, String> {
        let mut extra = Vec::new();
        while let Some(pid) = self.recv_until(Instant::now() + Duration::from_millis(1))? {
            extra.push(pid);
        }
        Ok(extra)
    }
}

/// What the kills measured.
#[derive(Debug, Default)]
pub struct Restarts {
    /// Kill to replacement's pid, one per successful kill.
    pub latencies: Vec<Duration>,
    /// One line per kill whose replacement did not arrive in time.
    pub failures: Vec<String>,
    /// Pids that arrived while no replacement was due (unasked restarts).
    pub unexpected: Vec<i32>,
}

/// SIGKILLs the services round-robin, `kills` times, [`SPACING`] apart, each time waiting for the
/// replacement's pid. `services[i]` is service i's current pid; it is updated as replacements
/// arrive (`None` while a replacement is missing).
pub fn kill_round_robin(
    notify: &Notify,
    services: &mut [Option<i32>],
    kills: usize,
) -> Result<Restarts, String> {
    let mut out = Restarts::default();
    let needle = notify.path().display().to_string();
    for k in 0..kills {
        let i = k % services.len();
        thread::sleep(SPACING);
        // A late replacement of an earlier failed kill refills that service's slot.
        for pid in notify.drain()? {
            place(services, pid, &mut out);
        }
        let Some(victim) = services[i] else {
            out.failures
                .push(format!("kill {k}: service s{i} has no process to kill"));
            continue;
        };
        if !procs::cmdline(victim).is_some_and(|c| c.contains(&needle)) {
            return Err(format!(
                "pid {victim} of service s{i} is not a service of this run (gone or reused)"
            ));
        }
        let known: HashSet<i32> = services.iter().flatten().copied().collect();
        let start = Instant::now();
        procs::send(victim, Signal::SIGKILL)?;
        services[i] = None;
        let deadline = start + REPLACEMENT_TIMEOUT;
        loop {
            match notify.recv_until(deadline)? {
                Some(pid) if pid != victim && !known.contains(&pid) => {
                    out.latencies.push(start.elapsed());
                    services[i] = Some(pid);
                    break;
                }
                Some(pid) => out.unexpected.push(pid),
                None => {
                    out.failures.push(format!(
                        "kill {k}: no replacement of s{i} (pid {victim}) within {REPLACEMENT_TIMEOUT:?}"
                    ));
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Puts a pid that arrived between kills into the first empty slot (a late replacement), or
/// records it as unexpected.
fn place(services: &mut [Option<i32>], pid: i32, out: &mut Restarts) {
    if services.contains(&Some(pid)) {
        return;
    }
    match services.iter_mut().find(|s| s.is_none()) {
        Some(slot) => *slot = Some(pid),
        None => out.unexpected.push(pid),
    }
}

/// The `percent`-th percentile (0..=100) of `samples`, linearly interpolated between the closest
/// ranks (as numpy's default).
pub fn percentile(samples: &[Duration], percent: u32) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let last = u32::try_from(sorted.len().checked_sub(1)?).ok()?;
    // The rank is percent * last / 100: its whole part picks `lo`, its remainder weighs `hi`.
    let scaled = percent.min(100) * last;
    let below = usize::try_from(scaled / 100).ok()?;
    let lo = *sorted.get(below)?;
    let hi = *sorted.get(below + 1).unwrap_or(&lo);
    Some(lo + hi.saturating_sub(lo) * (scaled % 100) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let s = ms(&[40, 10, 30, 20]);
        assert_eq!(percentile(&s, 50), Some(Duration::from_millis(25)));
        assert_eq!(percentile(&s, 0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&s, 100), Some(Duration::from_millis(40)));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            percentile(&ms(&hundred), 95),
            Some(Duration::from_micros(95_050))
        );
        assert_eq!(percentile(&ms(&[5]), 95), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn pids_arrive_on_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let notify = Notify::bind(&dir.path().join("n.sock")).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        for pid in ["7", "8", "7", "9"] {
            tx.send_to(pid.as_bytes(), notify.path()).unwrap();
        }
        assert_eq!(
            notify.first_pids(3, Duration::from_secs(1)).unwrap(),
            vec![7, 8, 9]
        );
        assert!(notify.drain().unwrap().is_empty());
        let err = notify.first_pids(1, Duration::from_millis(10)).unwrap_err();
        assert!(err.contains("only 0 of 1"), "{err}");
    }
}
