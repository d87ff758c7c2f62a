//! Node conditions: memory, disk, PID and CPU pressure, derived from one capacity and usage reading
//! against thresholds the caller passes in. A pure function: it reads nothing and decides
//! nothing. A condition is a warning for operators; cloudlet never stops a service for one.

use crate::capacity::Capacity;
use crate::disk::DiskSpace;
use crate::units;
use crate::usage::{PsiReading, Usage};

/// Where pressure begins. [`Default`] gives cloudlet's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// PSI `some avg10` (percent of time some task stalled) above which memory or CPU is under
    /// pressure. Default 10.
    pub psi_some_avg10: f64,
    /// Free disk (space or inodes) in percent below which a disk is a warning. Default 15.
    pub disk_warn_free_pct: f64,
    /// Free disk (space or inodes) in percent below which a disk is critical. Default 5.
    pub disk_critical_free_pct: f64,
    /// `MemAvailable` below which memory is critical. Default 256 MiB.
    pub memory_available_min_bytes: u64,
    /// PIDs in use in percent of the host's limit above which PIDs are a warning. Default 90.
    pub pids_max_used_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            psi_some_avg10: 10.0,
            disk_warn_free_pct: 15.0,
            disk_critical_free_pct: 5.0,
            memory_available_min_bytes: 256 << 20,
            pids_max_used_pct: 90.0,
        }
    }
}

/// What a condition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionKind {
    /// Memory is short (`MemAvailable`) or tasks stall on it (PSI).
    MemoryPressure,
    /// A watched filesystem is short of space or inodes.
    DiskPressure,
    /// The host is close to its PID limit.
    PidPressure,
    /// Tasks stall waiting for CPU (PSI).
    CpuPressure,
}

impl ConditionKind {
    /// Every kind, in the order [`conditions`] returns them.
    pub const ALL: [ConditionKind; 4] = [
        Self::MemoryPressure,
        Self::DiskPressure,
        Self::PidPressure,
        Self::CpuPressure,
    ];

    /// The name operators see: `MemoryPressure`, `DiskPressure`, `PIDPressure`, `CPUPressure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MemoryPressure => "MemoryPressure",
            Self::DiskPressure => "DiskPressure",
            Self::PidPressure => "PIDPressure",
            Self::CpuPressure => "CPUPressure",
        }
    }
}

/// How bad an active condition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Services are about to fail for want of the resource.
    Critical,
}

impl Severity {
    /// `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One node condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// What it is about.
    pub kind: ConditionKind,
    /// Whether the pressure is there now.
    pub status: bool,
    /// How bad: `Some` exactly when `status` is true.
    pub severity: Option<Severity>,
    /// For people: the path or resource and the numbers, against the threshold when active
    /// (`/var/lib/cloudlet: 4.1% free (< 5% critical), 42.0 MiB of 1.0 GiB`), the current state
    /// otherwise.
    pub reason: String,
}

/// The conditions of this host, one of each [`ConditionKind`] in [`ConditionKind::ALL`]'s order,
/// active or not, so that a caller can report changes.
pub fn conditions(capacity: &Capacity, usage: &Usage, thresholds: &Thresholds) -> Vec<Condition> {
    vec![
        memory(capacity, usage, thresholds),
        disk(usage, thresholds),
        pids(capacity, usage, thresholds),
        cpu(usage, thresholds),
    ]
}

/// Builds a condition from the problems found (worst severity wins; all are named) or, with
/// none, from `calm`.
fn condition(kind: ConditionKind, problems: Vec<(Severity, String)>, calm: String) -> Condition {
    let severity = problems.iter().map(|(s, _)| *s).max();
    let reason = if problems.is_empty() {
        calm
    } else {
        problems
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>()
            .join("; ")
    };
    Condition {
        kind,
        status: severity.is_some(),
        severity,
        reason,
    }
}

fn memory(capacity: &Capacity, usage: &Usage, t: &Thresholds) -> Condition {
    let available = usage.memory_available_bytes;
    let mut problems = Vec::new();
    if available < t.memory_available_min_bytes {
        problems.push((
            Severity::Critical,
            format!(
                "memory: {} available of {} (< {} minimum)",
                units::bytes(available),
                units::bytes(capacity.memory_bytes),
                units::bytes(t.memory_available_min_bytes)
            ),
        ));
    }
    problems.extend(psi("memory", usage.pressure.memory, t));
    let calm = format!(
        "memory: {} available of {}{}",
        units::bytes(available),
        units::bytes(capacity.memory_bytes),
        psi_now(usage.pressure.memory)
    );
    condition(ConditionKind::MemoryPressure, problems, calm)
}

fn cpu(usage: &Usage, t: &Thresholds) -> Condition {
    let problems = psi("cpu", usage.pressure.cpu, t).into_iter().collect();
    let calm = match usage.pressure.cpu {
        Some(r) => format!("cpu: PSI some avg10 {:.1}%", r.some_avg10),
        None => "cpu: the kernel reports no PSI".to_owned(),
    };
    condition(ConditionKind::CpuPressure, problems, calm)
}

fn psi(what: &str, reading: Option<PsiReading>, t: &Thresholds) -> Option<(Severity, String)> {
    let avg10 = reading?.some_avg10;
    (avg10 > t.psi_some_avg10).then(|| {
        (
            Severity::Warning,
            format!(
                "{what}: tasks stalled {avg10:.1}% of the last 10 s (PSI some avg10 > {}%)",
                units::threshold(t.psi_some_avg10)
            ),
        )
    })
}

fn psi_now(reading: Option<PsiReading>) -> String {
    reading.map_or_else(String::new, |r| {
        format!(", PSI some avg10 {:.1}%", r.some_avg10)
    })
}

fn disk(usage: &Usage, t: &Thresholds) -> Condition {
    // Each disk's lower share of free space and free inodes, worst first.
    let mut disks: Vec<(&DiskSpace, f64, bool)> = usage
        .disks
        .iter()
        .map(|d| {
            let (bytes, inodes) = (d.free_pct(), d.free_inodes_pct());
            if inodes < bytes {
                (d, inodes, true)
            } else {
                (d, bytes, false)
            }
        })
        .collect();
    disks.sort_by(|a, b| a.1.total_cmp(&b.1));
    let problems = disks
        .iter()
        .filter_map(|&(d, pct, inodes)| {
            let (severity, limit) = if pct < t.disk_critical_free_pct {
                (Severity::Critical, t.disk_critical_free_pct)
            } else if pct < t.disk_warn_free_pct {
                (Severity::Warning, t.disk_warn_free_pct)
            } else {
                return None;
            };
            Some((
                severity,
                format!(
                    "{}: {pct:.1}% {}free (< {}% {}), {}",
                    d.path.display(),
                    if inodes { "inodes " } else { "" },
                    units::threshold(limit),
                    severity.as_str(),
                    amounts(d, inodes)
                ),
            ))
        })
        .collect();
    let calm = match disks.first() {
        Some(&(d, pct, inodes)) => format!(
            "disks: least free {}: {pct:.1}% {}free, {}",
            d.path.display(),
            if inodes { "inodes " } else { "" },
            amounts(d, inodes)
        ),
        None => "disks: none watched".to_owned(),
    };
    condition(ConditionKind::DiskPressure, problems, calm)
}

fn amounts(d: &DiskSpace, inodes: bool) -> String {
    if inodes {
        format!("{} of {} inodes", d.free_inodes, d.total_inodes)
    } else {
        format!(
            "{} of {}",
            units::bytes(d.free_bytes),
            units::bytes(d.total_bytes)
        )
    }
}

fn pids(capacity: &Capacity, usage: &Usage, t: &Thresholds) -> Condition {
    let used = units::percent(usage.pids_in_use, capacity.pids);
    let numbers = format!(
        "pids: {} of {} in use ({used:.1}%",
        usage.pids_in_use, capacity.pids
    );
    let problems = if capacity.pids > 0 && used > t.pids_max_used_pct {
        vec![(
            Severity::Warning,
            format!("{numbers} > {}%)", units::threshold(t.pids_max_used_pct)),
        )]
    } else {
        Vec::new()
    };
    condition(ConditionKind::PidPressure, problems, format!("{numbers})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Psi;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn disk(path: &str, total: u64, free: u64, inodes: (u64, u64)) -> DiskSpace {
        DiskSpace {
            path: path.into(),
            mount_point: "/".into(),
            fs_type: "ext4".into(),
            total_bytes: total,
            free_bytes: free,
            total_inodes: inodes.0,
            free_inodes: inodes.1,
        }
    }

    fn reading(some_avg10: f64) -> Option<PsiReading> {
        Some(PsiReading {
            some_avg10,
            some_avg60: 0.0,
            full_avg10: Some(0.0),
        })
    }

    /// A calm host: 8 GiB, 4 GiB available, 1000 of 32768 PIDs, one disk half free, PSI low.
    fn calm() -> (Capacity, Usage) {
        let capacity = Capacity {
            cpu_millis: 2000,
            memory_bytes: 8 * GIB,
            pids: 32768,
            disks: vec![],
        };
        let usage = Usage {
            memory_available_bytes: 4 * GIB,
            pids_in_use: 1000,
            disks: vec![disk("/var/lib/cloudlet", 100 * GIB, 50 * GIB, (1000, 900))],
            pressure: Psi {
                cpu: reading(1.0),
                memory: reading(0.5),
                io: reading(0.0),
            },
        };
        (capacity, usage)
    }

    /// The one condition of `kind`, as (status, severity, reason).
    fn of(kind: ConditionKind, f: impl FnOnce(&mut Capacity, &mut Usage)) -> Condition {
        let (mut capacity, mut usage) = calm();
        f(&mut capacity, &mut usage);
        let all = conditions(&capacity, &usage, &Thresholds::default());
        assert_eq!(
            all.iter().map(|c| c.kind).collect::<Vec<_>>(),
            ConditionKind::ALL,
            "every kind, always, in order"
        );
        all.into_iter().find(|c| c.kind == kind).unwrap()
    }

    #[test]
    fn a_calm_host_has_every_condition_false_with_its_numbers() {
        for (kind, reason) in [
            (
                ConditionKind::MemoryPressure,
                "memory: 4.0 GiB available of 8.0 GiB, PSI some avg10 0.5%",
            ),
            (
                ConditionKind::DiskPressure,
                "disks: least free /var/lib/cloudlet: 50.0% free, 50.0 GiB of 100.0 GiB",
            ),
            (
                ConditionKind::PidPressure,
                "pids: 1000 of 32768 in use (3.1%)",
            ),
            (ConditionKind::CpuPressure, "cpu: PSI some avg10 1.0%"),
        ] {
            let c = of(kind, |_, _| {});
            assert_eq!((c.status, c.severity), (false, None), "{kind:?}");
            assert_eq!(c.reason, reason);
        }
    }

    type Change = fn(&mut Capacity, &mut Usage);

    #[test]
    fn pressure_table() {
        use ConditionKind::*;
        use Severity::*;
        let cases: &[(&str, ConditionKind, Change, Option<Severity>, &str)] = &[
            (
                "memory available under the minimum",
                MemoryPressure,
                |_, u| u.memory_available_bytes = 200 * MIB,
                Some(Critical),
                "memory: 200.0 MiB available of 8.0 GiB (< 256.0 MiB minimum)",
            ),
            (
                "memory available at the minimum is fine",
                MemoryPressure,
                |_, u| u.memory_available_bytes = 256 * MIB,
                None,
                "memory: 256.0 MiB available",
            ),
            (
                "memory PSI over the threshold",
                MemoryPressure,
                |_, u| u.pressure.memory = reading(12.34),
                Some(Warning),
                "memory: tasks stalled 12.3% of the last 10 s (PSI some avg10 > 10%)",
            ),
            (
                "memory PSI at the threshold is fine",
                MemoryPressure,
                |_, u| u.pressure.memory = reading(10.0),
                None,
                "PSI some avg10 10.0%",
            ),
            (
                "memory short and stalling: critical, both named",
                MemoryPressure,
                |_, u| {
                    u.memory_available_bytes = MIB;
                    u.pressure.memory = reading(50.0);
                },
                Some(Critical),
                "(< 256.0 MiB minimum); memory: tasks stalled 50.0%",
            ),
            (
                "no PSI: memory judged by MemAvailable alone",
                MemoryPressure,
                |_, u| u.pressure = Psi::default(),
                None,
                "memory: 4.0 GiB available of 8.0 GiB",
            ),
            (
                "disk under 15% free",
                DiskPressure,
                |_, u| u.disks[0].free_bytes = 14 * GIB,
                Some(Warning),
                "/var/lib/cloudlet: 14.0% free (< 15% warning), 14.0 GiB of 100.0 GiB",
            ),
            (
                "disk under 5% free",
                DiskPressure,
                |_, u| u.disks[0].free_bytes = 4 * GIB + 100 * MIB,
                Some(Critical),
                "/var/lib/cloudlet: 4.1% free (< 5% critical), 4.1 GiB of 100.0 GiB",
            ),
            (
                "disk exactly at 15% is fine",
                DiskPressure,
                |_, u| u.disks[0].free_bytes = 15 * GIB,
                None,
                "least free /var/lib/cloudlet: 15.0% free",
            ),
            (
                "inodes short while space is plenty",
                DiskPressure,
                |_, u| u.disks[0].free_inodes = 30,
                Some(Critical),
                "/var/lib/cloudlet: 3.0% inodes free (< 5% critical), 30 of 1000 inodes",
            ),
            (
                "no inode count (btrfs) is not pressure",
                DiskPressure,
                |_, u| u.disks[0].total_inodes = 0,
                None,
                "50.0% free",
            ),
            (
                "the worst disk is named first, the others after",
                DiskPressure,
                |_, u| {
                    u.disks.push(disk("/var/log", 10 * GIB, GIB, (0, 0)));
                    u.disks.push(disk("/srv", 10 * GIB, 100 * MIB, (0, 0)));
                },
                Some(Critical),
                "/srv: 1.0% free (< 5% critical), 100.0 MiB of 10.0 GiB; \
                 /var/log: 10.0% free (< 15% warning), 1.0 GiB of 10.0 GiB",
            ),
            (
                "no disks watched",
                DiskPressure,
                |_, u| u.disks.clear(),
                None,
                "disks: none watched",
            ),
            (
                "pids over 90% of the limit",
                PidPressure,
                |_, u| u.pids_in_use = 30000,
                Some(Warning),
                "pids: 30000 of 32768 in use (91.6% > 90%)",
            ),
            (
                "pids at 90% are fine",
                PidPressure,
                |c, u| {
                    c.pids = 1000;
                    u.pids_in_use = 900;
                },
                None,
                "pids: 900 of 1000 in use (90.0%)",
            ),
            (
                "cpu PSI over the threshold",
                CpuPressure,
                |_, u| u.pressure.cpu = reading(11.83),
                Some(Warning),
                "cpu: tasks stalled 11.8% of the last 10 s (PSI some avg10 > 10%)",
            ),
            (
                "no PSI: cpu says so",
                CpuPressure,
                |_, u| u.pressure = Psi::default(),
                None,
                "cpu: the kernel reports no PSI",
            ),
        ];
        for (name, kind, change, severity, reason) in cases {
            let c = of(*kind, change);
            assert_eq!(c.severity, *severity, "{name}: {}", c.reason);
            assert_eq!(c.status, severity.is_some(), "{name}");
            assert!(c.reason.contains(reason), "{name}: {:?}", c.reason);
        }
    }

    #[test]
    fn thresholds_are_the_callers() {
        let (capacity, usage) = calm();
        let strict = Thresholds {
            psi_some_avg10: 0.75,
            disk_warn_free_pct: 60.0,
            disk_critical_free_pct: 55.0,
            memory_available_min_bytes: 5 * GIB,
            pids_max_used_pct: 3.0,
        };
        let all = conditions(&capacity, &usage, &strict);
        let severities: Vec<_> = all.iter().map(|c| c.severity).collect();
        assert_eq!(
            severities,
            [
                Some(Severity::Critical),
                Some(Severity::Critical),
                Some(Severity::Warning),
                Some(Severity::Warning)
            ],
            "{all:#?}"
        );
        assert!(
            all[0].reason.contains("(< 5.0 GiB minimum)"),
            "{}",
            all[0].reason
        );
        assert!(all[3].reason.contains("> 0.75%"), "{}", all[3].reason);
    }
}
