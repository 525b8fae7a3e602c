//! ARP for IPv4 over Ethernet, all of it: answering requests for our addresses, learning the
//! senders we hear from, the bounded neighbour cache ([`ArpCache`]) with expiry, resolving next
//! hops (and the requests for those we do not know yet), and announcing ourselves.
//!
//! Replies land on whichever queue the NIC picks, so each DPDK worker shares what it learns from
//! the wire with the others through their mailboxes ([`ArpCache::drain_learned`],
//! [`ArpCache::learn_from_peer`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};

use super::ethernet::{self, BROADCAST, ETHERTYPE_ARP, HEADER_LEN};
use super::NetConfig;

/// Length of an ARP-over-Ethernet frame (without padding).
pub const FRAME_LEN: usize = HEADER_LEN + 28;

/// How long a learned entry is trusted.
pub const ENTRY_LIFETIME: Duration = Duration::from_secs(300);
/// Neighbours a worker remembers at most (and addresses it has pending requests for).
pub const DEFAULT_CAPACITY: usize = 1024;
/// How often a request for one address may go out.
const REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// The neighbour cache: IPv4 address → MAC, each entry with an expiry, bounded like smoltcp's:
/// when it is full, a new neighbour replaces the entry closest to expiring.
#[derive(Debug)]
pub struct ArpCache {
    entries: HashMap<Ipv4Addr, ([u8; 6], Instant)>,
    /// When a request for an address was last sent (so a burst of packets sends one).
    requested: HashMap<Ipv4Addr, Instant>,
    /// Entries learned from the wire since the last `drain_learned`, for other workers.
    learned: Vec<(Ipv4Addr, [u8; 6])>,
    capacity: usize,
    /// Entries pushed out by newer ones because the cache was full.
    evicted: u64,
    /// The last next hop resolved, with its MAC and expiry: almost every packet goes to the
    /// same gateway or peer, and this spares the map's hashing per packet. Cleared whenever
    /// an entry changes or goes.
    last: Option<(Ipv4Addr, [u8; 6], Instant)>,
}

impl Default for ArpCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

/// What to do about a packet's next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Its MAC is known.
    Known([u8; 6]),
    /// Unknown: send the request written into the caller's buffer (this many bytes).
    Ask(usize),
    /// Unknown, and a request went out less than a second ago.
    Wait,
}

impl ArpCache {
    /// A cache of at most `capacity` neighbours.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            requested: HashMap::new(),
            learned: Vec::new(),
            capacity: capacity.max(1),
            evicted: 0,
            last: None,
        }
    }

    /// The MAC of `ip`, if known and fresh.
    pub fn lookup(&self, ip: Ipv4Addr, now: Instant) -> Option<[u8; 6]> {
        self.entries
            .get(&ip)
            .filter(|(_, expires)| *expires > now)
            .map(|(mac, _)| *mac)
    }

    /// Where to send a packet for next hop `hop`: its MAC, or an ARP request to send first
    /// (written into `out`; at most one per address per second), or nothing yet.
    pub fn resolve(
        &mut self,
        cfg: &NetConfig,
        hop: Ipv4Addr,
        now: Instant,
        out: &mut [u8; FRAME_LEN],
    ) -> Resolution {
        if let Some((ip, mac, expires)) = self.last {
            if ip == hop && expires > now {
                return Resolution::Known(mac);
            }
        }
        if let Some(&(mac, expires)) = self.entries.get(&hop).filter(|(_, e)| *e > now) {
            self.last = Some((hop, mac, expires));
            return Resolution::Known(mac);
        }
        if self.should_request(hop, now) {
            Resolution::Ask(request(cfg, hop, out))
        } else {
            Resolution::Wait
        }
    }

    /// Remember `ip` is at `mac`, heard on the wire: also queued for [`ArpCache::drain_learned`]
    /// (as many as the cache holds; a flood of new senders is not queued without bound).
    pub fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6], now: Instant) {
        self.learn_from_peer(ip, mac, now);
        if self.learned.len() < self.capacity {
            self.learned.push((ip, mac));
        }
    }

    /// Remember what another worker heard (not queued again, so nothing echoes between workers).
    pub fn learn_from_peer(&mut self, ip: Ipv4Addr, mac: [u8; 6], now: Instant) {
        self.last = None;
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.capacity {
            self.expire(now);
            if self.entries.len() >= self.capacity {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(ip, _)| *ip)
                {
                    self.entries.remove(&oldest);
                    self.evicted += 1;
                }
            }
        }
        self.entries.insert(ip, (mac, now + ENTRY_LIFETIME));
        self.requested.remove(&ip);
    }

    /// Entries learned from the wire since the last call, to share with the other workers.
    pub fn drain_learned(&mut self) -> std::vec::Drain<'_, (Ipv4Addr, [u8; 6])> {
        self.learned.drain(..)
    }

    /// Entries (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries pushed out by newer ones because the cache was full, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Drop expired entries and forget requests older than the request interval.
    pub fn expire(&mut self, now: Instant) {
        self.last = None;
        self.entries.retain(|_, (_, expires)| *expires > now);
        self.requested
            .retain(|_, at| now.duration_since(*at) < REQUEST_INTERVAL);
    }

    /// Whether a request for `ip` should go out now (at most one per second per address, and
    /// no more addresses pending than the cache holds).
    fn should_request(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        match self.requested.get(&ip) {
            Some(at) if now.duration_since(*at) < REQUEST_INTERVAL => false,
            _ => {
                if !self.requested.contains_key(&ip) && self.requested.len() >= self.capacity {
                    self.requested
                        .retain(|_, at| now.duration_since(*at) < REQUEST_INTERVAL);
                    if self.requested.len() >= self.capacity {
                        return false;
                    }
                }
                self.requested.insert(ip, now);
                true
            }
        }
    }
}

/// Handle a received ARP frame: learn the sender if the frame concerns us, and if it is a
/// request for our address, write the reply into `out` and return its length.
pub fn process(
    frame: &[u8],
    cfg: &NetConfig,
    cache: &mut ArpCache,
    now: Instant,
    out: &mut [u8; FRAME_LEN],
) -> Option<usize> {
    let packet = ArpPacket::new_checked(frame.get(HEADER_LEN..)?).ok()?;
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&packet).ok()?
    else {
        return None;
    };
    if !cfg.owns(target_protocol_addr) {
        return None;
    }
    let sender_mac = source_hardware_addr.0;
    if source_protocol_addr.is_unspecified() || sender_mac == BROADCAST || sender_mac[0] & 1 != 0 {
        return None;
    }
    cache.learn(source_protocol_addr, sender_mac, now);
    if operation != ArpOperation::Request {
        return None;
    }
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(cfg.mac),
        source_protocol_addr: target_protocol_addr,
        target_hardware_addr: source_hardware_addr,
        target_protocol_addr: source_protocol_addr,
    };
    Some(write_frame(&reply, sender_mac, cfg.mac, out))
}

/// Write a request for `target` (broadcast) into `out`; returns its length.
pub fn request(cfg: &NetConfig, target: Ipv4Addr, out: &mut [u8; FRAME_LEN]) -> usize {
    request_from(cfg, cfg.ip, target, out)
}

/// A gratuitous ARP announcing `addr`, one of ours (a request for our own address), sent at
/// start so neighbours and switches learn where we are.
pub fn gratuitous(cfg: &NetConfig, addr: Ipv4Addr, out: &mut [u8; FRAME_LEN]) -> usize {
    request_from(cfg, addr, addr, out)
}

fn request_from(
    cfg: &NetConfig,
    source: Ipv4Addr,
    target: Ipv4Addr,
    out: &mut [u8; FRAME_LEN],
) -> usize {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(cfg.mac),
        source_protocol_addr: source,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    write_frame(&repr, BROADCAST, cfg.mac, out)
}

fn write_frame(repr: &ArpRepr, dst: [u8; 6], src: [u8; 6], out: &mut [u8; FRAME_LEN]) -> usize {
    ethernet::write(out, dst, src, ETHERTYPE_ARP);
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[HEADER_LEN..]));
    FRAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetConfig {
        NetConfig {
            mac: [2, 0, 0, 0, 0, 2],
            ip: Ipv4Addr::new(10, 0, 0, 2),
            ip_count: 1,
            prefix: 24,
            gateway: None,
        }
    }

    fn peer() -> NetConfig {
        NetConfig {
            mac: [2, 0, 0, 0, 0, 9],
            ip: Ipv4Addr::new(10, 0, 0, 9),
            ip_count: 1,
            prefix: 24,
            gateway: None,
        }
    }

    #[test]
    fn answers_requests_for_us_and_learns_the_sender() {
        let now = Instant::now();
        let mut req = [0u8; FRAME_LEN];
        request(&peer(), cfg().ip, &mut req);
        let mut cache = ArpCache::default();
        let mut out = [0u8; FRAME_LEN];
        let n = process(&req, &cfg(), &mut cache, now, &mut out).expect("a reply");
        assert_eq!(cache.lookup(peer().ip, now), Some(peer().mac));
        let eth = ethernet::parse(&out[..n]).unwrap();
        assert_eq!(
            (eth.dst, eth.src, eth.ethertype),
            (peer().mac, cfg().mac, ETHERTYPE_ARP)
        );
        // The reply teaches the peer our address.
        let mut peer_cache = ArpCache::default();
        assert_eq!(
            process(
                &out[..n],
                &peer(),
                &mut peer_cache,
                now,
                &mut [0; FRAME_LEN]
            ),
            None
        );
        assert_eq!(peer_cache.lookup(cfg().ip, now), Some(cfg().mac));
    }

    #[test]
    fn answers_for_every_address_of_a_range_from_that_address() {
        let now = Instant::now();
        let many = NetConfig {
            ip_count: 3,
            ..cfg()
        };
        for target in [2, 3, 4, 5] {
            let target = Ipv4Addr::new(10, 0, 0, target);
            let mut req = [0u8; FRAME_LEN];
            request(&peer(), target, &mut req);
            let mut out = [0u8; FRAME_LEN];
            let reply = process(&req, &many, &mut ArpCache::default(), now, &mut out);
            if !many.owns(target) {
                assert_eq!(reply, None, "{target} is not ours");
                continue;
            }
            let mut peer_cache = ArpCache::default();
            let n = reply.expect("a reply");
            process(
                &out[..n],
                &peer(),
                &mut peer_cache,
                now,
                &mut [0; FRAME_LEN],
            );
            assert_eq!(peer_cache.lookup(target, now), Some(many.mac), "{target}");
        }
        let mut g = [0u8; FRAME_LEN];
        gratuitous(&many, Ipv4Addr::new(10, 0, 0, 4), &mut g);
        let mut peer_cache = ArpCache::default();
        // A gratuitous ARP is a request for our own address; the peer learns from it only if it
        // were addressed to the peer, so check its fields instead.
        let packet = ArpPacket::new_checked(&g[HEADER_LEN..]).unwrap();
        assert_eq!(packet.source_protocol_addr(), &[10, 0, 0, 4]);
        assert_eq!(packet.target_protocol_addr(), &[10, 0, 0, 4]);
        assert!(process(&g, &peer(), &mut peer_cache, now, &mut [0; FRAME_LEN]).is_none());
    }

    #[test]
    fn ignores_requests_for_others_and_garbage() {
        let now = Instant::now();
        let mut req = [0u8; FRAME_LEN];
        request(&peer(), Ipv4Addr::new(10, 0, 0, 77), &mut req);
        let mut cache = ArpCache::default();
        assert_eq!(
            process(&req, &cfg(), &mut cache, now, &mut [0; FRAME_LEN]),
            None
        );
        assert!(cache.is_empty());
        for len in 0..FRAME_LEN {
            assert_eq!(
                process(&req[..len], &cfg(), &mut cache, now, &mut [0; FRAME_LEN]),
                None
            );
        }
    }

    #[test]
    fn only_first_hand_entries_are_shared() {
        let now = Instant::now();
        let mut cache = ArpCache::default();
        cache.learn_from_peer(Ipv4Addr::new(10, 0, 0, 7), [2, 0, 0, 0, 0, 7], now);
        cache.learn(peer().ip, peer().mac, now);
        assert_eq!(
            cache.drain_learned().collect::<Vec<_>>(),
            [(peer().ip, peer().mac)]
        );
        assert_eq!(cache.drain_learned().count(), 0);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn entries_expire_and_requests_are_rate_limited() {
        let now = Instant::now();
        let mut cache = ArpCache::default();
        cache.learn(peer().ip, peer().mac, now);
        assert_eq!(cache.lookup(peer().ip, now + ENTRY_LIFETIME), None);
        cache.expire(now + ENTRY_LIFETIME);
        assert!(cache.is_empty());
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let mut out = [0u8; FRAME_LEN];
        assert_eq!(
            cache.resolve(&cfg(), ip, now, &mut out),
            Resolution::Ask(FRAME_LEN)
        );
        let packet = ArpPacket::new_checked(&out[HEADER_LEN..]).unwrap();
        assert_eq!(packet.target_protocol_addr(), &[10, 0, 0, 5]);
        assert_eq!(
            cache.resolve(&cfg(), ip, now + Duration::from_millis(500), &mut out),
            Resolution::Wait
        );
        assert_eq!(
            cache.resolve(&cfg(), ip, now + Duration::from_secs(1), &mut out),
            Resolution::Ask(FRAME_LEN)
        );
        cache.learn(ip, [2, 0, 0, 0, 0, 5], now);
        assert_eq!(
            cache.resolve(&cfg(), ip, now, &mut out),
            Resolution::Known([2, 0, 0, 0, 0, 5])
        );
        // Resolved again (from the one-entry memo): a new MAC and expiry replace the old ones.
        cache.learn(ip, [2, 0, 0, 0, 0, 6], now + Duration::from_secs(2));
        assert_eq!(
            cache.resolve(&cfg(), ip, now + Duration::from_secs(2), &mut out),
            Resolution::Known([2, 0, 0, 0, 0, 6])
        );
        let end = now + Duration::from_secs(2) + ENTRY_LIFETIME;
        assert_eq!(
            cache.resolve(&cfg(), ip, end, &mut out),
            Resolution::Ask(FRAME_LEN),
            "the memo expires with its entry"
        );
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_entry_closest_to_expiry() {
        let t0 = Instant::now();
        let mut cache = ArpCache::with_capacity(3);
        for i in 0..3u8 {
            cache.learn(
                Ipv4Addr::new(10, 0, 0, 10 + i),
                [2, 0, 0, 0, 0, i],
                t0 + Duration::from_secs(u64::from(i)),
            );
        }
        cache.learn(
            Ipv4Addr::new(10, 0, 0, 99),
            [2, 0, 0, 0, 0, 99],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(cache.len(), 3, "never more than its capacity");
        assert_eq!(cache.evicted(), 1);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(
            cache.lookup(Ipv4Addr::new(10, 0, 0, 10), later),
            None,
            "the oldest went"
        );
        assert!(cache.lookup(Ipv4Addr::new(10, 0, 0, 99), later).is_some());
        assert_eq!(
            cache.drain_learned().count(),
            3,
            "learned entries are bounded too"
        );
        // Pending requests are bounded by the same capacity.
        let mut out = [0u8; FRAME_LEN];
        let asked = (0..10u8)
            .filter(|i| {
                matches!(
                    cache.resolve(&cfg(), Ipv4Addr::new(10, 0, 1, *i), later, &mut out),
                    Resolution::Ask(_)
                )
            })
            .count();
        assert_eq!(asked, 3);
    }
}
