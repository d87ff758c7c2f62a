//! Human wording of byte counts and shares, for the reasons and details this crate writes. It owns
//! only formatting and must never be used to parse quantities (the spec crate does that).

/// A byte count in binary units with one decimal: `512 B`, `4.0 KiB`, `1.5 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `part` as a percentage of `whole`; an empty whole counts as entirely free (100%).
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A threshold in percent without a needless `.0`: `5`, `12.5`.
pub(crate) fn threshold(pct: f64) -> String {
    if pct.fract() == 0.0 {
        format!("{pct:.0}")
    } else {
        format!("{pct}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_worded_in_binary_units() {
        for (n, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (256 << 20, "256.0 MiB"),
            (3 << 29, "1.5 GiB"),
            (u64::MAX, "16.0 EiB"),
        ] {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn percent_of_nothing_is_all_free() {
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(0, 0), 100.0);
        assert_eq!(threshold(5.0), "5");
        assert_eq!(threshold(12.5), "12.5");
    }
}
