//! The network layer around smoltcp, for the DPDK path: Ethernet and ARP are ours (smoltcp runs
//! with `Medium::Ip`), IP and TCP are smoltcp's. Pure functions over byte slices, so everything
//! here is tested without a NIC.
//!
//! - [`ethernet`]: frame header parsing and writing.
//! - [`arp`]: answering for our address, learning neighbours, resolving next hops.
//! - [`device`]: the smoltcp `Device` that feeds one received IP packet in and hands every
//!   emitted IP packet to an [`device::IpSink`] (which adds the Ethernet header).
//! - [`engine`]: smoltcp's `Interface`, the flow table, one socket set per connection, and the
//!   [`crate::Service`] on top.
//! - [`rings`]: memory for the sockets' rings, handed back to the kernel while connections idle.

pub mod arp;
pub mod device;
pub mod engine;
pub mod ethernet;
pub mod rings;

use std::net::Ipv4Addr;

/// The appliance's address on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Our MAC address (the port's).
    pub mac: [u8; 6],
    /// Our (first) IPv4 address.
    pub ip: Ipv4Addr,
    /// How many consecutive addresses from `ip` are ours (1 for a server; a load generator uses
    /// more to open more connections to one server port than one address has ports).
    pub ip_count: u8,
    /// Prefix length of our subnet.
    pub prefix: u8,
    /// Where packets to other subnets go.
    pub gateway: Option<Ipv4Addr>,
}

impl NetConfig {
    /// Whether `addr` is one of our addresses.
    pub fn owns(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr).wrapping_sub(u32::from(self.ip)) < u32::from(self.ip_count.max(1))
    }

    /// Our addresses, first to last.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.ip);
        (0..u32::from(self.ip_count.max(1))).map(move |i| Ipv4Addr::from(first.wrapping_add(i)))
    }

    /// Whether `addr` is on our subnet.
    pub fn on_link(&self, addr: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        };
        u32::from(addr) & mask == u32::from(self.ip) & mask
    }

    /// The neighbour a packet to `dst` is sent to: `dst` itself on our subnet, else the gateway.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.on_link(dst) {
            Some(dst)
        } else {
            self.gateway
        }
    }
}

/// Parse `ADDR/PREFIX` (e.g. `10.0.0.2/24`).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDR/PREFIX, e.g. 10.0.0.2/24"))?;
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("{a:?} in {s:?} is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("prefix {p:?} in {s:?} must be 0..=32"))?;
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops() {
        let cfg = NetConfig {
            mac: [2, 0, 0, 0, 0, 1],
            ip: Ipv4Addr::new(10, 0, 0, 2),
            ip_count: 1,
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
        };
        assert_eq!(
            cfg.next_hop(Ipv4Addr::new(10, 0, 0, 9)),
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
        assert_eq!(
            cfg.next_hop(Ipv4Addr::new(10, 0, 1, 9)),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            NetConfig {
                gateway: None,
                ..cfg
            }
            .next_hop(Ipv4Addr::new(8, 8, 8, 8)),
            None
        );
    }

    #[test]
    fn address_ranges() {
        let cfg = NetConfig {
            mac: [2, 0, 0, 0, 0, 1],
            ip: Ipv4Addr::new(10, 0, 0, 254),
            ip_count: 3,
            prefix: 16,
            gateway: None,
        };
        let all: Vec<_> = cfg.addresses().collect();
        assert_eq!(
            all,
            [
                Ipv4Addr::new(10, 0, 0, 254),
                Ipv4Addr::new(10, 0, 0, 255),
                Ipv4Addr::new(10, 0, 1, 0)
            ]
        );
        assert!(all.iter().all(|a| cfg.owns(*a)));
        assert!(!cfg.owns(Ipv4Addr::new(10, 0, 0, 253)));
        assert!(!cfg.owns(Ipv4Addr::new(10, 0, 1, 1)));
        let single = NetConfig { ip_count: 0, ..cfg };
        assert_eq!(single.addresses().count(), 1, "0 means the one address");
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.2/24"),
            Ok((Ipv4Addr::new(10, 0, 0, 2), 24))
        );
        assert!(parse_cidr("10.0.0.2").is_err());
        assert!(parse_cidr("10.0.0.2/33").is_err());
        assert!(parse_cidr("ten/8").is_err());
    }
}
