//! Runs `ovs-ofctl` against one bridge for the firewall: dumps the firewall's own flows, and
//! applies a [`Diff`] as one atomic OpenFlow 1.4 bundle (`ovs-ofctl --bundle add-flows`), so
//! that the bridge holds either the old flows or the new ones, never a mix and never a gap.
//!
//! It never runs iptables or nft, never deletes a flow without the firewall's cookie (its
//! deletes are `delete_strict` under [`COOKIE_MASK`](crate::firewall::COOKIE_MASK), and there is
//! no `del-flows`), and only speaks to the switch target it was given, so a test's bridge is
//! never the host's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::NetovsError;
use crate::firewall::{COOKIE, COOKIE_MASK, Diff, Flow, Scope, diff};
use crate::run::{Job, Runner};

/// `ovs-ofctl` bound to one bridge's OpenFlow management target.
#[derive(Debug, Clone)]
pub struct Ofctl {
    program: PathBuf,
    target: String,
    timeout: Duration,
    runner: Arc<dyn Runner>,
}

impl Ofctl {
    /// `ovs-ofctl` (from `PATH`) for `target`: a bridge name (then `ovs-ofctl` connects to
    /// `$OVS_RUNDIR/<bridge>.mgmt`) or an explicit `unix:/path/to/<bridge>.mgmt`, run through
    /// `runner` (a node's reaper; [`crate::run::TokioRunner`] where nothing else reaps). Each
    /// command gives up after 10 s.
    pub fn new(target: impl Into<String>, runner: Arc<dyn Runner>) -> Ofctl {
        Ofctl {
            program: PathBuf::from("ovs-ofctl"),
            target: target.into(),
            timeout: Duration::from_secs(10),
            runner,
        }
    }

    /// The same with another `ovs-ofctl` binary.
    pub fn with_program(self, program: impl Into<PathBuf>) -> Ofctl {
        Ofctl {
            program: program.into(),
            ..self
        }
    }

    /// The same with another time limit per command (whole seconds, at least one).
    pub fn with_timeout(self, timeout: Duration) -> Ofctl {
        Ofctl { timeout, ..self }
    }

    /// The switch target it talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The flows the firewall of `scope` owns on the bridge: those with its cookie, in table 0
    /// or its range.
    pub async fn dump_flows(&self, scope: &Scope) -> Result<Vec<Flow>, NetovsError> {
        let filter = format!("cookie={COOKIE:#x}/{COOKIE_MASK:#x}");
        let args = [
            "--no-stats",
            "--no-names",
            "dump-flows",
            self.target.as_str(),
            filter.as_str(),
        ];
        let out = self.run(&args, None).await?;
        let flows = Flow::parse_dump(&out).map_err(|e| NetovsError::Ofctl {
            args: args.join(" "),
            message: e.to_string(),
        })?;
        Ok(flows.into_iter().filter(|f| scope.owns(f)).collect())
    }

    /// Applies `diff` as one bundle: all of it, or (when the switch rejects any flow mod)
    /// none of it. An empty diff runs nothing.
    pub async fn apply(&self, diff: &Diff) -> Result<(), NetovsError> {
        if diff.is_empty() {
            return Ok(());
        }
        let args = [
            "--bundle",
            "-O",
            "OpenFlow14",
            "add-flows",
            self.target.as_str(),
            "-",
        ];
        self.run(&args, Some(diff.bundle())).await?;
        tracing::info!(
            target = %self.target,
            deleted = diff.delete.len(),
            added = diff.add.len(),
            "applied firewall flows"
        );
        Ok(())
    }

    /// Makes the bridge hold exactly `desired` (e.g. [`crate::firewall::compile`]'s flows; none
    /// removes the firewall) among the flows `scope` owns: dumps, diffs, applies the difference
    /// as one bundle, and returns it.
    pub async fn sync(&self, scope: &Scope, desired: &[Flow]) -> Result<Diff, NetovsError> {
        let installed = self.dump_flows(scope).await?;
        let diff = diff(scope, &installed, desired)?;
        self.apply(&diff).await?;
        Ok(diff)
    }

    /// Runs `ovs-ofctl --timeout=N ARGS`, feeding it `input`; its stdout, or its stderr as the
    /// error when it fails.
    async fn run(&self, args: &[&str], input: Option<String>) -> Result<String, NetovsError> {
        let timeout = format!("--timeout={}", self.timeout.as_secs().max(1));
        let error = |message: String| NetovsError::Ofctl {
            args: args.join(" "),
            message,
        };
        let mut all = vec![timeout.as_str()];
        all.extend_from_slice(args);
        let mut job = Job::new(&self.program, &all);
        job.input = input;
        // ovs-ofctl gives up by itself; the runner's limit only catches a hung process.
        job.timeout = self.timeout + Duration::from_secs(5);
        let out = self
            .runner
            .run(job)
            .await
            .map_err(|e| error(format!("cannot run {}: {e}", self.program.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let message = match stderr.trim() {
                "" => format!("it failed ({})", out.status),
                s => s.to_owned(),
            };
            return Err(error(message));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{HostPort, TableRange};
    use crate::run::TokioRunner;

    fn scope() -> Scope {
        Scope {
            host_port: HostPort::Local,
            host_addrs: Vec::new(),
            tables: TableRange::new(200..=203).unwrap(),
            ct_zone: 1,
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_naming_it() {
        let ofctl = Ofctl::new("br0", Arc::new(TokioRunner)).with_program("/nonexistent/ovs-ofctl");
        let e = ofctl.dump_flows(&scope()).await.unwrap_err().to_string();
        assert!(e.starts_with("ovs-ofctl --no-stats --no-names dump-flows br0 cookie=0xc10d1e700000000/0xffffffff00000000: cannot run /nonexistent/ovs-ofctl:"), "{e}");
    }

    #[tokio::test]
    async fn an_empty_diff_runs_nothing() {
        // Would fail if it ran anything.
        let ofctl = Ofctl::new("br0", Arc::new(TokioRunner)).with_program("/nonexistent/ovs-ofctl");
        ofctl.apply(&Diff::default()).await.unwrap();
    }
}
