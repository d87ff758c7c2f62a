//! The node firewall against a real Open vSwitch (userspace datapath) in network namespaces of
//! the test's own: policies compiled, diffed against `dump-flows` and applied as one bundle,
//! with real TCP connections and pings proving what gets through. Needs root and
//! openvswitch-switch, iproute2, ethtool, iputils-ping (and iptables, nftables to prove that
//! neither is touched).
#![allow(clippy::unwrap_used, reason = "tests")]

mod support_fw;

use cloudlet_netovs::firewall::{Flow, Policy, Scope, compile, diff, rule_cookie};
use cloudlet_netovs::ofctl::Ofctl;
use support_fw::{CLIENT, HOST, Lab};

fn policy(json: &str) -> Policy {
    serde_json::from_str(json).unwrap()
}

/// Every flow on the bridge, canonical and sorted (the firewall's and everyone else's).
fn all_flows(lab: &Lab) -> Vec<String> {
    let dump = lab.ofctl_raw(&["--no-stats", "--no-names", "dump-flows", "BR"]);
    let mut flows: Vec<String> = Flow::parse_dump(&dump)
        .unwrap()
        .iter()
        .map(Flow::to_string)
        .collect();
    flows.sort();
    flows
}

/// The flows on the bridge that are not the firewall's.
fn foreign_flows(lab: &Lab, scope: &Scope) -> Vec<String> {
    let dump = lab.ofctl_raw(&["--no-stats", "--no-names", "dump-flows", "BR"]);
    let mut flows: Vec<String> = Flow::parse_dump(&dump)
        .unwrap()
        .iter()
        .filter(|f| !scope.owns(f))
        .map(Flow::to_string)
        .collect();
    flows.sort();
    flows
}

fn sorted(flows: &[Flow]) -> Vec<String> {
    let mut v: Vec<String> = flows.iter().map(Flow::to_string).collect();
    v.sort();
    v
}

const WEB_ONLY: &str = r#"{"default": "deny", "rules": [
    {"name": "web", "direction": "in", "action": "allow", "protocol": "tcp", "ports": 8080}]}"#;

/// Default deny with one inbound TCP port allowed: that port connects, another does not, ping
/// is dropped until a rule allows ICMP, and ARP still works (the neighbour caches are flushed
/// first).
#[tokio::test]
async fn default_deny_lets_only_the_allowed_port_in() {
    let lab = Lab::new("inbound");
    let scope = lab.scope();
    let _web = lab.host.serve(HOST, 8080);
    let _other = lab.host.serve(HOST, 9090);
    // Without a firewall everything gets through: the negative checks below are not vacuous.
    lab.client.assert_connects(HOST, 8080);
    lab.client.assert_connects(HOST, 9090);
    assert!(lab.client.ping(HOST), "ping before the firewall");

    let flows = compile(&policy(WEB_ONLY), &scope);
    let applied = lab.ofctl().sync(&scope, &flows).await.unwrap();
    assert_eq!((applied.delete.len(), applied.add.len()), (0, flows.len()));
    lab.purge_datapath();

    lab.client.must("ip", &["neigh", "flush", "all"]);
    lab.host.must("ip", &["neigh", "flush", "all"]);
    lab.client.assert_connects(HOST, 8080);
    lab.client.assert_blocked(HOST, 9090);
    assert!(!lab.client.ping(HOST), "ping is not allowed in");

    // Allowing ICMP in is one more flow, and then ping answers.
    let with_ping = policy(
        r#"{"default": "deny", "rules": [
        {"name": "web", "direction": "in", "action": "allow", "protocol": "tcp", "ports": 8080},
        {"name": "ping", "direction": "in", "action": "allow", "protocol": "icmp"}]}"#,
    );
    let applied = lab
        .ofctl()
        .sync(&scope, &compile(&with_ping, &scope))
        .await
        .unwrap();
    assert_eq!((applied.delete.len(), applied.add.len()), (0, 1));
    lab.purge_datapath();
    assert!(lab.client.ping(HOST), "ping is allowed in");
    lab.client.assert_blocked(HOST, 9090);
    lab.assert_netfilter_unchanged();
}

/// Default deny with everything allowed out: with conntrack the replies to the host's own
/// connections come back while the client still cannot connect in; without it they do not.
#[tokio::test]
async fn stateful_lets_replies_in_and_stateless_does_not() {
    let lab = Lab::new("stateful");
    let scope = lab.scope();
    let _remote = lab.client.serve(CLIENT, 7070);
    let _local = lab.host.serve(HOST, 8080);
    lab.host.assert_connects(CLIENT, 7070);
    lab.client.assert_connects(HOST, 8080);
    let out_only = |stateful: bool| {
        policy(&format!(
            r#"{{"default": "deny", "stateful": {stateful}, "rules": [
                {{"name": "all-out", "direction": "out", "action": "allow"}}]}}"#
        ))
    };

    let ofctl = lab.ofctl();
    ofctl
        .sync(&scope, &compile(&out_only(true), &scope))
        .await
        .unwrap();
    lab.purge_datapath();
    lab.host.assert_connects(CLIENT, 7070);
    lab.client.assert_blocked(HOST, 8080);

    ofctl
        .sync(&scope, &compile(&out_only(false), &scope))
        .await
        .unwrap();
    lab.purge_datapath();
    lab.host.assert_blocked(CLIENT, 7070);
    lab.client.assert_blocked(HOST, 8080);
    lab.assert_netfilter_unchanged();
}

/// The installed flows read back as the compiled ones, so applying the same policy again is an
/// empty diff (no bundle at all); changing one rule's port changes exactly that rule's flows.
#[tokio::test]
async fn reapplying_is_empty_and_a_changed_rule_changes_only_its_flows() {
    let lab = Lab::new("diff");
    let scope = lab.scope();
    let servers: Vec<_> = [2222, 8080, 8081]
        .into_iter()
        .map(|port| lab.host.serve(HOST, port))
        .collect();
    let web = |ports: &str| {
        policy(&format!(
            r#"{{"default": "deny", "rules": [
                {{"name": "admin", "direction": "in", "action": "allow", "protocol": "tcp",
                  "ports": 2222, "cidr": "10.88.0.0/24"}},
                {{"name": "web", "direction": "in", "action": "allow", "protocol": "tcp",
                  "ports": "{ports}"}},
                {{"name": "out", "direction": "out", "action": "allow", "protocol": "udp",
                  "ports": "1024-65535"}}]}}"#
        ))
    };
    let ofctl = lab.ofctl();
    let v1 = compile(&web("8080"), &scope);
    ofctl.sync(&scope, &v1).await.unwrap();
    assert_eq!(
        sorted(&ofctl.dump_flows(&scope).await.unwrap()),
        sorted(&v1)
    );

    let again = ofctl.sync(&scope, &v1).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(again.bundle(), "");

    let v2 = compile(&web("8081"), &scope);
    let changed = ofctl.sync(&scope, &v2).await.unwrap();
    assert_eq!(
        (changed.delete.len(), changed.add.len()),
        (1, 1),
        "{changed:?}"
    );
    let web_cookie = rule_cookie("web");
    assert!(
        changed
            .delete
            .iter()
            .chain(&changed.add)
            .all(|f| f.cookie() == web_cookie)
    );
    assert_eq!(
        changed.delete[0].match_text(),
        "ct_state=+new+trk,tcp,tp_dst=8080"
    );
    assert_eq!(
        changed.add[0].match_text(),
        "ct_state=+new+trk,tcp,tp_dst=8081"
    );
    assert_eq!(
        sorted(&ofctl.dump_flows(&scope).await.unwrap()),
        sorted(&v2)
    );
    lab.purge_datapath();
    lab.client.assert_connects(HOST, 8081);
    lab.client.assert_connects(HOST, 2222);
    lab.client.assert_blocked(HOST, 8080);

    // A range becomes masked matches that the switch enforces: 8080-8090 is 8080/0xfff8,
    // 8088/0xfffe and 8090.
    let v3 = compile(&web("8080-8090"), &scope);
    let ranged = ofctl.sync(&scope, &v3).await.unwrap();
    assert_eq!(
        (ranged.delete.len(), ranged.add.len()),
        (1, 3),
        "{ranged:?}"
    );
    assert!(ofctl.sync(&scope, &v3).await.unwrap().is_empty());
    lab.purge_datapath();
    lab.client.assert_connects(HOST, 8080);
    lab.client.assert_connects(HOST, 8081);
    drop(servers);
    lab.assert_netfilter_unchanged();
}

/// Flows that are not the firewall's survive every apply, removal of the firewall included:
/// another cookie in table 0, another cookie inside the firewall's own range, and the
/// firewall's cookie in a table outside its range.
#[tokio::test]
async fn flows_that_are_not_ours_are_never_touched() {
    let lab = Lab::new("foreign");
    let scope = lab.scope();
    for flow in [
        "table=0,priority=100,cookie=0x1,udp,tp_dst=5555,actions=drop",
        "table=50,priority=10,cookie=0xc10d1e700000000,ip,actions=drop",
        "table=205,priority=7,cookie=0x77,udp,actions=drop",
    ] {
        lab.ofctl_raw(&["add-flow", "BR", flow]);
    }
    let before = foreign_flows(&lab, &scope);
    assert_eq!(before.len(), 4, "{before:#?}");
    assert!(before.contains(&"table=0,priority=0,cookie=0x0 actions=NORMAL".to_owned()));

    let ofctl = lab.ofctl();
    for json in [
        WEB_ONLY,
        r#"{"default": "allow", "stateful": false, "rules": [
            {"name": "no-telnet", "direction": "in", "action": "deny", "protocol": "tcp", "ports": 23}]}"#,
    ] {
        let applied = ofctl
            .sync(&scope, &compile(&policy(json), &scope))
            .await
            .unwrap();
        assert!(!applied.is_empty());
        assert_eq!(foreign_flows(&lab, &scope), before);
    }
    // No firewall at all: every flow of the firewall goes, and nothing else.
    let removed = ofctl.sync(&scope, &[]).await.unwrap();
    assert!(!removed.delete.is_empty() && removed.add.is_empty());
    assert!(ofctl.dump_flows(&scope).await.unwrap().is_empty());
    assert_eq!(all_flows(&lab), before);
    lab.assert_netfilter_unchanged();
}

/// A bundle that the switch rejects (a flow to a group that does not exist, after valid
/// deletes and adds) fails as a whole: the flows are exactly as before, and so is the policy.
#[tokio::test]
async fn a_rejected_bundle_changes_nothing() {
    let lab = Lab::new("atomic");
    let scope = lab.scope();
    let _web = lab.host.serve(HOST, 8080);
    let _other = lab.host.serve(HOST, 9090);
    let ofctl = lab.ofctl();
    ofctl
        .sync(&scope, &compile(&policy(WEB_ONLY), &scope))
        .await
        .unwrap();
    let before = all_flows(&lab);

    let open = policy(r#"{"default": "allow"}"#);
    let installed = ofctl.dump_flows(&scope).await.unwrap();
    let mut bad = diff(&scope, &installed, &compile(&open, &scope)).unwrap();
    assert!(!bad.delete.is_empty() && !bad.add.is_empty());
    bad.add.push(
        "table=204,priority=5,cookie=0xc10d1e700000000,ip actions=group:4242"
            .parse()
            .unwrap(),
    );
    let e = ofctl.apply(&bad).await.unwrap_err().to_string();
    assert!(e.contains("OFPBAC_BAD_OUT_GROUP"), "{e}");
    assert!(
        e.starts_with("ovs-ofctl --bundle -O OpenFlow14 add-flows unix:"),
        "{e}"
    );
    assert_eq!(all_flows(&lab), before);

    lab.purge_datapath();
    lab.client.assert_connects(HOST, 8080);
    lab.client.assert_blocked(HOST, 9090);
    lab.assert_netfilter_unchanged();
}

/// A switch that is not there is an error naming the command and the socket.
#[tokio::test]
async fn an_unreachable_switch_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("unix:{}/nothing.mgmt", dir.path().display());
    let scope = Scope {
        host_port: cloudlet_netovs::firewall::HostPort::Local,
        host_addrs: Vec::new(),
        tables: cloudlet_netovs::firewall::TableRange::new(200..=203).unwrap(),
        ct_zone: 1,
    };
    let e = Ofctl::new(
        &target,
        std::sync::Arc::new(cloudlet_netovs::run::TokioRunner),
    )
    .dump_flows(&scope)
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("ovs-ofctl --no-stats --no-names dump-flows unix:"),
        "{e}"
    );
    assert!(e.contains("nothing.mgmt"), "{e}");
}
