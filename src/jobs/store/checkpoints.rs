//! The queries of the checkpoint index: add (dropping pruned steps), rebuild from disk, list.
//! Blocking.

use std::path::PathBuf;

use super::sql::{rows, Cols, Db, Val};
use super::{metrics_json, parse_metrics, CheckpointRecord, Store};
use crate::Result;

fn checkpoint_row(r: &dyn Cols) -> Result<CheckpointRecord> {
    Ok(CheckpointRecord {
        step: r.int(0)? as u64,
        path: PathBuf::from(r.text(1)?),
        saved_ms: r.int(2)?,
        metrics: parse_metrics(&r.text(3)?),
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

impl Store {
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
