//! Records build information for `hioload-ws --version` and the startup line. (With the `dpdk`
//! feature, a missing libdpdk is reported by `dpdk-sys`'s build script, naming the package.)

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
}
