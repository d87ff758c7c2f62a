//! Parsing of `/proc/meminfo`: the two numbers cloudlet uses, `MemTotal` (capacity) and
//! `MemAvailable` (usage). It must never guess a value the kernel did not write.

use crate::{HostError, HostPaths};

/// The memory facts of `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemInfo {
    pub(crate) total: u64,
    pub(crate) available: u64,
}

pub(crate) fn read(paths: &HostPaths) -> Result<MemInfo, HostError> {
    crate::read_parsed(&paths.proc.join("meminfo"), parse)
}

/// `MemAvailable` exists since Linux 3.14, which is far below what cloudlet needs anyway.
fn parse(text: &str) -> Result<MemInfo, String> {
    Ok(MemInfo {
        total: field(text, "MemTotal")?,
        available: field(text, "MemAvailable")?,
    })
}

/// One `Name:   1234 kB` line, in bytes.
fn field(text: &str, name: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .ok_or_else(|| format!("no {name} line"))?;
    let mut words = line.split_whitespace();
    let number: u64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{name}: not a number: {:?}", line.trim()))?;
    let scale = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(unit) => return Err(format!("{name}: unknown unit {unit:?}")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{name}: {number} {scale}-byte units overflow"))
}

/// A `/proc/meminfo` for fixtures: 2,048,000 kB total, 1,500,000 kB available.
#[cfg(test)]
pub(crate) const FIXTURE: &str = "\
MemTotal:        2048000 kB
MemFree:         1000000 kB
MemAvailable:    1500000 kB
Buffers:           10000 kB
HugePages_Total:       0
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn reads_total_and_available_in_bytes() {
        let (_root, paths) = fixture::host(&[("proc/meminfo", FIXTURE)]);
        assert_eq!(
            read(&paths).unwrap(),
            MemInfo {
                total: 2_048_000 * 1024,
                available: 1_500_000 * 1024
            }
        );
    }

    #[test]
    fn a_missing_or_broken_field_is_an_error_naming_it() {
        for (text, want) in [
            ("MemTotal: 1 kB\n", "no MemAvailable line"),
            (
                "MemTotal: x kB\nMemAvailable: 1 kB\n",
                "MemTotal: not a number",
            ),
            (
                "MemTotal: 1 MB\nMemAvailable: 1 kB\n",
                "MemTotal: unknown unit",
            ),
            ("MemTotalX: 1 kB\nMemAvailable: 1 kB\n", "no MemTotal line"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let (_root, paths) = fixture::host(&[("proc/meminfo", "MemTotal: 1 kB\n")]);
        let err = read(&paths).unwrap_err().to_string();
        assert!(
            err.starts_with("parse ") && err.contains("proc/meminfo"),
            "{err}"
        );
    }
}
