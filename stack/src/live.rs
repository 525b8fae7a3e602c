//! Settings that change while serving (`PUT /config`, SIGHUP): the admin thread stores new values
//! and bumps a generation ([`Published`]); each worker compares the generation once per loop
//! iteration and copies the values into its own config. [`LiveLimits`] are the transport's.

use std::sync::atomic::{AtomicU64, Ordering};

/// `N` values published together by one writer: it stores them and bumps a generation;
/// readers compare the generation with the one they last saw (one relaxed-acquire load when
/// nothing changed) and copy the values out when it moved.
#[derive(Debug)]
pub struct Published<const N: usize> {
    generation: AtomicU64,
    values: [AtomicU64; N],
}

impl<const N: usize> Default for Published<N> {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl<const N: usize> Published<N> {
    /// Publish `values`.
    pub fn set(&self, values: [u64; N]) {
        for (a, v) in self.values.iter().zip(values) {
            a.store(v, Ordering::Relaxed);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The values, if they changed since generation `seen` (which is updated).
    pub fn changed(&self, seen: &mut u64) -> Option<[u64; N]> {
        let g = self.generation.load(Ordering::Acquire);
        if g == *seen {
            return None;
        }
        *seen = g;
        Some(std::array::from_fn(|i| {
            self.values[i].load(Ordering::Relaxed)
        }))
    }
}

/// The live transport limits.
#[derive(Debug, Default)]
pub struct LiveLimits(Published<2>);

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
        self.0
            .set([limits.backpressure_limit, limits.max_connections]);
    }

    /// The limits, if they changed since generation `seen` (which is updated).
    pub fn changed(&self, seen: &mut u64) -> Option<Limits> {
        self.0
            .changed(seen)
            .map(|[backpressure_limit, max_connections]| Limits {
                backpressure_limit,
                max_connections,
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
