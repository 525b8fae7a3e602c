//! The Environment Abstraction Layer: initialised once per process from EAL arguments, cleaned
//! up when the [`Eal`] handle is dropped.

use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

use hioload_dpdk_sys as sys;

use super::error::{describe, last_errno, DpdkError};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Proof that EAL is initialised; cleans it up on drop. Ports and pools must be dropped first.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise EAL with `args` (without a program name: it is added). Fails if EAL was
    /// already initialised in this process.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Self, DpdkError> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalTwice);
        }
        let mut owned =
            vec![CString::new("hioload-ws")
                .map_err(|_| DpdkError::BadArgument("hioload-ws".into()))?];
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| DpdkError::BadArgument(a.to_string()))?);
        }
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the call (EAL may keep
        // pointers into them, so `owned` is leaked below on success); EAL is not yet initialised
        // in this process (checked above).
        let ret = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if ret < 0 {
            INITIALISED.store(false, Ordering::SeqCst);
            let errno = last_errno();
            return Err(DpdkError::Eal {
                reason: describe(errno),
                hint: hint(errno),
            });
        }
        std::mem::forget(owned);
        Ok(Self { _private: () })
    }

    /// Number of lcores EAL was given.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised (self exists).
        unsafe { sys::rte_lcore_count() }
    }

    /// The DPDK version string, e.g. "DPDK 22.11.11".
    pub fn version(&self) -> String {
        // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(sys::rte_version()) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL is initialised; the caller drops ports and pools before the Eal handle.
        let ret = unsafe { sys::rte_eal_cleanup() };
        if ret < 0 {
            tracing::warn!(error = %describe(ret), "rte_eal_cleanup failed");
        }
    }
}

/// A hint for the EAL failures people hit most.
fn hint(errno: i32) -> &'static str {
    match errno {
        12 => {
            "; no hugepages? reserve some (scripts/setup-hugepages.sh, /proc/sys/vm/nr_hugepages) or add --no-huge to --eal"
        }
        13 => "; permission denied: run as root (or with CAP_SYS_ADMIN, CAP_NET_ADMIN and access to hugetlbfs and VFIO)",
        19 => "; no device: check the PCI address (-a) or the --vdev argument",
        _ => "; see the EAL messages above",
    }
}
