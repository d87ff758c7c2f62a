//! What the bench reads about a process from `/proc`: its CPU time (`utime + stime` of
//! `/proc/PID/stat`, in clock ticks), its memory (`Rss` and `Pss` of `/proc/PID/smaps_rollup`),
//! its threads and open descriptors; and a window of such readings over time.
//!
//! Reads only: it must never signal or wait for a process.

use std::time::{Duration, Instant};

/// One reading of a process's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    /// `utime + stime`, in clock ticks.
    pub ticks: u64,
    /// Its threads.
    pub threads: u64,
}

/// One reading of a process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set.
    pub rss: u64,
    /// Proportional set (shared pages split among their users).
    pub pss: u64,
}

/// The clock ticks per second of `/proc/PID/stat`'s times.
pub fn clock_ticks() -> Result<u64, String> {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => u64::try_from(ticks).map_err(|e| e.to_string()),
        other => Err(format!("sysconf(_SC_CLK_TCK): {other:?}")),
    }
}

/// The CPU time of `pid` so far. Fails once it has exited (a zombie counts as exited).
pub fn cpu(pid: i32) -> Result<Cpu, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    parse_stat(&stat).ok_or_else(|| format!("{path}: process exited, or unexpected: {stat:?}"))
}

/// `utime + stime` and the threads from the text of `/proc/PID/stat`; `None` for a zombie.
fn parse_stat(stat: &str) -> Option<Cpu> {
    // The fields after the `)` that ends the command name: state is field 3 of the man page,
    // utime 14, stime 15, num_threads 20.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if *fields.first()? == "Z" {
        return None;
    }
    let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(Cpu {
        ticks: number(14)? + number(15)?,
        threads: number(20)?,
    })
}

/// The memory of `pid` now.
pub fn memory(pid: i32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let field =
        |name: &str| smaps_field(&text, name).ok_or_else(|| format!("{path}: no {name}: {text:?}"));
    Ok(Memory {
        rss: field("Rss")?,
        pss: field("Pss")?,
    })
}

/// One `Name:   N kB` field of an smaps file, in KiB.
fn smaps_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().trim_end_matches("kB").trim().parse().ok())?
    })
}

/// How many descriptors `pid` has open.
pub fn open_files(pid: i32) -> Result<usize, String> {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .map(Iterator::count)
        .map_err(|e| format!("reading {path}: {e}"))
}

/// The soft limit on open files of `pid`, as `/proc/PID/limits` says it.
pub fn open_files_limit(pid: i32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

/// What a process used over a window of time.
#[derive(Debug, Clone)]
pub struct Window {
    /// How long the window was.
    pub wall: Duration,
    /// The CPU time it used in it.
    pub cpu: Duration,
    /// The highest CPU use over one sampling interval, in % of one core.
    pub busiest: f64,
    /// The memory at the sample with the highest RSS.
    pub memory: Memory,
    /// Its threads at the end.
    pub threads: u64,
    /// Its open descriptors at the end.
    pub files: usize,
}

impl Window {
    /// The CPU it used, in % of one core.
    pub fn cpu_pct(&self) -> f64 {
        100.0 * self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Watches `pid` for `length`, reading it every `every`.
pub async fn watch(pid: i32, length: Duration, every: Duration) -> Result<Window, String> {
    let hz = clock_ticks()?;
    let seconds = |ticks: u64| Duration::from_secs_f64(ticks as f64 / hz as f64);
    let started = Instant::now();
    let first = cpu(pid)?;
    let (mut last, mut last_at) = (first, started);
    let mut memory = self::memory(pid)?;
    let mut busiest: f64 = 0.0;
    loop {
        let left = length.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(every)).await;
        let (now, now_at) = (cpu(pid)?, Instant::now());
        let span = now_at.duration_since(last_at).as_secs_f64().max(1e-9);
        busiest =
            busiest.max(100.0 * seconds(now.ticks.saturating_sub(last.ticks)).as_secs_f64() / span);
        (last, last_at) = (now, now_at);
        let sample = self::memory(pid)?;
        if sample.rss > memory.rss {
            memory = sample;
        }
    }
    Ok(Window {
        wall: last_at.duration_since(started),
        cpu: seconds(last.ticks.saturating_sub(first.ticks)),
        busiest,
        memory,
        threads: last.threads,
        files: open_files(pid)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 7 0 123 456 789";
        let cpu = parse_stat(stat).unwrap();
        assert_eq!((cpu.ticks, cpu.threads), (325, 7));
        assert!(parse_stat(&stat.replace(") S ", ") Z ")).is_none());
    }

    #[test]
    fn this_process_is_read() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(cpu(me).unwrap().threads >= 1);
        let memory = memory(me).unwrap();
        assert!(memory.rss >= memory.pss && memory.pss > 0, "{memory:?}");
        assert!(open_files(me).unwrap() >= 3);
        assert!(open_files_limit(me).is_some());
        assert!(clock_ticks().unwrap() >= 100);
    }
}
