//! Real DPDK in a test: EAL with `--no-huge`, a `net_tap` virtual device, and the kernel on the
//! other side of the TAP as the peer. Needs root and /dev/net/tun; without them it fails with a
//! message saying so (scripts/test.sh checks first and prints a SKIPPED banner instead).
#![cfg(feature = "dpdk")]

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hioload_stack::bypass::transmit::TxPath;
use hioload_stack::dpdk::{Eal, Mempool, Port, PortConfig};
use hioload_stack::net::arp;
use hioload_stack::net::device::PacketDevice;
use hioload_stack::net::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, HEADER_LEN};
use hioload_stack::net::NetConfig;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

fn require_root_and_tun() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next());
    assert_eq!(
        uid,
        Some("0"),
        "DPDK TAP tests need root (EAL and TAP creation)"
    );
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "DPDK TAP tests need /dev/net/tun"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kernel_pings_the_appliance_through_a_tap() {
    require_root_and_tun();
    let iface = format!("hlt{}", std::process::id() % 1_000_000);
    let eal = Eal::init(&[
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        &format!("--file-prefix={iface}"),
        "--log-level",
        "lib.eal:warning",
        &format!("--vdev=net_tap0,iface={iface}"),
    ])
    .expect("EAL init");
    let pool = Arc::new(Mempool::create(&eal, "tap_test", 2047, 32, 2176, -1).expect("mempool"));
    let port = Port::start(
        0,
        &PortConfig {
            rx_desc: 256,
            tx_desc: 256,
            ..PortConfig::default()
        },
        vec![pool.clone()],
    )
    .expect("port");
    ip(&["addr", "add", "198.18.77.1/24", "dev", &iface]);
    ip(&["link", "set", &iface, "up"]);
    assert!(
        port.wait_for_link(Duration::from_secs(5)),
        "TAP link did not come up"
    );
    // The RX ring holds its mbufs from start on; everything else we allocate must come back.
    let baseline = pool.in_use();

    let net = NetConfig {
        mac: port.mac(),
        ip: Ipv4Addr::new(198, 18, 77, 2),
        ip_count: 1,
        prefix: 24,
        gateway: None,
    };
    let mut tx = TxPath::new(net, &pool, &port, 0, false);
    let t0 = Instant::now();
    let smol_now = || smoltcp::time::Instant::from_micros(t0.elapsed().as_micros() as i64);
    let mut smol = {
        let mut sink = tx.sink(Instant::now());
        let mut dev = PacketDevice::new(None, &mut sink, 1500, false);
        Interface::new(Config::new(HardwareAddress::Ip), &mut dev, smol_now())
    };
    smol.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::Ipv4(net.ip), 24))
            .expect("room")
    });
    let mut empty = SocketSet::new(Vec::new());

    // Announce ourselves, as the appliance does at start.
    let mut frame = [0u8; arp::FRAME_LEN];
    let n = arp::gratuitous(&net, net.ip, &mut frame);
    tx.frame(&frame[..n]);

    let mut ping = Command::new("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "198.18.77.2"])
        .spawn()
        .expect("start ping");
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut arp_replies, mut icmp_in) = (0, 0);
    let status = loop {
        let now = Instant::now();
        port.rx_burst(0, 32, |m| {
            let Some(eth) = ethernet::parse(m.data()) else {
                return;
            };
            match eth.ethertype {
                ETHERTYPE_ARP => {
                    let mut out = [0u8; arp::FRAME_LEN];
                    if let Some(n) = arp::process(m.data(), &net, &mut tx.arp, now, &mut out) {
                        tx.frame(&out[..n]);
                        arp_replies += 1;
                    }
                }
                ETHERTYPE_IPV4 if eth.dst == net.mac => {
                    icmp_in += 1;
                    let mut sink = tx.sink(now);
                    let mut dev =
                        PacketDevice::new(Some(&m.data()[HEADER_LEN..]), &mut sink, 1500, false);
                    smol.poll_ingress_single(smol_now(), &mut dev, &mut empty);
                }
                _ => {}
            }
        });
        tx.burst();
        if let Some(status) = ping.try_wait().expect("ping status") {
            break status;
        }
        assert!(now < deadline, "ping did not finish");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        status.success(),
        "ping failed (ARP replies sent: {arp_replies}, IPv4 packets in: {icmp_in}, drops: {:?})",
        tx.drops
    );
    assert!(
        arp_replies >= 1 && icmp_in >= 3,
        "ARP replies {arp_replies}, IPv4 in {icmp_in}"
    );
    let kernel_mac =
        std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).expect("TAP MAC");
    let learned = tx
        .arp
        .lookup(Ipv4Addr::new(198, 18, 77, 1), Instant::now())
        .expect("the kernel's MAC was learned");
    let learned = learned
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(learned, kernel_mac.trim());
    let stats = port.stats();
    assert!(stats.rx_packets >= 4 && stats.tx_packets >= 4, "{stats:?}");
    drop(tx);
    assert_eq!(
        pool.in_use(),
        baseline,
        "every mbuf we received or allocated went back to the pool"
    );
    drop(port);
    drop(pool);
    drop(eal);
}
