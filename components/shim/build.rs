//! Links `cloudlet-shim` as a position-dependent executable (`-no-pie`): in a PIE the dynamic
//! loader would dirty every page of `.data.rel.ro` privately in each of the shims (one per service).
//!
//! `hot-text.order` is the order its release link places functions in (`cmd/cloudlet/build.rs`
//! passes it to lld; `scripts/hot-text.sh` makes it): watched here so that a new list relinks.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=hot-text.order");
}
