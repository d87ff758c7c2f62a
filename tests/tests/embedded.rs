//! The Cloudpods manifest templates (`embedded-manifests/cloudpods/`): rendered with the three
//! placeholders a cluster fills in, they parse, validate as one set with Open vSwitch (every
//! dependency resolves, no cycle), keep the start order of the Cloudpods facts, probe `/ping`
//! with a user agent that passes Cloudpods' whitelist, and place control and compute components
//! as their role says. Reads the files only; never starts cloudlet.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cloudlet_spec::{Manifest, NodeRole, Probe, ServiceManifest, parse_file, validate_set};

const BIN_DIR: &str = "/opt/yunion/bin";
const CONFIG_DIR: &str = "/etc/yunion";
const VERSION: &str = "v3.11.9";
const DATA_DIR: &str = "/var/lib/cloudpods";
const CLOUDLET: &str = "/usr/local/bin/cloudlet";

/// Every service the templates define, with its role.
const CONTROL: &[&str] = &[
    "keystone",
    "region",
    "scheduler",
    "glance",
    "webconsole",
    "apigateway",
    "logger",
    "yunionconf",
    "kubeserver",
    "monitor",
    "cloudmon",
    "notify",
    "esxi-agent",
    "baremetal-agent",
];
const COMPUTE: &[&str] = &[
    "host",
    "host-deployer",
    "host-image",
    "host-health",
    "sdnagent",
];

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../embedded-manifests")
}

/// Every `*.yaml` under `embedded-manifests/cloudpods/`, sorted: (file name, text).
fn template_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(manifests_dir().join("cloudpods"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn render(text: &str, bin_dir: &str, config_dir: &str, version: &str) -> String {
    text.replace("${binDir}", bin_dir)
        .replace("${configDir}", config_dir)
        .replace("${version}", version)
        .replace("${dataDir}", DATA_DIR)
        .replace("${cloudlet}", CLOUDLET)
}

/// The templates rendered with `bin_dir`, `config_dir` and `version`, each file parsed, then all
/// of them and `openvswitch.yaml` validated as one set; by name.
fn rendered_set(
    bin_dir: &str,
    config_dir: &str,
    version: &str,
) -> BTreeMap<String, ServiceManifest> {
    let mut all: Vec<Manifest> = Vec::new();
    for (name, text) in template_files() {
        let rendered = render(&text, bin_dir, config_dir, version);
        assert!(
            !rendered.contains("${"),
            "{name}: a placeholder other than binDir, configDir, dataDir, cloudlet and version"
        );
        let parsed = parse_file(&name, &rendered).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.len(), 1, "{name}: one service per file");
        assert_eq!(format!("{}.yaml", parsed[0].name()), name);
        all.extend(parsed);
    }
    let ovs = std::fs::read_to_string(manifests_dir().join("openvswitch.yaml")).unwrap();
    all.extend(parse_file("openvswitch.yaml", &ovs).unwrap());
    validate_set(&all, &[]).unwrap_or_else(|e| panic!("{e}"));
    all.iter()
        .map(|m| {
            let service = m.as_service().unwrap().clone();
            (service.name().to_owned(), service)
        })
        .collect()
}

fn cloudpods() -> BTreeMap<String, ServiceManifest> {
    rendered_set(BIN_DIR, CONFIG_DIR, VERSION)
}

fn deps<'a>(set: &'a BTreeMap<String, ServiceManifest>, name: &str) -> &'a [String] {
    &set[name].spec.depends_on
}

#[test]
fn the_templates_render_to_one_valid_set_of_every_cloudpods_service() {
    let set = cloudpods();
    let mut want: Vec<&str> = CONTROL.iter().chain(COMPUTE).copied().collect();
    want.extend(["openvswitch-db", "openvswitch-switch", "mysql", "etcd"]);
    want.sort_unstable();
    let got: Vec<&str> = set.keys().map(String::as_str).collect();
    assert_eq!(got, want);
    for name in CONTROL.iter().chain(COMPUTE) {
        let service = &set[*name];
        assert_eq!(service.metadata.labels["version"], VERSION, "{name}");
        assert_eq!(service.spec.env["CLOUDPODS_VERSION"], VERSION, "{name}");
        // The binary from binDir, and its config from configDir (`<configDir>/<name>.conf`).
        let command = &service.spec.command;
        assert!(
            command[0].starts_with(&format!("{BIN_DIR}/")),
            "{name}: {command:?}"
        );
        let config = command.iter().position(|a| a == "--config").unwrap();
        assert_eq!(command[config + 1], format!("{CONFIG_DIR}/{name}.conf"));
    }
    assert_eq!(
        set["kubeserver"].spec.command[0],
        format!("{BIN_DIR}/kube-server")
    );
    // The host's common config (facts §4) and its long stop (terminationGracePeriodSeconds 300).
    let host = &set["host"].spec;
    assert!(host.command.windows(2).any(|w| w
        == [
            "--common-config-file".to_owned(),
            format!("{CONFIG_DIR}/common/common.conf")
        ]));
    assert_eq!(
        set["host"].spec.effective_stop().grace_period,
        std::time::Duration::from_secs(300)
    );
}

#[test]
fn nothing_hard_codes_the_directories_the_cluster_chooses() {
    let set = rendered_set("/srv/cp/bin", "/srv/cp/conf", "v9.9.9");
    for name in CONTROL.iter().chain(COMPUTE) {
        let spec = &set[*name].spec;
        let mut strings: Vec<&String> = spec.command.iter().chain(spec.env.values()).collect();
        if let Some(exec) = spec.readiness.as_ref().and_then(|r| r.exec.as_ref()) {
            strings.extend(&exec.command);
        }
        for s in strings {
            assert!(
                !s.contains("/opt/yunion/bin") && !s.contains("/etc/yunion"),
                "{name}: {s:?} ignores binDir or configDir"
            );
        }
        assert!(spec.command[0].starts_with("/srv/cp/bin/"), "{name}");
        assert_eq!(set[*name].metadata.labels["version"], "v9.9.9");
    }
}

#[test]
fn start_order_follows_the_cloudpods_facts() {
    let set = cloudpods();
    assert!(deps(&set, "keystone").is_empty(), "keystone starts first");
    let after = |name: &str, dep: &str| {
        assert!(
            deps(&set, name).iter().any(|d| d == dep),
            "{name} must start after {dep}, depends on {:?}",
            deps(&set, name)
        );
    };
    for name in [
        "region",
        "logger",
        "notify",
        "glance",
        "kubeserver",
        "yunionconf",
        "webconsole",
        "cloudmon",
        "host-deployer",
    ] {
        after(name, "keystone");
    }
    for name in [
        "scheduler",
        "monitor",
        "apigateway",
        "esxi-agent",
        "baremetal-agent",
        "host",
    ] {
        after(name, "region");
    }
    after("host", "host-deployer");
    after("host", "openvswitch-switch");
    for name in ["host-image", "host-health", "sdnagent"] {
        after(name, "host");
    }
    // Everything else waits, directly or not, for keystone: nothing starts before it.
    for name in CONTROL.iter().chain(COMPUTE).filter(|n| **n != "keystone") {
        let mut stack = vec![*name];
        let mut seen = Vec::new();
        while let Some(n) = stack.pop() {
            if !seen.contains(&n) {
                seen.push(n);
                stack.extend(deps(&set, n).iter().map(String::as_str));
            }
        }
        assert!(
            seen.contains(&"keystone"),
            "{name} does not wait for keystone"
        );
    }
}

#[test]
fn every_http_probe_asks_for_ping_with_a_whitelisted_user_agent() {
    let set = cloudpods();
    let mut http = 0;
    for (name, service) in &set {
        let Some(readiness) = service.spec.effective().readiness else {
            continue;
        };
        if let Probe::Http {
            host,
            port,
            path,
            headers,
            ..
        } = &readiness.probe
        {
            http += 1;
            // Cloudpods answers /ping only to user agents containing kube-probe (facts §6).
            assert!(
                headers
                    .get("User-Agent")
                    .is_some_and(|ua| ua.contains("kube-probe")),
                "{name}: {headers:?}"
            );
            assert_eq!(path, "/ping", "{name}");
            assert_eq!(host, "127.0.0.1", "{name}");
            assert_eq!(
                readiness.period,
                std::time::Duration::from_secs(5),
                "{name}"
            );
            assert_eq!(
                readiness.timeout,
                std::time::Duration::from_secs(3),
                "{name}"
            );
            let want = match name.as_str() {
                "keystone" => 30500,
                "region" => 30888,
                "scheduler" => 30887,
                "glance" => 30292,
                "webconsole" => 30899,
                "apigateway" => 30300,
                "logger" => 30999,
                "yunionconf" => 30889,
                "monitor" => 30093,
                "cloudmon" => 30931,
                "notify" => 30777,
                "esxi-agent" => 30883,
                "baremetal-agent" => 8879,
                "host" => 8885,
                "host-image" => 48885,
                other => panic!("{other}: an HTTP probe nobody expected"),
            };
            assert_eq!(*port, want, "{name}");
        }
    }
    assert_eq!(http, 15);
    // The operator's probes fail after 2 (facts §6).
    for name in ["keystone", "region", "glance", "apigateway", "host"] {
        let readiness = set[name].spec.effective().readiness.unwrap();
        assert_eq!(readiness.failure_threshold, 2, "{name}");
    }
    // kube-server is TLS-only: its listener is the check.
    assert!(matches!(
        set["kubeserver"].spec.effective().readiness.unwrap().probe,
        Probe::Tcp { port: 30442, .. }
    ));
    // The socket services are ready when their socket exists, in the directory their
    // environment names (default /var/run/onecloud; the probe sees the same environment).
    for (name, socket) in [
        ("host-deployer", "deploy.sock"),
        ("sdnagent", "sdnagent.sock"),
    ] {
        let Probe::Exec { command } = set[name].spec.effective().readiness.unwrap().probe else {
            panic!("{name}: not an exec probe");
        };
        assert!(
            command
                .join(" ")
                .contains(&format!("test -S \"$ONECLOUD_RUN_DIR/{socket}\"")),
            "{name}"
        );
        assert_eq!(
            set[name].spec.env["ONECLOUD_RUN_DIR"], "/var/run/onecloud",
            "{name}"
        );
    }
    assert!(set["host-health"].spec.readiness.is_none());
}

#[test]
fn control_runs_one_copy_on_a_control_node_compute_runs_on_every_compute_node() {
    let set = cloudpods();
    for (name, service) in &set {
        let placement = service.spec.placement.as_ref().unwrap();
        let roles = &placement.node_selector.as_ref().unwrap().roles;
        let role = service
            .metadata
            .labels
            .get("cloudpods.role")
            .map(String::as_str);
        if CONTROL.contains(&name.as_str()) || ["mysql", "etcd"].contains(&name.as_str()) {
            assert_eq!(role, Some("control"), "{name}");
            assert_eq!(placement.replicas, Some(1), "{name}");
            assert!(!placement.every_node, "{name}");
            assert_eq!(roles, &[NodeRole::Control], "{name}");
        } else {
            // Compute components and Open vSwitch.
            if COMPUTE.contains(&name.as_str()) {
                assert_eq!(role, Some("compute"), "{name}");
            }
            assert!(placement.every_node, "{name}");
            assert_eq!(placement.replicas, None, "{name}");
            assert!(roles.contains(&NodeRole::Compute), "{name}");
            assert!(
                !placement.relocate,
                "{name}: every-node services never move"
            );
        }
    }
    // host-deployer also runs where glance and esxi-agent run (the operator's pod affinity).
    let deployer = set["host-deployer"].spec.placement.as_ref().unwrap();
    assert!(
        deployer
            .node_selector
            .as_ref()
            .unwrap()
            .roles
            .contains(&NodeRole::Control)
    );
    // The services with local data, or a host's network, never move; the stateless ones may.
    for name in ["glance", "notify", "esxi-agent", "baremetal-agent"] {
        assert!(
            !set[name].spec.placement.as_ref().unwrap().relocate,
            "{name}"
        );
    }
    assert!(set["keystone"].spec.placement.as_ref().unwrap().relocate);
}

#[test]
fn executor_goes_to_exactly_the_components_that_use_it() {
    // Facts §3: host, host-deployer, host-health, host-image and glance call execlient.Init.
    let set = cloudpods();
    let with: Vec<&str> = set
        .iter()
        .filter(|(_, s)| s.spec.executor)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        with,
        [
            "glance",
            "host",
            "host-deployer",
            "host-health",
            "host-image"
        ]
    );
}

#[test]
fn the_binary_embeds_every_template_file() {
    let embedded = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../cmd/cloudlet/src/embedded.rs"),
    )
    .unwrap();
    for (name, _) in template_files() {
        assert!(
            embedded.contains(&format!("\"../../../embedded-manifests/cloudpods/{name}\"")),
            "cmd/cloudlet/src/embedded.rs does not include cloudpods/{name}"
        );
    }
    assert!(embedded.contains("name: \"cloudpods\""));
}

/// The MariaDB cloudlet runs: through cloudlet's wrapper (directories, then mariadbd), from the
/// cluster's dirs, ready when it answers a query, a long clean stop, never moved off its disk.
#[test]
fn the_mariadb_template_prepares_its_directories_and_keeps_its_data_on_its_node() {
    let set = cloudpods();
    let mysql = &set["mysql"];
    assert_eq!(
        mysql.spec.command[..3],
        [CLOUDLET.to_owned(), "cloudpods".into(), "mariadbd".into()]
    );
    let args = mysql.spec.command.join(" ");
    for want in [
        format!("--defaults-file {CONFIG_DIR}/mysql/my.cnf"),
        format!("--data-dir {DATA_DIR}/mysql"),
        format!("--run-dir {DATA_DIR}/mysql-run"),
        "--user mysql".to_owned(),
    ] {
        assert!(args.contains(&want), "{args}");
    }
    let Probe::Exec { command } = mysql.spec.effective().readiness.unwrap().probe else {
        panic!("mysql: not an exec probe");
    };
    assert!(command.join(" ").contains("SELECT 1"), "{command:?}");
    assert!(
        command.contains(&format!("--socket={DATA_DIR}/mysql-run/mysqld.sock")),
        "{command:?}"
    );
    assert_eq!(
        mysql.spec.effective_stop().grace_period,
        std::time::Duration::from_secs(120)
    );
    assert!(!mysql.spec.placement.as_ref().unwrap().relocate);
    assert_ne!(
        mysql.metadata.labels["component"], "cloudpods",
        "no services certificate"
    );
}
