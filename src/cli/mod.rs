//! The `noiseda` command line: the [`Cli`] and its [`Command`]s, and [`run`], which hands
//! each subcommand to its group's module (`train`, `jobs`, `serve`, `tools`); all printing
//! of tables and JSON is in `print`.
//!
//! These are modules of the binary, not of the library: nothing but `main` calls the CLI, and
//! keeping clap's command tree and the stdout formats out of `noiseda` leaves the library an
//! API of values and errors. What the CLI shares with the server, the `noiseda serve` flags,
//! is the library's [`noiseda::grpc::ServerConfig`], parsed here as it is.

mod jobs;
mod print;
mod serve;
mod tools;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use noiseda::grpc::auth::Remote;
use noiseda::grpc::ServerConfig;
use noiseda::Result;

#[derive(Parser)]
#[command(
    name = "noiseda",
    version,
    about = "Denoising as Adaptation: train, evaluate and run image restorers"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a Unet-T on the built-in CC0 photos and evaluate it (no downloads, CPU).
    Demo(tools::DemoArgs),
    /// Train a restorer from a job spec (TOML or JSON).
    Train(train::TrainArgs),
    /// PSNR/SSIM of a model over paired folders or over degraded clean photos.
    Eval(train::EvalArgs),
    /// Restore an image file, or every image of a folder into an output folder.
    Restore(train::RestoreArgs),
    /// Degrade a clean image with a built-in recipe (preview a training degradation, or make
    /// synthetic test pairs). The output is 8-bit, so AWGN is clipped there.
    Degrade(train::DegradeArgs),
    /// Draw the training curves (loss, diffusion MSEs, validation PSNR) of one or more run
    /// directories into one PNG.
    Plot(train::PlotArgs),
    /// Run an experiment: every arm × seed of an experiment file (resumable), evaluated on the
    /// real validation pairs; writes results.md, results.json, curves.png.
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Experiment(tools::ExperimentArgs),
    /// Run the gRPC server: the Training service (job manager), health, reflection, and
    /// Prometheus metrics on their own port.
    Serve(Box<ServerConfig>),
    /// Talk to a running server: submit and follow training jobs, export their models.
    Jobs(jobs::JobsArgs),
    /// Time the speed cases (train steps, restore forwards), each in its own process; with
    /// --compare the same cases in PyTorch (bench/reference.py) in the same run.
    Bench(tools::BenchArgs),
    /// Export the restorer of a checkpoint directory as a model artifact.
    Export(train::ExportArgs),
    /// Ask a server's grpc.health.v1 service: exits 0 when SERVING (for container health
    /// checks), non-zero when not serving, unknown or unreachable.
    Health(serve::HealthArgs),
    /// Make an API key for `noiseda serve --api-keys`: prints the key on stdout and appends its
    /// entry (name, scopes, SHA-256 of the key; never the key) to --key-file, or prints the
    /// entry on stderr.
    Keygen(serve::KeygenArgs),
    /// Restorer presets with parameter counts and GMACs at 128×128 (paper table A1.3).
    /// Also the diffusion presets with their parameter counts.
    Arch(train::ArchArgs),
}

/// Runs one command line; the error is what `main` prints before exiting non-zero.
pub fn run(cli: Cli) -> Result<()> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cli.command {
        Command::Demo(a) => tools::demo(a, progress),
        Command::Train(a) => train::train(a, progress),
        Command::Eval(a) => train::eval(a, progress),
        Command::Restore(a) => train::restore(a, progress),
        Command::Degrade(a) => train::degrade(a),
        Command::Plot(a) => train::plot(a),
        Command::Experiment(a) => tools::experiment(a, progress),
        Command::Serve(cfg) => serve::serve(*cfg),
        Command::Jobs(a) => jobs::jobs(a, progress),
        Command::Bench(a) => tools::bench(a),
        Command::Export(a) => train::export(a),
        Command::Health(a) => serve::health(a),
        Command::Keygen(a) => serve::keygen(a),
        Command::Arch(a) => train::arch(a),
    }
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

/// Which weights of a checkpoint an export takes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum WeightsArg {
    Raw,
    Ema,
}

/// A runtime for the client commands (one thread: they wait on the network).
fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| noiseda::Error::io("tokio runtime", e))
}
