//! The job manager's sections of `noiseda serve`'s flags ([`crate::grpc::ServerConfig`]
//! flattens them): where jobs are stored, and how jobs are scheduled and leased.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::store::StoreUrl;
use crate::check::{at_most_a_day, positive};
use crate::{Error, Result};

/// Smallest `--lease-ms`.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// Where job records, job folders and exported models live.
#[derive(Args, Debug, Clone)]
pub struct StorageConfig {
    /// Job records (SQLite), job folders (checkpoints, metric logs). Use a persistent volume.
    #[arg(
        long,
        env = "NOISEDA_DATA_DIR",
        default_value = "noiseda-data",
        display_order = 2
    )]
    pub data_dir: PathBuf,
    /// Where ExportModel writes artifacts (default: <data-dir>/models).
    #[arg(long, env = "NOISEDA_MODEL_DIR", display_order = 3)]
    pub model_dir: Option<PathBuf>,
    /// Job store: `sqlite` (<data-dir>/noiseda.db, one server), `sqlite:PATH`, or
    /// `postgres://user:pass@host:5432/db` shared by several training replicas (which then
    /// share --data-dir too).
    #[arg(
        long,
        env = "NOISEDA_STORE",
        default_value = "sqlite",
        display_order = 11
    )]
    pub store: String,
}

/// The job manager: devices, CPU slots, data confinement and leases.
#[derive(Args, Debug, Clone)]
pub struct JobsConfig {
    /// Devices jobs may run on; one job per GPU at a time.
    #[arg(
        long,
        env = "NOISEDA_DEVICES",
        value_delimiter = ',',
        default_value = "cpu",
        display_order = 4
    )]
    pub devices: Vec<String>,
    /// Jobs that may run on the CPU at once (at least 1).
    #[arg(long, env = "NOISEDA_CPU_JOBS", default_value_t = 1, display_order = 5)]
    pub cpu_jobs: usize,
    /// Directories job specs may read data from (comma-separated); paths elsewhere, with
    /// `..`, or symlinked out of them are refused. Default: anywhere.
    #[arg(
        long,
        env = "NOISEDA_DATA_ROOTS",
        value_delimiter = ',',
        display_order = 6
    )]
    pub data_roots: Vec<PathBuf>,
    /// This server's name in job leases; unique per replica (default: <hostname>-<pid>). A
    /// replica restarted under the same name takes its jobs back without waiting.
    #[arg(long, env = "NOISEDA_REPLICA_ID", display_order = 12)]
    pub replica_id: Option<String>,
    /// The MLflow tracking server (`http://host:5000`) of jobs whose spec names none in
    /// `[tracking] mlflow_uri`.
    #[arg(long, env = "NOISEDA_MLFLOW_URI", display_order = 14)]
    pub mlflow_uri: Option<String>,
    /// Milliseconds a job's lease lasts without renewal: how soon another replica takes over
    /// the jobs of one that died (300 to 86400000).
    #[arg(
        long,
        env = "NOISEDA_LEASE_MS",
        default_value_t = 15_000,
        display_order = 13
    )]
    pub lease_ms: u64,
}

impl StorageConfig {
    /// `--model-dir`, else `<data-dir>/models`.
    pub fn model_dir(&self) -> PathBuf {
        self.model_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }

    /// `--store` parsed (`sqlite` is `<data-dir>/noiseda.db`).
    pub fn store_url(&self) -> Result<StoreUrl> {
        StoreUrl::parse(&self.store, &self.data_dir)
    }
}

impl JobsConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// `--replica-id`, else `<hostname>-<pid>` (unique among the processes sharing a store).
    pub fn replica_id(&self) -> String {
        if let Some(id) = &self.replica_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "noiseda".into());
        format!("{host}-{}", std::process::id())
    }

    /// `--data-roots` as canonical directories; a root that is missing or not a directory is
    /// an error naming the flag.
    pub fn canonical_data_roots(&self) -> Result<Vec<PathBuf>> {
        self.data_roots
            .iter()
            .map(|r| match r.canonicalize() {
                Ok(c) if c.is_dir() => Ok(c),
                Ok(_) => Err(Error::invalid(
                    "--data-roots",
                    format!("{} is not a directory", r.display()),
                )),
                Err(e) => Err(Error::invalid(
                    "--data-roots",
                    format!("{}: {e}", r.display()),
                )),
            })
            .collect()
    }

    /// The devices and the ranges.
    pub(crate) fn problems(&self) -> Vec<Error> {
        let mut bad = Vec::new();
        if self.devices.is_empty() {
            bad.push(Error::invalid("--devices", "give at least one device"));
        }
        for d in &self.devices {
            if let Err(e) = crate::device::parse(d) {
                bad.push(Error::invalid("--devices", e.to_string()));
            }
        }
        bad.extend(positive("--cpu-jobs", self.cpu_jobs));
        if self.lease() < MIN_LEASE {
            bad.push(Error::invalid("--lease-ms", "must be at least 300 ms"));
        }
        bad.extend(at_most_a_day("--lease-ms", self.lease()));
        bad
    }
}
