//! [`ServerConfig`]: every `noiseda serve` flag, with its env var and default, as one clap
//! `Args` of flattened sections (network, storage, jobs, restore with its batching and request
//! limits, auth). [`ServerConfig::validate`] checks all of it once, before anything starts;
//! the server reads its sections and the job manager keeps the ones it needs. Plain data: no
//! I/O except `validate` looking at `--data-roots`.
//!
//! Each flag carries a `display_order` so that `noiseda serve --help` lists the flags in the
//! order they had before the sections existed (sections alone would regroup the help).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches};

use super::auth::TlsFiles;
use super::Role;
use crate::jobs::store::StoreUrl;
use crate::{Error, Result};

/// The longest any duration flag may be: a day (so sums with clocks cannot overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Most images that may queue for inference (each model's queue is allocated up front).
pub const MAX_QUEUE: usize = 1 << 16;
/// Smallest `--lease-ms`.
pub const MIN_LEASE: Duration = Duration::from_millis(300);
/// Smallest `--payload-limit`, in bytes.
pub const MIN_PAYLOAD: usize = 1024;
/// Smallest non-zero `--tile-size` (what tiled inference accepts).
pub const MIN_TILE: usize = 16;

/// The settings of `noiseda serve` (and of in-process servers such as the load test).
#[derive(Args, Debug, Clone)]
pub struct ServerConfig {
    #[command(flatten)]
    pub network: NetworkConfig,
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub jobs: JobsConfig,
    #[command(flatten)]
    pub restore: RestoreConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
}

/// Addresses, which services run, message size and shutdown timing.
#[derive(Args, Debug, Clone)]
pub struct NetworkConfig {
    /// gRPC address.
    #[arg(
        long,
        env = "NOISEDA_LISTEN",
        default_value = "0.0.0.0:50051",
        display_order = 0
    )]
    pub listen: SocketAddr,
    /// Prometheus `GET /metrics` address.
    #[arg(
        long,
        env = "NOISEDA_METRICS_LISTEN",
        default_value = "0.0.0.0:9100",
        display_order = 1
    )]
    pub metrics_listen: SocketAddr,
    /// Largest gRPC message in either direction, in bytes (at least 1024).
    #[arg(long, env = "NOISEDA_PAYLOAD_LIMIT", default_value_t = 64 << 20, display_order = 7)]
    pub payload_limit: usize,
    /// Seconds running jobs get to checkpoint after SIGTERM (at most 86400).
    #[arg(
        long,
        env = "NOISEDA_SHUTDOWN_GRACE",
        default_value_t = 30,
        display_order = 8
    )]
    pub shutdown_grace: u64,
    /// Milliseconds after SIGTERM during which open connections stay up and new calls are
    /// answered UNAVAILABLE (readiness is already off) before the server stops accepting (at
    /// most a day).
    #[arg(
        long,
        env = "NOISEDA_DRAIN_DELAY_MS",
        default_value_t = 1000,
        display_order = 9
    )]
    pub drain_delay_ms: u64,
    /// Services to run: all, training or restore.
    #[arg(
        long,
        env = "NOISEDA_ROLE",
        value_enum,
        default_value = "all",
        display_order = 10
    )]
    pub role: Role,
}

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

/// The Restore side: its device, its default model, how it finds new models, and its
/// batching and request limits.
#[derive(Args, Debug, Clone)]
pub struct RestoreConfig {
    /// Milliseconds between looks for new artifacts in --model-dir (Restore; 0 = never; at
    /// most a day).
    #[arg(
        long,
        env = "NOISEDA_MODEL_POLL_MS",
        default_value_t = 5_000,
        display_order = 14
    )]
    pub model_poll_ms: u64,
    /// Device of the Restore service's models.
    #[arg(
        long,
        env = "NOISEDA_RESTORE_DEVICE",
        default_value = "cpu",
        display_order = 15
    )]
    pub restore_device: String,
    /// Model to make the default at start (default: the first in --model-dir by name).
    #[arg(long, env = "NOISEDA_DEFAULT_MODEL", display_order = 16)]
    pub default_model: Option<String>,
    #[command(flatten)]
    pub batch: BatchConfig,
    #[command(flatten)]
    pub limits: LimitsConfig,
}

/// How each model's batcher groups queued images into forward passes.
#[derive(Args, Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Images per forward pass (at least 1).
    #[arg(
        long,
        env = "NOISEDA_MAX_BATCH_SIZE",
        default_value_t = 8,
        display_order = 17
    )]
    pub max_batch_size: usize,
    /// Padded pixels per forward pass (at least 1).
    // The first image of a batch always runs, however large.
    #[arg(long, env = "NOISEDA_MAX_BATCH_PIXELS", default_value_t = 4 << 20, display_order = 18)]
    pub max_batch_pixels: usize,
    /// Microseconds the oldest queued image may wait for others to fill its batch (at most a
    /// day).
    #[arg(
        long,
        env = "NOISEDA_MAX_BATCH_WAIT_US",
        default_value_t = 0,
        display_order = 19
    )]
    pub max_batch_wait_us: u64,
    /// Images queued for inference across all models; beyond it Restore answers
    /// RESOURCE_EXHAUSTED (1 to 65536).
    #[arg(
        long,
        env = "NOISEDA_MAX_QUEUE",
        default_value_t = 64,
        display_order = 20
    )]
    pub max_queue: usize,
}

/// What one Restore request may ask for.
#[derive(Args, Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Larger images are tiled (with --tile-size) or rejected (at least 1).
    #[arg(long, env = "NOISEDA_MAX_IMAGE_PIXELS", default_value_t = 4 << 20, display_order = 21)]
    pub max_image_pixels: usize,
    /// Larger images are rejected before decoding, tiled or not (at least 1).
    #[arg(long, env = "NOISEDA_MAX_INPUT_PIXELS", default_value_t = 64 << 20, display_order = 22)]
    pub max_input_pixels: usize,
    #[arg(
        long,
        env = "NOISEDA_MAX_IMAGES_PER_REQUEST",
        default_value_t = 32,
        display_order = 23
    )]
    pub max_images_per_request: usize,
    /// Tile side for images over --max-image-pixels (0 = reject them; else at least 16).
    #[arg(
        long,
        env = "NOISEDA_TILE_SIZE",
        default_value_t = 512,
        display_order = 24
    )]
    pub tile_size: usize,
    /// Tile overlap (0 = tile/4, at least 16; else less than --tile-size).
    #[arg(
        long,
        env = "NOISEDA_TILE_OVERLAP",
        default_value_t = 0,
        display_order = 25
    )]
    pub tile_overlap: usize,
}

/// API keys and TLS.
#[derive(Args, Debug, Clone, Default)]
pub struct AuthConfig {
    /// API key file (TOML `[[key]]` entries, see `noiseda keygen`); without it every call is
    /// accepted.
    #[arg(long, env = "NOISEDA_API_KEYS", display_order = 26)]
    pub api_keys: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(
        long,
        env = "NOISEDA_TLS_CERT",
        requires = "tls_key",
        display_order = 27
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "NOISEDA_TLS_KEY",
        requires = "tls_cert",
        display_order = 28
    )]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(
        long,
        env = "NOISEDA_TLS_CLIENT_CA",
        requires = "tls_cert",
        display_order = 29
    )]
    pub tls_client_ca: Option<PathBuf>,
}

/// `noiseda serve` alone, for building a [`ServerConfig`] from its defaults.
#[derive(clap::Parser)]
#[command(name = "serve")]
struct Defaults {
    #[command(flatten)]
    config: ServerConfig,
}

impl Default for ServerConfig {
    /// The flags' defaults (the `NOISEDA_*` environment is not read).
    fn default() -> Self {
        let cmd = Defaults::command().mut_args(|a| a.env(None::<&str>));
        cmd.try_get_matches_from(["serve"])
            .and_then(|m| Defaults::from_arg_matches(&m))
            .map(|d| d.config)
            .expect("the flags' defaults parse")
    }
}

impl ServerConfig {
    /// Every check of the flags, at once (all problems reported together): the ranges of the
    /// limits and durations, the tile settings and the job devices; with the Training role the
    /// store URL, replica id and data roots; with the Restore role the restore device.
    pub fn validate(&self) -> Result<()> {
        let mut bad = self.network.problems();
        bad.extend(self.jobs.problems());
        bad.extend(self.restore.problems());
        if self.network.role.training() {
            bad.extend(self.storage.store_url().err());
            if self.jobs.replica_id.as_deref().is_some_and(str::is_empty) {
                bad.push(Error::config("--replica-id", "must not be empty"));
            }
            bad.extend(self.jobs.canonical_data_roots().err());
        }
        if self.network.role.restore() {
            if let Err(e) = crate::device::parse(&self.restore.restore_device) {
                bad.push(Error::config("--restore-device", e.to_string()));
            }
        }
        match bad.len() {
            0 => Ok(()),
            1 => Err(bad.remove(0)),
            n => Err(Error::InvalidArgument(format!(
                "{n} flags are wrong: {}",
                bad.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }
}

/// `Some(error)` naming `flag` unless `lo <= v <= hi`.
fn range<T: PartialOrd + std::fmt::Display>(flag: &str, v: T, lo: T, hi: T) -> Option<Error> {
    if v < lo {
        Some(Error::config(
            flag,
            format!("must be at least {lo}, got {v}"),
        ))
    } else if v > hi {
        Some(Error::config(
            flag,
            format!("must be at most {hi}, got {v}"),
        ))
    } else {
        None
    }
}

/// `Some(error)` naming `flag` when `v` is zero.
fn positive(flag: &str, v: usize) -> Option<Error> {
    range(flag, v, 1, usize::MAX)
}

/// `Some(error)` naming `flag` when `d` is longer than [`MAX_DURATION`].
fn at_most_a_day(flag: &str, d: Duration) -> Option<Error> {
    (d > MAX_DURATION).then(|| {
        Error::config(
            flag,
            format!("must be at most a day, got {} s", d.as_secs_f64()),
        )
    })
}

impl NetworkConfig {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    fn problems(&self) -> Vec<Error> {
        [
            (self.payload_limit < MIN_PAYLOAD).then(|| {
                Error::config(
                    "--payload-limit",
                    format!("must be at least {MIN_PAYLOAD} bytes"),
                )
            }),
            at_most_a_day("--shutdown-grace", self.shutdown_grace()),
            at_most_a_day("--drain-delay-ms", self.drain_delay()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
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
                Ok(_) => Err(Error::config(
                    "--data-roots",
                    format!("{} is not a directory", r.display()),
                )),
                Err(e) => Err(Error::config(
                    "--data-roots",
                    format!("{}: {e}", r.display()),
                )),
            })
            .collect()
    }

    /// The devices and the ranges.
    fn problems(&self) -> Vec<Error> {
        let mut bad = Vec::new();
        if self.devices.is_empty() {
            bad.push(Error::config("--devices", "give at least one device"));
        }
        for d in &self.devices {
            if let Err(e) = crate::device::parse(d) {
                bad.push(Error::config("--devices", e.to_string()));
            }
        }
        bad.extend(positive("--cpu-jobs", self.cpu_jobs));
        if self.lease() < MIN_LEASE {
            bad.push(Error::config("--lease-ms", "must be at least 300 ms"));
        }
        bad.extend(at_most_a_day("--lease-ms", self.lease()));
        bad
    }
}

impl RestoreConfig {
    pub fn model_poll(&self) -> Duration {
        Duration::from_millis(self.model_poll_ms)
    }

    /// The ranges of the batching and request limits.
    fn problems(&self) -> Vec<Error> {
        let (b, l) = (&self.batch, &self.limits);
        let mut bad: Vec<Error> = [
            at_most_a_day("--model-poll-ms", self.model_poll()),
            positive("--max-batch-size", b.max_batch_size),
            positive("--max-batch-pixels", b.max_batch_pixels),
            at_most_a_day("--max-batch-wait-us", b.max_batch_wait()),
            range("--max-queue", b.max_queue, 1, MAX_QUEUE),
            positive("--max-image-pixels", l.max_image_pixels),
            positive("--max-input-pixels", l.max_input_pixels),
            positive("--max-images-per-request", l.max_images_per_request),
        ]
        .into_iter()
        .flatten()
        .collect();
        if l.tile_size != 0 && l.tile_size < MIN_TILE {
            bad.push(Error::config(
                "--tile-size",
                format!(
                    "{} is neither 0 (no tiling) nor at least {MIN_TILE}",
                    l.tile_size
                ),
            ));
        }
        if l.tile_size != 0 && l.tile_overlap >= l.tile_size {
            bad.push(Error::config(
                "--tile-overlap",
                format!(
                    "{} must be less than --tile-size {}",
                    l.tile_overlap, l.tile_size
                ),
            ));
        }
        bad
    }
}

impl BatchConfig {
    pub fn max_batch_wait(&self) -> Duration {
        Duration::from_micros(self.max_batch_wait_us)
    }
}

impl AuthConfig {
    /// The TLS files, when `--tls-cert` and `--tls-key` are given.
    pub fn tls(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags an error names (`invalid config `--flag`: …`, once per problem).
    fn flags(e: Error) -> Vec<String> {
        e.to_string()
            .split("invalid config `")
            .skip(1)
            .filter_map(|part| part.split('`').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn defaults_match_the_flags_and_validate() {
        let cfg = ServerConfig::default();
        assert_eq!(cfg.network.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(cfg.network.payload_limit, 64 << 20);
        assert_eq!(
            cfg.storage.model_dir(),
            PathBuf::from("noiseda-data/models")
        );
        assert_eq!(cfg.jobs.devices, ["cpu"]);
        assert_eq!(cfg.jobs.lease(), Duration::from_secs(15));
        assert_eq!(cfg.restore.batch.max_batch_size, 8);
        assert_eq!(cfg.restore.limits.tile_size, 512);
        assert!(cfg.auth.tls().is_none());
        cfg.validate().unwrap();
    }

    #[test]
    fn validate_names_every_flag_out_of_range() {
        let mut cfg = ServerConfig::default();
        cfg.network.payload_limit = 10;
        cfg.network.shutdown_grace = 1 << 40;
        cfg.jobs.cpu_jobs = 0;
        cfg.jobs.lease_ms = 100;
        cfg.jobs.devices = vec!["tpu".into()];
        cfg.restore.batch.max_batch_size = 0;
        cfg.restore.batch.max_queue = MAX_QUEUE + 1;
        cfg.restore.limits.max_images_per_request = 0;
        cfg.restore.limits.tile_size = 8;
        let got = flags(cfg.validate().unwrap_err());
        for flag in [
            "--payload-limit",
            "--shutdown-grace",
            "--cpu-jobs",
            "--lease-ms",
            "--devices",
            "--max-batch-size",
            "--max-queue",
            "--max-images-per-request",
            "--tile-size",
        ] {
            assert!(got.iter().any(|k| k == flag), "{flag} not in {got:?}");
        }
    }

    #[test]
    fn bounds_are_inclusive_and_tiles_need_room_to_overlap() {
        let mut cfg = ServerConfig::default();
        cfg.network.payload_limit = MIN_PAYLOAD;
        cfg.jobs.lease_ms = MIN_LEASE.as_millis() as u64;
        cfg.restore.batch.max_queue = MAX_QUEUE;
        cfg.restore.limits.tile_size = 0;
        cfg.restore.limits.tile_overlap = 1000;
        cfg.validate().unwrap();
        cfg.restore.limits.tile_size = 64;
        cfg.restore.limits.tile_overlap = 64;
        assert_eq!(flags(cfg.validate().unwrap_err()), ["--tile-overlap"]);
    }

    #[test]
    fn the_restore_role_skips_the_store_and_data_root_checks() {
        let mut cfg = ServerConfig::default();
        cfg.network.role = Role::Restore;
        cfg.jobs.replica_id = Some(String::new());
        cfg.jobs.data_roots = vec!["/no/such/root".into()];
        cfg.storage.store = "mysql://x".into();
        cfg.validate().unwrap();
        cfg.restore.restore_device = "gpu".into();
        assert_eq!(flags(cfg.validate().unwrap_err()), ["--restore-device"]);
    }
}
