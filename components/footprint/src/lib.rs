//! The server's own footprint: once started, it gives back the memory it no longer needs; and the
//! program files ([`programs`]: the shim program, the server's private copy of itself) that let
//! each process map only the code it runs.
//!
//! - **Program text.** The kernel maps up to 64 KiB of cached file around every page fault
//!   ("fault-around") and reads ahead around every miss, so a process ends up mapping nearly all of
//!   its binary (the server mapped 9.6 of its 10 MiB of text and read-only data), most of it code it
//!   ran once at start-up (the command line, the certificates, the store's recovery) or never. Once
//!   started, [`trim`] marks those mappings `MADV_RANDOM` (a later fault brings in its own page, no
//!   read-ahead) and `MADV_PAGEOUT` (the kernel drops the pages no other process maps). What the
//!   server runs from then on comes back page by page (the kernel still maps the cached pages
//!   around a fault, which is why the server runs from a file no other process reads:
//!   [`programs::private_copy`]): its resident text becomes its working set.
//! - **Heap.** `malloc_trim` hands the free pages of glibc's arenas back (start-up allocates and
//!   frees the parsed manifests, the store's first transactions, the TLS set-up).
//!
//! [`trim`] only ever advises the kernel about this process's own read-only file mappings of its own
//! program (their contents cannot change: the advice loses no state, a page dropped is read again
//! from the file) and never touches a writable mapping or another process. Hand-written: no
//! maintained crate does this; it is two system calls over `/proc/self/smaps`.
#![warn(missing_docs)]

pub mod programs;

use std::path::{Path, PathBuf};

/// Errors reading this process's mappings or advising the kernel.
#[derive(Debug, thiserror::Error)]
pub enum FootprintError {
    /// A `/proc/self` file could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A program file or its directory could not be written, read or listed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The directory is on a `noexec` mount: a program written there cannot run.
    #[error("{} is on a noexec mount: a program there cannot run", dir.display())]
    Noexec {
        /// The directory.
        dir: PathBuf,
    },
    /// `madvise` refused (`MADV_PAGEOUT` needs Linux 5.4).
    #[error("madvise({advice}) on {start:#x}..{end:#x}: {source}")]
    Advise {
        /// The advice.
        advice: &'static str,
        /// The mapping.
        start: usize,
        /// Its end.
        end: usize,
        /// The errno.
        #[source]
        source: rustix::io::Errno,
    },
}

impl FootprintError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// What [`trim`] gave back, in KiB of resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// The program's read-only mappings before.
    pub text_before: u64,
    /// And after.
    pub text_after: u64,
    /// Anonymous memory (heap, stacks) before.
    pub anon_before: u64,
    /// And after.
    pub anon_after: u64,
}

/// One mapping of `/proc/self/smaps`: its range, whether it is writable, its file and resident size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    path: Option<PathBuf>,
    rss_kib: u64,
    anonymous_kib: u64,
}

/// Gives back this process's start-up text and free heap (see the module doc). Call once, when
/// start-up is over.
pub fn trim() -> Result<Trimmed, FootprintError> {
    let exe = read_link("/proc/self/exe")?;
    let text = |maps: &[Mapping]| -> u64 {
        maps.iter()
            .filter(|m| is_program_text(m, &exe))
            .map(|m| m.rss_kib)
            .sum()
    };
    // Anonymous memory is read from the small smaps_rollup: reading smaps itself takes heap.
    let anon_before = anonymous_kib()?;
    let before = mappings()?;
    // Every mapping of the program, its writable data too: a first read of a data page not yet
    // copied would read ahead around it (`read_ahead_kb`, 8 MiB on some disks: the whole
    // program), and the text faults then map those cached pages around each fault.
    for m in before
        .iter()
        .filter(|m| m.path.as_deref() == Some(exe.as_path()))
    {
        advise(m, rustix::mm::Advice::Random, "MADV_RANDOM")?;
    }
    for m in before.iter().filter(|m| is_program_text(m, &exe)) {
        advise(m, rustix::mm::Advice::LinuxPageOut, "MADV_PAGEOUT")?;
    }
    let text_after = text(&mappings()?);
    let text_before = text(&before);
    drop(before);
    release_free_heap();
    Ok(Trimmed {
        text_before,
        text_after,
        anon_before,
        anon_after: anonymous_kib()?,
    })
}

fn is_program_text(m: &Mapping, exe: &Path) -> bool {
    !m.writable && m.path.as_deref() == Some(exe)
}

fn advise(
    m: &Mapping,
    advice: rustix::mm::Advice,
    name: &'static str,
) -> Result<(), FootprintError> {
    let len = m.end.saturating_sub(m.start);
    // SAFETY: the range is one whole read-only file mapping of this process's own program, as
    // /proc/self/smaps lists it; both advices leave its contents as they are (a dropped page is
    // read again from the unchanged file), so no reference into it is invalidated.
    unsafe { rustix::mm::madvise(m.start as *mut std::ffi::c_void, len, advice) }.map_err(
        |source| FootprintError::Advise {
            advice: name,
            start: m.start,
            end: m.end,
            source,
        },
    )
}

#[cfg(target_env = "gnu")]
fn release_free_heap() {
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn release_free_heap() {}

fn read_link(path: &str) -> Result<PathBuf, FootprintError> {
    std::fs::read_link(path).map_err(|source| FootprintError::Read {
        path: path.into(),
        source,
    })
}

/// The `Anonymous:` total of `/proc/self/smaps_rollup`, in KiB.
fn anonymous_kib() -> Result<u64, FootprintError> {
    let path = "/proc/self/smaps_rollup";
    let text = std::fs::read_to_string(path).map_err(|source| FootprintError::Read {
        path: path.into(),
        source,
    })?;
    // One header line (`[rollup]`), then the totals: the same shape as smaps.
    Ok(parse_smaps(&text).first().map_or(0, |m| m.anonymous_kib))
}

fn mappings() -> Result<Vec<Mapping>, FootprintError> {
    let path = "/proc/self/smaps";
    let text = std::fs::read_to_string(path).map_err(|source| FootprintError::Read {
        path: path.into(),
        source,
    })?;
    Ok(parse_smaps(&text))
}

/// Parses `/proc/PID/smaps`: a header line per mapping (`start-end perms offset dev inode
/// [path]`), then `Field: value kB` lines. Lines it does not understand are skipped.
fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(m) = parse_header(line) {
            out.push(m);
            continue;
        }
        let Some(last) = out.last_mut() else { continue };
        let mut words = line.split_whitespace();
        let (Some(field), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(kib) = value.parse::<u64>() else {
            continue;
        };
        match field {
            "Rss:" => last.rss_kib = kib,
            "Anonymous:" => last.anonymous_kib = kib,
            _ => {}
        }
    }
    out
}

fn parse_header(line: &str) -> Option<Mapping> {
    let mut words = line.splitn(6, ' ');
    let (start, end) = words.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = words.next()?;
    if perms.len() != 4 || end < start {
        return None;
    }
    let (_offset, _dev, _inode) = (words.next()?, words.next()?, words.next()?);
    let path = words
        .next()
        .map(str::trim_start)
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from);
    Some(Mapping {
        start,
        end,
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        path,
        rss_kib: 0,
        anonymous_kib: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
00200000-0045c000 r--p 00000000 fe:00 5392624                            /usr/bin/cloudlet
Size:               2416 kB
Rss:                 960 kB
Anonymous:             0 kB
0045c000-00bd5000 r-xp 0025b000 fe:00 5392624                            /usr/bin/cloudlet
Rss:                6996 kB
Anonymous:             0 kB
00be5000-00bea000 rw-p 009d4000 fe:00 5392624                            /usr/bin/cloudlet
Rss:                  20 kB
Anonymous:            16 kB
06674000-06779000 rw-p 00000000 00:00 0                                  [heap]
Rss:                 980 kB
Anonymous:           980 kB
7f3ea8000000-7f3ea80cb000 rw-p 00000000 00:00 0 
Rss:                 796 kB
Anonymous:           796 kB
";

    #[test]
    fn smaps_gives_each_mapping_with_its_sizes() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[1].start, 0x45c000);
        assert_eq!(maps[1].end, 0xbd5000);
        assert_eq!(maps[1].rss_kib, 6996);
        assert!(!maps[1].writable);
        assert!(maps[2].writable);
        assert_eq!(maps[3].path, None, "[heap] is not a file");
        assert_eq!(maps[4].path, None);
        assert_eq!(maps[4].anonymous_kib, 796);
    }

    #[test]
    fn only_read_only_mappings_of_the_program_are_its_text() {
        let exe = Path::new("/usr/bin/cloudlet");
        let text: Vec<u64> = parse_smaps(SMAPS)
            .iter()
            .filter(|m| is_program_text(m, exe))
            .map(|m| m.rss_kib)
            .collect();
        assert_eq!(
            text,
            [960, 6996],
            "the writable data mapping stays untouched"
        );
    }

    #[test]
    fn a_path_with_spaces_is_kept_whole() {
        let maps = parse_smaps("00400000-00401000 r-xp 00000000 fe:00 1 /opt/my dir/cloudlet\n");
        assert_eq!(
            maps[0].path.as_deref(),
            Some(Path::new("/opt/my dir/cloudlet"))
        );
    }

    #[test]
    fn the_rollup_parses_as_one_mapping() {
        let rollup = "5645f9177000-7ffe7bc21000 ---p 00000000 00:00 0          [rollup]\n\
                      Rss:  1780 kB\nAnonymous:   212 kB\n";
        let maps = parse_smaps(rollup);
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].anonymous_kib, 212);
        assert!(anonymous_kib().unwrap() > 0);
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        assert!(parse_smaps("Rss: 4 kB\nnot a header\nzzzz-1 r-xp 0 0 0\n").is_empty());
    }

    #[test]
    fn trimming_this_test_program_gives_text_back_and_keeps_it_working() {
        let trimmed = trim().unwrap();
        assert!(trimmed.text_before > 0, "{trimmed:?}");
        assert!(trimmed.text_after < trimmed.text_before, "{trimmed:?}");
        // Code dropped from memory runs again: it is read back from the file.
        assert_eq!(parse_smaps(SMAPS).len(), 5);
    }
}
