//! Raw FFI bindings to DPDK.
//!
//! Empty for now: the bindings (pkg-config discovery, bindgen over a wrapper header, and a C shim
//! exporting DPDK's `static inline` fast-path functions) arrive with the DPDK data-plane issue.
//! Nothing depends on this crate unless the `dpdk` feature is enabled, and enabling that feature
//! stops the build with a message until then.
#![no_std]
