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
//!
//! Release links also pass lld `hot-text.order` (`--symbol-ordering-file`): the functions the
//! server runs once it serves, placed together at the start of `.text`, so that the pages it keeps
//! resident hold what it runs rather than a few hot bytes each (`scripts/hot-text.sh` makes the
//! list and explains the numbers); and they write a link map, `OUT_DIR/cloudlet.map`, which that
//! script reads the functions' names and addresses from.

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
    if env("PROFILE")? == "release" {
        order_text(&manifest)?;
    }
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
            shim_rustflags(&root, &target_dir, &target),
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

/// The shim's flags: static and position-dependent; its functions in the order of
/// `components/shim/hot-text.order` (matched to this build's symbols by
/// `scripts/link-ordered.sh`, the linker, whatever hashes their names carry) and a link map
/// beside it (as the server's, see the module doc). The same flags every time, so that the
/// shim's symbol names never change with them.
fn shim_rustflags(root: &Path, target_dir: &Path, target: &str) -> String {
    let order = root.join("components/shim/hot-text.order");
    let map = target_dir.join(target).join("release/cloudlet-shim.map");
    [
        format!(
            "-Clinker={}",
            root.join("scripts/link-ordered.sh").display()
        ),
        "-Ctarget-feature=+crt-static".to_owned(),
        "-Crelocation-model=static".to_owned(),
        format!("-Clink-arg=-Wl,--symbol-ordering-file={}", order.display()),
        "-Clink-arg=-Wl,--no-warn-symbol-ordering".to_owned(),
        format!("-Clink-arg=-Wl,-Map={}", map.display()),
        "-Clink-arg=-Wl,--no-demangle".to_owned(),
    ]
    .join("\x1f")
}

/// The release link's symbol order and map (see the module doc). The linker is lld (rustc's
/// default on x86_64 Linux since 1.90), run through `scripts/link-ordered.sh` where
/// `scripts/build-static.sh` builds (it matches the list's names to this build's whatever
/// hashes they carry); lld skips names of the list that no longer exist, so a stale list still
/// links and only packs less.
fn order_text(manifest: &Path) -> Result<(), String> {
    let order = manifest.join("hot-text.order");
    println!("cargo:rerun-if-changed={}", order.display());
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    let map = PathBuf::from(env("OUT_DIR")?).join("cloudlet.map");
    println!("cargo:rustc-link-arg-bins=-Wl,-Map={}", map.display());
    // Names in the map as the order file needs them (lld demangles them by default).
    println!("cargo:rustc-link-arg-bins=-Wl,--no-demangle");
    Ok(())
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|e| format!("build script: ${name}: {e}"))
}
