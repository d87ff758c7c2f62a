//! What the bench measured and how it is printed: latency samples with their percentiles, and
//! the tables with the ratios against cloudlet.
//!
//! Pure: it never measures or runs anything, and it never judges (no target, no pass or fail).

use std::fmt::Write as _;
use std::time::Duration;

/// Latencies of one side, in the order measured.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Adds one.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`th percentile (nearest rank), zero when empty.
    pub fn percentile(&self, p: usize) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = (sorted.len() * p.min(100)).div_ceil(100).max(1);
        sorted.get(rank - 1).copied().unwrap_or_default()
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.percentile(50)
    }

    /// The mean, zero when empty.
    pub fn mean(&self) -> Duration {
        let n = u32::try_from(self.0.len()).unwrap_or(u32::MAX).max(1);
        self.0.iter().sum::<Duration>() / n
    }
}

/// One line of a table: who, its samples, and what it sent (flow mods), when that is known.
#[derive(Debug)]
pub struct Line {
    /// Who, and how.
    pub label: String,
    /// Its latencies.
    pub samples: Samples,
    /// The flow mods it sent each time, as `min` or `min-max`.
    pub sent: Option<String>,
}

impl Line {
    /// A line without flow mods.
    pub fn new(label: &str, samples: Samples) -> Line {
        Line {
            label: label.to_owned(),
            samples,
            sent: None,
        }
    }

    /// A line with the flow mods sent each time.
    pub fn sent(label: &str, samples: Samples, sent: &[usize]) -> Line {
        let (lo, hi) = (sent.iter().min(), sent.iter().max());
        let sent = match (lo, hi) {
            (Some(lo), Some(hi)) if lo == hi => Some(lo.to_string()),
            (Some(lo), Some(hi)) => Some(format!("{lo}-{hi}")),
            _ => None,
        };
        Line {
            label: label.to_owned(),
            samples,
            sent,
        }
    }
}

/// A table of `lines` under `title`: n, p50, p99, mean, flow mods sent (when any line has
/// them), and each line's p50 against the `base` line's.
pub fn table(title: &str, lines: &[Line], base: usize) -> String {
    let width = lines.iter().map(|l| l.label.len()).max().unwrap_or(0);
    let with_sent = lines.iter().any(|l| l.sent.is_some());
    let mut out = format!("{title}\n");
    let _ = write!(
        out,
        "  {:width$}  {:>5} {:>10} {:>10} {:>10}",
        "", "n", "p50", "p99", "mean"
    );
    if with_sent {
        let _ = write!(out, " {:>10}", "flow mods");
    }
    let _ = writeln!(out, " {:>12}", "p50 ratio");
    let base_p50 = lines.get(base).map(|l| l.samples.p50());
    for (i, line) in lines.iter().enumerate() {
        let s = &line.samples;
        let _ = write!(
            out,
            "  {:width$}  {:>5} {:>10} {:>10} {:>10}",
            line.label,
            s.len(),
            ms(s.p50()),
            ms(s.percentile(99)),
            ms(s.mean())
        );
        if with_sent {
            let _ = write!(out, " {:>10}", line.sent.as_deref().unwrap_or("-"));
        }
        let ratio = match base_p50 {
            _ if i == base => "(base)".to_owned(),
            Some(b) if !b.is_zero() => format!("{:.2}x", ratio(s.p50(), b)),
            _ => "-".to_owned(),
        };
        let _ = writeln!(out, " {ratio:>12}");
    }
    out
}

/// `a / b`.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// A duration in milliseconds, with three significant digits or so.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    match ms {
        m if m < 1.0 => format!("{m:.3} ms"),
        m if m < 100.0 => format!("{m:.2} ms"),
        m => format!("{m:.0} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::default();
        for &m in ms {
            s.push(Duration::from_millis(m));
        }
        s
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = samples(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.percentile(99), Duration::from_millis(99));
        assert_eq!(s.percentile(100), Duration::from_millis(100));
        let few = samples(&[3, 1, 2]);
        assert_eq!(few.p50(), Duration::from_millis(2));
        assert_eq!(few.percentile(99), Duration::from_millis(3));
        assert_eq!(few.mean(), Duration::from_millis(2));
        assert_eq!(Samples::default().p50(), Duration::ZERO);
        assert_eq!(Samples::default().mean(), Duration::ZERO);
    }

    #[test]
    fn tables_give_ratios_against_the_base_line() {
        let lines = [
            Line::sent("ours", samples(&[2, 2, 2]), &[2, 2, 2]),
            Line::sent("peer", samples(&[5, 5, 5]), &[]),
            Line::new("other", samples(&[1])),
        ];
        let t = table("title", &lines, 0);
        assert!(t.starts_with("title\n"), "{t}");
        assert!(t.contains("(base)"), "{t}");
        assert!(t.contains("2.50x"), "{t}");
        assert!(t.contains("0.50x"), "{t}");
        assert!(t.contains("flow mods"), "{t}");
        assert_eq!(ms(Duration::from_micros(120)), "0.120 ms");
        assert_eq!(ms(Duration::from_micros(12_340)), "12.34 ms");
    }
}
