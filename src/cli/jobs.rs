//! `noiseda jobs …`: the client subcommands of a running server's Training service (submit,
//! follow, list, get, cancel, metrics, checkpoints, export), their flags and what each calls.

use std::path::PathBuf;

use clap::Subcommand;
use noiseda::client::{self, Client};
use noiseda::{pb, Error, Result};

use super::{client_runtime, print, ClientAuth, WeightsArg, DEFAULT_SERVER};

#[derive(clap::Args)]
pub struct JobsArgs {
    /// Server address (host:port or http://host:port).
    #[arg(long, global = true, env = "NOISEDA_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    #[command(flatten)]
    auth: ClientAuth,
    #[command(subcommand)]
    command: JobsCommand,
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

pub fn jobs(a: JobsArgs, progress: bool) -> Result<()> {
    let remote = a.auth.remote(&a.server);
    client_runtime()?.block_on(async {
        let mut c = Client::connect(&remote).await?;
        match a.command {
            JobsCommand::Submit {
                spec,
                follow,
                request_id,
                json,
            } => {
                let job = c.submit(&spec, &request_id).await?;
                if json && !follow {
                    print::json(&print::job_json(&job));
                } else {
                    println!("{}", job.id);
                }
                if follow {
                    finish(client::follow(&remote, &job.id, progress).await?, json)?;
                }
            }
            JobsCommand::Follow { id } => {
                finish(client::follow(&remote, &id, progress).await?, false)?;
            }
            JobsCommand::List { state, json } => {
                let jobs = c.list(client::parse_state(&state)?).await?;
                if json {
                    print::json(&jobs.iter().map(print::job_json).collect::<Vec<_>>());
                } else {
                    print!("{}", print::job_table(&jobs));
                }
            }
            JobsCommand::Get { id, json } => {
                let job = c.get(&id).await?;
                if json {
                    print::json(&print::job_json(&job));
                } else {
                    print!("{}", print::job_text(&job));
                }
            }
            JobsCommand::Cancel { id } => {
                let job = c.cancel(&id).await?;
                println!("{} {}", job.id, client::state_name(job.state));
            }
            JobsCommand::Metrics { id, csv, from_seq } => {
                let points = c.history(&id, from_seq).await?;
                if csv {
                    print!("{}", print::metrics_csv(&points));
                } else {
                    print!("{}", print::metrics_text(&points));
                }
            }
            JobsCommand::Checkpoints { id } => {
                // The header goes out before the call, as it always has.
                print!("{}", print::checkpoint_header());
                print!("{}", print::checkpoint_rows(&c.checkpoints(&id).await?));
            }
            JobsCommand::Export {
                id,
                out,
                checkpoint,
                weights,
                name,
            } => export(&mut c, &id, &out, &checkpoint, weights, &name).await?,
        }
        Ok(())
    })
}

/// `jobs export`: the server exports the checkpoint, the artifact is copied to `out`.
async fn export(
    c: &mut Client,
    id: &str,
    out: &std::path::Path,
    checkpoint: &str,
    weights: Option<WeightsArg>,
    name: &str,
) -> Result<()> {
    let w = match weights {
        None => pb::Weights::Unspecified,
        Some(WeightsArg::Ema) => pb::Weights::Ema,
        Some(WeightsArg::Raw) => pb::Weights::Raw,
    };
    let r = c.export(id, checkpoint, w, name, out).await?;
    let m = r.model.unwrap_or_default();
    println!(
        "exported {} ({} weights, {}) to {} (server copy: {})",
        r.checkpoint_id,
        m.weights,
        &m.sha256[..12.min(m.sha256.len())],
        out.display(),
        r.path
    );
    Ok(())
}

/// Prints how a followed job ended; a job that did not complete is an error.
fn finish(job: pb::Job, json: bool) -> Result<()> {
    if json {
        print::json(&print::job_json(&job));
    } else {
        eprint!("{}", print::job_text(&job));
    }
    match pb::JobState::try_from(job.state) {
        Ok(pb::JobState::Completed) => Ok(()),
        _ => Err(Error::precondition(format!(
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
