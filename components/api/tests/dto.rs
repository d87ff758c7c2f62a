//! The JSON contract: exact keys, `null` for absent values, lowercase enums, RFC 3339 timestamps.
//!
//! Clients (and the e2e tests) read these documents by key, so a renamed or skipped key is a
//! breaking change; these tests are where it shows.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::collections::BTreeMap;

use cloudlet_api::dto::{
    Action, ApplyAction, ApplyItem, ApplyRequest, ApplyResponse, DesiredState, ErrorBody, Event,
    EventsQuery, ExitInfo, LogLine, LogsQuery, ServiceDetail, ServiceState, ServiceStatus,
};
use serde_json::{Value, json};

fn status() -> ServiceStatus {
    ServiceStatus {
        name: "web".to_owned(),
        node: "node-1".to_owned(),
        state: ServiceState::Backoff,
        ready: false,
        pid: None,
        restarts: 1,
        run: 2,
        last_exit: None,
        since: "2024-05-01T10:00:00Z".parse().unwrap(),
        waiting_for: vec!["db".to_owned()],
        message: None,
        labels: BTreeMap::new(),
        desired: DesiredState::Stopped,
        next_restart_at: None,
        dropped_log_lines: 0,
        owner: None,
        group: None,
        limits: None,
        spec_digest: None,
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<_> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn sorted(mut keys: Vec<&str>) -> Vec<&str> {
    keys.sort_unstable();
    keys
}

#[test]
fn service_status_has_exactly_the_documented_keys_and_null_pid() {
    let value = serde_json::to_value(status()).unwrap();
    assert_eq!(
        keys(&value),
        sorted(vec![
            "name",
            "node",
            "state",
            "ready",
            "pid",
            "restarts",
            "run",
            "lastExit",
            "since",
            "waitingFor",
            "message",
            "labels",
            "desired",
            "nextRestartAt",
            "droppedLogLines",
            "owner",
            "group",
            "limits",
        ])
    );
    assert_eq!(value["pid"], Value::Null);
    assert_eq!(value["lastExit"], Value::Null);
    assert_eq!(value["state"], "backoff");
    assert_eq!(value["desired"], "stopped");
    assert_eq!(value["since"], "2024-05-01T10:00:00Z");
    let back: ServiceStatus = serde_json::from_value(value).unwrap();
    assert_eq!(back, status());
}

#[test]
fn enums_are_lowercase_words() {
    let states = [
        (ServiceState::Waiting, "waiting"),
        (ServiceState::Starting, "starting"),
        (ServiceState::Running, "running"),
        (ServiceState::Backoff, "backoff"),
        (ServiceState::Stopping, "stopping"),
        (ServiceState::Stopped, "stopped"),
        (ServiceState::Failed, "failed"),
        (ServiceState::Completed, "completed"),
        (ServiceState::Invalid, "invalid"),
    ];
    for (state, word) in states {
        assert_eq!(serde_json::to_value(state).unwrap(), word);
    }
    let actions = [
        (ApplyAction::Created, "created"),
        (ApplyAction::Configured, "configured"),
        (ApplyAction::Unchanged, "unchanged"),
    ];
    for (action, word) in actions {
        assert_eq!(serde_json::to_value(action).unwrap(), word);
    }
    assert_eq!(serde_json::to_value(Action::Restart).unwrap(), "restart");
    assert_eq!(
        serde_json::to_value(DesiredState::Running).unwrap(),
        "running"
    );
}

#[test]
fn other_documents_have_their_documented_keys() {
    let exit = ExitInfo {
        code: None,
        signal: Some("SIGKILL".to_owned()),
        reason: "Signaled".to_owned(),
        at: "2024-05-01T10:00:00Z".parse().unwrap(),
    };
    let event = Event {
        revision: 3,
        time: "2024-05-01T10:00:00Z".parse().unwrap(),
        service: None,
        node: "node-1".to_owned(),
        reason: "Exited".to_owned(),
        message: "killed".to_owned(),
        exit: Some(exit.clone()),
    };
    let event = serde_json::to_value(&event).unwrap();
    assert_eq!(
        keys(&event),
        sorted(vec![
            "revision", "time", "service", "node", "reason", "message", "exit"
        ])
    );
    assert_eq!(event["service"], Value::Null);
    assert_eq!(
        event["exit"],
        json!({"code": null, "signal": "SIGKILL", "reason": "Signaled", "at": "2024-05-01T10:00:00Z"})
    );

    let detail = ServiceDetail {
        usage: None,
        status: status(),
        manifest: json!({}),
        events: vec![],
        log_dir: "/logs/web".to_owned(),
    };
    let detail = serde_json::to_value(&detail).unwrap();
    assert_eq!(
        keys(&detail),
        sorted(vec!["status", "manifest", "events", "logDir", "usage"])
    );

    let line = LogLine {
        ts: "2024-05-01T10:00:00Z".parse().unwrap(),
        stream: "stderr".to_owned(),
        run: 1,
        partial: true,
        text: "x".to_owned(),
    };
    assert_eq!(
        serde_json::to_value(&line).unwrap(),
        json!({"ts": "2024-05-01T10:00:00Z", "stream": "stderr", "run": 1, "partial": true, "text": "x"})
    );

    let applied = ApplyResponse {
        items: vec![
            ApplyItem {
                name: "web".to_owned(),
                file: "web.yaml".to_owned(),
                action: ApplyAction::Configured,
                held: None,
            },
            ApplyItem {
                name: "db".to_owned(),
                file: "web.yaml".to_owned(),
                action: ApplyAction::Held,
                held: Some("rollout 2 rolled it back".to_owned()),
            },
        ],
    };
    assert_eq!(
        serde_json::to_value(&applied).unwrap(),
        json!({"items": [
            {"name": "web", "file": "web.yaml", "action": "configured"},
            {"name": "db", "file": "web.yaml", "action": "held", "held": "rollout 2 rolled it back"}
        ]})
    );
    // Clients that do not know `retry` send none: it means no.
    let request: ApplyRequest = serde_json::from_value(json!({"files": []})).unwrap();
    assert!(!request.retry);
    assert_eq!(
        serde_json::to_value(ErrorBody {
            error: "no".to_owned()
        })
        .unwrap(),
        json!({"error": "no"})
    );
}

#[test]
fn queries_use_camel_case_and_default_when_absent() {
    let query: EventsQuery = serde_json::from_value(json!({"sinceRevision": 4})).unwrap();
    assert_eq!(
        query,
        EventsQuery {
            since_revision: Some(4),
            ..EventsQuery::default()
        }
    );
    let query: LogsQuery = serde_json::from_value(json!({"follow": true, "tail": 10})).unwrap();
    assert_eq!(
        query,
        LogsQuery {
            follow: true,
            tail: Some(10),
            ..LogsQuery::default()
        }
    );
    assert!(serde_json::from_value::<LogsQuery>(json!({"follow": "maybe"})).is_err());
}
