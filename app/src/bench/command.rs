//! `hioload-ws bench ...`: flags to a [`Run`], then the summary table or one JSON line.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::client::{Plan, Protocol, PubSubPlan};
use super::{server, Outcome, Run, Transport};
use crate::cli::{BenchKind, GeneratorArgs, LoadArgs};
use hioload_ws::ws::DeflateConfig;

/// Run a `bench` subcommand; an error if any echo mismatched or any connection failed.
pub fn command(kind: BenchKind) -> Result<(), String> {
    let (run, gen, label) = match kind {
        BenchKind::Echo(a) => {
            let (remote, host, path) = super::parse_url(&a.url)?;
            let protocol = Protocol::WebSocket {
                host,
                path,
                text: a.text,
            };
            (
                load_run(remote, protocol, &a.load, &a.gen, 0)?,
                a.gen,
                if a.text { "echo text" } else { "echo binary" },
            )
        }
        BenchKind::Tcp(a) => {
            if a.load.deflate {
                return Err("--deflate: raw TCP has no WebSocket compression".into());
            }
            let remote = super::resolve(&a.addr, 9002).map_err(|e| format!("--addr: {e}"))?;
            (
                load_run(remote, Protocol::Tcp, &a.load, &a.gen, 0)?,
                a.gen,
                "tcp",
            )
        }
        BenchKind::Conns(a) => {
            let (remote, host, path) = super::parse_url(&a.url)?;
            let protocol = Protocol::WebSocket {
                host,
                path,
                text: false,
            };
            let load = LoadArgs {
                depth: 1,
                size: 0,
                duration: a.hold,
                warmup: Duration::ZERO,
                deflate: false,
                payload: crate::cli::PayloadKind::Letters,
            };
            let mut run = load_run(remote, protocol, &load, &a.gen, 0)?;
            run.plan.depth = 0;
            (run, a.gen, "conns")
        }
        BenchKind::Pubsub(a) => {
            let first = a.url.first().map_or("ws://127.0.0.1:8080/", String::as_str);
            let (remote, host, path) = super::parse_url(first)?;
            let mut more = Vec::new();
            for url in a.url.iter().skip(1) {
                let (other, _, other_path) = super::parse_url(url)?;
                if other_path != path {
                    return Err(format!(
                        "--url {url}: every node must be asked for the same path ({path})"
                    ));
                }
                more.push(other);
            }
            if !more.is_empty() && usize::from(a.gen.workers) < a.url.len() {
                return Err(format!(
                    "{} --url given: use --workers {} or more (each worker connects to one node)",
                    a.url.len(),
                    a.url.len()
                ));
            }
            if !(a.rate >= 0.0 && a.rate.is_finite()) {
                return Err(format!(
                    "--rate {}: must be 0 or more publishes per second",
                    a.rate
                ));
            }
            if a.churners > 0 && !(a.churn_rate > 0.0 && a.churn_rate.is_finite()) {
                return Err(format!(
                    "--churn-rate {}: must be more than 0 joins and leaves per second",
                    a.churn_rate
                ));
            }
            let protocol = Protocol::PubSub(PubSubPlan {
                host,
                path,
                channels: a.channels as usize,
                publishers: a.publishers as usize,
                rate: (a.rate > 0.0).then_some(a.rate),
                churners: a.churners as usize,
                churn_rate: a.churn_rate,
            });
            let extra = a.publishers as usize + a.churners as usize;
            let mut run = load_run(remote, protocol, &a.load, &a.gen, extra)?;
            if !more.is_empty() && !matches!(run.transport, Transport::Kernel { .. }) {
                return Err("several --url need the kernel-socket generator (drop --eal)".into());
            }
            run.more_remotes = more;
            (run, a.gen, "pubsub")
        }
    };
    let outcome = super::run(&run)?;
    if gen.json {
        println!("{}", json(label, &run, &outcome));
    } else {
        print!("{}", table(label, &run, &outcome));
    }
    // Gaps are a measurement (what the appliance dropped for slow members), not a failure.
    let failures = outcome.mismatches + outcome.failed + outcome.connect_failed;
    if failures > 0 {
        return Err(format!(
            "{} echo mismatches, {} failed sessions, {} failed connections{}",
            outcome.mismatches,
            outcome.failed,
            outcome.connect_failed,
            outcome
                .first_failure
                .as_deref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// A run of `gen.connections` connections plus `extra` (pub/sub's publishers and churners).
fn load_run(
    remote: SocketAddr,
    protocol: Protocol,
    load: &LoadArgs,
    gen: &GeneratorArgs,
    extra: usize,
) -> Result<Run, String> {
    let connections = gen.connections as usize + extra;
    let size = usize::try_from(load.size).map_err(|_| "--size is too large")?;
    let now = std::time::Instant::now();
    Ok(Run {
        remote,
        more_remotes: Vec::new(),
        connections,
        plan: Plan {
            protocol,
            depth: load.depth as usize,
            size,
            deflate: load.deflate.then(DeflateConfig::default),
            payload: load.payload,
            measure_from: now,
            end: now,
            epoch: now,
        },
        warmup: load.warmup,
        duration: load.duration,
        transport: transport(remote, gen, connections)?,
        server: server::Probe {
            pid: gen.server_pid,
            admin: gen.server_admin,
        },
        progress: !gen.json,
    })
}

/// Kernel sockets unless the generator's own DPDK port is configured.
fn transport(
    remote: SocketAddr,
    gen: &GeneratorArgs,
    connections: usize,
) -> Result<Transport, String> {
    if let Some(flag) = gen.dpdk.first_given() {
        #[cfg(feature = "dpdk")]
        return dpdk_transport(remote, gen, connections)
            .map_err(|e| format!("{e} ({flag} selects DPDK)"));
        #[cfg(not(feature = "dpdk"))]
        return Err(format!(
            "{flag} runs the generator on DPDK, but this build has no DPDK support \
             (build with --features dpdk) ({connections} connections asked for)"
        ));
    }
    let sources = match gen.source_range.as_deref() {
        Some(cidr) => Some(source_range(cidr)?),
        None if remote.ip().is_loopback() && remote.is_ipv4() => {
            Some((Ipv4Addr::new(127, 0, 0, 1), (1 << 24) - 2))
        }
        None => None,
    };
    if sources.is_some() && !remote.is_ipv4() {
        return Err("--source-range needs an IPv4 server address".into());
    }
    Ok(Transport::Kernel {
        workers: usize::from(gen.workers),
        cpus: gen.cpus.clone().map(|c| c.0).unwrap_or_default(),
        sources,
        max_connecting: gen.max_connecting as usize,
    })
}

/// `ADDR/PREFIX` to the first usable address and how many there are.
fn source_range(cidr: &str) -> Result<(Ipv4Addr, u32), String> {
    let (addr, prefix) =
        hioload_ws::stack::net::parse_cidr(cidr).map_err(|e| format!("--source-range: {e}"))?;
    let hosts = if prefix >= 31 {
        1u32 << (32 - u32::from(prefix))
    } else {
        (1u32 << (32 - u32::from(prefix))) - 2
    };
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let first = if prefix >= 31 {
        u32::from(addr) & mask
    } else {
        (u32::from(addr) & mask) + 1
    };
    Ok((Ipv4Addr::from(first), hosts))
}

#[cfg(feature = "dpdk")]
fn dpdk_transport(
    remote: SocketAddr,
    gen: &GeneratorArgs,
    connections: usize,
) -> Result<Transport, String> {
    use hioload_ws::stack::bypass::DpdkConfig;
    use hioload_ws::stack::net::engine::{Dial, EngineConfig};

    let a = &gen.dpdk;
    let (ip, prefix) =
        hioload_ws::stack::net::parse_cidr(a.ip.as_deref().ok_or(
            "the DPDK generator needs --ip ADDR/PREFIX (its own address) as well as --eal",
        )?)
        .map_err(|e| format!("--ip: {e}"))?;
    if a.eal.is_none() && a.eal_rest.is_empty() {
        return Err("the DPDK generator needs EAL arguments (--eal \"ARGS\", or after --)".into());
    }
    let SocketAddr::V4(remote) = remote else {
        return Err("the DPDK generator reaches IPv4 servers only".into());
    };
    let per_address = usize::from(Dial::PORTS.end - Dial::PORTS.start);
    if connections > per_address * usize::from(gen.ip_count) {
        return Err(format!(
            "{connections} connections need more than {} addresses' ports to one server port: raise --ip-count (at most 8)",
            gen.ip_count
        ));
    }
    let buf = |v: Option<u64>, flag: &str| -> Result<usize, String> {
        match v {
            None => Ok(16 << 10),
            Some(n) if (1024..=64 << 20).contains(&n) => Ok(n as usize),
            Some(n) => Err(format!("{flag} {n}: must be between 1KiB and 64MiB")),
        }
    };
    Ok(Transport::Dpdk(Box::new(DpdkConfig {
        eal_args: a.eal_args(),
        port: a.port_id.unwrap_or(0),
        gateway: a.gateway,
        engine: EngineConfig {
            worker: 0,
            ip,
            ip_count: gen.ip_count,
            prefix,
            listen_port: 0,
            tcp_rx_buf: buf(a.tcp_rx_buf, "--tcp-rx-buf")?,
            tcp_tx_buf: buf(a.tcp_tx_buf, "--tcp-tx-buf")?,
            max_half_open: a
                .max_half_open
                .unwrap_or(gen.max_connecting as usize)
                .max(1),
            max_connections: connections,
            backpressure_limit: 1 << 20,
            mtu: usize::from(a.mtu.unwrap_or(1500)),
            tx_checksum_offload: false,
            dial: Some(Dial {
                remote,
                count: connections,
                first: 0,
                stride: 1,
            }),
            ..EngineConfig::default()
        },
        mbufs: a.mbufs.unwrap_or(16383).max(1023),
        mtu: a.mtu,
        busy_poll: a.poll_mode == Some(crate::cli::PollMode::Busy),
        mailbox_capacity: 1024,
        live: None,
    })))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("null".to_string(), |v| format!("{v:.digits$}"))
}

/// Server CPU (from /proc) and busy time (from /metrics) per message, in microseconds.
fn per_message(o: &Outcome) -> (Option<f64>, Option<f64>) {
    let per = |s: Option<f64>| {
        s.filter(|_| o.messages > 0)
            .map(|s| s / o.messages as f64 * 1e6)
    };
    (per(o.server.cpu), per(o.server.busy))
}

fn transport_name(run: &Run) -> &'static str {
    match run.transport {
        Transport::Kernel { .. } => "kernel",
        #[cfg(feature = "dpdk")]
        Transport::Dpdk(_) => "dpdk",
    }
}

/// One machine-readable line.
pub fn json(label: &str, run: &Run, o: &Outcome) -> String {
    let (cpu_us, busy_us) = per_message(o);
    format!(
        "{{\"bench\":\"{label}\",\"transport\":\"{}\",\"server\":\"{}\",\"connections\":{},\"ready\":{},\"depth\":{},\"size\":{},\
         \"seconds\":{:.3},\"messages\":{},\"msg_per_s\":{:.0},\"mb_per_s\":{:.2},\"p50_us\":{:.1},\"p99_us\":{:.1},\
         \"p999_us\":{:.1},\"max_us\":{:.1},\"mismatches\":{},\"failed_sessions\":{},\"failed_connects\":{},\
         \"connect_per_s\":{},\"generator_busy\":{:.3},\"server_cpu_share\":{},\"server_cpu_us_per_msg\":{},\
         \"server_busy_share\":{},\"server_busy_us_per_msg\":{},\"server_rss_per_conn\":{},\
         \"publishes\":{},\"gaps\":{},\"churn_ops\":{},\"churn_per_s\":{:.0},\"churn_p50_us\":{:.1},\
         \"churn_p99_us\":{:.1},\"presence_events\":{},\"presence_per_s\":{:.0}}}",
        transport_name(run),
        run.remote,
        o.connections,
        o.ready,
        run.plan.depth,
        run.plan.size,
        o.seconds,
        o.messages,
        o.rate(),
        o.messages as f64 * run.plan.size as f64 / o.seconds / 1e6,
        o.quantile_us(0.5),
        o.quantile_us(0.99),
        o.quantile_us(0.999),
        o.latency.max() as f64 / 1000.0,
        o.mismatches,
        o.failed,
        o.connect_failed,
        opt(o.connect_rate(), 0),
        o.own_busy,
        opt(o.server.cpu.map(|c| c / o.seconds), 3),
        opt(cpu_us, 3),
        opt(o.server.busy.map(|c| c / o.seconds), 3),
        opt(busy_us, 3),
        opt(o.server.rss_per_conn, 0),
        o.publishes,
        o.gaps,
        o.churn_ops,
        o.churn_ops as f64 / o.seconds,
        o.churn_quantile_us(0.5),
        o.churn_quantile_us(0.99),
        o.presence_events,
        o.presence_events as f64 / o.seconds,
    )
}

/// The summary table.
pub fn table(label: &str, run: &Run, o: &Outcome) -> String {
    use std::fmt::Write;
    let (cpu_us, busy_us) = per_message(o);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "bench {label} against {} over {}: {} connections ({} ready), depth {}, {} B",
        run.remote,
        transport_name(run),
        o.connections,
        o.ready,
        run.plan.depth,
        run.plan.size
    );
    if let Some(rate) = o.connect_rate() {
        let _ = writeln!(t, "  connect      {rate:>12.0} sessions/s");
    }
    if run.plan.depth > 0 {
        let _ = writeln!(
            t,
            "  messages     {:>12}  in {:.1} s",
            o.messages, o.seconds
        );
        let _ = writeln!(
            t,
            "  rate         {:>12.0} msg/s   {:.1} MB/s",
            o.rate(),
            o.messages as f64 * run.plan.size as f64 / o.seconds / 1e6
        );
        if matches!(run.plan.protocol, Protocol::PubSub(_)) {
            let _ = writeln!(
                t,
                "  pub/sub      {} published (whole run), {} gaps (messages members missed)",
                o.publishes, o.gaps
            );
            if o.churn_ops > 0 {
                let _ = writeln!(
                    t,
                    "  churn        {:>12.0} joins+leaves/s   reply p50 {:.1} µs   p99 {:.1} µs   \
                     {:.0} presence events/s to members",
                    o.churn_ops as f64 / o.seconds,
                    o.churn_quantile_us(0.5),
                    o.churn_quantile_us(0.99),
                    o.presence_events as f64 / o.seconds
                );
            }
        }
        let _ = writeln!(
            t,
            "  {}   p50 {:.1} µs   p99 {:.1} µs   p99.9 {:.1} µs   max {:.1} µs",
            if matches!(run.plan.protocol, Protocol::PubSub(_)) {
                "publish→deliv"
            } else {
                "round trip  "
            },
            o.quantile_us(0.5),
            o.quantile_us(0.99),
            o.quantile_us(0.999),
            o.latency.max() as f64 / 1000.0
        );
    }
    let _ = writeln!(
        t,
        "  generator    busy {:.0} % of the window",
        o.own_busy * 100.0
    );
    let per = |us: Option<f64>| {
        us.map(|us| format!(", {us:.3} µs per message"))
            .unwrap_or_default()
    };
    if let Some(cpu) = o.server.cpu {
        let _ = writeln!(
            t,
            "  server CPU   {:.0} % of a core{}",
            cpu / o.seconds * 100.0,
            per(cpu_us)
        );
    }
    if let Some(busy) = o.server.busy {
        let _ = writeln!(
            t,
            "  server busy  {:.0} % of a worker{}",
            busy / o.seconds * 100.0,
            per(busy_us)
        );
    }
    if let Some(rss) = o.server.rss_per_conn {
        let _ = writeln!(t, "  server RSS   {rss:.0} bytes per connection");
    }
    let _ = writeln!(
        t,
        "  errors       mismatches {}   failed sessions {}   failed connections {}",
        o.mismatches, o.failed, o.connect_failed
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges() {
        assert_eq!(
            source_range("127.0.0.0/8"),
            Ok((Ipv4Addr::new(127, 0, 0, 1), (1 << 24) - 2))
        );
        assert_eq!(
            source_range("10.1.2.3/30"),
            Ok((Ipv4Addr::new(10, 1, 2, 1), 2))
        );
        assert_eq!(
            source_range("10.1.2.3/32"),
            Ok((Ipv4Addr::new(10, 1, 2, 3), 1))
        );
        assert!(source_range("10.1.2.3").is_err());
    }
}
