//! The job store: job records, their states and the checkpoint index in one embedded SQLite
//! database (WAL, so a killed server loses nothing it acknowledged). Blocking; call it from
//! job threads or `spawn_blocking`, never from the async runtime directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{Error, Result};

/// A job's lifecycle state (numbers as in the proto's `JobState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Queued = 1,
    Running = 2,
    Cancelling = 3,
    Completed = 4,
    Failed = 5,
    Cancelled = 6,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Queued,
        State::Running,
        State::Cancelling,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];

    pub fn from_i32(v: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as i32 == v)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Cancelling => "cancelling",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    /// Client idempotency key ("" = none).
    pub request_id: String,
    pub name: String,
    pub state: State,
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
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
);
";

const COLUMNS: &str = "rowid, id, request_id, name, state, device, submitted_spec, resolved_spec, \
    created_ms, started_ms, finished_ms, last_error, step, total_steps, steps_per_second, \
    last_seq, restarts, metrics";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn metrics_json(m: &BTreeMap<String, f64>) -> String {
    serde_json::to_string(m).expect("a metric map serialises. This is a bug.")
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    serde_json::from_str(text).unwrap_or_default()
}

/// (rowid, record) of one row selected with [`COLUMNS`].
fn job_row(r: &Row<'_>) -> rusqlite::Result<(i64, JobRecord)> {
    let state: i32 = r.get(4)?;
    Ok((
        r.get(0)?,
        JobRecord {
            id: r.get(1)?,
            request_id: r.get(2)?,
            name: r.get(3)?,
            state: State::from_i32(state).unwrap_or(State::Failed),
            device: r.get(5)?,
            submitted_spec: r.get(6)?,
            resolved_spec: r.get(7)?,
            created_ms: r.get(8)?,
            started_ms: r.get(9)?,
            finished_ms: r.get(10)?,
            last_error: r.get(11)?,
            step: r.get::<_, i64>(12)? as u64,
            total_steps: r.get::<_, i64>(13)? as u64,
            steps_per_second: r.get(14)?,
            last_seq: r.get::<_, i64>(15)? as u64,
            restarts: r.get::<_, i64>(16)? as u32,
            metrics: parse_metrics(&r.get::<_, String>(17)?),
        },
    ))
}

fn insert_checkpoint(tx: &rusqlite::Transaction<'_>, id: &str, c: &CheckpointRecord) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO checkpoints (job_id, step, path, saved_ms, metrics)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id,
            c.step as i64,
            c.path.to_string_lossy(),
            c.saved_ms,
            metrics_json(&c.metrics),
        ],
    )?;
    Ok(())
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Moves the write-ahead log into the database file and truncates it: frees the space the
    /// log holds when a write failed for lack of it (a full disk).
    pub fn checkpoint_wal(&self) -> Result<()> {
        self.conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each call is one
        // statement or one transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts `job` unless its request id is taken; returns the stored job and whether it
    /// is new.
    pub fn insert(&self, job: &JobRecord) -> Result<(JobRecord, bool)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if !job.request_id.is_empty() {
            let existing = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM jobs WHERE request_id = ?1"),
                    [&job.request_id],
                    job_row,
                )
                .optional()?;
            if let Some((_, existing)) = existing {
                return Ok((existing, false));
            }
        }
        tx.execute(
            "INSERT INTO jobs (id, request_id, name, state, device, submitted_spec, resolved_spec,
                created_ms, total_steps, metrics) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                job.id,
                job.request_id,
                job.name,
                job.state as i32,
                job.device,
                job.submitted_spec,
                job.resolved_spec,
                job.created_ms,
                job.total_steps as i64,
                metrics_json(&job.metrics),
            ],
        )?;
        tx.commit()?;
        Ok((job.clone(), true))
    }

    pub fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()?
            .map(|(_, j)| j))
    }

    /// The job created with a client request id ("" = none).
    pub fn by_request_id(&self, request_id: &str) -> Result<Option<JobRecord>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE request_id = ?1"),
                [request_id],
                job_row,
            )
            .optional()?
            .map(|(_, j)| j))
    }

    /// A job that must exist.
    pub fn job(&self, id: &str) -> Result<JobRecord> {
        self.get(id)?
            .ok_or_else(|| Error::NotFound(format!("job `{id}`")))
    }

    /// Newest first: up to `limit` jobs (optionally in one state) older than row `before`;
    /// returns them with the row id to continue from when more may follow.
    pub fn list(
        &self,
        state: Option<State>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<(Vec<JobRecord>, Option<i64>)> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE (?1 IS NULL OR state = ?1) AND rowid < ?2
             ORDER BY rowid DESC LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    state.map(|s| s as i32),
                    before.unwrap_or(i64::MAX),
                    limit as i64 + 1
                ],
                job_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let more = rows.len() > limit;
        let page: Vec<(i64, JobRecord)> = rows.into_iter().take(limit).collect();
        let next = more.then(|| page.last().map(|(rowid, _)| *rowid)).flatten();
        Ok((page.into_iter().map(|(_, j)| j).collect(), next))
    }

    /// Jobs in any of `states`, oldest first.
    pub fn in_states(&self, states: &[State]) -> Result<Vec<JobRecord>> {
        let conn = self.conn();
        let list = states
            .iter()
            .map(|s| (*s as i32).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE state IN ({list}) ORDER BY rowid ASC"
        ))?;
        let rows = stmt
            .query_map([], job_row)?
            .map(|r| r.map(|(_, j)| j))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Number of jobs in each state.
    pub fn counts(&self) -> Result<BTreeMap<i32, u64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
        Ok(rows)
    }

    /// Moves a job to `state`; `error` replaces the last error when given. Entering RUNNING
    /// sets the start time once; a terminal state sets the finish time.
    pub fn set_state(&self, id: &str, state: State, error: Option<&str>) -> Result<()> {
        let now = now_ms();
        self.conn().execute(
            "UPDATE jobs SET state = ?2,
                last_error = COALESCE(?3, last_error),
                started_ms = CASE WHEN ?2 = 2 AND started_ms IS NULL THEN ?4 ELSE started_ms END,
                finished_ms = CASE WHEN ?5 THEN ?4 ELSE NULL END
             WHERE id = ?1",
            params![id, state as i32, error, now, state.is_terminal()],
        )?;
        Ok(())
    }

    /// A job resumed after a restart: back to QUEUED, one more restart, with a note.
    pub fn requeue_recovered(&self, id: &str, note: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET state = 1, restarts = restarts + 1, last_error = ?2 WHERE id = ?1",
            params![id, note],
        )?;
        Ok(())
    }

    pub fn update_progress(&self, id: &str, p: &ProgressUpdate) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET step = ?2, total_steps = ?3, steps_per_second = ?4, last_seq = ?5,
                metrics = ?6 WHERE id = ?1",
            params![
                id,
                p.step as i64,
                p.total_steps as i64,
                p.steps_per_second,
                p.last_seq as i64,
                metrics_json(&p.metrics),
            ],
        )?;
        Ok(())
    }

    /// Records a new checkpoint and drops the pruned ones from the index.
    pub fn add_checkpoint(&self, id: &str, c: &CheckpointRecord, pruned: &[u64]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_checkpoint(&tx, id, c)?;
        for step in pruned {
            tx.execute(
                "DELETE FROM checkpoints WHERE job_id = ?1 AND step = ?2",
                params![id, *step as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces a job's checkpoint index (after a restart, from what is on disk).
    pub fn reindex_checkpoints(&self, id: &str, all: &[CheckpointRecord]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM checkpoints WHERE job_id = ?1", [id])?;
        for c in all {
            insert_checkpoint(&tx, id, c)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A job's checkpoints, oldest first.
    pub fn checkpoints(&self, id: &str) -> Result<Vec<CheckpointRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT step, path, saved_ms, metrics FROM checkpoints WHERE job_id = ?1
             ORDER BY step ASC",
        )?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(CheckpointRecord {
                    step: r.get::<_, i64>(0)? as u64,
                    path: PathBuf::from(r.get::<_, String>(1)?),
                    saved_ms: r.get(2)?,
                    metrics: parse_metrics(&r.get::<_, String>(3)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, request_id: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            request_id: request_id.into(),
            name: "n".into(),
            state: State::Queued,
            device: "cpu".into(),
            submitted_spec: "s".into(),
            resolved_spec: "r".into(),
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            last_error: String::new(),
            step: 0,
            total_steps: 10,
            steps_per_second: 0.0,
            last_seq: 0,
            restarts: 0,
            metrics: BTreeMap::new(),
        }
    }

    #[test]
    fn request_ids_pages_states_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("jobs.db")).unwrap();
        assert!(store.insert(&job("a", "r1")).unwrap().1);
        let (again, new) = store.insert(&job("b", "r1")).unwrap();
        assert!(!new);
        assert_eq!(again.id, "a");
        for id in ["c", "d", "e"] {
            store.insert(&job(id, "")).unwrap();
        }
        let (page, next) = store.list(None, 3, None).unwrap();
        let ids: Vec<_> = page.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["e", "d", "c"]);
        let (page, next) = store.list(None, 3, next).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, "a");
        assert_eq!(next, None);

        store.set_state("c", State::Running, None).unwrap();
        store.set_state("d", State::Failed, Some("boom")).unwrap();
        let d = store.job("d").unwrap();
        assert_eq!((d.state, d.last_error.as_str()), (State::Failed, "boom"));
        assert!(d.finished_ms.is_some() && d.started_ms.is_none());
        assert!(store.job("c").unwrap().started_ms.is_some());
        let (failed, _) = store.list(Some(State::Failed), 10, None).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(store.counts().unwrap()[&(State::Queued as i32)], 2);
        assert!(matches!(store.job("zz"), Err(Error::NotFound(_))));

        let ck = |step| CheckpointRecord {
            step,
            path: PathBuf::from(format!("/x/{step}")),
            saved_ms: 1,
            metrics: BTreeMap::from([("val/psnr".to_string(), step as f64)]),
        };
        store.add_checkpoint("c", &ck(10), &[]).unwrap();
        store.add_checkpoint("c", &ck(20), &[10]).unwrap();
        store.add_checkpoint("c", &ck(30), &[]).unwrap();
        let steps: Vec<u64> = store
            .checkpoints("c")
            .unwrap()
            .iter()
            .map(|c| c.step)
            .collect();
        assert_eq!(steps, [20, 30]);
        assert_eq!(store.checkpoints("c").unwrap()[1], ck(30));

        // Everything is on disk: a second connection (a restarted server) sees it.
        drop(store);
        let store = Store::open(&dir.path().join("jobs.db")).unwrap();
        assert_eq!(store.job("c").unwrap().state, State::Running);
        assert_eq!(store.in_states(&[State::Running]).unwrap().len(), 1);
    }
}
