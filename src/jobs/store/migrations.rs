//! The schema: the versioned migrations of each engine and the function that applies the ones
//! a database has not seen. Blocking.

use super::now_ms;
use super::sql::{first, Db, Val};
use crate::Result;

/// Schema versions, applied in order at start-up and recorded in `schema_migrations`. Never
/// edit a released one; add the next.
pub(super) const SQLITE_MIGRATIONS: &[&str] = &[
    // 1: jobs and the checkpoint index (IF NOT EXISTS: databases from before versioning).
    "CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        request_id TEXT,
        name TEXT NOT NULL,
        state INTEGER NOT NULL,
        device TEXT NOT NULL,
        submitted_spec TEXT NOT NULL,
        resolved_spec TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        started_ms INTEGER,
        finished_ms INTEGER,
        last_error TEXT NOT NULL DEFAULT '',
        step INTEGER NOT NULL DEFAULT 0,
        total_steps INTEGER NOT NULL,
        steps_per_second REAL NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        restarts INTEGER NOT NULL DEFAULT 0,
        metrics TEXT NOT NULL DEFAULT '{}'
    );
    CREATE UNIQUE INDEX IF NOT EXISTS jobs_request_id ON jobs(request_id) WHERE request_id <> '';
    CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
    CREATE TABLE IF NOT EXISTS checkpoints (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        step INTEGER NOT NULL,
        path TEXT NOT NULL,
        saved_ms INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        PRIMARY KEY (job_id, step)
    );",
    // 2: leases and metric points.
    "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE metric_points (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        seq INTEGER NOT NULL,
        step INTEGER NOT NULL,
        wall REAL NOT NULL,
        series TEXT NOT NULL,
        split TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;",
];

pub(super) const POSTGRES_MIGRATIONS: &[&str] = &[
    // 1: everything SQLite has after its migration 2; `seq` orders and pages the jobs.
    "CREATE TABLE jobs (
        seq BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        request_id TEXT,
        name TEXT NOT NULL,
        state BIGINT NOT NULL,
        device TEXT NOT NULL,
        submitted_spec TEXT NOT NULL,
        resolved_spec TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        started_ms BIGINT,
        finished_ms BIGINT,
        last_error TEXT NOT NULL DEFAULT '',
        step BIGINT NOT NULL DEFAULT 0,
        total_steps BIGINT NOT NULL,
        steps_per_second DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL DEFAULT 0,
        restarts BIGINT NOT NULL DEFAULT 0,
        metrics TEXT NOT NULL DEFAULT '{}',
        owner TEXT NOT NULL DEFAULT '',
        lease_until_ms BIGINT NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX jobs_request_id ON jobs(request_id) WHERE request_id <> '';
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE checkpoints (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        step BIGINT NOT NULL,
        path TEXT NOT NULL,
        saved_ms BIGINT NOT NULL,
        metrics TEXT NOT NULL,
        PRIMARY KEY (job_id, step)
    );
    CREATE TABLE metric_points (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        seq BIGINT NOT NULL,
        step BIGINT NOT NULL,
        wall DOUBLE PRECISION NOT NULL,
        series TEXT NOT NULL,
        split TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (job_id, seq)
    );",
];

/// Applies the migrations `db` has not seen (inside the caller's transaction).
pub(super) fn migrate(db: &mut dyn Db, migrations: &[&str]) -> Result<usize> {
    db.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_ms BIGINT NOT NULL
        )",
    )?;
    let have = first(
        db,
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        &[],
        |r| r.int(0),
    )?
    .unwrap_or(0);
    for (i, sql) in migrations.iter().enumerate().skip(have as usize) {
        let version = i as i64 + 1;
        db.batch(sql)?;
        db.exec(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
            &[Val::Int(version), Val::Int(now_ms())],
        )?;
        tracing::info!(version, "job store migrated");
    }
    Ok(migrations.len())
}
