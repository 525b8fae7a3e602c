//! Logging setup: `tracing` to standard error, text or JSON.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Install the global subscriber. `--log-level` wins over `RUST_LOG`; the default is `info`.
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("invalid --log-level {l:?}: {e}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => {
                EnvFilter::try_new(&v).map_err(|e| format!("invalid RUST_LOG {v:?}: {e}"))?
            }
            _ => EnvFilter::new("info"),
        },
    };
    // The filter is reloadable (log level changes through the admin endpoint and SIGHUP); the
    // format must be chosen before the reload layer wraps the subscriber.
    let result = match format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            remember(move |f| handle.reload(f).map_err(|e| e.to_string()));
            builder.try_init()
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            remember(move |f| handle.reload(f).map_err(|e| e.to_string()));
            builder.try_init()
        }
    };
    result.map_err(|e| format!("cannot install logger: {e}"))?;
    // A panic anywhere is logged like everything else (the Recover middleware then contains it).
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        tracing::error!(%location, "panic: {payload}");
    }));
    Ok(())
}

type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static RELOAD: OnceLock<Reload> = OnceLock::new();

fn remember(reload: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static) {
    let _ = RELOAD.set(Box::new(reload));
}

/// Check a log filter without applying it.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("log_level {filter:?}: {e}"))
}

/// Replace the log filter of the running process.
pub fn set_filter(filter: EnvFilter) -> Result<(), String> {
    match RELOAD.get() {
        Some(reload) => reload(filter),
        None => Err("logging is not initialised".into()),
    }
}
