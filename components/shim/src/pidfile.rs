//! The run's pid file (`run/<service>/service.pid`): which process the shim started, recorded so
//! that a server that finds the shim gone can end what it left behind, and only that.
//!
//! A pid alone proves nothing: the run dir survives a reboot, and pids are reused. So the file
//! also records the boot (`/proc/sys/kernel/random/boot_id`), the process's start time (field 22
//! of `/proc/PID/stat`, clock ticks since boot) and its cgroup; [`PidRecord::still_running`] is
//! true only while all of them match a live process. A file in the old form (the pid alone) proves
//! nothing and is never acted on.
//!
//! It only reads `/proc` and renders or parses the file's text; the shim writes the file, the
//! server decides what to signal.

use std::path::Path;

/// What the pid file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidRecord {
    /// The process the shim started (the leader of the run's process group).
    pub pid: i32,
    /// The boot it started in.
    pub boot_id: String,
    /// Its start time, in clock ticks since that boot.
    pub start_ticks: u64,
    /// Its cgroup (v2 path, `/` when unknown).
    pub cgroup: String,
}

impl PidRecord {
    /// The record of the live process `pid`, read from `/proc`.
    pub fn of(pid: i32) -> std::io::Result<PidRecord> {
        let proc = Path::new("/proc").join(pid.to_string());
        let stat = std::fs::read_to_string(proc.join("stat"))?;
        let start_ticks = start_ticks(&stat).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no start time in stat")
        })?;
        let cgroup = std::fs::read_to_string(proc.join("cgroup"))
            .ok()
            .as_deref()
            .and_then(unified_cgroup)
            .unwrap_or("/")
            .to_owned();
        Ok(PidRecord {
            pid,
            boot_id: boot_id()?,
            start_ticks,
            cgroup,
        })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "{}\nboot_id={}\nstart={}\ncgroup={}\n",
            self.pid, self.boot_id, self.start_ticks, self.cgroup
        )
    }

    /// Reads a file's text; `None` when it does not prove a process (the old pid-only form,
    /// anything malformed).
    pub fn parse(text: &str) -> Option<PidRecord> {
        let mut lines = text.lines();
        let pid = lines
            .next()?
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|&p| p > 1)?;
        let (mut boot_id, mut start_ticks, mut cgroup) = (None, None, None);
        for line in lines {
            match line.split_once('=') {
                Some(("boot_id", v)) => boot_id = Some(v.to_owned()),
                Some(("start", v)) => start_ticks = v.parse().ok(),
                Some(("cgroup", v)) => cgroup = Some(v.to_owned()),
                _ => {}
            }
        }
        Some(PidRecord {
            pid,
            boot_id: boot_id.filter(|b| !b.is_empty())?,
            start_ticks: start_ticks?,
            cgroup: cgroup?,
        })
    }

    /// Whether the recorded process still runs: same boot, and a process with this pid that
    /// started at the same tick in the same cgroup.
    pub fn still_running(&self) -> bool {
        PidRecord::of(self.pid).is_ok_and(|now| now == *self)
    }
}

/// Field 22 of `/proc/PID/stat`: counted after the command, which is in parentheses and may hold
/// spaces and parentheses itself.
fn start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after the command: field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The cgroup v2 path in a `/proc/PID/cgroup` text (`0::/path`).
fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

fn boot_id() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_the_old_form_proves_nothing() {
        let record = PidRecord {
            pid: 4242,
            boot_id: "8c1e-…".to_owned(),
            start_ticks: 123_456,
            cgroup: "/cloudlet/services/web".to_owned(),
        };
        assert_eq!(PidRecord::parse(&record.render()), Some(record));
        for unproven in [
            "4242\n",
            "4242",
            "",
            "x\nboot_id=a\nstart=1\ncgroup=/\n",
            "1\nboot_id=a\nstart=1\ncgroup=/\n",
            "4242\nboot_id=\nstart=1\ncgroup=/\n",
            "4242\nboot_id=a\nstart=x\ncgroup=/\n",
            "4242\nboot_id=a\nstart=1\n",
        ] {
            assert_eq!(PidRecord::parse(unproven), None, "{unproven:?}");
        }
    }

    #[test]
    fn start_time_is_read_past_a_command_with_spaces_and_parentheses() {
        let stat = "77 (a b) (c)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 \
                    1000 10 18446744073709551615";
        assert_eq!(start_ticks(stat), Some(98_765));
        assert_eq!(start_ticks("77 (x) S 1"), None);
        assert_eq!(unified_cgroup("1:name=systemd:/a\n0::/b/c\n"), Some("/b/c"));
    }

    #[test]
    fn this_process_is_still_running_and_a_changed_record_is_not() {
        let me = i32::try_from(std::process::id()).unwrap();
        let record = PidRecord::of(me).unwrap();
        assert!(record.still_running());
        for changed in [
            PidRecord {
                start_ticks: record.start_ticks + 1,
                ..record.clone()
            },
            PidRecord {
                boot_id: "another-boot".to_owned(),
                ..record.clone()
            },
            PidRecord {
                cgroup: "/elsewhere".to_owned(),
                ..record.clone()
            },
        ] {
            assert!(!changed.still_running(), "{changed:?}");
        }
    }
}
