//! DPDK errors, with DPDK's own description of the error code.

use std::ffi::CStr;

use hioload_dpdk_sys as sys;

/// A DPDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// `rte_eal_init` failed.
    #[error("DPDK EAL initialisation failed: {reason}{hint}")]
    Eal {
        /// DPDK's description of the error.
        reason: String,
        /// What to try, when the cause is a common one.
        hint: &'static str,
    },
    /// EAL can be initialised once per process.
    #[error("DPDK EAL is already initialised in this process")]
    EalTwice,
    /// An argument contains a NUL byte.
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadArgument(String),
    /// Another DPDK call failed.
    #[error("{call} failed: {reason}")]
    Call {
        /// What was called, with its subject (e.g. "rte_eth_dev_configure(port 0)").
        call: String,
        /// DPDK's description of the error code.
        reason: String,
    },
    /// No such port.
    #[error("no DPDK port {0}: {1} ports are available (check --eal: -a PCI address, or --vdev)")]
    NoPort(u16, u16),
}

/// DPDK's description of an error code (negative codes are accepted too).
pub fn describe(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string
    // that stays valid at least until the next call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(sys::rte_strerror(code.abs())) }
        .to_string_lossy()
        .into_owned()
}

/// The error of the last failed DPDK call on this thread (`rte_errno`).
pub fn last_errno() -> i32 {
    // SAFETY: reads the per-lcore rte_errno variable through the shim; no arguments.
    unsafe { sys::hl_rte_errno() }
}

/// Turn a negative DPDK return code into an error naming the call.
pub fn check(ret: i32, call: impl FnOnce() -> String) -> Result<i32, DpdkError> {
    if ret < 0 {
        Err(DpdkError::Call {
            call: call(),
            reason: describe(ret),
        })
    } else {
        Ok(ret)
    }
}
