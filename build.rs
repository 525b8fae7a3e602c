//! Records build information for `hioload-ws --version` and the startup line, and refuses the
//! `dpdk` feature until the DPDK data plane exists.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HIOLOAD_GIT_REV={rev}");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=HIOLOAD_PROFILE={profile}");

    if std::env::var_os("CARGO_FEATURE_DPDK").is_some() {
        eprintln!(
            "error: the `dpdk` feature of the appliance is not implemented yet: its building blocks \
             (dpdk-sys bindings, EAL/mempool/port/mbuf wrappers, ARP and the smoltcp device) exist \
             and are tested with `cargo test -p hioload-stack --features dpdk`, but the DPDK \
             transport that serves connections is still in progress.\n\
             Build without `--features dpdk`; the kernel-socket transport (`--no-dpdk`) is available."
        );
        std::process::exit(1);
    }
}
