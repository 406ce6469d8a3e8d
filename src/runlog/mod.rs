//! The training metric log: each job's append-only `metrics.jsonl` of [`MetricPoint`]s
//! (read, repaired after a crash, appended to) and its validation crops (`val-crops/`),
//! mirrored as TensorBoard event files ([`tensorboard`]), and the curves drawn from it
//! ([`curves`]). Blocking.

pub mod curves;
pub mod mlflow;
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
    /// The same points as TensorBoard scalars, in `tensorboard/` beside the log (unless off).
    events: Option<tensorboard::EventWriter>,
    /// The run directory (holding `val-crops/`), and the crops it held when the log opened.
    run_dir: PathBuf,
    crops_at_open: HashSet<(u64, usize)>,
}

/// The directory of a run's validation crops, beside its `metrics.jsonl`.
pub const CROPS_DIR: &str = "val-crops";

/// The file of validation crop `index` at `step` in a run directory.
pub fn crop_path(run_dir: &Path, step: u64, index: usize) -> PathBuf {
    run_dir
        .join(CROPS_DIR)
        .join(format!("{step:08}-{index}.png"))
}

/// The validation crops of a run directory as (step, index, path), by step then index.
pub fn list_crops(run_dir: &Path) -> Result<Vec<(u64, usize, PathBuf)>> {
    let dir = run_dir.join(CROPS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut crops: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (step, index) = name.strip_suffix(".png")?.split_once('-')?;
            Some((step.parse().ok()?, index.parse().ok()?, e.path()))
        })
        .collect();
    crops.sort();
    Ok(crops)
}

/// The TensorBoard tag of validation crop `index`.
pub fn crop_tag(index: usize) -> String {
    format!("val/crop/{index}")
}

fn encode_png(img: &image::RgbImage, what: &Path) -> Result<Vec<u8>> {
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| Error::image(what, format!("cannot encode: {e}")))?;
    Ok(png.into_inner())
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

/// A new event file in `dir` holding `points` and `crops` (each step's crops after its points).
fn mirror(
    dir: &Path,
    points: &[MetricPoint],
    crops: &[(u64, usize, PathBuf)],
) -> Result<tensorboard::EventWriter> {
    let mut events = tensorboard::EventWriter::recreate(dir)?;
    let mut pending = crops.iter().peekable();
    for p in points {
        // Each step's crops follow its last point, as they did when it was logged.
        while let Some((step, index, file)) = pending.next_if(|c| c.0 < p.step) {
            replay_crop(&mut events, *step, *index, file)?;
        }
        events.scalar(
            &tensorboard_tag(p.split, &p.series),
            p.step,
            p.wall,
            p.value,
        )?;
    }
    for (step, index, file) in pending {
        replay_crop(&mut events, *step, *index, file)?;
    }
    Ok(events)
}

/// Adds a saved crop to a new event file (its file's time as the event's).
fn replay_crop(
    events: &mut tensorboard::EventWriter,
    step: u64,
    index: usize,
    file: &Path,
) -> Result<()> {
    let png = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let dims = image::ImageReader::with_format(std::io::Cursor::new(&png), image::ImageFormat::Png)
        .into_dimensions()
        .map_err(|e| Error::image(file, format!("cannot read: {e}")))?;
    let wall = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    events.image(&crop_tag(index), step, wall, dims, png)
}

impl MetricLog {
    /// Opens the log for appending. A fresh run starts an empty log; a resumed run keeps every
    /// point already logged (the log is append-only: what a client saw stays true). With
    /// `tensorboard`, the event files are rewritten from the log and kept up with it.
    pub fn open(path: PathBuf, resume: bool, tensorboard: bool) -> Result<Self> {
        if !resume && path.exists() {
            // A fresh run (no checkpoint yet): points of an earlier attempt do not belong to it.
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        let run_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let crops_dir = run_dir.join(CROPS_DIR);
        if !resume && crops_dir.exists() {
            std::fs::remove_dir_all(&crops_dir).map_err(|e| Error::io(&crops_dir, e))?;
        }
        repair_metric_log(&path)?;
        let points = read_metric_log(&path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let crops = list_crops(&run_dir)?;
        let events = if tensorboard {
            Some(mirror(&run_dir.join("tensorboard"), &points, &crops)?)
        } else {
            None
        };
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
            run_dir,
            crops_at_open: crops.iter().map(|(s, i, _)| (*s, *i)).collect(),
        })
    }

    /// Saves the validation crops of `step` (as PNG in `val-crops/`) and adds them to the
    /// event file; crops a run before a resume already saved are kept as they were.
    pub fn push_crops(&mut self, step: u64, crops: &[image::RgbImage]) -> Result<()> {
        for (index, img) in crops.iter().enumerate() {
            if self.crops_at_open.contains(&(step, index)) {
                continue;
            }
            let file = crop_path(&self.run_dir, step, index);
            let png = encode_png(img, &file)?;
            let dir = self.run_dir.join(CROPS_DIR);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            crate::fsio::write_atomic(&file, &png)?;
            if let Some(events) = &mut self.events {
                let wall = crate::clock::unix_secs_f64();
                events.image(&crop_tag(index), step, wall, img.dimensions(), png)?;
            }
        }
        Ok(())
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
        if let Some(events) = &mut self.events {
            events.scalar(&tensorboard_tag(split, series), step, p.wall, value)?;
        }
        Ok(Some(p))
    }
}
