//! Pub/sub scenarios, run on kernel sockets (`tests/pubsub.rs`) and on DPDK over a TAP with the
//! kernel's TCP as client (`tests/dpdk.rs`): every rule of docs/PROTOCOL.md, driven by real
//! WebSocket clients (`tungstenite`), mostly with two workers so that channels are homed on a
//! worker other than their members'.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::{eventually, http_get, http_request, metric_sum, Appliance};

/// Starts the appliance in `pubsub` mode with this many workers and these flags.
pub type Start<'a> = &'a dyn Fn(u16, &[&str]) -> Appliance;

/// A pub/sub client on a blocking socket.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub next_id: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).expect("upgrade");
        Self { ws, next_id: 1 }
    }

    pub fn send(&mut self, v: &Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .expect("send request");
    }

    pub fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// The next text frame, as JSON.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read a frame") {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sends JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Send `v` with a fresh id; return the reply carrying that id, and what arrived before it.
    pub fn request(&mut self, mut v: Value) -> (Value, Vec<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = json!(id);
        self.send(&v);
        let mut before = Vec::new();
        loop {
            let m = self.recv();
            if m["id"] == json!(id) {
                return (m, before);
            }
            before.push(m);
        }
    }

    pub fn call(&mut self, v: Value) -> Value {
        self.request(v).0
    }

    pub fn join(&mut self, channel: &str, user: &str) -> Value {
        let r = self.call(json!({"type": "join", "channel": channel, "user": user}));
        assert_eq!(r["type"], "joined", "{r}");
        r
    }

    /// Skip frames until one of type `kind` on `channel`.
    pub fn next_of(&mut self, kind: &str, channel: &str) -> Value {
        loop {
            let m = self.recv();
            if m["type"] == kind && m["channel"] == channel {
                return m;
            }
        }
    }
}

pub fn users(v: &Value, key: &str) -> Vec<String> {
    let mut u: Vec<String> = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .iter()
        .map(|x| x.as_str().expect("user name").to_string())
        .collect();
    u.sort();
    u
}

pub fn seqs(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("array: {v}"))
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

/// The body of an HTTP response, and its status.
pub fn status_body(resp: &str) -> (u16, &str) {
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {resp}"));
    (status, resp.split_once("\r\n\r\n").map_or("", |(_, b)| b))
}

pub fn join_publish_presence_history_leave(start: Start<'_>) {
    let app = start(2, &[]);
    let mut ann = Client::connect(app.addr);
    let mut bob = Client::connect(app.addr);

    let j = ann.join("lobby", "ann");
    assert_eq!(j["users"], json!(["ann"]));
    assert_eq!(j["history"], json!([]));
    assert_eq!(j["seq"], 0);
    assert_eq!(j["channel"], "lobby");

    let (ack, before) = ann.request(json!({"type":"message","channel":"lobby","text":"hello"}));
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["seq"], 1);
    // The sender gets its own message (before or after the ack).
    let own = if let Some(m) = before.first() {
        m.clone()
    } else {
        ann.next_of("message", "lobby")
    };
    assert_eq!(own["text"], "hello");
    assert_eq!(own["user"], "ann");
    assert_eq!(own["seq"], 1);
    let ts = own["ts"].as_u64().expect("ts");
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(ts <= wall && wall - ts < 60_000, "ts {ts} vs now {wall}");

    // Bob joins: history and users; ann sees him arrive.
    let j = bob.join("lobby", "bob");
    assert_eq!(users(&j, "users"), ["ann", "bob"]);
    assert_eq!(seqs(&j["history"]), [1]);
    assert_eq!(j["history"][0]["text"], "hello");
    assert_eq!(j["seq"], 1);
    assert!(j.get("recovered").is_none());
    let p = ann.next_of("presence", "lobby");
    assert_eq!(p["joined"], json!(["bob"]));

    // A message without an id: broadcast to both, no ack.
    bob.send(&json!({"type":"message","channel":"lobby","text":"hi ann"}));
    for c in [&mut ann, &mut bob] {
        let m = c.next_of("message", "lobby");
        assert_eq!(
            (m["user"].as_str(), m["seq"].as_u64()),
            (Some("bob"), Some(2))
        );
        assert!(m.get("id").is_none());
    }

    let p = bob.call(json!({"type":"presence","channel":"lobby"}));
    assert_eq!(p["type"], "presence");
    assert_eq!(users(&p, "users"), ["ann", "bob"]);

    let h = bob.call(json!({"type":"history","channel":"lobby","limit":1}));
    assert_eq!(h["type"], "history");
    assert_eq!(seqs(&h["messages"]), [2]);
    let h = bob.call(json!({"type":"history","channel":"lobby","before":2}));
    assert_eq!(seqs(&h["messages"]), [1]);

    // Joining again is a fresh `joined`, not a second presence.
    let again = bob.join("lobby", "bob");
    assert_eq!(again["seq"], 2);
    assert_eq!(users(&again, "users"), ["ann", "bob"]);

    let l = bob.call(json!({"type":"leave","channel":"lobby"}));
    assert_eq!(l, json!({"type":"left","id":l["id"],"channel":"lobby"}));
    let p = ann.next_of("presence", "lobby");
    assert_eq!(p["left"], json!(["bob"]));
    let e = bob.call(json!({"type":"message","channel":"lobby","text":"gone"}));
    assert_eq!(e["code"], "not_joined");

    // A closed connection leaves every channel.
    let mut cid = Client::connect(app.addr);
    cid.join("lobby", "cid");
    assert_eq!(ann.next_of("presence", "lobby")["joined"], json!(["cid"]));
    drop(cid);
    assert_eq!(ann.next_of("presence", "lobby")["left"], json!(["cid"]));
}

pub fn every_error_code_without_auth(start: Start<'_>) {
    let app = start(2, &["--publish-rate", "5", "--max-publish-size", "1KiB"]);
    let mut c = Client::connect(app.addr);
    let code = |c: &mut Client, req: &str| {
        c.send_raw(req);
        let e = c.recv();
        assert_eq!(e["type"], "error", "{req} -> {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e["code"].as_str().expect("code").to_string()
    };
    for (req, want) in [
        ("not json at all", "bad_request"),
        ("[1,2,3]", "bad_request"),
        (r#"{"channel":"x"}"#, "bad_request"),
        (r#"{"type":"subscribe","channel":"x"}"#, "bad_request"),
        (r#"{"type":"join","user":"u"}"#, "bad_request"),
        (r#"{"type":"join","channel":"x"}"#, "bad_request"),
        (r#"{"type":"join","channel":"x","user":42}"#, "bad_request"),
        (
            r#"{"type":"join","channel":"a b","user":"u"}"#,
            "bad_channel",
        ),
        (r#"{"type":"join","channel":"","user":"u"}"#, "bad_channel"),
        (
            r#"{"type":"join","channel":"x","user":"a\u0001b"}"#,
            "bad_user",
        ),
        (r#"{"type":"join","channel":"x","user":""}"#, "bad_user"),
        (
            r#"{"type":"message","channel":"x","text":"t"}"#,
            "not_joined",
        ),
        (r#"{"type":"history","channel":"x"}"#, "not_joined"),
        (r#"{"type":"presence","channel":"x"}"#, "not_joined"),
        (r#"{"type":"leave","channel":"x"}"#, "not_joined"),
    ] {
        assert_eq!(code(&mut c, req), want, "{req}");
    }
    // Ids come back on errors too, even when the rest of the request is broken.
    c.send_raw(r#"{"type":"join","id":"q-1","channel":7}"#);
    let e = c.recv();
    assert_eq!(
        (e["id"].as_str(), e["code"].as_str()),
        (Some("q-1"), Some("bad_request"))
    );

    c.join("x", "ann");
    let big = "a".repeat(1025);
    let e = c.call(json!({"type":"message","channel":"x","text":big}));
    assert_eq!(e["code"], "too_large");
    // The session stays open after errors; a 1 MiB text too.
    let e = c.call(json!({"type":"message","channel":"x","text":"b".repeat(1 << 20)}));
    assert_eq!(e["code"], "too_large");

    // 5 per second with a burst of 5: of 20 sent at once, the first 5 go out (plus what the
    // bucket refills while they arrive) and the rest are refused.
    for i in 0..20 {
        c.send(&json!({"type":"message","channel":"x","text":format!("m{i}"),"id":1000 + i}));
    }
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < 20 {
        let r = c.recv();
        match (r["type"].as_str(), r["code"].as_str()) {
            (Some("ack"), _) => acked += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            (Some("message"), _) => {}
            other => panic!("unexpected {other:?}: {r}"),
        }
    }
    assert!(
        acked >= 5 && limited >= 10,
        "acked {acked}, limited {limited}"
    );

    // 2,000 joins on one connection: the first 128 work (x is one of them).
    let mut c2 = Client::connect(app.addr);
    let mut ok = 0;
    let mut refused = 0;
    for i in 0..2000 {
        c2.send(&json!({"type":"join","channel":format!("ch{i}"),"user":"u"}));
    }
    for _ in 0..2000 {
        let r = c2.recv();
        match r["type"].as_str() {
            Some("joined") => ok += 1,
            Some("error") => {
                assert_eq!(r["code"], "too_many_channels");
                refused += 1
            }
            _ => {}
        }
    }
    assert_eq!((ok, refused), (128, 1872));

    // A binary frame closes the session with 1003.
    c.ws.send(Message::binary(vec![1, 2, 3])).expect("send");
    loop {
        match c.ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1003);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected close 1003, got {e}"),
        }
    }
}

pub fn channel_cap_answers_unavailable(start: Start<'_>) {
    let app = start(1, &["--max-channels", "2"]);
    let mut c = Client::connect(app.addr);
    c.join("one", "u");
    c.join("two", "u");
    let e = c.call(json!({"type":"join","channel":"three","user":"u"}));
    assert_eq!(e["code"], "unavailable");
    c.call(json!({"type":"leave","channel":"two"}));
    c.join("three", "u"); // "two" had no history and no members: gone
}

pub fn three_publishers_two_workers_every_member_sees_one_order(start: Start<'_>) {
    let app = start(2, &["--history-size", "0"]);
    const PER: usize = 300;
    let mut subs: Vec<Client> = (0..6)
        .map(|i| {
            let mut c = Client::connect(app.addr);
            c.join("order", &format!("sub{i}"));
            c
        })
        .collect();
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let addr = app.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.join("order", &format!("pub{p}"));
                for i in 0..PER {
                    c.send(&json!({"type":"message","channel":"order","text":format!("{p}:{i}")}));
                }
                // Messages arrive here too (those after its `joined`): read up to the last one,
                // so that it is a member like any other.
                while c.recv()["seq"] != json!(3 * PER) {}
            })
        })
        .collect();
    for (n, s) in subs.iter_mut().enumerate() {
        let mut next_seq = 1;
        let mut next_of: HashMap<String, usize> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while next_seq <= 3 * PER as u64 {
            assert!(
                Instant::now() < deadline,
                "subscriber {n} stalled at {next_seq}"
            );
            let m = s.recv();
            if m["type"] != "message" {
                continue;
            }
            assert_eq!(m["seq"], next_seq, "subscriber {n}: seq in order, no gap");
            next_seq += 1;
            let text = m["text"].as_str().expect("text");
            let (p, i) = text.split_once(':').expect("p:i");
            let want = next_of.entry(p.to_string()).or_default();
            assert_eq!(
                i.parse::<usize>().ok(),
                Some(*want),
                "publisher {p}'s order"
            );
            *want += 1;
        }
    }
    for p in publishers {
        p.join().expect("publisher");
    }
}

pub fn presence_counts_users_not_connections(start: Start<'_>) {
    let app = start(2, &[]);
    let mut ann = Client::connect(app.addr);
    ann.join("room", "ann");
    let mut bob1 = Client::connect(app.addr);
    bob1.join("room", "bob");
    assert_eq!(ann.next_of("presence", "room")["joined"], json!(["bob"]));
    let mut bob2 = Client::connect(app.addr);
    let j = bob2.join("room", "bob");
    assert_eq!(users(&j, "users"), ["ann", "bob"]);
    drop(bob1);
    // Still present through the second connection: no `left`, and presence lists bob.
    let p = ann.call(json!({"type":"presence","channel":"room"}));
    assert_eq!(users(&p, "users"), ["ann", "bob"]);
    bob2.call(json!({"type":"leave","channel":"room"}));
    let left = ann.next_of("presence", "room");
    assert_eq!(left["left"], json!(["bob"]));
    let p = ann.call(json!({"type":"presence","channel":"room"}));
    assert_eq!(users(&p, "users"), ["ann"]);
}

/// `--presence-interval`: changes of one interval arrive as one net change; a user who came and
/// went inside it is in neither list; `joined` and `presence` list the users as of the last
/// change sent, so a view built from them stays exact.
pub fn gathered_presence_arrives_as_net_changes(start: Start<'_>) {
    let app = start(2, &["--presence-interval", "300ms"]);
    let mut ann = Client::connect(app.addr);
    ann.join("room", "ann");
    // Ann's own arrival comes as a change too (she was not yet sent): wait for it.
    assert_eq!(ann.next_of("presence", "room")["joined"], json!(["ann"]));
    let mut bob = Client::connect(app.addr);
    let mut carl = Client::connect(app.addr);
    let mut dan = Client::connect(app.addr);
    let t0 = Instant::now();
    bob.join("room", "bob");
    carl.join("room", "carl");
    carl.call(json!({"type":"leave","channel":"room"}));
    let j = dan.join("room", "dan");
    // As sent (ann; bob's arrival is still gathered), plus dan himself.
    assert_eq!(users(&j, "users"), ["ann", "dan"]);
    let change = ann.next_of("presence", "room");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "sent within the interval's order of magnitude"
    );
    assert_eq!(users(&change, "joined"), ["bob", "dan"], "{change}");
    assert!(change.get("left").is_none(), "carl came and went: {change}");
    // Bob leaves and ann asks: the answer is as of the last change sent (bob still listed), and
    // the next change removes him.
    bob.call(json!({"type":"leave","channel":"room"}));
    let p = ann.call(json!({"type":"presence","channel":"room"}));
    assert_eq!(users(&p, "users"), ["ann", "bob", "dan"]);
    let change = ann.next_of("presence", "room");
    assert_eq!(change["left"], json!(["bob"]), "{change}");
    assert!(change.get("joined").is_none(), "{change}");
    let p = ann.call(json!({"type":"presence","channel":"room"}));
    assert_eq!(users(&p, "users"), ["ann", "dan"]);
}

pub fn recovery_with_since_inside_and_beyond_the_window(start: Start<'_>) {
    let app = start(2, &["--history-size", "10"]);
    let mut p = Client::connect(app.addr);
    p.join("feed", "pub");
    for i in 1..=25 {
        let ack = p.call(json!({"type":"message","channel":"feed","text":format!("m{i}")}));
        assert_eq!(ack["seq"], i);
    }
    let mut c = Client::connect(app.addr);
    let j = c.call(json!({"type":"join","channel":"feed","user":"late","since":20}));
    assert_eq!(j["recovered"], true);
    assert_eq!(seqs(&j["history"]), [21, 22, 23, 24, 25]);
    assert_eq!(j["seq"], 25);
    let mut c = Client::connect(app.addr);
    let j = c.call(json!({"type":"join","channel":"feed","user":"later","since":3}));
    assert_eq!(j["recovered"], false, "4..15 are gone");
    assert_eq!(seqs(&j["history"]), (16..=25).collect::<Vec<_>>());
    // Without since: the last min(50, retained).
    let mut c = Client::connect(app.addr);
    let j = c.join("feed", "plain");
    assert_eq!(seqs(&j["history"]).len(), 10);
    assert!(j.get("recovered").is_none());
}

pub fn server_api_publishes_and_reads_channels_and_presence_behind_a_token(start: Start<'_>) {
    let app = start(2, &["--admin-token", "s3cret"]);
    let admin = app.admin().expect("admin endpoint");
    let auth = "Authorization: Bearer s3cret\r\n";
    let mut ann = Client::connect(app.addr);
    ann.join("news", "ann");

    let body = r#"{"channel":"news","text":"from the API","user":"editor"}"#;
    for headers in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: s3cret\r\n",
    ] {
        let resp = http_request(admin, "POST", "/api/publish", headers, body);
        assert_eq!(status_body(&resp).0, 401, "{headers:?}: {resp}");
        assert!(resp.contains("WWW-Authenticate: Bearer"));
    }
    let resp = http_request(admin, "PUT", "/config", "", "idle_timeout = \"5s\"");
    assert_eq!(status_body(&resp).0, 401, "PUT /config needs the token too");
    // Reading metrics needs none.
    assert_eq!(status_body(&http_get(admin, "/metrics")).0, 200);

    let resp = http_request(admin, "POST", "/api/publish", auth, body);
    let (status, answer) = status_body(&resp);
    assert_eq!(status, 200, "{resp}");
    let answer: Value = serde_json::from_str(answer).expect("JSON");
    assert_eq!(answer["seq"], 1);
    let m = ann.next_of("message", "news");
    assert_eq!(
        (m["user"].as_str(), m["text"].as_str(), m["seq"].as_u64()),
        (Some("editor"), Some("from the API"), Some(1))
    );

    // Published to a channel nobody joined: it exists for its history.
    let resp = http_request(
        admin,
        "POST",
        "/api/publish",
        auth,
        r#"{"channel":"empty","text":"x","user":"bot"}"#,
    );
    assert_eq!(status_body(&resp).0, 200);
    let resp = http_request(admin, "GET", "/api/channels", auth, "");
    let (status, list) = status_body(&resp);
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(list).expect("JSON");
    assert_eq!(
        list,
        json!({"channels":[{"name":"empty","members":0},{"name":"news","members":1}]})
    );

    let resp = http_request(admin, "GET", "/api/presence?channel=news", auth, "");
    let presence: Value = serde_json::from_str(status_body(&resp).1).expect("JSON");
    assert_eq!(presence["users"], json!(["ann"]));

    for (req_body, status, code) in [
        ("not json", 400, "bad_request"),
        (r#"{"channel":"news","text":"x"}"#, 400, "bad_request"),
        (
            r#"{"channel":"bad name","text":"x","user":"u"}"#,
            400,
            "bad_channel",
        ),
        (
            r#"{"channel":"news","text":"x","user":""}"#,
            400,
            "bad_user",
        ),
    ] {
        let resp = http_request(admin, "POST", "/api/publish", auth, req_body);
        let (got, body) = status_body(&resp);
        assert_eq!(got, status, "{req_body}: {resp}");
        let e: Value = serde_json::from_str(body).expect("JSON error");
        assert_eq!(e["code"], code, "{req_body}");
    }
    let big = format!(
        r#"{{"channel":"news","text":"{}","user":"u"}}"#,
        "x".repeat(70_000)
    );
    let resp = http_request(admin, "POST", "/api/publish", auth, &big);
    assert_eq!(
        status_body(&resp).0,
        413,
        "over --max-publish-size (64 KiB)"
    );
    let resp = http_request(admin, "GET", "/api/presence", auth, "");
    assert_eq!(status_body(&resp).0, 400, "no channel given");
    let resp = http_request(admin, "GET", "/api/nothing", auth, "");
    assert_eq!(status_body(&resp).0, 404);
}

pub fn chat_page_on_plain_get_and_figures_in_metrics(start: Start<'_>) {
    let app = start(2, &[]);
    let admin = app.admin().expect("admin endpoint");
    let (status, page) = {
        let resp = http_get(app.addr, "/");
        let (s, b) = status_body(&resp);
        (s, b.to_string())
    };
    assert_eq!(status, 200);
    assert!(page.contains("<title>hioload-ws chat</title>"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resources"
    );
    assert_eq!(status_body(&http_get(app.addr, "/elsewhere")).0, 426);

    let mut a = Client::connect(app.addr);
    let mut b = Client::connect(app.addr);
    a.join("m", "a");
    b.join("m", "b");
    for i in 0..10 {
        a.call(json!({"type":"message","channel":"m","text":format!("{i}")}));
    }
    a.send_raw("nonsense");
    assert_eq!(a.recv()["code"], "bad_request");
    assert!(
        eventually(Duration::from_secs(5), || {
            metric_sum(admin, "hioload_pubsub_publishes_total", "") == 10.0
                && metric_sum(admin, "hioload_pubsub_deliveries_total", "") >= 20.0
                && metric_sum(admin, "hioload_pubsub_errors_total", "code=\"bad_request\"") == 1.0
                && metric_sum(admin, "hioload_pubsub_members", "") == 2.0
                && metric_sum(admin, "hioload_pubsub_channels", "") == 1.0
                && metric_sum(admin, "hioload_pubsub_history_bytes", "") > 10.0 * 60.0
        }),
        "{}",
        http_get(admin, "/metrics")
    );
    assert_eq!(metric_sum(admin, "hioload_pubsub_dropped_total", ""), 0.0);
}

pub fn auth_with_no_bad_expired_and_valid_tokens(start: Start<'_>) {
    use hioload_ws::pubsub::auth::Verifier;
    let app = start(2, &["--auth-secret", "k3y"]);
    let v = Verifier::new(b"k3y");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // The upgrade's outcome: the session, or the HTTP status that refused it.
    let upgrade = |query: &str| -> Result<WebSocket<TcpStream>, u16> {
        let stream = TcpStream::connect(app.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        match tungstenite::client(format!("ws://{}/{query}", app.addr), stream) {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                Err(resp.status().as_u16())
            }
            Err(e) => panic!("{query}: {e}"),
        }
    };
    let refused = |query: &str| match upgrade(query) {
        Err(status) => status,
        Ok(_) => panic!("{query}: accepted"),
    };
    assert_eq!(refused(""), 401, "no token");
    assert_eq!(refused("?token=abc.def.ghi"), 401, "garbage");
    let foreign = Verifier::new(b"other").sign(r#"{"sub":"ann"}"#);
    assert_eq!(refused(&format!("?token={foreign}")), 401, "another secret");
    let expired = v.sign(&format!(r#"{{"sub":"ann","exp":{}}}"#, now - 10));
    assert_eq!(refused(&format!("?token={expired}")), 401, "expired");
    let nosub = v.sign(&format!(r#"{{"exp":{}}}"#, now + 600));
    assert_eq!(refused(&format!("?token={nosub}")), 401, "no sub");

    let valid = v.sign(&format!(r#"{{"sub":"ann","exp":{}}}"#, now + 600));
    let ws = upgrade(&format!("?x=1&token={valid}")).expect("a valid token is accepted");
    let mut ann = Client { ws, next_id: 1 };
    // The token names the user: `user` may be left out, and must not differ.
    let j = ann.call(json!({"type":"join","channel":"vip"}));
    assert_eq!(
        (j["type"].as_str(), j["users"].clone()),
        (Some("joined"), json!(["ann"]))
    );
    let e = ann.call(json!({"type":"join","channel":"other","user":"mallory"}));
    assert_eq!(e["code"], "forbidden");
    let j = ann.call(json!({"type":"join","channel":"other","user":"ann"}));
    assert_eq!(j["type"], "joined");
    let m = ann.call(json!({"type":"message","channel":"vip","text":"hi"}));
    assert_eq!(m["type"], "ack");

    // The chat page needs no token.
    assert_eq!(status_body(&http_get(app.addr, "/")).0, 200);
}

/// A client text frame (masked, as clients must), for sockets driven by hand.
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x1b, 0x2c, 0x3d, 0x4e];
    let len = text.len();
    let mut f = vec![0x81];
    match len {
        0..=125 => f.push(0x80 | len as u8),
        _ => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

pub fn a_member_that_never_reads_costs_bounded_memory_and_stops_nobody(start: Start<'_>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const MESSAGES: u64 = 50_000;
    const READERS: usize = 3;
    let app = start(2, &[]);
    let admin = app.admin().expect("admin endpoint");

    // The silent member: joins, then never reads again (4 KiB receive buffer).
    let mut silent = super::fanout::silent_session(app.addr);
    silent
        .write_all(&masked_text(
            r#"{"type":"join","channel":"firehose","user":"sleepy"}"#,
        ))
        .expect("send the join");
    let mut readers = Vec::new();
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    for r in 0..READERS {
        let mut c = Client::connect(app.addr);
        c.join("firehose", &format!("reader{r}"));
        let progress = Arc::clone(&progress);
        readers.push(std::thread::spawn(move || {
            let mut next = 1;
            while next <= MESSAGES {
                let m = c.recv();
                if m["type"] != "message" {
                    continue;
                }
                assert_eq!(m["seq"], next, "reader {r}: every message, in order");
                progress[r].store(next, Ordering::Relaxed);
                next += 1;
            }
        }));
    }
    let mut publisher = Client::connect(app.addr);
    publisher.join("firehose", "pub");
    let before = app.rss();
    let text = "x".repeat(100);
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 1..=MESSAGES {
        // Paced by the slowest reader (at most 2,000 ahead), never by the silent member.
        while progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
            + 2000
            < i
        {
            assert!(Instant::now() < deadline, "readers stalled at message {i}");
            std::thread::sleep(Duration::from_millis(1));
        }
        publisher.send(&json!({"type":"message","channel":"firehose","text":text}));
        // The publisher is a member too: drain what it is sent now and then.
        if i % 500 == 0 {
            let ack = publisher.call(json!({"type":"presence","channel":"firehose"}));
            assert_eq!(ack["type"], "presence");
        }
    }
    for r in readers {
        r.join().expect("a reader failed");
    }
    let grown = app.rss().saturating_sub(before);
    // 50,000 messages of ~160 bytes are 8 MB; the silent member's output stops at its limit
    // (1 MiB), the history at 100 messages.
    assert!(grown < 24 << 20, "RSS grew by {grown} bytes");
    assert!(
        eventually(Duration::from_secs(5), || {
            metric_sum(admin, "hioload_pubsub_dropped_total", "cause=\"slow\"") > 0.0
        }),
        "the silent member's drops are counted"
    );
    assert_eq!(
        metric_sum(admin, "hioload_pubsub_dropped_total", "cause=\"mailbox\""),
        0.0
    );
    drop(silent);
}
