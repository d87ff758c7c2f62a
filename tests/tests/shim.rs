//! End to end: the shim each service runs under is the small `cloudlet-shim` program the server
//! wrote to `DATA/bin` (not the server's binary), and a service's `user` is looked up by the
//! server and handed to the shim as ids.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use cloudlet_tests::Cluster;

const T: Duration = Duration::from_secs(30);

/// The parent of `pid` (a service's shim).
fn parent(pid: u64) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn as_user(name: &str, user: &str, script: &str) -> String {
    let cmd = serde_json::to_string(&["/bin/sh", "-c", script]).unwrap();
    format!(
        "apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  \
         type: oneshot\n  user: {user}\n  command: {cmd}\n  \
         restart: {{backoff: {{initial: 100ms, max: 400ms}}}}\n"
    )
}

#[test]
fn services_run_under_the_embedded_shim_as_the_user_the_server_looked_up() {
    let mut c = Cluster::start();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let mut events = c.events();
    c.apply_ok(
        "who.yaml",
        &format!(
            "{}---\n{}",
            as_user(
                "who",
                "nobody",
                "echo \"ids $(id -u) $(id -g) $USER $HOME\"; sleep 600 & wait"
            ),
            as_user("ghost", "no-such-user-cloudlet", "true")
        ),
    );

    // The user is looked up by the server: the ids and the identity variables arrive.
    let expected = format!(
        "ids {} {} nobody {}",
        nobody.uid,
        nobody.gid,
        nobody.dir.display()
    );
    c.wait_log("who", T, |line| line.contains(&expected));

    // Its shim is the program written to DATA/bin, called as `<program> shim --name who ...`
    // (what `ps` and the executor socket tell a shim by).
    let bin = c.data_dir().join("bin");
    let programs: Vec<_> = std::fs::read_dir(&bin)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            // Beside it, the server's own private copy (`cloudlet-server-<hash>`).
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cloudlet-server-"))
        })
        .collect();
    assert_eq!(programs.len(), 1, "{programs:?}");
    let program = &programs[0];
    assert!(
        program
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("cloudlet-shim-"),
        "{program:?}"
    );
    let who = c.service("who");
    let pid = who["pid"].as_u64().unwrap();
    let ppid = parent(pid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{ppid}/exe")).unwrap(),
        *program
    );
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(args[1], b"shim");
    assert_eq!(args[2..4], [&b"--name"[..], b"who"]);
    // Far smaller than the server's binary, which shims mapped before.
    let shim_size = std::fs::metadata(program).unwrap().len();
    let server_size = std::fs::metadata(cloudlet_tests::cloudlet_bin())
        .unwrap()
        .len();
    assert!(shim_size * 3 < server_size, "{shim_size} vs {server_size}");

    // An unknown user fails the start with the name in the why, and is retried.
    let failed = events.wait_for("ghost", "StartFailed", T);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("\"no-such-user-cloudlet\" does not exist"),
        "{failed}"
    );

    // A server restart keeps the same program (written once per version).
    let before = std::fs::metadata(program).unwrap().modified().unwrap();
    c.kill_server();
    c.start_server();
    c.wait_until("who adopted", T, |c| {
        c.service("who")["pid"].as_u64() == Some(pid)
    });
    assert_eq!(
        std::fs::metadata(program).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn a_data_dir_on_a_noexec_mount_runs_shims_as_cloudlet_shim() {
    let mut c = Cluster::unstarted(Some("data"), &[]);
    c.mount_tmpfs_with("data", "64m", ",noexec");
    c.start_server();
    let mut events = c.events();
    c.apply_ok(
        "app.yaml",
        &Cluster::workload_manifest("app", &["sleep"], ""),
    );
    events.wait_for("app", "Ready", T);
    let pid = c.service("app")["pid"].as_u64().unwrap();
    let ppid = parent(pid);
    // The server's own binary, as `cloudlet shim`, and the reason in its log.
    assert_eq!(
        std::fs::read_link(format!("/proc/{ppid}/exe")).unwrap(),
        std::fs::canonicalize(cloudlet_tests::cloudlet_bin()).unwrap()
    );
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap();
    assert_eq!(cmdline.split(|b| *b == 0).nth(1), Some(&b"shim"[..]));
    assert!(c.server_log().contains("noexec"), "{}", c.server_log());
}
