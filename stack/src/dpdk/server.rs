//! The DPDK transport: EAL, a mempool, a port, and a worker loop that runs the TCP engine over
//! them. Run to completion on the calling thread (the EAL main lcore).
//!
//! ```text
//! loop {
//!     rx_burst → Ethernet → ARP: answer / learn        → IPv4 to us: engine.ingress
//!     engine.process (services read and write; smoltcp egress into mbufs)
//!     engine.run_timers (retransmissions, service deadlines)
//!     tx_burst everything framed this iteration
//!     idle? back off (unless busy-polling)
//! }
//! ```

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::arp::{self, ArpCache};
use crate::net::engine::{Engine, EngineConfig, EngineStats};
use crate::net::ethernet::{self, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, HEADER_LEN};
use crate::net::NetConfig;
use crate::service::Service;

use super::tx::{MbufSink, TxDrops};
use super::{DpdkError, Eal, Mbuf, Mempool, Port, PortConfig, PortStats, TxBatch};

/// Settings of the DPDK transport.
#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// EAL arguments, e.g. `-l 0 --no-huge --vdev=net_tap0`.
    pub eal_args: Vec<String>,
    /// Port id.
    pub port: u16,
    /// Our address on the port.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// TCP port to accept connections on.
    pub listen_port: u16,
    /// smoltcp receive buffer per connection.
    pub tcp_rx_buf: usize,
    /// smoltcp send buffer per connection.
    pub tcp_tx_buf: usize,
    /// Connections not yet established, at most.
    pub max_half_open: usize,
    /// Connections at most.
    pub max_connections: usize,
    /// Unsent output per connection beyond which reading it pauses.
    pub backpressure_limit: usize,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// Never sleep when idle (lowest latency, one core at 100 %).
    pub busy_poll: bool,
}

/// What the transport reports when it stops.
#[derive(Debug, Clone, Default)]
pub struct DpdkReport {
    /// Engine counters.
    pub engine: EngineStats,
    /// Port counters.
    pub port: PortStats,
    /// Transmit drops.
    pub tx_drops: TxDrops,
    /// Packets the NIC would not take.
    pub tx_refused: u64,
    /// Connections still open at the shutdown deadline.
    pub abandoned: usize,
}

/// A started port with everything the worker needs; created before serving so that errors reach
/// the user before the startup line.
pub struct DpdkTransport {
    // Field order is drop order: the port closes before the pool is freed, then EAL cleans up.
    port: Port,
    pool: Arc<Mempool>,
    eal: Eal,
    net: NetConfig,
    cfg: DpdkConfig,
}

impl DpdkTransport {
    /// Initialise EAL, create the pool and start the port.
    pub fn start(cfg: DpdkConfig) -> Result<Self, DpdkError> {
        let eal = Eal::init(&cfg.eal_args)?;
        let pool = Arc::new(Mempool::create(
            &eal,
            "hioload_rx",
            cfg.mbufs,
            256,
            2048 + 128,
            -1,
        )?);
        let port = Port::start(
            cfg.port,
            &PortConfig {
                queues: 1,
                rx_desc: 1024,
                tx_desc: 1024,
                mtu: None,
            },
            vec![pool.clone()],
        )?;
        if !port.wait_for_link(Duration::from_secs(10)) {
            tracing::warn!(
                port = cfg.port,
                "link is still down after 10 s; serving anyway"
            );
        }
        let net = NetConfig {
            mac: port.mac(),
            ip: cfg.ip,
            prefix: cfg.prefix,
            gateway: cfg.gateway,
        };
        Ok(Self {
            port,
            pool,
            eal,
            net,
            cfg,
        })
    }

    /// The DPDK version.
    pub fn version(&self) -> String {
        self.eal.version()
    }

    /// The port's MAC address as `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self) -> String {
        self.net
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The pool (for counters).
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// Serve `service` until `stop` is set, then close connections gracefully for up to `grace`.
    pub fn serve<S: Service>(&self, service: S, stop: &AtomicBool, grace: Duration) -> DpdkReport {
        let cfg = &self.cfg;
        let net = self.net;
        let mut arp_cache = ArpCache::default();
        let mut batch = TxBatch::with_capacity(512);
        let mut drops = TxDrops::default();
        let mut scratch = Vec::new();
        let mut tx_refused = 0u64;
        let start = Instant::now();
        let mut engine = {
            let mut sink = MbufSink {
                net: &net,
                pool: &self.pool,
                batch: &mut batch,
                arp: &mut arp_cache,
                now: start,
                drops: &mut drops,
                scratch: &mut scratch,
            };
            Engine::new(
                EngineConfig {
                    worker: 0,
                    ip: cfg.ip,
                    prefix: cfg.prefix,
                    listen_port: cfg.listen_port,
                    tcp_rx_buf: cfg.tcp_rx_buf,
                    tcp_tx_buf: cfg.tcp_tx_buf,
                    max_half_open: cfg.max_half_open,
                    max_connections: cfg.max_connections,
                    backpressure_limit: cfg.backpressure_limit,
                    mtu: 1500,
                    tx_checksum_offload: false,
                },
                service,
                &mut sink,
                start,
            )
        };
        // Tell the neighbours where we are.
        push_frame(&self.pool, &mut batch, |f| arp::gratuitous(&net, f));

        let mut idle_rounds = 0u32;
        let mut stop_deadline: Option<Instant> = None;
        let mut last_expiry = start;
        loop {
            let now = Instant::now();
            let received = self.port.rx_burst(0, 32, |m| {
                if m.segments() != 1 {
                    return; // jumbo frames are not enabled; a multi-segment packet is not ours
                }
                let Some(eth) = ethernet::parse(m.data()) else {
                    return;
                };
                if eth.dst != net.mac && eth.dst != BROADCAST {
                    return;
                }
                match eth.ethertype {
                    ETHERTYPE_ARP => {
                        let mut out = [0u8; arp::FRAME_LEN];
                        if let Some(n) = arp::process(m.data(), &net, &mut arp_cache, now, &mut out)
                        {
                            push_frame(&self.pool, &mut batch, |f| {
                                f.copy_from_slice(&out);
                                n
                            });
                        }
                    }
                    ETHERTYPE_IPV4 if eth.dst == net.mac => {
                        let mut sink = MbufSink {
                            net: &net,
                            pool: &self.pool,
                            batch: &mut batch,
                            arp: &mut arp_cache,
                            now,
                            drops: &mut drops,
                            scratch: &mut scratch,
                        };
                        engine.ingress(&m.data()[HEADER_LEN..], &mut sink, now);
                    }
                    _ => {}
                }
            });
            {
                let mut sink = MbufSink {
                    net: &net,
                    pool: &self.pool,
                    batch: &mut batch,
                    arp: &mut arp_cache,
                    now,
                    drops: &mut drops,
                    scratch: &mut scratch,
                };
                engine.process(&mut sink, now);
                engine.run_timers(&mut sink, now);
            }
            let queued = batch.len();
            if queued > 0 {
                self.port.tx_burst(0, &mut batch);
                if batch.len() > 256 {
                    // The NIC is not keeping up: drop rather than hold mbufs without bound.
                    tx_refused += batch.drop_all() as u64;
                }
            }
            if now.duration_since(last_expiry) >= Duration::from_secs(1) {
                arp_cache.expire(now);
                last_expiry = now;
            }
            match stop_deadline {
                None if stop.load(Ordering::Relaxed) => {
                    tracing::info!(open = engine.connections(), "DPDK worker shutting down");
                    let mut sink = MbufSink {
                        net: &net,
                        pool: &self.pool,
                        batch: &mut batch,
                        arp: &mut arp_cache,
                        now,
                        drops: &mut drops,
                        scratch: &mut scratch,
                    };
                    engine.shutdown(&mut sink, now);
                    stop_deadline = Some(now + grace);
                }
                Some(deadline) if engine.connections() == 0 || now >= deadline => {
                    // Send what the last round produced before leaving.
                    self.port.tx_burst(0, &mut batch);
                    break;
                }
                _ => {}
            }
            // Idle back-off: spin briefly, then sleep a little longer each idle round (max 100 µs).
            if received == 0 && queued == 0 && !cfg.busy_poll {
                idle_rounds = idle_rounds.saturating_add(1);
                if idle_rounds > 64 {
                    let wait = Duration::from_micros(u64::from(idle_rounds.min(164) - 64));
                    let wait = engine
                        .next_timer()
                        .map_or(wait, |t| wait.min(t.saturating_duration_since(now)));
                    std::thread::sleep(wait);
                }
            } else {
                idle_rounds = 0;
            }
        }
        DpdkReport {
            engine: engine.stats(),
            port: self.port.stats(),
            tx_drops: drops,
            tx_refused,
            abandoned: engine.connections(),
        }
    }
}

/// Allocate an mbuf, let `write` fill a frame of at most `arp::FRAME_LEN` bytes, and queue it.
fn push_frame(
    pool: &Mempool,
    batch: &mut TxBatch,
    write: impl FnOnce(&mut [u8; arp::FRAME_LEN]) -> usize,
) {
    let mut frame = [0u8; arp::FRAME_LEN];
    let n = write(&mut frame);
    if let Some(mut m) = Mbuf::alloc(pool) {
        if let Some(buf) = m.append(n as u16) {
            buf.copy_from_slice(&frame[..n]);
            batch.push(m);
        }
    }
}
