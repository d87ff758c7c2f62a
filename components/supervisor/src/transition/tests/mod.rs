//! Every transition of the machine, driven through a recording world: the effects it asks for
//! are recorded (with their arguments) and the test plays the world's answers back as inputs.
//! No process, socket, cgroup or timer is involved; the clock is the test's. This module holds
//! the harness; `lifecycle.rs` one service's life (start, ready, exits by policy, backoff,
//! stop, restart, delete), `together.rs` what involves others or an earlier server
//! (dependencies, oneshot steps, lost shims, adoption, quarantine, the loop).

mod lifecycle;
mod together;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio::sync::mpsc;

use super::*;
use crate::config::{RestartSpec, StopSpec};
use crate::machine::{act, step};
use crate::probe::ProbeSpec;
use crate::shim::client::ShimEvent;
use crate::shim::proto::RunInfo;
use crate::world::{Inbox, World};

/// A world that does nothing but record what it was asked (like youki's `TestManager`).
#[derive(Debug, Default)]
struct RecordingWorld {
    effects: Vec<Effect>,
    adoption: Vec<Input>,
    shut_down: bool,
}

impl World for RecordingWorld {
    fn execute(&mut self, effect: Effect, _inbox: &Inbox) {
        self.effects.push(effect);
    }

    async fn reach_shims(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.adoption)
    }

    fn shim(&self, _name: &str) -> Option<Arc<crate::shim::client::ShimClient>> {
        None
    }

    fn shutdown(&mut self) {
        self.shut_down = true;
    }
}

/// The machine, the recording world, the test's clock and what the shims would say.
struct Harness {
    core: Core,
    world: RecordingWorld,
    events: mpsc::UnboundedReceiver<SupervisorEvent>,
    inbox: Inbox,
    _reports: mpsc::UnboundedReceiver<Input>,
    now: Instant,
    /// The shim generation of each service, as the fake world handed them out.
    shims: HashMap<String, u64>,
    next_shim: u64,
}

impl Harness {
    fn new() -> Harness {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (inbox, reports) = mpsc::unbounded_channel();
        Harness {
            core: Core::new(events_tx, rand::rngs::StdRng::seed_from_u64(7)),
            world: RecordingWorld::default(),
            events,
            inbox,
            _reports: reports,
            now: Instant::now(),
            shims: HashMap::new(),
            next_shim: 100,
        }
    }

    /// Feeds `input`; returns the effects it caused.
    fn feed(&mut self, input: Input) -> Vec<Effect> {
        let before = self.world.effects.len();
        step(
            &mut self.core,
            &mut self.world,
            input,
            self.now,
            &self.inbox,
        );
        self.world.effects[before..].to_vec()
    }

    fn desire(&mut self, set: &[(&ServiceConfig, Desired)]) -> Vec<Effect> {
        let set = set
            .iter()
            .map(|(c, d)| DesiredService {
                blocked: None,
                config: (*c).clone(),
                desired: *d,
            })
            .collect();
        self.feed(Input::Desired(set))
    }

    fn action(&mut self, name: &str, action: Action) -> (Result<(), SupervisorError>, Vec<Effect>) {
        let before = self.world.effects.len();
        let r = act(
            &mut self.core,
            &mut self.world,
            name,
            action,
            self.now,
            &self.inbox,
        );
        (r, self.world.effects[before..].to_vec())
    }

    /// The shim answers the last start of `name`: run started with `pid`.
    fn started(&mut self, name: &str, pid: u32) -> Vec<Effect> {
        let Some(Effect::Start {
            shim,
            run,
            restarts,
            ..
        }) = self
            .world
            .effects
            .iter()
            .rev()
            .find(|e| matches!(e, Effect::Start { name: n, .. } if n == name))
            .cloned()
        else {
            panic!("{name} was never started");
        };
        let shim = shim.unwrap_or_else(|| {
            self.next_shim += 1;
            self.next_shim
        });
        self.shims.insert(name.to_owned(), shim);
        let status = status(name, Some((run, pid)), run, restarts, None);
        self.feed(Input::OpDone(
            name.to_owned(),
            OpResult::Started {
                shim,
                status,
                limits: Some("enforced".into()),
            },
        ))
    }

    /// The run `run` of `name` exited with `code` (or was killed by `signal`).
    fn exited(&mut self, name: &str, code: Option<i32>, signal: Option<i32>) -> Vec<Effect> {
        let run = self.view(name).run;
        let generation = self.shims[name];
        self.feed(Input::Shim(ShimEvent::Exited {
            name: name.to_owned(),
            generation,
            run,
            status: ExitStatus {
                code,
                signal,
                at_ms: 0,
                oom_killed: false,
                requested: false,
            },
        }))
    }

    fn lost(&mut self, name: &str) -> Vec<Effect> {
        let generation = self.shims[name];
        self.feed(Input::Shim(ShimEvent::Lost {
            name: name.to_owned(),
            generation,
        }))
    }

    fn done(&mut self, name: &str, result: OpResult) -> Vec<Effect> {
        self.feed(Input::OpDone(name.to_owned(), result))
    }

    fn view(&self, name: &str) -> ServiceView {
        self.core
            .snapshot()
            .into_iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{name} not shown"))
    }

    fn shown(&self, name: &str) -> bool {
        self.core.snapshot().iter().any(|v| v.name == name)
    }

    /// The reasons of the events since the last call, as `service:Reason`.
    fn events(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(format!("{}:{}", e.service, e.reason));
        }
        out
    }

    fn message_of(&mut self, reason: &str) -> String {
        loop {
            let e = self.events.try_recv().expect("no such event");
            if e.reason == reason {
                return e.message;
            }
        }
    }
}

fn status(
    name: &str,
    running: Option<(u64, u32)>,
    last_run: u64,
    restarts: u64,
    last_exit: Option<(u64, ExitStatus)>,
) -> ShimStatus {
    ShimStatus {
        name: name.to_owned(),
        shim_pid: 9,
        running: running.map(|(run, pid)| RunInfo {
            run,
            pid,
            started_ms: Timestamp::now().as_millisecond(),
            stopping: false,
        }),
        last_run,
        tag: String::new(),
        last_exit,
        restarts,
        dropped_log_lines: 0,
    }
}

/// A daemon: restart always, backoff 100 ms to 1 s, reset after 60 s, SIGTERM then 10 s.
fn daemon(name: &str) -> ServiceConfig {
    let mut c = placeholder_config(name);
    c.process.argv = vec!["/bin/daemon".into()];
    c.tag = format!("{name}-v1");
    c.restart = RestartSpec {
        policy: RestartPolicy::Always,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        reset_after: Duration::from_secs(60),
    };
    c.stop = StopSpec {
        signal: 15,
        grace: Duration::from_secs(10),
    };
    c
}

fn with_policy(name: &str, policy: RestartPolicy) -> ServiceConfig {
    let mut c = daemon(name);
    c.restart.policy = policy;
    c
}

fn probed(name: &str) -> ServiceConfig {
    let mut c = daemon(name);
    c.readiness = Some(ProbeSpec {
        probe: crate::probe::ProbeCheck::Tcp {
            host: "127.0.0.1".into(),
            port: 80,
        },
        period: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        failure_threshold: 2,
        success_threshold: 2,
        initial_delay: Duration::ZERO,
    });
    c
}

fn starts(effects: &[Effect]) -> Vec<(String, u64, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start {
                name,
                run,
                restarts,
                ..
            } => Some((name.clone(), *run, *restarts)),
            _ => None,
        })
        .collect()
}

fn timer(effects: &[Effect]) -> Option<(u64, Instant)> {
    effects.iter().find_map(|e| match e {
        Effect::Timer { token, at, .. } => Some((*token, *at)),
        _ => None,
    })
}

/// A running daemon (started, pid 1000, ready: it has no probe).
fn running_daemon(h: &mut Harness, config: &ServiceConfig) {
    let effects = h.desire(&[(config, Desired::Running)]);
    assert_eq!(starts(&effects), [(config.name.clone(), 1, 0)]);
    h.started(&config.name, 1000);
}
