//! Serving on the DPDK transport: flags to configuration, startup line, signals, summary.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hioload_ws::stack::bypass::{DpdkConfig, DpdkTransport};
use hioload_ws::stack::net::engine::EngineConfig;
use hioload_ws::stack::net::parse_cidr;

use crate::admin::start_for as start_admin;
use crate::cli::{CommonArgs, DpdkArgs, PollMode};
use crate::live_config::Live;
use crate::modes::Mode;
use crate::signals;

/// Serve `mode` on every DPDK worker until a signal, then shut down gracefully.
pub fn serve<M: Mode>(
    mut mode: M,
    listen: Option<SocketAddr>,
    common: &CommonArgs,
    args: &DpdkArgs,
) -> Result<(), String> {
    let (ip, prefix) =
        parse_cidr(args.ip.as_deref().unwrap_or_default()).map_err(|e| format!("--ip: {e}"))?;
    let listen = listen.unwrap_or(SocketAddr::from((ip, M::DEFAULT_PORT)));
    match listen {
        SocketAddr::V4(a) if *a.ip() == ip || *a.ip() == Ipv4Addr::UNSPECIFIED => {}
        other => {
            return Err(format!(
                "--listen {other}: on DPDK the address must be the --ip address ({ip}) or 0.0.0.0"
            ))
        }
    }
    let size = |v: Option<u64>, default: usize, flag: &str| -> Result<usize, String> {
        match v {
            None => Ok(default),
            Some(n) if (1024..=64 << 20).contains(&n) => Ok(n as usize),
            Some(n) => Err(format!("{flag} {n}: must be between 1KiB and 64MiB")),
        }
    };
    let max_connections = common.max_connections.unwrap_or(1_000_000).max(1);
    let live = Live::new(common, mode.ws(), max_connections as u64);
    let cfg = DpdkConfig {
        eal_args: args.eal_args(),
        port: args.port_id.unwrap_or(0),
        gateway: args.gateway,
        engine: EngineConfig {
            worker: 0,
            ip,
            ip_count: 1,
            prefix,
            listen_port: listen.port(),
            tcp_rx_buf: size(args.tcp_rx_buf, 16 << 10, "--tcp-rx-buf")?,
            tcp_tx_buf: size(args.tcp_tx_buf, 16 << 10, "--tcp-tx-buf")?,
            max_half_open: args.max_half_open.unwrap_or(4096).max(1),
            max_connections,
            backpressure_limit: usize::try_from(common.backpressure_limit).unwrap_or(usize::MAX),
            slow_consumer: common.slow_consumer(),
            mtu: usize::from(args.mtu.unwrap_or(1500)),
            tx_checksum_offload: false,
            dial: None,
            ..EngineConfig::default()
        },
        mbufs: args.mbufs.unwrap_or(16383).max(1023),
        mtu: args.mtu,
        busy_poll: args.poll_mode == Some(PollMode::Busy),
        live: Some(Arc::clone(&live.limits)),
        mailbox_capacity: common.mailbox_capacity as usize,
    };
    if args.mtu.is_some_and(|m| m > 2048 - 14) {
        return Err(format!(
            "--mtu {}: frames must fit one mbuf (at most 2034 bytes of IP); jumbo frames are not supported yet",
            args.mtu.unwrap_or_default()
        ));
    }
    let poll = if cfg.busy_poll { "busy" } else { "adaptive" };
    let transport = DpdkTransport::start(cfg.clone()).map_err(|e| e.to_string())?;
    let lcores = transport
        .lcores()
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    mode.prepare(transport.lcores().len());
    let mailboxes = transport.mailboxes();
    mode.start_background(mailboxes.0.clone())?;
    let api = mode.api(mailboxes.0.clone());
    start_admin(common, transport.meters(), mode.figures(), api, true, &live)?;
    tracing::info!(
        "hioload-ws {} {} listening on {}://{ip}:{} (transport: {}, port {} ({}), workers: {} on lcores {lcores}, \
         RSS: {}, checksum offload: {}, poll: {poll}, TCP buffers {} + {} bytes per connection, max connections: {}, mbufs in use {})",
        hioload_ws::build_info(),
        M::NAME,
        M::SCHEME,
        cfg.engine.listen_port,
        transport.version(),
        cfg.port,
        transport.mac(),
        transport.lcores().len(),
        if transport.rss() { "on" } else { "off" },
        if transport.checksum_offload() { "on" } else { "off" },
        cfg.engine.tcp_rx_buf,
        cfg.engine.tcp_tx_buf,
        cfg.engine.max_connections,
        transport.mbufs_in_use(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    signals::watch(
        move || flag.store(true, Ordering::Relaxed),
        common.shutdown_timeout,
    )?;
    let live_ws = live.ws.clone();
    let r = transport.serve_with(
        mailboxes,
        |i| mode.service(i, live_ws.as_ref()),
        |_, _| {},
        &stop,
        common.shutdown_timeout,
    );
    mode.stop_background();
    let per_worker = r
        .workers
        .iter()
        .map(|w| w.accepted.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let p = |f: fn(&hioload_ws::stack::report::PacketReport) -> u64| {
        r.total(|w| w.packets.as_ref().map_or(0, f))
    };
    tracing::info!(
        "stopped: connections accepted {} (per worker {per_worker}), closed {}, abandoned at deadline {}; \
         SYNs dropped {} (half-open cap) + {} (full); packets in {} out {}, missed {}, tx refused {}, \
         tx drops (no mbuf {}, no neighbour {}, no route {}); mbufs in use {}",
        r.total(|w| w.accepted),
        r.total(|w| w.closed),
        r.total(|w| w.abandoned),
        p(|p| p.engine.syn_dropped_half_open),
        p(|p| p.engine.syn_dropped_full),
        r.port.rx_packets,
        r.port.tx_packets,
        r.port.rx_missed,
        p(|p| p.tx_refused),
        p(|p| p.no_mbuf),
        p(|p| p.no_neighbour),
        p(|p| p.no_route),
        transport.mbufs_in_use(),
    );
    if !mode.summary().is_empty() {
        tracing::info!("{}", mode.summary());
    }
    if !r.failed_workers.is_empty() {
        return Err(format!(
            "DPDK workers {:?} failed (see the log above)",
            r.failed_workers
        ));
    }
    Ok(())
}
