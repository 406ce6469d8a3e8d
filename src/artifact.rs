//! Model artifacts: a restorer-only `model.safetensors` plus `manifest.json` (architecture,
//! parameter count, sha256 of the weights, training metrics, source spec). Loading verifies
//! the hash and the architecture before any weight is used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{DataRange, JobSpec, Weights};
use crate::fsio;
use crate::model::{self, ArchConfig, Restorer};
use crate::{Error, Result};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub arch: ArchConfig,
    pub parameters: u64,
    /// Hex sha256 of `model.safetensors`.
    pub sha256: String,
    pub weights: Weights,
    /// Value range the restorer works in (absent in older manifests: [0, 1]).
    #[serde(default)]
    pub range: DataRange,
    pub step: u64,
    pub metrics: BTreeMap<String, f64>,
    pub source_spec: Option<JobSpec>,
    /// The training job (id) the weights came from, when a server exported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_job: Option<String>,
    pub noiseda_version: String,
    pub created_unix: u64,
}

/// What the exporter knows besides the tensors.
pub struct ExportInfo {
    pub name: String,
    pub arch: ArchConfig,
    pub weights: Weights,
    pub range: DataRange,
    pub step: u64,
    pub metrics: BTreeMap<String, f64>,
    pub source_spec: Option<JobSpec>,
    pub source_job: Option<String>,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Writes an artifact directory atomically (temp dir, then rename over `dir`).
pub fn export(dir: &Path, tensors: &HashMap<String, Tensor>, info: ExportInfo) -> Result<Manifest> {
    // The tensors must build the declared architecture exactly.
    check_tensors(&info.arch, tensors)?;
    let tmp = fsio::temp_dir(dir, "model")?;
    let cpu: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let weights_path = tmp.join(WEIGHTS_FILE);
    candle::safetensors::save(&cpu, &weights_path)
        .map_err(|e| Error::artifact(format!("writing {}: {e}", weights_path.display())))?;
    fsio::sync(&weights_path)?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: info.name,
        parameters: model::parameter_count(&info.arch)?,
        arch: info.arch,
        sha256: sha256_file(&weights_path)?,
        weights: info.weights,
        range: info.range,
        step: info.step,
        metrics: info.metrics,
        source_spec: info.source_spec,
        source_job: info.source_job,
        noiseda_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix: crate::clock::unix_secs(),
    };
    let mpath = tmp.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises. This is a bug.");
    std::fs::write(&mpath, json).map_err(|e| Error::io(&mpath, e))?;
    fsio::sync(&mpath)?;
    fsio::sync(&tmp)?;
    fsio::publish_dir(&tmp, dir)?;
    Ok(manifest)
}

/// Builds the architecture from `tensors`, failing on a missing, extra or misshapen tensor.
fn check_tensors(arch: &ArchConfig, tensors: &HashMap<String, Tensor>) -> Result<Restorer> {
    let dev = tensors
        .values()
        .next()
        .map(|t| t.device().clone())
        .unwrap_or(Device::Cpu);
    // Collect the names the architecture asks for.
    let expected = {
        let varmap = candle_nn::VarMap::new();
        Restorer::new(
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            arch,
        )?;
        let data = varmap.data().lock().expect("varmap lock. This is a bug.");
        data.iter()
            .map(|(n, v)| (n.clone(), v.dims().to_vec()))
            .collect::<HashMap<_, _>>()
    };
    for (name, dims) in &expected {
        match tensors.get(name) {
            None => {
                return Err(Error::artifact(format!(
                    "weights lack `{name}` required by {arch:?}"
                )))
            }
            Some(t) if t.dims() != dims.as_slice() => {
                return Err(Error::artifact(format!(
                    "`{name}` has shape {:?}, {arch:?} needs {dims:?}",
                    t.dims()
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(Error::artifact(format!(
            "weights have `{extra}`, which {arch:?} does not use"
        )));
    }
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
    Ok(Restorer::new(vb, arch)?)
}

/// A loaded, verified restorer ready for inference.
pub struct LoadedModel {
    pub manifest: Manifest,
    pub net: Restorer,
    pub device: Device,
    pub dir: PathBuf,
}

/// Reads a manifest (from an artifact directory or the manifest file itself).
/// A path that does not exist is [`Error::NotFound`], named as given.
pub fn read_manifest(path: &Path) -> Result<(PathBuf, Manifest)> {
    if !path.exists() {
        return Err(Error::NotFound(format!(
            "{} does not exist (pass a model directory written by `noiseda train` or \
             `noiseda export`, with its {MANIFEST_FILE})",
            path.display()
        )));
    }
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let mpath = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&mpath).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::artifact(format!(
                "{} has no {MANIFEST_FILE}; pass a model directory written by `noiseda train` or `noiseda export`",
                dir.display()
            ))
        } else {
            Error::io(&mpath, e)
        }
    })?;
    // serde_json names the line and column of invalid UTF-8 as of any other syntax error.
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::artifact(format!("{}: {e}", mpath.display())))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(Error::artifact(format!(
            "{} has format_version {}, this build reads {FORMAT_VERSION}",
            mpath.display(),
            manifest.format_version
        )));
    }
    Ok((dir, manifest))
}

/// Loads and verifies an artifact onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    let (dir, manifest) = read_manifest(path)?;
    let wpath = dir.join(WEIGHTS_FILE);
    // One read: the bytes that are hashed are the bytes that are loaded.
    let bytes = std::fs::read(&wpath).map_err(|e| Error::io(&wpath, e))?;
    let actual = format!("{:x}", Sha256::digest(&bytes));
    if actual != manifest.sha256 {
        return Err(Error::artifact(format!(
            "sha256 of {} is {actual}, manifest says {}: the weights were changed or corrupted",
            wpath.display(),
            manifest.sha256
        )));
    }
    manifest.arch.validate()?;
    let tensors = candle::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::artifact(format!("{}: {e}", wpath.display())))?;
    let net = check_tensors(&manifest.arch, &tensors)
        .map_err(|e| Error::artifact(format!("{}: {e}", wpath.display())))?;
    let params = model::parameter_count(&manifest.arch)?;
    if params != manifest.parameters {
        return Err(Error::artifact(format!(
            "manifest says {} parameters, {:?} has {params}",
            manifest.parameters, manifest.arch
        )));
    }
    Ok(LoadedModel {
        manifest,
        net,
        device: device.clone(),
        dir,
    })
}
