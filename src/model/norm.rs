//! Fused CPU GroupNorm: per-sample affine (the diffusion net's scale-shift folds into it), an
//! optional SiLU and dropout, with an analytic backward. candle's generic version spends much of a joint
//! step in many-pass elementwise ops and strided multi-axis reductions of broadcast gradients.

use candle::{CpuStorage, CustomOp3, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::{cpu_f32, on_cpu_f32};

/// Group statistics of one sample: mean and 1/sqrt(var + eps) per group.
fn stats(x: &[f32], groups: usize, eps: f64) -> Vec<(f32, f32)> {
    let n = x.len() / groups;
    x.chunks(n)
        .map(|g| {
            let mean = g.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = g.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
        })
        .collect()
}

/// Inverted dropout fused after the activation. Its mask is regenerated from `seed` (sample i
/// is Philox stream i, element e its 16 bits e, [`super::philox::half`]) in the forward and in
/// the backward, so no mask is stored, the draw is the same however the work is scheduled, and
/// the CUDA kernels draw the same bits from the same counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub p: f64,
    pub seed: u64,
}

impl Dropout {
    /// 16-bit draws below this are dropped: round(p·2¹⁶) (at most 2¹⁶ − 1), so the rate is p
    /// within 2⁻¹⁷.
    pub fn threshold(&self) -> u32 {
        (self.p * 65_536.0).round().min(65_535.0) as u32
    }

    /// Multipliers of sample `i`'s `n` values: 0 with probability p, else 1/(1 − p).
    pub fn mask(&self, i: usize, n: usize) -> Vec<f32> {
        let threshold = self.threshold();
        let keep = (1.0 / (1.0 - self.p)) as f32;
        super::philox::fill_halves(self.seed, i as u32, n)
            .into_iter()
            .map(|u| if (u as u32) < threshold { 0.0 } else { keep })
            .collect()
    }
}

/// GroupNorm with per-sample affine, optionally followed by SiLU and dropout: x (b, c, h, w),
/// gamma and beta (b, c).
#[derive(Debug, Clone, Copy)]
struct GroupNormAffine {
    groups: usize,
    eps: f64,
    silu: bool,
    dropout: Option<Dropout>,
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// d silu(v) / dv.
fn silu_grad(v: f32) -> f32 {
    let s = 1.0 / (1.0 + (-v).exp());
    s * (1.0 + v * (1.0 - s))
}

impl CustomOp3 for GroupNormAffine {
    fn name(&self) -> &'static str {
        "noiseda-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let x = cpu_f32(s1, l1, "input")?;
        let (gamma, beta) = (cpu_f32(s2, l2, "gamma")?, cpu_f32(s3, l3, "beta")?);
        let (hw, cg) = (h * w, c / self.groups);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(c * hw)
            .zip(x.par_chunks(c * hw))
            .enumerate()
            .for_each(|(i, (o, xi))| {
                let st = stats(xi, self.groups, self.eps);
                for ch in 0..c {
                    let (mean, rstd) = st[ch / cg];
                    let (gm, bt) = (gamma[i * c + ch], beta[i * c + ch]);
                    let (a, k) = (rstd * gm, bt - mean * rstd * gm);
                    let (o, xs) = (&mut o[ch * hw..(ch + 1) * hw], &xi[ch * hw..(ch + 1) * hw]);
                    if self.silu {
                        o.iter_mut()
                            .zip(xs)
                            .for_each(|(o, &x)| *o = silu(x * a + k));
                    } else {
                        o.iter_mut().zip(xs).for_each(|(o, &x)| *o = x * a + k);
                    }
                }
                if let Some(d) = self.dropout {
                    o.iter_mut()
                        .zip(d.mask(i, c * hw))
                        .for_each(|(o, m)| *o *= m);
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c, h, w) = x.dims4()?;
        let n = b * c * h * w;
        // The SiLU's gradient needs the pre-activation, which depends on beta: pass it packed
        // with gamma as (2, b, c).
        let gb = Tensor::stack(&[gamma.contiguous()?, beta.contiguous()?], 0)?;
        let packed = x.apply_op3_no_bwd(
            &gb,
            &grad.contiguous()?,
            &GroupNormBackward {
                groups: self.groups,
                eps: self.eps,
                silu: self.silu,
                dropout: self.dropout,
            },
        )?;
        let dx = packed.narrow(0, 0, n)?.reshape((b, c, h, w))?;
        let dgamma = packed.narrow(0, n, b * c)?.reshape((b, c))?;
        let dbeta = packed.narrow(0, n + b * c, b * c)?.reshape((b, c))?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Gradients of [`GroupNormAffine`] packed into one vector: dx, then dgamma and dbeta (b, c).
/// Inputs: x, gamma and beta stacked (2, b, c), grad.
#[derive(Debug, Clone, Copy)]
struct GroupNormBackward {
    groups: usize,
    eps: f64,
    silu: bool,
    dropout: Option<Dropout>,
}

impl CustomOp3 for GroupNormBackward {
    fn name(&self) -> &'static str {
        "noiseda-group-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let x = cpu_f32(s1, l1, "input")?;
        let (gb, grad) = (cpu_f32(s2, l2, "gamma")?, cpu_f32(s3, l3, "grad")?);
        let (gamma, beta) = gb.split_at(b * c);
        let (hw, cg) = (h * w, c / self.groups);
        let per: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..b)
            .into_par_iter()
            .map(|i| {
                let xi = &x[i * c * hw..(i + 1) * c * hw];
                let st = stats(xi, self.groups, self.eps);
                // Through the dropout and the SiLU first: g·mask·silu'(x̂·γ + β).
                let through;
                let gi = if self.silu || self.dropout.is_some() {
                    let mut v = grad[i * c * hw..(i + 1) * c * hw].to_vec();
                    if let Some(d) = self.dropout {
                        v.iter_mut()
                            .zip(d.mask(i, c * hw))
                            .for_each(|(g, m)| *g *= m);
                    }
                    for ch in (0..c).filter(|_| self.silu) {
                        let (mean, rstd) = st[ch / cg];
                        let (gm, bt) = (gamma[i * c + ch], beta[i * c + ch]);
                        for (g, &xv) in v[ch * hw..(ch + 1) * hw]
                            .iter_mut()
                            .zip(&xi[ch * hw..(ch + 1) * hw])
                        {
                            *g *= silu_grad((xv - mean) * rstd * gm + bt);
                        }
                    }
                    through = v;
                    &through[..]
                } else {
                    &grad[i * c * hw..(i + 1) * c * hw]
                };
                let (mut dg, mut db) = (vec![0f32; c], vec![0f32; c]);
                // Per channel: Σ g and Σ g·x̂.
                for ch in 0..c {
                    let (mean, rstd) = st[ch / cg];
                    let (mut sg, mut sgx) = (0f64, 0f64);
                    for (&xv, &gv) in xi[ch * hw..(ch + 1) * hw]
                        .iter()
                        .zip(&gi[ch * hw..(ch + 1) * hw])
                    {
                        sg += gv as f64;
                        sgx += (gv * (xv - mean) * rstd) as f64;
                    }
                    db[ch] = sg as f32;
                    dg[ch] = sgx as f32;
                }
                // dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)), dx̂ = g·γ, means over the group.
                let m = (cg * hw) as f32;
                let mut dx = vec![0f32; c * hw];
                for (grp, &(mean, rstd)) in st.iter().enumerate() {
                    let chans = grp * cg..(grp + 1) * cg;
                    let s1: f32 = chans.clone().map(|ch| gamma[i * c + ch] * db[ch]).sum();
                    let s2: f32 = chans.clone().map(|ch| gamma[i * c + ch] * dg[ch]).sum();
                    let (m1, m2) = (s1 / m, s2 / m);
                    for ch in chans {
                        let gm = gamma[i * c + ch];
                        for ((d, &xv), &gv) in dx[ch * hw..(ch + 1) * hw]
                            .iter_mut()
                            .zip(&xi[ch * hw..(ch + 1) * hw])
                            .zip(&gi[ch * hw..(ch + 1) * hw])
                        {
                            let xh = (xv - mean) * rstd;
                            *d = rstd * (gv * gm - m1 - xh * m2);
                        }
                    }
                }
                (dx, dg, db)
            })
            .collect();
        let mut out = Vec::with_capacity(b * c * hw + 2 * b * c);
        for (dx, _, _) in &per {
            out.extend_from_slice(dx);
        }
        for (_, dg, _) in &per {
            out.extend_from_slice(dg);
        }
        for (_, _, db) in &per {
            out.extend_from_slice(db);
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// GroupNorm (official names `weight`, `bias`; eps 1e-5) that can fold a per-sample
/// scale-shift into its affine.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(vb: VarBuilder, groups: usize, channels: usize) -> candle::Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle::bail!("GroupNorm: {channels} channels do not split into {groups} groups")
        }
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?,
            groups,
            eps: 1e-5,
        })
    }

    /// norm(x)·(1 + scale) + shift with scale and shift (b, c): the diffusion ResBlock's
    /// scale-shift conditioning, folded into the affine; then SiLU when `silu`, then
    /// `dropout`.
    pub fn forward_scale_shift(
        &self,
        xs: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        silu: bool,
        dropout: Option<Dropout>,
    ) -> candle::Result<Tensor> {
        let one_plus = (scale + 1.0)?;
        let gamma = one_plus.broadcast_mul(&self.weight.unsqueeze(0)?)?;
        let beta = (one_plus.broadcast_mul(&self.bias.unsqueeze(0)?)? + shift)?;
        self.affine(xs, &gamma, &beta, silu, dropout)
    }

    /// silu(norm(x)): the GroupNorm → SiLU pair of the diffusion ResBlocks, fused.
    pub fn forward_silu(&self, xs: &Tensor) -> candle::Result<Tensor> {
        let (gamma, beta) = self.plain_affine(xs)?;
        self.affine(xs, &gamma, &beta, true, None)
    }

    /// The layer's own affine as per-sample (b, c) tensors.
    fn plain_affine(&self, xs: &Tensor) -> candle::Result<(Tensor, Tensor)> {
        let b = xs.dim(0)?;
        let c = self.weight.dim(0)?;
        Ok((
            self.weight.unsqueeze(0)?.broadcast_as((b, c))?,
            self.bias.unsqueeze(0)?.broadcast_as((b, c))?,
        ))
    }

    fn affine(
        &self,
        xs: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        silu: bool,
        dropout: Option<Dropout>,
    ) -> candle::Result<Tensor> {
        if on_cpu_f32(&[xs, gamma, beta]) {
            return xs.contiguous()?.apply_op3(
                &gamma.contiguous()?,
                &beta.contiguous()?,
                GroupNormAffine {
                    groups: self.groups,
                    eps: self.eps,
                    silu,
                    dropout,
                },
            );
        }
        // Reference path (other devices and dtypes): candle ops.
        let (b, c, h, w) = xs.dims4()?;
        let x = xs.reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = x.mean_keepdim(2)?;
        let x = x.broadcast_sub(&mean)?;
        let var = x.sqr()?.mean_keepdim(2)?;
        let x = x
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .reshape((b, c, h, w))?;
        let y = x
            .broadcast_mul(&gamma.reshape((b, c, 1, 1))?)?
            .broadcast_add(&beta.reshape((b, c, 1, 1))?)?;
        let y = if silu { y.silu()? } else { y };
        match dropout {
            Some(d) => {
                let n = c * h * w;
                let mask: Vec<f32> = (0..b).flat_map(|i| d.mask(i, n)).collect();
                let mask = Tensor::from_vec(mask, (b, c, h, w), y.device())?.to_dtype(y.dtype())?;
                y * mask
            }
            None => Ok(y),
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        let (gamma, beta) = self.plain_affine(xs)?;
        self.affine(xs, &gamma, &beta, false, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_rel;
    use candle::{DType, Device, Var};

    #[test]
    fn dropout_mask_drops_a_fraction_p_keeps_the_mean_and_repeats() {
        let d = Dropout { p: 0.2, seed: 9 };
        let m = d.mask(3, 100_000);
        let zeros = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!((zeros - 0.2).abs() < 0.01, "{zeros}");
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        assert_eq!(m, d.mask(3, 100_000));
        assert_ne!(m, d.mask(4, 100_000));
    }

    /// The fused ops against the candle-op reference path (f64), values and every gradient.
    #[test]
    fn fused_group_norm_and_bias_match_candle_ops() {
        let dev = Device::Cpu;
        for &(b, c, h, w, groups) in &[(2, 8, 5, 7, 4), (1, 6, 3, 3, 3), (3, 64, 4, 4, 32)] {
            let varmap = candle_nn::VarMap::new();
            let gn = GroupNorm::new(
                VarBuilder::from_varmap(&varmap, DType::F32, &dev),
                groups,
                c,
            )
            .unwrap();
            for v in varmap.all_vars() {
                v.set(&Tensor::randn(0.5f32, 0.3, v.dims(), &dev).unwrap())
                    .unwrap();
            }
            let x = Var::from_tensor(
                &(Tensor::randn(0f32, 2., (b, c, h, w), &dev).unwrap() + 0.7).unwrap(),
            )
            .unwrap();
            let scale = Var::from_tensor(&Tensor::randn(0f32, 0.5, (b, c), &dev).unwrap()).unwrap();
            let shift = Var::from_tensor(&Tensor::randn(0f32, 0.5, (b, c), &dev).unwrap()).unwrap();
            let bias = Var::from_tensor(&Tensor::randn(0f32, 1., c, &dev).unwrap()).unwrap();
            let proj = Tensor::randn(0f32, 1., (b, c, h, w), &dev).unwrap();
            let run = |fast: bool| {
                let f64s = |t: &Tensor| {
                    if fast {
                        t.clone()
                    } else {
                        t.to_dtype(DType::F64).unwrap()
                    }
                };
                let gn = GroupNorm {
                    weight: f64s(&gn.weight),
                    bias: f64s(&gn.bias),
                    groups,
                    eps: 1e-5,
                };
                let (xv, sc, sh) = (
                    f64s(x.as_tensor()),
                    f64s(scale.as_tensor()),
                    f64s(shift.as_tensor()),
                );
                let y = gn.forward_scale_shift(&xv, &sc, &sh, false, None).unwrap();
                let drop = Some(Dropout { p: 0.3, seed: 5 });
                let y_silu = gn.forward_scale_shift(&xv, &sc, &sh, true, drop).unwrap();
                // Every variant in one loss, with different weights so none can cancel.
                let y = (y
                    .broadcast_mul(&f64s(&bias.as_tensor().reshape((1, c, 1, 1)).unwrap()))
                    .unwrap()
                    + gn.forward(&xv).unwrap()
                    + (y_silu * 0.7).unwrap()
                    + (gn.forward_silu(&xv).unwrap() * 1.3).unwrap())
                .unwrap();
                let loss = (y.to_dtype(DType::F32).unwrap() * &proj)
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let grads = loss.backward().unwrap();
                let mut out = vec![y.to_dtype(DType::F32).unwrap()];
                let mut vars = vec![x.clone(), scale.clone(), shift.clone(), bias.clone()];
                vars.extend(varmap.all_vars());
                for v in &vars {
                    out.push(
                        grads
                            .get(v.as_tensor())
                            .unwrap()
                            .to_dtype(DType::F32)
                            .unwrap(),
                    );
                }
                out
            };
            let (fast, slow) = (run(true), run(false));
            for (k, (a, r)) in fast.iter().zip(&slow).enumerate() {
                let e = max_rel(a, r);
                assert!(
                    e < 1e-4,
                    "b{b} c{c} {h}x{w} g{groups}: output/grad #{k} off by {e}"
                );
            }
        }
    }
}
