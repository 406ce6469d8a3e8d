//! The queries of job records: insert (idempotent on the request id), read, page, count and
//! move them between states. Blocking.

use std::collections::BTreeMap;

use super::sql::{first, rows, Cols, Val};
use super::{metrics_json, now_ms, parse_metrics, JobRecord, ProgressUpdate, Store};
use crate::jobs::JobState;
use crate::{Error, Result};

pub(super) const COLUMNS: &str =
    "id, request_id, name, state, device, submitted_spec, resolved_spec, \
    created_ms, started_ms, finished_ms, last_error, step, total_steps, steps_per_second, \
    last_seq, restarts, metrics, owner, lease_until_ms";

/// A record from one row selected with [`COLUMNS`].
pub(super) fn job_row(r: &dyn Cols) -> Result<JobRecord> {
    Ok(JobRecord {
        id: r.text(0)?,
        request_id: r.text(1)?,
        name: r.text(2)?,
        state: JobState::from_i32(r.int(3)? as i32).unwrap_or(JobState::Failed),
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

/// Which rows a state change applies to.
enum Cond<'a> {
    State(JobState),
    Owner(&'a str),
}

impl Store {
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
                    Val::state(job.state),
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
        state: Option<JobState>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<(Vec<JobRecord>, Option<i64>)> {
        let rows = self.with(|db| {
            let order = db.engine().order();
            let mut params = vec![
                Val::Int(before.unwrap_or(i64::MAX)),
                Val::Int(limit as i64 + 1),
            ];
            let filter = match state {
                Some(s) => {
                    params.push(Val::state(s));
                    "state = ?3 AND"
                }
                None => "",
            };
            let sql = format!(
                "SELECT {order}, {COLUMNS} FROM jobs WHERE {filter} {order} < ?1
                 ORDER BY {order} DESC LIMIT ?2"
            );
            rows(db, &sql, &params, paged_job_row)
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
    pub fn transition(&self, id: &str, from: JobState, to: JobState) -> Result<bool> {
        self.set_state_if(id, to, None, Cond::State(from))
    }

    /// Moves a job to `state` (`error` replaces the last error when given) only while `owner`
    /// holds its lease; returns whether it did (false: the lease went to another replica,
    /// which now owns the job's record).
    pub fn finish(
        &self,
        id: &str,
        owner: &str,
        state: JobState,
        error: Option<&str>,
    ) -> Result<bool> {
        self.set_state_if(id, state, error, Cond::Owner(owner))
    }

    fn set_state_if(
        &self,
        id: &str,
        state: JobState,
        error: Option<&str>,
        cond: Cond<'_>,
    ) -> Result<bool> {
        let mut params = vec![Val::Text(id), Val::state(state), Val::OptText(error)];
        let mut sets = vec!["state = ?2", "last_error = COALESCE(?3, last_error)"];
        match state {
            JobState::Running => {
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
            Cond::State(s) => {
                params.push(Val::state(s));
                format!("state = ?{}", params.len())
            }
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
}
