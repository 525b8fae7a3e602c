//! Finds libdpdk with pkg-config, generates bindings with bindgen over `csrc/wrapper.h`, and
//! compiles `csrc/shim.c`, which turns DPDK's `static inline` fast-path functions into symbols.
//!
//! Linking is dynamic against the distribution's shared libraries; poll-mode drivers are then
//! loaded by EAL as plugins from the directory DPDK was built with (Debian:
//! `/usr/lib/<triplet>/dpdk/pmds-<abi>`), or from `-d` EAL arguments. A static link would need
//! the driver libraries wrapped in `--whole-archive`, or their constructors never register the
//! drivers: see docs/OPERATIONS.md.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/wrapper.h");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "\nerror: DPDK (libdpdk >= 22.11) was not found by pkg-config: {e}\n\
                 On Debian/Ubuntu install it with:  apt-get install libdpdk-dev pkg-config\n\
                 For a DPDK built from source, set PKG_CONFIG_PATH to its lib/<triplet>/pkgconfig.\n\
                 Or build without `--features dpdk` and use the kernel-socket transport.\n"
            );
            std::process::exit(1);
        }
    };
    println!("cargo:version={}", dpdk.version);
    println!("cargo:rustc-env=HIOLOAD_DPDK_VERSION={}", dpdk.version);

    // The exact compiler flags DPDK asks for (include paths, `-include rte_config.h`, -march).
    let cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let cflags = split_flags(&cflags);

    let mut shim = cc::Build::new();
    shim.file("csrc/shim.c")
        .include("csrc")
        .warnings(true)
        .opt_level(3);
    for f in &cflags {
        shim.flag(f);
    }
    shim.compile("hioload_dpdk_shim");

    let result = std::panic::catch_unwind(|| {
        bindgen::Builder::default()
            .header("csrc/wrapper.h")
            .clang_args(cflags.iter().map(String::as_str))
            .clang_arg("-Icsrc")
            .allowlist_function("rte_eal_init|rte_eal_cleanup|rte_eal_process_type|rte_strerror|rte_version")
            .allowlist_function("rte_eth_.*|rte_pktmbuf_pool_create|rte_mempool_free|rte_socket_id")
            .allowlist_function("rte_lcore_count|rte_get_main_lcore|rte_get_next_lcore|rte_lcore_to_socket_id")
            .allowlist_function("rte_eal_remote_launch|rte_eal_wait_lcore|rte_eal_mp_wait_lcore|rte_lcore_is_enabled")
            .allowlist_function("hl_.*")
            .allowlist_var("hl_.*")
            .allowlist_var("RTE_ETH_.*|RTE_MBUF_DEFAULT_.*|RTE_MAX_.*|RTE_PKTMBUF_HEADROOM|SOCKET_ID_ANY")
            .allowlist_var("RTE_ETHER_.*|RTE_PROC_.*")
            // Opaque where only pointers cross the boundary: no layout needed on the Rust side.
            .opaque_type("rte_mbuf|rte_mempool")
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .generate()
    });
    let bindings = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("\nerror: bindgen could not generate DPDK bindings: {e}\n");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!(
                "\nerror: bindgen needs libclang: apt-get install clang libclang-dev \
                 (or set LIBCLANG_PATH to the directory holding libclang.so)\n"
            );
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}

/// Split a pkg-config flag string on whitespace, keeping `-include FILE` together.
fn split_flags(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = s.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(file) = words.next() {
                out.push(w.to_string());
                out.push(file.to_string());
            }
        } else {
            out.push(w.to_string());
        }
    }
    out
}
