//! How a caller steers a training run from another thread: the stop flag and lease fence it
//! checks at step boundaries, and the events it reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::runlog::MetricPoint;

use crate::clock::unix_ms;

/// Why a run was asked to stop early (stored in [`Control::stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum StopReason {
    /// Keep running.
    None = 0,
    /// The user cancelled the job.
    Cancel = 1,
    /// The process is shutting down; the job resumes from the checkpoint on the next start.
    Shutdown = 2,
    /// The run's lease ended (another server may have taken the job over): stop at once and
    /// write nothing more — no checkpoint, no export.
    Lost = 3,
}

impl StopReason {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Cancel,
            2 => Self::Shutdown,
            3 => Self::Lost,
            _ => Self::None,
        }
    }
}

/// What a run reports to whoever drives it (the job manager), in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// Data loaded, networks built; steps `start_step + 1 ..= total` follow.
    Started { start_step: u64, total: u64 },
    /// A step finished; `points` were appended to the metric log (validation points included).
    Step {
        step: u64,
        total: u64,
        /// Seconds this step took (data wait, forward, backward, update, logging).
        seconds: f64,
        /// Mean seconds per step over this invocation (validation and checkpoints excluded).
        seconds_per_step: f64,
        points: Vec<MetricPoint>,
    },
    /// A checkpoint was written (and `pruned` ones removed).
    Checkpoint {
        step: u64,
        dir: PathBuf,
        metrics: BTreeMap<String, f64>,
        pruned: Vec<u64>,
    },
}

/// How a caller steers a run from another thread: a stop flag checked at every step boundary,
/// a lease fence, and a bounded channel of [`Event`]s (the run blocks when it is full).
#[derive(Clone)]
pub struct Control {
    pub stop: Arc<AtomicU8>,
    pub events: tokio::sync::mpsc::Sender<Event>,
    /// Unix ms after which the run may no longer write (0 = never): past it the run stops as
    /// [`StopReason::Lost`] before its next step, checkpoint or export. The job manager moves
    /// it forward each time it renews the job's lease.
    pub fence_ms: Arc<AtomicI64>,
}

impl Control {
    pub fn stop_reason(&self) -> StopReason {
        let fence = self.fence_ms.load(Ordering::Acquire);
        if fence > 0 && unix_ms() >= fence {
            return StopReason::Lost;
        }
        StopReason::from_u8(self.stop.load(Ordering::Acquire))
    }

    pub(super) fn lost(control: Option<&Control>) -> bool {
        control.is_some_and(|c| c.stop_reason() == StopReason::Lost)
    }

    pub(super) fn send(&self, event: Event) {
        // A receiver that went away only means nobody listens any more; the run goes on.
        let _ = self.events.blocking_send(event);
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("stop", &self.stop_reason())
            .finish_non_exhaustive()
    }
}
