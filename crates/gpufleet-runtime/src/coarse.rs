//! Coarse clocks for the request path: the kernel's `CLOCK_REALTIME_COARSE` and
//! `CLOCK_MONOTONIC_COARSE`, read from the vDSO without touching the clock hardware (~3 ns
//! against ~23 ns for the precise clocks on the benchmark box), accurate to one scheduler tick
//! (1–4 ms). For what needs milliseconds, not microseconds: key expiry, the `Date` header,
//! idle timers of connections. Latencies are measured with `Instant`.
//!
//! Why: a proxied completion read the clock about a dozen times; nginx reads it once per event
//! loop turn. `docs/benchmarks.md` has the profile.

use rustix::time::{clock_gettime, ClockId, Timespec};

fn ms(t: Timespec) -> i64 {
    t.tv_sec.saturating_mul(1000).saturating_add(t.tv_nsec / 1_000_000)
}

/// Milliseconds since the Unix epoch, to within a scheduler tick (0 before 1970).
pub fn unix_ms() -> i64 {
    ms(clock_gettime(ClockId::RealtimeCoarse)).max(0)
}

/// Milliseconds on the monotonic clock (the clock `std::time::Instant` reads), to within a
/// scheduler tick. Only differences mean anything.
pub fn mono_ms() -> u64 {
    ms(clock_gettime(ClockId::MonotonicCoarse)).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    #[test]
    fn the_coarse_wall_clock_is_within_a_tick_of_the_precise_one() {
        let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let coarse = unix_ms();
        // The coarse clock lags by at most one tick (≤ 10 ms on any HZ); never ahead by more
        // than the time between the two reads.
        assert!((precise - coarse).abs() < 50, "precise {precise} coarse {coarse}");
    }

    #[test]
    fn the_coarse_monotonic_clock_follows_instant() {
        let (c0, i0) = (mono_ms(), Instant::now());
        let mut spins = 0u64;
        while i0.elapsed() < Duration::from_millis(30) {
            spins += 1;
            std::hint::black_box(spins);
        }
        let (c1, i1) = (mono_ms(), i0.elapsed());
        let coarse = c1 - c0;
        let precise = i1.as_millis() as u64;
        assert!(coarse + 20 >= precise && coarse <= precise + 20, "coarse {coarse} ms, precise {precise} ms");
    }
}
