//! Port ranges of firewall rules, and their expansion into the fewest `tp_dst=value/mask`
//! matches OpenFlow can express (a range is not a match field; a prefix of the port's bits is).
//!
//! Pure arithmetic: it never builds flows and never validates anything but the range itself.

use std::fmt;
use std::str::FromStr;

use crate::NetovsError;

/// An inclusive range of TCP or UDP ports, `lo..=hi` with `lo <= hi` (one port when equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// The ports `lo..=hi`; an error when `lo > hi`.
    pub fn new(lo: u16, hi: u16) -> Result<PortRange, NetovsError> {
        if lo > hi {
            return Err(NetovsError::Invalid(format!(
                "{lo}-{hi}: the first port is above the last"
            )));
        }
        Ok(PortRange { lo, hi })
    }

    /// The one port `port`.
    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    /// The first port.
    pub fn lo(&self) -> u16 {
        self.lo
    }

    /// The last port (equal to [`PortRange::lo`] for a single port).
    pub fn hi(&self) -> u16 {
        self.hi
    }

    /// The fewest `(value, mask)` pairs whose matches together cover exactly this range, in
    /// ascending order. A port `p` is in the range iff `p & mask == value` for one pair. The mask
    /// `0xffff` is an exact port; the whole range `0-65535` is the single pair `(0, 0)`.
    ///
    /// Greedy from the low end: each step takes the largest aligned power-of-two block that
    /// starts at the next uncovered port and does not pass `hi`, which is minimal for prefix
    /// matches (at most 30 pairs, for `1-65534`).
    pub fn masks(&self) -> Vec<(u16, u16)> {
        let end = u32::from(self.hi);
        let mut start = u32::from(self.lo);
        let mut out = Vec::new();
        while start <= end {
            // The largest block start is aligned to (its lowest set bit; 0 is aligned to all).
            let mut size: u32 = if start == 0 {
                1 << 16
            } else {
                start & start.wrapping_neg()
            };
            while start + size - 1 > end {
                size >>= 1;
            }
            let mask = !(size - 1) & 0xffff;
            out.push((
                u16::try_from(start).expect("start <= hi, a u16"),
                u16::try_from(mask).expect("masked to 16 bits"),
            ));
            start += size;
        }
        out
    }
}

impl fmt::Display for PortRange {
    /// `80` for one port, `8000-8099` for a range (the form [`PortRange::from_str`] reads).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for PortRange {
    type Err = NetovsError;

    /// `80` or `8000-8099` (spaces around the dash allowed).
    fn from_str(s: &str) -> Result<PortRange, NetovsError> {
        let port = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| {
                NetovsError::Invalid(format!(
                    "{s:?} is not a port or a range like 8000-8099 (ports are 0 to 65535)"
                ))
            })
        };
        match s.split_once('-') {
            None => port(s).map(PortRange::single),
            Some((lo, hi)) => PortRange::new(port(lo)?, port(hi)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
        PortRange::new(lo, hi).unwrap().masks()
    }

    /// Every port of 0..=65535 is covered by exactly one pair iff it is in the range.
    fn check_exact(lo: u16, hi: u16) {
        let pairs = masks(lo, hi);
        for p in 0..=u16::MAX {
            let hits = pairs.iter().filter(|(v, m)| p & m == *v).count();
            let want = usize::from((lo..=hi).contains(&p));
            assert_eq!(
                hits, want,
                "{lo}-{hi}: port {p} matched {hits} pairs of {pairs:x?}"
            );
        }
    }

    #[test]
    fn single_port_is_one_exact_match() {
        assert_eq!(masks(8080, 8080), [(8080, 0xffff)]);
        assert_eq!(masks(0, 0), [(0, 0xffff)]);
        assert_eq!(masks(65535, 65535), [(65535, 0xffff)]);
    }

    #[test]
    fn aligned_blocks_are_one_match() {
        assert_eq!(masks(0, 65535), [(0, 0)]);
        assert_eq!(masks(8080, 8095), [(8080, 0xfff0)]);
        assert_eq!(masks(32768, 65535), [(32768, 0x8000)]);
    }

    #[test]
    fn unaligned_ranges_split_into_the_fewest_blocks() {
        assert_eq!(
            masks(1024, 65535),
            [
                (1024, 0xfc00),
                (2048, 0xf800),
                (4096, 0xf000),
                (8192, 0xe000),
                (16384, 0xc000),
                (32768, 0x8000)
            ]
        );
        assert_eq!(
            masks(8080, 8090),
            [(8080, 0xfff8), (8088, 0xfffe), (8090, 0xffff)]
        );
        assert_eq!(masks(1, 65535).len(), 16);
        // The worst case for 16 bits: 15 blocks up from 1 and 15 down to 65534.
        assert_eq!(masks(1, 65534).len(), 30);
    }

    #[test]
    fn masks_cover_exactly_the_range() {
        for (lo, hi) in [
            (0, 0),
            (0, 1),
            (1, 1),
            (22, 22),
            (80, 443),
            (1000, 1999),
            (8080, 8090),
            (1, 65534),
            (30000, 32767),
            (49152, 65535),
            (65534, 65535),
        ] {
            check_exact(lo, hi);
        }
    }

    #[test]
    fn parses_and_prints_ports_and_ranges() {
        assert_eq!("80".parse::<PortRange>().unwrap(), PortRange::single(80));
        let r: PortRange = "8000 - 8099".parse().unwrap();
        assert_eq!((r.lo(), r.hi()), (8000, 8099));
        assert_eq!(r.to_string(), "8000-8099");
        assert_eq!(PortRange::single(22).to_string(), "22");
        let err = "90-80".parse::<PortRange>().unwrap_err().to_string();
        assert_eq!(err, "90-80: the first port is above the last");
        let err = "http".parse::<PortRange>().unwrap_err().to_string();
        assert!(err.contains("\"http\" is not a port"), "{err}");
        assert!("70000".parse::<PortRange>().is_err());
        assert!("-5".parse::<PortRange>().is_err());
    }
}
