//! Restorer networks (VDN U-Net presets, DnCNN): configs, construction, init and size accounting.

pub mod conv;
pub mod diffusion;
mod dncnn;
pub mod norm;
pub mod philox;
pub mod spec;
mod unet;
pub mod upsample;

use candle::{DType, Device, Module, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};

pub use conv::ConvLayer;
pub use diffusion::{DiffusionConfig, DiffusionUNet};
pub use dncnn::{DnCnn, DnCnnConfig};
pub use unet::{UNet, UNetConfig};

use crate::{Error, Result};

/// A restorer architecture. Serialised into job specs' resolved form and model manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ArchConfig {
    #[serde(rename = "unet")]
    UNet(UNetConfig),
    #[serde(rename = "dncnn")]
    DnCnn(DnCnnConfig),
}

impl ArchConfig {
    pub const PRESETS: [&'static str; 4] = ["unet-t", "unet-s", "unet-b", "dncnn"];

    /// The paper's presets (A1.3): Unet-T/S/B have base width 32/64/76, depth 4.
    pub fn preset(name: &str) -> Option<Self> {
        let unet = |width| {
            Self::UNet(UNetConfig {
                width,
                ..UNetConfig::default()
            })
        };
        match name {
            "unet-t" => Some(unet(32)),
            "unet-s" => Some(unet(64)),
            "unet-b" => Some(unet(76)),
            "dncnn" => Some(Self::DnCnn(DnCnnConfig::default())),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::UNet(c) => {
                if !(1..=512).contains(&c.width)
                    || !(2..=6).contains(&c.depth)
                    || !(0.0..1.0).contains(&c.slope)
                {
                    return Err(Error::invalid(
                        "restorer",
                        format!(
                            "unet needs width in 1..=512, depth in 2..=6 and slope in [0, 1), \
                             got width {} depth {} slope {}",
                            c.width, c.depth, c.slope
                        ),
                    ));
                }
            }
            Self::DnCnn(c) => {
                if !(2..=200).contains(&c.layers) || !(1..=1024).contains(&c.features) {
                    return Err(Error::invalid(
                        "restorer",
                        format!(
                            "dncnn needs layers in 2..=200 and features in 1..=1024, got {} / {}",
                            c.layers, c.features
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Multiply-accumulates of one forward pass on a 3×h×w image (convolutions and upsampling).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        match self {
            Self::UNet(c) => c.macs(h, w),
            Self::DnCnn(c) => c.macs(h, w),
        }
    }

    /// Input sides must be a multiple of this; `Restorer::residual` pads to it.
    pub fn multiple(&self) -> usize {
        match self {
            Self::UNet(c) => 1 << (c.depth - 1),
            Self::DnCnn(_) => 1,
        }
    }
}

/// A restorer network: predicts a residual, the restored image is `x + R(x)`.
#[derive(Debug, Clone)]
pub enum Restorer {
    UNet(UNet),
    DnCnn(DnCnn),
}

impl Restorer {
    pub fn new(vb: VarBuilder, cfg: &ArchConfig) -> candle::Result<Self> {
        Ok(match cfg {
            ArchConfig::UNet(c) => Self::UNet(UNet::new(vb, c)?),
            ArchConfig::DnCnn(c) => Self::DnCnn(DnCnn::new(vb, c)?),
        })
    }

    /// R(x) for a (b, 3, h, w) batch of any size: replicate-pads right/bottom to the
    /// architecture's multiple, runs the net and crops back. `train` selects batch statistics
    /// for normalisation layers.
    pub fn residual(&self, xs: &Tensor, train: bool) -> candle::Result<Tensor> {
        let (_b, _c, h, w) = xs.dims4()?;
        let m = self.multiple();
        let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
        let padded = if ph + pw > 0 {
            xs.pad_with_same(D::Minus2, 0, ph)?
                .pad_with_same(D::Minus1, 0, pw)?
        } else {
            xs.clone()
        };
        let r = match self {
            Self::UNet(n) => n.forward(&padded)?,
            Self::DnCnn(n) => n.forward_t(&padded, train)?,
        };
        if ph + pw > 0 {
            r.narrow(D::Minus2, 0, h)?.narrow(D::Minus1, 0, w)
        } else {
            Ok(r)
        }
    }

    /// Variable-name prefix (under the restorer's own prefix) of the head: the last conv.
    pub fn head(cfg: &ArchConfig) -> String {
        match cfg {
            ArchConfig::UNet(_) => "last".into(),
            ArchConfig::DnCnn(c) => format!("dncnn.{}", 2 + 3 * (c.layers - 2)),
        }
    }

    /// Input sides are replicate-padded to a multiple of this.
    pub fn multiple(&self) -> usize {
        match self {
            Self::UNet(n) => n.multiple(),
            Self::DnCnn(_) => 1,
        }
    }

    /// The restored image `x + R(x)`, not clamped.
    pub fn restore(&self, xs: &Tensor, train: bool) -> candle::Result<Tensor> {
        xs + self.residual(xs, train)?
    }
}

impl Module for Restorer {
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        self.restore(xs, false)
    }
}

/// Whether a variable is learned by the optimizer (batch-norm running statistics are not).
pub fn is_trainable(name: &str) -> bool {
    !(name.ends_with("running_mean") || name.ends_with("running_var"))
}

/// Official init (core/base_network.py): kaiming-normal (a=0, fan_in) on every conv/linear
/// weight, zero biases; norm-layer scales stay 1. Initialises the variables under `prefix`,
/// drawing in name order from ChaCha stream `stream` of `seed`, so each network is initialised
/// identically on every run and device, whatever other networks share the VarMap.
pub fn init_weights(varmap: &VarMap, prefix: &str, seed: u64, stream: u64) -> candle::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let data = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned. This is a bug.");
    let mut names: Vec<&String> = data.keys().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        if name.ends_with(".weight") && dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt() as f32;
            let normal = rand_distr::Normal::new(0f32, std).expect("std is finite");
            let n: usize = dims.iter().product();
            let vals: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            var.set(&Tensor::from_vec(vals, dims, var.device())?.to_dtype(var.dtype())?)?;
        } else if name.ends_with(".bias") {
            var.set(&var.zeros_like()?)?;
        }
    }
    Ok(())
}

/// Number of learned parameters of an architecture (built on the CPU with zero weights).
pub fn parameter_count(cfg: &ArchConfig) -> Result<u64> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Restorer::new(vb, cfg)?;
    let data = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned. This is a bug.");
    Ok(data
        .iter()
        .filter(|(n, _)| is_trainable(n))
        .map(|(_, v)| v.elem_count() as u64)
        .sum())
}

/// The contiguous f32 data of a CPU storage, for the fused CPU kernels (conv, norm,
/// upsample); `what` names the operand in the error.
pub(crate) fn cpu_f32<'a>(
    s: &'a candle::CpuStorage,
    l: &candle::Layout,
    what: &str,
) -> candle::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (candle::CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle::bail!("{what}: the fused CPU kernels take contiguous f32"),
    }
}

/// Whether every tensor can take the fused CPU kernels (f32 on the CPU); others use candle's
/// own ops.
pub(crate) fn on_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// max |a − b| / max |b|, for the kernels' tests.
#[cfg(test)]
pub(crate) fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-6)
}

/// A 3×3 convolution with bias and padding 1 (the fast CPU kernel, see [`conv`]).
pub(crate) fn conv3x3(cin: usize, cout: usize, vb: VarBuilder) -> candle::Result<ConvLayer> {
    ConvLayer::new(vb, cin, cout, 3, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_parameter_counts_match_the_paper() {
        // method.md §1: exact counts of Unet-T/S/B (paper A1.3: 2.14M / 8.56M / 12.07M).
        let count = |p| parameter_count(&ArchConfig::preset(p).unwrap()).unwrap();
        assert_eq!(count("unet-t"), 2_141_475);
        assert_eq!(count("unet-s"), 8_559_171);
        assert_eq!(count("unet-b"), 12_068_271);
        // DnCNN colour, 17 layers, 64 features, BN, no bias: 1728 + 15·(36864 + 128) + 1728.
        assert_eq!(count("dncnn"), 558_336);
    }

    #[test]
    fn diffusion_b_parameter_count_matches_the_official_config() {
        // method.md §2.1: 62,643,075 for [64,128,256,512], 2 res blocks, middle attention.
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        DiffusionUNet::new(vb, &DiffusionConfig::preset("diffusion-b").unwrap()).unwrap();
        let n: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, 62_643_075);
    }

    #[test]
    #[allow(clippy::approx_constant)] // 3.14 is the paper's Unet-T GMACs, not π
    fn gmacs_at_128_match_the_paper_table() {
        // method.md §1: 3.12 / 12.44 / 17.53 GMACs computed (paper: 3.14 / 12.48 / 17.58).
        let g = |p| ArchConfig::preset(p).unwrap().macs(128, 128) as f64 / 1e9;
        assert!((g("unet-t") - 3.14).abs() < 0.03, "{}", g("unet-t"));
        assert!((g("unet-s") - 12.48).abs() < 0.06, "{}", g("unet-s"));
        assert!((g("unet-b") - 17.58).abs() < 0.08, "{}", g("unet-b"));
    }
}
