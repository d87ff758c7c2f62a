//! What the bench binaries' command lines share (`bench`, `clusterbench`, `netbench`): the
//! value parsers and defaults clap's derive calls. It owns no flags; each binary declares its own.

use std::path::PathBuf;

/// A count of at least 1 (`--kills`, `--agents`, `--calls`, ...).
pub fn count(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(0) | Err(_) => Err("not a positive number".to_owned()),
        Ok(n) => Ok(n),
    }
}

/// `name` in the directory of the running binary (just `name` if that is unknown): where
/// `scripts/bench.sh` builds cloudlet and the workload beside the benches.
pub fn beside(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_positive_numbers() {
        assert_eq!(count("7"), Ok(7));
        for bad in ["0", "-1", "x", ""] {
            assert_eq!(count(bad), Err("not a positive number".to_owned()), "{bad}");
        }
    }

    #[test]
    fn beside_is_in_the_binarys_directory() {
        let exe = std::env::current_exe().unwrap_or_default();
        assert_eq!(beside("cloudlet").parent(), exe.parent());
        assert!(beside("cloudlet").ends_with("cloudlet"));
    }
}
