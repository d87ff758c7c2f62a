//! The data dir stays private whatever created it and whatever the umask: it holds the store
//! (the services' CA key, secrets inside manifests), the node's keys and the admin config.
//!
//! [`dir`] makes the data dir [`DIR_MODE`] (0711) before anything is written into it: others may
//! pass through it to the directories services own (MariaDB's data, as user `mysql`), never list
//! or read it (a dir an installer or an operator made 0755 listed every file). [`files`], once
//! the server or agent runs, takes the group and other bits off the files directly in it and in
//! `pki/` (the store was created with the umask's mode): with the dir passable, their own modes
//! are what keeps them private. Each change is logged with the mode it replaced. It never touches
//! the services' own files (`etc/`, `logs/`, `run/`), which keep the modes their manifests give.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::Context as _;

/// The data dir's mode: the owner's, and passage (no listing, no reading) for the services'
/// users to the directories they own in it.
pub const DIR_MODE: u32 = 0o711;

/// Makes `dir` [`DIR_MODE`] if group or others could list it or write to it.
pub fn dir(dir: &Path) -> anyhow::Result<()> {
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("stat data dir {}", dir.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o066 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("make data dir {} private (chmod 0711)", dir.display()))?;
        tracing::warn!(
            "data dir {} was mode {mode:04o}; made it {DIR_MODE:04o} (it holds the store and keys)",
            dir.display()
        );
    }
    Ok(())
}

/// Takes group and other access off the regular files in `dir` and `dir/pki`, and off the
/// directories only cloudlet reads (`pki`, `logs`, `run`, `manifests`). A change it cannot make
/// is logged, not fatal.
pub fn files(dir: &Path) {
    for sub in ["pki", "logs", "run", "manifests"] {
        let path = dir.join(sub);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() && mode & 0o077 != 0 {
            tighten(&path, mode, mode & !0o077);
        }
    }
    for sub in [dir.to_owned(), dir.join("pki")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let mode = meta.permissions().mode() & 0o7777;
            if !meta.is_file() || mode & 0o077 == 0 {
                continue;
            }
            tighten(&entry.path(), mode, mode & !0o077);
        }
    }
}

fn tighten(path: &Path, mode: u32, private: u32) {
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)) {
        Ok(()) => tracing::info!(
            "{} was mode {mode:04o}; made it {private:04o}",
            path.display()
        ),
        Err(e) => tracing::warn!("cannot make {} private: {e}", path.display()),
    }
}
