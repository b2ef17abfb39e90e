//! Speed limits across all channels of a job (`job.setting.speed.record` and `.byte`).
//!
//! One shared schedule per limit: each batch books `n / rate` seconds after the previous
//! booking, and the worker that booked it sleeps until its slot (less a small burst allowance).
//! Because the booking is shared, N channels together stay within the limit, and because batches
//! book their real size, the limit holds whatever the batch size. The clock is injected so the
//! schedule can be checked without sleeping (`tests` below); this is a few lines of arithmetic,
//! which is why it is not a rate-limiter crate whose burst capacity must exceed a batch.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time as the throttle sees it.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary fixed start.
    fn now(&self) -> Duration;
    /// Blocks until `now()` reaches `deadline`.
    fn sleep_until(&self, deadline: Duration);
}

/// The real clock; sleeps block the calling (blocking-pool) thread.
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep_until(&self, deadline: Duration) {
        std::thread::sleep(deadline.saturating_sub(self.now()));
    }
}

/// How far ahead of the schedule a worker may run: smooths the first batches without letting
/// the long-run rate drift.
const BURST: Duration = Duration::from_millis(50);

struct Schedule {
    per_unit: f64,
    /// When the booked work is due to be done, in seconds on the clock.
    booked_until: Mutex<f64>,
}

impl Schedule {
    fn new(rate: u64) -> Self {
        Self {
            per_unit: 1.0 / rate.max(1) as f64,
            booked_until: Mutex::new(0.0),
        }
    }

    /// Books `units`; returns how long the caller must wait.
    fn book(&self, units: u64, now: f64) -> f64 {
        let mut until = self.booked_until.lock().unwrap_or_else(|p| p.into_inner());
        let start = until.max(now - BURST.as_secs_f64());
        *until = start + units as f64 * self.per_unit;
        (*until - now - BURST.as_secs_f64()).max(0.0)
    }
}

/// The job's limits; `acquire` is called once per batch by reader workers.
pub struct Throttle {
    records: Option<Schedule>,
    bytes: Option<Schedule>,
    clock: Arc<dyn Clock>,
}

impl Throttle {
    pub fn new(
        records_per_sec: Option<u64>,
        bytes_per_sec: Option<u64>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            records: records_per_sec.filter(|r| *r > 0).map(Schedule::new),
            bytes: bytes_per_sec.filter(|b| *b > 0).map(Schedule::new),
            clock,
        }
    }

    pub fn unlimited() -> Self {
        Self::new(None, None, Arc::new(SystemClock::default()))
    }

    pub fn is_limited(&self) -> bool {
        self.records.is_some() || self.bytes.is_some()
    }

    /// Books `records` records of `bytes` bytes; answers when the caller may go on, on the
    /// clock, if it must wait.
    fn book(&self, records: u64, bytes: u64) -> Option<Duration> {
        if !self.is_limited() {
            return None;
        }
        let now = self.clock.now().as_secs_f64();
        let wait_r = self.records.as_ref().map_or(0.0, |s| s.book(records, now));
        let wait_b = self.bytes.as_ref().map_or(0.0, |s| s.book(bytes, now));
        let wait = wait_r.max(wait_b);
        (wait > 0.0).then(|| Duration::from_secs_f64(now + wait))
    }

    /// Waits until `records` records of `bytes` bytes fit the limits, blocking the thread.
    pub fn acquire(&self, records: u64, bytes: u64) {
        if let Some(deadline) = self.book(records, bytes) {
            self.clock.sleep_until(deadline);
        }
    }

    /// [`Throttle::acquire`] for async code: the task sleeps, not the thread.
    pub async fn acquire_async(&self, records: u64, bytes: u64) {
        if let Some(deadline) = self.book(records, bytes) {
            tokio::time::sleep(deadline.saturating_sub(self.clock.now())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that only moves when someone sleeps to a later deadline.
    #[derive(Default)]
    struct ManualClock(Mutex<Duration>);

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
        fn sleep_until(&self, deadline: Duration) {
            let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // Time never goes back: a sleeper whose deadline passed wakes at once.
            *now = (*now).max(deadline);
        }
    }

    #[test]
    fn record_limit_holds_within_ten_percent() {
        let clock = Arc::new(ManualClock::default());
        let t = Throttle::new(Some(10_000), None, clock.clone());
        for _ in 0..100 {
            t.acquire(1024, 0);
        }
        // 102,400 records at 10,000/s: 10.24 s of schedule.
        let took = clock.now().as_secs_f64();
        let rate = 102_400.0 / took;
        assert!(
            (9_000.0..=11_000.0).contains(&rate),
            "rate {rate:.0}/s over {took:.2}s"
        );
    }

    #[test]
    fn byte_limit_binds_when_tighter() {
        let clock = Arc::new(ManualClock::default());
        let t = Throttle::new(Some(1_000_000), Some(1_000_000), clock.clone());
        for _ in 0..50 {
            t.acquire(100, 100_000);
        }
        let rate = 5_000_000.0 / clock.now().as_secs_f64();
        assert!(
            (900_000.0..=1_100_000.0).contains(&rate),
            "byte rate {rate:.0}/s"
        );
    }

    #[test]
    fn shared_by_channels_the_total_holds() {
        let clock = Arc::new(ManualClock::default());
        let t = Arc::new(Throttle::new(Some(5_000), None, clock.clone()));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        t.acquire(1000, 0);
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        // 100,000 records booked on one schedule at 5,000/s: the last booking ends at 20 s;
        // whichever thread slept last moved the clock there.
        let rate = 100_000.0 / clock.now().as_secs_f64();
        assert!((4_500.0..=5_500.0).contains(&rate), "rate {rate:.0}/s");
    }

    #[test]
    fn unlimited_never_sleeps() {
        let clock = Arc::new(ManualClock::default());
        let t = Throttle::new(None, Some(0), clock.clone());
        t.acquire(1_000_000, 1 << 30);
        assert_eq!(clock.now(), Duration::ZERO);
    }
}
