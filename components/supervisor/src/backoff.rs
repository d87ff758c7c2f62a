//! Restart delays: exponential backoff with jitter, bounded by the manifest's `initial` and `max`.

use std::time::Duration;

use rand::Rng;

/// The delay before restart number `attempt` (0 for the first restart after a crash): the
/// exponential step `initial * 2^attempt` capped at `max`, then "equal jitter" (a uniform pick in
/// the upper half of the step) so that services that crashed together do not restart in lockstep;
/// never below `initial`, never above `max`.
pub fn delay(attempt: u32, initial: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let step = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(max);
    let half = step / 2;
    let jitter = if half.is_zero() {
        Duration::ZERO
    } else {
        rng.random_range(Duration::ZERO..=half)
    };
    (half + jitter).clamp(initial.min(max), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_stays_in_bounds() {
        let mut rng = rand::rng();
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(3));
        let mut previous_step_ceiling = Duration::ZERO;
        for attempt in 0..40 {
            let step = initial
                .saturating_mul(2u32.saturating_pow(attempt.min(31)))
                .min(max);
            for _ in 0..200 {
                let d = delay(attempt, initial, max, &mut rng);
                assert!(d >= initial && d <= max, "attempt {attempt}: {d:?}");
                assert!(
                    d <= step && d >= (step / 2).max(initial),
                    "attempt {attempt}: {d:?}"
                );
            }
            assert!(step >= previous_step_ceiling);
            previous_step_ceiling = step;
        }
        assert_eq!(delay(0, initial, max, &mut rng), initial);
    }
}
