//! Links `cloudlet-shim` as a position-dependent executable (`-no-pie`): in a PIE the dynamic
//! loader would dirty every page of `.data.rel.ro` privately in each of the shims (one per service).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
