//! Defaults, and the effective view of a [`ServiceSpec`] with every default applied.
//!
//! Consumers (supervisor, logs, placement) read [`ServiceSpec::effective`] instead of the raw
//! `Option` fields, so no default can be forgotten. Every default lives here and nowhere else.
//! This module never validates: it assumes a spec that passed validation.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::manifest::{ReadinessSpec, RestartPolicy, ServiceSpec, Signal};

/// Default `spec.readiness.periodSeconds`.
pub const DEFAULT_PERIOD_SECONDS: u32 = 10;
/// Default `spec.readiness.timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 1;
/// Default `spec.readiness.failureThreshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default `spec.readiness.successThreshold`.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Default `spec.readiness.initialDelaySeconds`.
pub const DEFAULT_INITIAL_DELAY_SECONDS: u32 = 0;
/// Default host for `http` and `tcp` probes.
pub const DEFAULT_PROBE_HOST: &str = "127.0.0.1";
/// Default path for `http` probes.
pub const DEFAULT_PROBE_PATH: &str = "/";
/// Default `spec.restart.policy`.
pub const DEFAULT_RESTART_POLICY: RestartPolicy = RestartPolicy::Always;
/// Default `spec.restart.policy` of a `type: oneshot` step: retried while it fails.
pub const DEFAULT_ONESHOT_RESTART_POLICY: RestartPolicy = RestartPolicy::OnFailure;
/// Default `spec.restart.backoff.initial`.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Default `spec.restart.backoff.max`.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default `spec.restart.resetAfter`.
pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(60);
/// Default `spec.stop.signal`.
pub const DEFAULT_STOP_SIGNAL: Signal = Signal::Term;
/// Default `spec.stop.gracePeriod`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Default `spec.logs.maxSize` in bytes (10Mi).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 << 20;
/// Default `spec.logs.maxFiles`.
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

/// A [`ServiceSpec`]'s optional sections with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    /// `None` when the service declares no readiness probe (it is ready once started).
    pub readiness: Option<Readiness>,
    /// Restart policy and backoff.
    pub restart: Restart,
    /// Stop signal and grace period.
    pub stop: Stop,
    /// Log rotation.
    pub logs: Logs,
    /// Requests and limits (absent ones stay `None`: there is no default limit here).
    pub resources: Resources,
}

/// Effective `spec.readiness`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// What to check.
    pub probe: Probe,
    /// Time between probes.
    pub period: Duration,
    /// Time before one probe counts as failed.
    pub timeout: Duration,
    /// Consecutive failures before not-ready.
    pub failure_threshold: u32,
    /// Consecutive successes before ready.
    pub success_threshold: u32,
    /// Time after start before the first probe.
    pub initial_delay: Duration,
}

/// The single check of a readiness probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// GET `http://host:port/path` (`https://` with `tls`) with `headers`; 2xx and 3xx are
    /// ready.
    Http {
        /// Host to connect to.
        host: String,
        /// Port.
        port: u16,
        /// Request path.
        path: String,
        /// Extra request headers.
        headers: BTreeMap<String, String>,
        /// Over TLS, the server's certificate not verified.
        tls: bool,
    },
    /// Connect to `host:port`.
    Tcp {
        /// Host to connect to.
        host: String,
        /// Port.
        port: u16,
    },
    /// Run a command; exit status 0 is ready.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// Effective `spec.restart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// First delay.
    pub backoff_initial: Duration,
    /// Largest delay.
    pub backoff_max: Duration,
    /// Running this long resets the delay to `backoff_initial`.
    pub reset_after: Duration,
}

/// Effective `spec.stop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    /// First signal sent.
    pub signal: Signal,
    /// Time between the signal and SIGKILL.
    pub grace_period: Duration,
}

/// Effective `spec.logs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logs {
    /// Rotate at this many bytes.
    pub max_size: u64,
    /// Rotated files to keep.
    pub max_files: u32,
}

/// Effective `spec.resources`, as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Requested CPU in millicores.
    pub cpu_request_millicores: Option<u64>,
    /// Requested memory in bytes.
    pub memory_request_bytes: Option<u64>,
    /// CPU limit in millicores.
    pub cpu_limit_millicores: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Process (and thread) limit.
    pub pids_limit: Option<u64>,
}

fn seconds(value: Option<u32>, default: u32) -> Duration {
    Duration::from_secs(u64::from(value.unwrap_or(default)))
}

impl ReadinessSpec {
    /// The effective probe; `None` if no probe is set (validation rejects that). If several are
    /// set (validation rejects that too), `http` wins over `tcp` over `exec`.
    pub fn effective(&self) -> Option<Readiness> {
        let host = |host: &Option<String>| host.as_deref().unwrap_or(DEFAULT_PROBE_HOST).to_owned();
        let probe = if let Some(http) = &self.http {
            Probe::Http {
                host: host(&http.host),
                port: http.port,
                path: http
                    .path
                    .as_deref()
                    .unwrap_or(DEFAULT_PROBE_PATH)
                    .to_owned(),
                headers: http.headers.clone(),
                tls: http.scheme == Some(crate::manifest::ProbeScheme::Https),
            }
        } else if let Some(tcp) = &self.tcp {
            Probe::Tcp {
                host: host(&tcp.host),
                port: tcp.port,
            }
        } else {
            Probe::Exec {
                command: self.exec.as_ref()?.command.clone(),
            }
        };
        Some(Readiness {
            probe,
            period: seconds(self.period_seconds, DEFAULT_PERIOD_SECONDS),
            timeout: seconds(self.timeout_seconds, DEFAULT_TIMEOUT_SECONDS),
            failure_threshold: self.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD),
            success_threshold: self.success_threshold.unwrap_or(DEFAULT_SUCCESS_THRESHOLD),
            initial_delay: seconds(self.initial_delay_seconds, DEFAULT_INITIAL_DELAY_SECONDS),
        })
    }
}

impl ServiceSpec {
    /// Every optional section with its defaults applied.
    pub fn effective(&self) -> Effective {
        Effective {
            readiness: self.readiness.as_ref().and_then(ReadinessSpec::effective),
            restart: self.effective_restart(),
            stop: self.effective_stop(),
            logs: self.effective_logs(),
            resources: self.effective_resources(),
        }
    }

    /// Effective `spec.restart`.
    pub fn effective_restart(&self) -> Restart {
        let restart = self.restart.as_ref();
        let backoff = restart.and_then(|r| r.backoff.as_ref());
        Restart {
            policy: restart
                .and_then(|r| r.policy)
                .unwrap_or(if self.is_oneshot() {
                    DEFAULT_ONESHOT_RESTART_POLICY
                } else {
                    DEFAULT_RESTART_POLICY
                }),
            backoff_initial: backoff
                .and_then(|b| b.initial.as_ref())
                .map_or(DEFAULT_BACKOFF_INITIAL, |d| d.get()),
            backoff_max: backoff
                .and_then(|b| b.max.as_ref())
                .map_or(DEFAULT_BACKOFF_MAX, |d| d.get()),
            reset_after: restart
                .and_then(|r| r.reset_after.as_ref())
                .map_or(DEFAULT_RESET_AFTER, |d| d.get()),
        }
    }

    /// Effective `spec.stop`.
    pub fn effective_stop(&self) -> Stop {
        let stop = self.stop.as_ref();
        Stop {
            signal: stop.and_then(|s| s.signal).unwrap_or(DEFAULT_STOP_SIGNAL),
            grace_period: stop
                .and_then(|s| s.grace_period.as_ref())
                .map_or(DEFAULT_GRACE_PERIOD, |d| d.get()),
        }
    }

    /// Effective `spec.logs`.
    pub fn effective_logs(&self) -> Logs {
        let logs = self.logs.as_ref();
        Logs {
            max_size: logs
                .and_then(|l| l.max_size.as_ref())
                .map_or(DEFAULT_LOG_MAX_SIZE, |q| q.bytes()),
            max_files: logs
                .and_then(|l| l.max_files)
                .unwrap_or(DEFAULT_LOG_MAX_FILES),
        }
    }

    /// Effective `spec.resources`.
    pub fn effective_resources(&self) -> Resources {
        let Some(resources) = &self.resources else {
            return Resources::default();
        };
        let requests = resources.requests.as_ref();
        let limits = resources.limits.as_ref();
        Resources {
            cpu_request_millicores: requests
                .and_then(|r| r.cpu.as_ref())
                .map(|c| c.millicores()),
            memory_request_bytes: requests.and_then(|r| r.memory.as_ref()).map(|q| q.bytes()),
            cpu_limit_millicores: limits.and_then(|l| l.cpu.as_ref()).map(|c| c.millicores()),
            memory_limit_bytes: limits.and_then(|l| l.memory.as_ref()).map(|q| q.bytes()),
            pids_limit: limits.and_then(|l| l.pids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec with every section left out gets every default.
    #[test]
    fn all_defaults() {
        let spec = ServiceSpec::new(vec!["/bin/true".into()]);
        let effective = spec.effective();
        assert_eq!(effective.readiness, None);
        assert_eq!(
            effective.restart,
            Restart {
                policy: RestartPolicy::Always,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(30),
                reset_after: Duration::from_secs(60),
            }
        );
        assert_eq!(
            effective.stop,
            Stop {
                signal: Signal::Term,
                grace_period: Duration::from_secs(10)
            }
        );
        assert_eq!(
            effective.logs,
            Logs {
                max_size: 10 * 1024 * 1024,
                max_files: 5
            }
        );
        assert_eq!(effective.resources, Resources::default());
    }

    /// An empty readiness section with only a tcp port gets host and timing defaults.
    #[test]
    fn readiness_defaults() {
        let spec = ReadinessSpec {
            tcp: Some(crate::TcpProbeSpec {
                port: 80,
                host: None,
            }),
            ..ReadinessSpec::default()
        };
        assert_eq!(
            spec.effective(),
            Some(Readiness {
                probe: Probe::Tcp {
                    host: "127.0.0.1".into(),
                    port: 80
                },
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                failure_threshold: 3,
                success_threshold: 1,
                initial_delay: Duration::ZERO,
            })
        );
        assert_eq!(ReadinessSpec::default().effective(), None);
    }
}
