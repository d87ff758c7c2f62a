//! Links `cloudlet` as a position-dependent executable (`-no-pie`).
//!
//! Why: one `cloudlet shim` runs per service. In a PIE the dynamic loader applies ~11,000
//! relocations at start, dirtying every page of `.data.rel.ro` (about 180 KiB) privately in each
//! process. Without PIE those addresses are fixed at link time and the pages stay clean and shared
//! between all shims. `make bench` measures the shims' PSS.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
