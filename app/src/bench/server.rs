//! What the generator reads from the server under test: CPU time and RSS from `/proc` (given its
//! PID), and worker busy time from its admin endpoint's `/metrics` (given the URL). On DPDK the
//! server's cores spin, so only busy time says how much of them the load used.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where to read the server's figures.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The server's PID.
    pub pid: Option<u32>,
    /// The server's admin endpoint (`HOST:PORT`), serving `/metrics`.
    pub admin: Option<SocketAddr>,
}

/// One reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// CPU seconds (user + system).
    pub cpu: Option<f64>,
    /// Resident set size, bytes.
    pub rss: Option<u64>,
    /// Worker busy seconds, summed over workers.
    pub busy: Option<f64>,
}

/// The server over the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delta {
    /// CPU seconds used.
    pub cpu: Option<f64>,
    /// Worker busy seconds.
    pub busy: Option<f64>,
    /// RSS growth per connection, bytes.
    pub rss_per_conn: Option<f64>,
}

impl Probe {
    /// The server's RSS now, if its PID is known.
    pub fn rss(&self) -> Option<u64> {
        self.pid.and_then(|p| rss_bytes(&p.to_string()))
    }

    /// Read what can be read now.
    pub fn sample(&self) -> Sample {
        let pid = self.pid.map(|p| p.to_string());
        Sample {
            cpu: pid.as_deref().and_then(cpu_seconds),
            rss: pid.as_deref().and_then(rss_bytes),
            busy: self.admin.and_then(|a| match busy_seconds(a) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(admin = %a, error = %e, "cannot read the server's busy time");
                    None
                }
            }),
        }
    }
}

impl Sample {
    /// From this reading to `later`.
    pub fn delta(&self, later: &Sample) -> Delta {
        Delta {
            cpu: self.cpu.zip(later.cpu).map(|(a, b)| b - a),
            busy: self.busy.zip(later.busy).map(|(a, b)| b - a),
            rss_per_conn: None,
        }
    }
}

/// CPU seconds (user + system) of a process, from /proc.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// Resident set size of a process in bytes, from /proc.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The server's worker busy seconds, summed, from its `/metrics`.
pub fn busy_seconds(admin: SocketAddr) -> Result<f64, String> {
    let body = http_get(admin, "/metrics")?;
    sum_metric(&body, "hioload_worker_busy_seconds_total")
        .ok_or_else(|| "no hioload_worker_busy_seconds_total in /metrics".to_string())
}

/// Sum every sample of `name` in a Prometheus text exposition.
pub fn sum_metric(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue; // a longer name with this prefix
        }
        let value = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// A minimal HTTP/1.0 GET, enough for our own admin endpoint.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("{addr}: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("{addr}: {e}"))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "{addr}{path}: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_worker_of_a_metric_only() {
        let body = "# HELP hioload_worker_busy_seconds_total x\n\
                    hioload_worker_busy_seconds_total{worker=\"0\"} 1.5\n\
                    hioload_worker_busy_seconds_total{worker=\"1\"} 2.25\n\
                    hioload_worker_busy_seconds_totally 100\n";
        assert_eq!(
            sum_metric(body, "hioload_worker_busy_seconds_total"),
            Some(3.75)
        );
        assert_eq!(sum_metric(body, "hioload_other"), None);
    }

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id().to_string();
        assert!(rss_bytes(&me).is_some_and(|r| r > 0));
        assert!(cpu_seconds(&me).is_some());
    }
}
