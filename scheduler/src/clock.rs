//! The scheduler's one source of time.
//!
//! Every decision that depends on time (leases, start timeouts, and later cycle times, retry
//! intervals and generation) reads this clock instead of the system's, so tests can run days of
//! schedules in seconds with a [`ManualClock`] and a restarted scheduler carries on from the times
//! recorded in its commands, not from its memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// The system's wall clock shifted by a fixed amount: a scheduler started with
/// `--clock-offset-secs` lives at another time of day (benchmarks and drills replay a chosen day
/// at real speed). Every scheduler of a cluster needs the same offset.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    pub offset_ms: i64,
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(self.offset_ms)
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicI64::new(start_ms),
        })
    }

    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock as a shared handle.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The system clock shifted by `offset_ms` (none: the system clock itself).
pub fn shifted(offset_ms: i64) -> SharedClock {
    if offset_ms == 0 {
        system()
    } else {
        Arc::new(OffsetClock { offset_ms })
    }
}
