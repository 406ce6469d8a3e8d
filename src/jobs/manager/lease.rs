//! Leases: how several replicas share one store. Each job runs under a lease its replica renews
//! (the `jobs-lease` thread); a job whose lease ran out is taken over (back to the queue from
//! its checkpoint, or failed without one); a run stops writing a quarter lease before its lease
//! ends (its fence). Methods of [`Manager`], here apart from the running of jobs. Blocking;
//! call from job threads or `spawn_blocking`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::{checkpoint_id, Manager};
use crate::jobs::store::{now_ms, TakenOver};
use crate::jobs::JobState;
use crate::train::StopReason;
use crate::Result;

impl Manager {
    pub(super) fn lease_end(&self) -> i64 {
        now_ms() + self.jobs.lease().as_millis() as i64
    }

    /// The time after which a run under a lease ending at `until` stops writing: a quarter
    /// lease before the end, so a step in flight finishes before another replica may start.
    pub(super) fn fence(&self, until: i64) -> i64 {
        until - self.jobs.lease().as_millis() as i64 / 4
    }

    /// Takes over every job whose lease ran out (its server died or lost the store): a
    /// CANCELLING one is CANCELLED, a RUNNING one goes back to the queue when it has a
    /// checkpoint and is FAILED when not. Its checkpoint index and metric points are first
    /// brought up to date from its directory.
    pub(super) fn take_over_expired(&self) -> Result<()> {
        let now = now_ms();
        for job in self.store.expired(now)? {
            if self.inner().running.contains_key(&job.id) {
                // Still running here (the renewal was late): the next renewal extends it.
                continue;
            }
            let ckpts = self.reindex(&job.id)?;
            crate::runlog::repair_metric_log(&self.metric_log(&job.id))?;
            self.backfill_points(&job.id)?;
            let note = match ckpts.last() {
                Some(last) => format!(
                    "the server running the job stopped (restarted, killed or cut off from the \
                     store); resuming from checkpoint {} (steps after it are recomputed exactly, \
                     their metric points kept)",
                    checkpoint_id(last.step)
                ),
                None => "the server running the job stopped before the job's first checkpoint; \
                         it was not restarted from step 0 (resubmit it, or lower \
                         checkpoint.every)"
                    .to_string(),
            };
            match self
                .store
                .take_over(&job.id, now, ckpts.last().is_some(), &note)?
            {
                Some(TakenOver::Requeued) => tracing::warn!(
                    job = %job.id, from = %job.owner, step = ckpts.last().map_or(0, |c| c.step),
                    "taking over a job from its checkpoint"
                ),
                Some(TakenOver::Failed) => {
                    tracing::warn!(job = %job.id, from = %job.owner, "a running job had no checkpoint")
                }
                Some(TakenOver::Cancelled) => {
                    tracing::info!(job = %job.id, "finished an interrupted cancel")
                }
                None => {} // another replica took it first
            }
        }
        Ok(())
    }

    /// Renews the leases of the jobs running here. A job whose lease another replica took
    /// stops at its next step without recording anything more; one cancelled through another
    /// replica (CANCELLING in the store) is cancelled here.
    fn renew_leases(&self) -> Result<()> {
        let inner = self.inner();
        let ids: Vec<String> = inner.running.keys().cloned().collect();
        drop(inner);
        if ids.is_empty() {
            return Ok(());
        }
        let until = self.lease_end();
        let held: HashMap<String, JobState> = self
            .store
            .renew(&self.replica_id, &ids, until)?
            .into_iter()
            .collect();
        let inner = self.inner();
        for id in ids {
            let Some(r) = inner.running.get(&id) else {
                continue;
            };
            match held.get(&id) {
                None => {
                    // Not held: either it just ended here (its end is recorded) or another
                    // replica took it over.
                    let taken = self
                        .store
                        .get(&id)?
                        .is_some_and(|j| !j.state.is_terminal() && j.owner != self.replica_id);
                    if !taken {
                        continue;
                    }
                    if !r.lost.swap(true, Ordering::AcqRel) {
                        tracing::error!(job = %id, "lost the job's lease to another replica; stopping it here");
                    }
                    r.stop.store(StopReason::Lost as u8, Ordering::Release);
                }
                Some(state) => {
                    r.fence.store(self.fence(until), Ordering::Release);
                    if *state != JobState::Cancelling {
                        continue;
                    }
                    let _ = r.stop.compare_exchange(
                        StopReason::None as u8,
                        StopReason::Cancel as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
            }
        }
        Ok(())
    }
}

/// The lease thread: renews this server's leases and claims work every `tick`, until the
/// manager is dropped. It keeps renewing during shutdown, while jobs checkpoint.
pub(super) fn coordinate(manager: Weak<Manager>, tick: Duration) {
    loop {
        std::thread::sleep(tick);
        let Some(m) = manager.upgrade() else {
            return;
        };
        if let Err(e) = m.renew_leases() {
            tracing::error!(error = %e, "could not renew job leases");
        }
        if let Err(e) = m.schedule() {
            tracing::error!(error = %e, "could not schedule jobs");
        }
    }
}
