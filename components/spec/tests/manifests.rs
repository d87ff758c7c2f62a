//! Crate-API tests of cloudlet-spec: real manifest texts through `parse_file` and `validate_set`,
//! checking what is accepted, the effective defaults, and the exact wording of every rejection.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlet_spec::{
    Manifest, Metadata, Probe, RestartPolicy, ServiceManifest, ServiceSpec, Signal, Source,
    parse_file, validate_set,
};

/// The manifest from the design brief, verbatim.
const EXAMPLE: &str = r#"apiVersion: cloudlet/v1
kind: Service
metadata:
  name: web
  labels: {tier: frontend}
spec:
  command: ["/usr/bin/python3", "-m", "http.server", "18080"]
  env: {PYTHONUNBUFFERED: "1"}
  workingDir: /tmp
  user: root
  dependsOn: [db]
  readiness:
    http: {port: 18080, path: /, headers: {User-Agent: kube-probe}}
    periodSeconds: 1
    failureThreshold: 3
  restart: {policy: always, backoff: {initial: 100ms, max: 30s}, resetAfter: 60s}
  stop: {signal: SIGTERM, gracePeriod: 10s}
  logs: {maxSize: 10Mi, maxFiles: 5}
  resources:
    requests: {cpu: 100m, memory: 64Mi}
    limits: {cpu: 500m, memory: 128Mi, pids: 256}
"#;

/// A minimal Service document named `name`, with `spec_lines` (YAML lines, no indent) added
/// under `spec`.
fn service(name: &str, spec_lines: &[&str]) -> String {
    let mut text =
        format!("apiVersion: cloudlet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n");
    text.push_str("  command: [/bin/true]\n");
    for line in spec_lines {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Documents joined with `---`.
fn file(documents: &[String]) -> String {
    documents.join("---\n")
}

/// Parses `input` as `services.yaml`, validates the set (nothing stored) and returns the error.
fn error_of(input: &str) -> String {
    match parse_file("services.yaml", input) {
        Err(err) => err.to_string(),
        Ok(manifests) => match validate_set(&manifests, &[]) {
            Err(err) => err.to_string(),
            Ok(()) => panic!("accepted, but should have been rejected:\n{input}"),
        },
    }
}

/// Asserts that `input` is rejected with a message containing `expected`.
fn check(input: &str, expected: &str) {
    let err = error_of(input);
    assert!(
        err.contains(expected),
        "error does not contain the expected text\n  error:    {err}\n  expected: {expected}\n  input:\n{input}"
    );
}

fn parse_one(text: &str) -> ServiceManifest {
    let manifests = parse_file("services.yaml", text).unwrap();
    assert_eq!(manifests.len(), 1);
    manifests[0].as_service().unwrap().clone()
}

#[test]
fn example_parses_with_effective_values() {
    let web = parse_one(EXAMPLE);
    assert_eq!(web.name(), "web");
    assert_eq!(
        web.source(),
        Some(&Source {
            file: "services.yaml".into(),
            document: 1
        })
    );
    assert_eq!(web.metadata.labels["tier"], "frontend");
    let spec = &web.spec;
    assert_eq!(
        spec.command,
        ["/usr/bin/python3", "-m", "http.server", "18080"]
    );
    assert_eq!(spec.env["PYTHONUNBUFFERED"], "1");
    assert_eq!(spec.working_dir.as_deref(), Some("/tmp".as_ref()));
    assert_eq!(spec.user.as_deref(), Some("root"));
    assert_eq!(spec.depends_on, ["db"]);

    let effective = spec.effective();
    let readiness = effective.readiness.unwrap();
    assert_eq!(
        readiness.probe,
        Probe::Http {
            host: "127.0.0.1".into(),
            port: 18080,
            path: "/".into(),
            headers: BTreeMap::from([("User-Agent".into(), "kube-probe".into())]),
            tls: false,
        }
    );
    assert_eq!(readiness.period, Duration::from_secs(1));
    assert_eq!(readiness.timeout, Duration::from_secs(1));
    assert_eq!(readiness.failure_threshold, 3);
    assert_eq!(readiness.success_threshold, 1);
    assert_eq!(readiness.initial_delay, Duration::ZERO);
    assert_eq!(effective.restart.policy, RestartPolicy::Always);
    assert_eq!(
        effective.restart.backoff_initial,
        Duration::from_millis(100)
    );
    assert_eq!(effective.restart.backoff_max, Duration::from_secs(30));
    assert_eq!(effective.restart.reset_after, Duration::from_secs(60));
    assert_eq!(effective.stop.signal, Signal::Term);
    assert_eq!(effective.stop.grace_period, Duration::from_secs(10));
    assert_eq!(effective.logs.max_size, 10 << 20);
    assert_eq!(effective.logs.max_files, 5);
    assert_eq!(effective.resources.cpu_request_millicores, Some(100));
    assert_eq!(effective.resources.memory_request_bytes, Some(64 << 20));
    assert_eq!(effective.resources.cpu_limit_millicores, Some(500));
    assert_eq!(effective.resources.memory_limit_bytes, Some(128 << 20));
    assert_eq!(effective.resources.pids_limit, Some(256));
}

/// A service with only a command gets every default; other spellings are accepted.
#[test]
fn minimal_manifest_gets_defaults_and_lenient_spellings() {
    let minimal = parse_one(&service("web", &[]));
    let effective = minimal.spec.effective();
    assert_eq!(effective.readiness, None);
    assert_eq!(effective.restart.policy, RestartPolicy::Always);
    assert_eq!(
        effective.restart.backoff_initial,
        Duration::from_millis(100)
    );
    assert_eq!(effective.restart.backoff_max, Duration::from_secs(30));
    assert_eq!(effective.restart.reset_after, Duration::from_secs(60));
    assert_eq!(effective.stop.signal, Signal::Term);
    assert_eq!(effective.stop.grace_period, Duration::from_secs(10));
    assert_eq!(effective.logs.max_size, 10 << 20);
    assert_eq!(effective.logs.max_files, 5);
    assert_eq!(effective.resources, Default::default());

    let lenient = parse_one(&service(
        "web",
        &[
            // YAML 1.1 booleans and numbers stay strings where strings are expected.
            "env: {A: yes, B: 8080, C: on}",
            "user: 1000",
            "readiness: {tcp: {port: 5432}}",
            "restart: {policy: on-failure, backoff: {initial: 1s}}",
            "stop: {signal: INT}",
            "resources: {requests: {memory: 1048576, cpu: 0.5}, limits: {cpu: 2}}",
        ],
    ));
    let spec = &lenient.spec;
    assert_eq!(spec.env["A"], "yes");
    assert_eq!(spec.env["B"], "8080");
    assert_eq!(spec.env["C"], "on");
    assert_eq!(spec.user.as_deref(), Some("1000"));
    let effective = spec.effective();
    let readiness = effective.readiness.unwrap();
    assert_eq!(
        readiness.probe,
        Probe::Tcp {
            host: "127.0.0.1".into(),
            port: 5432
        }
    );
    assert_eq!(readiness.period, Duration::from_secs(10));
    assert_eq!(effective.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(effective.restart.backoff_initial, Duration::from_secs(1));
    assert_eq!(effective.restart.backoff_max, Duration::from_secs(30));
    assert_eq!(effective.stop.signal, Signal::Int);
    assert_eq!(effective.resources.memory_request_bytes, Some(1_048_576));
    assert_eq!(effective.resources.cpu_request_millicores, Some(500));
    assert_eq!(effective.resources.cpu_limit_millicores, Some(2000));
}

/// Every rejection, with the exact place and wording users see.
#[test]
fn rejections() {
    let two_documents = file(&[
        service("a", &[]),
        service("b", &["restart: {backoff: {max: 30x}}"]),
    ]);
    let cases: Vec<(String, &str)> = vec![
        // Unknown fields, at the top of spec and nested.
        (
            service("web", &["restrat: {policy: always}"]),
            "services.yaml: document 1: spec.restrat: unknown field \"restrat\", expected one of \
             type, command, env, workingDir, user, dependsOn, readiness, restart, stop, logs, resources, \
             executor, placement, files",
        ),
        (
            service("web", &["restart: {backoff: {maxx: 30s}}"]),
            "services.yaml: document 1: spec.restart.backoff.maxx: unknown field \"maxx\", \
             expected one of initial, max (line 6, column",
        ),
        (
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: web}\nspec: {command: [x]}\nstatus: {}\n".into(),
            "services.yaml: document 1: status: unknown field \"status\", expected one of apiVersion, kind, metadata, spec",
        ),
        // Files.
        (
            service("web", &["files: [{path: etc/web.conf, content: x}]"]),
            "services.yaml: document 1: spec.files[0].path: must be an absolute path",
        ),
        (
            service("web", &["files: [{path: /etc/w.conf, content: x}, {path: /etc/w.conf, content: y}]"]),
            "services.yaml: document 1: spec.files[1].path: /etc/w.conf is listed twice",
        ),
        (
            service("web", &["files: [{path: /etc/w.conf, content: x, mode: \"0999\"}]"]),
            "services.yaml: document 1: spec.files[0].mode: \"0999\": expected octal permission bits",
        ),
        // Rollout and probe scheme.
        (
            service("web", &["rollout: {maxUnavailable: 0, progressDeadline: 0s}"]),
            "services.yaml: document 1: spec.rollout.maxUnavailable: must be at least 1",
        ),
        (
            service("web", &["rollout: {maxUnavailable: 0, progressDeadline: 0s}"]),
            "spec.rollout.progressDeadline: must be more than 0",
        ),
        (
            service("web", &["readiness: {http: {port: 80, scheme: https}}"]),
            "services.yaml: document 1: spec.readiness.http.scheme: unknown value \"https\", \
             expected one of HTTP, HTTPS (line 6, column 40)",
        ),
        // Placement.
        (
            service("web", &["placement: {everyNode: true, replicas: 2}"]),
            "services.yaml: document 1: spec.placement.replicas: cannot be set with everyNode: true",
        ),
        (
            service("web", &["placement: {replicas: 0}"]),
            "services.yaml: document 1: spec.placement.replicas: must be at least 1",
        ),
        (
            service("web", &["placement: {nodeSelector: {roles: [storage]}}"]),
            "services.yaml: document 1: spec.placement.nodeSelector.roles[0]: unknown value \"storage\", \
             expected one of control, compute (line 6",
        ),
        // Values with units.
        (
            two_documents.clone(),
            "services.yaml: document 2: spec.restart.backoff.max: invalid duration \"30x\": \
             expected a number with a unit (ms, s, m, h), e.g. 30s (line 12, column",
        ),
        (
            service("web", &["stop: {gracePeriod: 10}"]),
            "services.yaml: document 1: spec.stop.gracePeriod: invalid duration 10: expected a number with a unit",
        ),
        (
            service("web", &["resources: {limits: {memory: \"12Zi\"}}"]),
            "services.yaml: document 1: spec.resources.limits.memory: invalid quantity \"12Zi\": \
             expected bytes with an optional suffix (Ki, Mi, Gi, Ti, k, M, G, T), e.g. 64Mi",
        ),
        (
            service("web", &["resources: {requests: {cpu: 2cores}}"]),
            "services.yaml: document 1: spec.resources.requests.cpu: invalid cpu \"2cores\": \
             expected cores (e.g. 0.5, 2) or millicores (e.g. 100m)",
        ),
        (
            service("web", &["resources: {limits: {cpu: 0}}"]),
            "spec.resources.limits.cpu: invalid cpu \"0\": must be more than 0",
        ),
        (
            service("web", &["logs: {maxSize: 1Ki}"]),
            "services.yaml: document 1: spec.logs.maxSize: must be at least 4Ki (4096 bytes), got 1Ki",
        ),
        (
            service("web", &["logs: {maxFiles: 101}"]),
            "spec.logs.maxFiles: must be between 1 and 100, got 101",
        ),
        (
            service("web", &["logs: {maxFiles: 0}"]),
            "spec.logs.maxFiles: must be between 1 and 100, got 0",
        ),
        // Command.
        (
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: []\n".into(),
            "services.yaml: document 1: spec.command: must not be empty",
        ),
        (
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: [a, \"\"]\n".into(),
            "services.yaml: document 1: spec.command[1]: must not be empty",
        ),
        (
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  env: {A: b}\n".into(),
            "services.yaml: document 1: spec.command: is required",
        ),
        (
            "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: /bin/true\n".into(),
            "services.yaml: document 1: spec.command: expected a list (line 5, column 12)",
        ),
        // Readiness.
        (
            service("web", &["readiness: {http: {port: 80}, tcp: {port: 81}}"]),
            "services.yaml: document 1: spec.readiness: exactly one of http, tcp, exec must be set, found http and tcp",
        ),
        (
            service("web", &["readiness: {periodSeconds: 5}"]),
            "spec.readiness: exactly one of http, tcp, exec must be set, found none",
        ),
        (
            service("web", &["readiness: {exec: {command: []}}"]),
            "spec.readiness.exec.command: must not be empty",
        ),
        (
            service("web", &["readiness: {tcp: {port: 0}}"]),
            "spec.readiness.tcp.port: must be between 1 and 65535",
        ),
        (
            service("web", &["readiness: {tcp: {port: 70000}}"]),
            "spec.readiness.tcp.port: invalid value, expected a port number from 1 to 65535",
        ),
        (
            service("web", &["readiness: {http: {port: 80, path: healthz}}"]),
            "spec.readiness.http.path: invalid path \"healthz\": expected an absolute URL path such as /healthz",
        ),
        (
            service("web", &["readiness: {tcp: {port: 80}, periodSeconds: 0}"]),
            "spec.readiness.periodSeconds: must be at least 1",
        ),
        // Restart and stop.
        (
            service("web", &["restart: {policy: alwyas}"]),
            "services.yaml: document 1: spec.restart.policy: unknown value \"alwyas\", expected one of always, on-failure, never",
        ),
        (
            service("web", &["restart: {backoff: {initial: 1m}}"]),
            "spec.restart.backoff.initial: initial (1m) must not be more than max (30s by default)",
        ),
        (
            service("web", &["restart: {backoff: {max: 50ms}}"]),
            "spec.restart.backoff.max: initial (100ms by default) must not be more than max (50ms)",
        ),
        (
            service("web", &["restart: {backoff: {initial: 0s}}"]),
            "spec.restart.backoff.initial: must be more than 0",
        ),
        // A backoff the server could not add to a clock (it crashed on it, and again on every
        // start as adoption replayed the exit) is refused at the parser, with the field path.
        (
            service(
                "web",
                &["restart: {backoff: {initial: 2600000000000000h, max: 2600000000000000h}}"],
            ),
            "spec.restart.backoff.initial: invalid duration \"2600000000000000h\": too large (at most 87600h, ten years)",
        ),
        (
            service("web", &["restart: {backoff: {initial: 1s, max: 2h}}"]),
            "spec.restart.backoff.max: must be at most 1h, got 2h",
        ),
        (
            service("web", &["restart: {backoff: {initial: 61m, max: 2h}}"]),
            "spec.restart.backoff.initial: must be at most 1h, got 61m",
        ),
        (
            service("web", &["stop: {signal: SIGSTOP}"]),
            "spec.stop.signal: unknown signal \"SIGSTOP\", expected one of SIGTERM, SIGINT, SIGQUIT, \
             SIGHUP, SIGKILL, SIGUSR1, SIGUSR2, SIGWINCH (the SIG prefix is optional)",
        ),
        // Resources.
        (
            service("web", &["resources: {requests: {memory: 64Mi}, limits: {memory: 32Mi}}"]),
            "services.yaml: document 1: spec.resources.limits.memory: limit 32Mi is below the request 64Mi",
        ),
        (
            service("web", &["resources: {requests: {cpu: 1}, limits: {cpu: 500m}}"]),
            "spec.resources.limits.cpu: limit 500m is below the request 1",
        ),
        (
            service("web", &["resources: {limits: {pids: 0}}"]),
            "spec.resources.limits.pids: must be more than 0",
        ),
        (
            service("web", &["resources: {limits: {pids: -1}}"]),
            "spec.resources.limits.pids: invalid value, expected a whole number from 0",
        ),
        // Files: normalised absolute paths outside the kernel's filesystems, bounded.
        (
            service("web", &["files: [{path: /etc/web/../shadow, content: x}]"]),
            "spec.files[0].path: must be a normalised path to a file (no '.', '..', '//' or trailing '/'), got \"/etc/web/../shadow\"",
        ),
        (
            service("web", &["files: [{path: /etc//web.conf, content: x}]"]),
            "spec.files[0].path: must be a normalised path",
        ),
        (
            service("web", &["files: [{path: /, content: x}]"]),
            "spec.files[0].path: must be a normalised path to a file",
        ),
        (
            service("web", &["files: [{path: /proc/sys/kernel/core_pattern, content: x}]"]),
            "spec.files[0].path: must not be under /proc, got \"/proc/sys/kernel/core_pattern\"",
        ),
        (
            service("web", &["files: [{path: /dev/sda, content: x}]"]),
            "spec.files[0].path: must not be under /dev",
        ),
        (
            service("web", &["files: [{path: etc/web.conf, content: x}]"]),
            "spec.files[0].path: must be an absolute path, got \"etc/web.conf\"",
        ),
        (
            service(
                "web",
                &[format!("files: [{{path: /etc/big, content: {}}}]", "x".repeat((1 << 20) + 1))
                    .as_str()],
            ),
            "spec.files[0].content: at most 1Mi (1048576 bytes), got 1048577 bytes",
        ),
        (
            service(
                "web",
                &[format!(
                    "files: [{}]",
                    (0..65)
                        .map(|i| format!("{{path: /etc/f{i}, content: x}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .as_str()],
            ),
            "spec.files: at most 64 files, got 65",
        ),
        // Other fields.
        (
            service("web", &["workingDir: tmp"]),
            "spec.workingDir: must be an absolute path, got \"tmp\"",
        ),
        (
            service("web", &["env: {\"A=B\": x}"]),
            "spec.env: invalid variable name \"A=B\": must not be empty or contain '=' or NUL",
        ),
        (
            service("web", &["user: \"\""]),
            "spec.user: invalid user \"\"",
        ),
        (
            service("web", &["user: 99999999999"]),
            "spec.user: uid 99999999999 is out of range",
        ),
        // Header fields.
        (
            service("web", &[]).replace("cloudlet/v1", "cloudlet/v2"),
            "services.yaml: document 1: apiVersion: unsupported version \"cloudlet/v2\", expected cloudlet/v1",
        ),
        (
            service("web", &[]).replace("kind: Service", "kind: Deployment"),
            "services.yaml: document 1: kind: unsupported kind \"Deployment\", expected one of Service",
        ),
        (
            service("web", &[]).replace("kind: Service\n", ""),
            "services.yaml: document 1: kind: is required, expected one of Service",
        ),
        (
            service("Web_1", &[]),
            "services.yaml: document 1: metadata.name: invalid name \"Web_1\": expected 1 to 63 \
             lowercase letters, digits and '-', starting with a letter and not ending with '-'",
        ),
        (
            service("web", &[]).replace("metadata: {name: web}", "metadata: {labels: {a: b}}"),
            "services.yaml: document 1: metadata.name: is required",
        ),
        // Dependencies.
        (
            service("web", &["dependsOn: [web]"]),
            "services.yaml: document 1: spec.dependsOn[0]: service \"web\" cannot depend on itself",
        ),
        (
            file(&[service("db", &[]), service("web", &["dependsOn: [db, db]"])]),
            "services.yaml: document 2: spec.dependsOn[1]: \"db\" is listed twice",
        ),
        (
            file(&[service("a", &[]), service("b", &[]), service("web", &["dependsOn: [db]"])]),
            "services.yaml: document 3: spec.dependsOn[0]: service \"db\" does not exist (not in this apply, not in the store)",
        ),
        (
            // Declared b, c, a: the cycle is still named from a.
            file(&[
                service("b", &["dependsOn: [c]"]),
                service("c", &["dependsOn: [a]"]),
                service("a", &["dependsOn: [b]"]),
            ]),
            "services.yaml: dependency cycle: a -> b -> c -> a",
        ),
        (
            file(&[service("web", &[]), service("web", &[])]),
            "services.yaml: document 2: metadata.name: duplicate service name \"web\", also defined at services.yaml: document 1",
        ),
        // A oneshot step is done when it exits 0.
        (
            service("job", &["type: oneshot", "readiness: {tcp: {port: 80}}"]),
            "services.yaml: document 1: spec.readiness: a oneshot service is done when it exits 0 \
             and cannot have a readiness probe (remove readiness, or make it a daemon)",
        ),
        (
            service("job", &["type: oneshot", "restart: {policy: always}"]),
            "services.yaml: document 1: spec.restart.policy: a oneshot service is not run again \
             once it completed: use on-failure (its default: retried with backoff until it exits \
             0) or never",
        ),
        (
            service("job", &["type: cron"]),
            "services.yaml: document 1: spec.type: unknown value \"cron\", expected one of daemon, oneshot",
        ),
        (
            service("db", &["files: [{path: /etc/db.sql, content: x, owner: \"my sql\"}]"]),
            "services.yaml: document 1: spec.files[0].owner: invalid owner \"my sql\": expected \
             user or user:group (names or numeric ids), e.g. \"mysql\" or \"mysql:mysql\"",
        ),
        // YAML itself.
        (
            format!("{}---\napiVersion: cloudlet/v1\nkind: Service\nspec: {{command: [a, b}}\n", service("a", &[])),
            "services.yaml: document 2: spec.command: mismatched bracket '[' closed by '}' (line 9, column 17)",
        ),
        (
            "apiVersion: cloudlet/v1\nkind: Service\nkind: Service\n".into(),
            "services.yaml: document 1: duplicate key \"kind\" (line 3, column 1)",
        ),
        (
            "- a\n- b\n".into(),
            "services.yaml: document 1: expected a manifest (a mapping with apiVersion, kind, metadata and spec) (line 1, column 1)",
        ),
    ];
    for (input, expected) in &cases {
        check(input, expected);
    }
}

/// Every broken document is reported, one line each, and nothing is returned.
#[test]
fn errors_of_all_documents_are_reported() {
    let text = file(&[
        service("a", &["restart: {policy: sometimes}"]),
        service("b", &[]),
        service("c", &["workingDir: tmp", "logs: {maxFiles: 0}"]),
    ]);
    let err = parse_file("services.yaml", &text).unwrap_err();
    let lines: Vec<String> = err.to_string().lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with("services.yaml: document 1: spec.restart.policy: unknown value"));
    assert_eq!(
        lines[1],
        "services.yaml: document 3: spec.workingDir: must be an absolute path, got \"tmp\""
    );
    assert_eq!(
        lines[2],
        "services.yaml: document 3: spec.logs.maxFiles: must be between 1 and 100, got 0"
    );
    assert_eq!(err.problems().len(), 3);
    assert_eq!(err.problems()[1].path.as_deref(), Some("spec.workingDir"));
}

/// Three documents with dependencies among them, empty documents and comments around them.
#[test]
fn valid_three_document_file() {
    let text = format!(
        "# cloudlet services\n---\n{}---\n# nothing here\n---\n{}---\n{}",
        service("db", &["readiness: {tcp: {port: 5432}}"]),
        service("api", &["dependsOn: [db]"]),
        service("web", &["dependsOn: [api, db]"])
    );
    let manifests = parse_file("services.yaml", &text).unwrap();
    let names: Vec<&str> = manifests.iter().map(Manifest::name).collect();
    assert_eq!(names, ["db", "api", "web"]);
    // The empty document still counts when numbering.
    let documents: Vec<usize> = manifests
        .iter()
        .map(|m| m.source().unwrap().document)
        .collect();
    assert_eq!(documents, [1, 3, 4]);
    validate_set(&manifests, &[]).unwrap();

    assert!(parse_file("empty.yaml", "").unwrap().is_empty());
    assert!(
        parse_file("empty.yaml", "# nothing\n---\n---\n")
            .unwrap()
            .is_empty()
    );
}

/// The store's manifests satisfy dependencies, take part in cycles, and are replaced by a new
/// manifest of the same name.
#[test]
fn validate_set_uses_the_store() {
    let stored = |name: &str, deps: &[&str]| {
        let mut spec = ServiceSpec::new(vec!["/bin/true".into()]);
        spec.depends_on = deps.iter().map(|d| (*d).to_owned()).collect();
        ServiceManifest::new(
            Metadata {
                name: name.into(),
                labels: BTreeMap::new(),
            },
            spec,
        )
    };
    let web = parse_file("web.yaml", &service("web", &["dependsOn: [db]"])).unwrap();
    validate_set(&web, &[stored("db", &[])]).unwrap();

    let err = validate_set(&web, &[]).unwrap_err().to_string();
    assert_eq!(
        err,
        "web.yaml: document 1: spec.dependsOn[0]: service \"db\" does not exist (not in this apply, not in the store)"
    );

    // Stored db depends on web: applying web -> db closes a cycle through the store.
    let err = validate_set(&web, &[stored("db", &["web"])])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "web.yaml: dependency cycle: db -> web -> db");

    // A new db without dependencies replaces the stored one, so there is no cycle.
    let mut both = web.clone();
    both.extend(parse_file("db.yaml", &service("db", &[])).unwrap());
    validate_set(&both, &[stored("db", &["web"])]).unwrap();

    // Duplicates across files name both files.
    let mut twice = web.clone();
    twice.extend(parse_file("other.yaml", &service("web", &["dependsOn: [db]"])).unwrap());
    let err = validate_set(&twice, &[stored("db", &[])])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "other.yaml: document 1: metadata.name: duplicate service name \"web\", also defined at web.yaml: document 1"
    );
}

/// YAML -> types -> JSON -> types gives equal manifests (the store keeps JSON), the source is not
/// serialised, and YAML written back parses to the same manifest with the same value texts.
#[test]
fn round_trips() {
    let lenient = service(
        "lenient",
        &[
            "stop: {signal: TERM}",
            "resources: {requests: {memory: 1048576, cpu: 0.5}, limits: {cpu: 2, memory: 1.5Gi}}",
        ],
    );
    for text in [EXAMPLE, &lenient] {
        let parsed = parse_one(text);

        let json = serde_json::to_string(&parsed).unwrap();
        assert!(!json.contains("services.yaml"), "{json}");
        let from_json: ServiceManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, parsed);
        assert_eq!(from_json.source(), None);
        from_json.validate().unwrap();
        assert_eq!(from_json.spec.effective(), parsed.spec.effective());

        let yaml = serde_saphyr::to_string(&parsed).unwrap();
        let again = parse_one(&yaml);
        assert_eq!(again, parsed, "{yaml}");
    }
    let json = serde_json::to_value(parse_one(&lenient)).unwrap();
    let resources = &json["spec"]["resources"];
    assert_eq!(resources["requests"]["memory"], 1_048_576);
    assert_eq!(resources["requests"]["cpu"], 0.5);
    assert_eq!(resources["limits"]["memory"], "1.5Gi");
    assert_eq!(json["spec"]["stop"]["signal"], "SIGTERM");
    assert_eq!(json["apiVersion"], "cloudlet/v1");
    assert_eq!(json["kind"], "Service");
}
