//! The `hioload-ws` binary: parses flags, starts the transport with the chosen service, waits for
//! a signal, shuts down gracefully and reports what it did.

mod admin;
mod bench;
mod cli;
#[cfg(feature = "dpdk")]
mod dpdk;
mod live_config;
mod logging;
mod modes;
mod serve;
mod signals;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Mode};
use modes::broadcast::BroadcastMode;
use modes::echo::EchoMode;
use modes::pubsub::PubSubMode;
use modes::tcp_echo::TcpEchoMode;

fn main() -> ExitCode {
    let args = match live_config::expand_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hioload-ws: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line; details were logged where they happened.
            eprintln!("hioload-ws: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.mode {
        Mode::Echo(args) => {
            let common = &args.common;
            logging::init(common.log_level.as_deref(), common.log_format)?;
            let ws = modes::ws_config(&args.ws, common)?;
            serve::serve(EchoMode::new(ws), args.listen, common, &args.dpdk)
        }
        Mode::Broadcast(args) => {
            let common = &args.common;
            logging::init(common.log_level.as_deref(), common.log_format)?;
            let ws = modes::ws_config(&args.ws, common)?;
            serve::serve(BroadcastMode::new(ws), args.listen, common, &args.dpdk)
        }
        Mode::Pubsub(args) => {
            let common = &args.common;
            logging::init(common.log_level.as_deref(), common.log_format)?;
            let ws = modes::ws_config(&args.ws, common)?;
            let mut config = modes::pubsub_config(&args)?;
            let archive = modes::pubsub_archive(&args, &mut config)?;
            let bridge = modes::pubsub_bridge(&args, &mut config)?;
            let mode = PubSubMode::new(ws, config, bridge, archive);
            serve::serve(mode, args.listen, common, &args.dpdk)
        }
        Mode::TcpEcho(args) => {
            let common = &args.common;
            logging::init(common.log_level.as_deref(), common.log_format)?;
            let mode = TcpEchoMode::new(common.idle_timeout.0);
            serve::serve(mode, args.listen, common, &args.dpdk)
        }
        Mode::Bench(kind) => {
            logging::init(Some("warn"), cli::LogFormat::Text)?;
            bench::command(kind)
        }
    }
}
