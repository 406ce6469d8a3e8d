//! The `noiseda` command line: parses arguments and calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use noiseda::config::{JobSpec, Weights};
use noiseda::eval::{Degrade, EvalData, EvalOptions};
use noiseda::infer::Tiling;
use noiseda::metrics::Channel;
use noiseda::model::{ArchConfig, DiffusionConfig};
use noiseda::serve::auth::Remote;
use noiseda::serve::client::{self, Client};
use noiseda::serve::ServeOptions;
use noiseda::train::{self, TrainOptions};
use noiseda::{artifact, bench, demo, Result};

#[derive(Parser)]
#[command(
    name = "noiseda",
    version,
    about = "Denoising as Adaptation: train, evaluate and run image restorers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a Unet-T on the built-in CC0 photos and evaluate it (no downloads, CPU).
    Demo {
        /// Output directory (re-running continues from its checkpoints).
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// Override the number of training steps.
        #[arg(long)]
        steps: Option<u64>,
    },
    /// Train a restorer from a job spec (TOML or JSON).
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Output directory (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the newest checkpoint in the output directory.
        #[arg(long)]
        resume: bool,
        /// Override the spec's number of steps.
        #[arg(long)]
        steps: Option<u64>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// PSNR/SSIM of a model over paired folders or over degraded clean photos.
    Eval {
        /// Model artifact directory (as written by train or export).
        #[arg(long)]
        model: PathBuf,
        /// Degraded images (paired with --gt by file name).
        #[arg(long, requires = "gt", conflicts_with_all = ["clean", "degrade", "pairs"])]
        noisy: Option<PathBuf>,
        #[arg(long, requires = "noisy")]
        gt: Option<PathBuf>,
        /// A paired dataset root: Rain13K/SPA `input`+`target`, GoPro `blur`+`sharp`, RealBlur
        /// `blur`+`gt` (flat or one folder per scene).
        #[arg(long, conflicts_with_all = ["clean", "degrade"])]
        pairs: Option<PathBuf>,
        /// Clean photos, degraded on the fly with --degrade.
        #[arg(long, requires = "degrade")]
        clean: Option<PathBuf>,
        /// Degradation for --clean: awgn:SIGMA (0–255 units, e.g. awgn:25), camera, rain or blur.
        #[arg(long, requires = "clean")]
        degrade: Option<Degrade>,
        /// Score the BT.601 luma channel instead of RGB.
        #[arg(long)]
        y_channel: bool,
        /// Tiled inference with this tile size.
        #[arg(long)]
        tile: Option<usize>,
        /// Seed of the synthetic degradation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use at most this many images (0 = all).
        #[arg(long, default_value_t = 0)]
        max_images: usize,
        #[arg(long)]
        json: bool,
    },
    /// Restore an image file, or every image of a folder into an output folder.
    Restore {
        /// Model artifact directory (local inference).
        #[arg(long, required_unless_present = "server", conflicts_with = "server")]
        model: Option<PathBuf>,
        /// Restore through a server's Restore service instead (host:port).
        #[arg(long)]
        server: Option<String>,
        /// With --server: the model name (default: the server's default model).
        #[arg(long, requires = "server", default_value = "")]
        model_name: String,
        /// With --server: requests in flight at once.
        #[arg(long, requires = "server", default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        auth: ClientAuth,
        input: PathBuf,
        output: PathBuf,
        /// Tiled inference with this tile size (bounded memory on large images).
        #[arg(long)]
        tile: Option<usize>,
        /// Overlap between tiles in pixels (default tile/4).
        #[arg(long, requires = "tile")]
        overlap: Option<usize>,
    },
    /// Degrade a clean image with a built-in recipe (preview a training degradation, or make
    /// synthetic test pairs). The output is 8-bit, so AWGN is clipped there.
    Degrade {
        /// A clean image, or a folder of them.
        input: PathBuf,
        /// The degraded image (one input, one copy), else a folder.
        output: PathBuf,
        /// awgn:SIGMA (0–255 units), camera, isp, rain or blur (default recipes).
        #[arg(long, conflicts_with_all = ["spec", "recipe"])]
        kind: Option<Degrade>,
        /// Use the `data.synthetic.degradation` of this job spec (TOML or JSON).
        #[arg(long, conflicts_with = "recipe")]
        spec: Option<PathBuf>,
        /// A recipe as an inline TOML table, e.g. '{ kind = "isp", shot = [1e-4, 2e-3] }'.
        #[arg(long)]
        recipe: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Degraded versions per input image (each draws its own parameters).
        #[arg(long, default_value_t = 1)]
        copies: usize,
        /// Print what was written (and each image's drawn parameters) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw the training curves (loss, diffusion MSEs, validation PSNR) of one or more run
    /// directories into one PNG.
    Plot {
        /// Run directories (each with a metrics.jsonl), labelled by their folder names.
        #[arg(required_unless_present = "job", conflicts_with = "job")]
        runs: Vec<PathBuf>,
        /// Draw a server job's curves instead (fetched over gRPC from --server).
        #[arg(long)]
        job: Option<String>,
        #[arg(long, env = "NOISEDA_SERVER", default_value = DEFAULT_SERVER)]
        server: String,
        #[command(flatten)]
        auth: ClientAuth,
        #[arg(long, default_value = "curves.png")]
        out: PathBuf,
    },
    /// Run an experiment: every arm × seed of an experiment file (resumable), evaluated on the
    /// real validation pairs; writes results.md, results.json, curves.png.
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Experiment {
        #[command(subcommand)]
        probe: Option<ExperimentCommand>,
        /// Experiment file (TOML).
        #[arg(long, required = true)]
        config: Option<PathBuf>,
        /// Output directory (default: runs/experiments/<file stem>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run the gRPC server: the Training service (job manager), health, reflection, and
    /// Prometheus metrics on their own port.
    Serve(Box<ServeArgs>),
    /// Talk to a running server: submit and follow training jobs, export their models.
    Jobs {
        /// Server address (host:port or http://host:port).
        #[arg(long, global = true, env = "NOISEDA_SERVER", default_value = DEFAULT_SERVER)]
        server: String,
        #[command(flatten)]
        auth: ClientAuth,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Time the speed cases (train steps, restore forwards), each in its own process; with
    /// --compare the same cases in PyTorch (bench/reference.py) in the same run.
    Bench {
        #[command(subcommand)]
        load: Option<BenchCommand>,
        /// Cases to run (default: the first four): train-vanilla, train-joint, restore-512,
        /// restore-8x256; the GPU-sized train-joint-paper (Unet-S + Diffusion-B, batch 8,
        /// 128×128) and restore-8x512 run when named.
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
        /// Device of the cases (and of PyTorch's): cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Threads for candle and PyTorch (default: the number of CPUs).
        #[arg(long)]
        threads: Option<usize>,
        /// Also run bench/reference.py (installs PyTorch with pip when it is missing).
        #[arg(long)]
        compare: bool,
        /// Python interpreter of the reference.
        #[arg(long, env = "NOISEDA_PYTHON", default_value = "python3")]
        python: PathBuf,
        #[arg(long, default_value = "bench/reference.py")]
        reference: PathBuf,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Internal: run one case in this process and print its timing as JSON.
        #[arg(long, hide = true)]
        child: Option<String>,
    },
    /// Export the restorer of a checkpoint directory as a model artifact.
    Export {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "raw")]
        weights: WeightsArg,
    },
    /// Ask a server's grpc.health.v1 service: exits 0 when SERVING (for container health
    /// checks), non-zero when not serving, unknown or unreachable.
    Health {
        /// Server address (host:port, http:// or https://).
        #[arg(long, env = "NOISEDA_SERVER", default_value = DEFAULT_SERVER)]
        server: String,
        /// Service to check: "" (the process is live), noiseda.v1.Training or
        /// noiseda.v1.Restore (ready).
        #[arg(long, default_value = "")]
        service: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        #[command(flatten)]
        auth: ClientAuth,
    },
    /// Make an API key for `noiseda serve --api-keys`: prints the key on stdout and appends its
    /// entry (name, scopes, SHA-256 of the key; never the key) to --key-file, or prints the
    /// entry on stderr.
    Keygen {
        /// Logged in place of the key when it is used or refused.
        #[arg(long)]
        name: String,
        /// Comma-separated: training, restore, models.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Restorer presets with parameter counts and GMACs at 128×128 (paper table A1.3).
    /// Also the diffusion presets with their parameter counts.
    Arch {
        #[arg(long)]
        json: bool,
    },
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How a client command authenticates to a server (API key, TLS).
#[derive(clap::Args, Debug, Clone, Default)]
struct ClientAuth {
    /// API key sent as `authorization: Bearer <key>`.
    #[arg(long, global = true, env = "NOISEDA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// CA certificate (PEM) that signed an https:// server's certificate (default: the
    /// system's roots).
    #[arg(long, global = true, env = "NOISEDA_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require mutual TLS.
    #[arg(long, global = true, env = "NOISEDA_TLS_CLIENT_CERT")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "NOISEDA_TLS_CLIENT_KEY")]
    tls_key: Option<PathBuf>,
}

impl ClientAuth {
    fn remote(&self, server: &str) -> Remote {
        Remote {
            server: server.to_string(),
            api_key: self.api_key.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// gRPC address.
    #[arg(long, env = "NOISEDA_LISTEN", default_value = "0.0.0.0:50051")]
    listen: std::net::SocketAddr,
    /// Prometheus `GET /metrics` address.
    #[arg(long, env = "NOISEDA_METRICS_LISTEN", default_value = "0.0.0.0:9100")]
    metrics_listen: std::net::SocketAddr,
    /// Job records (SQLite), job folders (checkpoints, metric logs). Use a persistent volume.
    #[arg(long, env = "NOISEDA_DATA_DIR", default_value = "noiseda-data")]
    data_dir: PathBuf,
    /// Where ExportModel writes artifacts (default: <data-dir>/models).
    #[arg(long, env = "NOISEDA_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Devices jobs may run on; one job per GPU at a time.
    #[arg(
        long,
        env = "NOISEDA_DEVICES",
        value_delimiter = ',',
        default_value = "cpu"
    )]
    devices: Vec<String>,
    /// Jobs that may run on the CPU at once.
    #[arg(long, env = "NOISEDA_CPU_JOBS", default_value_t = 1)]
    cpu_jobs: usize,
    /// Directories job specs may read data from (comma-separated); paths elsewhere, with
    /// `..`, or symlinked out of them are refused. Default: anywhere.
    #[arg(long, env = "NOISEDA_DATA_ROOTS", value_delimiter = ',')]
    data_roots: Vec<PathBuf>,
    /// Largest gRPC message in either direction, in bytes.
    #[arg(long, env = "NOISEDA_PAYLOAD_LIMIT", default_value_t = 64 << 20)]
    payload_limit: usize,
    /// Seconds running jobs get to checkpoint after SIGTERM.
    #[arg(long, env = "NOISEDA_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
    /// Milliseconds after SIGTERM during which open connections stay up and new calls are
    /// answered UNAVAILABLE (readiness is already off) before the server stops accepting.
    #[arg(long, env = "NOISEDA_DRAIN_DELAY_MS", default_value_t = 1000)]
    drain_delay_ms: u64,
    /// Services to run: all, training or restore.
    #[arg(long, env = "NOISEDA_ROLE", value_enum, default_value = "all")]
    role: noiseda::serve::Role,
    /// Job store: `sqlite` (<data-dir>/noiseda.db, one server), `sqlite:PATH`, or
    /// `postgres://user:pass@host:5432/db` shared by several training replicas (which then
    /// share --data-dir too).
    #[arg(long, env = "NOISEDA_STORE", default_value = "sqlite")]
    store: String,
    /// This server's name in job leases; unique per replica (default: <hostname>-<pid>). A
    /// replica restarted under the same name takes its jobs back without waiting.
    #[arg(long, env = "NOISEDA_REPLICA_ID")]
    replica_id: Option<String>,
    /// Milliseconds a job's lease lasts without renewal: how soon another replica takes over
    /// the jobs of one that died.
    #[arg(long, env = "NOISEDA_LEASE_MS", default_value_t = 15_000)]
    lease_ms: u64,
    /// Milliseconds between looks for new artifacts in --model-dir (Restore; 0 = never).
    #[arg(long, env = "NOISEDA_MODEL_POLL_MS", default_value_t = 5_000)]
    model_poll_ms: u64,
    /// Device of the Restore service's models.
    #[arg(long, env = "NOISEDA_RESTORE_DEVICE", default_value = "cpu")]
    restore_device: String,
    /// Model to make the default at start (default: the first in --model-dir by name).
    #[arg(long, env = "NOISEDA_DEFAULT_MODEL")]
    default_model: Option<String>,
    /// Images per forward pass.
    #[arg(long, env = "NOISEDA_MAX_BATCH_SIZE", default_value_t = 8)]
    max_batch_size: usize,
    /// Padded pixels per forward pass.
    #[arg(long, env = "NOISEDA_MAX_BATCH_PIXELS", default_value_t = 4 << 20)]
    max_batch_pixels: usize,
    /// Microseconds the oldest queued image may wait for others to fill its batch.
    #[arg(long, env = "NOISEDA_MAX_BATCH_WAIT_US", default_value_t = 0)]
    max_batch_wait_us: u64,
    /// Images queued for inference across all models; beyond it Restore answers
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "NOISEDA_MAX_QUEUE", default_value_t = 64)]
    max_queue: usize,
    /// Larger images are tiled (with --tile-size) or rejected.
    #[arg(long, env = "NOISEDA_MAX_IMAGE_PIXELS", default_value_t = 4 << 20)]
    max_image_pixels: usize,
    /// Larger images are rejected before decoding, tiled or not.
    #[arg(long, env = "NOISEDA_MAX_INPUT_PIXELS", default_value_t = 64 << 20)]
    max_input_pixels: usize,
    #[arg(long, env = "NOISEDA_MAX_IMAGES_PER_REQUEST", default_value_t = 32)]
    max_images_per_request: usize,
    /// Tile side for images over --max-image-pixels (0 = reject them).
    #[arg(long, env = "NOISEDA_TILE_SIZE", default_value_t = 512)]
    tile_size: usize,
    /// Tile overlap (0 = tile/4, at least 16).
    #[arg(long, env = "NOISEDA_TILE_OVERLAP", default_value_t = 0)]
    tile_overlap: usize,
    /// API key file (TOML `[[key]]` entries, see `noiseda keygen`); without it every call is
    /// accepted.
    #[arg(long, env = "NOISEDA_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "NOISEDA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, env = "NOISEDA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "NOISEDA_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// The paper's Fig. 1(a): ε-MSE of a conditional diffusion net trained on clean
    /// conditions as the condition is corrupted by AWGN σ = 0, 10, …, 80.
    ProbeConditions {
        /// Clean photos.
        #[arg(long)]
        clean: PathBuf,
        #[arg(long, default_value_t = 300)]
        steps: u64,
        #[arg(long, default_value_t = 64)]
        patch: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value = "diffusion-t")]
        preset: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Curve picture.
        #[arg(long, default_value = "probe-conditions.png")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Concurrent clients against a local Restore server for a bounded time, batched and
    /// unbatched, next to the raw model time of the same network in the same run.
    RestoreLoad {
        /// Restorer preset (random weights).
        #[arg(long, default_value = "unet-t")]
        preset: String,
        /// Square image side.
        #[arg(long, default_value_t = 256)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Measured seconds per mode.
        #[arg(long, default_value_t = 15.0)]
        seconds: f64,
        /// Batch size of the batched mode.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// PNG in and out (default: raw RGB u8).
        #[arg(long)]
        png: bool,
        #[arg(long)]
        json: bool,
    },
    /// One joint Denoising-as-Adaptation step (forward and backward of both nets, same
    /// weights, batch and draws) on the CPU and on --device: the worst relative difference of
    /// the restorer's output, each loss term and each gradient. Exits non-zero above --tolerance.
    Parity {
        /// The device to check against the CPU.
        #[arg(long, default_value = "cuda:0")]
        device: String,
        #[arg(long, default_value = "unet-s")]
        restorer: String,
        #[arg(long, default_value = "diffusion-b")]
        diffusion: String,
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Square patch side.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Largest relative difference accepted.
        #[arg(long, default_value_t = 1e-3)]
        tolerance: f64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Submit a job spec (TOML or JSON); prints the job id.
    Submit {
        spec: PathBuf,
        /// Follow the job: progress bar and latest losses until it ends.
        #[arg(long)]
        follow: bool,
        /// Idempotency key: submitting it again returns the same job.
        #[arg(long, default_value = "")]
        request_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Jobs, newest first.
    List {
        /// all, queued, running, cancelling, completed, failed or cancelled.
        #[arg(long, default_value = "all")]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// One job: state, progress, timestamps, latest metrics (--json adds both specs).
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Follow a job until it ends.
    Follow { id: String },
    /// Cancel a job (running jobs stop at the next step, after a checkpoint).
    Cancel { id: String },
    /// A job's metric points.
    Metrics {
        id: String,
        #[arg(long)]
        csv: bool,
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
    },
    /// A job's checkpoints.
    Checkpoints { id: String },
    /// Export a checkpoint's restorer into the server's model directory and copy it to --out.
    Export {
        id: String,
        #[arg(long)]
        out: PathBuf,
        /// latest, best, a checkpoint id (step-00000100) or a step.
        #[arg(long, default_value = "latest")]
        checkpoint: String,
        /// Default: the job spec's export.weights.
        #[arg(long, value_enum)]
        weights: Option<WeightsArg>,
        /// Model name in the server's model directory.
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WeightsArg {
    Raw,
    Ema,
}

fn tiling(tile: Option<usize>, overlap: Option<usize>) -> Result<Option<Tiling>> {
    tile.map(|t| {
        let mut tiling = Tiling::new(t);
        if let Some(o) = overlap {
            tiling.overlap = o;
        }
        tiling.validate().map(|_| tiling)
    })
    .transpose()
}

fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| noiseda::Error::io("tokio runtime", e))
}

/// `<hostname>-<pid>`: unique among the processes sharing a store.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "noiseda".into());
    format!("{host}-{}", std::process::id())
}

fn serve(args: ServeArgs) -> Result<()> {
    let opts = ServeOptions {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        model_dir: args
            .model_dir
            .unwrap_or_else(|| args.data_dir.join("models")),
        data_dir: args.data_dir,
        store: args.store,
        replica_id: args.replica_id.unwrap_or_else(default_replica_id),
        lease: std::time::Duration::from_millis(args.lease_ms),
        model_poll: std::time::Duration::from_millis(args.model_poll_ms),
        devices: args.devices,
        cpu_jobs: args.cpu_jobs,
        data_roots: args.data_roots,
        payload_limit: args.payload_limit,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
        drain_delay: std::time::Duration::from_millis(args.drain_delay_ms),
        role: args.role,
        restore: noiseda::serve::RestoreOptions {
            device: args.restore_device,
            batch: noiseda::serve::batcher::BatchOptions {
                max_batch_size: args.max_batch_size,
                max_batch_pixels: args.max_batch_pixels,
                max_batch_wait: std::time::Duration::from_micros(args.max_batch_wait_us),
                max_queue: args.max_queue,
            },
            limits: noiseda::serve::restore::Limits {
                max_image_pixels: args.max_image_pixels,
                max_input_pixels: args.max_input_pixels,
                max_images_per_request: args.max_images_per_request,
                tile_size: args.tile_size,
                tile_overlap: args.tile_overlap,
            },
            default_model: args.default_model,
        },
        api_keys: args.api_keys,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(noiseda::serve::auth::TlsFiles {
                cert,
                key,
                client_ca: args.tls_client_ca,
            }),
            _ => None,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| noiseda::Error::io("tokio runtime", e))?;
    rt.block_on(noiseda::serve::serve(
        opts,
        noiseda::serve::termination(),
        |addr, metrics| {
            // Scripts and tests read the bound addresses from this line.
            println!("noiseda serve: listening on {addr}, metrics on http://{metrics}/metrics");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        },
    ))
}

fn jobs(remote: &Remote, command: JobsCommand, progress: bool) -> Result<()> {
    client_runtime()?.block_on(async {
        let mut c = Client::connect(remote).await?;
        match command {
            JobsCommand::Submit {
                spec,
                follow,
                request_id,
                json,
            } => {
                let job = c.submit(&spec, &request_id).await?;
                if json && !follow {
                    print_json(&client::job_json(&job));
                } else {
                    println!("{}", job.id);
                }
                if follow {
                    finish(client::follow(remote, &job.id, progress).await?, json)?;
                }
            }
            JobsCommand::Follow { id } => {
                finish(client::follow(remote, &id, progress).await?, false)?;
            }
            JobsCommand::List { state, json } => {
                let jobs = c.list(client::parse_state(&state)?).await?;
                if json {
                    print_json(&jobs.iter().map(client::job_json).collect::<Vec<_>>());
                } else {
                    print!("{}", client::job_table(&jobs));
                }
            }
            JobsCommand::Get { id, json } => {
                let job = c.get(&id).await?;
                if json {
                    print_json(&client::job_json(&job));
                } else {
                    print!("{}", client::job_text(&job));
                }
            }
            JobsCommand::Cancel { id } => {
                let job = c.cancel(&id).await?;
                println!("{} {}", job.id, client::state_name(job.state));
            }
            JobsCommand::Metrics { id, csv, from_seq } => {
                let points = c.history(&id, from_seq).await?;
                if csv {
                    print!("{}", client::metrics_csv(&points));
                } else {
                    print!("{}", client::metrics_text(&points));
                }
            }
            JobsCommand::Checkpoints { id } => {
                println!(
                    "{:<15} {:>8} {:>10} {:>5}  metrics",
                    "ID", "STEP", "MB", "BEST"
                );
                for ck in c.checkpoints(&id).await? {
                    let metrics: std::collections::BTreeMap<_, _> = ck.metrics.iter().collect();
                    println!(
                        "{:<15} {:>8} {:>10.2} {:>5}  {:?}",
                        ck.id,
                        ck.step,
                        ck.size_bytes as f64 / 1e6,
                        if ck.is_best { "yes" } else { "" },
                        metrics
                    );
                }
            }
            JobsCommand::Export {
                id,
                out,
                checkpoint,
                weights,
                name,
            } => {
                let w = match weights {
                    None => noiseda::pb::Weights::Unspecified,
                    Some(WeightsArg::Ema) => noiseda::pb::Weights::Ema,
                    Some(WeightsArg::Raw) => noiseda::pb::Weights::Raw,
                };
                let r = c.export(&id, &checkpoint, w, &name, &out).await?;
                let m = r.model.unwrap_or_default();
                println!(
                    "exported {} ({} weights, {}) to {} (server copy: {})",
                    r.checkpoint_id,
                    m.weights,
                    &m.sha256[..12.min(m.sha256.len())],
                    out.display(),
                    r.path
                );
            }
        }
        Ok(())
    })
}

/// Prints how a followed job ended; a job that did not complete is an error.
fn finish(job: noiseda::pb::Job, json: bool) -> Result<()> {
    if json {
        print_json(&client::job_json(&job));
    } else {
        eprint!("{}", client::job_text(&job));
    }
    match noiseda::pb::JobState::try_from(job.state) {
        Ok(noiseda::pb::JobState::Completed) => Ok(()),
        _ => Err(noiseda::Error::FailedPrecondition(format!(
            "job {} ended {}{}",
            job.id,
            client::state_name(job.state),
            if job.last_error.is_empty() {
                String::new()
            } else {
                format!(": {}", job.last_error)
            }
        ))),
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("report serialises")
    );
}

fn run(cli: Cli) -> Result<()> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cli.command {
        Command::Demo { out, steps } => {
            let rows = demo::run(&out, steps, progress)?;
            println!(
                "\nTwo held-out photos with simulated camera noise (a pipeline neither restorer \
                 trained on), restored by each (PSNR dB / SSIM; higher is better):"
            );
            println!(
                "{:<16} {:>9} {:>8} {:>8}  artifact",
                "", "PSNR", "SSIM", "s/step"
            );
            for r in &rows {
                let sps = r
                    .seconds_per_step
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_else(|| "-".into());
                let art = r
                    .artifact
                    .as_ref()
                    .map(|a| a.display().to_string())
                    .unwrap_or_default();
                println!(
                    "{:<16} {:>9.3} {:>8.4} {:>8}  {}",
                    r.name, r.psnr, r.ssim, sps, art
                );
            }
            if let [input, vanilla, noise_da] = &rows[..] {
                let best = if noise_da.psnr > vanilla.psnr {
                    noise_da
                } else {
                    vanilla
                };
                println!(
                    "best: {} at {:+.2} dB over the noisy input; noise-da {:+.2} dB vs vanilla \
                     with the same budget",
                    best.name,
                    best.psnr - input.psnr,
                    noise_da.psnr - vanilla.psnr
                );
            }
            println!("curves: {}", out.join("curves.png").display());
            println!(
                "crops:  {} (noisy | vanilla | noise-da | ground truth)",
                out.join("crops.png").display()
            );
        }
        Command::Train {
            config,
            out,
            resume,
            steps,
            json,
        } => {
            let mut spec = JobSpec::from_file(&config)?;
            if let Some(s) = steps {
                spec.steps = s;
                spec.validate()?;
            }
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
            let summary = train::run(
                &spec,
                &TrainOptions {
                    out,
                    resume,
                    progress,
                    control: None,
                    job_id: None,
                },
            )?;
            if json {
                print_json(&summary);
            } else {
                println!(
                    "trained {} steps (from {}), final loss {:.5}, {:.3} s/step, model {}",
                    summary.steps,
                    summary.start_step,
                    summary.final_loss,
                    summary.seconds_per_step,
                    summary.model_dir()?.display()
                );
                for (k, v) in &summary.metrics {
                    println!("  {k} = {v:.4}");
                }
            }
        }
        Command::Eval {
            model,
            noisy,
            gt,
            pairs,
            clean,
            degrade,
            y_channel,
            tile,
            seed,
            max_images,
            json,
        } => {
            let data = match (noisy, gt, pairs, clean, degrade) {
                (Some(lq), Some(gt), None, None, None) => EvalData::Paired { lq, gt },
                (None, None, Some(root), None, None) => EvalData::Root { root },
                (None, None, None, Some(clean), Some(degrade)) => {
                    EvalData::Synthetic { clean, degrade }
                }
                _ => {
                    return Err(noiseda::Error::InvalidArgument(
                        "give --noisy DIR --gt DIR, --pairs ROOT, or --clean DIR --degrade awgn:SIGMA|camera|rain|blur".into(),
                    ))
                }
            };
            let model = artifact::load(&model, &candle::Device::Cpu)?;
            let opts = EvalOptions {
                channel: if y_channel { Channel::Y } else { Channel::Rgb },
                tiling: tiling(tile, None)?,
                seed,
                max_images,
                progress,
            };
            let report = noiseda::eval::run(&model, &data, &opts)?;
            if json {
                print_json(&report);
            } else {
                for s in &report.per_image {
                    let [r, g, b] = s.bias;
                    println!(
                        "{:<48} {:7.3} dB {:.4}   (input {:7.3} dB {:.4})   mean error RGB {r:+.2} {g:+.2} {b:+.2} (input {:+.2} {:+.2} {:+.2})",
                        s.name, s.psnr, s.ssim, s.input_psnr, s.input_ssim,
                        s.input_bias[0], s.input_bias[1], s.input_bias[2]
                    );
                }
                println!(
                    "mean over {} images: PSNR {:.3} dB, SSIM {:.4} (input {:.3} dB, {:.4})",
                    report.images, report.psnr, report.ssim, report.input_psnr, report.input_ssim
                );
                println!(
                    "colour cast: de-biased PSNR {:.3} dB (input {:.3}); mean |error| per channel {:.2} (input {:.2}), added by the restorer {:.2} (0-255 units)",
                    report.psnr_debiased,
                    report.input_psnr_debiased,
                    report.abs_bias,
                    report.input_abs_bias,
                    report.added_abs_bias
                );
            }
        }
        Command::Restore {
            server: Some(server),
            model_name,
            concurrency,
            auth,
            input,
            output,
            tile,
            ..
        } => {
            let written = client_runtime()?.block_on(client::restore_remote(
                &auth.remote(&server),
                &model_name,
                &input,
                &output,
                concurrency,
                tile,
                progress,
            ))?;
            eprintln!(
                "restored {} image(s) into {} via {server}",
                written.len(),
                output.display()
            );
        }
        Command::Restore {
            model: Some(model),
            input,
            output,
            tile,
            overlap,
            ..
        } => {
            let model = artifact::load(&model, &candle::Device::Cpu)?;
            let written = noiseda::infer::restore_path(
                &model,
                &input,
                &output,
                tiling(tile, overlap)?,
                progress,
            )?;
            eprintln!(
                "restored {} image(s) into {}",
                written.len(),
                output.display()
            );
        }
        Command::Restore { .. } => {
            unreachable!("clap requires --model or --server")
        }
        Command::Degrade {
            input,
            output,
            kind,
            spec,
            recipe,
            seed,
            copies,
            json,
        } => {
            let recipe = match (kind, spec, recipe) {
                (Some(k), None, None) => k.recipe(),
                (None, Some(path), None) => JobSpec::from_file(&path)?
                    .data
                    .synthetic
                    .degradation
                    .ok_or_else(|| {
                    noiseda::Error::config(
                        "data.synthetic.degradation",
                        format!("{} has no degradation recipe", path.display()),
                    )
                })?,
                (None, None, Some(text)) => noiseda::config::Degradation::from_inline_toml(&text)?,
                _ => {
                    return Err(noiseda::Error::InvalidArgument(
                        "give one of --kind, --spec or --recipe".into(),
                    ))
                }
            };
            let written =
                noiseda::data::preview::degrade_files(&input, &output, &recipe, seed, copies)?;
            if json {
                print_json(&written);
            } else {
                for w in &written {
                    let params = w
                        .params
                        .as_ref()
                        .map(|p| format!("  {p}"))
                        .unwrap_or_default();
                    println!("{}  {:.2} dB{params}", w.output.display(), w.psnr);
                }
            }
        }
        Command::Plot {
            job: Some(id),
            server,
            auth,
            out,
            ..
        } => client_runtime()?.block_on(async {
            let mut c = Client::connect(&auth.remote(&server)).await?;
            let job = c.get(&id).await?;
            let points = c.history(&id, 1).await?;
            let run = noiseda::plot::Run {
                label: job.name,
                points,
            };
            noiseda::plot::training_curves(&[run], None, &out)?;
            eprintln!("wrote {}", out.display());
            Ok::<_, noiseda::Error>(())
        })?,
        Command::Plot { runs, out, .. } => {
            let runs = runs
                .iter()
                .map(|dir| {
                    let label = dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| dir.display().to_string());
                    noiseda::plot::Run::load(label, dir)
                })
                .collect::<Result<Vec<_>>>()?;
            noiseda::plot::training_curves(&runs, None, &out)?;
            eprintln!("wrote {}", out.display());
        }
        Command::Experiment {
            probe:
                Some(ExperimentCommand::ProbeConditions {
                    clean,
                    steps,
                    patch,
                    batch,
                    preset,
                    seed,
                    out,
                    json,
                }),
            ..
        } => {
            let points = noiseda::experiment::probe_conditions(
                &noiseda::experiment::ProbeOptions {
                    clean,
                    steps,
                    patch,
                    batch,
                    seed,
                    preset,
                    sigmas: (0..=8).map(|k| k as f32 * 10.0).collect(),
                },
                progress,
            )?;
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.sigma as f64, p.mse)).collect();
            noiseda::plot::xy_curve(
                "diffusion ε-MSE vs condition noise",
                "condition AWGN σ (0–255)",
                "ε-MSE",
                &xy,
                &out,
            )?;
            if json {
                print_json(&points);
            } else {
                println!("{:>6} {:>10}", "sigma", "eps-MSE");
                for p in &points {
                    println!("{:>6} {:>10.5}", p.sigma, p.mse);
                }
                eprintln!("wrote {}", out.display());
            }
        }
        Command::Experiment {
            config: Some(config),
            out,
            json,
            ..
        } => {
            let out = out.unwrap_or_else(|| {
                PathBuf::from("runs/experiments").join(
                    config
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "experiment".into()),
                )
            });
            let report = noiseda::experiment::run(&config, &out, progress)?;
            if json {
                print_json(&report);
            } else {
                print!("{}", noiseda::experiment::markdown(&report));
                eprintln!(
                    "wrote {} (results.md, results.json, curves.png) in {:.1} min",
                    out.display(),
                    report.minutes
                );
            }
        }
        Command::Experiment { .. } => {
            unreachable!("clap requires --config or a subcommand")
        }
        Command::Serve(args) => serve(*args)?,
        Command::Jobs {
            server,
            auth,
            command,
        } => jobs(&auth.remote(&server), command, progress)?,
        Command::Bench {
            load:
                Some(BenchCommand::RestoreLoad {
                    preset,
                    size,
                    clients,
                    seconds,
                    batch,
                    png,
                    json,
                }),
            ..
        } => {
            let report = noiseda::loadtest::run(&noiseda::loadtest::LoadOptions {
                preset,
                size,
                clients,
                seconds,
                batch,
                png,
            })?;
            if json {
                print_json(&report);
            } else {
                print!("{}", noiseda::loadtest::table(&report));
            }
        }
        Command::Bench {
            load:
                Some(BenchCommand::Parity {
                    device,
                    restorer,
                    diffusion,
                    batch,
                    size,
                    tolerance,
                    json,
                }),
            ..
        } => {
            let rows = bench::parity(&device, &restorer, &diffusion, batch, size)?;
            let worst = rows.iter().map(|r| r.rel).fold(0.0, f64::max);
            if json {
                print_json(&serde_json::json!({
                    "device": device, "restorer": restorer, "diffusion": diffusion,
                    "batch": batch, "size": size, "tolerance": tolerance,
                    "worst_rel": worst, "rows": rows,
                }));
            } else {
                println!(
                    "{device} vs cpu: {restorer} + {diffusion}, batch {batch} of {size}×{size}"
                );
                for r in &rows {
                    println!(
                        "{:<28} {:>4} tensors  max|Δ| {:.3e}  max|x| {:.3e}  rel {:.3e}",
                        r.what, r.tensors, r.max_abs_diff, r.max_abs, r.rel
                    );
                }
            }
            if worst > tolerance {
                return Err(noiseda::Error::FailedPrecondition(format!(
                    "parity: {device} differs from the CPU by {worst:.3e} relative (tolerance {tolerance:.0e})"
                )));
            }
        }
        Command::Bench {
            cases,
            device,
            warmup,
            runs,
            threads,
            compare,
            python,
            reference,
            json,
            child,
            ..
        } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let opts = bench::BenchOptions {
                warmup,
                runs: runs.max(1),
                threads,
                device,
            };
            if let Some(case) = child {
                let t = bench::run_case(bench::Case::parse(&case)?, &opts)?;
                println!("{}", serde_json::to_string(&t).expect("timings serialise"));
                return Ok(());
            }
            let cases = if cases.is_empty() {
                bench::Case::ALL.to_vec()
            } else {
                cases
                    .iter()
                    .map(|c| bench::Case::parse(c))
                    .collect::<Result<Vec<_>>>()?
            };
            let reference = compare.then_some(bench::Reference {
                python,
                script: reference,
            });
            if let Some(r) = &reference {
                let v = r.ensure_torch(true)?;
                eprintln!("PyTorch {v}");
            }
            let report = bench::run(&cases, &opts, reference.as_ref())?;
            if json {
                print_json(&report);
            } else {
                print!("{}", bench::table(&report));
            }
        }
        Command::Export {
            checkpoint,
            out,
            weights,
        } => {
            let w = match weights {
                WeightsArg::Raw => Weights::Raw,
                WeightsArg::Ema => Weights::Ema,
            };
            let m = train::export_checkpoint(&checkpoint, &out, w, None)?;
            println!(
                "exported {} ({} parameters, sha256 {}) to {}",
                m.name,
                m.parameters,
                m.sha256,
                out.display()
            );
        }
        Command::Health {
            server,
            service,
            timeout,
            auth,
        } => {
            let remote = auth.remote(&server);
            let status = client_runtime()?.block_on(async {
                let check = async {
                    let channel = remote.channel().await?;
                    let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
                    c.check(tonic_health::pb::HealthCheckRequest {
                        service: service.clone(),
                    })
                    .await
                    .map(|r| r.into_inner().status)
                    .map_err(|e| {
                        noiseda::Error::Unavailable(if e.code() == tonic::Code::NotFound {
                            format!("service `{service}` is unknown to {}", remote.url())
                        } else {
                            format!("{}: {}", remote.url(), e.message())
                        })
                    })
                };
                tokio::time::timeout(std::time::Duration::from_secs(timeout), check)
                    .await
                    .map_err(|_| {
                        noiseda::Error::Unavailable(format!(
                            "{}: no answer within {timeout} s",
                            remote.url()
                        ))
                    })?
            })?;
            let name = tonic_health::pb::health_check_response::ServingStatus::try_from(status)
                .map_or("UNKNOWN", |s| s.as_str_name());
            let what = if service.is_empty() {
                "server"
            } else {
                &service
            };
            if name != "SERVING" {
                return Err(noiseda::Error::Unavailable(format!("{what}: {name}")));
            }
            println!("{what}: {name}");
        }
        Command::Keygen {
            name,
            scopes,
            key_file,
        } => {
            let scopes = scopes
                .iter()
                .map(|s| {
                    toml::Value::String(s.trim().to_string())
                        .try_into::<noiseda::serve::auth::Scope>()
                        .map_err(|_| {
                            noiseda::Error::config(
                                "--scopes",
                                format!("unknown scope `{s}`; known: training, restore, models"),
                            )
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            if name.is_empty() || name.contains('"') {
                return Err(noiseda::Error::config(
                    "--name",
                    "must be non-empty, without quotes",
                ));
            }
            let (key, entry) = noiseda::serve::auth::keygen(&name, &scopes);
            match key_file {
                Some(f) => {
                    use std::io::Write;
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&f)
                        .map_err(|e| noiseda::Error::io(&f, e))?;
                    writeln!(file, "\n{entry}").map_err(|e| noiseda::Error::io(&f, e))?;
                    // The new entry must leave the file valid.
                    noiseda::serve::auth::ApiKeys::load(&f)?;
                    eprintln!("appended key `{name}` to {}", f.display());
                }
                None => eprint!("{entry}"),
            }
            println!("{key}");
        }
        Command::Arch { json } => {
            let rows = ArchConfig::PRESETS
                .iter()
                .map(|p| {
                    let arch = ArchConfig::preset(p).expect("listed presets exist");
                    let params = noiseda::model::parameter_count(&arch)?;
                    let gmacs = arch.macs(128, 128) as f64 / 1e9;
                    Ok(serde_json::json!({ "preset": p, "arch": arch, "parameters": params, "gmacs_128": gmacs }))
                })
                .collect::<Result<Vec<_>>>()?;
            let diffusion = DiffusionConfig::PRESETS
                .iter()
                .map(|p| {
                    let cfg = DiffusionConfig::preset(p).expect("listed presets exist");
                    let params = noiseda::model::diffusion::parameter_count(&cfg)?;
                    Ok(serde_json::json!({ "preset": p, "config": cfg, "parameters": params }))
                })
                .collect::<Result<Vec<_>>>()?;
            if json {
                print_json(&serde_json::json!({ "restorers": rows, "diffusion": diffusion }));
            } else {
                println!(
                    "{:<12} {:>12} {:>14}",
                    "restorer", "parameters", "GMACs@128²"
                );
                for r in &rows {
                    println!(
                        "{:<12} {:>12} {:>14.2}",
                        r["preset"].as_str().unwrap_or_default(),
                        r["parameters"],
                        r["gmacs_128"].as_f64().unwrap_or_default()
                    );
                }
                println!(
                    "\n{:<12} {:>12}  channels (2 res blocks, middle attention, dropout 0.2)",
                    "diffusion", "parameters"
                );
                for d in &diffusion {
                    println!(
                        "{:<12} {:>12}  {}",
                        d["preset"].as_str().unwrap_or_default(),
                        d["parameters"],
                        d["config"]["channels"]
                    );
                }
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    noiseda::device::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,noiseda=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Fault injection for the crash tests (FAILPOINTS=name=action;...); inert when unset.
    let _faults = fail::FailScenario::setup();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
