//! Rate-limited warnings for events that can come in floods (dropped messages, refused
//! connections): the first occurrence is logged at once, later ones at most once per
//! interval with the number that happened meanwhile. The counters in `Stats` stay exact;
//! only the log lines are thinned out, so an overloaded broker does not also fill the
//! journal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most one line per event kind in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One event kind's throttle: lock-free, and one relaxed load on the common path.
#[derive(Debug, Default)]
pub struct LogThrottle {
    /// Milliseconds since `epoch()` before which nothing is logged (0: log now).
    quiet_until_ms: AtomicU64,
    /// Occurrences not yet reported.
    pending: AtomicU64,
}

impl LogThrottle {
    /// Records one occurrence. Returns the number of occurrences to report (this one
    /// included) when a line should be logged now, `None` while throttled.
    pub fn occurred(&self, now: Instant) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now_ms = millis_since_epoch(now);
        let quiet_until = self.quiet_until_ms.load(Ordering::Relaxed);
        if now_ms < quiet_until {
            return None;
        }
        let next = now_ms + LOG_INTERVAL.as_millis() as u64;
        // Only the caller that moves the window forward logs.
        self.quiet_until_ms
            .compare_exchange(quiet_until, next, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

fn millis_since_epoch(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    // `+ 1` keeps 0 free to mean "never logged".
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_logs_then_one_line_per_interval_with_the_count() {
        let throttle = LogThrottle::default();
        let start = Instant::now();
        assert_eq!(throttle.occurred(start), Some(1));
        assert_eq!(throttle.occurred(start + Duration::from_millis(1)), None);
        assert_eq!(throttle.occurred(start + Duration::from_secs(5)), None);
        let later = start + LOG_INTERVAL + Duration::from_millis(1);
        assert_eq!(throttle.occurred(later), Some(3));
        assert_eq!(throttle.occurred(later), None);
        assert_eq!(throttle.occurred(later + LOG_INTERVAL), Some(2));
    }
}
