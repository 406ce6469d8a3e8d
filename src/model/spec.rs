//! The restorer and diffusion sections of a job spec (owned here): presets or explicit sizes,
//! resolved into the networks' configs.

use serde::{Deserialize, Serialize};

use crate::model::ArchConfig;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiffusionSpec {
    /// `diffusion-t`, `diffusion-s` or `diffusion-b` (channels [32,32,64,64] / [32,64,128,128] /
    /// [64,128,256,512]); explicit fields below override it.
    #[serde(default = "default_diffusion_preset")]
    pub preset: String,
    pub channels: Option<Vec<usize>>,
    pub res_blocks: Option<usize>,
    pub attention: Option<bool>,
    pub dropout: Option<f64>,
    /// Steps of the linear β schedule.
    #[serde(default = "default_timesteps")]
    pub timesteps: usize,
    /// β at the first and the last step.
    #[serde(default = "default_beta")]
    pub beta: [f64; 2],
}

fn default_diffusion_preset() -> String {
    "diffusion-t".into()
}
fn default_timesteps() -> usize {
    1000
}
fn default_beta() -> [f64; 2] {
    [1e-6, 1e-2]
}

impl Default for DiffusionSpec {
    fn default() -> Self {
        Self {
            preset: default_diffusion_preset(),
            channels: None,
            res_blocks: None,
            attention: None,
            dropout: None,
            timesteps: default_timesteps(),
            beta: default_beta(),
        }
    }
}

impl DiffusionSpec {
    pub fn resolve(&self) -> Result<crate::model::DiffusionConfig> {
        let mut cfg = crate::model::DiffusionConfig::preset(&self.preset).ok_or_else(|| {
            Error::invalid(
                "diffusion.preset",
                format!(
                    "unknown preset `{}`; expected one of {}",
                    self.preset,
                    crate::model::DiffusionConfig::PRESETS.join(", ")
                ),
            )
        })?;
        if let Some(c) = &self.channels {
            cfg.channels = c.clone();
        }
        if let Some(r) = self.res_blocks {
            cfg.res_blocks = r;
        }
        if let Some(a) = self.attention {
            cfg.attention = a;
        }
        if let Some(d) = self.dropout {
            cfg.dropout = d;
        }
        cfg.validate().map_err(|e| Error::invalid("diffusion", e))?;
        Ok(cfg)
    }
}

/// The restorer: a preset name, or an explicit architecture.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestorerSpec {
    /// `unet-t`, `unet-s`, `unet-b` or `dncnn`.
    pub preset: Option<String>,
    /// `unet` or `dncnn` (instead of a preset).
    pub arch: Option<String>,
    /// U-Net base width (channels of the first level).
    pub width: Option<usize>,
    /// U-Net depth (levels, including the bottleneck).
    pub depth: Option<usize>,
    /// DnCNN number of conv layers.
    pub layers: Option<usize>,
    /// DnCNN feature channels.
    pub features: Option<usize>,
    /// `kaiming` (the official init, the default) or `identity`: the same init with the last
    /// conv zeroed, so the residual restorer starts as the identity `y = x`.
    #[serde(default, skip_serializing_if = "RestorerInit::is_default")]
    pub init: RestorerInit,
}

/// How the restorer's weights start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestorerInit {
    /// Kaiming-normal on every conv, zero biases (official `core/base_network.py`).
    #[default]
    Kaiming,
    /// Kaiming, then the head (last conv) zeroed: R(x) = 0 at step 0.
    Identity,
}

impl RestorerInit {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl RestorerSpec {
    /// Resolves the preset or explicit fields into an architecture.
    pub fn resolve(&self) -> Result<ArchConfig> {
        match (&self.preset, &self.arch) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "restorer",
                "give either `preset` or `arch`, not both",
            )),
            (Some(p), None) => {
                if self.width.is_some()
                    || self.depth.is_some()
                    || self.layers.is_some()
                    || self.features.is_some()
                {
                    return Err(Error::invalid(
                        "restorer",
                        "size fields (width, depth, layers, features) need `arch`, not `preset`",
                    ));
                }
                ArchConfig::preset(p).ok_or_else(|| {
                    Error::invalid(
                        "restorer.preset",
                        format!(
                            "unknown preset `{p}`; expected one of {}",
                            ArchConfig::PRESETS.join(", ")
                        ),
                    )
                })
            }
            (None, Some(a)) => {
                let arch = match a.as_str() {
                    "unet" => {
                        if self.layers.is_some() || self.features.is_some() {
                            return Err(Error::invalid(
                                "restorer",
                                "`layers`/`features` belong to dncnn; unet takes width and depth",
                            ));
                        }
                        let base = crate::model::UNetConfig::default();
                        ArchConfig::UNet(crate::model::UNetConfig {
                            width: self.width.unwrap_or(base.width),
                            depth: self.depth.unwrap_or(base.depth),
                            slope: base.slope,
                        })
                    }
                    "dncnn" => {
                        if self.width.is_some() || self.depth.is_some() {
                            return Err(Error::invalid(
                                "restorer",
                                "`width`/`depth` belong to unet; dncnn takes layers and features",
                            ));
                        }
                        let base = crate::model::DnCnnConfig::default();
                        ArchConfig::DnCnn(crate::model::DnCnnConfig {
                            layers: self.layers.unwrap_or(base.layers),
                            features: self.features.unwrap_or(base.features),
                        })
                    }
                    other => {
                        return Err(Error::invalid(
                            "restorer.arch",
                            format!("unknown arch `{other}`; expected `unet` or `dncnn`"),
                        ))
                    }
                };
                arch.validate()?;
                Ok(arch)
            }
            (None, None) => Err(Error::invalid(
                "restorer",
                "missing `preset` (e.g. \"unet-t\") or `arch`",
            )),
        }
    }
}
