//! The real Cloudpods from one cluster YAML: the `keystone` and `region` binaries built from the
//! public source (`../shared/cloudpods/`, or `$CLOUDPODS_DIR`), MariaDB from Debian, and nothing
//! configured by hand. cloudlet runs the database, makes every database, user, policy, region,
//! service, endpoint and account, writes every config, and brings keystone and region up ready
//! — even when its server is SIGKILLed in the middle of the bootstrap. What the test checks it
//! checks with curl, a client that is not cloudlet's.
//!
//! One test: the services listen on the operator's fixed ports (30500, 30357, 30888).
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudlet_tests::{Cluster, free_port};
use serde_json::{Value, json};

/// The bootstrap includes keystone's 30 s policy refresh; region creates ~200 tables.
const BOOTSTRAP: Duration = Duration::from_secs(240);

/// Where the real binaries are: `$CLOUDPODS_DIR`, or the first `shared/cloudpods` beside the
/// repository or one of its parents.
fn cloudpods_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLOUDPODS_DIR") {
        return PathBuf::from(dir);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.ancestors()
        .map(|a| a.join("../shared/cloudpods"))
        .find(|d| d.join("keystone.xz").exists())
        .unwrap_or_else(|| repo.join("../shared/cloudpods"))
}

/// `keystone` and `region` decompressed into `bin` and checked against `SHA256SUMS`.
fn real_binaries(bin: &Path) {
    let src = cloudpods_dir();
    std::fs::create_dir_all(bin).unwrap();
    for name in ["keystone", "region"] {
        let xz = src.join(format!("{name}.xz"));
        assert!(
            xz.exists(),
            "{} is missing: the real Cloudpods binaries are needed (set CLOUDPODS_DIR)",
            xz.display()
        );
        let out = std::fs::File::create(bin.join(name)).unwrap();
        let status = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .stdout(out)
            .status()
            .expect("run xz (apt-get install xz-utils)");
        assert!(status.success(), "xz -dc {}", xz.display());
        let mut perms = std::fs::metadata(bin.join(name)).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(bin.join(name), perms).unwrap();
    }
    // The checksums of the executables (the file lists the .xz files too).
    let sums = std::fs::read_to_string(src.join("SHA256SUMS")).unwrap();
    for line in sums.lines().filter(|l| !l.contains(".xz")) {
        let mut parts = line.split_whitespace();
        let (Some(want), Some(file)) = (parts.next(), parts.next()) else {
            continue;
        };
        let file = file.trim_start_matches('*');
        let out = Command::new("sha256sum")
            .arg(bin.join(file))
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(got.starts_with(want), "{file}: {got} is not {want}");
    }
}

/// The cluster YAML a new user writes: a profile, where the binaries are, and nothing per
/// component; the directories and the database port are the test's own.
fn cluster_yaml(c: &Cluster, ports: (u16, u16), extra: &str) -> String {
    let (mysql_port, etcd_port) = ports;
    format!(
        "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: edge}}\nspec:\n  version: v3.11\n  \
         profile: edge\n  binDir: {bin}\n  configDir: {etc}\n  dataDir: {data}\n  \
         mysql: {{port: {mysql_port}}}\n  etcd: {{enable: true, port: {etcd_port}}}\n  \
         only: [keystone, region]\n{extra}",
        bin = c.path("yunion-bin").display(),
        etc = c.path("etc").display(),
        data = c.path("cloudpods").display(),
    )
}

fn write(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The `OS_*` variables of the rc file cloudlet wrote for the administrator.
fn rc(c: &Cluster) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(c.path("cloudpods-admin.rc")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(c.path("cloudpods-admin.rc"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the administrator's rc file is private"
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// curl: `method url` with the services CA, a token and a JSON body; (status, headers, body).
fn curl(
    ca: &str,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-D",
        "-",
        "-o",
        "-",
        "--cacert",
        ca,
        "-X",
        method,
    ]);
    cmd.args(["-H", "Content-Type: application/json"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("X-Auth-Token: {token}")]);
    }
    if let Some(body) = body {
        cmd.args(["--data-binary", &body.to_string()]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        head.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// A token of the administrator the rc file names, and its catalog.
fn login(vars: &std::collections::BTreeMap<String, String>) -> (String, Value) {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": vars["OS_USERNAME"], "password": vars["OS_PASSWORD"],
            "domain": {"name": vars["OS_DOMAIN_NAME"]}}}},
        "scope": {"project": {"name": vars["OS_PROJECT_NAME"],
            "domain": {"name": vars["OS_DOMAIN_NAME"]}}}}});
    let url = format!("{}/auth/tokens", vars["OS_AUTH_URL"]);
    let (status, head, answer) = curl(&vars["OS_CACERT"], "POST", &url, None, Some(&body));
    assert_eq!(status, 200, "log in as the administrator: {answer}");
    let token = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-subject-token"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .expect("X-Subject-Token");
    (token, answer["token"]["catalog"].clone())
}

/// The `interface` URL of a service of `kind` in region0, from a catalog.
fn endpoint(catalog: &Value, kind: &str, interface: &str) -> Option<String> {
    catalog
        .as_array()?
        .iter()
        .filter(|s| s["type"] == kind)
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["interface"] == interface && e["region_id"] == "region0")
        .and_then(|e| e["url"].as_str().map(str::to_owned))
}

fn state(c: &Cluster, name: &str) -> (String, bool) {
    let s = c.service(name);
    (
        s["state"].as_str().unwrap_or_default().to_owned(),
        s["ready"] == true,
    )
}

#[test]
fn a_real_keystone_and_region_come_up_from_one_short_cluster_yaml() {
    let mut c = Cluster::start();
    real_binaries(&c.path("yunion-bin"));
    let ports = (free_port(), free_port());
    let file = write(&c, "cluster.yaml", &cluster_yaml(&c, ports, ""));

    // Apply, and SIGKILL the server in the middle of the bootstrap: keystone's post-init step
    // is running (it waits ~30 s for keystone to apply the policies it made).
    let mut events = c.events();
    let started = Instant::now();
    let out = c.ctl_ok(&["cluster", "apply", "-f", &file]);
    assert!(out.contains("revision 1"), "{out}");
    events.wait_for("keystone-post-init", "Started", BOOTSTRAP);
    drop(events);
    c.kill_server();
    c.start_server();
    // The next server finishes it.
    c.wait_until("region ready and its post-init done", BOOTSTRAP, |c| {
        state(c, "region") == ("running".into(), true)
            && state(c, "region-post-init") == ("completed".into(), true)
    });
    let took = started.elapsed();
    eprintln!("cluster apply to region ready (server killed once on the way): {took:?}");
    for name in ["mysql", "etcd", "keystone", "region"] {
        assert_eq!(state(&c, name), ("running".into(), true), "{name}");
    }
    for step in [
        "keystone-init",
        "keystone-post-init",
        "region-init",
        "region-post-init",
    ] {
        assert_eq!(state(&c, step), ("completed".into(), true), "{step}");
    }

    // The administrator's token works, its catalog names region, and region answers through it.
    let vars = rc(&c);
    let shown: Value =
        serde_json::from_str(&c.ctl_ok(&["cloudpods", "credentials", "-o", "json"])).unwrap();
    assert_eq!(
        shown["password"].as_str(),
        Some(vars["OS_PASSWORD"].as_str())
    );
    assert_eq!(
        shown["authUrl"].as_str(),
        Some(vars["OS_AUTH_URL"].as_str())
    );
    let (token, catalog) = login(&vars);
    let region = endpoint(&catalog, "compute_v2", "internal").expect("compute_v2 in the catalog");
    assert!(
        endpoint(&catalog, "identity", "admin").is_some(),
        "{catalog}"
    );
    let ca = &vars["OS_CACERT"];
    let (status, _, regions) = curl(
        ca,
        "GET",
        &format!("{region}/cloudregions"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{regions}");
    assert!(
        !regions["cloudregions"].as_array().unwrap().is_empty(),
        "{regions}"
    );
    let (status, _, zones) = curl(ca, "GET", &format!("{region}/zones"), Some(&token), None);
    assert_eq!(status, 200, "{zones}");
    let names: Vec<&str> = zones["zones"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|z| z["name"].as_str())
        .collect();
    assert_eq!(names, ["zone0"]);

    // The generated secrets stay out of describe; the configs that hold them are 0600.
    let region_conf = std::fs::read_to_string(c.path("etc/region.conf")).unwrap();
    let secret = region_conf
        .lines()
        .find_map(|l| l.strip_prefix("admin_password: "))
        .unwrap()
        .to_owned();
    for name in ["region", "region-init", "mysql"] {
        let shown = c.ctl_ok(&["describe", "service", name]);
        assert!(!shown.contains(&secret), "describe {name} shows a password");
        assert!(
            !shown.contains(&vars["OS_PASSWORD"]),
            "describe {name} shows a password"
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(c.path("etc/region.conf"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(!c.ctl_ok(&["cluster", "export"]).contains(&secret));

    // The same YAML again changes nothing: no new password, no restart, no step run again.
    let before = c.pids_and_restarts();
    let runs: Vec<u64> = ["keystone-init", "region-init", "region-post-init"]
        .iter()
        .map(|s| c.service(s)["run"].as_u64().unwrap())
        .collect();
    let out = c.ctl_ok(&["cluster", "apply", "-f", &file]);
    assert!(out.starts_with("revision 1: unchanged"), "{out}");
    assert_eq!(rc(&c), vars, "the same administrator");
    assert_eq!(c.pids_and_restarts(), before);
    let again: Vec<u64> = ["keystone-init", "region-init", "region-post-init"]
        .iter()
        .map(|s| c.service(s)["run"].as_u64().unwrap())
        .collect();
    assert_eq!(again, runs);

    // A config change of region rolls out, and region comes back ready with it.
    let old_pid = c.service("region")["pid"].as_u64();
    let changed = write(
        &c,
        "cluster-2.yaml",
        &cluster_yaml(
            &c,
            ports,
            "  components:\n    region: {config: {log_level: debug}}\n",
        ),
    );
    let out = c.ctl_ok(&["cluster", "apply", "-f", &changed]);
    assert!(out.contains("revision 2"), "{out}");
    c.wait_until(
        "region's rollout done, region ready again",
        BOOTSTRAP,
        |c| {
            let status: Value =
                serde_json::from_str(&c.ctl_ok(&["rollout", "status", "region", "-o", "json"]))
                    .unwrap();
            status["state"] == "complete"
                && c.service("region")["pid"].as_u64() != old_pid
                && state(c, "region") == ("running".into(), true)
        },
    );
    let conf = std::fs::read_to_string(c.path("etc/region.conf")).unwrap();
    assert!(conf.contains("log_level: debug"), "{conf}");
    assert!(
        conf.contains(&format!("admin_password: {secret}")),
        "the same password"
    );
    let (token, _) = login(&vars);
    let (status, _, _) = curl(ca, "GET", &format!("{region}/zones"), Some(&token), None);
    assert_eq!(status, 200);

    // MariaDB stops cleanly on SIGTERM, well within its grace period.
    let mut events = c.events();
    c.ctl_ok(&["stop", "mysql"]);
    let exited = events.wait_for("mysql", "Exited", Duration::from_secs(120));
    assert_eq!(exited["exit"]["code"], 0, "a clean shutdown: {exited}");
}
