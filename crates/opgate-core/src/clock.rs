//! Where the gateway reads the time. Everything that decides by time (expiry, rotation grace, session `exp`,
//! rate limits, idempotency retention, audit timestamps) asks a [`Clock`], so tests move time with a
//! [`ManualClock`] instead of sleeping.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Timestamp;

/// A source of wall-clock and monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, for timestamps and expiry.
    fn now(&self) -> Timestamp;
    /// Time since an arbitrary fixed origin that never goes back, for rate limits.
    fn monotonic(&self) -> Duration;
    /// Wall-clock time in unix microseconds, for what instances of a fleet must agree on (shared rate limits).
    fn now_micros(&self) -> i64 {
        self.now().unix() * 1_000_000
    }
}

/// The operating system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock {
            origin: Instant::now(),
        })
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn now_micros(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    }
}

/// A clock that only moves when told to: tests set it and advance it, and every time decision follows.
#[derive(Debug)]
pub struct ManualClock {
    start: i64,
    unix: AtomicI64,
    monotonic_ms: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn at(start: Timestamp) -> Arc<Self> {
        Arc::new(ManualClock {
            start: start.unix(),
            unix: AtomicI64::new(start.unix()),
            monotonic_ms: AtomicU64::new(0),
        })
    }

    /// Moves both clocks forward by `by` (wall-clock time in whole seconds, rounded down).
    pub fn advance(&self, by: Duration) {
        self.monotonic_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        self.unix.fetch_add(by.as_secs() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.unix.load(Ordering::SeqCst))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.monotonic_ms.load(Ordering::SeqCst))
    }

    fn now_micros(&self) -> i64 {
        self.start * 1_000_000 + self.monotonic_ms.load(Ordering::SeqCst) as i64 * 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::at(Timestamp(1_000));
        assert_eq!(
            (clock.now(), clock.monotonic()),
            (Timestamp(1_000), Duration::ZERO)
        );
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now(), Timestamp(1_001));
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
    }
}
