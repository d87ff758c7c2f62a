//! The OVSDB client against a real `ovsdb-server` per test (see `support`): methods,
//! transactions through the `vswitch` builders (cross-checked with `ovs-vsctl`), failures,
//! monitors, keepalive, and surviving a server that dies, restarts or stops answering.

mod support;

use std::time::{Duration, Instant};

use cloudlet_netovs::NetovsError;
use cloudlet_netovs::ovsdb::vswitch::{
    self, BridgeSettings, DATABASE, FailMode, PortSettings, State, delete_port, ensure_bridge,
    ensure_port, set_interface_mtu,
};
use cloudlet_netovs::ovsdb::{
    Client, ClientOptions, Condition, Datum, Endpoint, Monitor, MonitorEvent, MonitorRequest,
    Mutation, Mutator, Operation, Row, SnapshotCause, Uuid,
};
use nix::sys::signal::Signal;
use support::OvsdbServer;

/// How long anything that should happen may take.
const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(server: &OvsdbServer) -> Client {
    Client::connect(server.endpoint(), ClientOptions::default())
        .await
        .expect("connect to the test's ovsdb-server")
}

async fn next_event(monitor: &mut Monitor) -> MonitorEvent {
    tokio::time::timeout(DEADLINE, monitor.next())
        .await
        .expect("no monitor event within the deadline")
        .expect("the monitor ended")
}

/// Names of the bridges an event shows to exist.
fn bridge_names(event: &MonitorEvent) -> Vec<String> {
    let (MonitorEvent::Snapshot { rows, .. } | MonitorEvent::Update(rows)) = event;
    let mut names: Vec<String> = rows
        .get("Bridge")
        .into_iter()
        .flat_map(|rows| rows.values())
        .filter_map(|update| {
            update
                .new
                .as_ref()?
                .get("name")?
                .atoms()
                .first()?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn lists_databases_and_reads_the_schema() {
    let server = OvsdbServer::start();
    let client = connect(&server).await;

    assert!(
        client
            .list_dbs()
            .await
            .unwrap()
            .iter()
            .any(|db| db == DATABASE)
    );
    let schema = client.get_schema(DATABASE).await.unwrap();
    assert_eq!(schema.name, DATABASE);
    assert!(schema.tables["Bridge"].columns.contains_key("fail_mode"));
    assert!(schema.tables["Open_vSwitch"].is_root && !schema.tables["Bridge"].is_root);
    client.echo().await.unwrap();

    let err = client.get_schema("Nope").await.unwrap_err();
    assert!(
        matches!(&err, NetovsError::Server { method, error, .. } if method == "get_schema" && error == "unknown database"),
        "{err}"
    );
}

#[tokio::test]
async fn connecting_to_no_server_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("db.sock");
    let err = Client::connect(Endpoint::Unix(socket.clone()), ClientOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NetovsError::Connect { path, .. } if *path == socket),
        "{err}"
    );
}

#[tokio::test]
async fn ensures_a_bridge_and_a_port_idempotently() {
    let server = OvsdbServer::start();
    let client = connect(&server).await;
    let bridge = BridgeSettings {
        datapath_type: "netdev".into(),
        fail_mode: Some(FailMode::Standalone),
        stp_enable: false,
        hwaddr: Some("02:00:00:00:00:01".into()),
    };
    let port = PortSettings {
        kind: "internal".into(),
        tag: Some(10),
        mtu_request: Some(1400),
    };

    let state = State::read(&client).await.unwrap();
    client
        .transact(DATABASE, &ensure_bridge(&state, "br0", &bridge).unwrap())
        .await
        .unwrap();
    assert_eq!(server.vsctl(&["list-br"]), "br0\n");
    let get = |args: &[&str]| server.vsctl(&[&["get"], args].concat()).trim().to_owned();
    assert_eq!(get(&["Bridge", "br0", "datapath_type"]), "netdev");
    assert_eq!(get(&["Bridge", "br0", "fail_mode"]), "standalone");
    assert_eq!(get(&["Bridge", "br0", "stp_enable"]), "false");
    assert_eq!(
        get(&["Bridge", "br0", "other_config:hwaddr"]),
        "\"02:00:00:00:00:01\""
    );
    assert_eq!(
        get(&["Interface", "br0", "type"]),
        "internal",
        "the bridge's own port, as add-br makes it"
    );

    let state = State::read(&client).await.unwrap();
    client
        .transact(DATABASE, &ensure_port(&state, "br0", "p1", &port).unwrap())
        .await
        .unwrap();
    assert_eq!(server.vsctl(&["list-ports", "br0"]), "p1\n");
    assert_eq!(get(&["Port", "p1", "tag"]), "10");
    assert_eq!(get(&["Interface", "p1", "type"]), "internal");
    assert_eq!(get(&["Interface", "p1", "mtu_request"]), "1400");

    // What was written reads back as it was asked for, and asking again changes nothing.
    let state = State::read(&client).await.unwrap();
    let br0 = state.bridge("br0").unwrap();
    assert_eq!(
        (
            br0.datapath_type.as_str(),
            br0.fail_mode,
            br0.other_config.get("hwaddr").map(String::as_str)
        ),
        (
            "netdev",
            Some(FailMode::Standalone),
            Some("02:00:00:00:00:01")
        )
    );
    let mut ports: Vec<&str> = state.ports_of(br0).map(|p| p.name.as_str()).collect();
    ports.sort_unstable();
    assert_eq!(ports, ["br0", "p1"]);
    assert_eq!(state.port("p1").unwrap().tag, Some(10));
    assert_eq!(state.interface("p1").unwrap().mtu_request, Some(1400));
    assert_eq!(ensure_bridge(&state, "br0", &bridge).unwrap(), []);
    assert_eq!(ensure_port(&state, "br0", "p1", &port).unwrap(), []);
    assert_eq!(client.transact(DATABASE, &[]).await.unwrap(), []);

    // Changes combine into one transaction, and keys of other_config cloudlet does not manage
    // survive a change of hwaddr.
    server.vsctl(&["set", "Bridge", "br0", "other_config:disable-in-band=true"]);
    let state = State::read(&client).await.unwrap();
    let changed = BridgeSettings {
        stp_enable: true,
        hwaddr: Some("02:00:00:00:00:02".into()),
        ..bridge.clone()
    };
    let mut ops = ensure_bridge(&state, "br0", &changed).unwrap();
    ops.extend(set_interface_mtu(&state, "p1", Some(9000)).unwrap());
    client.transact(DATABASE, &ops).await.unwrap();
    assert_eq!(get(&["Bridge", "br0", "stp_enable"]), "true");
    assert_eq!(
        get(&["Bridge", "br0", "other_config:hwaddr"]),
        "\"02:00:00:00:00:02\""
    );
    assert_eq!(
        get(&["Bridge", "br0", "other_config:disable-in-band"]),
        "\"true\""
    );
    assert_eq!(get(&["Interface", "p1", "mtu_request"]), "9000");

    let state = State::read(&client).await.unwrap();
    client
        .transact(DATABASE, &delete_port(&state, "p1"))
        .await
        .unwrap();
    assert_eq!(server.vsctl(&["list-ports", "br0"]), "");
    assert_eq!(
        server.vsctl(&["--columns=name", "find", "Interface", "name=p1"]),
        "",
        "collected with its port"
    );
    assert_eq!(delete_port(&State::read(&client).await.unwrap(), "p1"), []);

    let state = State::read(&client).await.unwrap();
    client
        .transact(DATABASE, &vswitch::delete_bridge(&state, "br0"))
        .await
        .unwrap();
    assert_eq!(server.vsctl(&["list-br"]), "");
}

#[tokio::test]
async fn a_failing_transaction_names_the_operation_and_changes_nothing() {
    let server = OvsdbServer::start();
    let client = connect(&server).await;
    server.vsctl(&["add-br", "br0"]);
    let state = State::read(&client).await.unwrap();
    let br0 = state.bridge("br0").unwrap();

    // A guard on the row as read fails once someone else changed it.
    server.vsctl(&["set", "Bridge", "br0", "stp_enable=true"]);
    let mut ops = vec![br0.unchanged()];
    ops.extend(ensure_port(&state, "br0", "p1", &PortSettings::default()).unwrap());
    let err = client.transact(DATABASE, &ops).await.unwrap_err();
    assert!(
        matches!(&err, NetovsError::Server { method, error, .. } if method == "transact op 0 (wait Bridge)" && error == "timed out"),
        "{err}"
    );
    assert_eq!(server.vsctl(&["list-ports", "br0"]), "");

    // A later operation's error undoes the earlier ones.
    let mut ops = ensure_port(&state, "br0", "p1", &PortSettings::default()).unwrap();
    ops.push(Operation::update(
        "Bridge",
        vec![Condition::uuid(&br0.uuid)],
        Row::new().with("no_such_column", 1),
    ));
    let err = client.transact(DATABASE, &ops).await.unwrap_err();
    assert!(
        matches!(&err, NetovsError::Server { method, .. } if method == "transact op 3 (update Bridge)"),
        "{err}"
    );
    assert_eq!(server.vsctl(&["list-ports", "br0"]), "");

    // A reference to a row that does not exist fails at commit.
    let ghost: Uuid = "5d9e1c3a-0000-4000-8000-000000000001".parse().unwrap();
    let ops = [
        Operation::insert_named(
            "Port",
            "p",
            Row::new().with("name", "p2").with("interfaces", ghost),
        ),
        Operation::mutate(
            "Bridge",
            vec![Condition::uuid(&br0.uuid)],
            vec![Mutation::new(
                "ports",
                Mutator::Insert,
                Datum::named_uuid("p"),
            )],
        ),
    ];
    let err = client.transact(DATABASE, &ops).await.unwrap_err();
    assert!(
        matches!(&err, NetovsError::Server { method, error, .. } if method == "transact commit" && error == "referential integrity violation"),
        "{err}"
    );
    assert_eq!(server.vsctl(&["list-ports", "br0"]), "");

    // The transaction that now matches the row goes through.
    let state = State::read(&client).await.unwrap();
    let mut ops = vec![state.bridge("br0").unwrap().unchanged()];
    ops.extend(ensure_port(&state, "br0", "p1", &PortSettings::default()).unwrap());
    client.transact(DATABASE, &ops).await.unwrap();
    assert_eq!(server.vsctl(&["list-ports", "br0"]), "p1\n");
}

#[tokio::test]
async fn a_monitor_delivers_the_state_then_each_change() {
    let server = OvsdbServer::start();
    server.vsctl(&["add-br", "br0"]);
    let client = connect(&server).await;
    let mut monitor = State::monitor(&client).await.unwrap();

    let mut state = State::default();
    let first = next_event(&mut monitor).await;
    assert!(
        matches!(
            first,
            MonitorEvent::Snapshot {
                cause: SnapshotCause::Initial,
                ..
            }
        ),
        "{first:?}"
    );
    state.apply(&first).unwrap();
    assert!(state.root.is_some());
    assert_eq!(
        state
            .bridges
            .values()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["br0"]
    );

    server.vsctl(&[
        "add-br",
        "br1",
        "--",
        "set",
        "Bridge",
        "br1",
        "fail_mode=secure",
    ]);
    let added = next_event(&mut monitor).await;
    assert!(matches!(added, MonitorEvent::Update(_)), "{added:?}");
    state.apply(&added).unwrap();
    let br1 = state.bridge("br1").unwrap();
    assert_eq!(br1.fail_mode, Some(FailMode::Secure));
    assert_eq!(
        state
            .ports_of(br1)
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["br1"]
    );
    assert!(state.root.as_ref().unwrap().bridges.contains(&br1.uuid));

    server.vsctl(&["del-br", "br1"]);
    state.apply(&next_event(&mut monitor).await).unwrap();
    assert!(
        state.bridge("br1").is_none()
            && state.port("br1").is_none()
            && state.interface("br1").is_none()
    );
    assert_eq!(
        state,
        State::read(&client).await.unwrap(),
        "the monitored state is the database's"
    );
}

#[tokio::test]
async fn answers_the_servers_echo_requests() {
    // The server probes only remotes configured in the database (Manager.inactivity_probe):
    // one probing every second, and dropping a client that does not answer within another.
    let server =
        OvsdbServer::start_with(&["--remote=db:Open_vSwitch,Open_vSwitch,manager_options"]);
    let probed = server.path("probed.sock");
    let target = format!("target=\"punix:{}\"", probed.display());
    server.vsctl(&[
        "--",
        "--id=@m",
        "create",
        "Manager",
        &target,
        "inactivity_probe=1000",
        "--",
        "add",
        "Open_vSwitch",
        ".",
        "manager_options",
        "@m",
    ]);
    server.wait_until_accepting(&probed);
    server.appctl(&["vlog/set", "jsonrpc:file:dbg"]);

    // Our own probe is far off: only the server's echo keeps the connection up.
    let options = ClientOptions {
        probe_interval: Duration::from_secs(600),
        ..ClientOptions::default()
    };
    let client = Client::connect(Endpoint::Unix(probed), options)
        .await
        .unwrap();
    let mut monitor = client
        .monitor(DATABASE, &[MonitorRequest::new("Bridge", &["name"])])
        .await
        .unwrap();
    next_event(&mut monitor).await;

    let answered = r#"received reply, result=[], id="echo""#;
    let deadline = Instant::now() + DEADLINE;
    // The log is the only witness of the server's probes: bounded retries.
    while server.log().matches(answered).count() < 3 {
        assert!(
            Instant::now() < deadline,
            "the server's echo went unanswered; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !server.log().contains("no response to inactivity probe"),
        "{}",
        server.log()
    );
    // Still the first connection: a reconnection would have brought a new snapshot.
    client.echo().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::ZERO, monitor.next())
            .await
            .is_err(),
        "an event came: the connection was lost"
    );
}

#[tokio::test]
async fn requests_from_many_tasks_share_the_connection() {
    let server = OvsdbServer::start();
    let client = connect(&server).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let name = format!("br{i}");
                let ops = [
                    Operation::insert_named("Bridge", "b", Row::new().with("name", name.as_str())),
                    Operation::mutate(
                        DATABASE,
                        vec![],
                        vec![Mutation::new(
                            "bridges",
                            Mutator::Insert,
                            Datum::named_uuid("b"),
                        )],
                    ),
                    Operation::select("Bridge", vec![Condition::equal("name", name.as_str())]),
                ];
                let results = client.transact(DATABASE, &ops).await.unwrap();
                let row = &results[2].rows().unwrap()[0];
                assert_eq!(
                    row.get("_uuid"),
                    results[0].uuid().cloned().map(Datum::from).as_ref()
                );
                assert_eq!(row.get("name"), Some(&Datum::from(name.as_str())));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(server.vsctl(&["list-br"]).lines().count(), 16);
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_and_resyncs_monitors() {
    let mut server = OvsdbServer::start();
    server.vsctl(&["add-br", "br0"]);
    let client = connect(&server).await;
    let mut monitor = State::monitor(&client).await.unwrap();
    let mut state = State::default();
    state.apply(&next_event(&mut monitor).await).unwrap();
    assert!(!state.bridge("br0").unwrap().stp_enable);

    // A request in flight when the server dies fails, saying so.
    server.signal(Signal::SIGSTOP);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.list_dbs().await }
    });
    server.kill();
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(matches!(err, NetovsError::Connection(_)), "{err}");

    // A change made while the client is away shows in the snapshot it gets on reconnecting.
    server.transact_offline(
        r#"["Open_vSwitch", {"op": "update", "table": "Bridge", "where": [["name", "==", "br0"]], "row": {"stp_enable": true}}]"#,
    );
    server.restart();
    let resync = next_event(&mut monitor).await;
    assert!(
        matches!(
            resync,
            MonitorEvent::Snapshot {
                cause: SnapshotCause::Reconnected,
                ..
            }
        ),
        "{resync:?}"
    );
    state.apply(&resync).unwrap();
    assert!(state.bridge("br0").unwrap().stp_enable);

    // The connection works again, monitor included.
    let ops = ensure_bridge(&state, "br1", &BridgeSettings::default()).unwrap();
    client.transact(DATABASE, &ops).await.unwrap();
    let added = next_event(&mut monitor).await;
    assert_eq!(bridge_names(&added), ["br1"]);
    state.apply(&added).unwrap();
    assert_eq!(state, State::read(&client).await.unwrap());
}

#[tokio::test]
async fn a_server_that_stops_answering_is_given_up_and_rejoined() {
    let server = OvsdbServer::start();
    let options = ClientOptions {
        probe_interval: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let client = Client::connect(server.endpoint(), options.clone())
        .await
        .unwrap();
    let mut monitor = client
        .monitor(DATABASE, &[MonitorRequest::new("Bridge", &["name"])])
        .await
        .unwrap();
    next_event(&mut monitor).await;
    server.vsctl(&["add-br", "br0"]);
    assert_eq!(bridge_names(&next_event(&mut monitor).await), ["br0"]);

    server.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let err = client.list_dbs().await.unwrap_err();
    assert!(
        matches!(&err, NetovsError::Connection(m) if m.contains("not even an answer to echo")),
        "{err}"
    );
    assert!(
        started.elapsed() < options.request_timeout,
        "found out by the probe, not the request's timeout"
    );

    server.signal(Signal::SIGCONT);
    let resync = next_event(&mut monitor).await;
    assert!(
        matches!(
            resync,
            MonitorEvent::Snapshot {
                cause: SnapshotCause::Reconnected,
                ..
            }
        ),
        "{resync:?}"
    );
    assert_eq!(bridge_names(&resync), ["br0"]);
}

#[tokio::test]
async fn a_consumer_that_falls_behind_gets_a_fresh_snapshot() {
    let server = OvsdbServer::start();
    let options = ClientOptions {
        monitor_buffer: 2,
        ..ClientOptions::default()
    };
    let client = Client::connect(server.endpoint(), options).await.unwrap();
    let mut monitor = client
        .monitor(DATABASE, &[MonitorRequest::new("Bridge", &["name"])])
        .await
        .unwrap();

    // The initial snapshot takes one slot; the first update finds only the last one, which is
    // kept for the lag marker. The server sends a monitor's updates before its answer to any
    // later request, so after an echo the client has seen them.
    for name in ["br0", "br1"] {
        server.vsctl(&["add-br", name]);
        client.echo().await.unwrap();
    }
    let initial = next_event(&mut monitor).await;
    assert!(
        matches!(
            initial,
            MonitorEvent::Snapshot {
                cause: SnapshotCause::Initial,
                ..
            }
        ),
        "{initial:?}"
    );
    assert_eq!(bridge_names(&initial), Vec::<String>::new());
    let resync = next_event(&mut monitor).await;
    assert!(
        matches!(
            resync,
            MonitorEvent::Snapshot {
                cause: SnapshotCause::Lagged,
                ..
            }
        ),
        "{resync:?}"
    );
    assert_eq!(bridge_names(&resync), ["br0", "br1"]);

    // Caught up, it gets updates again.
    server.vsctl(&["add-br", "br2"]);
    let added = next_event(&mut monitor).await;
    assert!(matches!(added, MonitorEvent::Update(_)), "{added:?}");
    assert_eq!(bridge_names(&added), ["br2"]);
}
