//! The model registry of the Restore service: loaded restorers by name (each with its own
//! model thread and batcher), the default model, atomic hot swap after a warm-up pass, unload.
//! Loading blocks (reads and verifies the artifact, warms the model up); call it off the
//! async runtime.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use candle::Device;
use tokio::sync::{oneshot, Semaphore};

use super::batcher::{Batcher, Pending};
use super::config::BatchConfig;
use super::stats::ModelStats;
use super::Telemetry;
use crate::artifact::{self, Manifest};
use crate::data::Image;
use crate::{Error, Result};

/// One loaded version of a model.
pub struct Served {
    pub name: String,
    pub version: String,
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub loaded_at: SystemTime,
    pub batcher: Batcher,
    pub stats: Arc<ModelStats>,
}

#[derive(Default)]
struct Models {
    by_name: BTreeMap<String, Arc<Served>>,
    default: Option<String>,
}

pub struct Registry {
    models: RwLock<Models>,
    /// Artifacts [`Registry::load_new`] could not load, with their manifest's modification
    /// time (retried when it changes).
    failed: std::sync::Mutex<HashMap<String, SystemTime>>,
    model_dir: PathBuf,
    device: Device,
    batch: BatchConfig,
    prom: Arc<dyn Telemetry>,
    /// Server-wide bound on queued images (each queued image holds one permit).
    pub permits: Arc<Semaphore>,
}

impl Registry {
    pub fn new(
        model_dir: PathBuf,
        device: Device,
        batch: BatchConfig,
        prom: Arc<dyn Telemetry>,
    ) -> Self {
        Self {
            models: RwLock::new(Models::default()),
            failed: Default::default(),
            model_dir,
            device,
            permits: Arc::new(Semaphore::new(batch.max_queue)),
            batch,
            prom,
        }
    }

    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn batch_options(&self) -> BatchConfig {
        self.batch
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Models> {
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Models> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every artifact directory directly under the model directory (sorted by name; the
    /// first becomes the default unless `default` names one). Unloadable ones are logged and
    /// skipped. Returns the names loaded.
    pub fn load_all(&self, default: Option<&str>) -> Result<Vec<String>> {
        let mut loaded = Vec::new();
        for dir in self.artifact_dirs()? {
            let name = dir_name(&dir);
            match self.load(&dir, &name, "", default == Some(name.as_str())) {
                Ok(s) => loaded.push(s.name.clone()),
                Err(e) => tracing::error!(model = %name, error = %e, "not loaded"),
            }
        }
        if let Some(d) = default {
            if !loaded.iter().any(|n| n == d) {
                return Err(Error::NotFound(format!(
                    "--default-model `{d}` is not a loadable artifact in {}",
                    self.model_dir.display()
                )));
            }
        }
        Ok(loaded)
    }

    /// The directories directly under the model directory that hold a manifest, by name.
    fn artifact_dirs(&self) -> Result<Vec<PathBuf>> {
        let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&self.model_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join(artifact::MANIFEST_FILE).is_file())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&self.model_dir, e)),
        };
        dirs.sort();
        Ok(dirs)
    }

    /// Loads the artifact directories of the model directory that are not loaded yet (by
    /// name): models exported by a training server, possibly another machine's, on a shared
    /// volume. Returns the names loaded.
    pub fn load_new(&self) -> Result<Vec<String>> {
        let mut loaded = Vec::new();
        for dir in self.artifact_dirs()? {
            let name = dir_name(&dir);
            let Ok(modified) = dir
                .join(artifact::MANIFEST_FILE)
                .metadata()
                .and_then(|m| m.modified())
            else {
                continue;
            };
            if self.read().by_name.contains_key(&name) || check_name(&name).is_err() {
                continue;
            }
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            if failed.get(&name) == Some(&modified) {
                continue;
            }
            drop(failed);
            match self.load(&dir, &name, "", false) {
                Ok(s) => loaded.push(s.name.clone()),
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "new artifact not loaded; retried when it changes");
                    failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                    failed.insert(name, modified);
                }
            }
        }
        Ok(loaded)
    }

    /// Follows the model directory's `DEFAULT` file (one model name): when it names a loaded
    /// model other than the default, that model becomes the default — how an operator
    /// promotes a model on every replica sharing the directory at once. Returns the new
    /// default when it changed.
    pub fn follow_default_file(&self) -> Result<Option<String>> {
        let path = self.model_dir.join(DEFAULT_FILE);
        let name = match std::fs::read_to_string(&path) {
            Ok(t) => t.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if name.is_empty() || self.default_name().as_deref() == Some(name.as_str()) {
            return Ok(None);
        }
        if !self.read().by_name.contains_key(&name) {
            return Ok(None); // not loaded (yet): looked at again on the next scan
        }
        self.set_default(&name)?;
        tracing::info!(model = %name, "default model set from {}", path.display());
        Ok(Some(name))
    }

    /// Resolves a LoadModel path: relative to the model directory, or absolute inside it.
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        let p = Path::new(path);
        if path.is_empty() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(Error::invalid_input(format!(
                "path `{path}`: give an artifact directory inside the model directory {} (no `..`)",
                self.model_dir.display()
            )));
        }
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.model_dir.join(p)
        };
        if !full.starts_with(&self.model_dir) {
            return Err(Error::invalid_input(format!(
                "path `{path}` is outside the model directory {}",
                self.model_dir.display()
            )));
        }
        if !full.join(artifact::MANIFEST_FILE).is_file() {
            return Err(Error::NotFound(format!(
                "no model artifact at {} (expected {})",
                full.display(),
                artifact::MANIFEST_FILE
            )));
        }
        Ok(full)
    }

    /// Loads an artifact as `name` (replacing the loaded version after a warm-up pass; the old
    /// version keeps serving until then and if anything fails).
    pub fn load(
        &self,
        dir: &Path,
        name: &str,
        version: &str,
        make_default: bool,
    ) -> Result<Arc<Served>> {
        check_name(name)?;
        let t0 = Instant::now();
        let model = artifact::load(dir, &self.device)?;
        let version = if version.is_empty() {
            model.manifest.sha256.chars().take(12).collect()
        } else {
            version.to_string()
        };
        let stats = Arc::new(ModelStats::default());
        let batcher = Batcher::spawn(
            name,
            model.net,
            model.manifest.range,
            self.device.clone(),
            self.batch,
            self.prom.clone(),
            stats.clone(),
        )?;
        let served = Arc::new(Served {
            name: name.to_string(),
            version,
            manifest: model.manifest,
            dir: model.dir,
            loaded_at: SystemTime::now(),
            batcher,
            stats,
        });
        warm_up(&served, &self.permits)?;
        served.stats.clear();
        let mut m = self.write();
        let old = m.by_name.insert(name.to_string(), served.clone());
        if make_default || m.default.is_none() {
            m.default = Some(name.to_string());
        }
        drop(m);
        tracing::info!(
            model = %name,
            version = %served.version,
            replaced = ?old.map(|o| o.version.clone()),
            ms = t0.elapsed().as_millis() as u64,
            "model loaded and warmed up"
        );
        Ok(served)
    }

    /// Stops routing to `name`; queued requests finish, then its thread and memory go.
    pub fn unload(&self, name: &str) -> Result<()> {
        let mut m = self.write();
        if m.by_name.remove(name).is_none() {
            return Err(self.not_found(&m, name));
        }
        if m.default.as_deref() == Some(name) {
            m.default = m.by_name.keys().next().cloned();
        }
        tracing::info!(model = %name, default = ?m.default, "model unloaded");
        Ok(())
    }

    pub fn set_default(&self, name: &str) -> Result<Arc<Served>> {
        let mut m = self.write();
        let s = m
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| self.not_found(&m, name))?;
        m.default = Some(name.to_string());
        Ok(s)
    }

    /// The model for a request: by name ("" = default), checked against `version` when set.
    pub fn get(&self, name: &str, version: &str) -> Result<Arc<Served>> {
        let m = self.read();
        let key = if name.is_empty() {
            m.default.clone().ok_or_else(|| {
                Error::unavailable("no model is loaded (LoadModel or --model-dir)")
            })?
        } else {
            name.to_string()
        };
        let s = m
            .by_name
            .get(&key)
            .cloned()
            .ok_or_else(|| self.not_found(&m, &key))?;
        if !version.is_empty() && s.version != version {
            return Err(Error::NotFound(format!(
                "model `{key}` version `{version}` (loaded: `{}`)",
                s.version
            )));
        }
        Ok(s)
    }

    fn not_found(&self, m: &Models, name: &str) -> Error {
        let have: Vec<&str> = m.by_name.keys().map(String::as_str).collect();
        Error::NotFound(format!(
            "model `{name}` (loaded: {})",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ))
    }

    /// Every loaded model and whether it is the default.
    pub fn list(&self) -> Vec<(Arc<Served>, bool)> {
        let m = self.read();
        m.by_name
            .values()
            .map(|s| (s.clone(), m.default.as_deref() == Some(s.name.as_str())))
            .collect()
    }

    pub fn default_name(&self) -> Option<String> {
        self.read().default.clone()
    }
}

/// Every `every`, loads new artifacts of the model directory ([`Registry::load_new`]) and
/// follows its `DEFAULT` file ([`Registry::follow_default_file`]) until shutdown.
pub async fn watch(
    registry: Arc<Registry>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let r = registry.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let names = r.load_new()?;
            r.follow_default_file()?;
            Ok::<_, Error>(names)
        });
        match scan.await {
            Ok(Ok(names)) if !names.is_empty() => {
                tracing::info!(models = ?names, "new models picked up from the model directory")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not scan the model directory"),
            Err(e) => tracing::error!(error = %e, "model scan task failed"),
        }
    }
}

/// A file in the model directory naming the default model of every replica that reads it.
pub const DEFAULT_FILE: &str = "DEFAULT";

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Model names (also the folder names of the model directory): letters, digits, `.`, `_`,
/// `-`, not starting with a dot.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "model name `{name}`: use 1-128 letters, digits, `.`, `_` or `-`, not starting with `.`"
        )))
    }
}

/// One small image through the model thread before the model takes traffic.
fn warm_up(served: &Served, permits: &Arc<Semaphore>) -> Result<()> {
    let side = 64;
    let image = Image {
        width: side,
        height: side,
        data: vec![0.5; side * side * 3],
    };
    let permit = permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded("the queue is full; cannot warm the model up now".into()))?;
    let (tx, rx) = oneshot::channel();
    served.batcher.submit(Pending {
        image,
        tiling: None,
        enqueued: Instant::now(),
        deadline: Some(Instant::now() + Duration::from_secs(600)),
        reply: tx,
        permit,
    })?;
    rx.blocking_recv()
        .map_err(|_| Error::unavailable("the model thread stopped during warm-up"))??;
    Ok(())
}
