//! `PackedInstant`: an optional `Instant` in 8 bytes. `Option<Instant>` takes 16 (a
//! second count and a nanosecond count), and every session keeps one (when its last
//! connection went away), so this is 8 bytes of every idle connection's memory
//! (BENCHMARKS.md, "Memory per idle connection").
//!
//! It holds nanoseconds relative to a process-wide origin (the first instant packed),
//! signed, so an instant before the origin (a session restored with the time it was
//! detached before the restart) packs as well: ±292 years around it, exactly.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PackedInstant(i64);

/// No instant: no real instant is 292 years before the origin.
const NONE: i64 = i64::MIN;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl PackedInstant {
    pub(super) const NONE: PackedInstant = PackedInstant(NONE);

    pub(super) fn at(at: Instant) -> PackedInstant {
        let origin = origin();
        let nanos = |span: Duration| i64::try_from(span.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(origin) {
            Some(after) => PackedInstant(nanos(after)),
            None => PackedInstant(-nanos(origin.duration_since(at))),
        }
    }

    pub(super) fn get(self) -> Option<Instant> {
        if self.0 == NONE {
            return None;
        }
        let origin = origin();
        let span = Duration::from_nanos(self.0.unsigned_abs());
        Some(if self.0 >= 0 {
            origin + span
        } else {
            origin.checked_sub(span).unwrap_or(origin)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_before_and_after_the_origin_come_back_exactly() {
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(86_400 * 365),
            now.checked_sub(Duration::from_secs(3_600)).unwrap_or(now),
            now.checked_sub(Duration::from_nanos(7)).unwrap_or(now),
        ] {
            assert_eq!(PackedInstant::at(at).get(), Some(at));
        }
        assert_eq!(PackedInstant::NONE.get(), None);
    }

    #[test]
    fn an_optional_instant_packs_into_8_bytes() {
        assert_eq!(std::mem::size_of::<PackedInstant>(), 8);
    }
}
