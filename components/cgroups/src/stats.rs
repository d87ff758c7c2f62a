//! Reading a cgroup's usage, limits, events and pressure (PSI), and the node-wide pressure files
//! in `/proc/pressure`. Reads only; what a number means (a warning, a node condition) is the
//! caller's decision. A value is `None` when its file is absent (its controller is off).

use std::path::Path;

use crate::{CgroupError, file};

/// A limit as read back: a number or `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Max {
    /// `max`: no limit.
    Unlimited,
    /// The limit.
    Value(u64),
}

/// What a cgroup uses and what it is allowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// `memory.current` in bytes.
    pub memory_current: Option<u64>,
    /// `memory.max`.
    pub memory_max: Option<Max>,
    /// `memory.events`.
    pub memory_events: Option<MemoryEvents>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// `pids.max`.
    pub pids_max: Option<Max>,
    /// The `max` count of `pids.events`: forks refused by `pids.max`.
    pub pids_events_max: Option<u64>,
    /// `cpu.stat`.
    pub cpu: Option<CpuStat>,
    /// `cpu.pressure`, `memory.pressure`, `io.pressure`.
    pub pressure: Pressures,
}

/// The counters of `memory.events` (each a count of occurrences since the cgroup was made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    /// Reclaimed below `memory.low`.
    pub low: u64,
    /// Throttled above `memory.high`.
    pub high: u64,
    /// Reached `memory.max`.
    pub max: u64,
    /// The OOM killer was invoked.
    pub oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
}

/// The fields of `cpu.stat`, in microseconds. The throttling fields exist only with the cpu
/// controller enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Total CPU time.
    pub usage_usec: u64,
    /// User CPU time.
    pub user_usec: u64,
    /// System CPU time.
    pub system_usec: u64,
    /// Periods elapsed with a quota.
    pub nr_periods: Option<u64>,
    /// Periods in which the quota ran out.
    pub nr_throttled: Option<u64>,
    /// Time spent throttled.
    pub throttled_usec: Option<u64>,
}

/// The three pressure files of a cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pressures {
    /// `cpu.pressure`.
    pub cpu: Option<Pressure>,
    /// `memory.pressure`.
    pub memory: Option<Pressure>,
    /// `io.pressure`.
    pub io: Option<Pressure>,
}

/// A pressure (PSI) file: the share of time some (or all) tasks were stalled on a resource.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    /// At least one task stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled at once (absent for node-wide CPU on older kernels).
    pub full: Option<PsiLine>,
}

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    /// Percent of the last 10 s.
    pub avg10: f64,
    /// Percent of the last 60 s.
    pub avg60: f64,
    /// Percent of the last 300 s.
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total: u64,
}

/// Reads the stats of the cgroup at `dir`.
pub(crate) fn read_stats(dir: &Path) -> Result<Stats, CgroupError> {
    let memory_events = read_keyed(&dir.join("memory.events"), |p| MemoryEvents {
        low: file::key(p, "low").unwrap_or(0),
        high: file::key(p, "high").unwrap_or(0),
        max: file::key(p, "max").unwrap_or(0),
        oom: file::key(p, "oom").unwrap_or(0),
        oom_kill: file::key(p, "oom_kill").unwrap_or(0),
    })?;
    let cpu = read_keyed(&dir.join("cpu.stat"), |p| CpuStat {
        usage_usec: file::key(p, "usage_usec").unwrap_or(0),
        user_usec: file::key(p, "user_usec").unwrap_or(0),
        system_usec: file::key(p, "system_usec").unwrap_or(0),
        nr_periods: file::key(p, "nr_periods"),
        nr_throttled: file::key(p, "nr_throttled"),
        throttled_usec: file::key(p, "throttled_usec"),
    })?;
    Ok(Stats {
        memory_current: file::read_u64(&dir.join("memory.current"))?,
        memory_max: read_max(&dir.join("memory.max"))?,
        memory_events,
        pids_current: file::read_u64(&dir.join("pids.current"))?,
        pids_max: read_max(&dir.join("pids.max"))?,
        pids_events_max: read_keyed(&dir.join("pids.events"), |p| file::key(p, "max"))?.flatten(),
        cpu,
        pressure: Pressures {
            cpu: read_pressure(&dir.join("cpu.pressure"))?,
            memory: read_pressure(&dir.join("memory.pressure"))?,
            io: read_pressure(&dir.join("io.pressure"))?,
        },
    })
}

/// Reads a pressure file: a cgroup's `*.pressure` or `/proc/pressure/{cpu,memory,io}`. `None`
/// when the file is absent or the kernel has PSI disabled.
pub fn read_pressure(path: &Path) -> Result<Option<Pressure>, CgroupError> {
    match file::read_optional(path)? {
        Some(text) => parse_pressure(path, &text).map(Some),
        None => Ok(None),
    }
}

fn parse_pressure(path: &Path, text: &str) -> Result<Pressure, CgroupError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || CgroupError::Parse {
            path: path.to_owned(),
            line: line.to_owned(),
        };
        let (kind, rest) = line.split_once(' ').ok_or_else(bad)?;
        let psi = parse_psi_line(rest).ok_or_else(bad)?;
        match kind {
            "some" => some = Some(psi),
            "full" => full = Some(psi),
            _ => return Err(bad()),
        }
    }
    let some = some.ok_or_else(|| CgroupError::Parse {
        path: path.to_owned(),
        line: "no \"some\" line".to_owned(),
    })?;
    Ok(Pressure { some, full })
}

/// Parses `avg10=0.00 avg60=0.00 avg300=0.00 total=0`.
fn parse_psi_line(rest: &str) -> Option<PsiLine> {
    let mut psi = PsiLine::default();
    let mut seen = 0;
    for field in rest.split_whitespace() {
        let (k, v) = field.split_once('=')?;
        match k {
            "avg10" => psi.avg10 = v.parse().ok()?,
            "avg60" => psi.avg60 = v.parse().ok()?,
            "avg300" => psi.avg300 = v.parse().ok()?,
            "total" => psi.total = v.parse().ok()?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(psi)
}

fn read_max(path: &Path) -> Result<Option<Max>, CgroupError> {
    let Some(text) = file::read_optional(path)? else {
        return Ok(None);
    };
    match text.trim() {
        "max" => Ok(Some(Max::Unlimited)),
        v => v
            .parse()
            .map(|v| Some(Max::Value(v)))
            .map_err(|_| CgroupError::Parse {
                path: path.to_owned(),
                line: v.to_owned(),
            }),
    }
}

/// Reads a flat-keyed file and builds `T` from its pairs; `None` when the file is absent.
fn read_keyed<T>(
    path: &Path,
    build: impl FnOnce(&[(&str, u64)]) -> T,
) -> Result<Option<T>, CgroupError> {
    let Some(text) = file::read_optional(path)? else {
        return Ok(None);
    };
    Ok(Some(build(&file::parse_flat_keyed(path, &text)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testroot::FakeRoot;

    #[test]
    fn full_stats_from_real_formats() {
        let root = FakeRoot::new();
        root.cgroup("s", &["cpu", "memory", "pids"]);
        root.file("s", "memory.current", "1392640\n");
        root.file("s", "memory.max", "134217728\n");
        root.file(
            "s",
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        root.file("s", "pids.current", "7\n");
        root.file("s", "pids.max", "max\n");
        root.file("s", "pids.events", "max 12\n");
        root.file(
            "s",
            "cpu.stat",
            "usage_usec 123\nuser_usec 100\nsystem_usec 23\nnice_usec 0\ncore_sched.force_idle_usec 0\n\
             nr_periods 40\nnr_throttled 5\nthrottled_usec 9000\nnr_bursts 0\nburst_usec 0\n",
        );
        root.file(
            "s",
            "cpu.pressure",
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=4242\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=17\n",
        );
        root.file(
            "s",
            "memory.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );

        let stats = read_stats(&root.mount().join("s")).unwrap();
        assert_eq!(
            stats,
            Stats {
                memory_current: Some(1_392_640),
                memory_max: Some(Max::Value(134_217_728)),
                memory_events: Some(MemoryEvents {
                    low: 0,
                    high: 0,
                    max: 3,
                    oom: 1,
                    oom_kill: 1
                }),
                pids_current: Some(7),
                pids_max: Some(Max::Unlimited),
                pids_events_max: Some(12),
                cpu: Some(CpuStat {
                    usage_usec: 123,
                    user_usec: 100,
                    system_usec: 23,
                    nr_periods: Some(40),
                    nr_throttled: Some(5),
                    throttled_usec: Some(9000),
                }),
                pressure: Pressures {
                    cpu: Some(Pressure {
                        some: PsiLine {
                            avg10: 1.5,
                            avg60: 0.25,
                            avg300: 0.0,
                            total: 4242
                        },
                        full: Some(PsiLine {
                            total: 17,
                            ..PsiLine::default()
                        }),
                    }),
                    memory: Some(Pressure {
                        some: PsiLine::default(),
                        full: Some(PsiLine::default()),
                    }),
                    io: None,
                },
            }
        );
    }

    #[test]
    fn a_cgroup_without_controllers_has_only_cpu_usage() {
        // What a child of this host's hybrid v2 hierarchy shows.
        let root = FakeRoot::new();
        root.cgroup("s", &[]);
        root.file(
            "s",
            "cpu.stat",
            "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnice_usec 0\n",
        );
        let stats = read_stats(&root.mount().join("s")).unwrap();
        assert_eq!(
            stats,
            Stats {
                cpu: Some(CpuStat::default()),
                ..Stats::default()
            }
        );
    }

    #[test]
    fn node_pressure_without_full_and_bad_pressure_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cpu");
        std::fs::write(
            &p,
            "some avg10=3.35 avg60=4.18 avg300=4.57 total=67663538\n",
        )
        .unwrap();
        let psi = read_pressure(&p).unwrap().unwrap();
        assert_eq!(psi.some.avg60, 4.18);
        assert_eq!(psi.some.total, 67_663_538);
        assert_eq!(psi.full, None);

        assert_eq!(read_pressure(&dir.path().join("absent")).unwrap(), None);

        for bad in [
            "some avg10=x avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 total=0\n",
            "most avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            let err = read_pressure(&p).unwrap_err();
            assert!(matches!(err, CgroupError::Parse { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn unparsable_limits_name_the_file() {
        let root = FakeRoot::new();
        root.cgroup("s", &["memory"]);
        root.file("s", "memory.max", "lots\n");
        let err = read_stats(&root.mount().join("s")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("memory.max: unexpected line \"lots\""),
            "{err}"
        );
    }
}
