//! A job spec as a client submits it (TOML or JSON text), parsed into the trainer's
//! [`JobSpec`]; the manager validates it.

use crate::config::JobSpec;
use crate::{Error, Result};

/// A submitted spec document.
#[derive(Debug, Clone)]
pub enum SpecDocument {
    Toml(String),
    Json(String),
}

impl SpecDocument {
    /// The text as submitted and the parsed (not yet validated) spec.
    pub fn parse(self) -> Result<(String, JobSpec)> {
        match self {
            SpecDocument::Toml(t) => {
                let spec = JobSpec::from_toml(&t)
                    .map_err(|e| Error::invalid("spec.toml", e.message().to_string()))?;
                Ok((t, spec))
            }
            SpecDocument::Json(t) => {
                let spec = serde_json::from_str(&t)
                    .map_err(|e| Error::invalid("spec.json", e.to_string()))?;
                Ok((t, spec))
            }
        }
    }
}
