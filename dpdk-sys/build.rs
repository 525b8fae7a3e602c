//! Placeholder: the bindings (pkg-config, bindgen, C shim) arrive with the DPDK data-plane issue.
//! Building this crate before then stops with a message instead of producing empty bindings.

fn main() {
    eprintln!(
        "error: hioload-dpdk-sys has no bindings yet (the DPDK data-plane issue adds them); \
         build hioload-ws without `--features dpdk`"
    );
    std::process::exit(1);
}
