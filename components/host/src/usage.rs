//! What this host uses now: available memory, PIDs in use, free disk, and pressure stall
//! information (PSI). It reads only and must never act on what it reads.

use std::io;
use std::path::PathBuf;

use crate::disk::{self, DiskSpace};
use crate::{HostError, HostPaths, meminfo};

/// A reading of this host's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// `MemAvailable` from `/proc/meminfo`: what can be allocated without swapping.
    pub memory_available_bytes: u64,
    /// Threads that exist now (each holds a PID): the total of `/proc/loadavg`'s fourth field.
    pub pids_in_use: u64,
    /// The filesystems of the paths asked for, read now, in the order asked.
    pub disks: Vec<DiskSpace>,
    /// The host-wide pressure stall information.
    pub pressure: Psi,
}

/// Pressure stall information from `/proc/pressure/{cpu,memory,io}`. A resource is `None` when
/// the kernel has no PSI (built without it, or booted with `psi=0`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Psi {
    /// CPU pressure.
    pub cpu: Option<PsiReading>,
    /// Memory pressure.
    pub memory: Option<PsiReading>,
    /// IO pressure.
    pub io: Option<PsiReading>,
}

/// One resource's pressure: the share of wall time, in percent, that tasks were stalled on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiReading {
    /// Some task stalled, averaged over the last 10 s.
    pub some_avg10: f64,
    /// Some task stalled, averaged over the last 60 s.
    pub some_avg60: f64,
    /// Every non-idle task stalled at once, averaged over the last 10 s (`None` for CPU on
    /// kernels before 5.13, which write no `full` line there).
    pub full_avg10: Option<f64>,
}

/// Reads this host's usage, with the filesystems that hold `disk_paths` (each must exist).
pub fn usage(paths: &HostPaths, disk_paths: &[PathBuf]) -> Result<Usage, HostError> {
    let pids_in_use = crate::read_parsed(&paths.proc.join("loadavg"), threads)?;
    Ok(Usage {
        memory_available_bytes: meminfo::read(paths)?.available,
        pids_in_use,
        disks: disk::read_all(paths, disk_paths)?,
        pressure: Psi {
            cpu: pressure(paths, "cpu")?,
            memory: pressure(paths, "memory")?,
            io: pressure(paths, "io")?,
        },
    })
}

/// `0.52 0.58 0.59 3/457 12345`: the fourth field is runnable/total scheduling entities.
fn threads(loadavg: &str) -> Result<u64, String> {
    loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(_, total)| total.parse().ok())
        .ok_or_else(|| format!("no running/total field: {:?}", loadavg.trim()))
}

fn pressure(paths: &HostPaths, resource: &str) -> Result<Option<PsiReading>, HostError> {
    let path = paths.proc.join("pressure").join(resource);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_pressure(&text)
            .map(Some)
            .map_err(|reason| HostError::Parse { path, reason }),
        // No file: a kernel without PSI. EOPNOTSUPP on read: PSI built in but off (`psi=0`).
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(HostError::Read { path, source }),
    }
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, then the same for `full`.
fn parse_pressure(text: &str) -> Result<PsiReading, String> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let slot = match line.split_whitespace().next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let avg = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse::<f64>().ok())
                .ok_or_else(|| format!("no {key} in {line:?}"))
        };
        *slot = Some((avg("avg10")?, avg("avg60")?));
    }
    let (some_avg10, some_avg60) = some.ok_or("no \"some\" line")?;
    Ok(PsiReading {
        some_avg10,
        some_avg60,
        full_avg10: full.map(|(avg10, _)| avg10),
    })
}

/// PSI files for fixtures: memory under some pressure, CPU without a `full` line, IO idle.
#[cfg(test)]
pub(crate) const PRESSURE_FIXTURES: [(&str, &str); 3] = [
    (
        "proc/pressure/cpu",
        "some avg10=1.50 avg60=0.75 avg300=0.10 total=123456\n",
    ),
    (
        "proc/pressure/memory",
        "some avg10=12.25 avg60=3.00 avg300=1.00 total=99\nfull avg10=4.00 avg60=1.00 avg300=0.50 total=42\n",
    ),
    (
        "proc/pressure/io",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn reads_memory_threads_and_pressure_from_fixtures() {
        let mut files = vec![
            ("proc/meminfo", meminfo::FIXTURE),
            ("proc/loadavg", "0.52 0.58 0.59 3/457 12345\n"),
        ];
        files.extend(PRESSURE_FIXTURES);
        let (_root, paths) = fixture::host(&files);
        let usage = usage(&paths, &[]).unwrap();
        assert_eq!(usage.memory_available_bytes, 1_500_000 * 1024);
        assert_eq!(usage.pids_in_use, 457);
        assert!(usage.disks.is_empty());
        assert_eq!(
            usage.pressure,
            Psi {
                cpu: Some(PsiReading {
                    some_avg10: 1.5,
                    some_avg60: 0.75,
                    full_avg10: None
                }),
                memory: Some(PsiReading {
                    some_avg10: 12.25,
                    some_avg60: 3.0,
                    full_avg10: Some(4.0)
                }),
                io: Some(PsiReading {
                    some_avg10: 0.0,
                    some_avg60: 0.0,
                    full_avg10: Some(0.0)
                }),
            }
        );
    }

    #[test]
    fn no_pressure_files_means_no_psi_not_an_error() {
        let (_root, paths) = fixture::host(&[
            ("proc/meminfo", meminfo::FIXTURE),
            ("proc/loadavg", "0.00 0.00 0.00 1/10 1\n"),
        ]);
        assert_eq!(usage(&paths, &[]).unwrap().pressure, Psi::default());
    }

    #[test]
    fn broken_files_are_errors_naming_them() {
        for (file, content, want) in [
            (
                "proc/loadavg",
                "0.00 0.00 0.00\n",
                "loadavg: no running/total",
            ),
            (
                "proc/pressure/cpu",
                "full avg10=1 avg60=1\n",
                "cpu: no \"some\" line",
            ),
            (
                "proc/pressure/cpu",
                "some avg10=x avg60=1\n",
                "cpu: no avg10",
            ),
        ] {
            let mut files = vec![
                ("proc/meminfo", meminfo::FIXTURE),
                ("proc/loadavg", "0.00 0.00 0.00 1/10 1\n"),
            ];
            files.push((file, content));
            let (_root, paths) = fixture::host(&files);
            let err = usage(&paths, &[]).unwrap_err().to_string();
            assert!(err.contains(want), "{file} {content:?}: {err}");
        }
    }
}
