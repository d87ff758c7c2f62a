//! The running kernel's version, from `/proc/sys/kernel/osrelease`, for the checks that depend on
//! it. It only parses the release string and must never guess features from anything else.

use crate::{HostError, HostPaths};

/// A kernel's major and minor version, plus the release string it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    /// As the kernel wrote it: `6.1.0-18-amd64`.
    pub(crate) release: String,
}

impl KernelVersion {
    /// Whether this kernel is `major.minor` or newer.
    pub(crate) fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

pub(crate) fn read(paths: &HostPaths) -> Result<KernelVersion, HostError> {
    crate::read_parsed(&paths.proc.join("sys/kernel/osrelease"), parse)
}

/// `6.1.0-18-amd64`, `5.15.0-91-generic`, `4.19.0+`, `6.8`.
fn parse(text: &str) -> Result<KernelVersion, String> {
    let release = text.trim();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (number(), number()) {
        (Some(major), Some(minor)) => Ok(KernelVersion {
            major,
            minor,
            release: release.to_owned(),
        }),
        _ => Err(format!("not a kernel release: {release:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn parses_distribution_release_strings() {
        for (text, major, minor) in [
            ("6.1.0-18-amd64\n", 6, 1),
            ("5.15.0-91-generic", 5, 15),
            ("4.19.0+", 4, 19),
            ("6.8", 6, 8),
            ("6.18.44-fc-v657\n", 6, 18),
        ] {
            let v = parse(text).unwrap();
            assert_eq!((v.major, v.minor), (major, minor), "{text}");
            assert_eq!(v.release, text.trim());
        }
        for text in ["", "6", "linux", "6.x"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn compares_major_then_minor() {
        let v = parse("5.14.0").unwrap();
        assert!(v.at_least(5, 14) && v.at_least(4, 15) && v.at_least(5, 9));
        assert!(!v.at_least(5, 15) && !v.at_least(6, 0));
    }

    #[test]
    fn reads_osrelease() {
        let (_root, paths) = fixture::host(&[("proc/sys/kernel/osrelease", "5.10.0-28-amd64\n")]);
        assert_eq!(read(&paths).unwrap().release, "5.10.0-28-amd64");
    }
}
