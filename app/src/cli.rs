//! Command-line interface: the flags, their defaults and their parsers.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// hioload-ws: a WebSocket network appliance (echo, raw TCP echo) on kernel sockets or DPDK.
#[derive(Debug, Parser)]
#[command(name = "hioload-ws", version = hioload_ws_version(), propagate_version = true)]
pub struct Cli {
    /// What to serve.
    #[command(subcommand)]
    pub mode: Mode,
}

fn hioload_ws_version() -> &'static str {
    // clap wants a 'static str; the build info is computed once per process.
    Box::leak(hioload_ws::build_info().into_boxed_str())
}

/// Modes of the appliance.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// WebSocket echo: every message comes back unchanged (text as text, binary as binary), on any path.
    // A flag given twice takes its last value: --config FILE puts its settings first, so flags win.
    #[command(args_override_self = true)]
    Echo(EchoArgs),
    /// Raw TCP echo: every byte comes back.
    #[command(args_override_self = true)]
    TcpEcho(TcpEchoArgs),
    /// WebSocket broadcast: every message any session sends goes to every session, on every
    /// worker, the sender included.
    #[command(args_override_self = true)]
    Broadcast(EchoArgs),
    /// Real-time pub/sub over WebSocket: channels, presence, history with recovery (JSON in
    /// text frames; docs/PROTOCOL.md).
    #[command(args_override_self = true)]
    Pubsub(PubSubArgs),
    /// Load generators that measure an appliance end to end.
    #[command(subcommand)]
    Bench(BenchKind),
}

/// What `bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// WebSocket echo load: N sessions, D messages in flight each, every echo verified byte for
    /// byte, round trips in an HDR histogram; progress each second, then a summary.
    Echo(BenchEchoArgs),
    /// Raw TCP echo load (for `tcp-echo`): the same, with messages as byte runs of the stream.
    Tcp(BenchTcpArgs),
    /// Open N idle WebSocket sessions as fast as the server accepts them and hold them: connect
    /// rate, errors, and the server's memory per connection (with --server-pid).
    Conns(BenchConnsArgs),
    /// Pub/sub load (for `pubsub`): --connections members spread over --channels channels, plus
    /// --publishers that publish at --rate (or as fast as acks come back); every delivery is
    /// checked for order (gaps counted) and timed from publish to delivery.
    Pubsub(BenchPubSubArgs),
}

/// Flags of `bench pubsub`.
#[derive(Debug, Args)]
pub struct BenchPubSubArgs {
    /// The pub/sub server's URL; give it again for more nodes of one service (`--redis`):
    /// generator worker W connects to URL W mod N, so with --workers N every node gets an
    /// equal share of the members and publishers (kernel sockets).
    #[arg(
        long,
        default_value = "ws://127.0.0.1:8080/",
        value_name = "ws://HOST:PORT/PATH",
        action = clap::ArgAction::Append
    )]
    pub url: Vec<String>,

    /// Channels (`bench-0`, `bench-1`, ...); members and publishers are spread over them.
    #[arg(long, default_value_t = 1, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub channels: u32,

    /// Publishing connections, in addition to --connections (they are members too).
    #[arg(long, default_value_t = 1, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub publishers: u32,

    /// Publishes per second over all publishers; `0`: as fast as the server acknowledges them,
    /// --depth unacknowledged per publisher.
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    pub rate: f64,

    /// Churning connections, in addition to --connections and --publishers: each joins and then
    /// leaves a channel, in turn, under a user name of its own, so that every join and leave
    /// is a presence change for that channel's members.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub churners: u32,

    /// Joins plus leaves per second over all --churners (one in flight per churner).
    #[arg(long, default_value_t = 100.0, value_name = "R")]
    pub churn_rate: f64,

    /// Text size of each message (and publishes in flight per publisher with --rate 0).
    #[command(flatten)]
    pub load: LoadArgs,

    /// --connections: members that only listen.
    #[command(flatten)]
    pub gen: GeneratorArgs,
}

/// Flags of `bench echo`.
#[derive(Debug, Args)]
pub struct BenchEchoArgs {
    /// The echo server's URL.
    #[arg(
        long,
        default_value = "ws://127.0.0.1:8080/",
        value_name = "ws://HOST:PORT/PATH"
    )]
    pub url: String,

    #[command(flatten)]
    pub load: LoadArgs,

    /// Send text messages (ASCII payloads) instead of binary.
    #[arg(long, conflicts_with = "binary")]
    pub text: bool,

    /// Send binary messages (the default).
    #[arg(long)]
    pub binary: bool,

    #[command(flatten)]
    pub gen: GeneratorArgs,
}

/// Flags of `bench tcp`.
#[derive(Debug, Args)]
pub struct BenchTcpArgs {
    /// The TCP echo server.
    #[arg(long, default_value = "127.0.0.1:9002", value_name = "HOST:PORT")]
    pub addr: String,

    #[command(flatten)]
    pub load: LoadArgs,

    #[command(flatten)]
    pub gen: GeneratorArgs,
}

/// Flags of `bench conns`.
#[derive(Debug, Args)]
pub struct BenchConnsArgs {
    /// The server's URL.
    #[arg(
        long,
        default_value = "ws://127.0.0.1:8080/",
        value_name = "ws://HOST:PORT/PATH"
    )]
    pub url: String,

    /// How long to hold the connections once the run starts (opening them is part of it).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub hold: Duration,

    #[command(flatten)]
    pub gen: GeneratorArgs,
}

/// The shape of an echo load.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1, value_name = "D", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub depth: u32,

    /// Payload size of each message.
    #[arg(long, default_value = "32", value_name = "SIZE", value_parser = parse_size)]
    pub size: u64,

    /// Measured time.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Duration,

    /// Time to run before measuring (connections are opened during it).
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Offer permessage-deflate (no context takeover either way, as browsers are usually
    /// answered) and compress what is sent when the server accepts (WebSocket loads only).
    #[arg(long)]
    pub deflate: bool,

    /// What payloads look like: `letters` (a repeated alphabet, which deflate squeezes to
    /// almost nothing) or `json` (chat-like JSON records, which compress like real traffic).
    #[arg(long, default_value = "letters", value_enum)]
    pub payload: PayloadKind,
}

/// What the generator's payloads look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadKind {
    /// The alphabet repeated.
    Letters,
    /// Pseudo-random chat-like JSON records.
    Json,
}

/// Flags every generator has: how many connections, from where, what to read from the server.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub connections: u32,

    /// PID of the server, to report its CPU time and RSS per connection (Linux /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// The server's admin endpoint, to report its worker busy time per message (on DPDK its
    /// cores spin, so CPU time says nothing).
    #[arg(long, value_name = "HOST:PORT")]
    pub server_admin: Option<SocketAddr>,

    /// Generator worker threads (kernel sockets; on DPDK, one per EAL lcore).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// CPUs to pin generator workers to, e.g. `1` or `2-3` (kernel sockets).
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,

    /// Source addresses to spread connections over (kernel sockets), so their number is not
    /// capped by one address's ephemeral ports [default: 127.0.0.0/8 for a loopback server, else
    /// the OS's choice].
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub source_range: Option<String>,

    /// Connects in progress at once, per worker (kernel sockets; on DPDK --max-half-open).
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connecting: u32,

    /// Consecutive addresses from --ip the generator uses on DPDK (at most 8), each good for
    /// 64,511 connections to one server port.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub ip_count: u8,

    /// Print one JSON line with the results instead of the table.
    #[arg(long)]
    pub json: bool,

    /// The generator's own DPDK port: giving --eal and --ip runs it on DPDK.
    #[command(flatten)]
    pub dpdk: DpdkArgs,
}

/// Flags of `echo` and `broadcast`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on [default: 127.0.0.1:8080; with DPDK, the --ip address, port 8080].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub ws: WsArgs,
    #[command(flatten)]
    pub dpdk: DpdkArgs,
}

/// Flags of `pubsub`.
#[derive(Debug, Args)]
pub struct PubSubArgs {
    /// Address to listen on [default: 127.0.0.1:8080; with DPDK, the --ip address, port 8080].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Messages each channel retains for `history` and recovery (`0`: none).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub history_size: u32,

    /// How long a retained message is kept; `0` keeps it until newer ones push it out.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = parse_optional_duration)]
    pub history_ttl: OptionalDuration,

    /// Longest text a `message` may carry; longer ones get error `too_large`.
    #[arg(long, default_value = "64KiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_publish_size: u64,

    /// Channels one connection may have joined at once; more get `too_many_channels`.
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_channels_per_connection: u32,

    /// Channels the appliance holds per worker; a join or publish that would create one more
    /// gets `unavailable`.
    #[arg(long, default_value_t = 100_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_channels: u32,

    /// Messages per second one connection may publish (bursts of the same size); beyond it,
    /// `rate_limited`. `0`: no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub publish_rate: u32,

    /// Require `?token=JWT` on the upgrade request, signed with HS256 under this secret; its
    /// `sub` is the session's user name (`exp`, `nbf` checked). Without one: HTTP 401. The chat
    /// page itself needs no token.
    #[arg(
        long,
        value_name = "SECRET",
        env = "HIOLOAD_AUTH_SECRET",
        hide_env_values = true
    )]
    pub auth_secret: Option<String>,

    /// Channels with more members than this send no presence events (joins and leaves);
    /// `presence` requests and `joined` still list the users.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub presence_limit: u32,

    /// Gather a channel's presence changes this long from the first and send them as one net
    /// change (a `presence` frame with `joined` and `left`; a user who came and went inside it
    /// is in neither): fewer frames when users come and go often. `0`: each change at once.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = parse_presence_interval)]
    pub presence_interval: Duration,

    /// Serve the channels together with other nodes through Redis (`redis://HOST:PORT/DB`):
    /// Redis numbers every message (one order on every node), keeps each channel's history
    /// (`--history-size` messages) and shares presence. The URL is checked at start.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// With --redis: commands sent to Redis as one pipeline, at most (1: a round trip each).
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536), requires = "redis")]
    pub redis_batch: u32,

    /// This node's name among the nodes (in presence entries and stored messages; unique per
    /// node) [default: HOSTNAME-PID].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// With --redis: how long a node's users stay present after it stops refreshing them (it
    /// refreshes every third of this); a node killed has its users leave within this.
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = parse_presence_ttl, requires = "redis")]
    pub presence_ttl: Duration,

    /// Store every message in PostgreSQL (`postgres://USER@HOST:PORT/DB`), written in batches
    /// off the workers; `history` pages older than the retained messages come from there, and
    /// without --redis a channel's seqs continue after the last stored one across restarts.
    /// The schema is created (and its version checked) at start.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,

    /// With --postgres: messages kept waiting while PostgreSQL is unreachable; past this the
    /// oldest are dropped (counted in hioload_archive_dropped_total, logged).
    #[arg(long, default_value_t = 100_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000_000), requires = "postgres")]
    pub pg_backlog: u32,

    /// With --postgres: rows per INSERT at most.
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000), requires = "postgres")]
    pub pg_batch: u32,

    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub ws: WsArgs,
    #[command(flatten)]
    pub dpdk: DpdkArgs,
}

/// Flags of `tcp-echo`.
#[derive(Debug, Args)]
pub struct TcpEchoArgs {
    /// Address to listen on [default: 127.0.0.1:9002; with DPDK, the --ip address, port 9002].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub dpdk: DpdkArgs,
}

/// Flags every mode has.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Use kernel sockets instead of DPDK. Implied in builds without the `dpdk` feature.
    #[arg(long)]
    pub no_dpdk: bool,

    /// Worker threads, each with its own listener and poller [default: one per --cpus entry,
    /// else one per available CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// CPUs to pin workers to, e.g. `0,2-3`; worker i runs on the i-th (cycling) [default: not pinned].
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,

    /// Connections open at once across all workers; more are closed right after accept
    /// [default: as many as the open-file limit allows, after raising it to the hard limit].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Close connections that receive nothing for this long; `0` disables.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = parse_optional_duration)]
    pub idle_timeout: OptionalDuration,

    /// Unsent output per connection beyond which the server stops reading from it, so TCP flow
    /// control pushes back on a client that sends without reading; output pushed to it from
    /// other sessions beyond this is dropped (see --slow-consumer).
    #[arg(long, default_value = "1MiB", value_name = "SIZE", value_parser = parse_size)]
    pub backpressure_limit: u64,

    /// A session whose unsent output is over --backpressure-limit misses what is pushed to it
    /// (counted); with `close`, it is also closed (WebSocket: 1008) if it is still over the
    /// limit after --slow-consumer-grace.
    #[arg(long, value_enum, default_value_t = SlowConsumerArg::Drop, value_name = "POLICY")]
    pub slow_consumer: SlowConsumerArg,

    /// How long a session may stay over its output limit under `--slow-consumer close`.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub slow_consumer_grace: Duration,

    /// Messages each worker's mailbox holds (posts from other workers and threads); a post to a
    /// full mailbox is refused and counted.
    #[arg(long, default_value_t = 8192, value_name = "N", value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub mailbox_capacity: u32,

    /// On SIGINT/SIGTERM: how long to wait for sessions to close before exiting.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log filter, e.g. `info` or `hioload_ws=debug,info` [default: $RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// After the last network event, keep polling without sleeping for this long (e.g. `50us`).
    /// Lowers latency and raises throughput at low concurrency, at the cost of CPU; `0` always
    /// sleeps in the poller. An idle server sleeps either way once this has passed.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = parse_optional_duration)]
    pub busy_poll: OptionalDuration,

    /// How accepted connections reach workers: `reuseport` (one SO_REUSEPORT listener per
    /// worker; Linux) or `shared` (one listener, connections handed round-robin to workers).
    #[arg(long, value_enum, value_name = "MODE")]
    pub accept_mode: Option<AcceptModeArg>,

    /// Settings from a TOML file, one key per flag (`idle_timeout = "30s"`, `workers = 2`);
    /// flags on the command line win. SIGHUP re-reads the keys that change at run time
    /// (log_level, idle_timeout, ping_interval, max_message, max_frame, backpressure_limit,
    /// max_connections).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Admin endpoint (`/`, `/metrics`, `/debug/probes`, `/config`, `/healthz`) on a kernel
    /// socket, also in DPDK mode; `off` disables it.
    #[arg(long, default_value = "127.0.0.1:9100", value_name = "ADDR:PORT|off", value_parser = parse_admin)]
    pub admin: AdminAddr,

    /// Bearer token that `/api/*` and `PUT /config` on the admin endpoint require
    /// (`Authorization: Bearer TOKEN`); required when --admin is not a loopback address.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HIOLOAD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

impl CommonArgs {
    /// What happens to connections that pushes would take over `--backpressure-limit`.
    pub fn slow_consumer(&self) -> hioload_ws::stack::SlowConsumer {
        match self.slow_consumer {
            SlowConsumerArg::Drop => hioload_ws::stack::SlowConsumer::Drop,
            SlowConsumerArg::Close => hioload_ws::stack::SlowConsumer::Close {
                grace: self.slow_consumer_grace,
            },
        }
    }
}

/// Where the admin endpoint listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddr(pub Option<SocketAddr>);

fn parse_admin(s: &str) -> Result<AdminAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminAddr(None));
    }
    s.parse()
        .map(|a| AdminAddr(Some(a)))
        .map_err(|_| format!("{s:?} is neither ADDR:PORT (e.g. 127.0.0.1:9100) nor `off`"))
}

/// WebSocket flags.
#[derive(Debug, Args)]
pub struct WsArgs {
    /// Largest message (all fragments together); larger ones are refused with close 1009.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_message: u64,

    /// Largest single frame; larger ones are refused with close 1009 [default: --max-message].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_frame: Option<u64>,

    /// Largest upgrade request head; larger ones get HTTP 431.
    #[arg(long, default_value = "8KiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_header_size: u64,

    /// Time allowed from accept to a complete upgrade request.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Send a ping at this interval and close sessions that leave two in a row unanswered
    /// (any traffic from the peer counts as an answer); `0` disables.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = parse_optional_duration)]
    pub ping_interval: OptionalDuration,

    /// After sending a close frame, how long to wait for the peer's before closing TCP.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// permessage-deflate (RFC 7692): `on` compresses with every client that offers it
    /// (browsers do), `off` never negotiates it.
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = parse_switch)]
    pub deflate: Switch,

    /// Largest LZ77 window the server compresses with, in bits (9-15; 15 is 32 KiB).
    #[arg(long, default_value_t = 15, value_name = "BITS", value_parser = clap::value_parser!(u8).range(9..=15))]
    pub deflate_window_bits: u8,

    /// Largest window asked of clients that let the server limit theirs, in bits (9-15).
    #[arg(long, default_value_t = 15, value_name = "BITS", value_parser = clap::value_parser!(u8).range(9..=15))]
    pub deflate_client_window_bits: u8,

    /// Keep the server's compression context from message to message: smaller messages, but a
    /// compressor per session (about 300 KiB once it has sent one) and broadcasts sent to it
    /// uncompressed. Off, one compressor per worker serves every session.
    #[arg(long)]
    pub deflate_server_takeover: bool,

    /// Let clients keep their compression context from message to message: smaller messages
    /// from them, but an inflate window per session (about 40 KiB once it has sent one).
    #[arg(long)]
    pub deflate_client_takeover: bool,

    /// Compression level, 0 (store) to 9 (smallest, slowest).
    #[arg(long, default_value_t = 1, value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub deflate_level: u8,

    /// Messages shorter than this are sent uncompressed.
    #[arg(long, default_value = "64", value_name = "SIZE", value_parser = parse_size)]
    pub deflate_min_size: u64,
}

/// An `on|off` flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch(pub bool);

/// Parse `on|off` (also `true|false`, `yes|no`, `1|0`).
pub fn parse_switch(s: &str) -> Result<Switch, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(Switch(true)),
        "off" | "false" | "no" | "0" => Ok(Switch(false)),
        _ => Err(format!("{s:?} is neither `on` nor `off`")),
    }
}

/// Options of the DPDK transport (builds with the `dpdk` feature; elsewhere giving one is an error).
#[derive(Debug, Args)]
pub struct DpdkArgs {
    /// EAL arguments, e.g. "-l 0 --no-huge -m 512 --vdev=net_tap0,iface=hl0" or "-l 2 -a 0000:3b:00.0"
    /// (DPDK transport only).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal: Option<String>,

    /// The appliance's IPv4 address and prefix on the DPDK port, e.g. 10.0.0.2/24 (DPDK only).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<String>,

    /// Default gateway for the DPDK port (DPDK only).
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<std::net::Ipv4Addr>,

    /// DPDK port to serve on (DPDK only) [default: 0].
    #[arg(long, value_name = "N")]
    pub port_id: Option<u16>,

    /// smoltcp receive buffer per connection: its TCP receive window (DPDK only). With
    /// --tcp-tx-buf it sets the most memory a connection uses: the two buffers plus about 1 KiB;
    /// a connection idle for a second gives its buffers' pages back and holds about 1 KiB
    /// [default: 16KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub tcp_rx_buf: Option<u64>,

    /// smoltcp send buffer per connection (DPDK only) [default: 16KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub tcp_tx_buf: Option<u64>,

    /// Connections not yet established at once; SYNs beyond are dropped (DPDK only) [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_half_open: Option<usize>,

    /// MTU of the DPDK port, 68 to 9000 (DPDK only) [default: the device's, usually 1500].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(68..=9000))]
    pub mtu: Option<u16>,

    /// Mbufs in the packet pool (DPDK only) [default: 16383].
    #[arg(long, value_name = "N")]
    pub mbufs: Option<u32>,

    /// When idle: `adaptive` backs off to short sleeps; `busy` polls without ever sleeping (DPDK only)
    /// [default: adaptive].
    #[arg(long, value_enum, value_name = "MODE")]
    pub poll_mode: Option<PollMode>,

    /// EAL arguments after `--`, appended to those of --eal (DPDK only).
    #[arg(last = true, value_name = "EAL ARGS")]
    pub eal_rest: Vec<String>,
}

impl DpdkArgs {
    /// Every EAL argument: --eal split on spaces, then those after `--`.
    #[cfg(feature = "dpdk")]
    pub fn eal_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .eal
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        args.extend(self.eal_rest.iter().cloned());
        args
    }

    /// The first DPDK-only flag given, if any.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            (self.eal.is_some(), "--eal"),
            (self.ip.is_some(), "--ip"),
            (self.gateway.is_some(), "--gateway"),
            (self.port_id.is_some(), "--port-id"),
            (self.tcp_rx_buf.is_some(), "--tcp-rx-buf"),
            (self.tcp_tx_buf.is_some(), "--tcp-tx-buf"),
            (self.max_half_open.is_some(), "--max-half-open"),
            (self.mbufs.is_some(), "--mbufs"),
            (self.mtu.is_some(), "--mtu"),
            (self.poll_mode.is_some(), "--poll-mode"),
            (!self.eal_rest.is_empty(), "EAL arguments after --"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }
}

/// `--slow-consumer` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowConsumerArg {
    /// Drop what does not fit; keep the session.
    Drop,
    /// Drop, and close the session if it stays over the limit for the grace period.
    Close,
}

/// DPDK idle behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PollMode {
    /// Spin briefly, then sleep up to 100 µs at a time while idle.
    Adaptive,
    /// Never sleep.
    Busy,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--accept-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcceptModeArg {
    /// One SO_REUSEPORT listener per worker.
    Reuseport,
    /// One listener; connections handed to workers.
    Shared,
}

/// A duration where zero means "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

/// Parse `5s`, `250ms`, `2m`, `1h 30m` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 5s, 250ms, 2m"))
}

/// Like [`parse_duration`], with `0`, `off` and `none` meaning disabled.
pub fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    match s.trim() {
        "0" | "off" | "none" => Ok(OptionalDuration(None)),
        other => parse_duration(other).map(|d| OptionalDuration((!d.is_zero()).then_some(d))),
    }
}

/// A presence interval: `0` or `off` (each change at once), or a duration of at most 10 s (a
/// longer one would leave members with a stale view for longer than anyone would want).
pub fn parse_presence_interval(s: &str) -> Result<Duration, String> {
    let d = parse_optional_duration(s)?.0.unwrap_or(Duration::ZERO);
    if d > Duration::from_secs(10) {
        return Err(format!("presence interval {s:?} is too long; at most 10s"));
    }
    Ok(d)
}

/// Parse `--presence-ttl`: 1 s to 1 h.
pub fn parse_presence_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 15s, 2s, 1m"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(format!("presence TTL {s:?} is out of range; use 1s to 1h"));
    }
    Ok(d)
}

/// Parse a byte size: `4096`, `8KiB`, `64MiB`, `1GiB`, `16k`, `2M` (K/M/G are binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; use e.g. 4096, 8KiB, 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}; use B, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A list of CPU numbers (one flag value, so clap does not treat it as repeated values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parse a CPU list such as `0,2-3`.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let bad = || format!("invalid CPU list {s:?}; use e.g. 0,2-3");
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = cpus.iter().find(|c| !seen.insert(**c)) {
        return Err(format!("CPU {dup} appears twice in {s:?}"));
    }
    Ok(CpuList(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_optional_duration("0"), Ok(OptionalDuration(None)));
        assert_eq!(parse_optional_duration("off"), Ok(OptionalDuration(None)));
        assert_eq!(
            parse_optional_duration("30s"),
            Ok(OptionalDuration(Some(Duration::from_secs(30))))
        );
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-3"), Ok(CpuList(vec![0, 2, 3])));
        assert_eq!(parse_cpu_list("1"), Ok(CpuList(vec![1])));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("0,0").is_err());
        assert!(parse_cpu_list("a").is_err());
    }
}
