//! Range checks of settings: each returns `Some(error)` naming the flag or key it checks,
//! so that callers can collect every problem before reporting them together.

use std::time::Duration;

use crate::Error;

/// The longest any duration flag may be: a day (so sums with clocks cannot overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// `Some(error)` naming `flag` unless `lo <= v <= hi`.
pub fn range<T: PartialOrd + std::fmt::Display>(flag: &str, v: T, lo: T, hi: T) -> Option<Error> {
    if v < lo {
        Some(Error::invalid(
            flag,
            format!("must be at least {lo}, got {v}"),
        ))
    } else if v > hi {
        Some(Error::invalid(
            flag,
            format!("must be at most {hi}, got {v}"),
        ))
    } else {
        None
    }
}
/// `Some(error)` naming `flag` when `v` is zero.
pub fn positive(flag: &str, v: usize) -> Option<Error> {
    range(flag, v, 1, usize::MAX)
}
/// `Some(error)` naming `flag` when `d` is longer than [`MAX_DURATION`].
pub fn at_most_a_day(flag: &str, d: Duration) -> Option<Error> {
    (d > MAX_DURATION).then(|| {
        Error::invalid(
            flag,
            format!("must be at most a day, got {} s", d.as_secs_f64()),
        )
    })
}

/// True for a finite range [low, high] with 0 <= low <= high.
pub fn range_ok([lo, hi]: [f32; 2]) -> bool {
    lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi
}
