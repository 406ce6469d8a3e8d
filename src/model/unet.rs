//! VDN-style restoration U-Net of Denoising as Adaptation (Liao et al., ICLR 2025,
//! arXiv 2406.18516; official models/net/UNet.py, after Yue et al. 2019). Predicts a residual.
//!
//! Per level two 3×3 convs + LeakyReLU(0.2); 2×2 average-pool down; bilinear ×2
//! (align_corners=True) then a 3×3 conv up; skip concat [up, skip]; 3×3 head. No normalisation.
//! Checkpoint keys follow the official module names (`down_path.i.block.{0,2}`, `up_path.i.up.1`,
//! `up_path.i.conv_block.block.{0,2}`, `last`).

use candle::{Module, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{conv3x3, upsample::upsample_bilinear2x, ConvLayer};

/// U-Net hyper-parameters. Default = Unet-S (official `RestorationNet()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of the first level; level i has `width · 2^i` (Unet-T/S/B: 32/64/76).
    pub width: usize,
    /// Number of levels including the bottleneck (official: 4, so inputs pad to multiples of 8).
    pub depth: usize,
    /// LeakyReLU negative slope.
    #[serde(default = "default_slope")]
    pub slope: f64,
}

fn default_slope() -> f64 {
    0.2
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            width: 64,
            depth: 4,
            slope: default_slope(),
        }
    }
}

impl UNetConfig {
    /// Convolution multiply-accumulates for a 3×h×w input (h, w multiples of 2^(depth−1)).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let conv = |cin: usize, cout: usize, h: usize, w: usize| (9 * cin * cout * h * w) as u64;
        let (mut h, mut w, mut prev, mut macs) = (h, w, 3, 0u64);
        for i in 0..self.depth {
            let c = self.width << i;
            macs += conv(prev, c, h, w) + conv(c, c, h, w);
            prev = c;
            if i + 1 < self.depth {
                (h, w) = (h / 2, w / 2);
            }
        }
        for i in (0..self.depth - 1).rev() {
            let c = self.width << i;
            (h, w) = (h * 2, w * 2);
            macs += conv(prev, c, h, w) + conv(2 * c, c, h, w) + conv(c, c, h, w);
            prev = c;
        }
        macs + conv(self.width, 3, h, w)
    }
}

/// Conv3×3 → LeakyReLU → Conv3×3 → LeakyReLU (`UNetConvBlock`).
#[derive(Debug, Clone)]
struct ConvBlock {
    conv1: ConvLayer,
    conv2: ConvLayer,
    slope: f64,
}

impl ConvBlock {
    fn new(vb: VarBuilder, cin: usize, cout: usize, slope: f64) -> candle::Result<Self> {
        let vb = vb.pp("block");
        Ok(Self {
            conv1: conv3x3(cin, cout, vb.pp(0))?,
            conv2: conv3x3(cout, cout, vb.pp(2))?,
            slope,
        })
    }
}

impl Module for ConvBlock {
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        // conv → LeakyReLU, twice (each a fused op).
        let xs = self.conv1.forward_leaky(xs, self.slope)?;
        self.conv2.forward_leaky(&xs, self.slope)
    }
}

/// Bilinear ×2 + Conv3×3, concat with the skip, ConvBlock (`UNetUpBlock`).
#[derive(Debug, Clone)]
struct UpBlock {
    up_conv: ConvLayer,
    block: ConvBlock,
}

impl UpBlock {
    fn new(vb: VarBuilder, cin: usize, cout: usize, slope: f64) -> candle::Result<Self> {
        Ok(Self {
            up_conv: conv3x3(cin, cout, vb.pp("up").pp(1))?,
            block: ConvBlock::new(vb.pp("conv_block"), 2 * cout, cout, slope)?,
        })
    }

    fn forward(&self, xs: &Tensor, skip: &Tensor) -> candle::Result<Tensor> {
        // (b, c, h, w) -> (b, c_out, 2h, 2w)
        let up = self.up_conv.forward(&upsample_bilinear2x(xs)?)?;
        // (b, c_out, 2h, 2w) ++ skip -> (b, 2·c_out, 2h, 2w)
        self.block.forward(&Tensor::cat(&[&up, skip], 1)?)
    }
}

#[derive(Debug, Clone)]
pub struct UNet {
    down: Vec<ConvBlock>,
    up: Vec<UpBlock>,
    last: ConvLayer,
    depth: usize,
}

impl UNet {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> candle::Result<Self> {
        let (mut down, mut up) = (Vec::new(), Vec::new());
        let mut prev = 3;
        for i in 0..cfg.depth {
            let c = cfg.width << i;
            down.push(ConvBlock::new(
                vb.pp("down_path").pp(i),
                prev,
                c,
                cfg.slope,
            )?);
            prev = c;
        }
        for (k, i) in (0..cfg.depth - 1).rev().enumerate() {
            let c = cfg.width << i;
            up.push(UpBlock::new(vb.pp("up_path").pp(k), prev, c, cfg.slope)?);
            prev = c;
        }
        let last = conv3x3(prev, 3, vb.pp("last"))?;
        Ok(Self {
            down,
            up,
            last,
            depth: cfg.depth,
        })
    }

    /// Spatial sides must be multiples of this.
    pub fn multiple(&self) -> usize {
        1 << (self.depth - 1)
    }
}

impl Module for UNet {
    /// The residual R(x) of a (b, 3, h, w) batch with h, w multiples of `multiple()`.
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        // 1. Encoder: keep each level's features, pool all but the bottleneck.
        let mut skips = Vec::with_capacity(self.depth - 1);
        let mut xs = xs.clone();
        for (i, block) in self.down.iter().enumerate() {
            xs = block.forward(&xs)?;
            if i + 1 < self.down.len() {
                skips.push(xs.clone());
                // (b, c, h, w) -> (b, c, h/2, w/2)
                xs = xs.avg_pool2d(2)?;
            }
        }
        // 2. Decoder: upsample and fuse with the skips, deepest first.
        for (block, skip) in self.up.iter().zip(skips.iter().rev()) {
            xs = block.forward(&xs, skip)?;
        }
        // 3. Head: (b, width, h, w) -> (b, 3, h, w)
        self.last.forward(&xs)
    }
}
