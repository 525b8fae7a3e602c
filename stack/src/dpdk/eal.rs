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

/// The lcores EAL was given: the main lcore first, then the others in order.
pub fn lcores(_eal: &Eal) -> Vec<u32> {
    // SAFETY: EAL is initialised (we hold a reference); these only read EAL's lcore table.
    unsafe {
        let main = sys::rte_get_main_lcore();
        let mut all = vec![main];
        let mut i = sys::rte_get_next_lcore(u32::MAX, 1, 0);
        while i < sys::RTE_MAX_LCORE {
            all.push(i);
            i = sys::rte_get_next_lcore(i, 1, 0);
        }
        all
    }
}

/// NUMA socket of an lcore.
pub fn lcore_socket(_eal: &Eal, lcore: u32) -> u32 {
    // SAFETY: EAL is initialised; any lcore id is accepted (unknown ones give socket 0).
    unsafe { sys::rte_lcore_to_socket_id(lcore) }
}

/// What one lcore runs: `job(worker_index)`.
struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    index: usize,
}

unsafe extern "C" fn trampoline(arg: *mut std::os::raw::c_void) -> std::os::raw::c_int {
    // SAFETY: `arg` is the `Job` that `run_on_lcores` passed for this lcore; it stays alive until
    // that function has waited for this lcore to return.
    let job = unsafe { &*(arg as *const Job<'_>) };
    // A panic must not unwind into C.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(job.index))) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

impl Eal {
    /// Run `job(i)` for worker `i` on each of `lcores` (the first must be the main lcore, which
    /// runs worker 0 on this thread) and return when all have finished. Returns the workers whose
    /// job panicked or could not be launched.
    pub fn run_on_lcores(&self, lcores: &[u32], job: &(dyn Fn(usize) + Sync)) -> Vec<usize> {
        let jobs: Vec<Job<'_>> = (0..lcores.len())
            .map(|index| Job { run: job, index })
            .collect();
        let mut launched = Vec::new();
        let mut failed = Vec::new();
        for (i, &lcore) in lcores.iter().enumerate().skip(1) {
            let arg = &jobs[i] as *const Job<'_> as *mut std::os::raw::c_void;
            // SAFETY: the lcore is a worker lcore of this EAL (from `lcores`), `trampoline` has
            // the expected signature, and `arg` outlives the job: we wait for every launched lcore
            // below, before `jobs` is dropped, whatever happens on this thread.
            if unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) } == 0 {
                launched.push((i, lcore));
            } else {
                tracing::error!(lcore, "rte_eal_remote_launch failed");
                failed.push(i);
            }
        }
        let main_ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(0))).is_ok();
        if !main_ok {
            failed.push(0);
        }
        for (i, lcore) in launched {
            // SAFETY: waits for a worker lcore we launched; returns its job's return value.
            if unsafe { sys::rte_eal_wait_lcore(lcore) } != 0 {
                failed.push(i);
            }
        }
        failed
    }
}
