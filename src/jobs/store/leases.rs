//! The queries of leases: a replica claims queued jobs, renews what it runs, and takes over
//! jobs whose lease ran out. No two claimers get the same job. Blocking.

use super::jobs::{job_row, COLUMNS};
use super::sql::{first, rows, Val};
use super::{now_ms, JobRecord, Store, TakenOver};
use crate::jobs::JobState;
use crate::Result;

/// The states of a job under a lease ([`JobState::LEASED`]), bound as parameters.
const LEASED: [Val<'static>; 2] = [
    Val::Int(JobState::LEASED[0] as i64),
    Val::Int(JobState::LEASED[1] as i64),
];

impl Store {
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
            let engine = db.engine();
            let sql = format!(
                "SELECT id FROM jobs WHERE state = ?{} AND device IN ({}) ORDER BY {} ASC LIMIT 1{}",
                devices.len() + 1,
                placeholders.join(", "),
                engine.order(),
                engine.skip_locked(),
            );
            let mut params: Vec<Val<'_>> = devices.iter().map(|d| Val::Text(d)).collect();
            params.push(Val::state(JobState::Queued));
            let Some(id) = first(db, &sql, &params, |r| r.text(0))? else {
                return Ok(None);
            };
            db.exec(
                "UPDATE jobs SET state = ?2, owner = ?3, lease_until_ms = ?4,
                    started_ms = COALESCE(started_ms, ?5), finished_ms = NULL
                 WHERE id = ?1",
                &[
                    Val::Text(&id),
                    Val::state(JobState::Running),
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
    ) -> Result<Vec<(String, JobState)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.tx(|db| {
            let mut held = Vec::new();
            for id in ids {
                let n = db.exec(
                    "UPDATE jobs SET lease_until_ms = ?3 WHERE id = ?1 AND owner = ?2
                     AND state IN (?4, ?5)",
                    &[
                        Val::Text(id),
                        Val::Text(owner),
                        Val::Int(until_ms),
                        LEASED[0],
                        LEASED[1],
                    ],
                )?;
                if n > 0 {
                    let state = first(
                        db,
                        "SELECT state FROM jobs WHERE id = ?1",
                        &[Val::Text(id)],
                        |r| r.int(0),
                    )?;
                    if let Some(s) = state.and_then(|s| JobState::from_i32(s as i32)) {
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
                "UPDATE jobs SET lease_until_ms = 0 WHERE state IN (?1, ?2) AND owner = ?3",
                &[LEASED[0], LEASED[1], Val::Text(o)],
            ),
            None => db.exec(
                "UPDATE jobs SET lease_until_ms = 0 WHERE state IN (?1, ?2)",
                &LEASED,
            ),
        })
    }

    /// RUNNING or CANCELLING jobs whose lease ended before `now_ms`, oldest first.
    pub fn expired(&self, now_ms: i64) -> Result<Vec<JobRecord>> {
        self.with(|db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM jobs WHERE state IN (?2, ?3) AND lease_until_ms < ?1
                 ORDER BY {} ASC",
                db.engine().order()
            );
            rows(db, &sql, &[Val::Int(now_ms), LEASED[0], LEASED[1]], job_row)
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
                "SELECT state FROM jobs WHERE id = ?1 AND state IN (?3, ?4) AND lease_until_ms < ?2",
                &[Val::Text(id), Val::Int(now_ms), LEASED[0], LEASED[1]],
                |r| r.int(0),
            )?;
            let Some(state) = state.and_then(|s| JobState::from_i32(s as i32)) else {
                return Ok(None);
            };
            let outcome = match (state, has_checkpoint) {
                (JobState::Cancelling, _) => TakenOver::Cancelled,
                (_, true) => TakenOver::Requeued,
                (_, false) => TakenOver::Failed,
            };
            match outcome {
                TakenOver::Cancelled => db.exec(
                    "UPDATE jobs SET state = ?2, finished_ms = ?3, owner = '', lease_until_ms = 0
                     WHERE id = ?1",
                    &[
                        Val::Text(id),
                        Val::state(JobState::Cancelled),
                        Val::Int(now_ms),
                    ],
                )?,
                TakenOver::Requeued => db.exec(
                    "UPDATE jobs SET state = ?2, restarts = restarts + 1, last_error = ?3,
                     owner = '', lease_until_ms = 0 WHERE id = ?1",
                    &[
                        Val::Text(id),
                        Val::state(JobState::Queued),
                        Val::Text(note),
                    ],
                )?,
                TakenOver::Failed => db.exec(
                    "UPDATE jobs SET state = ?2, finished_ms = ?3, last_error = ?4, owner = '',
                     lease_until_ms = 0 WHERE id = ?1",
                    &[
                        Val::Text(id),
                        Val::state(JobState::Failed),
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
}
