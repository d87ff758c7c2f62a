//! Transitions that involve other services or an earlier server: dependencies, oneshot steps,
//! lost shims, adoption, quarantine, and the loop that adopts before it takes the desired set.

use super::*;

#[test]
fn dependants_wait_for_readiness_and_an_unready_dependency_stops_nothing() {
    let mut h = Harness::new();
    let db = probed("db");
    let mut app = daemon("app");
    app.depends_on = vec!["db".into()];
    let effects = h.desire(&[(&app, Desired::Running), (&db, Desired::Running)]);
    assert_eq!(starts(&effects), [("db".into(), 1, 0)]);
    let v = h.view("app");
    assert_eq!(v.state, State::Waiting);
    assert_eq!(v.waiting_for, ["db (not ready)"]);
    h.started("db", 1000);
    for _ in 0..2 {
        h.feed(Input::Probe {
            name: "db".into(),
            run: 1,
            result: Ok(()),
        });
    }
    assert_eq!(
        starts(&h.world.effects).last().map(|s| s.0.clone()),
        Some("app".into())
    );
    h.started("app", 1001);
    for _ in 0..2 {
        let effects = h.feed(Input::Probe {
            name: "db".into(),
            run: 1,
            result: Err("down".into()),
        });
        assert!(effects.is_empty(), "{effects:?}");
    }
    assert_eq!(h.view("app").pid, Some(1001));
    // A dependency that is stopped or not there is named as such.
    let mut h = Harness::new();
    let mut both = daemon("both");
    both.depends_on = vec!["db".into(), "ghost".into()];
    h.desire(&[(&both, Desired::Running), (&db, Desired::Stopped)]);
    assert_eq!(
        h.view("both").waiting_for,
        ["db (stopped)", "ghost (not found)"]
    );
    assert!(
        h.message_of("Waiting")
            .contains("waiting for db (stopped), ghost (not found)")
    );
}

#[test]
fn a_oneshot_step_completes_once_and_its_failure_says_why() {
    let mut h = Harness::new();
    let mut step = with_policy("migrate", RestartPolicy::OnFailure);
    step.oneshot = true;
    let mut app = daemon("app");
    app.depends_on = vec!["migrate".into()];
    h.desire(&[(&app, Desired::Running), (&step, Desired::Running)]);
    h.started("migrate", 1000);
    assert_eq!(h.view("migrate").state, State::Running);
    assert!(!h.view("migrate").ready, "a running step is not done");
    // A failure reads the step's output and backs off.
    let effects = h.exited("migrate", Some(1), None);
    assert!(effects.contains(&Effect::ReadFailureOutput {
        name: "migrate".into(),
        run: 1
    }));
    let (token, at) = timer(&effects).unwrap();
    h.feed(Input::FailureOutput {
        name: "migrate".into(),
        run: 1,
        output: "no db".into(),
    });
    assert_eq!(
        h.view("migrate").message.as_deref(),
        Some("run 1 failed; its last output: no db")
    );
    h.now = at;
    h.feed(Input::Timer {
        name: "migrate".into(),
        token,
    });
    h.started("migrate", 1001);
    let effects = h.exited("migrate", Some(0), None);
    assert_eq!(
        starts(&effects),
        [("app".into(), 1, 0)],
        "the dependant starts"
    );
    let v = h.view("migrate");
    assert_eq!((v.state, v.ready), (State::Completed, true));
    assert!(h.events().contains(&"migrate:Completed".to_owned()));
    // Done is done: the same plan again does not run it.
    assert!(starts(&h.desire(&[(&app, Desired::Running), (&step, Desired::Running)])).is_empty());
}

#[test]
fn a_lost_shim_kills_the_orphan_and_the_policy_waits_for_the_teardown() {
    let mut h = Harness::new();
    running_daemon(&mut h, &daemon("web"));
    // A notice from an older connection is ignored.
    assert!(
        h.feed(Input::Shim(ShimEvent::Lost {
            name: "web".into(),
            generation: 1
        }))
        .is_empty()
    );
    let effects = h.lost("web");
    let view = h.view("web").last_exit.unwrap();
    assert_eq!(view.reason, "ShimLost");
    assert_eq!(
        effects,
        [
            Effect::DropShim { name: "web".into() },
            Effect::StopProbe { name: "web".into() },
            Effect::KillGroup { pid: 1000 },
            Effect::Teardown {
                name: "web".into(),
                job: TeardownJob::LostRun {
                    cgroup: "services/web".into()
                },
                then: AfterTeardown::ShimLost(view.clone())
            }
        ]
    );
    assert_eq!(h.view("web").state, State::Stopping);
    // An operator's start waits for the teardown too.
    let (result, effects) = h.action("web", Action::Start);
    result.unwrap();
    assert!(effects.is_empty(), "{effects:?}");
    // Once the cgroup is empty, the policy: back off, then a new shim for run 2.
    let effects = h.done("web", OpResult::TornDown(AfterTeardown::ShimLost(view)));
    let (token, at) = timer(&effects).expect("a backoff");
    h.now = at;
    let effects = h.feed(Input::Timer {
        name: "web".into(),
        token,
    });
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Start {
                shim: None,
                run: 2,
                restarts: 1,
                ..
            }]
        ),
        "{effects:?}"
    );
}

#[test]
fn adoption_keeps_a_running_run_and_probes_it_again() {
    let mut h = Harness::new();
    let db = probed("db");
    h.feed(Input::Adopted {
        name: "db".into(),
        shim: 5,
        status: status("db", Some((3, 700)), 3, 2, None),
    });
    assert!(
        h.message_of("Adopted")
            .contains("run 3 pid 700 still running")
    );
    let effects = h.desire(&[(&db, Desired::Running)]);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Probe { run: 3, .. })),
        "{effects:?}"
    );
    let v = h.view("db");
    assert_eq!(
        (v.pid, v.run, v.restarts, v.state),
        (Some(700), 3, 2, State::Running)
    );
    assert_eq!(v.run_tag.as_deref(), Some("db-v1"));
    // A stop goes through the adopted shim.
    let effects = h.desire(&[(&db, Desired::Stopped)]);
    assert!(
        matches!(effects.as_slice(), [Effect::Stop { shim: 5, .. }]),
        "{effects:?}"
    );
}

#[test]
fn an_exit_while_away_meets_the_policy_once_the_config_is_known() {
    let mut h = Harness::new();
    let exit = ExitStatus {
        code: None,
        signal: Some(9),
        at_ms: 0,
        oom_killed: false,
        requested: false,
    };
    h.feed(Input::Adopted {
        name: "web".into(),
        shim: 5,
        status: status("web", None, 4, 1, Some((4, exit))),
    });
    assert!(
        h.message_of("Adopted")
            .contains("run 4 was killed by SIGKILL while cloudlet was away")
    );
    assert!(
        !h.shown("web"),
        "not shown before the desired set says what it is"
    );
    let effects = h.desire(&[(&daemon("web"), Desired::Running)]);
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
                run: 5,
                restarts: 2,
                ..
            }]
        ),
        "{effects:?}"
    );
}

/// `torture` found it: a server SIGKILLed during `ctl restart`, after the stop was sent and
/// before the new run started, left an exit the next server took for a crash (backoff, and
/// an automatic restart counted).
#[test]
fn an_exit_an_earlier_server_asked_for_is_no_crash() {
    let mut h = Harness::new();
    let exit = ExitStatus {
        code: None,
        signal: Some(15),
        at_ms: 0,
        oom_killed: false,
        requested: true,
    };
    h.feed(Input::Adopted {
        name: "web".into(),
        shim: 5,
        status: status("web", None, 4, 1, Some((4, exit))),
    });
    let effects = h.desire(&[(&daemon("web"), Desired::Running)]);
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Start {
                shim: Some(5),
                run: 5,
                restarts: 1,
                ..
            }]
        ),
        "started at once, no restart counted: {effects:?}"
    );
    assert!(timer(&effects).is_none());
}

#[test]
fn an_adopted_service_no_longer_desired_is_stopped_and_removed() {
    let mut h = Harness::new();
    h.feed(Input::Adopted {
        name: "old".into(),
        shim: 5,
        status: status("old", Some((1, 700)), 1, 0, None),
    });
    let effects = h.desire(&[]);
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Stop {
                shim: 5,
                signal: 15,
                ..
            }]
        ),
        "{effects:?}"
    );
}

#[test]
fn a_dead_shim_found_at_adoption_is_cleaned_before_its_service_starts() {
    let mut h = Harness::new();
    let effects = h.feed(Input::ShimGone {
        name: "web".into(),
        message: Some("shim was gone (x); killed its orphaned process group 7".into()),
    });
    assert_eq!(
        effects,
        [Effect::Teardown {
            name: "web".into(),
            job: TeardownJob::DeadShim,
            then: AfterTeardown::Adopted
        }]
    );
    assert_eq!(h.events(), ["web:ShimLost"]);
    assert!(h.desire(&[(&daemon("web"), Desired::Running)]).is_empty());
    let effects = h.done("web", OpResult::TornDown(AfterTeardown::Adopted));
    assert_eq!(starts(&effects), [("web".into(), 1, 0)]);
    // One not desired is dropped silently once cleaned.
    h.feed(Input::ShimGone {
        name: "gone".into(),
        message: None,
    });
    h.done("gone", OpResult::TornDown(AfterTeardown::Adopted));
    assert!(!h.shown("gone"));
    assert!(!h.events().iter().any(|e| e.starts_with("gone:")));
}

#[test]
fn an_exit_notice_that_overtakes_the_start_answer_is_handled_after_it() {
    let mut h = Harness::new();
    h.desire(&[(&daemon("web"), Desired::Running)]);
    h.feed(Input::Shim(ShimEvent::Exited {
        name: "web".into(),
        generation: 101,
        run: 1,
        status: ExitStatus {
            code: Some(1),
            signal: None,
            at_ms: 0,
            oom_killed: false,
            requested: false,
        },
    }));
    let effects = h.started("web", 1000);
    assert!(timer(&effects).is_some(), "{effects:?}");
    assert_eq!(h.view("web").state, State::Backoff);
}

#[test]
fn quarantine_runs_nothing_reports_once_and_delete_works() {
    let mut h = Harness::new();
    let mut bad = daemon("web");
    bad.stop.grace = Duration::MAX;
    let effects = h.desire(&[(&bad, Desired::Running), (&daemon("ok"), Desired::Running)]);
    assert_eq!(starts(&effects), [("ok".into(), 1, 0)], "the others run on");
    let v = h.view("web");
    assert_eq!(v.state, State::Invalid);
    assert!(
        v.message
            .unwrap()
            .starts_with("quarantined: spec.stop.gracePeriod:")
    );
    assert!(
        h.message_of("Quarantined")
            .contains("spec.stop.gracePeriod")
    );
    h.desire(&[(&bad, Desired::Running), (&daemon("ok"), Desired::Running)]);
    assert!(
        !h.events().contains(&"web:Quarantined".to_owned()),
        "said once"
    );
    let (result, effects) = h.action("web", Action::Start);
    assert!(
        matches!(result, Err(SupervisorError::Quarantined { .. })),
        "{result:?}"
    );
    assert!(effects.is_empty());
    let effects = h.desire(&[(&daemon("ok"), Desired::Running)]);
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::Teardown {
                then: AfterTeardown::Forget,
                ..
            }
        )),
        "{effects:?}"
    );
    h.done("web", OpResult::TornDown(AfterTeardown::Forget));
    assert!(!h.shown("web"));
}

#[test]
fn a_quarantined_adopted_run_goes_on_until_deleted_and_a_fix_ends_quarantine() {
    let mut h = Harness::new();
    h.feed(Input::Adopted {
        name: "web".into(),
        shim: 5,
        status: status("web", Some((1, 700)), 1, 0, None),
    });
    let mut bad = daemon("web");
    bad.stop.signal = 999;
    assert!(
        h.desire(&[(&bad, Desired::Running)]).is_empty(),
        "the run is not stopped"
    );
    assert_eq!(
        (h.view("web").state, h.view("web").pid),
        (State::Invalid, Some(700))
    );
    // Fixed: the adopted run is taken as this config's, and probed (here: ready at once).
    let effects = h.desire(&[(&daemon("web"), Desired::Running)]);
    assert!(starts(&effects).is_empty(), "{effects:?}");
    assert_eq!(
        (h.view("web").state, h.view("web").ready),
        (State::Running, true)
    );
    // Quarantined again, then deleted: the run is stopped with the last config it could act on.
    h.desire(&[(&bad, Desired::Running)]);
    let effects = h.desire(&[]);
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Stop {
                shim: 5,
                signal: 15,
                ..
            }]
        ),
        "{effects:?}"
    );
}

#[tokio::test]
async fn the_loop_adopts_before_it_takes_the_desired_set_and_lets_go_at_shutdown() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let core = Core::new(events_tx, rand::rngs::StdRng::seed_from_u64(1));
    let mut world = RecordingWorld::default();
    world.adoption.push(Input::Adopted {
        name: "web".into(),
        shim: 5,
        status: status("web", Some((1, 700)), 1, 0, None),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let sup = crate::machine::Supervisor::from_sender(tx.clone());
    let initial = vec![DesiredService {
        blocked: None,
        config: daemon("web"),
        desired: Desired::Running,
    }];
    let task = tokio::spawn(crate::machine::run(core, world, initial, tx, rx));
    let views = sup.snapshot().await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].pid, views[0].state), (Some(700), State::Running));
    assert_eq!(events.recv().await.unwrap().reason, "Adopted");
    sup.shutdown().await;
    let world = task.await.unwrap();
    assert!(world.shut_down);
    assert!(
        world
            .effects
            .iter()
            .all(|e| !matches!(e, Effect::Start { .. } | Effect::Stop { .. }))
    );
}

#[test]
fn an_answer_that_comes_during_a_teardown_only_says_what_happened() {
    let mut h = Harness::new();
    let web = daemon("web");
    running_daemon(&mut h, &web);
    h.desire(&[(&web, Desired::Stopped)]);
    let effects = h.lost("web");
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Teardown { .. })),
        "{effects:?}"
    );
    let view = h.view("web").last_exit.unwrap();
    let effects = h.done("web", OpResult::StopFailed("lost the shim".into()));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(h.view("web").message.as_deref(), Some("lost the shim"));
    // The teardown's end decides: the operator wants it stopped, so it is.
    let effects = h.done("web", OpResult::TornDown(AfterTeardown::ShimLost(view)));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(h.view("web").state, State::Stopped);
}

#[test]
fn a_shim_that_does_not_answer_is_quarantined_asked_again_then_adopted() {
    let mut h = Harness::new();
    let effects = h.feed(Input::ShimUnanswered {
        name: "web".into(),
        shim: 5,
        why: "no answer within 10s".into(),
    });
    let (token, at) = timer(&effects).expect("asked again later");
    assert_eq!(at, h.now + UNANSWERED_RETRY);
    assert!(h.message_of("Quarantined").contains("no second copy"));
    let web = daemon("web");
    assert!(starts(&h.desire(&[(&web, Desired::Running)])).is_empty());
    let v = h.view("web");
    assert_eq!(v.state, State::Invalid);
    assert!(
        v.message
            .unwrap()
            .contains("did not answer (no answer within 10s)")
    );
    assert!(matches!(
        h.action("web", Action::Start).0,
        Err(SupervisorError::Quarantined { .. })
    ));
    h.now = at;
    let effects = h.feed(Input::Timer {
        name: "web".into(),
        token,
    });
    assert_eq!(
        effects,
        [Effect::AskStatus {
            name: "web".into(),
            shim: 5
        }]
    );
    let effects = h.done("web", OpResult::StatusFailed("still nothing".into()));
    assert!(timer(&effects).is_some(), "{effects:?}");
    assert_eq!(h.view("web").state, State::Invalid);
    // It answers: adopted with its run, under the desired config; nothing new is started.
    let effects = h.done(
        "web",
        OpResult::Status(status("web", Some((2, 700)), 2, 1, None)),
    );
    assert!(starts(&effects).is_empty(), "{effects:?}");
    let v = h.view("web");
    assert_eq!(
        (v.state, v.pid, v.run, v.restarts, v.ready),
        (State::Running, Some(700), 2, 1, true)
    );
    assert!(h.events().contains(&"web:Adopted".to_owned()));
    // A stop now goes through it.
    let effects = h.desire(&[(&web, Desired::Stopped)]);
    assert!(
        matches!(effects.as_slice(), [Effect::Stop { shim: 5, .. }]),
        "{effects:?}"
    );
}

#[test]
fn a_shim_that_did_not_answer_and_is_gone_is_cleaned_up_then_started() {
    let mut h = Harness::new();
    h.feed(Input::ShimUnanswered {
        name: "web".into(),
        shim: 5,
        why: "x".into(),
    });
    h.desire(&[(&daemon("web"), Desired::Running)]);
    let effects = h.feed(Input::Shim(ShimEvent::Lost {
        name: "web".into(),
        generation: 5,
    }));
    assert!(
        effects.contains(&Effect::Teardown {
            name: "web".into(),
            job: TeardownJob::DeadShim,
            then: AfterTeardown::Adopted
        }),
        "{effects:?}"
    );
    assert!(starts(&effects).is_empty());
    let effects = h.done("web", OpResult::TornDown(AfterTeardown::Adopted));
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Start {
                shim: None,
                run: 1,
                ..
            }]
        ),
        "{effects:?}"
    );
}

#[test]
fn a_shim_that_does_not_answer_is_told_to_exit_when_its_service_is_deleted() {
    let mut h = Harness::new();
    h.feed(Input::ShimUnanswered {
        name: "web".into(),
        shim: 5,
        why: "x".into(),
    });
    let effects = h.desire(&[]);
    assert!(
        effects.contains(&Effect::ExitShim {
            name: "web".into(),
            cgroup: "services/web".into()
        }),
        "{effects:?}"
    );
    // A late answer to the question changes nothing.
    assert!(h.done("web", OpResult::StatusFailed("x".into())).is_empty());
    h.done("web", OpResult::ShimExited);
    assert!(h.events().contains(&"web:Deleted".to_owned()));
}

/// What the node prepares for a service (its `spec.files`) failed: the service is held like an
/// unusable config, a running run left alone, and a set without the block starts or keeps it.
#[test]
fn a_blocked_service_is_held_until_a_set_without_the_block() {
    let mut h = Harness::new();
    let web = daemon("web");
    let blocked = |config: &ServiceConfig| {
        Input::Desired(vec![DesiredService {
            blocked: Some(crate::Unusable {
                field: "spec.files".into(),
                reason: "/etc/web is a symlink".into(),
            }),
            config: config.clone(),
            desired: Desired::Running,
        }])
    };
    let effects = h.feed(blocked(&web));
    assert!(effects.is_empty(), "{effects:?}");
    let v = h.view("web");
    assert_eq!(v.state, State::Invalid);
    assert!(
        v.message
            .as_deref()
            .is_some_and(|m| m.contains("spec.files: /etc/web is a symlink")),
        "{v:?}"
    );
    let effects = h.desire(&[(&web, Desired::Running)]);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Start { .. })),
        "{effects:?}"
    );
    h.started("web", 700);
    // A changed config whose files fail: the run goes on with the files it has.
    let mut changed = web.clone();
    changed.process.argv.push("--new".into());
    let effects = h.feed(blocked(&changed));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Stop { .. })),
        "{effects:?}"
    );
    assert_eq!(h.view("web").pid, Some(700));
}
