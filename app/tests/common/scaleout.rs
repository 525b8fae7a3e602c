//! Scale-out scenarios shared by the kernel (`tests/scaleout.rs`) and DPDK (`tests/dpdk.rs`)
//! tests: nodes joined through one Redis, driven by real WebSocket clients.

use std::net::SocketAddr;

use serde_json::json;

use super::pubsub::Client;

/// Publish `n` messages as `user` on `channel` from a client of `addr`, each acknowledged.
pub fn publish_acked(addr: SocketAddr, channel: &str, user: &str, n: usize) -> Vec<u64> {
    let mut c = Client::connect(addr);
    c.join(channel, user);
    (0..n)
        .map(|i| {
            let r = c.call(
                json!({"type": "message", "channel": channel, "text": format!("{user}-{i}")}),
            );
            assert_eq!(r["type"], "ack", "{r}");
            r["seq"].as_u64().expect("seq")
        })
        .collect()
}

/// The next `n` messages of `channel` a member receives, as (seq, text).
pub fn messages(c: &mut Client, channel: &str, n: usize) -> Vec<(u64, String)> {
    (0..n)
        .map(|_| {
            let m = c.next_of("message", channel);
            (
                m["seq"].as_u64().expect("seq"),
                m["text"].as_str().expect("text").to_string(),
            )
        })
        .collect()
}

/// Members on every node (two on the first), three publishers on different nodes: every
/// member sees every message once, in one gap-free seq order, each publisher's in its order.
pub fn one_gap_free_order_across_nodes(nodes: &[SocketAddr]) {
    let mut at: Vec<SocketAddr> = nodes.to_vec();
    at.push(nodes[0]);
    let mut members: Vec<Client> = at
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let mut c = Client::connect(*addr);
            c.join("room", &format!("m{i}"));
            c
        })
        .collect();
    const N: usize = 200;
    let last = nodes[nodes.len() - 1];
    let publishers: Vec<_> = [
        (nodes[0], "pa"),
        (nodes[1 % nodes.len()], "pb"),
        (last, "pc"),
    ]
    .into_iter()
    .map(|(addr, user)| std::thread::spawn(move || publish_acked(addr, "room", user, N)))
    .collect();
    let mut acked: Vec<u64> = publishers
        .into_iter()
        .flat_map(|t| t.join().expect("publisher"))
        .collect();
    acked.sort_unstable();
    let all = 3 * N;
    assert_eq!(
        acked,
        (1..=all as u64).collect::<Vec<_>>(),
        "one seq each, no gaps"
    );
    let first = messages(&mut members[0], "room", all);
    assert_eq!(
        first.iter().map(|m| m.0).collect::<Vec<_>>(),
        (1..=all as u64).collect::<Vec<_>>()
    );
    for (i, m) in members.iter_mut().enumerate().skip(1) {
        assert_eq!(
            messages(m, "room", all),
            first,
            "member {i} saw another order"
        );
    }
    // Each publisher's own messages in the order it sent them.
    for user in ["pa", "pb", "pc"] {
        let mine: Vec<String> = first
            .iter()
            .filter(|m| m.1.starts_with(&format!("{user}-")))
            .map(|m| m.1.clone())
            .collect();
        let sent: Vec<String> = (0..N).map(|i| format!("{user}-{i}")).collect();
        assert_eq!(mine, sent);
    }
}
