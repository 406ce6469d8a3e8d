//! The one wall clock: Unix time, as the metric log (`wall`), job records, leases and
//! manifests store it. A clock before 1970 reads as 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch (job records, leases, fences).
pub fn unix_ms() -> i64 {
    since_epoch().as_millis() as i64
}

/// Whole seconds since the Unix epoch (manifests, checkpoint metadata).
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Seconds since the Unix epoch with a fraction (metric points' `wall`).
pub fn unix_secs_f64() -> f64 {
    since_epoch().as_secs_f64()
}
