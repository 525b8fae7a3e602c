//! SIGINT/SIGTERM: the first starts a graceful shutdown, a second one exits at once.

use std::time::Duration;

/// Watch for termination signals on a background thread; the first runs `shutdown`.
#[cfg(unix)]
pub fn watch(shutdown: impl FnOnce() + Send + 'static, grace: Duration) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("hioload-signals".into())
        .spawn(move || {
            let mut forever = signals.forever();
            if let Some(sig) = forever.next() {
                tracing::info!(signal = sig, grace = ?grace, "shutting down: no new connections, closing sessions with 1001");
                shutdown();
            }
            if let Some(sig) = forever.next() {
                tracing::warn!(signal = sig, "second signal: exiting without waiting for sessions");
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("cannot start signal thread: {e}"))?;
    Ok(())
}

/// Without Unix signals (Windows), Ctrl-C ends the process without a graceful shutdown.
#[cfg(not(unix))]
pub fn watch(_shutdown: impl FnOnce() + Send + 'static, _grace: Duration) -> Result<(), String> {
    tracing::warn!("graceful shutdown on signals is only implemented on Unix");
    Ok(())
}

/// Run `reload` on every SIGHUP, on a background thread.
#[cfg(unix)]
pub fn on_hangup(reload: impl Fn() + Send + 'static) -> Result<(), String> {
    use signal_hook::consts::SIGHUP;
    use signal_hook::iterator::Signals;

    let mut signals =
        Signals::new([SIGHUP]).map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    std::thread::Builder::new()
        .name("hioload-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                reload();
            }
        })
        .map_err(|e| format!("cannot start the SIGHUP thread: {e}"))?;
    Ok(())
}

/// Without Unix signals there is no SIGHUP: `PUT /config` changes settings instead.
#[cfg(not(unix))]
pub fn on_hangup(_reload: impl Fn() + Send + 'static) -> Result<(), String> {
    Ok(())
}
