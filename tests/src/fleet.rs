//! A cluster of real `cloudlet` processes, one node per network namespace: a [`Fleet`] starts a
//! server and agents inside the namespaces of a [`Net`], and runs `cloudlet ctl --config
//! admin.conf` from a namespace of its own, as an operator on another machine would.
//!
//! It owns everything it starts: on drop it kills the cloudlet processes, every shim and service
//! under their data dirs, removes their cgroup subtrees, and then the namespaces go with the
//! [`Net`]. Waiting is bounded and explicit: a cluster change that has no event stream of its own
//! (a node becoming Ready, a placement) is polled with a deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::Net;
use crate::{cloudlet_bin, kill_everything_under, remove_cgroup_tree};

/// The server's API port inside its namespace.
pub const SERVER_PORT: u16 = 6443;

/// Nodes, their processes and the operator's namespace.
#[derive(Debug)]
pub struct Fleet {
    /// Dropped last: the namespaces outlive every process in them.
    net: Net,
    dir: tempfile::TempDir,
    bin: PathBuf,
    procs: BTreeMap<String, Child>,
    cgroups: Vec<PathBuf>,
    tag: String,
    server: Option<String>,
    env: Vec<(String, String)>,
}

impl Fleet {
    /// A network with an operator's namespace (`client`) and no cloudlet yet.
    pub fn new(test: &str) -> Fleet {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut net = Net::new(test);
        net.add_node("client");
        let dir = tempfile::Builder::new()
            .prefix("cl-fleet-")
            .tempdir()
            .expect("temp dir");
        Fleet {
            net,
            dir,
            bin: cloudlet_bin(),
            procs: BTreeMap::new(),
            cgroups: Vec::new(),
            tag: format!(
                "cl-fleet-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            server: None,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every cloudlet process started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Adds a node namespace without starting anything in it.
    pub fn add_node(&mut self, name: &str) {
        if self.net.try_node(name).is_none() {
            self.net.add_node(name);
        }
    }

    /// The network.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// A path in the fleet's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A node's data dir.
    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.path(node)
    }

    /// The server's admin config (rewritten by the server when it renews it).
    pub fn admin_conf(&self) -> PathBuf {
        self.data_dir(self.server.as_deref().expect("a server was started"))
            .join("admin.conf")
    }

    /// The server's URL as agents see it.
    pub fn server_url(&self) -> String {
        let server = self.server.as_deref().expect("a server was started");
        self.net.node(server).url(SERVER_PORT)
    }

    fn spawn(&mut self, node: &str, args: &[String]) {
        if self.net.try_node(node).is_none() {
            self.net.add_node(node);
        }
        let cgroup = PathBuf::from(format!("/{}-{node}", self.tag));
        self.cgroups.push(cgroup.clone());
        let log = std::fs::File::create(self.path(&format!("{node}.log"))).expect("log file");
        let child = self
            .net
            .node(node)
            .command(&self.bin)
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir(node))
            .args(["--node-name", node, "--log", "info"])
            .arg("--cgroup-root")
            .arg(&cgroup)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cloudlet");
        self.procs.insert(node.to_owned(), child);
    }

    /// Starts the server in namespace `node` and waits until the operator reaches it.
    pub fn start_server(&mut self, node: &str, extra: &[&str]) {
        let mut args: Vec<String> = ["server", "--listen"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(format!("0.0.0.0:{SERVER_PORT}"));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.spawn(node, &args);
        self.server = Some(node.to_owned());
        self.wait_for(
            &format!("server {node} answers"),
            Duration::from_secs(20),
            |f| f.admin_conf().exists() && f.ctl(&["get", "nodes"]).status.success(),
        );
    }

    /// Starts an agent in namespace `node` that joins with `token` (none: it has joined before).
    pub fn start_agent(&mut self, node: &str, token: Option<&str>, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            self.server_url(),
            "--listen".into(),
            "0.0.0.0:10250".into(),
        ];
        if let Some(t) = token {
            args.push("--token".into());
            args.push(t.to_owned());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.spawn(node, &args);
    }

    /// Starts an agent and waits until the server lists it Ready.
    pub fn join(&mut self, node: &str, token: &str, extra: &[&str]) {
        self.start_agent(node, Some(token), extra);
        self.wait_node_state(node, "Ready", Duration::from_secs(20));
    }

    /// A new join token (`ctl token create` with `args`).
    pub fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        self.ctl_ok(&all).trim().to_owned()
    }

    /// The process of `node`.
    pub fn process(&mut self, node: &str) -> &mut Child {
        self.procs.get_mut(node).expect("a process on that node")
    }

    /// SIGKILLs the cloudlet process of `node` (its services keep running) and reaps it.
    pub fn kill(&mut self, node: &str) {
        if let Some(mut child) = self.procs.remove(node) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for `node`'s cloudlet process to exit on its own; its stderr.
    pub fn wait_exit(
        &mut self,
        node: &str,
        timeout: Duration,
    ) -> (std::process::ExitStatus, String) {
        let mut child = self.procs.remove(node).expect("a process on that node");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, self.log(node));
            }
            assert!(
                crate::wait_exit(
                    child.id(),
                    deadline.saturating_duration_since(Instant::now())
                ),
                "{node} did not exit within {timeout:?}; its log:\n{}",
                self.log(node)
            );
        }
    }

    /// The cloudlet log of `node`.
    pub fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{node}.log"))).unwrap_or_default()
    }

    /// `cloudlet ctl --config admin.conf ARGS` from the operator's namespace.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.net
            .node("client")
            .command(&self.bin)
            .arg("ctl")
            .arg("--config")
            .arg(self.admin_conf())
            .args(args)
            .output()
            .expect("run cloudlet ctl")
    }

    /// [`Fleet::ctl`], which must succeed; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cloudlet ctl ARGS` on a node's own unix socket (from any namespace: it is a file).
    pub fn local_ctl(&self, node: &str, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("ctl")
            .arg("--data-dir")
            .arg(self.data_dir(node))
            .args(args)
            .output()
            .expect("run cloudlet ctl")
    }

    /// Writes and applies a manifest through the server.
    pub fn apply(&self, file: &str, yaml: &str) {
        let path = self.path(file);
        std::fs::write(&path, yaml).expect("write manifest");
        self.ctl_ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }

    /// Every service row of the cluster (`get services -o json`).
    pub fn services(&self) -> Vec<Value> {
        json_array(&self.ctl_ok(&["get", "services", "-o", "json"]))
    }

    /// The nodes (`get nodes -o json`).
    pub fn nodes(&self) -> Vec<Value> {
        json_array(&self.ctl_ok(&["get", "nodes", "-o", "json"]))
    }

    /// The nodes where `service` is `running`, sorted.
    pub fn running_on(&self, service: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .services()
            .iter()
            .filter(|s| s["name"] == service && s["state"] == "running")
            .filter_map(|s| s["node"].as_str().map(str::to_owned))
            .collect();
        nodes.sort();
        nodes
    }

    /// Waits until `node` has `state` (`Ready`, `Lost`).
    pub fn wait_node_state(&self, node: &str, state: &str, timeout: Duration) {
        self.wait_for(&format!("node {node} {state}"), timeout, |f| {
            f.nodes()
                .iter()
                .any(|n| n["name"] == node && n["state"] == state)
        });
    }

    /// Polls `done` every 200 ms until it holds; panics with `what` and every log after
    /// `timeout`. Returns how long it took.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Fleet) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if done(self) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                let logs: String = self
                    .procs
                    .keys()
                    .map(|n| format!("--- {n}:\n{}\n", tail(&self.log(n), 40)))
                    .collect();
                panic!("timed out after {timeout:?} waiting for: {what}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn json_array(text: &str) -> Vec<Value> {
    match serde_json::from_str(text) {
        Ok(Value::Array(items)) => items,
        other => panic!("not a JSON array: {other:?}\n{text}"),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.procs) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let nodes: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        for dir in &nodes {
            kill_everything_under(dir);
        }
        if let Ok(detected) = cloudlet_cgroups::detect() {
            for cg in &self.cgroups {
                let rel = cg.strip_prefix("/").unwrap_or(cg);
                remove_cgroup_tree(&detected.mount.join(rel));
            }
        }
    }
}

/// A helper for tests: the path as a `&str`.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
