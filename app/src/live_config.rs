//! Settings that change while serving. `GET /config` reads them; `PUT /config` (a TOML document
//! with any of [`KEYS`]) and SIGHUP (the same keys, re-read from `--config FILE`) change them.
//! Every value is checked first and nothing is applied unless all are valid; then the log filter
//! is swapped and the workers pick the rest up within one loop iteration.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hioload_ws::live::{LiveWs, WsSettings};
use hioload_ws::stack::live::{Limits as TransportLimits, LiveLimits};
use hioload_ws::ws::Limits;

use crate::cli::{parse_optional_duration, parse_size};
use crate::logging;

/// The settings that change while serving, and who changes them.
pub struct Live {
    /// The WebSocket workers' settings (`None` for modes without WebSocket).
    pub ws: Option<Arc<LiveWs>>,
    /// The transport's limits.
    pub limits: Arc<LiveLimits>,
    /// `/config`, SIGHUP.
    pub control: Arc<Control>,
}

impl Live {
    /// From the flags in force; `ws` for a WebSocket mode.
    pub fn new(
        common: &crate::cli::CommonArgs,
        ws: Option<&hioload_ws::WsConfig>,
        max_connections: u64,
    ) -> Self {
        let live_ws = ws.map(|_| Arc::new(LiveWs::default()));
        let limits = Arc::new(LiveLimits::default());
        let initial = Settings {
            log_level: common
                .log_level
                .clone()
                .or_else(|| {
                    std::env::var("RUST_LOG")
                        .ok()
                        .filter(|v| !v.trim().is_empty())
                })
                .unwrap_or_else(|| "info".into()),
            idle_timeout: ws.and_then(|w| w.idle_timeout),
            ping_interval: ws.and_then(|w| w.ping_interval),
            max_message: ws.map_or(0, |w| w.limits.max_message),
            max_frame: ws.map_or(0, |w| w.limits.max_frame),
            backpressure_limit: common.backpressure_limit,
            max_connections,
        };
        let control = Arc::new(Control::new(
            initial,
            live_ws.clone(),
            Arc::clone(&limits),
            common.config.clone(),
        ));
        Self {
            ws: live_ws,
            limits,
            control,
        }
    }

    /// On every SIGHUP, re-read the run-time keys of `--config FILE` (without one, say so: a
    /// SIGHUP must not end the appliance).
    pub fn watch_sighup(&self) -> Result<(), String> {
        let control = Arc::clone(&self.control);
        crate::signals::on_hangup(move || match control.reload_file() {
            Ok(_) => tracing::info!(
                settings = %control.to_toml().trim().replace('\n', "; "),
                "SIGHUP: settings reloaded"
            ),
            Err(e) => tracing::warn!("SIGHUP: nothing changed: {e}"),
        })
    }
}

/// The keys that can change at run time.
pub const KEYS: [&str; 7] = [
    "log_level",
    "idle_timeout",
    "ping_interval",
    "max_message",
    "max_frame",
    "backpressure_limit",
    "max_connections",
];

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Log filter.
    pub log_level: String,
    /// Idle timeout (`None`: off).
    pub idle_timeout: Option<Duration>,
    /// Ping interval (`None`: off).
    pub ping_interval: Option<Duration>,
    /// Largest message.
    pub max_message: u64,
    /// Largest frame.
    pub max_frame: u64,
    /// Unsent output per connection before its input waits.
    pub backpressure_limit: u64,
    /// Connections at most.
    pub max_connections: u64,
}

/// Where changes go.
pub struct Control {
    current: Mutex<Settings>,
    /// The WebSocket workers' settings (`None` for `tcp-echo`: no WebSocket keys there).
    ws: Option<Arc<LiveWs>>,
    limits: Arc<LiveLimits>,
    /// `--config FILE`, re-read on SIGHUP.
    file: Option<PathBuf>,
    /// Wakes workers that may be asleep (kernel sockets), so a change takes effect at once.
    nudge: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

fn show(d: Option<Duration>) -> String {
    d.map_or("off".to_string(), |d| {
        humantime::format_duration(d).to_string()
    })
}

impl Control {
    /// Control over `ws` and `limits`, which start at `initial`.
    pub fn new(
        initial: Settings,
        ws: Option<Arc<LiveWs>>,
        limits: Arc<LiveLimits>,
        file: Option<PathBuf>,
    ) -> Self {
        Self {
            current: Mutex::new(initial),
            ws,
            limits,
            file,
            nudge: OnceLock::new(),
        }
    }

    /// Call `nudge` after every change (to wake workers sleeping in their poller).
    pub fn set_nudge(&self, nudge: impl Fn() + Send + Sync + 'static) {
        let _ = self.nudge.set(Box::new(nudge));
    }

    /// The settings in force.
    pub fn get(&self) -> Settings {
        self.current
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The settings in force as TOML (what `PUT /config` and the config file take).
    pub fn to_toml(&self) -> String {
        let s = self.get();
        let mut t = format!(
            "log_level = \"{}\"\nbackpressure_limit = {}\nmax_connections = {}\n",
            s.log_level.replace('"', "'"),
            s.backpressure_limit,
            s.max_connections
        );
        if self.ws.is_some() {
            t.push_str(&format!(
                "idle_timeout = \"{}\"\nping_interval = \"{}\"\nmax_message = {}\nmax_frame = {}\n",
                show(s.idle_timeout),
                show(s.ping_interval),
                s.max_message,
                s.max_frame
            ));
        }
        t
    }

    /// Check and apply the keys of `text` (TOML). With `only_live`, other keys are ignored (a
    /// config file also holds settings that need a restart); without, they are an error.
    pub fn apply_toml(&self, text: &str, only_live: bool) -> Result<Settings, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("not TOML: {e}"))?;
        let mut next = self.get();
        let mut filter = None;
        for (key, value) in &table {
            if !KEYS.contains(&key.as_str()) {
                if only_live {
                    continue;
                }
                return Err(format!(
                    "{key}: not a setting that changes at run time (those are: {})",
                    KEYS.join(", ")
                ));
            }
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                other => {
                    return Err(format!(
                        "{key}: expected a string or a number, got a {}",
                        other.type_str()
                    ))
                }
            };
            let ws_key = matches!(
                key.as_str(),
                "idle_timeout" | "ping_interval" | "max_message" | "max_frame"
            );
            if ws_key && self.ws.is_none() {
                return Err(format!("{key}: only the WebSocket appliance (echo) has it"));
            }
            let at = |e: String| format!("{key}: {e}");
            match key.as_str() {
                "log_level" => {
                    filter = Some(logging::parse_filter(&text)?);
                    next.log_level = text;
                }
                "idle_timeout" => next.idle_timeout = parse_optional_duration(&text).map_err(at)?.0,
                "ping_interval" => {
                    next.ping_interval = parse_optional_duration(&text).map_err(at)?.0
                }
                "max_message" => next.max_message = parse_size(&text).map_err(at)?,
                "max_frame" => next.max_frame = parse_size(&text).map_err(at)?,
                "backpressure_limit" => next.backpressure_limit = parse_size(&text).map_err(at)?,
                "max_connections" => {
                    next.max_connections = text
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            at(format!("{text:?} is not a whole number of at least 1"))
                        })?;
                }
                _ => unreachable!("checked against KEYS above"),
            }
        }
        if next.max_frame > next.max_message {
            return Err(format!(
                "max_frame ({}) is larger than max_message ({}); a frame can never exceed its message",
                next.max_frame, next.max_message
            ));
        }
        if next.max_message == 0 || next.backpressure_limit == 0 {
            return Err("max_message, max_frame and backpressure_limit must be above 0".into());
        }
        // Everything is valid: apply it all.
        if let Some(f) = filter {
            logging::set_filter(f)?;
        }
        if let Some(ws) = &self.ws {
            ws.set(WsSettings {
                idle_timeout: next.idle_timeout,
                ping_interval: next.ping_interval,
                limits: Limits {
                    max_message: next.max_message,
                    max_frame: next.max_frame,
                },
            });
        }
        self.limits.set(TransportLimits {
            backpressure_limit: next.backpressure_limit,
            max_connections: next.max_connections,
        });
        if let Ok(mut c) = self.current.lock() {
            *c = next.clone();
        }
        if let Some(nudge) = self.nudge.get() {
            nudge();
        }
        Ok(next)
    }

    /// SIGHUP: re-read `--config FILE` and apply its run-time keys.
    pub fn reload_file(&self) -> Result<Settings, String> {
        let file = self
            .file
            .as_ref()
            .ok_or("no --config file to reload (SIGHUP ignored)")?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        self.apply_toml(&text, true)
            .map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// Turn `--config FILE` into the flags it stands for, placed right after the subcommand so that
/// flags on the command line (which come later) win. A key is a flag's long name with `_` for
/// `-`; `true` gives a bare flag, `false` leaves it out.
pub fn expand_config_file(
    args: Vec<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, String> {
    let Some(sub) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    if !matches!(sub, "echo" | "tcp-echo" | "broadcast") {
        return Ok(args);
    }
    let mut file = None;
    for (i, a) in args.iter().enumerate().skip(2) {
        match a.to_str() {
            Some("--config") => file = args.get(i + 1).map(PathBuf::from),
            Some(v) if v.starts_with("--config=") => file = Some(PathBuf::from(&v[9..])),
            Some("--") => break,
            _ => {}
        }
    }
    let Some(file) = file else {
        return Ok(args);
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("--config {}: {e}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("--config {}: not TOML: {e}", file.display()))?;
    let mut flags: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &table {
        if key == "config" {
            return Err(format!(
                "--config {}: a config file cannot name another",
                file.display()
            ));
        }
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => flags.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => flags.extend([flag.into(), s.into()]),
            toml::Value::Integer(i) => flags.extend([flag.into(), i.to_string().into()]),
            other => {
                return Err(format!(
                    "--config {}: {key}: expected a string, a number or true/false, got a {}",
                    file.display(),
                    other.type_str()
                ))
            }
        }
    }
    let mut out = args[..2].to_vec();
    out.extend(flags);
    out.extend(args[2..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> (Control, Arc<LiveWs>, Arc<LiveLimits>) {
        let initial = Settings {
            log_level: "info".into(),
            idle_timeout: Some(Duration::from_secs(120)),
            ping_interval: None,
            max_message: 1 << 20,
            max_frame: 1 << 20,
            backpressure_limit: 1 << 20,
            max_connections: 100,
        };
        let ws = Arc::new(LiveWs::default());
        let limits = Arc::new(LiveLimits::default());
        (
            Control::new(initial, Some(Arc::clone(&ws)), Arc::clone(&limits), None),
            ws,
            limits,
        )
    }

    #[test]
    fn a_valid_change_is_applied_everywhere() {
        let (c, ws, limits) = control();
        let (mut seen_ws, mut seen_limits) = (0, 0);
        let s = c
            .apply_toml("idle_timeout = \"30s\"\nmax_connections = 7\n", false)
            .unwrap();
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(30)));
        let w = ws.changed(&mut seen_ws).expect("published");
        assert_eq!(w.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            w.limits.max_message,
            1 << 20,
            "untouched keys keep their values"
        );
        assert_eq!(
            limits.changed(&mut seen_limits).map(|l| l.max_connections),
            Some(7)
        );
        assert!(c.to_toml().contains("idle_timeout = \"30s\""));
    }

    #[test]
    fn nothing_is_half_applied() {
        let (c, ws, _) = control();
        let before = c.get();
        for (doc, why) in [
            ("idle_timeout = \"30s\"\nmax_frame = \"2MiB\"", "max_frame"),
            (
                "idle_timeout = \"30s\"\nmax_connections = 0",
                "max_connections",
            ),
            ("idle_timeout = \"soon\"", "idle_timeout"),
            ("workers = 3", "not a setting that changes"),
            ("idle_timeout = true", "expected a string"),
            ("this is not toml", "not TOML"),
        ] {
            let e = c.apply_toml(doc, false).unwrap_err();
            assert!(e.contains(why), "{doc}: {e}");
            assert_eq!(c.get(), before, "{doc}: nothing changed");
        }
        assert_eq!(ws.changed(&mut 0), None, "nothing was published");
    }

    #[test]
    fn a_config_file_may_hold_restart_only_keys() {
        let (c, _, _) = control();
        let s = c
            .apply_toml(
                "workers = 3\nlisten = \"0.0.0.0:80\"\nping_interval = \"10s\"",
                true,
            )
            .unwrap();
        assert_eq!(s.ping_interval, Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_config_file_becomes_flags_before_the_command_lines_own() {
        let path = std::env::temp_dir().join(format!("hioload-cfg-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "workers = 3\nidle_timeout = \"30s\"\nno_dpdk = true\nbusy_poll = \"0\"\n",
        )
        .unwrap();
        let args: Vec<std::ffi::OsString> = [
            "hioload-ws",
            "echo",
            "--config",
            path.to_str().unwrap(),
            "--workers",
            "1",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let out: Vec<String> = expand_config_file(args)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let file_workers = out.iter().position(|a| a == "3").unwrap();
        let flag_workers = out.iter().rposition(|a| a == "1").unwrap();
        assert!(
            file_workers < flag_workers,
            "the command line comes last: {out:?}"
        );
        assert!(
            out.contains(&"--no-dpdk".to_string()) && out.contains(&"--idle-timeout".to_string())
        );
        std::fs::write(&path, "workers = [1, 2]").unwrap();
        let args: Vec<std::ffi::OsString> =
            ["hioload-ws", "echo", "--config", path.to_str().unwrap()]
                .iter()
                .map(Into::into)
                .collect();
        assert!(expand_config_file(args).unwrap_err().contains("workers"));
        let _ = std::fs::remove_file(&path);
    }
}
