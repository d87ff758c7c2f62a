//! One service's life: start, readiness, exits under each restart policy, backoff and its
//! reset, stop, restart, a changed command, delete.

use super::*;

#[test]
fn start_then_ready_without_a_probe() {
    let mut h = Harness::new();
    let web = daemon("web");
    let effects = h.desire(&[(&web, Desired::Running)]);
    let [
        Effect::Start {
            shim: None,
            config,
            run: 1,
            restarts: 0,
            ..
        },
    ] = effects.as_slice()
    else {
        panic!("{effects:?}");
    };
    assert_eq!(**config, web);
    assert_eq!(h.view("web").state, State::Starting);
    assert_eq!(h.view("web").run_tag.as_deref(), Some("web-v1"));
    let effects = h.started("web", 1000);
    assert_eq!(effects, [Effect::StopProbe { name: "web".into() }]);
    let v = h.view("web");
    assert_eq!(
        (v.state, v.ready, v.pid, v.run),
        (State::Running, true, Some(1000), 1)
    );
    assert_eq!(v.limits.as_deref(), Some("enforced"));
    assert_eq!(h.events(), ["web:Started", "web:Ready"]);
}

#[test]
fn readiness_needs_its_threshold_and_unready_stops_nothing() {
    let mut h = Harness::new();
    let db = probed("db");
    h.desire(&[(&db, Desired::Running)]);
    let effects = h.started("db", 1000);
    assert!(
        effects.iter().any(
            |e| matches!(e, Effect::Probe { name, run: 1, probe, .. } if name == "db" && probe.success_threshold == 2)
        ),
        "{effects:?}"
    );
    let probe = |h: &mut Harness, result: Result<(), String>| {
        h.feed(Input::Probe {
            name: "db".into(),
            run: 1,
            result,
        })
    };
    probe(&mut h, Ok(()));
    assert_eq!(
        (h.view("db").state, h.view("db").ready),
        (State::Starting, false)
    );
    probe(&mut h, Ok(()));
    assert_eq!(
        (h.view("db").state, h.view("db").ready),
        (State::Running, true)
    );
    // A result of another run is ignored.
    h.feed(Input::Probe {
        name: "db".into(),
        run: 7,
        result: Err("x".into()),
    });
    probe(&mut h, Err("refused".into()));
    assert!(h.view("db").ready, "one failure is below the threshold");
    let effects = probe(&mut h, Err("refused".into()));
    assert!(!h.view("db").ready);
    assert_eq!(h.view("db").message.as_deref(), Some("refused"));
    assert!(
        effects.is_empty(),
        "an unready service is not stopped: {effects:?}"
    );
    assert_eq!(h.events(), ["db:Started", "db:Ready", "db:Unready"]);
}

#[test]
fn an_exit_under_always_backs_off_then_the_timer_restarts_it() {
    let mut h = Harness::new();
    running_daemon(&mut h, &daemon("web"));
    let effects = h.exited("web", Some(1), None);
    let (token, at) = timer(&effects).expect("a timer");
    // The first delay is the initial one.
    assert_eq!(at, h.now + Duration::from_millis(100));
    assert!(effects.contains(&Effect::StopProbe { name: "web".into() }));
    let v = h.view("web");
    assert_eq!((v.state, v.pid, v.ready), (State::Backoff, None, false));
    assert_eq!(
        v.last_exit.as_ref().map(|e| e.reason.as_str()),
        Some("Error")
    );
    assert!(v.next_restart_at.is_some());
    // A stale timer does nothing; the right one (once due) starts run 2, counted as a restart.
    h.now += Duration::from_millis(100);
    assert!(
        h.feed(Input::Timer {
            name: "web".into(),
            token: token + 1000
        })
        .is_empty()
    );
    let effects = h.feed(Input::Timer {
        name: "web".into(),
        token,
    });
    assert_eq!(starts(&effects), [("web".into(), 2, 1)]);
    h.started("web", 1001);
    assert_eq!(h.view("web").restarts, 1);
    assert_eq!(
        h.events(),
        [
            "web:Started",
            "web:Ready",
            "web:Exited",
            "web:BackOff",
            "web:Started",
            "web:Ready"
        ]
    );
}

#[test]
fn backoff_grows_to_its_max_and_a_long_run_resets_it() {
    let mut h = Harness::new();
    running_daemon(&mut h, &daemon("web"));
    let mut delays = Vec::new();
    for pid in 1001..1008 {
        let effects = h.exited("web", None, Some(9));
        let (token, at) = timer(&effects).expect("a timer");
        delays.push(at - h.now);
        h.now = at;
        h.feed(Input::Timer {
            name: "web".into(),
            token,
        });
        h.started("web", pid);
    }
    assert_eq!(delays[0], Duration::from_millis(100));
    for d in &delays {
        assert!(
            *d >= Duration::from_millis(100) && *d <= Duration::from_secs(1),
            "{delays:?}"
        );
    }
    assert!(
        delays[6] >= Duration::from_millis(500),
        "it grew: {delays:?}"
    );
    // A run that lasted resetAfter restarts at once, and the backoff starts over.
    h.now += Duration::from_secs(60);
    let effects = h.exited("web", Some(1), None);
    assert_eq!(timer(&effects), None);
    assert_eq!(starts(&effects), [("web".into(), 9, 8)]);
    h.started("web", 2000);
    let effects = h.exited("web", Some(1), None);
    assert_eq!(
        timer(&effects).map(|(_, at)| at - h.now),
        Some(Duration::from_millis(100))
    );
}

#[test]
fn on_failure_restarts_a_failure_and_not_a_clean_exit() {
    let mut h = Harness::new();
    running_daemon(&mut h, &with_policy("job", RestartPolicy::OnFailure));
    assert!(timer(&h.exited("job", Some(2), None)).is_some());
    let mut h = Harness::new();
    running_daemon(&mut h, &with_policy("job", RestartPolicy::OnFailure));
    let effects = h.exited("job", Some(0), None);
    assert!(
        starts(&effects).is_empty() && timer(&effects).is_none(),
        "{effects:?}"
    );
    assert_eq!(h.view("job").state, State::Stopped);
    assert!(h.events().contains(&"job:Stopped".to_owned()));
}

#[test]
fn never_fails_for_good_until_an_operator_starts_it() {
    let mut h = Harness::new();
    running_daemon(&mut h, &with_policy("job", RestartPolicy::Never));
    let effects = h.exited("job", Some(3), None);
    assert!(starts(&effects).is_empty() && timer(&effects).is_none());
    assert_eq!(h.view("job").state, State::Failed);
    assert!(h.message_of("Failed").contains("run 1 exited with code 3"));
    // A new desired set with the same config does not start it again.
    assert!(
        starts(&h.desire(&[(&with_policy("job", RestartPolicy::Never), Desired::Running)]))
            .is_empty()
    );
    let (result, effects) = h.action("job", Action::Start);
    result.unwrap();
    assert_eq!(
        starts(&effects),
        [("job".into(), 2, 0)],
        "an operator's start is no restart"
    );
}

#[test]
fn a_failed_start_counts_and_backs_off() {
    let mut h = Harness::new();
    let web = daemon("web");
    h.desire(&[(&web, Desired::Running)]);
    let effects = h.done(
        "web",
        OpResult::StartFailed {
            shim: Some(5),
            error: "no such file".into(),
        },
    );
    assert!(timer(&effects).is_some());
    let v = h.view("web");
    assert_eq!(v.state, State::Backoff);
    assert_eq!(v.message.as_deref(), Some("no such file"));
    assert_eq!(v.last_exit.map(|e| e.reason), Some("StartError".into()));
    // The next start goes through the shim that is alive, and counts as a restart.
    let (token, at) = timer(&effects).unwrap();
    h.now = at;
    let effects = h.feed(Input::Timer {
        name: "web".into(),
        token,
    });
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Start {
                shim: Some(5),
                run: 1,
                restarts: 1,
                ..
            }]
        ),
        "{effects:?}"
    );
}

#[test]
fn stop_sends_the_signal_and_the_exit_is_final() {
    let mut h = Harness::new();
    let web = daemon("web");
    running_daemon(&mut h, &web);
    let effects = h.desire(&[(&web, Desired::Stopped)]);
    assert_eq!(
        effects,
        [Effect::Stop {
            name: "web".into(),
            shim: h.shims["web"],
            signal: 15,
            grace_ms: 10_000
        }]
    );
    assert_eq!(h.view("web").state, State::Stopping);
    assert!(
        h.message_of("Stopping")
            .contains("sending SIGTERM to pid 1000, SIGKILL after 10s")
    );
    h.done(
        "web",
        OpResult::StopSent(status("web", Some((1, 1000)), 1, 0, None)),
    );
    let effects = h.exited("web", None, Some(15));
    assert!(
        starts(&effects).is_empty() && timer(&effects).is_none(),
        "{effects:?}"
    );
    let v = h.view("web");
    assert_eq!((v.state, v.pid), (State::Stopped, None));
    assert_eq!(h.events(), ["web:Exited", "web:Stopped"]);
    // A failed stop is reported, and the run is still there.
    let mut h = Harness::new();
    running_daemon(&mut h, &web);
    h.desire(&[(&web, Desired::Stopped)]);
    h.done("web", OpResult::StopFailed("timed out".into()));
    assert_eq!(h.view("web").pid, Some(1000));
    assert!(h.events().contains(&"web:StopFailed".to_owned()));
}

#[test]
fn restart_stops_then_starts_without_counting() {
    let mut h = Harness::new();
    running_daemon(&mut h, &daemon("web"));
    let (result, effects) = h.action("web", Action::Restart);
    result.unwrap();
    assert!(
        matches!(effects.as_slice(), [Effect::Stop { .. }]),
        "{effects:?}"
    );
    h.done(
        "web",
        OpResult::StopSent(status("web", Some((1, 1000)), 1, 0, None)),
    );
    let effects = h.exited("web", None, Some(15));
    assert_eq!(starts(&effects), [("web".into(), 2, 0)]);
    assert!(h.action("nope", Action::Restart).0.is_err());
}

#[test]
fn a_changed_command_replaces_the_run_and_a_changed_label_does_not() {
    let mut h = Harness::new();
    let web = daemon("web");
    running_daemon(&mut h, &web);
    let mut relabelled = web.clone();
    relabelled.labels.insert("tier".into(), "front".into());
    relabelled.tag = "web-v2".into();
    assert!(h.desire(&[(&relabelled, Desired::Running)]).is_empty());
    assert_eq!(
        h.view("web").run_tag.as_deref(),
        Some("web-v2"),
        "the run conforms"
    );
    let mut v3 = web.clone();
    v3.process.argv.push("--new".into());
    v3.tag = "web-v3".into();
    let effects = h.desire(&[(&v3, Desired::Running)]);
    assert!(
        matches!(effects.as_slice(), [Effect::Stop { .. }]),
        "{effects:?}"
    );
    assert_eq!(
        h.view("web").run_tag.as_deref(),
        Some("web-v2"),
        "until it is replaced"
    );
    // The exit may overtake the shim's answer to the stop: nothing starts before that answer.
    assert!(starts(&h.exited("web", None, Some(15))).is_empty());
    let effects = h.done("web", OpResult::StopSent(status("web", None, 1, 0, None)));
    let [
        Effect::Start {
            config,
            run: 2,
            restarts: 0,
            ..
        },
    ] = effects.as_slice()
    else {
        panic!("{effects:?}");
    };
    assert_eq!(config.process.argv, v3.process.argv);
}

#[test]
fn delete_stops_the_run_tells_the_shim_to_exit_and_forgets() {
    let mut h = Harness::new();
    running_daemon(&mut h, &daemon("web"));
    let effects = h.desire(&[]);
    assert!(
        matches!(effects.as_slice(), [Effect::Stop { .. }]),
        "{effects:?}"
    );
    h.done(
        "web",
        OpResult::StopSent(status("web", Some((1, 1000)), 1, 0, None)),
    );
    let effects = h.exited("web", None, Some(15));
    assert_eq!(
        effects,
        [
            Effect::StopProbe { name: "web".into() },
            Effect::StopProbe { name: "web".into() },
            Effect::ExitShim {
                name: "web".into(),
                cgroup: "services/web".into()
            }
        ]
    );
    assert!(!h.shown("web"), "a deleted service is not shown");
    let effects = h.done("web", OpResult::ShimExited);
    assert_eq!(effects, [Effect::RemoveRunDir { name: "web".into() }]);
    assert!(h.events().ends_with(&["web:Deleted".to_owned()]));
}

#[test]
fn delete_without_a_shim_tears_the_cgroup_down_first() {
    let mut h = Harness::new();
    let job = with_policy("job", RestartPolicy::Never);
    h.desire(&[(&job, Desired::Running)]);
    h.done(
        "job",
        OpResult::StartFailed {
            shim: None,
            error: "nope".into(),
        },
    );
    let effects = h.desire(&[]);
    assert_eq!(
        effects,
        [
            Effect::StopProbe { name: "job".into() },
            Effect::Teardown {
                name: "job".into(),
                job: TeardownJob::Remove {
                    cgroup: "services/job".into()
                },
                then: AfterTeardown::Forget
            }
        ]
    );
    assert!(!h.events().contains(&"job:Deleted".to_owned()));
    let effects = h.done("job", OpResult::TornDown(AfterTeardown::Forget));
    assert_eq!(effects, [Effect::RemoveRunDir { name: "job".into() }]);
    assert!(h.events().contains(&"job:Deleted".to_owned()));
}

#[test]
fn a_backoff_no_clock_can_reach_waits_the_longest_the_spec_allows() {
    let mut h = Harness::new();
    // Past `check` by hand (as a store from an older version might): the clock cannot add it.
    let mut web = daemon("web");
    h.desire(&[(&web, Desired::Running)]);
    web.restart.initial = Duration::MAX;
    web.restart.max = Duration::MAX;
    if let Some(svc) = h.core.services.get_mut("web") {
        svc.config = Arc::new(web);
    }
    h.started("web", 1000);
    let effects = h.exited("web", Some(1), None);
    assert_eq!(
        timer(&effects).map(|(_, at)| at - h.now),
        Some(cloudlet_spec::MAX_BACKOFF),
        "{effects:?}"
    );
    assert!(h.message_of("BackOff").contains("restarting in 3600000ms"));
}
