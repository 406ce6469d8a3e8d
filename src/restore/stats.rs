//! Per-model serving statistics (what Triton's statistics extension reports): counts and
//! cumulative durations of requests, queueing, decoding, forward passes and encoding since the
//! model was loaded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A count and the cumulative duration of what it counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub ns: u64,
}

impl Tally {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self
            .ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Where the time of one successful request went. A request of several images counts once:
/// `queue` and `infer` are the means over its images, `decode` and `encode` their sums.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimes {
    pub total: Duration,
    pub decode: Duration,
    pub queue: Duration,
    pub infer: Duration,
    pub encode: Duration,
}

/// The statistics of one model at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch of the last request that finished, 0 before the first.
    pub last_inference_ms: u64,
    /// Images restored.
    pub inference_count: u64,
    /// Forward passes run.
    pub execution_count: u64,
    pub success: Tally,
    pub fail: Tally,
    pub queue: Tally,
    pub compute_input: Tally,
    pub compute_infer: Tally,
    pub compute_output: Tally,
    /// Forward passes by the number of images in them.
    pub batches: BTreeMap<u64, Tally>,
}

/// The running statistics of a loaded model (updated by its batcher and the Restore path).
#[derive(Debug, Default)]
pub struct ModelStats(Mutex<Snapshot>);

impl ModelStats {
    fn with(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A forward pass of `images` images that took `took` and succeeded.
    pub fn batch(&self, images: usize, took: Duration) {
        self.with(|s| {
            s.execution_count += 1;
            s.inference_count += images as u64;
            s.batches.entry(images as u64).or_default().add(took);
        });
    }

    /// A request answered.
    pub fn succeeded(&self, t: RequestTimes) {
        self.with(|s| {
            s.success.add(t.total);
            s.queue.add(t.queue);
            s.compute_input.add(t.decode);
            s.compute_infer.add(t.infer);
            s.compute_output.add(t.encode);
            s.last_inference_ms = now_ms();
        });
    }

    /// A request for this model that failed after `took`.
    pub fn failed(&self, took: Duration) {
        self.with(|s| {
            s.fail.add(took);
            s.last_inference_ms = now_ms();
        });
    }

    /// Forgets everything counted so far (after the warm-up pass of a load).
    pub fn clear(&self) {
        self.with(|s| *s = Snapshot::default());
    }

    pub fn snapshot(&self) -> Snapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_once_and_batches_by_size() {
        let s = ModelStats::default();
        let ms = Duration::from_millis;
        s.batch(4, ms(40));
        s.batch(4, ms(20));
        s.batch(1, ms(5));
        s.succeeded(RequestTimes {
            total: ms(100),
            decode: ms(3),
            queue: ms(10),
            infer: ms(30),
            encode: ms(2),
        });
        s.failed(ms(7));
        let snap = s.snapshot();
        assert_eq!((snap.execution_count, snap.inference_count), (3, 9));
        assert_eq!(
            snap.batches[&4],
            Tally {
                count: 2,
                ns: 60_000_000
            }
        );
        assert_eq!(
            snap.batches[&1],
            Tally {
                count: 1,
                ns: 5_000_000
            }
        );
        assert_eq!(
            snap.success,
            Tally {
                count: 1,
                ns: 100_000_000
            }
        );
        assert_eq!(
            snap.fail,
            Tally {
                count: 1,
                ns: 7_000_000
            }
        );
        assert_eq!(snap.compute_infer.ns, 30_000_000);
        assert!(snap.last_inference_ms > 0);
        s.clear();
        assert_eq!(s.snapshot(), Snapshot::default());
    }
}
