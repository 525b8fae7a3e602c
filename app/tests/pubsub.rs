//! The `pubsub` mode on kernel sockets: the scenarios of `common/pubsub.rs` (every rule of
//! docs/PROTOCOL.md), and what only the kernel path has.

mod common;

use common::pubsub::{self as scenario};
use common::Appliance;

/// `hioload-ws pubsub --no-dpdk --workers N ARGS...`
fn kernel(workers: u16, args: &[&str]) -> Appliance {
    let w = workers.to_string();
    let mut all = vec!["--workers", w.as_str()];
    all.extend_from_slice(args);
    Appliance::start("pubsub", &all)
}

#[test]
fn join_publish_presence_history_leave() {
    scenario::join_publish_presence_history_leave(&kernel);
}

#[test]
fn every_error_code_without_auth() {
    scenario::every_error_code_without_auth(&kernel);
}

#[test]
fn channel_cap_answers_unavailable() {
    scenario::channel_cap_answers_unavailable(&kernel);
}

#[test]
fn three_publishers_two_workers_every_member_sees_one_order() {
    scenario::three_publishers_two_workers_every_member_sees_one_order(&kernel);
}

#[test]
fn presence_counts_users_not_connections() {
    scenario::presence_counts_users_not_connections(&kernel);
}

#[test]
fn gathered_presence_arrives_as_net_changes() {
    scenario::gathered_presence_arrives_as_net_changes(&kernel);
}

#[test]
fn recovery_with_since_inside_and_beyond_the_window() {
    scenario::recovery_with_since_inside_and_beyond_the_window(&kernel);
}

#[test]
fn server_api_publishes_and_reads_channels_and_presence_behind_a_token() {
    scenario::server_api_publishes_and_reads_channels_and_presence_behind_a_token(&kernel);
}

#[test]
fn chat_page_on_plain_get_and_figures_in_metrics() {
    scenario::chat_page_on_plain_get_and_figures_in_metrics(&kernel);
}

#[test]
fn auth_with_no_bad_expired_and_valid_tokens() {
    scenario::auth_with_no_bad_expired_and_valid_tokens(&kernel);
}

#[test]
fn a_member_that_never_reads_costs_bounded_memory_and_stops_nobody() {
    scenario::a_member_that_never_reads_costs_bounded_memory_and_stops_nobody(&kernel);
}

#[test]
fn admin_off_loopback_needs_a_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
        .args([
            "pubsub",
            "--no-dpdk",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
        ])
        .env_remove("HIOLOAD_ADMIN_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-token"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
}
