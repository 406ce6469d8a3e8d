//! The queries of a job's metric points (the training log, as `runlog::MetricPoint`): added
//! once per seq, read in seq order. Named `points`, not `metrics`: in this crate "metrics" is
//! also PSNR/SSIM and Prometheus. Blocking.

use super::sql::{first, rows, Cols, Val};
use super::Store;
use crate::runlog::MetricPoint;
use crate::Result;

fn point_row(r: &dyn Cols) -> Result<MetricPoint> {
    Ok(MetricPoint {
        seq: r.int(0)? as u64,
        step: r.int(1)? as u64,
        wall: r.real(2)?,
        series: r.text(3)?,
        split: r.text(4)?.parse()?,
        value: r.real(5)?,
    })
}

impl Store {
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
                        Val::Text(p.split.as_str()),
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
}
