//! The training metric log: each job's append-only `metrics.jsonl` of [`MetricPoint`]s
//! (read, repaired after a crash, appended to), mirrored as TensorBoard event files
//! ([`tensorboard`]), and the curves drawn from it ([`curves`]). Blocking.

pub mod curves;
pub mod tensorboard;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which data a metric point was measured on; `"train"` / `"val"` in `metrics.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training batches (losses, λ).
    Train,
    /// The validation pairs (PSNR, SSIM, …).
    Val,
}

impl Split {
    /// The name the log and the job store use.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            other => Err(Error::data(format!(
                "unknown metric split `{other}`; expected `train` or `val`"
            ))),
        }
    }
}

/// One line of `metrics.jsonl`: the job's append-only metric log. `seq` numbers the points
/// 1, 2, 3, … without gaps; `wall` is Unix time in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    #[serde(default)]
    pub seq: u64,
    pub step: u64,
    pub wall: f64,
    pub series: String,
    pub split: Split,
    pub value: f64,
}

/// Appends metric points to `metrics.jsonl`, numbering them.
pub struct MetricLog {
    file: std::fs::File,
    path: PathBuf,
    seq: u64,
    /// Newest step already in the log and the (series, split) pairs logged at it: a resumed
    /// run recomputes the steps after its checkpoint exactly and does not log them twice.
    logged: Option<(u64, HashSet<(String, Split)>)>,
    /// The same points as TensorBoard scalars, in `tensorboard/` beside the log.
    events: tensorboard::EventWriter,
}

/// The TensorBoard tag of a point: `train/charbonnier`, `val/psnr`, ….
pub fn tensorboard_tag(split: Split, series: &str) -> String {
    format!("{split}/{series}")
}

/// Reads a metric log; a torn last line (a crash mid-write) is dropped. Lines written before
/// points were numbered get their line number as `seq`.
pub fn read_metric_log(path: &Path) -> Result<Vec<MetricPoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut points = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            break;
        }
        let mut p: MetricPoint = serde_json::from_str(line)
            .map_err(|e| Error::data(format!("{} line {}: {e}", path.display(), i + 1)))?;
        if p.seq == 0 {
            p.seq = i as u64 + 1;
        }
        points.push(p);
    }
    Ok(points)
}

/// Cuts a torn last line (left by a crash mid-write) off a metric log.
pub fn repair_metric_log(path: &Path) -> Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let cut = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if cut < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.set_len(cut as u64).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

impl MetricLog {
    /// Opens the log for appending. A fresh run starts an empty log; a resumed run keeps every
    /// point already logged (the log is append-only: what a client saw stays true).
    pub fn open(path: PathBuf, resume: bool) -> Result<Self> {
        if !resume && path.exists() {
            // A fresh run (no checkpoint yet): points of an earlier attempt do not belong to it.
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        repair_metric_log(&path)?;
        let points = read_metric_log(&path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("tensorboard"), |d| d.join("tensorboard"));
        let mut events = tensorboard::EventWriter::recreate(&dir)?;
        for p in &points {
            events.scalar(
                &tensorboard_tag(p.split, &p.series),
                p.step,
                p.wall,
                p.value,
            )?;
        }
        let logged = points.last().map(|last| {
            let at_last = points
                .iter()
                .filter(|p| p.step == last.step)
                .map(|p| (p.series.clone(), p.split))
                .collect();
            (last.step, at_last)
        });
        Ok(Self {
            file,
            path,
            seq: points.last().map_or(0, |p| p.seq),
            logged,
            events,
        })
    }

    /// Appends one point; `None` when a run before a resume already logged it.
    pub fn push(
        &mut self,
        step: u64,
        series: &str,
        split: Split,
        value: f64,
    ) -> Result<Option<MetricPoint>> {
        if let Some((last, at_last)) = &self.logged {
            let key = (series.to_string(), split);
            if step < *last || (step == *last && at_last.contains(&key)) {
                return Ok(None);
            }
        }
        self.seq += 1;
        let p = MetricPoint {
            seq: self.seq,
            step,
            wall: crate::clock::unix_secs_f64(),
            series: series.to_string(),
            split,
            value,
        };
        let mut line = serde_json::to_vec(&p).expect("metric point serialises. This is a bug.");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| Error::io(&self.path, e))?;
        self.events
            .scalar(&tensorboard_tag(split, series), step, p.wall, value)?;
        Ok(Some(p))
    }
}
