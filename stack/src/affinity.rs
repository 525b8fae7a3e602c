//! Pinning worker threads to CPUs.

use crate::error::TransportError;

/// Check that every CPU in `cpus` is one this process may run on.
pub fn validate(cpus: &[usize]) -> Result<(), TransportError> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if available.is_empty() {
        // The platform cannot tell (or cannot pin): pinning becomes a logged no-op.
        return Ok(());
    }
    match cpus.iter().find(|c| !available.contains(c)) {
        Some(&cpu) => Err(TransportError::CpuUnavailable {
            cpu,
            available: available
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }),
        None => Ok(()),
    }
}

/// Pin the calling thread to `cpu`; returns whether the OS accepted it.
pub fn pin_current(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}
