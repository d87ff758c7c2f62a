//! The transitions that follow what the world reports: results of operations, exits, lost shims,
//! the restart policy, readiness and adoption. Part of [`super::Core`]; no I/O.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{AfterStop, AfterTeardown, Core, Effect, OpResult, Phase, Svc, TeardownJob};
use crate::backoff;
use crate::config::{RestartPolicy, Unusable};
use crate::machine::{Desired, DesiredService, ExitView, State};
use crate::shim::client::ShimEvent;
use crate::shim::proto::{ExitStatus, ShimStatus};

impl Core {
    pub(super) fn op_done(&mut self, name: &str, result: OpResult) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if let OpResult::TornDown(then) = result {
            svc.phase = Phase::Idle;
            match then {
                AfterTeardown::ShimLost(exit) => self.decide_after_exit(name, &exit, false),
                AfterTeardown::Forget => {
                    self.forget(name);
                    return;
                }
                AfterTeardown::Adopted if svc.desired.is_none() => {
                    self.services.remove(name);
                    return;
                }
                AfterTeardown::Adopted => {}
            }
            self.reconcile(name);
            return;
        }
        // The answer to what was asked. One that comes while a teardown runs (the shim was lost
        // meanwhile) only says what happened: the teardown's end decides what follows.
        match (&svc.phase, &result) {
            (Phase::Unanswered { .. }, OpResult::Status(_) | OpResult::StatusFailed(_)) => {}
            (_, OpResult::Status(_) | OpResult::StatusFailed(_)) => return,
            (Phase::Asked(_), _) => svc.phase = Phase::Idle,
            (
                Phase::TearingDown,
                OpResult::StartFailed { error, .. } | OpResult::StopFailed(error),
            ) => {
                svc.message = Some(error.clone());
                return;
            }
            _ => {}
        }
        match result {
            OpResult::Started {
                shim,
                status,
                limits,
            } => {
                svc.shim = Some(shim);
                svc.limits_note = limits;
                svc.count_restart = false;
                svc.absorb(&status);
                let early = svc.early_exit.take().filter(|(run, _)| *run == svc.run);
                svc.run_started = Some(self.now);
                svc.ready = false;
                svc.message = None;
                let pid = svc.pid.unwrap_or_default();
                let run = svc.run;
                self.emit(
                    name,
                    "Started",
                    format!("run {run} started, pid {pid}"),
                    None,
                );
                if let Some((run, status)) = early {
                    // The run ended before we heard it had started; handle its exit now.
                    self.shim_event(ShimEvent::Exited {
                        name: name.to_owned(),
                        generation: shim,
                        run,
                        status,
                    });
                    return;
                }
                self.arm_probe(name);
            }
            OpResult::StartFailed { shim, error } => {
                if shim.is_some() {
                    svc.shim = shim;
                }
                svc.message = Some(error.clone());
                // The attempt counts, even though no run came of it.
                svc.restarts = svc
                    .restarts
                    .saturating_add(u64::from(std::mem::take(&mut svc.count_restart)));
                let exit = ExitView {
                    run: svc.run,
                    code: None,
                    signal: None,
                    reason: "StartError".into(),
                    at: Timestamp::now(),
                };
                svc.last_exit = Some(exit.clone());
                self.emit(name, "StartFailed", error, None);
                self.decide_after_exit(name, &exit, false);
            }
            OpResult::StopSent(status) => {
                // Only counters: whether the run is alive is the exit notice's to say (it may
                // have overtaken this answer).
                svc.restarts = status.restarts;
                svc.dropped = status.dropped_log_lines;
            }
            OpResult::StopFailed(error) => {
                svc.stopping = false;
                svc.message = Some(format!("stop failed: {error}"));
                self.emit(name, "StopFailed", error, None);
            }
            OpResult::ShimExited => {
                self.forget(name);
                return;
            }
            OpResult::TornDown(_) => {}
            OpResult::Status(status) => {
                // Late, but an answer: adopt it as if it had come at once, then apply what is
                // desired of the service.
                let blocked = svc.quarantine.clone();
                let desired = svc.desired.map(|desired| DesiredService {
                    blocked,
                    config: (*svc.config).clone(),
                    desired,
                });
                let Some(shim) = svc.shim else { return };
                self.adopted(name.to_owned(), shim, &status);
                if let Some(d) = desired {
                    self.desire_one(d);
                }
            }
            OpResult::StatusFailed(why) => {
                self.unanswered(name, why);
                return;
            }
        }
        self.reconcile(name);
    }

    pub(super) fn shim_event(&mut self, ev: ShimEvent) {
        match ev {
            ShimEvent::Exited {
                name,
                generation,
                run,
                status,
            } => {
                let Some(svc) = self.services.get_mut(&name) else {
                    return;
                };
                if matches!(svc.phase, Phase::Asked(_)) && run > svc.run {
                    // The notice overtook the answer to our start: keep it for op_done.
                    svc.early_exit = Some((run, status));
                    return;
                }
                if svc.shim != Some(generation) || svc.run != run {
                    return;
                }
                let view = exit_view(run, &status);
                let asked = svc.stopping;
                svc.pid = None;
                svc.stopping = false;
                svc.ready = false;
                svc.last_exit = Some(view.clone());
                self.stop_probe(&name);
                self.emit(&name, "Exited", describe_exit(&view), Some(view.clone()));
                // Readiness of dependants' dependencies changed: nothing stops (no cascades).
                self.decide_after_exit(&name, &view, asked);
                self.reconcile(&name);
            }
            ShimEvent::Lost { name, generation } => {
                let Some(svc) = self.services.get_mut(&name) else {
                    return;
                };
                if svc.shim != Some(generation) {
                    return;
                }
                svc.shim = None;
                if matches!(svc.phase, Phase::Asked(_)) {
                    svc.phase = Phase::Idle;
                }
                let lost_run = svc.pid.take().map(|pid| {
                    let view = ExitView {
                        run: svc.run,
                        code: None,
                        signal: None,
                        reason: "ShimLost".into(),
                        at: Timestamp::now(),
                    };
                    svc.last_exit = Some(view.clone());
                    svc.ready = false;
                    svc.set_state(State::Stopping);
                    (pid, view, svc.config.cgroup.clone())
                });
                self.effects.push(Effect::DropShim { name: name.clone() });
                self.stop_probe(&name);
                let Some((pid, view, cgroup)) = lost_run else {
                    if let Some(svc) = self.services.get_mut(&name)
                        && matches!(svc.phase, Phase::Unanswered { .. })
                    {
                        // The shim that did not answer is gone: clean up what it left, then
                        // the service is free to start.
                        self.emit(
                            &name,
                            "ShimLost",
                            "the shim that did not answer is gone".into(),
                            None,
                        );
                        self.shim_gone(&name, None);
                        return;
                    }
                    self.reconcile(&name);
                    return;
                };
                self.effects.push(Effect::KillGroup { pid });
                self.emit(
                    &name,
                    "ShimLost",
                    format!("the shim died; killed the orphaned run (pid {pid})"),
                    Some(view.clone()),
                );
                // The policy is applied once the run's cgroup is empty (off the loop).
                if let Some(svc) = self.services.get_mut(&name) {
                    svc.phase = Phase::TearingDown;
                }
                self.effects.push(Effect::Teardown {
                    name,
                    job: TeardownJob::LostRun { cgroup },
                    then: AfterTeardown::ShimLost(view),
                });
            }
        }
    }

    /// Applies the restart policy to an exit. `asked`: the exit followed a stop we sent.
    pub(super) fn decide_after_exit(&mut self, name: &str, exit: &ExitView, asked: bool) {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if asked || svc.desired != Some(Desired::Running) || svc.after_stop == AfterStop::Start {
            // An operator's stop, restart or delete: no policy, no backoff; reconcile goes on.
            return;
        }
        let failed = exit.code != Some(0);
        if svc.phase.in_flight() {
            // Not reached by the inputs that decide (their answers and exits come first), but
            // were it: what is in flight decides, and says so when it is done.
            tracing::warn!(
                service = name,
                "an exit while {:?}: no policy applied",
                svc.phase
            );
            return;
        }
        if svc.config.oneshot && !failed {
            svc.phase = Phase::Done;
            svc.ready = true;
            svc.attempt = 0;
            svc.count_restart = false;
            svc.message = None;
            svc.set_state(State::Completed);
            let msg = format!("{}: the step is done", describe_exit(exit));
            self.emit(name, "Completed", msg, None);
            self.reconcile_all_waiting();
            return;
        }
        if svc.config.oneshot {
            self.effects.push(Effect::ReadFailureOutput {
                name: name.to_owned(),
                run: exit.run,
            });
        }
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let restart = match svc.config.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if !restart {
            svc.phase = Phase::Done;
            svc.set_state(if failed {
                State::Failed
            } else {
                State::Stopped
            });
            let reason = if failed { "Failed" } else { "Stopped" };
            let msg = format!(
                "{}; restart policy {:?} does not restart it",
                describe_exit(exit),
                svc.config.restart.policy
            );
            self.emit(name, reason, msg, None);
            return;
        }
        svc.count_restart = true;
        // A long run resets a daemon's backoff; a failing step backs off however long it ran.
        let now = self.now;
        let healthy = !svc.config.oneshot
            && svc.run_started.is_some_and(|t| {
                now.saturating_duration_since(t) >= svc.config.restart.reset_after
            });
        let delay = if healthy {
            svc.attempt = 0;
            Duration::ZERO
        } else {
            let d = backoff::delay(
                svc.attempt,
                svc.config.restart.initial,
                svc.config.restart.max,
                &mut self.rng,
            );
            svc.attempt = svc.attempt.saturating_add(1);
            d
        };
        if delay.is_zero() {
            svc.phase = Phase::Idle;
            return;
        }
        // `check` caps every duration (ten years), but a store written by an older version may
        // hold anything: a delay no clock can reach waits the longest the spec allows instead,
        // and a clock that cannot reach even that quarantines the service.
        let scheduled = match now.checked_add(delay) {
            Some(until) => Some((until, delay)),
            None => now
                .checked_add(cloudlet_spec::MAX_BACKOFF)
                .map(|until| (until, cloudlet_spec::MAX_BACKOFF)),
        };
        let Some((until, delay)) = scheduled else {
            let why = Unusable {
                field: "spec.restart.backoff.max".into(),
                reason: format!("a restart in {delay:?} cannot be scheduled on this clock"),
            };
            let d = DesiredService {
                blocked: None,
                config: (*svc.config).clone(),
                desired: Desired::Running,
            };
            self.quarantine(d, why);
            return;
        };
        let at = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
            .unwrap_or_else(|_| Timestamp::now());
        svc.phase = Phase::Backoff { until, at, token };
        svc.set_state(State::Backoff);
        self.emit(
            name,
            "BackOff",
            format!("restarting in {}ms", delay.as_millis()),
            None,
        );
        self.effects.push(Effect::Timer {
            name: name.to_owned(),
            token,
            at: until,
        });
    }

    pub(super) fn arm_probe(&mut self, name: &str) {
        self.stop_probe(name);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.config.oneshot {
            // Running is not done: a step is ready when it exits 0.
            svc.set_state(State::Running);
            return;
        }
        let Some(probe) = svc.config.readiness.clone() else {
            let first = !svc.ready;
            svc.ready = true;
            svc.set_state(State::Running);
            if first {
                self.emit(name, "Ready", "running (no readiness probe)".into(), None);
            }
            self.reconcile_all_waiting();
            return;
        };
        self.effects.push(Effect::Probe {
            name: name.to_owned(),
            run: svc.run,
            probe,
            env: svc.config.process.env.clone(),
        });
    }

    pub(super) fn probe_result(&mut self, name: &str, run: u64, result: Result<(), String>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.run != run || svc.pid.is_none() {
            return;
        }
        let Some(probe) = svc.config.readiness.as_ref() else {
            return;
        };
        let (success_threshold, failure_threshold) =
            (probe.success_threshold, probe.failure_threshold);
        match result {
            Ok(()) => {
                svc.probe_fail = 0;
                svc.probe_ok = svc.probe_ok.saturating_add(1);
                if !svc.ready && svc.probe_ok >= success_threshold {
                    svc.ready = true;
                    svc.message = None;
                    svc.set_state(State::Running);
                    self.emit(
                        name,
                        "Ready",
                        format!("run {run} passed its readiness probe"),
                        None,
                    );
                    self.reconcile_all_waiting();
                }
            }
            Err(e) => {
                svc.probe_ok = 0;
                svc.probe_fail = svc.probe_fail.saturating_add(1);
                svc.message = Some(e.clone());
                if svc.ready && svc.probe_fail >= failure_threshold {
                    // Only a report: nothing is stopped, dependants keep running.
                    svc.ready = false;
                    let fails = svc.probe_fail;
                    self.emit(
                        name,
                        "Unready",
                        format!("readiness probe failed {fails} times: {e}"),
                        None,
                    );
                }
            }
        }
    }

    /// The last lines of a failed oneshot run: the "why" for `describe` and the events.
    pub(super) fn failure_output(&mut self, name: &str, run: u64, output: &str) {
        if let Some(svc) = self.services.get_mut(name)
            && svc.run == run
            && svc.pid.is_none()
        {
            svc.message = Some(format!("run {run} failed; its last output: {output}"));
            self.emit(
                name,
                "StepFailed",
                format!("run {run} of the oneshot step failed; its last output: {output}"),
                None,
            );
        }
    }

    /// A shim an earlier server left, reached: its service is known (with a placeholder config
    /// until the desired set arrives; one no longer desired is stopped and removed).
    pub(super) fn adopted(&mut self, name: String, shim: u64, status: &ShimStatus) {
        let config = Arc::new(super::placeholder_config(&name));
        let mut svc = Svc::new(config, None);
        svc.absorb(status);
        svc.adopted_tag = Some(status.tag.clone()).filter(|t| !t.is_empty());
        svc.shim = Some(shim);
        let mut message = format!("adopted shim pid {}", status.shim_pid);
        if let Some(r) = &status.running {
            // The run has been going since it started, not since we came back: that counts
            // for resetAfter and for `since`. Readiness is probed again from scratch.
            let age_ms = Timestamp::now()
                .as_millisecond()
                .saturating_sub(r.started_ms)
                .max(0);
            let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
            svc.run_started = Some(self.now.checked_sub(age).unwrap_or(self.now));
            svc.set_state(State::Running);
            if let Ok(t) = Timestamp::from_millisecond(r.started_ms) {
                svc.since = t;
            }
            message.push_str(&format!(", run {} pid {} still running", r.run, r.pid));
        } else if let Some((run, exit)) = &status.last_exit {
            let view = exit_view(*run, exit);
            message.push_str(&format!(
                ", {} while cloudlet was away",
                describe_exit(&view)
            ));
            svc.last_exit = Some(view);
            svc.set_state(State::Stopped);
            // Decide by policy once the config is known (see set_desired), unless the run
            // ended on a stop an earlier server sent (killed mid-restart): that is no crash.
            svc.adopted_exit_asked = exit.requested;
            svc.count_restart = !exit.requested;
        }
        self.emit(&name, "Adopted", message, None);
        self.services.insert(name, svc);
    }

    /// A shim an earlier server left took the connection but did not answer: it may hold a run,
    /// so the service is quarantined (never started next to it) and the shim asked again.
    pub(super) fn shim_unanswered(&mut self, name: String, shim: u64, why: String) {
        let mut svc = Svc::new(Arc::new(super::placeholder_config(&name)), None);
        svc.shim = Some(shim);
        svc.set_state(State::Invalid);
        self.services.insert(name.clone(), svc);
        self.emit(
            &name,
            "Quarantined",
            format!(
                "its shim did not answer ({why}): not started, so that no second copy runs next                  to the one it may hold; asked again every {}s (`ctl delete` removes it)",
                super::UNANSWERED_RETRY.as_secs()
            ),
            None,
        );
        self.unanswered(&name, why);
    }

    /// Arms the next question to a shim that did not answer.
    fn unanswered(&mut self, name: &str, why: String) {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.phase = Phase::Unanswered { why, token };
        self.effects.push(Effect::Timer {
            name: name.to_owned(),
            token,
            at: self
                .now
                .checked_add(super::UNANSWERED_RETRY)
                .unwrap_or(self.now),
        });
    }

    /// A shim an earlier server left is gone: what it left in the service's cgroups is ended off
    /// the loop; the service is known (not desired, not shown) until then, so that a start of it
    /// waits for its old cgroup to be empty.
    pub(super) fn shim_gone(&mut self, name: &str, message: Option<String>) {
        if let Some(message) = message {
            self.emit(name, "ShimLost", message, None);
        }
        let svc = self
            .services
            .entry(name.to_owned())
            .or_insert_with(|| Svc::new(Arc::new(super::placeholder_config(name)), None));
        svc.shim = None;
        svc.phase = Phase::TearingDown;
        self.effects.push(Effect::Teardown {
            name: name.to_owned(),
            job: TeardownJob::DeadShim,
            then: AfterTeardown::Adopted,
        });
    }
}

pub(super) fn exit_view(run: u64, status: &ExitStatus) -> ExitView {
    let (reason, signal) = match (status.code, status.signal) {
        (None, Some(s)) if status.oom_killed => ("OOMKilled", Some(super::signal_name(s))),
        _ if status.oom_killed => ("OOMKilled", None),
        (Some(0), _) => ("Completed", None),
        (Some(_), _) => ("Error", None),
        (None, Some(s)) => ("Signaled", Some(super::signal_name(s))),
        (None, None) => ("Error", None),
    };
    ExitView {
        run,
        code: status.code,
        signal,
        reason: reason.into(),
        at: Timestamp::from_millisecond(status.at_ms).unwrap_or_else(|_| Timestamp::now()),
    }
}

pub(super) fn describe_exit(e: &ExitView) -> String {
    if e.reason == "OOMKilled" {
        return format!(
            "run {} was killed by the kernel's OOM killer (memory.max)",
            e.run
        );
    }
    match (&e.code, &e.signal) {
        (Some(c), _) => format!("run {} exited with code {c}", e.run),
        (None, Some(s)) => format!("run {} was killed by {s}", e.run),
        _ => format!("run {} ended: {}", e.run, e.reason),
    }
}
