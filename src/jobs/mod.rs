//! Training jobs as a service: the [`manager::Manager`] that queues, claims, runs, cancels and
//! exports them, the leases that let several replicas share one store, the one [`JobState`]
//! and the job [`store`] (SQLite or PostgreSQL). Nothing here names gRPC types; `grpc/`
//! adapts it. Blocking; call from job threads or `spawn_blocking`.

pub mod config;
pub mod manager;
pub mod spec;
pub mod state;
pub mod store;

pub use manager::{checkpoint_id, Exported, Manager, Pick};
pub use spec::SpecDocument;
pub use state::JobState;

use std::collections::BTreeMap;

use crate::runlog::MetricPoint;

/// Where the job manager reports what it counts (in the server, its Prometheus registry).
pub trait Telemetry: Send + Sync {
    /// The number of jobs in each state (by `JobState as i32`).
    fn job_states(&self, counts: &BTreeMap<i32, u64>);
    /// One optimizer step of `job` that took `seconds`, with the points it logged.
    fn step(&self, job: &str, seconds: f64, points: &[MetricPoint]);
    /// One checkpoint written.
    fn checkpoint(&self);
}
