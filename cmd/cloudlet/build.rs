//! Builds the small `cloudlet-shim` program that `cloudlet` embeds, and links `cloudlet` as a
//! position-dependent executable (`-no-pie`).
//!
//! The shim: one runs per service, and every page of program it maps counts in its memory. Run as
//! `cloudlet shim`, each mapped ~5 MiB of the server's binary (fault-around maps 64 KiB of cached
//! file around every page it touches); as its own program of a few hundred KiB it maps what it
//! needs (`make bench` measures it against runsv). Cargo cannot yet depend on another package's
//! binary (artifact dependencies are unstable), so this script runs cargo itself: the shim alone,
//! release profile, static and position-dependent, in `target/shim` (shared by every build of the
//! workspace, so it is built once), copied to `OUT_DIR/cloudlet-shim` for `include_bytes!`.
//!
//! `-no-pie`: in a PIE the dynamic loader applies ~11,000 relocations at start, dirtying every page
//! of `.data.rel.ro` (about 180 KiB) privately in each process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment a build script inherits that would change how the nested cargo builds: wrappers
/// (clippy's), the outer flags and target dir, the outer jobserver.
const CLEARED: &[&str] = &[
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

fn main() -> Result<(), String> {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .ok_or("CARGO_MANIFEST_DIR has no workspace above it")?
        .to_owned();
    for input in [
        "Cargo.lock",
        "Cargo.toml",
        "components/shim",
        "components/logs",
        "components/cgroups",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    let target = env("TARGET")?;
    let target_dir = root.join("target").join("shim");
    let mut cargo = Command::new(env("CARGO")?);
    for name in CLEARED {
        cargo.env_remove(name);
    }
    let output = cargo
        .current_dir(&root)
        .args(["build", "--release", "--offline", "--locked"])
        .args(["-p", "cloudlet-shim", "--bin", "cloudlet-shim", "--target"])
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Ctarget-feature=+crt-static\x1f-Crelocation-model=static",
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run cargo to build cloudlet-shim: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building cloudlet-shim failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let built = target_dir
        .join(&target)
        .join("release")
        .join("cloudlet-shim");
    let out = PathBuf::from(env("OUT_DIR")?).join("cloudlet-shim");
    std::fs::copy(&built, &out)
        .map_err(|e| format!("copy {} to {}: {e}", built.display(), out.display()))?;
    Ok(())
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|e| format!("build script: ${name}: {e}"))
}
