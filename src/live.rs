//! WebSocket settings that change while serving (`PUT /config`, SIGHUP): the admin thread stores
//! them and bumps a generation; each worker's [`crate::WsService`] compares the generation once
//! per loop iteration ([`hioload_stack::Service::on_tick`]) and copies them into its config.
//! The idle timeout applies to every session at once (the transport re-arms their timers); the
//! ping interval and the size limits to sessions opened afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hioload_wsproto::Limits;

/// "Off" for a duration.
const OFF: u64 = u64::MAX;

/// The live WebSocket settings.
#[derive(Debug, Default)]
pub struct LiveWs {
    generation: AtomicU64,
    idle_timeout_ms: AtomicU64,
    ping_interval_ms: AtomicU64,
    max_message: AtomicU64,
    max_frame: AtomicU64,
}

/// One reading of [`LiveWs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsSettings {
    /// Close sessions that receive nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// Ping at this interval.
    pub ping_interval: Option<Duration>,
    /// Frame and message size limits.
    pub limits: Limits,
}

fn to_ms(d: Option<Duration>) -> u64 {
    d.map_or(OFF, |d| u64::try_from(d.as_millis()).unwrap_or(OFF - 1))
}

fn from_ms(ms: u64) -> Option<Duration> {
    (ms != OFF).then(|| Duration::from_millis(ms))
}

impl LiveWs {
    /// Settings starting at `s`.
    pub fn new(s: WsSettings) -> Self {
        let l = Self::default();
        l.set(s);
        l
    }

    /// Publish new settings.
    pub fn set(&self, s: WsSettings) {
        self.idle_timeout_ms
            .store(to_ms(s.idle_timeout), Ordering::Relaxed);
        self.ping_interval_ms
            .store(to_ms(s.ping_interval), Ordering::Relaxed);
        self.max_message
            .store(s.limits.max_message, Ordering::Relaxed);
        self.max_frame.store(s.limits.max_frame, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The settings, if they changed since generation `seen` (which is updated).
    pub fn changed(&self, seen: &mut u64) -> Option<WsSettings> {
        let g = self.generation.load(Ordering::Acquire);
        if g == *seen {
            return None;
        }
        *seen = g;
        Some(WsSettings {
            idle_timeout: from_ms(self.idle_timeout_ms.load(Ordering::Relaxed)),
            ping_interval: from_ms(self.ping_interval_ms.load(Ordering::Relaxed)),
            limits: Limits {
                max_message: self.max_message.load(Ordering::Relaxed),
                max_frame: self.max_frame.load(Ordering::Relaxed),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_off_values() {
        let s = WsSettings {
            idle_timeout: None,
            ping_interval: Some(Duration::from_secs(3)),
            limits: Limits {
                max_message: 100,
                max_frame: 50,
            },
        };
        let l = LiveWs::new(s);
        let mut seen = 0;
        assert_eq!(l.changed(&mut seen), Some(s));
        assert_eq!(l.changed(&mut seen), None);
    }
}
