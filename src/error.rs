//! The crate's one error type and its one mapping to a gRPC status.

use std::path::{Path, PathBuf};

/// Every failure noiseda reports. Messages name the offending key, file or limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job spec or flag value is wrong; `key` is the dotted spec path (e.g. `data.patch`).
    #[error("invalid config `{key}`: {msg}")]
    Config { key: String, msg: String },
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
    /// The data loader thread went away.
    #[error("data loader stopped: {0}")]
    Loader(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
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

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let msg = err.to_string();
        match err {
            Error::Config { .. } | Error::InvalidArgument(_) | Error::Image { .. } => {
                tonic::Status::invalid_argument(msg)
            }
            Error::Data(_) => tonic::Status::failed_precondition(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::Checkpoint(_) | Error::Artifact(_) => tonic::Status::failed_precondition(msg),
            Error::Io { .. } | Error::Tensor(_) | Error::Loader(_) => {
                tracing::error!(error = %msg, "internal error");
                tonic::Status::internal(msg)
            }
        }
    }
}
