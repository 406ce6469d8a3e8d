//! The job store: job records, their states, leases, the checkpoint index and every metric
//! point, in an embedded SQLite database (WAL, so a killed server loses nothing it
//! acknowledged) or in PostgreSQL shared by several replicas; the same SQL and versioned
//! migrations on both. Blocking; call it from job threads or `spawn_blocking`, never from the
//! async runtime directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior};

use crate::train::MetricPoint;
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

/// Where the job store lives (`noiseda serve --store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An embedded SQLite file (one server).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user:pass@host:5432/db`), shared by replicas.
    Postgres(String),
}

impl StoreUrl {
    /// `sqlite` (or "") → `<data_dir>/noiseda.db`, `sqlite:PATH`, or `postgres://…` /
    /// `postgresql://…`.
    pub fn parse(s: &str, data_dir: &Path) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s == "sqlite" {
            return Ok(StoreUrl::Sqlite(data_dir.join("noiseda.db")));
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<postgres::Config>().map_err(|e| {
                Error::config("--store", format!("not a valid PostgreSQL URL: {e}"))
            })?;
            return Ok(StoreUrl::Postgres(s.to_string()));
        }
        Err(Error::config(
            "--store",
            format!("`{s}`: expected `sqlite`, `sqlite:PATH` or `postgres://user:pass@host/db`"),
        ))
    }

    /// Whether several servers may share the store.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreUrl::Postgres(_))
    }

    /// For logs: the URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            // scheme://user:password@host… → scheme://user:***@host…
            StoreUrl::Postgres(url) => match url.split_once('@') {
                Some((creds, rest)) => {
                    let (scheme, userinfo) = creds.split_once("://").unwrap_or(("", creds));
                    let user = userinfo.split(':').next().unwrap_or("");
                    format!("{scheme}://{user}:***@{rest}")
                }
                None => url.clone(),
            },
        }
    }
}

/// A value bound to a statement: the few column types the store uses, bindable on both
/// engines.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Int(i64),
    Real(f64),
    Text(&'a str),
    OptText(Option<&'a str>),
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Val::Int(v) => v.to_sql(),
            Val::Real(v) => v.to_sql(),
            Val::Text(v) => v.to_sql(),
            Val::OptText(v) => v.to_sql(),
        }
    }
}

impl postgres::types::ToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match self {
            Val::Int(v) => v.to_sql(ty, out),
            Val::Real(v) => v.to_sql(ty, out),
            Val::Text(v) => v.to_sql(ty, out),
            Val::OptText(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        [Type::INT8, Type::FLOAT8, Type::TEXT, Type::VARCHAR].contains(ty)
    }

    postgres::types::to_sql_checked!();
}

/// Reads one column of a result row, on either engine.
trait Cols {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn real(&self, i: usize) -> Result<f64>;
    fn text(&self, i: usize) -> Result<String>;
}

macro_rules! cols {
    ($row:ty, $get:ident) => {
        impl Cols for $row {
            fn int(&self, i: usize) -> Result<i64> {
                Ok(self.$get(i)?)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>> {
                Ok(self.$get(i)?)
            }
            fn real(&self, i: usize) -> Result<f64> {
                Ok(self.$get(i)?)
            }
            fn text(&self, i: usize) -> Result<String> {
                Ok(self.$get(i)?)
            }
        }
    };
}
cols!(rusqlite::Row<'_>, get);
cols!(postgres::Row, try_get);

/// One connection or transaction: statements are written once, with SQLite's `?N`
/// placeholders (rewritten to `$N` for PostgreSQL).
trait Db {
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64>;
    fn each(
        &mut self,
        sql: &str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&dyn Cols) -> Result<()>,
    ) -> Result<()>;
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// The column jobs are ordered and paged by.
    fn order(&self) -> &'static str;
}

fn rows<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Val<'_>],
    map: fn(&dyn Cols) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    db.each(sql, params, &mut |r| {
        out.push(map(r)?);
        Ok(())
    })?;
    Ok(out)
}

fn first<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Val<'_>],
    map: fn(&dyn Cols) -> Result<T>,
) -> Result<Option<T>> {
    Ok(rows(db, sql, params, map)?.into_iter().next())
}

/// An SQLite connection (or the connection of an open transaction).
struct Lite<'c>(&'c Connection);

impl Db for Lite<'_> {
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64> {
        Ok(self.0.execute(sql, rusqlite::params_from_iter(params))? as u64)
    }
    fn each(
        &mut self,
        sql: &str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&dyn Cols) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
        Ok(())
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }
    fn order(&self) -> &'static str {
        "rowid"
    }
}

/// `?N` → `$N`.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn pg_params<'a>(params: &'a [Val<'_>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

macro_rules! pg_db {
    ($t:ty) => {
        impl Db for $t {
            fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64> {
                Ok(self.execute(pg_sql(sql).as_str(), &pg_params(params))?)
            }
            fn each(
                &mut self,
                sql: &str,
                params: &[Val<'_>],
                f: &mut dyn FnMut(&dyn Cols) -> Result<()>,
            ) -> Result<()> {
                for r in self.query(pg_sql(sql).as_str(), &pg_params(params))? {
                    f(&r)?;
                }
                Ok(())
            }
            fn batch(&mut self, sql: &str) -> Result<()> {
                Ok(self.batch_execute(sql)?)
            }
            fn order(&self) -> &'static str {
                "seq"
            }
        }
    };
}
pg_db!(postgres::Client);
pg_db!(postgres::Transaction<'_>);

/// Schema versions, applied in order at start-up and recorded in `schema_migrations`. Never
/// edit a released one; add the next.
const SQLITE_MIGRATIONS: &[&str] = &[
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

const POSTGRES_MIGRATIONS: &[&str] = &[
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
fn migrate(db: &mut dyn Db, migrations: &[&str]) -> Result<usize> {
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

const COLUMNS: &str = "id, request_id, name, state, device, submitted_spec, resolved_spec, \
    created_ms, started_ms, finished_ms, last_error, step, total_steps, steps_per_second, \
    last_seq, restarts, metrics, owner, lease_until_ms";

pub use crate::train::unix_ms as now_ms;

fn metrics_json(m: &BTreeMap<String, f64>) -> String {
    serde_json::to_string(m).expect("a metric map serialises. This is a bug.")
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A record from one row selected with [`COLUMNS`].
fn job_row(r: &dyn Cols) -> Result<JobRecord> {
    Ok(JobRecord {
        id: r.text(0)?,
        request_id: r.text(1)?,
        name: r.text(2)?,
        state: State::from_i32(r.int(3)? as i32).unwrap_or(State::Failed),
        device: r.text(4)?,
        submitted_spec: r.text(5)?,
        resolved_spec: r.text(6)?,
        created_ms: r.int(7)?,
        started_ms: r.opt_int(8)?,
        finished_ms: r.opt_int(9)?,
        last_error: r.text(10)?,
        step: r.int(11)? as u64,
        total_steps: r.int(12)? as u64,
        steps_per_second: r.real(13)?,
        last_seq: r.int(14)? as u64,
        restarts: r.int(15)? as u32,
        metrics: parse_metrics(&r.text(16)?),
        owner: r.text(17)?,
        lease_until_ms: r.int(18)?,
    })
}

/// (order key, record): [`COLUMNS`] preceded by the paging column.
fn paged_job_row(r: &dyn Cols) -> Result<(i64, JobRecord)> {
    let key = r.int(0)?;
    struct Shifted<'a>(&'a dyn Cols);
    impl Cols for Shifted<'_> {
        fn int(&self, i: usize) -> Result<i64> {
            self.0.int(i + 1)
        }
        fn opt_int(&self, i: usize) -> Result<Option<i64>> {
            self.0.opt_int(i + 1)
        }
        fn real(&self, i: usize) -> Result<f64> {
            self.0.real(i + 1)
        }
        fn text(&self, i: usize) -> Result<String> {
            self.0.text(i + 1)
        }
    }
    Ok((key, job_row(&Shifted(r))?))
}

fn checkpoint_row(r: &dyn Cols) -> Result<CheckpointRecord> {
    Ok(CheckpointRecord {
        step: r.int(0)? as u64,
        path: PathBuf::from(r.text(1)?),
        saved_ms: r.int(2)?,
        metrics: parse_metrics(&r.text(3)?),
    })
}

fn point_row(r: &dyn Cols) -> Result<MetricPoint> {
    Ok(MetricPoint {
        seq: r.int(0)? as u64,
        step: r.int(1)? as u64,
        wall: r.real(2)?,
        series: r.text(3)?,
        split: r.text(4)?,
        value: r.real(5)?,
    })
}

fn insert_checkpoint(db: &mut dyn Db, id: &str, c: &CheckpointRecord) -> Result<()> {
    let path = c.path.to_string_lossy();
    let metrics = metrics_json(&c.metrics);
    db.exec(
        "INSERT INTO checkpoints (job_id, step, path, saved_ms, metrics)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (job_id, step) DO UPDATE
         SET path = excluded.path, saved_ms = excluded.saved_ms, metrics = excluded.metrics",
        &[
            Val::Text(id),
            Val::Int(c.step as i64),
            Val::Text(&path),
            Val::Int(c.saved_ms),
            Val::Text(&metrics),
        ],
    )?;
    Ok(())
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

/// Which rows a state change applies to.
enum Cond<'a> {
    State(State),
    Owner(&'a str),
}

enum Backend {
    Sqlite(Mutex<Connection>),
    Postgres {
        url: String,
        client: Box<Mutex<Option<postgres::Client>>>,
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
            StoreUrl::Sqlite(path) => {
                let conn = Connection::open(path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn.pragma_update(None, "foreign_keys", "ON")?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                Store {
                    backend: Backend::Sqlite(Mutex::new(conn)),
                }
            }
            StoreUrl::Postgres(url) => Store {
                backend: Backend::Postgres {
                    url: url.clone(),
                    client: Box::new(Mutex::new(None)),
                },
            },
        };
        store.tx(|db| {
            if db.order() == "seq" {
                db.batch("SELECT pg_advisory_xact_lock(7250392)")?;
                migrate(db, POSTGRES_MIGRATIONS)
            } else {
                migrate(db, SQLITE_MIGRATIONS)
            }
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
            Backend::Sqlite(conn) => f(&mut Lite(&lock(conn))),
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
                let out = f(&mut Lite(&tx))?;
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
    fn pg(&self) -> Result<MutexGuard<'_, Option<postgres::Client>>> {
        let Backend::Postgres { url, client } = &self.backend else {
            unreachable!("pg() on an SQLite store. This is a bug.")
        };
        let mut guard = lock(client);
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(postgres::Client::connect(url, postgres::NoTls)?);
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

    /// Inserts `job` unless its request id is taken; returns the stored job and whether it
    /// is new.
    pub fn insert(&self, job: &JobRecord) -> Result<(JobRecord, bool)> {
        let by_request = format!("SELECT {COLUMNS} FROM jobs WHERE request_id = ?1");
        let metrics = metrics_json(&job.metrics);
        self.tx(|db| {
            if !job.request_id.is_empty() {
                if let Some(existing) =
                    first(db, &by_request, &[Val::Text(&job.request_id)], job_row)?
                {
                    return Ok((existing, false));
                }
            }
            db.exec(
                "INSERT INTO jobs (id, request_id, name, state, device, submitted_spec,
                    resolved_spec, created_ms, total_steps, metrics)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                &[
                    Val::Text(&job.id),
                    Val::Text(&job.request_id),
                    Val::Text(&job.name),
                    Val::Int(job.state as i64),
                    Val::Text(&job.device),
                    Val::Text(&job.submitted_spec),
                    Val::Text(&job.resolved_spec),
                    Val::Int(job.created_ms),
                    Val::Int(job.total_steps as i64),
                    Val::Text(&metrics),
                ],
            )?;
            Ok((job.clone(), true))
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1");
        self.with(|db| first(db, &sql, &[Val::Text(id)], job_row))
    }

    /// The job created with a client request id ("" = none).
    pub fn by_request_id(&self, request_id: &str) -> Result<Option<JobRecord>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE request_id = ?1");
        self.with(|db| first(db, &sql, &[Val::Text(request_id)], job_row))
    }

    /// A job that must exist.
    pub fn job(&self, id: &str) -> Result<JobRecord> {
        self.get(id)?
            .ok_or_else(|| Error::NotFound(format!("job `{id}`")))
    }

    /// Newest first: up to `limit` jobs (optionally in one state) older than row `before`;
    /// returns them with the row key to continue from when more may follow.
    pub fn list(
        &self,
        state: Option<State>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<(Vec<JobRecord>, Option<i64>)> {
        let rows = self.with(|db| {
            let order = db.order();
            let filter = match state {
                Some(s) => format!("state = {} AND", s as i32),
                None => String::new(),
            };
            let sql = format!(
                "SELECT {order}, {COLUMNS} FROM jobs WHERE {filter} {order} < ?1
                 ORDER BY {order} DESC LIMIT ?2"
            );
            rows(
                db,
                &sql,
                &[
                    Val::Int(before.unwrap_or(i64::MAX)),
                    Val::Int(limit as i64 + 1),
                ],
                paged_job_row,
            )
        })?;
        let more = rows.len() > limit;
        let page: Vec<(i64, JobRecord)> = rows.into_iter().take(limit).collect();
        let next = more.then(|| page.last().map(|(key, _)| *key)).flatten();
        Ok((page.into_iter().map(|(_, j)| j).collect(), next))
    }

    /// Number of jobs in each state.
    pub fn counts(&self) -> Result<BTreeMap<i32, u64>> {
        let rows = self.with(|db| {
            rows(
                db,
                "SELECT state, COUNT(*) FROM jobs GROUP BY state",
                &[],
                |r| Ok((r.int(0)? as i32, r.int(1)? as u64)),
            )
        })?;
        Ok(rows.into_iter().collect())
    }

    /// Moves a job from `from` to `to`; returns whether it was in `from`. Entering RUNNING
    /// sets the start time once; a terminal state sets the finish time and drops the lease.
    pub fn transition(&self, id: &str, from: State, to: State) -> Result<bool> {
        self.set_state_if(id, to, None, Cond::State(from))
    }

    /// Moves a job to `state` (`error` replaces the last error when given) only while `owner`
    /// holds its lease; returns whether it did (false: the lease went to another replica,
    /// which now owns the job's record).
    pub fn finish(&self, id: &str, owner: &str, state: State, error: Option<&str>) -> Result<bool> {
        self.set_state_if(id, state, error, Cond::Owner(owner))
    }

    fn set_state_if(
        &self,
        id: &str,
        state: State,
        error: Option<&str>,
        cond: Cond<'_>,
    ) -> Result<bool> {
        let mut params = vec![Val::Text(id), Val::Int(state as i64), Val::OptText(error)];
        let mut sets = vec!["state = ?2", "last_error = COALESCE(?3, last_error)"];
        match state {
            State::Running => {
                params.push(Val::Int(now_ms()));
                sets.extend([
                    "started_ms = COALESCE(started_ms, ?4)",
                    "finished_ms = NULL",
                ]);
            }
            s if s.is_terminal() => {
                params.push(Val::Int(now_ms()));
                sets.extend(["finished_ms = ?4", "owner = ''", "lease_until_ms = 0"]);
            }
            _ => sets.push("finished_ms = NULL"),
        }
        let cond = match cond {
            Cond::State(s) => format!("state = {}", s as i32),
            Cond::Owner(o) => {
                params.push(Val::Text(o));
                format!("owner = ?{}", params.len())
            }
        };
        let sql = format!(
            "UPDATE jobs SET {} WHERE id = ?1 AND {cond}",
            sets.join(", ")
        );
        Ok(self.with(|db| db.exec(&sql, &params))? > 0)
    }

    /// Claims the oldest queued job on one of `devices` for `owner` until `until_ms`: it becomes
    /// RUNNING under that lease. No two claimers get the same job (PostgreSQL: FOR UPDATE SKIP
    /// LOCKED; SQLite: one writer at a time).
    pub fn claim(
        &self,
        owner: &str,
        devices: &[String],
        until_ms: i64,
    ) -> Result<Option<JobRecord>> {
        if devices.is_empty() {
            return Ok(None);
        }
        self.tx(|db| {
            let placeholders: Vec<String> = (0..devices.len()).map(|i| format!("?{}", i + 1)).collect();
            let lock = if db.order() == "seq" {
                " FOR UPDATE SKIP LOCKED"
            } else {
                ""
            };
            let sql = format!(
                "SELECT id FROM jobs WHERE state = {} AND device IN ({}) ORDER BY {} ASC LIMIT 1{lock}",
                State::Queued as i32,
                placeholders.join(", "),
                db.order()
            );
            let params: Vec<Val<'_>> = devices.iter().map(|d| Val::Text(d)).collect();
            let Some(id) = first(db, &sql, &params, |r| r.text(0))? else {
                return Ok(None);
            };
            db.exec(
                "UPDATE jobs SET state = ?2, owner = ?3, lease_until_ms = ?4,
                    started_ms = COALESCE(started_ms, ?5), finished_ms = NULL
                 WHERE id = ?1",
                &[
                    Val::Text(&id),
                    Val::Int(State::Running as i64),
                    Val::Text(owner),
                    Val::Int(until_ms),
                    Val::Int(now_ms()),
                ],
            )?;
            let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1");
            first(db, &sql, &[Val::Text(&id)], job_row)
        })
    }

    /// Extends `owner`'s leases on `ids` to `until_ms`. Returns the jobs it still holds with
    /// their state (CANCELLING: a cancel arrived through some replica); a job missing from the
    /// answer is no longer this owner's.
    pub fn renew(
        &self,
        owner: &str,
        ids: &[String],
        until_ms: i64,
    ) -> Result<Vec<(String, State)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.tx(|db| {
            let mut held = Vec::new();
            for id in ids {
                let n = db.exec(
                    "UPDATE jobs SET lease_until_ms = ?3 WHERE id = ?1 AND owner = ?2
                     AND state IN (2, 3)",
                    &[Val::Text(id), Val::Text(owner), Val::Int(until_ms)],
                )?;
                if n > 0 {
                    let state = first(
                        db,
                        "SELECT state FROM jobs WHERE id = ?1",
                        &[Val::Text(id)],
                        |r| r.int(0),
                    )?;
                    if let Some(s) = state.and_then(|s| State::from_i32(s as i32)) {
                        held.push((id.clone(), s));
                    }
                }
            }
            Ok(held)
        })
    }

    /// Ends the leases of `owner` (None: of everyone) now, so their jobs can be taken over at
    /// once: what a server does at start for the jobs its previous run held.
    pub fn expire_leases(&self, owner: Option<&str>) -> Result<u64> {
        self.with(|db| match owner {
            Some(o) => db.exec(
                "UPDATE jobs SET lease_until_ms = 0 WHERE owner = ?1 AND state IN (2, 3)",
                &[Val::Text(o)],
            ),
            None => db.exec(
                "UPDATE jobs SET lease_until_ms = 0 WHERE state IN (2, 3)",
                &[],
            ),
        })
    }

    /// RUNNING or CANCELLING jobs whose lease ended before `now_ms`, oldest first.
    pub fn expired(&self, now_ms: i64) -> Result<Vec<JobRecord>> {
        self.with(|db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM jobs WHERE state IN (2, 3) AND lease_until_ms < ?1
                 ORDER BY {} ASC",
                db.order()
            );
            rows(db, &sql, &[Val::Int(now_ms)], job_row)
        })
    }

    /// Takes over a job whose lease ran out (still out at `now_ms`): CANCELLING → CANCELLED;
    /// RUNNING with a checkpoint → QUEUED with one more restart and `note`; RUNNING without
    /// → FAILED with `note`. None when another replica took it first.
    pub fn take_over(
        &self,
        id: &str,
        now_ms: i64,
        has_checkpoint: bool,
        note: &str,
    ) -> Result<Option<TakenOver>> {
        self.tx(|db| {
            let state = first(
                db,
                "SELECT state FROM jobs WHERE id = ?1 AND state IN (2, 3) AND lease_until_ms < ?2",
                &[Val::Text(id), Val::Int(now_ms)],
                |r| r.int(0),
            )?;
            let Some(state) = state.and_then(|s| State::from_i32(s as i32)) else {
                return Ok(None);
            };
            let outcome = match (state, has_checkpoint) {
                (State::Cancelling, _) => TakenOver::Cancelled,
                (_, true) => TakenOver::Requeued,
                (_, false) => TakenOver::Failed,
            };
            match outcome {
                TakenOver::Cancelled => db.exec(
                    "UPDATE jobs SET state = ?2, finished_ms = ?3, owner = '', lease_until_ms = 0
                     WHERE id = ?1",
                    &[
                        Val::Text(id),
                        Val::Int(State::Cancelled as i64),
                        Val::Int(now_ms),
                    ],
                )?,
                TakenOver::Requeued => db.exec(
                    "UPDATE jobs SET state = ?2, restarts = restarts + 1, last_error = ?3,
                     owner = '', lease_until_ms = 0 WHERE id = ?1",
                    &[
                        Val::Text(id),
                        Val::Int(State::Queued as i64),
                        Val::Text(note),
                    ],
                )?,
                TakenOver::Failed => db.exec(
                    "UPDATE jobs SET state = ?2, finished_ms = ?3, last_error = ?4, owner = '',
                     lease_until_ms = 0 WHERE id = ?1",
                    &[
                        Val::Text(id),
                        Val::Int(State::Failed as i64),
                        Val::Int(now_ms),
                        Val::Text(note),
                    ],
                )?,
            };
            Ok(Some(outcome))
        })
    }

    /// Ends `owner`'s lease on a job now (it stopped for a shutdown and left a checkpoint), so
    /// another replica can take it over at once.
    pub fn release(&self, id: &str, owner: &str) -> Result<()> {
        self.with(|db| {
            db.exec(
                "UPDATE jobs SET lease_until_ms = 0 WHERE id = ?1 AND owner = ?2",
                &[Val::Text(id), Val::Text(owner)],
            )
        })?;
        Ok(())
    }

    /// Progress of a job; only while `owner` holds it (returns whether it did).
    pub fn update_progress(&self, id: &str, owner: &str, p: &ProgressUpdate) -> Result<bool> {
        let metrics = metrics_json(&p.metrics);
        let n = self.with(|db| {
            db.exec(
                "UPDATE jobs SET step = ?2, total_steps = ?3, steps_per_second = ?4, last_seq = ?5,
                    metrics = ?6 WHERE id = ?1 AND owner = ?7",
                &[
                    Val::Text(id),
                    Val::Int(p.step as i64),
                    Val::Int(p.total_steps as i64),
                    Val::Real(p.steps_per_second),
                    Val::Int(p.last_seq as i64),
                    Val::Text(&metrics),
                    Val::Text(owner),
                ],
            )
        })?;
        Ok(n > 0)
    }

    /// Adds metric points (a point already stored under its seq is kept as it is).
    pub fn add_points(&self, id: &str, points: &[MetricPoint]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        self.tx(|db| {
            for p in points {
                db.exec(
                    "INSERT INTO metric_points (job_id, seq, step, wall, series, split, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (job_id, seq) DO NOTHING",
                    &[
                        Val::Text(id),
                        Val::Int(p.seq as i64),
                        Val::Int(p.step as i64),
                        Val::Real(p.wall),
                        Val::Text(&p.series),
                        Val::Text(&p.split),
                        Val::Real(p.value),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Up to `limit` of a job's metric points from seq `from`, in seq order.
    pub fn points(&self, id: &str, from: u64, limit: usize) -> Result<Vec<MetricPoint>> {
        self.with(|db| {
            rows(
                db,
                "SELECT seq, step, wall, series, split, value FROM metric_points
                 WHERE job_id = ?1 AND seq >= ?2 ORDER BY seq ASC LIMIT ?3",
                &[Val::Text(id), Val::Int(from as i64), Val::Int(limit as i64)],
                point_row,
            )
        })
    }

    /// The highest stored seq of a job (0: none).
    pub fn last_point(&self, id: &str) -> Result<u64> {
        let last = self.with(|db| {
            first(
                db,
                "SELECT COALESCE(MAX(seq), 0) FROM metric_points WHERE job_id = ?1",
                &[Val::Text(id)],
                |r| r.int(0),
            )
        })?;
        Ok(last.unwrap_or(0) as u64)
    }

    /// Records a new checkpoint and drops the pruned ones from the index.
    pub fn add_checkpoint(&self, id: &str, c: &CheckpointRecord, pruned: &[u64]) -> Result<()> {
        self.tx(|db| {
            insert_checkpoint(db, id, c)?;
            for step in pruned {
                db.exec(
                    "DELETE FROM checkpoints WHERE job_id = ?1 AND step = ?2",
                    &[Val::Text(id), Val::Int(*step as i64)],
                )?;
            }
            Ok(())
        })
    }

    /// Replaces a job's checkpoint index (after a restart, from what is on disk).
    pub fn reindex_checkpoints(&self, id: &str, all: &[CheckpointRecord]) -> Result<()> {
        self.tx(|db| {
            db.exec(
                "DELETE FROM checkpoints WHERE job_id = ?1",
                &[Val::Text(id)],
            )?;
            for c in all {
                insert_checkpoint(db, id, c)?;
            }
            Ok(())
        })
    }

    /// A job's checkpoints, oldest first.
    pub fn checkpoints(&self, id: &str) -> Result<Vec<CheckpointRecord>> {
        self.with(|db| {
            rows(
                db,
                "SELECT step, path, saved_ms, metrics FROM checkpoints WHERE job_id = ?1
                 ORDER BY step ASC",
                &[Val::Text(id)],
                checkpoint_row,
            )
        })
    }
}

/// A poisoned lock is still usable: each call is one statement or one transaction, so a
/// panic while holding it cannot leave the database half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            owner: String::new(),
            lease_until_ms: 0,
        }
    }

    #[test]
    fn a_database_from_before_versioning_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        {
            // What the first released server created: migration 1's tables, no version table.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SQLITE_MIGRATIONS[0]).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, request_id, name, state, device, submitted_spec,
                    resolved_spec, created_ms, total_steps, last_seq)
                 VALUES ('old', '', 'n', 4, 'cpu', 's', 'r', 1, 10, 7)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.job("old").unwrap();
        assert_eq!(
            (old.state, old.last_seq, old.owner.as_str()),
            (State::Completed, 7, "")
        );
        store.add_points("old", &[]).unwrap();
        assert_eq!(store.last_point("old").unwrap(), 0);
        drop(store);
        // Opening again applies nothing twice.
        let store = Store::open(&path).unwrap();
        let versions = store
            .with(|db| {
                rows(
                    db,
                    "SELECT version FROM schema_migrations ORDER BY version",
                    &[],
                    |r| r.int(0),
                )
            })
            .unwrap();
        assert_eq!(versions, [1, 2]);
    }

    #[test]
    fn store_urls_parse_and_hide_passwords() {
        let dir = Path::new("/data");
        assert_eq!(
            StoreUrl::parse("sqlite", dir).unwrap(),
            StoreUrl::Sqlite(dir.join("noiseda.db"))
        );
        assert_eq!(
            StoreUrl::parse("sqlite:/x/jobs.db", dir).unwrap(),
            StoreUrl::Sqlite(PathBuf::from("/x/jobs.db"))
        );
        let pg = StoreUrl::parse("postgres://u:secret@db:5432/jobs", dir).unwrap();
        assert!(pg.is_shared());
        assert_eq!(pg.redacted(), "postgres://u:***@db:5432/jobs");
        for bad in ["mysql://x", "postgres://u:p@db:notaport/x"] {
            let e = StoreUrl::parse(bad, dir).unwrap_err().to_string();
            assert!(e.contains("--store"), "{e}");
        }
    }

    #[test]
    fn request_ids_pages_states_leases_points_and_checkpoints() {
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

        assert!(store
            .transition("c", State::Queued, State::Running)
            .unwrap());
        // A job no replica holds has owner "".
        assert!(store.finish("d", "", State::Failed, Some("boom")).unwrap());
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

        // Leases: claims take the oldest queued job on a listed device, once.
        let devices = ["cpu".to_string()];
        let claimed = store.claim("r1", &devices, 1_000).unwrap().unwrap();
        assert_eq!((claimed.id.as_str(), claimed.state), ("a", State::Running));
        assert_eq!(
            (claimed.owner.as_str(), claimed.lease_until_ms),
            ("r1", 1_000)
        );
        assert_eq!(store.claim("r2", &devices, 1_000).unwrap().unwrap().id, "e");
        assert!(store.claim("r2", &devices, 1_000).unwrap().is_none());
        assert!(store
            .claim("r2", &["cuda:0".to_string()], 1_000)
            .unwrap()
            .is_none());
        // Renewal is the owner's only; a lease that ran out is taken over exactly once.
        assert_eq!(store.renew("r2", &["a".into()], 5_000).unwrap(), vec![]);
        let held = store.renew("r1", &["a".into()], 2_000).unwrap();
        assert_eq!(held, vec![("a".to_string(), State::Running)]);
        assert!(store
            .transition("a", State::Running, State::Cancelling)
            .unwrap());
        assert!(!store
            .transition("a", State::Running, State::Cancelling)
            .unwrap());
        let expired: Vec<String> = store
            .expired(3_000)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert!(expired.contains(&"a".to_string()) && expired.contains(&"e".to_string()));
        assert_eq!(
            store.take_over("a", 3_000, true, "n").unwrap(),
            Some(TakenOver::Cancelled)
        );
        assert_eq!(store.take_over("a", 3_000, true, "n").unwrap(), None);
        assert_eq!(
            store.take_over("e", 3_000, true, "back").unwrap(),
            Some(TakenOver::Requeued)
        );
        let e = store.job("e").unwrap();
        assert_eq!(
            (e.state, e.restarts, e.last_error.as_str()),
            (State::Queued, 1, "back")
        );
        let e = store.claim("r1", &devices, 9_000).unwrap().unwrap();
        assert!(!store.finish("e", "r2", State::Completed, None).unwrap());
        assert!(store
            .update_progress("e", "r1", &ProgressUpdate::default())
            .unwrap());
        assert!(!store
            .update_progress("e", "r2", &ProgressUpdate::default())
            .unwrap());
        assert!(store.finish(&e.id, "r1", State::Completed, None).unwrap());
        assert_eq!(store.job("e").unwrap().owner, "");

        // Metric points: ordered by seq, a repeated seq keeps the first.
        let p = |seq, value| MetricPoint {
            seq,
            step: seq,
            wall: 0.5,
            series: "loss".into(),
            split: "train".into(),
            value,
        };
        store.add_points("c", &[p(2, 2.0), p(1, 1.0)]).unwrap();
        store.add_points("c", &[p(2, 9.0), p(3, 3.0)]).unwrap();
        let got: Vec<(u64, f64)> = store
            .points("c", 2, 10)
            .unwrap()
            .iter()
            .map(|p| (p.seq, p.value))
            .collect();
        assert_eq!(got, [(2, 2.0), (3, 3.0)]);
        assert_eq!(store.last_point("c").unwrap(), 3);

        // Everything is on disk: a second connection (a restarted server) sees it.
        drop(store);
        let store = Store::open(&dir.path().join("jobs.db")).unwrap();
        assert_eq!(store.job("c").unwrap().state, State::Running);
        assert_eq!(store.counts().unwrap()[&(State::Running as i32)], 1);
    }
}
