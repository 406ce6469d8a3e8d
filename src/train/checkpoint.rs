//! Checkpoints: one directory per step (`step-00000100/`) holding model, EMA and optimizer
//! safetensors plus `meta.json`; written to a temp dir and renamed, so a crash never leaves a
//! half-written checkpoint; only the newest `keep_last` are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::JobSpec;
use crate::fsio;
use crate::{Error, Result};

pub const MODEL_FILE: &str = "model.safetensors";
pub const EMA_FILE: &str = "ema.safetensors";
pub const OPTIM_FILE: &str = "optim.safetensors";
pub const META_FILE: &str = "meta.json";

/// What `meta.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// Optimizer steps completed.
    pub step: u64,
    /// The job spec the run was started with.
    pub spec: JobSpec,
    /// Latest metric values (series name → value).
    pub metrics: BTreeMap<String, f64>,
    /// Seconds since the Unix epoch when written.
    pub saved_unix: u64,
}

/// A checkpoint's tensors, loaded onto a device.
pub struct Loaded {
    pub meta: Meta,
    pub model: HashMap<String, Tensor>,
    pub ema: HashMap<String, Tensor>,
    pub optim: HashMap<String, Tensor>,
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Where a checkpoint went and which older ones (by step) were pruned.
#[derive(Debug, Clone)]
pub struct Saved {
    pub dir: PathBuf,
    pub pruned: Vec<u64>,
}

/// The series that decides the best checkpoint (higher is better); kept through pruning.
pub const BEST_METRIC: &str = "val/psnr";

/// Saves a checkpoint under `root` atomically and prunes old ones: only the newest
/// `keep_last` stay, plus the best by [`BEST_METRIC`] when any checkpoint has it.
pub fn save(
    root: &Path,
    meta: &Meta,
    model: &HashMap<String, Tensor>,
    ema: &HashMap<String, Tensor>,
    optim: &HashMap<String, Tensor>,
    keep_last: usize,
) -> Result<Saved> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let dest = root.join(step_dir_name(meta.step));
    let tmp = fsio::temp_dir(&dest, "checkpoint")?;
    for (file, tensors) in [(MODEL_FILE, model), (EMA_FILE, ema), (OPTIM_FILE, optim)] {
        let path = tmp.join(file);
        candle::safetensors::save(tensors, &path)
            .map_err(|e| Error::checkpoint(format!("writing {}: {e}", path.display())))?;
        fsio::sync(&path)?;
    }
    let json = serde_json::to_vec_pretty(meta).expect("Meta serialises. This is a bug.");
    let meta_path = tmp.join(META_FILE);
    std::fs::write(&meta_path, json).map_err(|e| Error::io(&meta_path, e))?;
    fsio::sync(&meta_path)?;
    fsio::sync(&tmp)?;
    // Crash tests stop the process here: everything written, nothing renamed.
    fail::fail_point!("checkpoint-before-rename", |_| std::process::abort());
    fsio::publish_dir(&tmp, &dest)?;
    let mut pruned = Vec::new();
    if keep_last > 0 {
        let all = list(root)?;
        let best = best(&all);
        for (step, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
            if Some(*step) != best {
                std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
                pruned.push(*step);
            }
        }
    }
    Ok(Saved { dir: dest, pruned })
}

/// The step of the checkpoint with the highest [`BEST_METRIC`], if any has it.
pub fn best(all: &[(u64, PathBuf)]) -> Option<u64> {
    all.iter()
        .filter_map(|(step, dir)| {
            let v = *read_meta(dir).ok()?.metrics.get(BEST_METRIC)?;
            v.is_finite().then_some((*step, v))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(step, _)| step)
}

/// Takes `key` out of saved tensors, checked against the live tensor it will replace and moved
/// to its device and dtype; `what` names the file's role in errors ("EMA weights", ...).
pub fn take_like(
    saved: &mut HashMap<String, Tensor>,
    key: &str,
    like: &Tensor,
    what: &str,
) -> Result<Tensor> {
    let t = saved
        .remove(key)
        .ok_or_else(|| Error::checkpoint(format!("{what} have no `{key}`")))?;
    if t.dims() != like.dims() {
        return Err(Error::checkpoint(format!(
            "{what}: `{key}` has shape {:?}, the model has {:?}",
            t.dims(),
            like.dims()
        )));
    }
    Ok(t.to_device(like.device())?.to_dtype(like.dtype())?)
}

/// Fails if saved tensors are left over after every expected key was taken.
pub fn no_leftovers(saved: &HashMap<String, Tensor>, what: &str) -> Result<()> {
    match saved.keys().min() {
        Some(extra) => Err(Error::checkpoint(format!(
            "{what} have `{extra}`, which this model does not"
        ))),
        None => Ok(()),
    }
}

/// Complete checkpoints under `root`, oldest first, as (step, dir).
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let path = entry.map_err(|e| Error::io(root, e))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(step) = step {
            if path.join(META_FILE).is_file() {
                out.push((step, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest checkpoint under `root`, if any.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    Ok(list(root)?.pop().map(|(_, p)| p))
}

pub fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::checkpoint(format!("{}: {e}", path.display())))
}

/// Loads a checkpoint directory onto `dev`.
pub fn load(dir: &Path, dev: &Device) -> Result<Loaded> {
    let meta = read_meta(dir)?;
    let read = |file: &str| -> Result<HashMap<String, Tensor>> {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(Error::checkpoint(format!("{} is missing", path.display())));
        }
        candle::safetensors::load(&path, dev)
            .map_err(|e| Error::checkpoint(format!("{}: {e}", path.display())))
    };
    Ok(Loaded {
        model: read(MODEL_FILE)?,
        ema: read(EMA_FILE)?,
        optim: read(OPTIM_FILE)?,
        meta,
    })
}
