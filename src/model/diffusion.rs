//! Conditional diffusion U-Net of Denoising as Adaptation (official
//! models/guided_diffusion_modules/unet.py, Palette's adaptation of openai guided-diffusion):
//! predicts the noise ε of a noisy target from 9 input channels [y_t, condition A, condition B]
//! and the continuous noise level ᾱ.
//!
//! ResBlocks: GroupNorm → SiLU → conv, scale-shift conditioning from the ᾱ embedding, GroupNorm →
//! SiLU → dropout → conv, 1×1-conv skip when channels change; down/up ResBlocks resample inside
//! (2×2 average pool / nearest ×2); the middle block has optional legacy-order self-attention
//! (head dim 32). Group norm uses 32 groups where a layer has at least 64 channels; narrower
//! layers (the `diffusion-t`/`-s` presets' 32-channel levels) use channels/2 groups, so every
//! group normalises at least two channels. Dropout masks come from a caller-provided seeded RNG
//! so training stays reproducible. Keys follow the official module names.

use candle::{Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::norm::{Dropout, GroupNorm};
use super::{conv3x3, ConvLayer};

/// Diffusion U-Net hyper-parameters. Default = the official `diffusion-b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    /// Channels per level (official [64, 128, 256, 512]).
    pub channels: Vec<usize>,
    /// ResBlocks per level in the encoder (the decoder has one more).
    #[serde(default = "default_res_blocks")]
    pub res_blocks: usize,
    /// Self-attention in the middle block (the only attention the official config uses).
    #[serde(default = "default_true")]
    pub attention: bool,
    /// Dropout inside ResBlocks during training.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

fn default_res_blocks() -> usize {
    2
}
fn default_true() -> bool {
    true
}
fn default_dropout() -> f64 {
    0.2
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            channels: vec![64, 128, 256, 512],
            res_blocks: default_res_blocks(),
            attention: true,
            dropout: default_dropout(),
        }
    }
}

impl DiffusionConfig {
    pub const PRESETS: [&'static str; 3] = ["diffusion-t", "diffusion-s", "diffusion-b"];

    /// Paper A4.6: Diffusion-T [32,32,64,64], -S [32,64,128,128], -B [64,128,256,512].
    pub fn preset(name: &str) -> Option<Self> {
        let channels = match name {
            "diffusion-t" => vec![32, 32, 64, 64],
            "diffusion-s" => vec![32, 64, 128, 128],
            "diffusion-b" => vec![64, 128, 256, 512],
            _ => return None,
        };
        Some(Self {
            channels,
            ..Self::default()
        })
    }

    /// Input sides must be a multiple of this.
    pub fn multiple(&self) -> usize {
        1 << (self.channels.len() - 1)
    }

    /// Convolution multiply-accumulates (3×3 convs, 1×1 skips and the attention's 1×1
    /// projections and products) of one forward on a 9×h×w input; mirrors [`DiffusionUNet::new`].
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let conv3 = |cin: usize, cout: usize, px: usize| (9 * cin * cout * px) as u64;
        // A ResBlock at output resolution `px`: two 3×3 convs and a 1×1 skip if widths differ.
        let rb = |cin: usize, cout: usize, px: usize| {
            conv3(cin, cout, px)
                + conv3(cout, cout, px)
                + if cin != cout {
                    (cin * cout * px) as u64
                } else {
                    0
                }
        };
        let levels = self.channels.len();
        let mut px = h * w;
        let mut ch = self.channels[0];
        let mut macs = conv3(9, ch, px);
        let mut skips = vec![ch];
        for (level, &out) in self.channels.iter().enumerate() {
            for _ in 0..self.res_blocks {
                macs += rb(ch, out, px);
                ch = out;
                skips.push(ch);
            }
            if level + 1 < levels {
                px /= 4;
                macs += rb(ch, ch, px);
                skips.push(ch);
            }
        }
        macs += 2 * rb(ch, ch, px);
        if self.attention {
            // qkv and proj (4c² per position) and the two attention products (2c·px per position).
            macs += (4 * ch * ch * px + 2 * ch * px * px) as u64;
        }
        for (level, &out) in self.channels.iter().enumerate().rev() {
            for i in 0..=self.res_blocks {
                let skip = skips.pop().expect("one skip per encoder block");
                macs += rb(ch + skip, out, px);
                ch = out;
                if level > 0 && i == self.res_blocks {
                    px *= 4;
                    macs += rb(ch, ch, px);
                }
            }
        }
        macs + conv3(ch, 3, px)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.channels.is_empty() || self.channels.len() > 6 {
            return Err(format!("needs 1 to 6 levels, got {}", self.channels.len()));
        }
        if let Some(c) = self
            .channels
            .iter()
            .find(|&&c| c < 2 || !c.is_multiple_of(2) || c > 1024)
        {
            return Err(format!("channels must be even and in 2..=1024, got {c}"));
        }
        if self.attention && self.channels.last().is_some_and(|c| !c.is_multiple_of(32)) {
            return Err("attention needs a multiple of 32 channels in the last level".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.res_blocks == 0 || self.res_blocks > 4 {
            return Err(format!(
                "res_blocks must be in 1..=4, got {}",
                self.res_blocks
            ));
        }
        Ok(())
    }
}

/// Learned parameters of a diffusion network (built on the CPU).
pub fn parameter_count(cfg: &DiffusionConfig) -> candle::Result<u64> {
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle::DType::F32, &candle::Device::Cpu);
    DiffusionUNet::new(vb, cfg)?;
    Ok(varmap
        .all_vars()
        .iter()
        .map(|v| v.elem_count() as u64)
        .sum())
}

/// Group count for a layer of `ch` channels: 32 when every group gets ≥ 2 channels, else ch/2.
pub fn norm_groups(ch: usize) -> usize {
    if ch >= 64 && ch.is_multiple_of(32) {
        32
    } else {
        (ch / 2).max(1)
    }
}

fn group_norm(ch: usize, vb: VarBuilder) -> candle::Result<GroupNorm> {
    GroupNorm::new(vb, norm_groups(ch), ch)
}

/// Sinusoidal embedding of ᾱ: `[cos(ᾱ·f_k), sin(ᾱ·f_k)]`, `f_k = exp(−ln(10⁴)·k/half)`.
pub fn gamma_embedding(gammas: &Tensor, dim: usize) -> candle::Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), gammas.device())?.to_dtype(gammas.dtype())?;
    // (b,) -> (b, half)
    let args = gammas.unsqueeze(1)?.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Resample {
    None,
    Down,
    Up,
}

/// Nearest-neighbour ×2: (b, c, h, w) -> (b, c, 2h, 2w), as a broadcast. Not
/// `Tensor::upsample_nearest2d`: its backward in candle 0.11 overwrites the gradient already
/// accumulated for its input instead of adding to it, which drops the other paths' gradients
/// when the input is also used elsewhere (the Up ResBlock's skip reads it twice).
pub fn upsample_nearest2x(xs: &Tensor) -> candle::Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    xs.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

impl Resample {
    fn apply(self, xs: &Tensor) -> candle::Result<Tensor> {
        match self {
            Resample::None => Ok(xs.clone()),
            // (b, c, h, w) -> (b, c, h/2, w/2)
            Resample::Down => xs.avg_pool2d(2),
            Resample::Up => upsample_nearest2x(xs),
        }
    }
}

#[derive(Debug, Clone)]
struct ResBlock {
    in_norm: GroupNorm,
    in_conv: ConvLayer,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: ConvLayer,
    skip: Option<ConvLayer>,
    resample: Resample,
    dropout: f64,
}

impl ResBlock {
    fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        emb_dim: usize,
        resample: Resample,
        dropout: f64,
    ) -> candle::Result<Self> {
        let skip = if cin != cout {
            Some(ConvLayer::new(
                vb.pp("skip_connection"),
                cin,
                cout,
                1,
                true,
            )?)
        } else {
            None
        };
        Ok(Self {
            in_norm: group_norm(cin, vb.pp("in_layers").pp(0))?,
            in_conv: conv3x3(cin, cout, vb.pp("in_layers").pp(2))?,
            emb: candle_nn::linear(emb_dim, 2 * cout, vb.pp("emb_layers").pp(1))?,
            out_norm: group_norm(cout, vb.pp("out_layers").pp(0))?,
            out_conv: conv3x3(cout, cout, vb.pp("out_layers").pp(3))?,
            skip,
            resample,
            dropout,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        emb: &Tensor,
        rng: Option<&mut ChaCha8Rng>,
    ) -> candle::Result<Tensor> {
        // 1. in_layers, resampling h and x between the activation and the conv.
        let h = self.in_norm.forward_silu(xs)?;
        let h = self.in_conv.forward(&self.resample.apply(&h)?)?;
        let xs = self.resample.apply(xs)?;
        // 2. scale-shift from the noise-level embedding: (b, 2c) -> 2 × (b, c), applied as
        //    out_norm(h)·(1 + scale) + shift (folded into the norm's affine).
        let e = self.emb.forward(&emb.silu()?)?;
        let c = e.dim(1)? / 2;
        let (scale, shift) = (e.narrow(1, 0, c)?, e.narrow(1, c, c)?);
        // 3. out_layers rest: SiLU → dropout (both fused into the norm) → conv. Training draws
        //    the dropout mask's seed from `rng`.
        let dropout = match rng {
            Some(rng) if self.dropout > 0.0 => Some(Dropout {
                p: self.dropout,
                seed: rng.next_u64(),
            }),
            _ => None,
        };
        let h = self
            .out_norm
            .forward_scale_shift(&h, &scale, &shift, true, dropout)?;
        let h = self.out_conv.forward(&h)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(&xs)?,
            None => xs,
        };
        skip + h
    }
}

/// Self-attention over spatial positions with head dim 32, legacy QKV order.
#[derive(Debug, Clone)]
struct Attention {
    norm: GroupNorm,
    qkv: Pointwise,
    proj: Pointwise,
    heads: usize,
}

/// A kernel-1 Conv1d (`weight` (out, in, 1) and `bias`, the official names and shapes) computed
/// as a matrix product. Not `candle_nn::Conv1d`: in candle 0.11 the CPU backward of conv1d with
/// respect to its input is wrong beyond a few channels (its conv_transpose1d; 64→64 channels
/// over 16 positions is off by up to 38 absolute against the analytic gradient), which corrupts
/// every gradient upstream of the attention block.
#[derive(Debug, Clone)]
struct Pointwise {
    weight: Tensor,
    bias: Tensor,
}

impl Pointwise {
    fn new(vb: VarBuilder, c_in: usize, c_out: usize) -> candle::Result<Self> {
        let bound = 1.0 / (c_in as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((c_out, c_in, 1), "weight", init)?,
            bias: vb.get_with_hints(c_out, "bias", init)?,
        })
    }

    /// (b, in, t) -> (b, out, t)
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        let (b, _, _) = xs.dims3()?;
        let (c_out, c_in, _) = self.weight.dims3()?;
        let w = self
            .weight
            .reshape((1, c_out, c_in))?
            .broadcast_as((b, c_out, c_in))?;
        w.contiguous()?
            .matmul(&xs.contiguous()?)?
            .broadcast_add(&self.bias.reshape((1, c_out, 1))?)
    }
}

impl Attention {
    fn new(vb: VarBuilder, ch: usize) -> candle::Result<Self> {
        Ok(Self {
            norm: group_norm(ch, vb.pp("norm"))?,
            qkv: Pointwise::new(vb.pp("qkv"), ch, 3 * ch)?,
            proj: Pointwise::new(vb.pp("proj_out"), ch, ch)?,
            heads: ch / 32,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let t = h * w;
        // (b, c, h, w) -> (b, 3c, t)
        let qkv = self
            .qkv
            .forward(&self.norm.forward(xs)?.reshape((b, c, t))?)?;
        let hd = c / self.heads;
        // legacy order: (b, 3c, t) -> (b·heads, 3·hd, t), then split q, k, v
        let qkv = qkv.reshape((b * self.heads, 3 * hd, t))?;
        let scale = 1.0 / (hd as f64).sqrt().sqrt();
        let q = (qkv.narrow(1, 0, hd)? * scale)?;
        let k = (qkv.narrow(1, hd, hd)? * scale)?;
        let v = qkv.narrow(1, 2 * hd, hd)?;
        // weights (b·heads, t, s) = qᵀ k, softmax over s
        let weights = q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)?;
        let weights = candle_nn::ops::softmax(&weights, D::Minus1)?;
        // (b·heads, hd, t) = v · weightsᵀ
        let a = v
            .contiguous()?
            .matmul(&weights.transpose(1, 2)?.contiguous()?)?;
        let out = self.proj.forward(&a.reshape((b, c, t))?)?;
        xs + out.reshape((b, c, h, w))?
    }
}

#[derive(Debug, Clone)]
enum Block {
    Conv(ConvLayer),
    Res(Box<ResBlock>),
}

/// The conditional ε-prediction network.
#[derive(Debug, Clone)]
pub struct DiffusionUNet {
    emb1: Linear,
    emb2: Linear,
    emb_in: usize,
    input_blocks: Vec<Block>,
    middle: (ResBlock, Option<Attention>, ResBlock),
    output_blocks: Vec<(ResBlock, Option<ResBlock>)>,
    out_norm: GroupNorm,
    out_conv: ConvLayer,
    multiple: usize,
}

impl DiffusionUNet {
    /// 9 input channels (y_t and two 3-channel conditions), 3 output channels (ε).
    /// ~100 lines: the official UNet's layer list in its order (input blocks, middle, output
    /// blocks), whose variable names are the checkpoint keys.
    pub fn new(vb: VarBuilder, cfg: &DiffusionConfig) -> candle::Result<Self> {
        let inner = cfg.channels[0];
        let emb_dim = 4 * inner;
        let emb1 = candle_nn::linear(inner, emb_dim, vb.pp("cond_embed").pp(0))?;
        let emb2 = candle_nn::linear(emb_dim, emb_dim, vb.pp("cond_embed").pp(2))?;
        let levels = cfg.channels.len();
        // 1. Encoder.
        let vbi = vb.pp("input_blocks");
        let mut input_blocks = vec![Block::Conv(conv3x3(9, inner, vbi.pp(0).pp(0))?)];
        let mut skip_chans = vec![inner];
        let mut ch = inner;
        for (level, &out) in cfg.channels.iter().enumerate() {
            for _ in 0..cfg.res_blocks {
                let idx = input_blocks.len();
                let rb = ResBlock::new(
                    vbi.pp(idx).pp(0),
                    ch,
                    out,
                    emb_dim,
                    Resample::None,
                    cfg.dropout,
                )?;
                input_blocks.push(Block::Res(Box::new(rb)));
                ch = out;
                skip_chans.push(ch);
            }
            if level + 1 < levels {
                let idx = input_blocks.len();
                let rb = ResBlock::new(
                    vbi.pp(idx).pp(0),
                    ch,
                    ch,
                    emb_dim,
                    Resample::Down,
                    cfg.dropout,
                )?;
                input_blocks.push(Block::Res(Box::new(rb)));
                skip_chans.push(ch);
            }
        }
        // 2. Middle.
        let vbm = vb.pp("middle_block");
        let attn_idx = usize::from(cfg.attention);
        let middle = (
            ResBlock::new(vbm.pp(0), ch, ch, emb_dim, Resample::None, cfg.dropout)?,
            if cfg.attention {
                Some(Attention::new(vbm.pp(1), ch)?)
            } else {
                None
            },
            ResBlock::new(
                vbm.pp(1 + attn_idx),
                ch,
                ch,
                emb_dim,
                Resample::None,
                cfg.dropout,
            )?,
        );
        // 3. Decoder: each ResBlock takes its skip; the last of a level (but level 0) upsamples.
        let vbo = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for (level, &out) in cfg.channels.iter().enumerate().rev() {
            for i in 0..=cfg.res_blocks {
                let idx = output_blocks.len();
                let skip = skip_chans.pop().expect("one skip per encoder block");
                let rb = ResBlock::new(
                    vbo.pp(idx).pp(0),
                    ch + skip,
                    out,
                    emb_dim,
                    Resample::None,
                    cfg.dropout,
                )?;
                ch = out;
                let up = if level > 0 && i == cfg.res_blocks {
                    Some(ResBlock::new(
                        vbo.pp(idx).pp(1),
                        ch,
                        ch,
                        emb_dim,
                        Resample::Up,
                        cfg.dropout,
                    )?)
                } else {
                    None
                };
                output_blocks.push((rb, up));
            }
        }
        Ok(Self {
            emb1,
            emb2,
            emb_in: inner,
            input_blocks,
            middle,
            output_blocks,
            out_norm: group_norm(ch, vb.pp("out").pp(0))?,
            out_conv: conv3x3(ch, 3, vb.pp("out").pp(2))?,
            multiple: cfg.multiple(),
        })
    }

    pub fn multiple(&self) -> usize {
        self.multiple
    }

    /// ε̂ for `xs` (b, 9, h, w) at noise levels `gammas` (b,). `rng` enables dropout (training).
    pub fn forward(
        &self,
        xs: &Tensor,
        gammas: &Tensor,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> candle::Result<Tensor> {
        // 1. Noise-level embedding: (b,) -> (b, 4·inner)
        let emb = gamma_embedding(gammas, self.emb_in)?;
        let emb = self.emb2.forward(&self.emb1.forward(&emb)?.silu()?)?;
        // 2. Encoder, keeping every block's output as a skip.
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = xs.clone();
        for block in &self.input_blocks {
            h = match block {
                Block::Conv(conv) => conv.forward(&h)?,
                Block::Res(rb) => rb.forward(&h, &emb, rng.as_deref_mut())?,
            };
            skips.push(h.clone());
        }
        // 3. Middle.
        h = self.middle.0.forward(&h, &emb, rng.as_deref_mut())?;
        if let Some(attn) = &self.middle.1 {
            h = attn.forward(&h)?;
        }
        h = self.middle.2.forward(&h, &emb, rng.as_deref_mut())?;
        // 4. Decoder.
        for (rb, up) in &self.output_blocks {
            let skip = skips.pop().expect("one skip per decoder block");
            h = rb.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb, rng.as_deref_mut())?;
            if let Some(up) = up {
                h = up.forward(&h, &emb, rng.as_deref_mut())?;
            }
        }
        // 5. Head: (b, inner, h, w) -> (b, 3, h, w)
        self.out_conv.forward(&self.out_norm.forward_silu(&h)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device};
    use candle_nn::VarMap;

    /// Autograd against central differences in f64 for a few elements of every bias of a small
    /// net with attention and both resampling blocks. Guards against backward bugs in the
    /// backend ops the net uses (two were found in candle 0.11: nearest upsampling and conv1d).
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
        let cfg = DiffusionConfig {
            channels: vec![32, 64],
            res_blocks: 1,
            attention: true,
            dropout: 0.0,
        };
        let net = DiffusionUNet::new(vb, &cfg).unwrap();
        crate::model::init_weights(&varmap, "", 1, 0).unwrap();
        // Non-zero biases, so that every path carries signal.
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with(".bias") {
                var.set(&(Tensor::randn(0f64, 0.1, var.dims(), &dev).unwrap()))
                    .unwrap();
            }
        }
        let xs = Tensor::randn(0f64, 1.0, (2, 9, 8, 8), &dev).unwrap();
        let gammas = Tensor::new(&[0.9f64, 0.2], &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (2, 3, 8, 8), &dev).unwrap();
        let loss = || {
            (net.forward(&xs, &gammas, None).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let out = (net.forward(&xs, &gammas, None).unwrap() * &w).unwrap();
        let grads = out.sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap().clone();
        let mut checked = 0;
        for (name, var) in data.iter().filter(|(n, _)| n.ends_with(".bias")) {
            let ag = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"))
                .to_vec1::<f64>()
                .unwrap();
            let base = var.as_tensor().copy().unwrap();
            for i in 0..ag.len().min(3) {
                let mut v = base.to_vec1::<f64>().unwrap();
                let h = 1e-5;
                v[i] += h;
                var.set(&Tensor::new(v.as_slice(), &dev).unwrap()).unwrap();
                let lp = loss();
                v[i] -= 2.0 * h;
                var.set(&Tensor::new(v.as_slice(), &dev).unwrap()).unwrap();
                let lm = loss();
                var.set(&base).unwrap();
                let fd = (lp - lm) / (2.0 * h);
                let err = (fd - ag[i]).abs() / fd.abs().max(1e-3);
                assert!(
                    err < 1e-5,
                    "{name}[{i}]: autograd {} vs finite difference {fd}",
                    ag[i]
                );
                checked += 1;
            }
        }
        assert!(checked > 40, "checked {checked} elements");
    }

    #[test]
    fn nearest_upsample_accumulates_gradient_from_every_use() {
        let dev = Device::Cpu;
        let x = candle::Var::new(&[[[[1f32, 2.], [3., 4.]]]], &dev).unwrap();
        // x feeds the upsample and, directly, a second term: both gradients must add up.
        let up = upsample_nearest2x(x.as_tensor()).unwrap();
        assert_eq!(up.dims(), &[1, 1, 4, 4]);
        assert_eq!(
            up.flatten_all().unwrap().to_vec1::<f32>().unwrap()[..4],
            [1., 1., 2., 2.]
        );
        let loss =
            (up.sum_all().unwrap() + (x.as_tensor() * 3.0).unwrap().sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), [7f32; 4]);
    }
}
