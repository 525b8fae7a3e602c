//! The `hioload-ws` binary: parses flags, starts the transport with the chosen service, waits for
//! a signal, shuts down gracefully and reports what it did.

mod admin;
mod bench;
mod cli;
#[cfg(feature = "dpdk")]
mod dpdk;
mod live_config;
mod logging;
mod signals;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use hioload_ws::echo::Echo;
use hioload_ws::live::LiveWs;
use hioload_ws::middleware::{Counters, Logging, Metrics, Recover};
use hioload_ws::stack::kernel::{AcceptMode, KernelConfig, Server};
use hioload_ws::stack::live::LiveLimits;
use hioload_ws::stack::WorkerReport;
use hioload_ws::tcp_echo::TcpEchoService;
use hioload_ws::ws::Limits;
use hioload_ws::ws_metrics::WsMeter;
use hioload_ws::{WsConfig, WsService};

use cli::{AcceptModeArg, Cli, CommonArgs, DpdkArgs, Mode};

fn main() -> ExitCode {
    let args = match live_config::expand_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hioload-ws: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line; details were logged where they happened.
            eprintln!("hioload-ws: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.mode {
        Mode::Echo(args) => {
            let common = &args.common;
            logging::init(common.log_level.as_deref(), common.log_format)?;
            let transport = choose_transport(common, &args.dpdk)?;
            let max_frame = args.ws.max_frame.unwrap_or(args.ws.max_message);
            if max_frame > args.ws.max_message {
                return Err(format!(
                    "--max-frame ({max_frame}) is larger than --max-message ({}); a frame can never exceed its message",
                    args.ws.max_message
                ));
            }
            let ws = WsConfig {
                limits: Limits {
                    max_frame,
                    max_message: args.ws.max_message,
                },
                max_header_bytes: usize::try_from(args.ws.max_header_size)
                    .map_err(|_| "--max-header-size is too large")?,
                handshake_timeout: args.ws.handshake_timeout,
                idle_timeout: common.idle_timeout.0,
                ping_interval: args.ws.ping_interval.0,
                close_timeout: args.ws.close_timeout,
            };
            match transport {
                Transport::Kernel => {
                    let kernel = kernel_config(
                        args.listen.unwrap_or(([127, 0, 0, 1], 8080).into()),
                        common,
                    )?;
                    let live = Live::new(common, Some(&ws), kernel.max_connections as u64);
                    let kernel = KernelConfig {
                        live: Some(Arc::clone(&live.limits)),
                        ..kernel
                    };
                    let live_ws = live.ws.clone();
                    let figures: Arc<Vec<EchoFigures>> = Arc::new(
                        (0..kernel.workers)
                            .map(|_| EchoFigures::default())
                            .collect(),
                    );
                    let per_worker = Arc::clone(&figures);
                    let server = Server::start(kernel.clone(), move |i| {
                        echo_service(&per_worker[i], &ws, live_ws.as_ref())
                    })
                    .map_err(|e| e.to_string())?;
                    let nudge = server.nudge();
                    live.control.set_nudge(move || nudge.nudge());
                    start_admin(common, server.meters(), &figures, false, &live)?;
                    announce("echo", "ws", &server, &kernel);
                    let reports = serve(server, common)?;
                    summarize(&reports, &echo_summary(&figures));
                }
                #[cfg(feature = "dpdk")]
                Transport::Dpdk => {
                    let figures = std::sync::OnceLock::<Vec<EchoFigures>>::new();
                    let live = Live::new(
                        common,
                        Some(&ws),
                        common.max_connections.unwrap_or(1_000_000) as u64,
                    );
                    dpdk::serve(
                        "echo",
                        "ws",
                        args.listen,
                        8080,
                        common,
                        &args.dpdk,
                        Arc::clone(&live.limits),
                        |meters| {
                            let per_worker: Vec<_> =
                                (0..meters.len()).map(|_| EchoFigures::default()).collect();
                            start_admin(common, meters, &per_worker, true, &live)?;
                            let _ = figures.set(per_worker);
                            Ok(())
                        },
                        |i| {
                            echo_service(
                                &figures
                                    .get()
                                    .and_then(|f| f.get(i).cloned())
                                    .unwrap_or_default(),
                                &ws,
                                live.ws.as_ref(),
                            )
                        },
                    )?;
                    tracing::info!(
                        "{}",
                        echo_summary(figures.get().map(Vec::as_slice).unwrap_or_default())
                    );
                }
            }
        }
        Mode::TcpEcho(args) => {
            let common = &args.common;
            logging::init(common.log_level.as_deref(), common.log_format)?;
            let idle = common.idle_timeout.0;
            match choose_transport(common, &args.dpdk)? {
                Transport::Kernel => {
                    let kernel = kernel_config(
                        args.listen.unwrap_or(([127, 0, 0, 1], 9002).into()),
                        common,
                    )?;
                    let live = Live::new(common, None, kernel.max_connections as u64);
                    let kernel = KernelConfig {
                        live: Some(Arc::clone(&live.limits)),
                        ..kernel
                    };
                    let server = Server::start(kernel.clone(), move |_| TcpEchoService::new(idle))
                        .map_err(|e| e.to_string())?;
                    let nudge = server.nudge();
                    live.control.set_nudge(move || nudge.nudge());
                    start_admin(common, server.meters(), &[], false, &live)?;
                    announce("tcp-echo", "tcp", &server, &kernel);
                    let reports = serve(server, common)?;
                    summarize(&reports, "");
                }
                #[cfg(feature = "dpdk")]
                Transport::Dpdk => {
                    let live = Live::new(
                        common,
                        None,
                        common.max_connections.unwrap_or(1_000_000) as u64,
                    );
                    dpdk::serve(
                        "tcp-echo",
                        "tcp",
                        args.listen,
                        9002,
                        common,
                        &args.dpdk,
                        Arc::clone(&live.limits),
                        |meters| start_admin(common, meters, &[], true, &live),
                        |_| TcpEchoService::new(idle),
                    )?;
                }
            }
        }
        Mode::Bench(kind) => {
            logging::init(Some("warn"), cli::LogFormat::Text)?;
            bench::command(kind)?;
        }
    }
    Ok(())
}

/// Start the admin endpoint unless `--admin off`.
fn start_admin(
    common: &CommonArgs,
    meters: Arc<[hioload_ws::stack::meter::WorkerMeter]>,
    figures: &[EchoFigures],
    dpdk: bool,
    live: &Live,
) -> Result<(), String> {
    live.watch_sighup()?;
    if let Some(addr) = common.admin.0 {
        let bound = admin::start(
            addr,
            admin::Sources {
                meters,
                sessions: figures.iter().map(|f| Arc::clone(&f.sessions)).collect(),
                ws: figures.iter().map(|f| Arc::clone(&f.ws)).collect(),
                dpdk,
                started: std::time::Instant::now(),
                control: Some(Arc::clone(&live.control)),
            },
        )?;
        tracing::info!(
            "admin endpoint on http://{bound} (/, /metrics, /debug/probes, /config, /healthz)"
        );
    }
    Ok(())
}

/// The echo handler chain of one worker.
/// What one echo worker counts for the admin endpoint and the summary line.
#[derive(Default, Clone)]
struct EchoFigures {
    sessions: Arc<Counters>,
    ws: Arc<WsMeter>,
}

fn echo_service(
    figures: &EchoFigures,
    ws: &WsConfig,
    live: Option<&Arc<LiveWs>>,
) -> WsService<Logging<Recover<Metrics<Echo>>>> {
    let service = WsService::new(
        Logging::new(Recover::new(Metrics::new(
            Echo,
            Arc::clone(&figures.sessions),
        ))),
        ws.clone(),
    )
    .with_meter(Arc::clone(&figures.ws));
    match live {
        Some(l) => service.with_live(Arc::clone(l)),
        None => service,
    }
}

/// The settings that change while serving, and who changes them.
struct Live {
    ws: Option<Arc<LiveWs>>,
    limits: Arc<LiveLimits>,
    control: Arc<live_config::Control>,
}

impl Live {
    /// From the flags in force; `ws` for the WebSocket appliance.
    fn new(common: &CommonArgs, ws: Option<&WsConfig>, max_connections: u64) -> Self {
        let live_ws = ws.map(|_| Arc::new(LiveWs::default()));
        let limits = Arc::new(LiveLimits::default());
        let initial = live_config::Settings {
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
        let control = Arc::new(live_config::Control::new(
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
    fn watch_sighup(&self) -> Result<(), String> {
        let control = Arc::clone(&self.control);
        signals::on_hangup(move || match control.reload_file() {
            Ok(_) => tracing::info!(
                settings = %control.to_toml().trim().replace('\n', "; "),
                "SIGHUP: settings reloaded"
            ),
            Err(e) => tracing::warn!("SIGHUP: nothing changed: {e}"),
        })
    }
}

fn echo_summary(figures: &[EchoFigures]) -> String {
    let messages: u64 = figures
        .iter()
        .map(|f| Counters::get(&f.sessions.messages_in))
        .sum();
    let sessions: u64 = figures
        .iter()
        .map(|f| Counters::get(&f.sessions.sessions_opened))
        .sum();
    format!("sessions {sessions}, messages echoed {messages}")
}

/// Which transport serves.
enum Transport {
    Kernel,
    #[cfg(feature = "dpdk")]
    Dpdk,
}

/// DPDK unless `--no-dpdk` (or a build without it); DPDK flags only go with DPDK.
fn choose_transport(common: &CommonArgs, dpdk: &DpdkArgs) -> Result<Transport, String> {
    let given = dpdk.first_given();
    if !cfg!(feature = "dpdk") {
        if let Some(flag) = given {
            return Err(format!(
                "{flag} needs the DPDK transport, which this build does not have (built without the `dpdk` feature); \
                 drop {flag} to run on kernel sockets"
            ));
        }
        if !common.no_dpdk {
            tracing::debug!(
                "built without DPDK: using the kernel-socket transport (--no-dpdk implied)"
            );
        }
        return Ok(Transport::Kernel);
    }
    if common.no_dpdk {
        if let Some(flag) = given {
            return Err(format!(
                "{flag} configures the DPDK transport and cannot be combined with --no-dpdk"
            ));
        }
        return Ok(Transport::Kernel);
    }
    #[cfg(feature = "dpdk")]
    {
        if dpdk.eal_args().is_empty() || dpdk.ip.is_none() {
            return Err("the DPDK transport needs EAL arguments (--eal \"ARGS\", or after --) and --ip ADDR/PREFIX; \
                        add --no-dpdk to use kernel sockets instead"
                .into());
        }
        Ok(Transport::Dpdk)
    }
    #[cfg(not(feature = "dpdk"))]
    unreachable!("handled above")
}

fn kernel_config(
    listen: std::net::SocketAddr,
    common: &CommonArgs,
) -> Result<KernelConfig, String> {
    let cpus = common.cpus.clone().map(|c| c.0).unwrap_or_default();
    let workers = match common.workers {
        Some(n) => usize::from(n),
        None if !cpus.is_empty() => cpus.len(),
        None => std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
    };
    let capacity = hioload_ws::stack::kernel::raise_fd_limit(workers);
    let max_connections = match (common.max_connections, capacity) {
        (Some(0), _) => return Err("--max-connections must be at least 1".into()),
        (Some(n), Some(cap)) if n > cap => {
            tracing::warn!(
                "--max-connections {n} exceeds what the open-file limit allows (about {cap}); \
                 connections beyond that are refused: raise the hard limit (ulimit -Hn, systemd LimitNOFILE=)"
            );
            n
        }
        (Some(n), _) => n,
        (None, Some(cap)) => cap.clamp(1, 10_000_000),
        (None, None) => 100_000,
    };
    let accept_mode = match common.accept_mode {
        Some(AcceptModeArg::Reuseport) if !cfg!(target_os = "linux") => {
            return Err("--accept-mode reuseport is only available on Linux".into())
        }
        Some(AcceptModeArg::Reuseport) => AcceptMode::ReusePort,
        Some(AcceptModeArg::Shared) => AcceptMode::Shared,
        None => AcceptMode::default(),
    };
    Ok(KernelConfig {
        listen,
        workers,
        cpus,
        max_connections,
        backpressure_limit: usize::try_from(common.backpressure_limit)
            .map_err(|_| "--backpressure-limit is too large")?,
        accept_mode,
        busy_poll: common.busy_poll.0.unwrap_or_default(),
        ..KernelConfig::default()
    })
}

fn announce(mode: &str, scheme: &str, server: &Server, cfg: &KernelConfig) {
    let pinning = if cfg.cpus.is_empty() {
        "not pinned".to_string()
    } else {
        format!(
            "pinned to CPUs {}",
            cfg.cpus
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    tracing::info!(
        "hioload-ws {} {mode} listening on {scheme}://{} (transport: kernel sockets, workers: {}, {pinning}, accept: {:?}, max connections: {})",
        hioload_ws::build_info(),
        server.local_addr(),
        cfg.workers,
        cfg.accept_mode,
        cfg.max_connections,
    );
}

fn serve(server: Server, common: &CommonArgs) -> Result<Vec<WorkerReport>, String> {
    let handle = server.shutdown_handle();
    let grace = common.shutdown_timeout;
    signals::watch(move || handle.shutdown(grace), grace)?;
    server.join().map_err(|e| e.to_string())
}

fn summarize(reports: &[WorkerReport], extra: &str) {
    let sum = |f: fn(&WorkerReport) -> u64| reports.iter().map(f).sum::<u64>();
    tracing::info!(
        "stopped: connections accepted {}, refused {}, closed {}, errors {}, abandoned at deadline {}{}{extra}",
        sum(|r| r.accepted),
        sum(|r| r.rejected),
        sum(|r| r.closed),
        sum(|r| r.errors),
        sum(|r| r.abandoned),
        if extra.is_empty() { "" } else { "; " },
    );
}
