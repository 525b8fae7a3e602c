//! The kernel-bypass transport: DPDK below, the smoltcp TCP engine ([`crate::net::engine`]) and
//! a [`Service`] above. EAL, a mempool per NUMA socket, a port with one queue pair per lcore, and
//! a run-to-completion worker per lcore (worker 0 on the calling thread, the EAL main lcore).
//! This module is safe code: everything `unsafe` is in the wrappers of [`crate::dpdk`].
//!
//! A worker's loop ([`worker`]) is its steps in order, one module each: [`receive`] a burst,
//! [`dispatch`] each frame (ARP or the engine), exchange [`mailbox`] letters, run the
//! [`connections`], [`transmit`] what was framed, and, once stopped, [`shutdown`].

mod connections;
mod dispatch;
mod mailbox;
mod receive;
mod shutdown;
pub mod transmit;
mod worker;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dpdk::{eal, DpdkError, Eal, Mempool, Port, PortConfig, PortStats};
use crate::mailbox::{Mailbox, Postboxes};
use crate::meter::WorkerMeter;
use crate::net::engine::EngineConfig;
use crate::net::NetConfig;
use crate::report::WorkerReport;
use crate::service::Service;

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
    /// Letters each worker's mailbox holds at most.
    pub mailbox_capacity: usize,
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
        WorkerReport::total(&self.workers, f)
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

    /// Mailboxes for this transport's workers, to hand to [`DpdkTransport::serve_with`]; their
    /// postboxes let other threads post to the workers' services.
    pub fn mailboxes<M>(&self) -> (Postboxes<M>, Vec<Mailbox<M>>) {
        crate::mailbox::mailboxes(
            self.cfg.mailbox_capacity,
            self.lcores.iter().map(|_| None).collect(),
        )
    }

    /// Serve until `stop` is set, then close connections gracefully for up to `grace`. Worker `i`
    /// runs on lcore `lcores()[i]` with `make_service(i)`, RX/TX queue `i`, and the pool of its
    /// NUMA socket.
    pub fn serve<S, F>(&self, make_service: F, stop: &AtomicBool, grace: Duration) -> DpdkReport
    where
        S: Service,
        F: Fn(usize) -> S + Sync,
    {
        self.serve_with(self.mailboxes(), make_service, |_, _| {}, stop, grace)
    }

    /// [`DpdkTransport::serve`] with mailboxes made beforehand ([`DpdkTransport::mailboxes`]),
    /// handing each worker's service to `done(worker, service)` on that worker's lcore as it
    /// stops (a load generator collects its results this way).
    pub fn serve_with<S, F, D>(
        &self,
        (posts, boxes): (Postboxes<S::Message>, Vec<Mailbox<S::Message>>),
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
        let boxes: Vec<Mutex<Option<Mailbox<S::Message>>>> =
            boxes.into_iter().map(|b| Mutex::new(Some(b))).collect();
        let reports: Mutex<Vec<Option<WorkerReport>>> = Mutex::new(vec![None; n]);
        let job = |i: usize| {
            // Taken once at start; the mutexes are not touched on the fast path.
            let Some(mailbox) = boxes
                .get(i)
                .and_then(|b| b.lock().ok().and_then(|mut b| b.take()))
            else {
                tracing::error!(worker = i, "no mailbox for this worker");
                return;
            };
            let pool = &self.pools[&eal::lcore_socket(&self.eal, self.lcores[i])];
            let (report, service) = worker::run(
                self,
                i,
                make_service(i),
                pool,
                mailbox,
                posts.clone(),
                stop,
                grace,
            );
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
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or(WorkerReport {
                    worker: i,
                    ..WorkerReport::default()
                })
            })
            .collect();
        DpdkReport {
            workers,
            port: self.port.stats(),
            failed_workers,
        }
    }
}
