//! The crate's one error type: what went wrong, by domain kind (a bad value, a missing thing,
//! a conflict, a wrong state, overload, unavailability, refused access, a fault of our own),
//! with the underlying cause kept as its `#[source]`. No transport or SQL types appear in it;
//! its one mapping to a gRPC status is `grpc::status`.

use std::path::Path;

/// The cause under an error (an `io::Error`, a candle or SQL error), boxed.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every failure noiseda reports. Messages name the offending key, file or limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value is wrong: a job-spec key or flag (`key`, e.g. `data.patch`, `--lease-ms`), or a
    /// request or argument as a whole (`key` is `None`).
    #[error("{}", invalid_text(.key.as_deref(), .msg))]
    Invalid { key: Option<String>, msg: String },
    /// Several values are wrong; each item is an [`Error::Invalid`] naming its key.
    #[error("invalid job spec, {} problems: {}", .0.len(), join(.0))]
    Problems(Vec<Error>),
    /// Something that was asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Something with that name already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The request is valid but what it acts on is in the wrong state or unusable: a finished
    /// job, a dataset without pairs, a checkpoint or artifact that does not match.
    #[error("{msg}")]
    Precondition {
        msg: String,
        #[source]
        source: Option<Source>,
    },
    /// A bounded queue is full.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A request's deadline passed before it was served.
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    /// The server is not ready, is shutting down, or cannot reach what it depends on (the
    /// shared PostgreSQL store).
    #[error("{msg}")]
    Unavailable {
        msg: String,
        #[source]
        source: Option<Source>,
    },
    /// A call came without a valid API key.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The API key is valid but lacks the scope the call needs.
    #[error("permission denied: {0}")]
    Denied(String),
    /// A fault of the program or its machine (I/O, tensors, the SQLite store, a panicked or
    /// vanished thread): the detail is logged and kept where the server records it (a job's
    /// `last_error`); gRPC clients get a generic message.
    #[error("{msg}")]
    Internal {
        msg: String,
        #[source]
        source: Option<Source>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn invalid_text(key: Option<&str>, msg: &str) -> String {
    match key {
        Some(key) => format!("invalid config `{key}`: {msg}"),
        None => msg.to_string(),
    }
}

fn join(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// `Ok` for no problems, the problem itself for one, [`Error::Problems`] for several.
    pub fn from_problems(mut problems: Vec<Error>) -> Result<()> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(Error::Problems(problems)),
        }
    }

    /// (field, description) of every bad value this error names by key.
    pub fn field_violations(&self) -> Vec<(String, String)> {
        match self {
            Error::Invalid {
                key: Some(key),
                msg,
            } => vec![(key.clone(), msg.clone())],
            Error::Problems(all) => all.iter().flat_map(Error::field_violations).collect(),
            _ => Vec::new(),
        }
    }

    /// The value at `key` (a dotted spec path or a flag) is wrong.
    pub fn invalid(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Invalid {
            key: Some(key.into()),
            msg: msg.into(),
        }
    }

    /// A request or argument is wrong as a whole (no single key to name).
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Self::Invalid {
            key: None,
            msg: msg.into(),
        }
    }

    /// An image could not be decoded, encoded or used (a bad input: [`Error::Invalid`]).
    pub fn image(path: impl AsRef<Path>, msg: impl ToString) -> Self {
        Self::invalid_input(format!(
            "image {}: {}",
            path.as_ref().display(),
            msg.to_string()
        ))
    }

    /// What the request acts on is in the wrong state.
    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::Precondition {
            msg: msg.into(),
            source: None,
        }
    }

    /// A dataset is unusable (empty folder, unmatched pair, too-small image, ...).
    pub fn data(msg: impl std::fmt::Display) -> Self {
        Self::precondition(format!("dataset: {msg}"))
    }

    /// A checkpoint is missing, corrupt or does not match the job.
    pub fn checkpoint(msg: impl std::fmt::Display) -> Self {
        Self::precondition(format!("checkpoint: {msg}"))
    }

    /// A model artifact is missing, corrupt or does not match its manifest.
    pub fn artifact(msg: impl std::fmt::Display) -> Self {
        Self::precondition(format!("model artifact: {msg}"))
    }

    /// The server is not ready or is shutting down.
    pub fn unavailable(msg: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            msg: format!("unavailable: {msg}"),
            source: None,
        }
    }

    /// A fault of the server itself.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal {
            msg: msg.into(),
            source: None,
        }
    }

    /// The data loader thread went away.
    pub fn loader(why: impl std::fmt::Display) -> Self {
        Self::internal(format!("data loader stopped: {why}"))
    }

    /// A file or directory could not be read or written; the message names `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Internal {
            msg: format!("{}: {source}", path.as_ref().display()),
            source: Some(Box::new(source)),
        }
    }
}

impl From<candle::Error> for Error {
    fn from(e: candle::Error) -> Self {
        Error::Internal {
            msg: format!("tensor: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Internal {
            msg: format!("job store: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

impl From<postgres::Error> for Error {
    /// The shared store failed or cannot be reached; the message carries the whole cause
    /// chain ("error connecting to server: Connection refused …").
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
        Error::Unavailable {
            msg: format!("job store (PostgreSQL): {msg}"),
            source: Some(Box::new(e)),
        }
    }
}
