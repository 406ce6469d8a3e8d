//! Training jobs as a service: the [`manager::Manager`] that queues, claims, runs, cancels and
//! exports them, the leases that let several replicas share one store, the one [`JobState`]
//! and the job [`store`] (SQLite or PostgreSQL). Nothing here names gRPC types; `grpc/`
//! adapts it. Blocking; call from job threads or `spawn_blocking`.

mod lease;
pub mod manager;
pub mod spec;
pub mod state;
pub mod store;

pub use manager::{checkpoint_id, Exported, Manager, Pick};
pub use spec::SpecDocument;
pub use state::JobState;
