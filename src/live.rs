//! WebSocket settings that change while serving (`PUT /config`, SIGHUP): the admin thread stores
//! them and bumps a generation; each worker's [`crate::WsService`] compares the generation once
//! per loop iteration ([`hioload_stack::Service::on_tick`]) and copies them into its config.
//! The idle timeout applies to every session at once (the transport re-arms their timers); the
//! ping interval and the size limits to sessions opened afterwards.

use std::time::Duration;

use hioload_stack::live::Published;
use hioload_wsproto::Limits;

/// "Off" for a duration.
const OFF: u64 = u64::MAX;

/// The live WebSocket settings.
#[derive(Debug, Default)]
pub struct LiveWs(Published<4>);

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
        self.0.set([
            to_ms(s.idle_timeout),
            to_ms(s.ping_interval),
            s.limits.max_message,
            s.limits.max_frame,
        ]);
    }

    /// The settings, if they changed since generation `seen` (which is updated).
    pub fn changed(&self, seen: &mut u64) -> Option<WsSettings> {
        self.0
            .changed(seen)
            .map(|[idle, ping, max_message, max_frame]| WsSettings {
                idle_timeout: from_ms(idle),
                ping_interval: from_ms(ping),
                limits: Limits {
                    max_message,
                    max_frame,
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
