//! Serving on the DPDK transport: flags to configuration, startup line, signals, summary.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hioload_ws::stack::dpdk::server::{DpdkConfig, DpdkTransport};
use hioload_ws::stack::net::parse_cidr;
use hioload_ws::stack::Service;

use crate::cli::{CommonArgs, DpdkArgs, PollMode};
use crate::signals;

/// Run `service` on the DPDK transport until a signal, then shut down gracefully.
pub fn serve<S: Service>(
    mode: &str,
    scheme: &str,
    listen: Option<SocketAddr>,
    default_port: u16,
    common: &CommonArgs,
    args: &DpdkArgs,
    service: S,
) -> Result<(), String> {
    let (ip, prefix) =
        parse_cidr(args.ip.as_deref().unwrap_or_default()).map_err(|e| format!("--ip: {e}"))?;
    let listen = listen.unwrap_or(SocketAddr::from((ip, default_port)));
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
    let cfg = DpdkConfig {
        eal_args: args
            .eal
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        port: args.port_id.unwrap_or(0),
        ip,
        prefix,
        gateway: args.gateway,
        listen_port: listen.port(),
        tcp_rx_buf: size(args.tcp_rx_buf, 16 << 10, "--tcp-rx-buf")?,
        tcp_tx_buf: size(args.tcp_tx_buf, 16 << 10, "--tcp-tx-buf")?,
        max_half_open: args.max_half_open.unwrap_or(4096).max(1),
        max_connections: common.max_connections.unwrap_or(1_000_000).max(1),
        backpressure_limit: usize::try_from(common.backpressure_limit).unwrap_or(usize::MAX),
        mbufs: args.mbufs.unwrap_or(16383).max(1023),
        busy_poll: args.poll_mode == Some(PollMode::Busy),
    };
    let poll = if cfg.busy_poll { "busy" } else { "adaptive" };
    let transport = DpdkTransport::start(cfg.clone()).map_err(|e| e.to_string())?;
    tracing::info!(
        "hioload-ws {} {mode} listening on {scheme}://{ip}:{} (transport: {}, port {} ({}), 1 worker on the main lcore, poll: {poll}, \
         TCP buffers {} + {} bytes per connection, max connections: {}, mbufs in use {})",
        hioload_ws::build_info(),
        cfg.listen_port,
        transport.version(),
        cfg.port,
        transport.mac(),
        cfg.tcp_rx_buf,
        cfg.tcp_tx_buf,
        cfg.max_connections,
        transport.pool().in_use(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    signals::watch(
        move || flag.store(true, Ordering::Relaxed),
        common.shutdown_timeout,
    )?;
    let r = transport.serve(service, &stop, common.shutdown_timeout);
    tracing::info!(
        "stopped: connections accepted {}, closed {}, abandoned at deadline {}; SYNs dropped {} (half-open cap) + {} (full); \
         packets in {} out {}, missed {}, tx refused {}, tx drops {:?}; mbufs in use {}",
        r.engine.accepted,
        r.engine.closed,
        r.abandoned,
        r.engine.syn_dropped_half_open,
        r.engine.syn_dropped_full,
        r.port.rx_packets,
        r.port.tx_packets,
        r.port.rx_missed,
        r.tx_refused,
        r.tx_drops,
        transport.pool().in_use(),
    );
    Ok(())
}
