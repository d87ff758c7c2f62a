//! Crate-API tests of the cluster manifest: real texts through `parse_config` and
//! `ClusterManifest::parse`, the defaults, the exact wording of every rejection, the canonical
//! export, the diff of two revisions and which components each profile runs.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cloudlet_spec::{
    COMPONENTS, ClusterManifest, ClusterSpec, ComponentSpec, DEFAULT_PROGRESS_DEADLINE,
    FieldChange, Metadata, NodeRole, Profile, Rollout, component_role, diff, parse_config,
};
use serde_json::json;

/// The cluster from the issue, verbatim.
const EXAMPLE: &str = r#"apiVersion: cloudlet/v1
kind: Cluster
metadata: {name: prod}
spec:
  version: v3.11.9                  # default for every component
  profile: full                     # edge | control | compute | full (default edge)
  binDir: /opt/yunion/bin           # default
  configDir: /etc/yunion            # default
  region: region0                   # default region0
  zones: [zone0]                    # default [zone0]
  nodes:                            # which nodes are control / compute
    control: {names: [n1], labels: {rack: r1}}     # a node matches by name OR by all labels
    compute: {labels: {cloudlet.io/compute: "true"}}
  rollout: {maxUnavailable: 1, progressDeadline: 10m}   # defaults for all components
  components:
    keystone: {replicas: 1, config: {admin_port: 30357}, env: {A: b}, args: [--debug]}
    region: {version: v3.11.10, resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {memory: 4Gi}}}
    host: {nodeSelector: {labels: {gpu: "yes"}}, rollout: {maxUnavailable: 2}}
    glance: {disable: true}
"#;

/// A cluster with every kind of config value, and strings that only quoting keeps strings.
const RICH: &str = r#"apiVersion: cloudlet/v1
kind: Cluster
metadata:
  name: rich
  labels: {site: lab}
spec:
  version: v3.11.9
  profile: control
  binDir: /usr/local/yunion/bin
  configDir: /etc/cloudpods
  region: east
  zones: [z2, z1]
  nodes:
    control: {names: [n2, n1]}
  rollout: {progressDeadline: 90s}
  components:
    region:
      replicas: 3
      config:
        port: 30888
        quoted_port: "30888"
        enabled: true
        word: yes
        ratio: 1.5
        whole: 2.0
        nothing: ~
        list: [b, a, 1]
        nested: {z: 1, a: {c: d}}
        multi_line: "first\nsecond\n"
        long: "a long line, longer than eighty characters, with  two spaces and words that would fold over"
        "key with spaces": x
        "y": "n"
      env: {Z: "1", A: "off"}
      args: [--log-level, debug]
      nodeSelector: {labels: {disk: ssd}}
      resources:
        requests: {cpu: 0.5, memory: 1073741824}
        limits: {cpu: 2, memory: 4Gi, pids: 4096}
      rollout: {maxUnavailable: 2}
    esxi-agent: {disable: true, version: v3.11.8}
"#;

/// A Cluster document whose spec is `version: v3.11.9` plus `spec_lines` (no indent).
fn cluster(spec_lines: &[&str]) -> String {
    let mut text =
        "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {name: prod}\nspec:\n".to_owned();
    text.push_str("  version: v3.11.9\n");
    for line in spec_lines {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn parse(text: &str) -> ClusterManifest {
    let parsed = ClusterManifest::parse("cluster.yaml", text).unwrap();
    let through_config: ClusterManifest = parse_config("cluster.yaml", text).unwrap();
    assert_eq!(parsed, through_config);
    parsed
}

/// Asserts that `input` is rejected, by both ways of parsing it, with a message containing
/// `expected`.
fn check(input: &str, expected: &str) {
    for err in [
        ClusterManifest::parse("cluster.yaml", input).map(|_| ()),
        parse_config::<ClusterManifest>("cluster.yaml", input).map(|_| ()),
    ] {
        let Err(err) = err else {
            panic!("accepted, but should have been rejected:\n{input}");
        };
        let err = err.to_string();
        assert!(
            err.contains(expected),
            "error does not contain the expected text\n  error:    {err}\n  expected: {expected}\n  input:\n{input}"
        );
    }
}

#[test]
fn example_parses_with_effective_values() {
    let prod = parse(EXAMPLE);
    assert_eq!(prod.name(), "prod");
    let spec = &prod.spec;
    assert_eq!(spec.version, "v3.11.9");
    assert_eq!(spec.profile, Profile::Full);
    assert_eq!(spec.bin_dir, Path::new("/opt/yunion/bin"));
    assert_eq!(spec.config_dir, Path::new("/etc/yunion"));
    assert_eq!(spec.region, "region0");
    assert_eq!(spec.zones, ["zone0"]);
    assert_eq!(spec.nodes.control.names, ["n1"]);
    assert_eq!(spec.nodes.compute.labels["cloudlet.io/compute"], "true");

    let keystone = prod.component("keystone").unwrap();
    assert_eq!(keystone.replicas, Some(1));
    assert_eq!(keystone.config["admin_port"], json!(30357));
    assert_eq!(keystone.env["A"], "b");
    assert_eq!(keystone.args, ["--debug"]);
    let region = prod.component("region").unwrap().resources.clone().unwrap();
    assert_eq!(region.requests.unwrap().cpu.unwrap().millicores(), 500);
    assert_eq!(region.limits.unwrap().memory.unwrap().bytes(), 4 << 30);
    assert!(prod.component("glance").unwrap().disable);

    assert_eq!(prod.component_version("region"), "v3.11.10");
    assert_eq!(prod.component_version("keystone"), "v3.11.9");
    assert_eq!(prod.component_version("scheduler"), "v3.11.9");
    let ten_minutes = Duration::from_secs(600);
    assert_eq!(
        prod.rollout("host").effective(),
        Rollout {
            max_unavailable: 2,
            progress_deadline: ten_minutes
        }
    );
    assert_eq!(
        prod.rollout("keystone").effective(),
        Rollout {
            max_unavailable: 1,
            progress_deadline: ten_minutes
        }
    );

    // A node is control by name or by all labels; compute by its label.
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let nodes = &spec.nodes;
    assert_eq!(nodes.roles_of("n1", &labels(&[])), [NodeRole::Control]);
    assert_eq!(
        nodes.roles_of(
            "n7",
            &labels(&[("rack", "r1"), ("cloudlet.io/compute", "true")])
        ),
        [NodeRole::Control, NodeRole::Compute]
    );
    assert_eq!(nodes.roles_of("n7", &labels(&[("rack", "r2")])), []);
    assert_eq!(nodes.roles_of("n7", &labels(&[])), []);
}

/// Only `version` is required; everything else has its default.
#[test]
fn minimal_cluster_gets_defaults() {
    let minimal = parse(&cluster(&[]));
    let spec = &minimal.spec;
    assert_eq!(spec.profile, Profile::Edge);
    assert_eq!(spec.bin_dir, Path::new("/opt/yunion/bin"));
    assert_eq!(spec.config_dir, Path::new("/etc/yunion"));
    assert_eq!(spec.region, "region0");
    assert_eq!(spec.zones, ["zone0"]);
    assert!(spec.nodes.is_empty());
    assert!(spec.rollout.is_empty());
    assert!(spec.components.is_empty());
    assert_eq!(minimal.component_version("host"), "v3.11.9");
    assert_eq!(
        minimal.rollout("host").effective(),
        Rollout {
            max_unavailable: 1,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE
        }
    );
    // No node gets a role from an empty `nodes`.
    assert_eq!(spec.nodes.roles_of("n1", &BTreeMap::new()), []);
}

/// Every rejection names the file and the field path, with the exact wording users see.
#[test]
fn rejections() {
    let known = COMPONENTS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    let cases: Vec<(String, String)> = vec![
        // Structure: unknown fields, kinds, types, required fields.
        (
            cluster(&["profil: full"]),
            "cluster.yaml: spec.profil: unknown field \"profil\", expected one of version, profile, \
             binDir, configDir, dataDir, mysql, etcd, loadBalancerEndpoint, only, region, zones, nodes, disableTls, \
             disableBootstrap, commonConfig, rollout, components (line 6, column 3)"
                .into(),
        ),
        (
            cluster(&["components: {host: {replica: 2}}"]),
            "cluster.yaml: spec.components.host.replica: unknown field \"replica\", expected one of \
             disable, version, replicas, nodeSelector, resources, config, env, args, workingDir, rollout"
                .into(),
        ),
        (
            cluster(&["profile: fulll"]),
            "cluster.yaml: spec.profile: unknown value \"fulll\", expected one of edge, control, \
             compute, full (line 6, column 12)"
                .into(),
        ),
        (
            cluster(&[]).replace("kind: Cluster", "kind: Service"),
            "cluster.yaml: kind: unknown value \"Service\", expected one of Cluster (line 2, column 7)".into(),
        ),
        (
            cluster(&[]).replace("cloudlet/v1", "cloudlet/v2"),
            "cluster.yaml: apiVersion: unknown value \"cloudlet/v2\", expected one of cloudlet/v1".into(),
        ),
        (
            cluster(&[]).replace("  version: v3.11.9\n", "  profile: edge\n"),
            "cluster.yaml: spec.version: is required".into(),
        ),
        (
            cluster(&["zones: zone0"]),
            "cluster.yaml: spec.zones: expected a list (line 6, column 10)".into(),
        ),
        (
            cluster(&["nodes: {storage: {names: [n1]}}"]),
            "cluster.yaml: spec.nodes.storage: unknown field \"storage\", expected one of control, compute".into(),
        ),
        (
            cluster(&["components: {region: {replicas: -1}}"]),
            "cluster.yaml: spec.components.region.replicas: invalid value, expected a whole number from 0 to 4294967295".into(),
        ),
        (
            cluster(&["components: {host: {disable: yes}}"]),
            "cluster.yaml: spec.components.host.disable: invalid boolean (true or false expected) (line 6, column 32)".into(),
        ),
        // Values.
        (
            cluster(&[]).replace("version: v3.11.9", "version: \"\""),
            "cluster.yaml: spec.version: invalid version \"\": expected letters, digits, '.', '_', \
             '+' and '-', e.g. v3.11.9"
                .into(),
        ),
        (
            cluster(&["components: {region: {version: v3.11 beta}}"]),
            "cluster.yaml: spec.components.region.version: invalid version \"v3.11 beta\"".into(),
        ),
        (
            cluster(&["binDir: opt/yunion/bin"]),
            "cluster.yaml: spec.binDir: must be an absolute path, got \"opt/yunion/bin\"".into(),
        ),
        (
            cluster(&["configDir: etc"]),
            "cluster.yaml: spec.configDir: must be an absolute path, got \"etc\"".into(),
        ),
        (
            cluster(&["region: \"\""]),
            "cluster.yaml: spec.region: invalid region \"\": expected a name without spaces or '/'".into(),
        ),
        (
            cluster(&["zones: []"]),
            "cluster.yaml: spec.zones: must not be empty (leave it out for [zone0])".into(),
        ),
        (
            cluster(&["zones: [zone0, zone1, zone0]"]),
            "cluster.yaml: spec.zones[2]: \"zone0\" is listed twice".into(),
        ),
        (
            cluster(&["zones: [zone/0]"]),
            "cluster.yaml: spec.zones[0]: invalid zone \"zone/0\": expected a name without spaces or '/'".into(),
        ),
        (
            cluster(&["nodes: {compute: {names: [n1, n1]}}"]),
            "cluster.yaml: spec.nodes.compute.names[1]: \"n1\" is listed twice".into(),
        ),
        (
            cluster(&["nodes: {control: {labels: {\"\": x}}}"]),
            "cluster.yaml: spec.nodes.control.labels: label names must not be empty".into(),
        ),
        (
            cluster(&[]).replace("name: prod", "name: Prod"),
            "cluster.yaml: metadata.name: invalid name \"Prod\"".into(),
        ),
        // Rollout.
        (
            cluster(&["rollout: {maxUnavailable: 0}"]),
            "cluster.yaml: spec.rollout.maxUnavailable: must be at least 1 (a rollout updates at \
             least one node at a time)"
                .into(),
        ),
        (
            cluster(&["rollout: {progressDeadline: 10}"]),
            "cluster.yaml: spec.rollout.progressDeadline: invalid duration 10: expected a number \
             with a unit (ms, s, m, h), e.g. 30s (line 6, column"
                .into(),
        ),
        (
            cluster(&["components: {host: {rollout: {progressDeadline: 0s}}}"]),
            "cluster.yaml: spec.components.host.rollout.progressDeadline: must be more than 0".into(),
        ),
        (
            cluster(&["components: {host: {rollout: {maxUnavailable: 0}}}"]),
            "cluster.yaml: spec.components.host.rollout.maxUnavailable: must be at least 1".into(),
        ),
        // Components.
        (
            cluster(&["components: {glancy: {disable: true}}"]),
            format!("cluster.yaml: spec.components.glancy: unknown component \"glancy\", expected one of {known}"),
        ),
        (
            cluster(&["components: {region: {replicas: 0}}"]),
            "cluster.yaml: spec.components.region.replicas: must be at least 1 (set disable: true to run none)".into(),
        ),
        (
            cluster(&["components: {host: {replicas: 2}}"]),
            "cluster.yaml: spec.components.host.replicas: cannot be set: host runs once on every \
             compute node (choose the nodes with nodeSelector or spec.nodes.compute)"
                .into(),
        ),
        (
            cluster(&["components: {keystone: {nodeSelector: {roles: [compute]}}}"]),
            "cluster.yaml: spec.components.keystone.nodeSelector.roles: cannot be set: keystone runs \
             on control nodes (give nodes their roles under spec.nodes); select among them with labels"
                .into(),
        ),
        (
            cluster(&["components: {keystone: {nodeSelector: {labels: {\"\": x}}}}"]),
            "cluster.yaml: spec.components.keystone.nodeSelector.labels: label names must not be empty".into(),
        ),
        (
            cluster(&["components: {keystone: {env: {\"A=B\": x}}}"]),
            "cluster.yaml: spec.components.keystone.env: invalid variable name \"A=B\": must not be \
             empty or contain '=' or NUL"
                .into(),
        ),
        (
            cluster(&["commonConfig: {\"\": 1}"]),
            "cluster.yaml: spec.commonConfig: option names must not be empty".into(),
        ),
        (
            cluster(&["components: {keystone: {config: {\"\": 1}}}"]),
            "cluster.yaml: spec.components.keystone.config: option names must not be empty".into(),
        ),
        (
            cluster(&["components: {keystone: {args: [--debug, \"\"]}}"]),
            "cluster.yaml: spec.components.keystone.args[1]: must not be empty".into(),
        ),
        (
            cluster(&["components: {region: {resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}}"]),
            "cluster.yaml: spec.components.region.resources.limits.memory: limit 1Gi is below the request 2Gi".into(),
        ),
        (
            cluster(&["components: {region: {resources: {limits: {cpu: 2cores}}}}"]),
            "cluster.yaml: spec.components.region.resources.limits.cpu: invalid cpu \"2cores\": \
             expected cores (e.g. 0.5, 2) or millicores (e.g. 100m)"
                .into(),
        ),
        // YAML itself.
        (
            format!("{}---\n{}", cluster(&[]), cluster(&[])),
            "cluster.yaml: expected exactly one YAML document, found 2".into(),
        ),
        (
            "- a\n".into(),
            "cluster.yaml: expected a manifest (a mapping with apiVersion, kind, metadata and spec) (line 1, column 1)".into(),
        ),
    ];
    for (input, expected) in &cases {
        check(input, expected);
    }
}

/// `ClusterManifest::parse` gives every problem its own line naming the file; `parse_config`
/// gives them all too, in one message.
#[test]
fn every_problem_is_reported() {
    let text = cluster(&[
        "binDir: bin",
        "zones: [a, a]",
        "components: {host: {replicas: 1}, glancy: {}}",
    ]);
    let err = ClusterManifest::parse("cluster.yaml", &text).unwrap_err();
    let lines: Vec<String> = err.to_string().lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(
        lines[0],
        "cluster.yaml: spec.binDir: must be an absolute path, got \"bin\""
    );
    assert_eq!(
        lines[1],
        "cluster.yaml: spec.zones[1]: \"a\" is listed twice"
    );
    assert!(lines[2].starts_with("cluster.yaml: spec.components.glancy: unknown component"));
    assert!(lines[3].starts_with("cluster.yaml: spec.components.host.replicas: cannot be set"));
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_deref()).collect();
    assert_eq!(
        paths,
        [
            Some("spec.binDir"),
            Some("spec.zones[1]"),
            Some("spec.components.glancy"),
            Some("spec.components.host.replicas")
        ]
    );

    let err = parse_config::<ClusterManifest>("cluster.yaml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cluster.yaml: spec.binDir: must be an absolute path"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 4, "{err}");
}

/// The export of a minimal cluster, and of one that spells out every default, is the same
/// minimal text.
#[test]
fn export_leaves_defaults_out() {
    let minimal = "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata:\n  name: prod\nspec:\n  version: v3.11.9\n";
    assert_eq!(parse(&cluster(&[])).export().unwrap(), minimal);
    let spelled_out = cluster(&[
        "profile: edge",
        "binDir: /opt/yunion/bin",
        "configDir: /etc/yunion",
        "region: region0",
        "zones: [zone0]",
        "nodes: {control: {}, compute: {names: []}}",
        "rollout: {}",
        "components: {}",
        "dataDir: /var/lib/cloudpods",
        "mysql: {}",
        "etcd: {enable: false}",
        "loadBalancerEndpoint: 127.0.0.1",
        "only: []",
        "disableBootstrap: false",
    ]);
    assert_eq!(parse(&spelled_out).export().unwrap(), minimal);
}

/// parse(export(x)) == x and export(parse(export(x))) == export(x), byte for byte, for the
/// example, a rich cluster and a minimal one; the JSON form (for the store) round-trips too.
#[test]
fn export_round_trips() {
    let bootstrap = cluster(&[
        "dataDir: /srv/cloudpods",
        "mysql: {host: db.example, port: 3307, username: root, password: \"p w\"}",
        "etcd: {enable: true, port: 12379}",
        "loadBalancerEndpoint: 10.0.0.9",
        "only: [keystone, region]",
        "disableBootstrap: true",
    ]);
    for text in [EXAMPLE, RICH, &cluster(&[]), &bootstrap] {
        let parsed = parse(text);
        let exported = parsed.export().unwrap();
        let again = parse(&exported);
        assert_eq!(again, parsed, "{exported}");
        assert_eq!(again.export().unwrap(), exported);

        let json = serde_json::to_string(&parsed).unwrap();
        let from_json: ClusterManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, parsed);
        assert_eq!(from_json.export().unwrap(), exported);
    }

    // The values that only quoting keeps what they are, and the layout, as exported.
    let rich = parse(RICH);
    let region = rich.component("region").unwrap();
    assert_eq!(region.config["quoted_port"], json!("30888"));
    assert_eq!(region.config["port"], json!(30888));
    assert_eq!(region.config["word"], json!("yes"));
    assert_eq!(region.config["nothing"], json!(null));
    assert_eq!(region.env["A"], "off");
    let exported = rich.export().unwrap();
    for line in [
        "  zones:\n  - z2\n  - z1\n",
        "        quoted_port: \"30888\"\n",
        "        port: 30888\n",
        "        word: \"yes\"\n",
        "        whole: 2.0\n",
        "        nothing: null\n",
        "        multi_line: |\n          first\n          second\n",
        "        long: a long line, longer than eighty characters, with  two spaces and words that would fold over\n",
        "        nested:\n          a:\n            c: d\n          z: 1\n",
        "      env:\n        A: \"off\"\n        Z: \"1\"\n",
    ] {
        assert!(exported.contains(line), "{line:?} not in:\n{exported}");
    }
    // Components, and keys in every map, are sorted.
    let esxi = exported.find("    esxi-agent:").unwrap();
    let region = exported.find("    region:").unwrap();
    assert!(esxi < region, "{exported}");
}

/// The diff of two revisions lists exactly the changed paths, in path order.
#[test]
fn diff_lists_exactly_the_changed_paths() {
    let old = parse(EXAMPLE);
    let new_text = EXAMPLE
        .replace("version: v3.11.10", "version: v3.11.11")
        .replace("args: [--debug]", "args: [--debug, --verbose]")
        .replace(
            "admin_port: 30357",
            "admin_port: \"30357\", public_port: 30000",
        )
        .replace("glance: {disable: true}", "scheduler: {replicas: 2}")
        .replace("zones: [zone0]", "zones: [zone0, zone1]");
    let new = parse(&new_text);
    let changes = diff(&old, &new).unwrap();
    let change = |path: &str, old: Option<&str>, new: Option<&str>| FieldChange {
        path: path.to_owned(),
        old: old.map(String::from),
        new: new.map(String::from),
    };
    assert_eq!(
        changes,
        [
            change("spec.components.glance.disable", Some("true"), None),
            change(
                "spec.components.keystone.args",
                Some(r#"["--debug"]"#),
                Some(r#"["--debug","--verbose"]"#)
            ),
            change(
                "spec.components.keystone.config.admin_port",
                Some("30357"),
                Some("\"30357\"")
            ),
            change(
                "spec.components.keystone.config.public_port",
                None,
                Some("30000")
            ),
            change(
                "spec.components.region.version",
                Some("v3.11.10"),
                Some("v3.11.11")
            ),
            change("spec.components.scheduler.replicas", None, Some("2")),
            change("spec.zones", None, Some(r#"["zone0","zone1"]"#)),
        ]
    );
    assert_eq!(
        changes[4].to_string(),
        "spec.components.region.version: v3.11.10 -> v3.11.11"
    );
    assert_eq!(
        changes[0].to_string(),
        "spec.components.glance.disable: true -> (unset)"
    );
    assert_eq!(diff(&old, &old).unwrap(), []);
    // A default spelled out is no change; a reversed diff swaps every side.
    let spelled_out = parse(&cluster(&[
        "region: region0",
        "zones: [zone0]",
        "rollout: {}",
    ]));
    assert_eq!(diff(&parse(&cluster(&[])), &spelled_out).unwrap(), []);
    let reversed: Vec<FieldChange> = diff(&new, &old).unwrap();
    let swapped: Vec<FieldChange> = changes
        .into_iter()
        .map(|c| FieldChange {
            old: c.new,
            new: c.old,
            ..c
        })
        .collect();
    assert_eq!(reversed, swapped);
}

/// Each profile runs its components, in `COMPONENTS` order, minus the disabled ones.
#[test]
fn profile_components_per_profile() {
    let control: Vec<&str> = COMPONENTS
        .iter()
        .filter(|(_, role)| *role == NodeRole::Control)
        .map(|(name, _)| *name)
        .collect();
    let compute: Vec<&str> = COMPONENTS
        .iter()
        .filter(|(_, role)| *role == NodeRole::Compute)
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(control.len(), 16);
    assert_eq!(compute.len(), 7);
    let without = |list: &[&'static str], gone: &[&str]| -> Vec<&'static str> {
        list.iter().copied().filter(|n| !gone.contains(n)).collect()
    };
    // etcd runs only with `etcd: {enable: true}`.
    let all: Vec<&str> = without(
        &COMPONENTS.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        &["etcd"],
    );
    let control = without(&control, &["etcd"]);
    // glance (control) and host-image (compute) are disabled; region has an override only.
    let disabled =
        "components: {glance: {disable: true}, host-image: {disable: true}, region: {replicas: 2}}";
    for (profile, want) in [
        ("edge", all.clone()),
        ("full", all.clone()),
        ("control", control.clone()),
        ("compute", compute.clone()),
    ] {
        let plain = parse(&cluster(&[&format!("profile: {profile}")]));
        assert_eq!(plain.profile_components(), want, "{profile}");
        let some_off = parse(&cluster(&[&format!("profile: {profile}"), disabled]));
        assert_eq!(
            some_off.profile_components(),
            without(&want, &["glance", "host-image"]),
            "{profile}"
        );
    }
    assert_eq!(component_role("host"), Some(NodeRole::Compute));
    assert_eq!(component_role("keystone"), Some(NodeRole::Control));
    assert_eq!(component_role("glancy"), None);
}

/// `only` narrows the profile; the MariaDB cloudlet runs comes along with any control component
/// unless the YAML names a database server, disables it or the bootstrap.
#[test]
fn only_narrows_the_profile_and_mysql_comes_with_the_control_components() {
    let only = parse(&cluster(&["profile: edge", "only: [keystone, region]"]));
    assert_eq!(only.profile_components(), ["mysql", "keystone", "region"]);
    let compute_only = parse(&cluster(&["profile: edge", "only: [host]"]));
    assert_eq!(compute_only.profile_components(), ["host"]);
    let external = parse(&cluster(&[
        "only: [keystone]",
        "mysql: {host: db.example, username: root, password: pw}",
    ]));
    assert_eq!(external.profile_components(), ["keystone"]);
    let off = parse(&cluster(&["only: [keystone]", "disableBootstrap: true"]));
    assert_eq!(off.profile_components(), ["keystone"]);
    let disabled = parse(&cluster(&[
        "only: [keystone]",
        "components: {mysql: {disable: true}}",
    ]));
    assert_eq!(disabled.profile_components(), ["keystone"]);
    for (line, want) in [
        (
            "only: [keystone, glancy]",
            "spec.only[1]: unknown component \"glancy\"",
        ),
        (
            "mysql: {host: db.example}",
            "spec.mysql.username: must be set with spec.mysql.host",
        ),
        (
            "mysql: {username: root}",
            "spec.mysql.username: cannot be set without spec.mysql.host",
        ),
        ("mysql: {port: 0}", "spec.mysql.port: must be 1 to 65535"),
        ("dataDir: var/lib", "spec.dataDir: must be an absolute path"),
        (
            "loadBalancerEndpoint: \"10.0.0.1:443\"",
            "spec.loadBalancerEndpoint: invalid address \"10.0.0.1:443\"",
        ),
    ] {
        let err = ClusterManifest::parse("c.yaml", &cluster(&[line]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{line}: {err}");
    }
    let secret = parse(&cluster(&[
        "mysql: {host: db, username: root, password: hunter2}",
    ]));
    assert!(
        !format!("{secret:?}").contains("hunter2"),
        "Debug redacts it"
    );
}

/// A manifest built in code exports like the minimal text, and `validate` checks it, naming the
/// path but no file.
#[test]
fn built_manifests_validate_and_export() {
    let metadata = Metadata {
        name: "prod".into(),
        labels: BTreeMap::new(),
    };
    let mut built = ClusterManifest::new(metadata, ClusterSpec::new("v3.11.9"));
    built.validate().unwrap();
    assert_eq!(built, parse(&cluster(&[])));
    assert_eq!(
        built.export().unwrap(),
        parse(&cluster(&[])).export().unwrap()
    );

    built.spec.components.insert(
        "region".into(),
        ComponentSpec {
            replicas: Some(0),
            ..ComponentSpec::default()
        },
    );
    let err = built.validate().unwrap_err().to_string();
    assert_eq!(
        err,
        "spec.components.region.replicas: must be at least 1 (set disable: true to run none)"
    );
}
