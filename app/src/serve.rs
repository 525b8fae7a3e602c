//! Serving a mode: the transport chosen from the flags, the startup line, the admin endpoint,
//! run-time settings, signals, the graceful stop and the summary, once for every mode.

use std::net::SocketAddr;
use std::sync::Arc;

use hioload_ws::stack::kernel::{AcceptMode, KernelConfig, Server};
use hioload_ws::stack::{Service, WorkerReport};

use crate::admin::start_for as start_admin;
use crate::cli::{AcceptModeArg, CommonArgs, DpdkArgs};
use crate::live_config::Live;
use crate::modes::Mode;
use crate::signals;

/// Serve `mode` until a signal, on DPDK or kernel sockets as the flags say.
pub fn serve<M: Mode>(
    mode: M,
    listen: Option<SocketAddr>,
    common: &CommonArgs,
    dpdk: &DpdkArgs,
) -> Result<(), String> {
    match choose_transport(common, dpdk)? {
        Transport::Kernel => serve_kernel(
            mode,
            listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], M::DEFAULT_PORT))),
            common,
        ),
        #[cfg(feature = "dpdk")]
        Transport::Dpdk => crate::dpdk::serve(mode, listen, common, dpdk),
    }
}

fn serve_kernel<M: Mode>(
    mut mode: M,
    listen: SocketAddr,
    common: &CommonArgs,
) -> Result<(), String> {
    let kernel = kernel_config(listen, common)?;
    mode.prepare(kernel.workers);
    let live = Live::new(common, mode.ws(), kernel.max_connections as u64);
    let kernel = KernelConfig {
        live: Some(Arc::clone(&live.limits)),
        ..kernel
    };
    let mode = Arc::new(mode);
    let per_worker = Arc::clone(&mode);
    let live_ws = live.ws.clone();
    let server = Server::start(kernel.clone(), move |i| {
        per_worker.service(i, live_ws.as_ref())
    })
    .map_err(|e| e.to_string())?;
    let nudge = server.nudge();
    live.control.set_nudge(move || nudge.nudge());
    mode.start_background(server.postboxes())?;
    let api = mode.api(server.postboxes());
    start_admin(common, server.meters(), mode.figures(), api, false, &live)?;
    announce::<M>(&server, &kernel);
    let handle = server.shutdown_handle();
    let grace = common.shutdown_timeout;
    signals::watch(move || handle.shutdown(grace), grace)?;
    let reports = server.join().map_err(|e| e.to_string())?;
    mode.stop_background();
    summarize(&reports, &mode.summary());
    Ok(())
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

fn kernel_config(listen: SocketAddr, common: &CommonArgs) -> Result<KernelConfig, String> {
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
        slow_consumer: common.slow_consumer(),
        mailbox_capacity: common.mailbox_capacity as usize,
        ..KernelConfig::default()
    })
}

fn announce<M: Mode>(server: &Server<<M::Service as Service>::Message>, cfg: &KernelConfig) {
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
        "hioload-ws {} {} listening on {}://{} (transport: kernel sockets, workers: {}, {pinning}, accept: {:?}, max connections: {})",
        hioload_ws::build_info(),
        M::NAME,
        M::SCHEME,
        server.local_addr(),
        cfg.workers,
        cfg.accept_mode,
        cfg.max_connections,
    );
}

fn summarize(reports: &[WorkerReport], extra: &str) {
    let sum = |f: fn(&WorkerReport) -> u64| WorkerReport::total(reports, f);
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
