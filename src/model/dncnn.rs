//! DnCNN (Zhang et al., TIP 2017) as a second restorer family: conv+ReLU, (layers−2)×
//! (conv + BatchNorm + ReLU), conv; no biases; predicts the residual (the noise, negated).
//! Keys follow the reference `nn.Sequential` (`dncnn.{idx}`).

use candle::{Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, VarBuilder};

use super::ConvLayer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnCnnConfig {
    /// Convolution layers in total (17 in the paper).
    pub layers: usize,
    /// Feature channels (64 in the paper).
    pub features: usize,
}

impl Default for DnCnnConfig {
    fn default() -> Self {
        Self {
            layers: 17,
            features: 64,
        }
    }
}

impl DnCnnConfig {
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let f = self.features;
        (9 * (3 * f + (self.layers - 2) * f * f + f * 3) * h * w) as u64
    }
}

#[derive(Debug, Clone)]
pub struct DnCnn {
    first: ConvLayer,
    mid: Vec<(ConvLayer, BatchNorm)>,
    last: ConvLayer,
}

fn conv(cin: usize, cout: usize, vb: VarBuilder) -> candle::Result<ConvLayer> {
    ConvLayer::new(vb, cin, cout, 3, false)
}

impl DnCnn {
    pub fn new(vb: VarBuilder, cfg: &DnCnnConfig) -> candle::Result<Self> {
        let vb = vb.pp("dncnn");
        let f = cfg.features;
        let first = conv(3, f, vb.pp(0))?;
        let bn_cfg = candle_nn::BatchNormConfig {
            eps: 1e-4,
            ..Default::default()
        };
        let mid = (0..cfg.layers - 2)
            .map(|k| {
                let idx = 2 + 3 * k;
                Ok((
                    conv(f, f, vb.pp(idx))?,
                    candle_nn::batch_norm(f, bn_cfg, vb.pp(idx + 1))?,
                ))
            })
            .collect::<candle::Result<Vec<_>>>()?;
        let last = conv(f, 3, vb.pp(2 + 3 * (cfg.layers - 2)))?;
        Ok(Self { first, mid, last })
    }

    /// R(x); `train` uses (and updates) batch statistics in the norm layers.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> candle::Result<Tensor> {
        let mut xs = self.first.forward(xs)?.relu()?;
        for (conv, bn) in &self.mid {
            xs = bn.forward_t(&conv.forward(&xs)?, train)?.relu()?;
        }
        self.last.forward(&xs)
    }
}
