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
use crate::check::at_most_a_day;
pub use crate::jobs::config::{JobsConfig, StorageConfig};
pub use crate::restore::config::{BatchConfig, LimitsConfig};
use crate::{Error, Result};

/// Smallest `--payload-limit`, in bytes.
pub const MIN_PAYLOAD: usize = 1024;

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
    /// KServe v2 REST address (the Open Inference Protocol over HTTP/JSON, plain HTTP; off
    /// when not given; needs the Restore role).
    #[arg(long, env = "NOISEDA_HTTP_LISTEN", display_order = 2)]
    pub http_listen: Option<SocketAddr>,
    /// Largest gRPC message (and REST request body) in either direction, in bytes (at least 1024).
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
        Self::from_flags(&[]).expect("the flags' defaults parse")
    }
}

impl ServerConfig {
    /// `noiseda serve FLAGS…` as parsed, the other flags at their defaults (the `NOISEDA_*`
    /// environment is not read); not yet validated. For in-process servers.
    pub fn from_flags(flags: &[&str]) -> Result<Self> {
        let cmd = Defaults::command().mut_args(|a| a.env(None::<&str>));
        cmd.try_get_matches_from(std::iter::once("serve").chain(flags.iter().copied()))
            .and_then(|m| Defaults::from_arg_matches(&m))
            .map(|d| d.config)
            .map_err(|e| Error::invalid_input(e.to_string()))
    }

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
                bad.push(Error::invalid("--replica-id", "must not be empty"));
            }
            bad.extend(self.jobs.canonical_data_roots().err());
        }
        if self.network.http_listen.is_some() {
            if !self.network.role.restore() {
                bad.push(Error::invalid(
                    "--http-listen",
                    "the REST endpoint serves the Open Inference Protocol, which runs with \
                     --role restore or all",
                ));
            }
            if self.auth.tls_cert.is_some() {
                bad.push(Error::invalid(
                    "--http-listen",
                    "the REST endpoint is plain HTTP and would carry API keys in clear next to \
                     a TLS gRPC port: terminate TLS for it in a proxy, or leave it off",
                ));
            }
        }
        if self.network.role.restore() {
            if let Err(e) = crate::device::parse(&self.restore.restore_device) {
                bad.push(Error::invalid("--restore-device", e.to_string()));
            }
        }
        match bad.len() {
            0 => Ok(()),
            1 => Err(bad.remove(0)),
            n => Err(Error::invalid_input(format!(
                "{n} flags are wrong: {}",
                bad.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }
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
                Error::invalid(
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

impl RestoreConfig {
    pub fn model_poll(&self) -> Duration {
        Duration::from_millis(self.model_poll_ms)
    }

    /// The ranges of the poll interval, the batching and the request limits.
    fn problems(&self) -> Vec<Error> {
        let mut bad: Vec<Error> = at_most_a_day("--model-poll-ms", self.model_poll())
            .into_iter()
            .collect();
        bad.extend(self.batch.problems());
        bad.extend(self.limits.problems());
        bad
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
    use crate::jobs::config::MIN_LEASE;
    use crate::restore::config::MAX_QUEUE;

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
