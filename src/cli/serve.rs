//! The server-side commands: `serve` (runs [`noiseda::grpc::serve`] with its
//! [`ServerConfig`] as parsed), `health` (a grpc.health.v1 check for container probes) and
//! `keygen` (API keys for `serve --api-keys`).

use std::path::PathBuf;

use noiseda::grpc::auth::{self, Scope};
use noiseda::grpc::ServerConfig;
use noiseda::{Error, Result};
use tonic_health::pb::health_check_response::ServingStatus;

use super::{client_runtime, ClientAuth, DEFAULT_SERVER};

#[derive(clap::Args)]
pub struct HealthArgs {
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
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Logged in place of the key when it is used or refused.
    #[arg(long)]
    name: String,
    /// Comma-separated: training, restore, models.
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    #[arg(long)]
    key_file: Option<PathBuf>,
}

/// Serves until SIGTERM or Ctrl-C; the config is validated before anything starts.
pub fn serve(cfg: ServerConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    rt.block_on(noiseda::grpc::serve(
        cfg,
        noiseda::grpc::termination(),
        |b| {
            // Scripts and tests read the bound addresses from this line.
            let rest = b
                .http
                .map(|a| format!(", KServe v2 REST on http://{a}"))
                .unwrap_or_default();
            println!(
                "noiseda serve: listening on {}, metrics on http://{}/metrics{rest}",
                b.grpc, b.metrics
            );
            let _ = std::io::Write::flush(&mut std::io::stdout());
        },
    ))
}

/// Succeeds when the service answers SERVING (and prints so); anything else is an error.
pub fn health(a: HealthArgs) -> Result<()> {
    let (remote, service, timeout) = (a.auth.remote(&a.server), a.service, a.timeout);
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
                Error::unavailable(if e.code() == tonic::Code::NotFound {
                    format!("service `{service}` is unknown to {}", remote.url())
                } else {
                    format!("{}: {}", remote.url(), e.message())
                })
            })
        };
        tokio::time::timeout(std::time::Duration::from_secs(timeout), check)
            .await
            .map_err(|_| {
                Error::unavailable(format!("{}: no answer within {timeout} s", remote.url()))
            })?
    })?;
    let name = ServingStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str_name());
    let what = if service.is_empty() {
        "server"
    } else {
        &service
    };
    if name != "SERVING" {
        return Err(Error::unavailable(format!("{what}: {name}")));
    }
    println!("{what}: {name}");
    Ok(())
}

/// Prints a new key on stdout; its entry goes to --key-file (checked to stay valid) or stderr.
pub fn keygen(a: KeygenArgs) -> Result<()> {
    let scopes = a
        .scopes
        .iter()
        .map(|s| {
            toml::Value::String(s.trim().to_string())
                .try_into::<Scope>()
                .map_err(|_| {
                    Error::invalid(
                        "--scopes",
                        format!("unknown scope `{s}`; known: training, restore, models"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let name = a.name;
    if name.is_empty() || name.contains('"') {
        return Err(Error::invalid(
            "--name",
            "must be non-empty, without quotes",
        ));
    }
    let (key, entry) = auth::keygen(&name, &scopes);
    match a.key_file {
        Some(f) => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&f)
                .map_err(|e| Error::io(&f, e))?;
            writeln!(file, "\n{entry}").map_err(|e| Error::io(&f, e))?;
            // The new entry must leave the file valid.
            auth::ApiKeys::load(&f)?;
            eprintln!("appended key `{name}` to {}", f.display());
        }
        None => eprint!("{entry}"),
    }
    println!("{key}");
    Ok(())
}
