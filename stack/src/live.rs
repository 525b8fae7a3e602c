//! Transport limits that change while serving (`PUT /config`, SIGHUP): the admin thread stores
//! new values and bumps a generation; each worker compares the generation once per loop
//! iteration (one relaxed load when nothing changed) and copies the values into its own config.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live transport limits.
#[derive(Debug, Default)]
pub struct LiveLimits {
    generation: AtomicU64,
    backpressure_limit: AtomicU64,
    max_connections: AtomicU64,
}

/// One reading of [`LiveLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unsent output per connection above which its input is not read.
    pub backpressure_limit: u64,
    /// Connections open at once, over all workers.
    pub max_connections: u64,
}

impl LiveLimits {
    /// Limits starting at `limits`.
    pub fn new(limits: Limits) -> Self {
        let l = Self::default();
        l.set(limits);
        l
    }

    /// Publish new limits.
    pub fn set(&self, limits: Limits) {
        self.backpressure_limit
            .store(limits.backpressure_limit, Ordering::Relaxed);
        self.max_connections
            .store(limits.max_connections, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The limits, if they changed since generation `seen` (which is updated).
    pub fn changed(&self, seen: &mut u64) -> Option<Limits> {
        let g = self.generation.load(Ordering::Acquire);
        if g == *seen {
            return None;
        }
        *seen = g;
        Some(Limits {
            backpressure_limit: self.backpressure_limit.load(Ordering::Relaxed),
            max_connections: self.max_connections.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_once() {
        let l = LiveLimits::new(Limits {
            backpressure_limit: 1,
            max_connections: 2,
        });
        let mut seen = 0;
        assert_eq!(
            l.changed(&mut seen).map(|x| x.max_connections),
            Some(2),
            "the first look sees the start values"
        );
        assert_eq!(l.changed(&mut seen), None);
        l.set(Limits {
            backpressure_limit: 5,
            max_connections: 6,
        });
        assert_eq!(
            l.changed(&mut seen),
            Some(Limits {
                backpressure_limit: 5,
                max_connections: 6
            })
        );
        assert_eq!(l.changed(&mut seen), None);
    }
}
