//! Semantic validation of one manifest after it deserialised: ranges, names, exactly one probe,
//! limits at least requests. Every finding carries its field path. Checks that need other
//! manifests (missing dependencies, cycles, duplicate names) live in `set`, not here.

use std::collections::BTreeSet;

use crate::effective::{DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX};
use crate::error::{Problem, SpecError};
use crate::manifest::{
    HttpProbeSpec, LogsSpec, PlacementSpec, ReadinessSpec, ResourcesSpec, RestartPolicy,
    RestartSpec, ServiceManifest, ServiceSpec,
};

/// Smallest `spec.logs.maxSize` in bytes (4Ki).
pub const MIN_LOG_MAX_SIZE: u64 = 4 << 10;
/// Largest `spec.logs.maxFiles`.
pub const MAX_LOG_MAX_FILES: u32 = 100;
/// The most `spec.files` a service may declare.
pub const MAX_FILES: usize = 64;
/// The largest `spec.files[].content`, in bytes (1Mi): configuration, not data.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The longest `spec.restart.backoff` (`initial` and `max`): a service that may wait longer than
/// an hour between restarts should be stopped instead.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(3600);

impl ServiceManifest {
    /// Checks everything that can be checked on this manifest alone; problems name its source.
    ///
    /// [`crate::parse_file`] already calls this; call it for manifests built or read otherwise.
    pub fn validate(&self) -> Result<(), SpecError> {
        let findings = check_service(self);
        if findings.is_empty() {
            return Ok(());
        }
        Err(SpecError::Invalid(
            findings
                .into_iter()
                .map(|(path, message)| Problem::at(self.source(), Some(path), message))
                .collect(),
        ))
    }
}

/// Checks a service name: `[a-z][a-z0-9-]{0,62}`, not ending with `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: expected 1 to 63 lowercase letters, digits and '-', \
             starting with a letter and not ending with '-'"
        ))
    }
}

/// Collects `(path, message)` findings.
#[derive(Default)]
struct Findings(Vec<(String, String)>);

impl Findings {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }

    /// Records a command-like list: not empty, and no empty or NUL-containing item.
    fn command(&mut self, path: &str, command: &[String]) {
        if command.is_empty() {
            self.add(path, "must not be empty");
        }
        for (i, arg) in command.iter().enumerate() {
            if arg.is_empty() {
                self.add(format!("{path}[{i}]"), "must not be empty");
            } else if arg.contains('\0') {
                self.add(format!("{path}[{i}]"), "must not contain a NUL character");
            }
        }
    }

    fn at_least_one(&mut self, path: &str, value: Option<u32>) {
        if value == Some(0) {
            self.add(path, "must be at least 1");
        }
    }

    fn port(&mut self, path: &str, port: u16) {
        if port == 0 {
            self.add(path, "must be between 1 and 65535");
        }
    }

    fn host(&mut self, path: &str, host: Option<&str>) {
        if let Some(host) = host
            && (host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/'))
        {
            self.add(path, format!("invalid host {host:?}"));
        }
    }
}

/// Every finding about `manifest`, as `(field path, message)`, in document order.
pub(crate) fn check_service(manifest: &ServiceManifest) -> Vec<(String, String)> {
    let mut f = Findings::default();
    let name = &manifest.metadata.name;
    if let Err(message) = check_name(name) {
        f.add("metadata.name", message);
    }
    if manifest.metadata.labels.keys().any(String::is_empty) {
        f.add("metadata.labels", "label names must not be empty");
    }

    let spec = &manifest.spec;
    f.command("spec.command", &spec.command);
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            f.add(
                "spec.env",
                format!("invalid variable name {key:?}: must not be empty or contain '=' or NUL"),
            );
        } else if value.contains('\0') {
            f.add(
                format!("spec.env.{key}"),
                "must not contain a NUL character",
            );
        }
    }
    if let Some(dir) = &spec.working_dir
        && !dir.is_absolute()
    {
        f.add(
            "spec.workingDir",
            format!(
                "must be an absolute path, got {:?}",
                dir.display().to_string()
            ),
        );
    }
    if let Some(user) = &spec.user {
        if user.is_empty() || user.contains(['\0', ':']) || user.contains(char::is_whitespace) {
            f.add("spec.user", format!("invalid user {user:?}"));
        } else if user.bytes().all(|b| b.is_ascii_digit()) && user.parse::<u32>().is_err() {
            f.add("spec.user", format!("uid {user} is out of range"));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, dep) in spec.depends_on.iter().enumerate() {
        let path = format!("spec.dependsOn[{i}]");
        if let Err(message) = check_name(dep) {
            f.add(path, message);
        } else if dep == name {
            f.add(path, format!("service {name:?} cannot depend on itself"));
        } else if !seen.insert(dep) {
            f.add(path, format!("{dep:?} is listed twice"));
        }
    }
    if let Some(readiness) = &spec.readiness {
        check_readiness(&mut f, readiness);
    }
    if let Some(restart) = &spec.restart {
        check_restart(&mut f, restart);
    }
    if spec.is_oneshot() {
        check_oneshot(&mut f, spec);
    }
    if let Some(logs) = &spec.logs {
        check_logs(&mut f, logs);
    }
    if let Some(resources) = &spec.resources {
        check_resources(&mut f, resources);
    }
    if let Some(placement) = &spec.placement {
        check_placement(&mut f, placement);
    }
    if let Some(rollout) = &spec.rollout {
        crate::cluster::check_rollout(&mut |p, m| f.add(p, m), "spec.rollout", rollout);
    }
    let mut paths = BTreeSet::new();
    if spec.files.len() > MAX_FILES {
        f.add(
            "spec.files",
            format!("at most {MAX_FILES} files, got {}", spec.files.len()),
        );
    }
    for (i, file) in spec.files.iter().enumerate() {
        let at = format!("spec.files[{i}]");
        if file.content.len() > MAX_FILE_BYTES {
            f.add(
                format!("{at}.content"),
                format!(
                    "at most 1Mi ({MAX_FILE_BYTES} bytes), got {} bytes",
                    file.content.len()
                ),
            );
        }
        if let Err(why) = check_file_path(&file.path) {
            f.add(format!("{at}.path"), why);
        } else if !paths.insert(&file.path) {
            f.add(
                format!("{at}.path"),
                format!("{} is listed twice", file.path.display()),
            );
        }
        if let Some(owner) = &file.owner
            && let Err(message) = check_owner(owner)
        {
            f.add(format!("{at}.owner"), message);
        }
        if let Some(mode) = &file.mode
            && !(mode.len() <= 4 && u32::from_str_radix(mode, 8).is_ok_and(|m| m <= 0o7777))
        {
            f.add(
                format!("{at}.mode"),
                format!("{mode:?}: expected octal permission bits, e.g. \"0600\""),
            );
        }
    }
    f.0
}

/// A `spec.files` path: absolute, normalised (no `.`, `..`, `//` or trailing `/`: what is
/// checked is what is written) and outside the kernel's filesystems.
fn check_file_path(path: &std::path::Path) -> Result<(), String> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(format!("must be an absolute path, got {shown:?}"));
    }
    let normal: std::path::PathBuf = path.components().collect();
    let plain = path.components().all(|c| {
        matches!(
            c,
            std::path::Component::RootDir | std::path::Component::Normal(_)
        )
    });
    if !plain || normal.as_os_str() != path.as_os_str() || normal.parent().is_none() {
        return Err(format!(
            "must be a normalised path to a file (no '.', '..', '//' or trailing '/'), got \
             {shown:?}"
        ));
    }
    if let Some(root) = ["/proc", "/sys", "/dev"]
        .into_iter()
        .find(|r| path.starts_with(r))
    {
        return Err(format!("must not be under {root}, got {shown:?}"));
    }
    Ok(())
}

/// A `type: oneshot` step is done when it exits 0: nothing probes it, nothing restarts it after.
fn check_oneshot(f: &mut Findings, spec: &ServiceSpec) {
    if spec.readiness.is_some() {
        f.add(
            "spec.readiness",
            "a oneshot service is done when it exits 0 and cannot have a readiness probe \
             (remove readiness, or make it a daemon)",
        );
    }
    if spec.restart.as_ref().and_then(|r| r.policy) == Some(RestartPolicy::Always) {
        f.add(
            "spec.restart.policy",
            "a oneshot service is not run again once it completed: use on-failure (its \
             default: retried with backoff until it exits 0) or never",
        );
    }
}

/// A file owner: `user` or `user:group`, each a name or a numeric id.
fn check_owner(owner: &str) -> Result<(), String> {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !p.starts_with('-')
    };
    let valid = match owner.split_once(':') {
        Some((user, group)) => part(user) && part(group),
        None => part(owner),
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid owner {owner:?}: expected user or user:group (names or numeric ids), \
             e.g. \"mysql\" or \"mysql:mysql\""
        ))
    }
}

fn check_placement(f: &mut Findings, placement: &PlacementSpec) {
    if placement.every_node && placement.replicas.is_some() {
        f.add(
            "spec.placement.replicas",
            "cannot be set with everyNode: true (one copy runs on every matching node)",
        );
    }
    if placement.replicas == Some(0) {
        f.add(
            "spec.placement.replicas",
            "must be at least 1 (delete the service or `ctl stop` it to run none)",
        );
    }
    if let Some(selector) = &placement.node_selector
        && selector.labels.keys().any(String::is_empty)
    {
        f.add(
            "spec.placement.nodeSelector.labels",
            "label names must not be empty",
        );
    }
}

fn check_readiness(f: &mut Findings, readiness: &ReadinessSpec) {
    let set: Vec<&str> = [
        ("http", readiness.http.is_some()),
        ("tcp", readiness.tcp.is_some()),
        ("exec", readiness.exec.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if set.len() != 1 {
        let found = if set.is_empty() {
            "none".to_owned()
        } else {
            set.join(" and ")
        };
        f.add(
            "spec.readiness",
            format!("exactly one of http, tcp, exec must be set, found {found}"),
        );
    }
    if let Some(http) = &readiness.http {
        check_http(f, http);
    }
    if let Some(tcp) = &readiness.tcp {
        f.port("spec.readiness.tcp.port", tcp.port);
        f.host("spec.readiness.tcp.host", tcp.host.as_deref());
    }
    if let Some(exec) = &readiness.exec {
        f.command("spec.readiness.exec.command", &exec.command);
    }
    f.at_least_one("spec.readiness.periodSeconds", readiness.period_seconds);
    f.at_least_one("spec.readiness.timeoutSeconds", readiness.timeout_seconds);
    f.at_least_one(
        "spec.readiness.failureThreshold",
        readiness.failure_threshold,
    );
    f.at_least_one(
        "spec.readiness.successThreshold",
        readiness.success_threshold,
    );
}

fn check_http(f: &mut Findings, http: &HttpProbeSpec) {
    f.port("spec.readiness.http.port", http.port);
    f.host("spec.readiness.http.host", http.host.as_deref());
    if let Some(path) = &http.path
        && (!path.starts_with('/') || path.contains(char::is_control) || path.contains(' '))
    {
        f.add(
            "spec.readiness.http.path",
            format!("invalid path {path:?}: expected an absolute URL path such as /healthz"),
        );
    }
    for (name, value) in &http.headers {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            f.add(
                "spec.readiness.http.headers",
                format!("invalid header name {name:?}"),
            );
        } else if value.contains(['\r', '\n', '\0']) {
            f.add(
                format!("spec.readiness.http.headers.{name}"),
                "must not contain line breaks or NUL",
            );
        }
    }
}

fn check_restart(f: &mut Findings, restart: &RestartSpec) {
    let Some(backoff) = &restart.backoff else {
        return;
    };
    let initial = backoff.initial.as_ref().map(|d| d.get());
    if initial.is_some_and(|d| d.is_zero()) {
        f.add("spec.restart.backoff.initial", "must be more than 0");
        return;
    }
    let mut too_long = false;
    for (path, value) in [
        ("spec.restart.backoff.initial", &backoff.initial),
        ("spec.restart.backoff.max", &backoff.max),
    ] {
        if let Some(d) = value
            && d.get() > MAX_BACKOFF
        {
            f.add(path, format!("must be at most 1h, got {d}"));
            too_long = true;
        }
    }
    if too_long {
        return;
    }
    let (initial, max) = (
        initial.unwrap_or(DEFAULT_BACKOFF_INITIAL),
        backoff
            .max
            .as_ref()
            .map_or(DEFAULT_BACKOFF_MAX, |d| d.get()),
    );
    if initial > max {
        let shown = |d: &Option<crate::Duration>, default: std::time::Duration| {
            d.as_ref()
                .map_or_else(|| format!("{default:?} by default"), ToString::to_string)
        };
        let path = if backoff.initial.is_some() {
            "spec.restart.backoff.initial"
        } else {
            "spec.restart.backoff.max"
        };
        f.add(
            path,
            format!(
                "initial ({}) must not be more than max ({})",
                shown(&backoff.initial, DEFAULT_BACKOFF_INITIAL),
                shown(&backoff.max, DEFAULT_BACKOFF_MAX)
            ),
        );
    }
}

fn check_logs(f: &mut Findings, logs: &LogsSpec) {
    if let Some(size) = &logs.max_size
        && size.bytes() < MIN_LOG_MAX_SIZE
    {
        f.add(
            "spec.logs.maxSize",
            format!("must be at least 4Ki ({MIN_LOG_MAX_SIZE} bytes), got {size}"),
        );
    }
    if let Some(files) = logs.max_files
        && !(1..=MAX_LOG_MAX_FILES).contains(&files)
    {
        f.add(
            "spec.logs.maxFiles",
            format!("must be between 1 and {MAX_LOG_MAX_FILES}, got {files}"),
        );
    }
}

fn check_resources(f: &mut Findings, resources: &ResourcesSpec) {
    let requests = resources.requests.clone().unwrap_or_default();
    let limits = resources.limits.clone().unwrap_or_default();
    for (i, io) in limits.io.iter().enumerate() {
        if !io.device.is_absolute() {
            f.add(
                format!("spec.resources.limits.io[{i}].device"),
                "must be an absolute path (a block device or a path on its filesystem)",
            );
        }
        if io.rbps.is_none() && io.wbps.is_none() && io.riops.is_none() && io.wiops.is_none() {
            f.add(
                format!("spec.resources.limits.io[{i}]"),
                "sets no limit: give rbps, wbps, riops or wiops",
            );
        }
    }
    for (path, memory) in [
        ("spec.resources.requests.memory", &requests.memory),
        ("spec.resources.limits.memory", &limits.memory),
    ] {
        if memory.as_ref().is_some_and(|m| m.bytes() == 0) {
            f.add(path, "must be more than 0");
        }
    }
    if limits.pids == Some(0) {
        f.add("spec.resources.limits.pids", "must be more than 0");
    }
    if let (Some(request), Some(limit)) = (&requests.cpu, &limits.cpu)
        && limit.millicores() < request.millicores()
    {
        f.add(
            "spec.resources.limits.cpu",
            format!("limit {limit} is below the request {request}"),
        );
    }
    if let (Some(request), Some(limit)) = (&requests.memory, &limits.memory)
        && limit.bytes() < request.bytes()
    {
        f.add(
            "spec.resources.limits.memory",
            format!("limit {limit} is below the request {request}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web", "db-1", "a1", &"a".repeat(63)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Web",
            "1web",
            "-web",
            "web-",
            "we_b",
            "we.b",
            &"a".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
