//! An Ethernet port: configured with one RX/TX queue pair per worker, RSS when the device has
//! it, checksum offloads when it offers them; stopped and closed on drop.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hioload_dpdk_sys as sys;

use super::error::{check, DpdkError};
use super::{Mbuf, Mempool};

/// How to set up a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// RX/TX queue pairs (one per worker).
    pub queues: u16,
    /// RX descriptors per queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// TX descriptors per queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// MTU to set, if not the device default.
    pub mtu: Option<u16>,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mtu: None,
        }
    }
}

/// Port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the NIC dropped because no RX descriptor was free.
    pub rx_missed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// What the device does for us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// RSS spreads flows over the RX queues.
    pub rss: bool,
    /// The NIC computes IPv4 and TCP checksums on transmit.
    pub tx_checksum: bool,
    /// The NIC verifies IPv4 and TCP checksums on receive.
    pub rx_checksum: bool,
}

/// A started port.
#[derive(Debug)]
pub struct Port {
    id: u16,
    queues: u16,
    mac: [u8; 6],
    offloads: Offloads,
    /// Kept so the pools outlive the queues that reference them.
    _pools: Vec<Arc<Mempool>>,
}

impl Port {
    /// Configure and start port `id`; RX queue `q` fills from `pools[q % pools.len()]`.
    pub fn start(id: u16, cfg: &PortConfig, pools: Vec<Arc<Mempool>>) -> Result<Self, DpdkError> {
        // SAFETY: EAL is initialised (a Mempool exists, which requires it); no arguments.
        let count = unsafe { sys::rte_eth_dev_count_avail() };
        if id >= count || pools.is_empty() {
            return Err(DpdkError::NoPort(id, count));
        }
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid out-parameter; the port id is in range.
        check(unsafe { sys::rte_eth_dev_info_get(id, &mut info) }, || {
            format!("rte_eth_dev_info_get(port {id})")
        })?;
        if cfg.queues > info.max_rx_queues || cfg.queues > info.max_tx_queues {
            return Err(DpdkError::Call {
                call: format!("configuring {} queue pairs on port {id}", cfg.queues),
                reason: format!(
                    "the device supports {} RX and {} TX queues",
                    info.max_rx_queues, info.max_tx_queues
                ),
            });
        }
        // SAFETY: the hl_* constants are plain `const uint64_t` definitions in the shim.
        let (rss_hf, tx_ipv4, tx_tcp, rx_ipv4, rx_tcp) = unsafe {
            (
                sys::hl_RSS_IP_TCP,
                sys::hl_TX_OFFLOAD_IPV4_CKSUM,
                sys::hl_TX_OFFLOAD_TCP_CKSUM,
                sys::hl_RX_OFFLOAD_IPV4_CKSUM,
                sys::hl_RX_OFFLOAD_TCP_CKSUM,
            )
        };
        let mut conf = sys::rte_eth_conf::default();
        let rss = cfg.queues > 1 && info.flow_type_rss_offloads & rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf & info.flow_type_rss_offloads;
        }
        let tx_checksum = info.tx_offload_capa & (tx_ipv4 | tx_tcp) == (tx_ipv4 | tx_tcp);
        if tx_checksum {
            conf.txmode.offloads |= tx_ipv4 | tx_tcp;
        }
        let rx_checksum = info.rx_offload_capa & (rx_ipv4 | rx_tcp) == (rx_ipv4 | rx_tcp);
        if rx_checksum {
            conf.rxmode.offloads |= rx_ipv4 | rx_tcp;
        }
        // SAFETY: `conf` is a valid, fully initialised configuration; the port is in range and
        // not started.
        check(
            unsafe { sys::rte_eth_dev_configure(id, cfg.queues, cfg.queues, &conf) },
            || format!("rte_eth_dev_configure(port {id}, {} queues)", cfg.queues),
        )?;
        let (mut rxd, mut txd) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid out-parameters for a configured port.
        check(
            unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd) },
            || format!("rte_eth_dev_adjust_nb_rx_tx_desc(port {id})"),
        )?;
        // SAFETY: no arguments beyond a valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 {
            sys::SOCKET_ID_ANY
        } else {
            socket
        };
        for q in 0..cfg.queues {
            let pool = &pools[q as usize % pools.len()];
            // SAFETY: configured port, queue in range, NULL selects the default rxconf, and the
            // pool outlives the queue (kept in `_pools` until the port is closed).
            check(
                unsafe {
                    sys::rte_eth_rx_queue_setup(
                        id,
                        q,
                        rxd,
                        socket as u32,
                        std::ptr::null(),
                        pool.as_ptr(),
                    )
                },
                || format!("rte_eth_rx_queue_setup(port {id}, queue {q})"),
            )?;
            // SAFETY: configured port, queue in range, NULL selects the default txconf.
            check(
                unsafe { sys::rte_eth_tx_queue_setup(id, q, txd, socket as u32, std::ptr::null()) },
                || format!("rte_eth_tx_queue_setup(port {id}, queue {q})"),
            )?;
        }
        if let Some(mtu) = cfg.mtu {
            // SAFETY: configured port.
            check(unsafe { sys::rte_eth_dev_set_mtu(id, mtu) }, || {
                format!("rte_eth_dev_set_mtu(port {id}, {mtu})")
            })?;
        }
        // SAFETY: configured port with all queues set up.
        check(unsafe { sys::rte_eth_dev_start(id) }, || {
            format!("rte_eth_dev_start(port {id})")
        })?;
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: started port, valid out-parameter.
        check(unsafe { sys::rte_eth_macaddr_get(id, &mut mac) }, || {
            format!("rte_eth_macaddr_get(port {id})")
        })?;
        Ok(Self {
            id,
            queues: cfg.queues,
            mac: mac.addr_bytes,
            offloads: Offloads {
                rss,
                tx_checksum,
                rx_checksum,
            },
            _pools: pools,
        })
    }

    /// NUMA socket of port `id` (0 when unknown), before it is started.
    pub fn socket_of(id: u16) -> u32 {
        // SAFETY: any port id is accepted; invalid ones return a negative value.
        let s = unsafe { sys::rte_eth_dev_socket_id(id) };
        u32::try_from(s).unwrap_or(0)
    }

    /// Port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Number of RX/TX queue pairs.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// What the device offloads.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Whether the link is up now.
    pub fn link_up(&self) -> bool {
        // SAFETY: started port; the shim reads the link into its own stack variable.
        unsafe { sys::hl_rte_eth_link_up(self.id) == 1 }
    }

    /// Wait up to `limit` for the link to come up; returns whether it did.
    pub fn wait_for_link(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.link_up() {
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Counters.
    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: started port, valid out-parameter.
        if unsafe { sys::rte_eth_stats_get(self.id, &mut s) } != 0 {
            return PortStats::default();
        }
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Receive up to `max` (at most 64) packets from `queue`, handing each to `f`.
    #[inline]
    pub fn rx_burst(&self, queue: u16, max: usize, mut f: impl FnMut(Mbuf)) -> usize {
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); 64];
        let max = max.min(raw.len());
        // SAFETY: `raw` has room for `max` pointers; the queue belongs to this started port and is
        // polled by one thread only (one queue per worker).
        let n = unsafe { sys::hl_rte_eth_rx_burst(self.id, queue, raw.as_mut_ptr(), max as u16) }
            as usize;
        for p in &raw[..n] {
            if let Some(p) = NonNull::new(*p) {
                // SAFETY: rx_burst hands over ownership of each returned mbuf.
                f(unsafe { Mbuf::from_raw(p) });
            }
        }
        n
    }

    /// Transmit `batch` on `queue`; what the NIC refuses stays in `batch`. Returns how many went.
    #[inline]
    pub fn tx_burst(&self, queue: u16, batch: &mut TxBatch) -> usize {
        if batch.ptrs.is_empty() {
            return 0;
        }
        // SAFETY: every pointer in `batch` is an owned mbuf (TxBatch takes them with into_raw); the
        // NIC takes ownership of the first `sent`, which are then removed from the batch.
        let sent = unsafe {
            sys::hl_rte_eth_tx_burst(
                self.id,
                queue,
                batch.ptrs.as_mut_ptr(),
                batch.ptrs.len() as u16,
            )
        } as usize;
        batch.ptrs.drain(..sent);
        sent
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started by us; stopping and closing it once is valid, after which
        // its queues no longer reference the pools.
        unsafe {
            if sys::rte_eth_dev_stop(self.id) != 0 {
                tracing::warn!(port = self.id, "rte_eth_dev_stop failed");
            }
            sys::rte_eth_dev_close(self.id);
        }
    }
}

/// Mbufs waiting to be transmitted; whatever is left is freed on drop.
#[derive(Debug, Default)]
pub struct TxBatch {
    ptrs: Vec<*mut sys::rte_mbuf>,
}

// SAFETY: the batch owns its mbufs exclusively (see Mbuf's Send).
unsafe impl Send for TxBatch {}

impl TxBatch {
    /// An empty batch with room for `n` packets.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ptrs: Vec::with_capacity(n),
        }
    }

    /// Queue a packet.
    #[inline]
    pub fn push(&mut self, m: Mbuf) {
        self.ptrs.push(m.into_raw().as_ptr());
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.ptrs.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ptrs.is_empty()
    }

    /// Free everything queued (the NIC refused it); returns how many were dropped.
    pub fn drop_all(&mut self) -> usize {
        let n = self.ptrs.len();
        for p in self.ptrs.drain(..) {
            if let Some(p) = NonNull::new(p) {
                // SAFETY: queued pointers are owned mbufs; rebuilding the Mbuf frees it once.
                drop(unsafe { Mbuf::from_raw(p) });
            }
        }
        n
    }
}

impl Drop for TxBatch {
    fn drop(&mut self) {
        self.drop_all();
    }
}
