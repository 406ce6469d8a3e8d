//! Where the job store lives: `--store` parsed into a [`StoreUrl`], and its redaction for logs
//! (a PostgreSQL password never reaches a log line).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where the job store lives (`noiseda serve --store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An embedded SQLite file (one server).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user:pass@host:5432/db`), shared by replicas.
    Postgres(String),
}

impl StoreUrl {
    /// `sqlite` (or "") → `<data_dir>/noiseda.db`, `sqlite:PATH`, or `postgres://…` /
    /// `postgresql://…`.
    pub fn parse(s: &str, data_dir: &Path) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s == "sqlite" {
            return Ok(StoreUrl::Sqlite(data_dir.join("noiseda.db")));
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<postgres::Config>().map_err(|e| {
                Error::invalid("--store", format!("not a valid PostgreSQL URL: {e}"))
            })?;
            return Ok(StoreUrl::Postgres(s.to_string()));
        }
        Err(Error::invalid(
            "--store",
            format!("`{s}`: expected `sqlite`, `sqlite:PATH` or `postgres://user:pass@host/db`"),
        ))
    }

    /// Whether several servers may share the store.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreUrl::Postgres(_))
    }

    /// For logs: the URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            // scheme://user:password@host… → scheme://user:***@host…
            StoreUrl::Postgres(url) => match url.split_once('@') {
                Some((creds, rest)) => {
                    let (scheme, userinfo) = creds.split_once("://").unwrap_or(("", creds));
                    let user = userinfo.split(':').next().unwrap_or("");
                    format!("{scheme}://{user}:***@{rest}")
                }
                None => url.clone(),
            },
        }
    }
}
