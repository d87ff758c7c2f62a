//! A real `cloudlet-shim` process on its real socket, sent requests at the edges of what the
//! protocol's numbers allow (what the fuzz target `shim_proto` decodes, taken on to the shim's
//! handling of it): the shim must answer them and stay up, since a dead shim leaves its service
//! unkept.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test crate is all tests; the workspace lints aim at library code"
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cloudlet_shim::proto::{FromShim, Notice, Reply};
use serde_json::json;

struct Shim {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    _dir: tempfile::TempDir,
}

impl Shim {
    fn start() -> Shim {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let log_dir = dir.path().join("logs");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloudlet-shim"))
            .arg("shim")
            .arg("--name")
            .arg("edge")
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--log-dir")
            .arg(&log_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim_end(), cloudlet_shim::process::READY_LINE);
        let stream =
            UnixStream::connect(run_dir.join(cloudlet_shim::process::SOCKET_NAME)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Shim {
            child,
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            _dir: dir,
        }
    }

    /// The next line from the shim; panics if the shim closed the connection (it died).
    fn read(&mut self) -> FromShim {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the shim closed the connection: it died");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends `request` and returns the answer to it (notices that come first are skipped).
    fn call(&mut self, request: serde_json::Value) -> Reply {
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).unwrap();
        loop {
            if let FromShim::Response(response) = self.read() {
                return response.result;
            }
        }
    }

    fn wait_exit_of(&mut self, run: u64) {
        loop {
            if let FromShim::Notice(Notice::Exited { run: r, .. }) = self.read()
                && r == run
            {
                return;
            }
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(run: u64, argv: &[&str]) -> serde_json::Value {
    json!({"id": 1, "op": "start", "run": run, "restarts": 0, "spec": {
        "argv": argv, "env": {"PATH": "/usr/bin:/bin"}, "cwd": null, "user": null,
        "log_max_size": 1_048_576, "log_max_files": 2,
    }})
}

fn ok(reply: Reply) -> cloudlet_shim::proto::ShimStatus {
    match reply {
        Reply::Ok(status) => status,
        Reply::Err(e) => panic!("refused: {e}"),
    }
}

/// After a run numbered `u64::MAX`, the next start still gets a number (the largest) and runs
/// (the shim used to overflow computing "one above the last run").
#[test]
fn a_start_after_the_largest_run_number_is_answered() {
    let mut shim = Shim::start();
    let status = ok(shim.call(start(u64::MAX, &["true"])));
    assert_eq!(status.last_run, u64::MAX);
    shim.wait_exit_of(u64::MAX);
    let status = ok(shim.call(start(1, &["true"])));
    assert_eq!(status.last_run, u64::MAX);
}
