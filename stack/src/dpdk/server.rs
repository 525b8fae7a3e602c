//! The DPDK transport: EAL, a mempool per NUMA socket, a port with one queue pair per lcore, and
//! a run-to-completion worker per lcore that runs the TCP engine over its queue (worker 0 on the
//! calling thread, the EAL main lcore).
//!
//! ```text
//! loop {
//!     rx_burst → Ethernet → ARP: answer / learn        → IPv4 to us: engine.ingress
//!     engine.process (services read and write; smoltcp egress into mbufs)
//!     engine.run_timers (retransmissions, service deadlines)
//!     engine.dial (a load generator opens its next connections)
//!     tx_burst everything framed this iteration
//!     idle? back off (unless busy-polling)
//! }
//! ```
//!
//! Every iteration is counted in the worker's [`WorkerMeter`], with the time of those that did work.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::meter::{most_queued, LoopSnapshot, Stat, WorkerMeter, WorkerRecorder};
use crate::net::arp;
use crate::net::engine::{Dial, Engine, EngineConfig, EngineStats};
use crate::net::ethernet::{self, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, HEADER_LEN};
use crate::net::NetConfig;
use crate::service::Service;

use super::tx::{TxDrops, TxPath};
use super::{eal, DpdkError, Eal, Mbuf, Mempool, Port, PortConfig, PortStats, TxBatch};

/// On stop, how long no packet may arrive before sessions are closed (what is still arriving was
/// sent before the stop and is answered first).
const DRAIN_QUIET: Duration = Duration::from_millis(5);
/// On stop, the longest the answering of what arrives may delay closing the sessions.
const DRAIN_MAX: Duration = Duration::from_millis(500);

/// How often a worker copies its counters out for the admin endpoint.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// A neighbour learned by one worker, sent to the others.
type Neighbour = (Ipv4Addr, [u8; 6]);

/// Settings of the DPDK transport.
#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// EAL arguments, e.g. `-l 0 --no-huge --vdev=net_tap0`.
    pub eal_args: Vec<String>,
    /// Port id.
    pub port: u16,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// What every worker's TCP engine starts from: address, listening port, buffer sizes, limits.
    /// The transport fills in per worker the worker index, its share of `max_half_open`,
    /// `max_connections` and of the connections to dial, the MTU and whether the port offloads
    /// checksums.
    pub engine: EngineConfig,
    /// Mbufs in each pool.
    pub mbufs: u32,
    /// Port MTU, if not the device's default (frames must fit one mbuf: at most 2048 bytes).
    pub mtu: Option<u16>,
    /// Never sleep when idle (lowest latency, one core at 100 %).
    pub busy_poll: bool,
    /// Limits that may change while serving (each worker takes its share of `max_connections`).
    pub live: Option<Arc<crate::live::LiveLimits>>,
}

/// What one worker reports when it stops.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    /// Engine counters.
    pub engine: EngineStats,
    /// Transmit drops.
    pub tx_drops: TxDrops,
    /// Packets the NIC would not take.
    pub tx_refused: u64,
    /// Connections still open at the shutdown deadline.
    pub abandoned: usize,
    /// Loop iterations and busy time.
    pub loops: LoopSnapshot,
}

/// What the transport reports when it stops.
#[derive(Debug, Clone, Default)]
pub struct DpdkReport {
    /// Per worker, in worker order.
    pub workers: Vec<WorkerReport>,
    /// Port counters.
    pub port: PortStats,
    /// Workers that panicked or could not be launched.
    pub failed_workers: Vec<usize>,
}

impl DpdkReport {
    /// Sum of a counter over workers.
    pub fn total(&self, f: impl Fn(&WorkerReport) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }
}

/// A started port with everything the workers need; created before serving so that errors reach
/// the user before the startup line.
pub struct DpdkTransport {
    // Field order is drop order: the port closes before the pools are freed, then EAL cleans up.
    port: Port,
    /// One pool per NUMA socket in use, by socket.
    pools: HashMap<u32, Arc<Mempool>>,
    lcores: Vec<u32>,
    meters: Arc<[WorkerMeter]>,
    eal: Eal,
    net: NetConfig,
    cfg: DpdkConfig,
}

impl DpdkTransport {
    /// Initialise EAL, create a pool per NUMA socket in use, and start the port with one RX/TX
    /// queue pair per lcore (RSS spreads flows over them when the device supports it).
    pub fn start(cfg: DpdkConfig) -> Result<Self, DpdkError> {
        let eal = Eal::init(&cfg.eal_args)?;
        let lcores = eal::lcores(&eal);
        let port_socket = Port::socket_of(cfg.port);
        let mut pools = HashMap::new();
        for socket in lcores
            .iter()
            .map(|&l| eal::lcore_socket(&eal, l))
            .chain([port_socket])
        {
            if let std::collections::hash_map::Entry::Vacant(e) = pools.entry(socket) {
                let pool = Mempool::create(
                    &eal,
                    &format!("hioload_s{socket}"),
                    cfg.mbufs,
                    256,
                    2048 + 128,
                    socket as i32,
                )?;
                e.insert(Arc::new(pool));
            }
        }
        let rx_pool = pools[&port_socket].clone();
        let queues = lcores.len() as u16;
        let port = Port::start(
            cfg.port,
            &PortConfig {
                queues,
                rx_desc: 1024,
                tx_desc: 1024,
                mtu: cfg.mtu,
            },
            vec![rx_pool],
        )?;
        if !port.link_up() {
            // Operators (and tests) see why startup pauses: a memif server waits for its client.
            tracing::info!(
                port = cfg.port,
                "port started; waiting up to 10 s for its link"
            );
        }
        if !port.wait_for_link(Duration::from_secs(10)) {
            tracing::warn!(
                port = cfg.port,
                "link is still down after 10 s; serving anyway"
            );
        }
        let net = NetConfig {
            mac: port.mac(),
            ip: cfg.engine.ip,
            ip_count: cfg.engine.ip_count,
            prefix: cfg.engine.prefix,
            gateway: cfg.gateway,
        };
        Ok(Self {
            port,
            pools,
            meters: WorkerMeter::for_workers(lcores.len()),
            lcores,
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

    /// The lcores workers run on (worker i on `lcores()[i]`; the first is the main lcore).
    pub fn lcores(&self) -> &[u32] {
        &self.lcores
    }

    /// Whether the NIC computes IPv4 and TCP checksums of what we send.
    pub fn checksum_offload(&self) -> bool {
        self.port.offloads().tx_checksum
    }

    /// Whether the port's link is up now.
    pub fn link_up(&self) -> bool {
        self.port.link_up()
    }

    /// Whether the port spreads flows over queues with RSS.
    pub fn rss(&self) -> bool {
        self.port.offloads().rss
    }

    /// Every worker's loop counters, in worker order, readable while serving.
    pub fn meters(&self) -> Arc<[WorkerMeter]> {
        Arc::clone(&self.meters)
    }

    /// Mbufs in use over all pools.
    pub fn mbufs_in_use(&self) -> u32 {
        self.pools.values().map(|p| p.in_use()).sum()
    }

    /// Serve until `stop` is set, then close connections gracefully for up to `grace`. Worker `i`
    /// runs on lcore `lcores()[i]` with `make_service(i)`, RX/TX queue `i`, and the pool of its
    /// NUMA socket; workers share what they learn by ARP through their inboxes.
    pub fn serve<S, F>(&self, make_service: F, stop: &AtomicBool, grace: Duration) -> DpdkReport
    where
        S: Service,
        F: Fn(usize) -> S + Sync,
    {
        self.serve_then(make_service, |_, _| {}, stop, grace)
    }

    /// [`DpdkTransport::serve`], then hand each worker's service to `done(worker, service)` on
    /// that worker's lcore as it stops (a load generator collects its results this way).
    pub fn serve_then<S, F, D>(
        &self,
        make_service: F,
        done: D,
        stop: &AtomicBool,
        grace: Duration,
    ) -> DpdkReport
    where
        S: Service,
        F: Fn(usize) -> S + Sync,
        D: Fn(usize, S) + Sync,
    {
        let n = self.lcores.len();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| crossbeam_channel::unbounded::<Neighbour>())
            .unzip();
        let receivers: Vec<Mutex<Option<Receiver<Neighbour>>>> =
            receivers.into_iter().map(|r| Mutex::new(Some(r))).collect();
        let reports: Mutex<Vec<Option<WorkerReport>>> = Mutex::new(vec![None; n]);
        let job = |i: usize| {
            // Taken once at start; the mutexes are not touched on the fast path.
            let inbox = receivers[i].lock().ok().and_then(|mut r| r.take());
            let peers: Vec<Sender<Neighbour>> = senders
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s.clone())
                .collect();
            let pool = &self.pools[&eal::lcore_socket(&self.eal, self.lcores[i])];
            let (report, service) =
                self.worker(i, make_service(i), pool, inbox, &peers, stop, grace);
            done(i, service);
            if let Ok(mut r) = reports.lock() {
                r[i] = Some(report);
            }
        };
        let failed_workers = self.eal.run_on_lcores(&self.lcores, &job);
        let workers = reports
            .into_inner()
            .unwrap_or_default()
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        DpdkReport {
            workers,
            port: self.port.stats(),
            failed_workers,
        }
    }

    /// One worker's loop on queue `q`.
    #[allow(clippy::too_many_arguments)]
    fn worker<S: Service>(
        &self,
        q: usize,
        service: S,
        pool: &Mempool,
        inbox: Option<Receiver<Neighbour>>,
        peers: &[Sender<Neighbour>],
        stop: &AtomicBool,
        grace: Duration,
    ) -> (WorkerReport, S) {
        let cfg = &self.cfg;
        let workers = self.lcores.len();
        let net = self.net;
        let queue = q as u16;
        let checksum_offload = self.port.offloads().tx_checksum;
        let mut tx = TxPath::new(net, pool, checksum_offload);
        let mut tx_refused = 0u64;
        let (mut packets_in, mut packets_out) = (0u64, 0u64);
        let socket = eal::lcore_socket(&self.eal, self.lcores[q]);
        let start = Instant::now();
        let mut engine = {
            let mut sink = tx.sink(start);
            Engine::new(
                EngineConfig {
                    worker: queue,
                    max_half_open: cfg.engine.max_half_open.div_ceil(self.lcores.len()).max(1),
                    max_connections: cfg
                        .engine
                        .max_connections
                        .div_ceil(self.lcores.len())
                        .max(1),
                    mtu: usize::from(cfg.mtu.unwrap_or(1500)),
                    tx_checksum_offload: checksum_offload,
                    dial: cfg.engine.dial.map(|d| share(d, q, workers)),
                    ..cfg.engine.clone()
                },
                service,
                &mut sink,
                start,
            )
        };
        if q == 0 {
            // Tell the neighbours where we are.
            for addr in net.addresses() {
                push_frame(pool, &mut tx.batch, |f| arp::gratuitous(&net, addr, f));
            }
        }
        let mut meter = WorkerRecorder::new(Arc::clone(&self.meters), q);
        let mut dialing = cfg.engine.dial.is_some();

        let mut idle_rounds = 0u32;
        let mut stop_deadline: Option<Instant> = None;
        // Set when the stop is seen: (when it was seen, when the last packet arrived since).
        let mut draining: Option<(Instant, Instant)> = None;
        let mut last_publish = start;
        let mut last_probe = start;
        let mut live_seen = 0u64;
        let mut last_expiry = start;
        loop {
            let now = Instant::now();
            let received = self.port.rx_burst(queue, 32, |m| {
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
                        if let Some(n) = arp::process(m.data(), &net, &mut tx.arp, now, &mut out) {
                            push_frame(pool, &mut tx.batch, |f| {
                                f.copy_from_slice(&out);
                                n
                            });
                        }
                    }
                    ETHERTYPE_IPV4 if eth.dst == net.mac => {
                        let mut sink = tx.sink(now);
                        engine.ingress(&m.data()[HEADER_LEN..], &mut sink, now);
                    }
                    _ => {}
                }
            });
            // Share what ARP taught us; learn what the others heard.
            for (ip, mac) in tx.arp.drain_learned() {
                for p in peers {
                    // A worker that has exited has dropped its inbox; nothing to tell it.
                    let _ = p.send((ip, mac));
                }
            }
            if let Some(inbox) = &inbox {
                while let Ok((ip, mac)) = inbox.try_recv() {
                    tx.arp.learn_from_peer(ip, mac, now);
                }
            }
            {
                let mut sink = tx.sink(now);
                engine.process(&mut sink, now);
                engine.run_timers(&mut sink, now);
                if dialing {
                    // A few per iteration, so established connections keep being served.
                    dialing = engine.dial(32, &mut sink, now) > 0;
                }
            }
            let queued = tx.batch.len();
            packets_in += received as u64;
            if queued > 0 {
                packets_out += self.port.tx_burst(queue, &mut tx.batch) as u64;
                if tx.batch.len() > 256 {
                    // The NIC is not keeping up: drop rather than hold mbufs without bound.
                    tx_refused += tx.batch.drop_all() as u64;
                }
            }
            if now.duration_since(last_expiry) >= Duration::from_secs(1) {
                tx.arp.expire(now);
                last_expiry = now;
            }
            if now.duration_since(last_probe) >= Duration::from_secs(1) {
                last_probe = now;
                meter.set_most_queued(most_queued(engine.queued()));
            }
            if now.duration_since(last_publish) >= PUBLISH_EVERY {
                last_publish = now;
                let e = engine.stats();
                for (stat, value) in [
                    (Stat::ConnectionsOpen, engine.connections() as u64),
                    (Stat::ConnectionsAccepted, e.accepted + e.dialed),
                    (Stat::ConnectionsClosed, e.closed),
                    (Stat::RejectedMaxConnections, e.syn_dropped_full),
                    (Stat::RejectedHalfOpen, e.syn_dropped_half_open),
                    (Stat::RejectedMemory, e.syn_dropped_memory),
                    (Stat::BackpressurePauses, e.backpressure_pauses),
                    (Stat::PacketsReceived, packets_in),
                    (Stat::PacketsSent, packets_out),
                    (Stat::DroppedNoMbuf, tx.drops.no_mbuf),
                    (Stat::DroppedNoNeighbour, tx.drops.no_neighbour),
                    (Stat::DroppedNoRoute, tx.drops.no_route),
                    (Stat::DroppedTxFull, tx_refused),
                    (Stat::ArpEntries, tx.arp.len() as u64),
                    (Stat::MbufsInUse, u64::from(pool.in_use())),
                    (Stat::MbufsFree, u64::from(pool.available())),
                    (Stat::NumaSocket, u64::from(socket)),
                ] {
                    meter.set(stat, value);
                }
                if q == 0 {
                    let p = self.port.stats();
                    for (stat, value) in [
                        (Stat::PortRxMissed, p.rx_missed),
                        (Stat::PortRxErrors, p.rx_errors),
                        (Stat::PortTxErrors, p.tx_errors),
                        (Stat::PortRxNoMbuf, p.rx_nombuf),
                    ] {
                        meter.set(stat, value);
                    }
                }
            }
            match stop_deadline {
                // Answer what arrived before the stop first (a message sent before the signal is
                // still echoed): keep serving until no packet has come for DRAIN_QUIET (packets
                // can still be on their way through the device), at most DRAIN_MAX, and only
                // then close sessions.
                None if stop.load(Ordering::Relaxed) => {
                    let (since, last) = draining.get_or_insert((now, now));
                    if received > 0 {
                        *last = now;
                    }
                    if now.duration_since(*last) >= DRAIN_QUIET
                        || now.duration_since(*since) >= DRAIN_MAX
                    {
                        tracing::debug!(
                            worker = q,
                            open = engine.connections(),
                            "DPDK worker shutting down"
                        );
                        let mut sink = tx.sink(now);
                        engine.shutdown(&mut sink, now);
                        stop_deadline = Some(now + grace);
                    }
                }
                Some(deadline) if engine.connections() == 0 || now >= deadline => {
                    // Send what the last round produced before leaving.
                    self.port.tx_burst(queue, &mut tx.batch);
                    break;
                }
                _ => {}
            }
            // Cheap when nothing changed: the service publishes only what this round counted.
            engine.tick(&mut tx.sink(now), now);
            if let Some(l) = cfg.live.as_ref().and_then(|l| l.changed(&mut live_seen)) {
                engine.set_limits(
                    usize::try_from(l.backpressure_limit).unwrap_or(usize::MAX),
                    usize::try_from(l.max_connections.div_ceil(workers as u64).max(1))
                        .unwrap_or(usize::MAX),
                );
            }
            if received == 0 && queued == 0 {
                meter.idle();
            } else {
                meter.busy(now, Instant::now());
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
        let report = WorkerReport {
            engine: engine.stats(),
            tx_drops: tx.drops,
            tx_refused,
            abandoned: engine.connections(),
            loops: meter.totals(),
        };
        (report, engine.into_service())
    }
}

/// Worker `q` of `workers`' part of `dial`: an even share of the connections, and every
/// `workers`-th local endpoint starting at its own, so workers never pick the same one. On ports
/// without RSS (memif, TAP) queue pairs map one to one, so replies come back to the worker that
/// sent the SYN.
fn share(dial: Dial, q: usize, workers: usize) -> Dial {
    let workers = workers.max(1);
    Dial {
        count: dial.count / workers + usize::from(q < dial.count % workers),
        first: dial.first + q * dial.stride.max(1),
        stride: dial.stride.max(1) * workers,
        ..dial
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
