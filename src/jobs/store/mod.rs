//! The job store: job records, their states, leases, the checkpoint index and every metric
//! point, in an embedded SQLite database (WAL, so a killed server loses nothing it
//! acknowledged) or in PostgreSQL shared by several replicas; the same SQL and versioned
//! migrations on both. This file is the API the job manager calls (the records, opening,
//! connections and transactions); the queries are grouped by what they touch: `jobs.rs`,
//! `leases.rs`, `points.rs` (the training log's metric points), `checkpoints.rs`. Blocking;
//! call it from job threads or `spawn_blocking`, never from the async runtime directly.

mod checkpoints;
mod jobs;
mod leases;
mod migrations;
mod points;
mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
mod url;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior};

use crate::jobs::JobState;
use crate::Result;
use sql::{Db, Engine};
pub use url::StoreUrl;

/// One job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    /// Client idempotency key ("" = none).
    pub request_id: String,
    pub name: String,
    pub state: JobState,
    pub device: String,
    pub submitted_spec: String,
    /// TOML of the spec the trainer runs (defaults filled, paths absolute).
    pub resolved_spec: String,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub last_error: String,
    pub step: u64,
    pub total_steps: u64,
    pub steps_per_second: f64,
    pub last_seq: u64,
    pub restarts: u32,
    pub metrics: BTreeMap<String, f64>,
    /// The replica whose lease the job runs under ("" = none).
    pub owner: String,
    /// When that lease ends unless renewed (Unix ms).
    pub lease_until_ms: i64,
}

/// One entry of the checkpoint index.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    pub step: u64,
    pub path: PathBuf,
    pub saved_ms: i64,
    pub metrics: BTreeMap<String, f64>,
}

/// Progress fields written while a job runs.
#[derive(Debug, Clone, Default)]
pub struct ProgressUpdate {
    pub step: u64,
    pub total_steps: u64,
    pub steps_per_second: f64,
    pub last_seq: u64,
    pub metrics: BTreeMap<String, f64>,
}

/// A job whose lease ran out, as taken over by [`Store::take_over`].
#[derive(Debug, Clone, PartialEq)]
pub enum TakenOver {
    /// Back in the queue (it has a checkpoint to resume from).
    Requeued,
    /// It was being cancelled: now CANCELLED.
    Cancelled,
    /// No checkpoint: FAILED with the reason.
    Failed,
}

pub use crate::clock::unix_ms as now_ms;

fn metrics_json(m: &BTreeMap<String, f64>) -> String {
    serde_json::to_string(m).expect("a metric map serialises. This is a bug.")
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    serde_json::from_str(text).unwrap_or_default()
}

enum Backend {
    Sqlite(Mutex<Connection>),
    Postgres {
        url: String,
        client: Box<Mutex<Option<::postgres::Client>>>,
    },
}

pub struct Store {
    backend: Backend,
}

impl Store {
    /// Opens (or creates) an SQLite database file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::connect(&StoreUrl::Sqlite(path.to_path_buf()))
    }

    /// Opens the store and applies its pending migrations (on PostgreSQL under an advisory
    /// lock, so replicas starting together migrate once).
    pub fn connect(url: &StoreUrl) -> Result<Self> {
        let store = match url {
            StoreUrl::Sqlite(path) => Store {
                backend: Backend::Sqlite(Mutex::new(sqlite::open(path)?)),
            },
            StoreUrl::Postgres(url) => Store {
                backend: Backend::Postgres {
                    url: url.clone(),
                    client: Box::new(Mutex::new(None)),
                },
            },
        };
        store.tx(|db| match db.engine() {
            Engine::Postgres => {
                db.batch(postgres::MIGRATION_LOCK)?;
                migrations::migrate(db, migrations::POSTGRES_MIGRATIONS)
            }
            Engine::Sqlite => migrations::migrate(db, migrations::SQLITE_MIGRATIONS),
        })?;
        Ok(store)
    }

    /// Whether other servers may share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Runs `f` on the connection, each statement on its own.
    fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => f(&mut sqlite::Lite(&lock(conn))),
            Backend::Postgres { .. } => {
                let mut guard = self.pg()?;
                let client = guard.as_mut().expect("connected by pg()");
                f(client)
            }
        }
    }

    /// Runs `f` in one transaction (SQLite: BEGIN IMMEDIATE, so two writers never interleave).
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let mut conn = lock(conn);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&mut sqlite::Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres { .. } => {
                let mut guard = self.pg()?;
                let client = guard.as_mut().expect("connected by pg()");
                let mut tx = client.transaction()?;
                let out = f(&mut tx)?;
                tx.commit()?;
                Ok(out)
            }
        }
    }

    /// The PostgreSQL client, (re)connected when there is none or the last one broke.
    fn pg(&self) -> Result<MutexGuard<'_, Option<::postgres::Client>>> {
        let Backend::Postgres { url, client } = &self.backend else {
            unreachable!("pg() on an SQLite store. This is a bug.")
        };
        let mut guard = lock(client);
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let mut c = ::postgres::Client::connect(url, ::postgres::NoTls)?;
            // Every transaction here is a few statements: one left idle for seconds belongs to
            // a frozen process (SIGSTOP, a stalled VM), and its row locks would block every
            // other replica's claim and take-over until it woke. PostgreSQL ends such a session.
            c.batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {}",
                IDLE_IN_TRANSACTION_MS
            ))?;
            *guard = Some(c);
        }
        Ok(guard)
    }

    /// Moves SQLite's write-ahead log into the database file and truncates it: frees the
    /// space the log holds when a write failed for lack of it (a full disk). A no-op on
    /// PostgreSQL.
    pub fn checkpoint_wal(&self) -> Result<()> {
        if let Backend::Sqlite(conn) = &self.backend {
            lock(conn).query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }
}

/// How long PostgreSQL lets one of this store's sessions sit idle inside a transaction.
const IDLE_IN_TRANSACTION_MS: u64 = 5000;

/// A poisoned lock is still usable: each call is one statement or one transaction, so a
/// panic while holding it cannot leave the database half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
