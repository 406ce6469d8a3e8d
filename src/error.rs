//! The crate's one error type. Its mapping to a gRPC status is `grpc::status`, the only one.

use std::path::{Path, PathBuf};

/// Every failure noiseda reports. Messages name the offending key, file or limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job spec or flag value is wrong; `key` is the dotted spec path (e.g. `data.patch`).
    #[error("invalid config `{key}`: {msg}")]
    Config { key: String, msg: String },
    /// Several values of a job spec are wrong; each item is a [`Error::Config`] naming its key.
    #[error("invalid job spec, {} problems: {}", .0.len(), join(.0))]
    Spec(Vec<Error>),
    /// A request or command-line argument is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An image could not be decoded, encoded or used.
    #[error("image {path}: {msg}")]
    Image { path: PathBuf, msg: String },
    /// A dataset is unusable (empty folder, unmatched pair, too-small image, ...).
    #[error("dataset: {0}")]
    Data(String),
    /// A checkpoint is missing, corrupt or does not match the job.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A model artifact is missing, corrupt or does not match its manifest.
    #[error("model artifact: {0}")]
    Artifact(String),
    /// Something that was asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle::Error),
    /// The request is valid but the thing it acts on is in the wrong state (e.g. cancelling a
    /// finished job).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something with that name already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A bounded queue is full.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A request's deadline passed before it was served.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The server is not ready or is shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The job store (SQLite) failed.
    #[error("job store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The shared job store (PostgreSQL) failed or cannot be reached (the message carries the
    /// whole cause chain: "error connecting to server: Connection refused …").
    #[error("job store (PostgreSQL): {0}")]
    Postgres(String),
    /// A call came without a valid API key.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The API key is valid but lacks the scope the call needs.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The data loader thread went away.
    #[error("data loader stopped: {0}")]
    Loader(String),
    /// A fault of the server itself (a panic, a thread that ended without its result): the
    /// detail is logged and kept where the server records it (a job's `last_error`); gRPC
    /// clients get a generic message.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// `Ok` for no problems, the problem itself for one, [`Error::Spec`] for several.
    pub fn from_problems(mut problems: Vec<Error>) -> Result<()> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(Error::Spec(problems)),
        }
    }

    /// (field, description) of every bad spec value this error names.
    pub fn field_violations(&self) -> Vec<(String, String)> {
        match self {
            Error::Config { key, msg } => vec![(key.clone(), msg.clone())],
            Error::Spec(all) => all.iter().flat_map(Error::field_violations).collect(),
            _ => Vec::new(),
        }
    }

    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            msg: msg.into(),
        }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn image(path: impl AsRef<Path>, msg: impl ToString) -> Self {
        Self::Image {
            path: path.as_ref().to_path_buf(),
            msg: msg.to_string(),
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        let mut msg = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            cause = c.source();
        }
        Error::Postgres(msg)
    }
}
