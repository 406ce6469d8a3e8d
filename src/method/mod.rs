//! Training objectives: what one step computes from a batch. `vanilla` is Charbonnier on the
//! synthetic pairs; `noise-da` and `noise-da-unpaired` add the diffusion loss of Denoising as
//! Adaptation (method.md §6.3).

pub mod loss;
pub mod schedule;
pub mod spec;

use candle::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::Batch;
use crate::model::spec::DiffusionSpec;
use crate::model::{DiffusionUNet, Restorer};
use schedule::Schedule;
use spec::{Conditions, Hinge, LossSpec, Method};

/// The networks a step uses.
#[derive(Clone, Copy)]
pub struct Nets<'a> {
    pub restorer: &'a Restorer,
    pub diffusion: Option<&'a DiffusionUNet>,
}

/// Settings of the joint step.
#[derive(Debug, Clone)]
pub struct Joint {
    /// Diffusion target: the paired synthetic GT (false) or an unpaired clean image (true).
    pub unpaired: bool,
    pub charbonnier_eps: f64,
    pub weight: f64,
    pub ramp_steps: u64,
    pub hold_steps: u64,
    pub margin: f64,
    pub hinge: Hinge,
    pub shuffle: bool,
    pub residual_swap: bool,
    pub conditions: Conditions,
    pub t_range: [usize; 2],
    pub schedule: Schedule,
}

impl Joint {
    /// λ at `step`: 0 before `hold_steps`, then weight·tanh(2.5·p) with
    /// p = min((step − hold_steps) / ramp_steps, 1) (official `(2/(1+exp(−5p)) − 1)·0.2`,
    /// there per epoch, without a hold).
    pub fn lambda(&self, step: u64) -> f64 {
        if step < self.hold_steps {
            return 0.0;
        }
        let step = step - self.hold_steps;
        let p = if self.ramp_steps == 0 {
            1.0
        } else {
            (step as f64 / self.ramp_steps as f64).min(1.0)
        };
        self.weight * (2.5 * p).tanh()
    }
}

/// The objective of a job, built once from its spec.
#[derive(Debug, Clone)]
pub enum Objective {
    Vanilla { charbonnier_eps: f64 },
    Joint(Box<Joint>),
}

/// One step's loss and the scalars to log (name, value tensor).
pub struct StepOutput {
    pub loss: Tensor,
    pub scalars: Vec<(&'static str, Tensor)>,
}

/// Per-sample swap of two condition slots: where `mask` is 1 the slots trade places. Blends
/// rather than indexes, so gradients reach both inputs. `mask`: (b, 1, 1, 1) of 0/1.
pub fn swap_slots(a: &Tensor, b: &Tensor, mask: &Tensor) -> candle::Result<(Tensor, Tensor)> {
    let keep = mask.affine(-1.0, 1.0)?;
    let first = (a.broadcast_mul(&keep)? + b.broadcast_mul(mask)?)?;
    let second = (b.broadcast_mul(&keep)? + a.broadcast_mul(mask)?)?;
    Ok((first, second))
}

impl Objective {
    /// The objective of a job spec's `method`, `loss` and `diffusion` sections.
    pub fn from_spec(method: Method, l: &LossSpec, d: &DiffusionSpec) -> crate::Result<Self> {
        Ok(match method {
            Method::Vanilla => Self::Vanilla {
                charbonnier_eps: l.charbonnier_eps,
            },
            Method::NoiseDa | Method::NoiseDaUnpaired => {
                let unpaired = method == Method::NoiseDaUnpaired;
                Self::Joint(Box::new(Joint {
                    unpaired,
                    charbonnier_eps: l.charbonnier_eps,
                    weight: l.diffusion_weight,
                    ramp_steps: l.ramp_steps,
                    hold_steps: l.hold_steps,
                    margin: l.margin,
                    hinge: l.hinge,
                    shuffle: l.shuffle,
                    // The extension has no contrastive term (official diff_flag 2).
                    residual_swap: l.residual_swap && !unpaired,
                    conditions: l.conditions,
                    t_range: l.t_range,
                    schedule: Schedule::linear(d.timesteps, d.beta[0], d.beta[1]),
                }))
            }
        })
    }

    /// Forward pass and loss for one batch already on the training device. `rng` draws this
    /// step's diffusion randomness (t, ᾱ, ε, shuffle masks, dropout).
    pub fn step(
        &self,
        nets: Nets,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
    ) -> candle::Result<StepOutput> {
        match self {
            Self::Vanilla { charbonnier_eps } => {
                let restored = nets.restorer.restore(&batch.lq, true)?;
                let loss = loss::charbonnier(&restored, &batch.gt, *charbonnier_eps)?;
                Ok(StepOutput {
                    scalars: vec![("charbonnier", loss.clone())],
                    loss,
                })
            }
            Self::Joint(j) => joint_step(j, nets, batch, rng),
        }
    }
}

/// Uniform 0/1 draws as a (b, 1, 1, 1) mask; all zero when `on` is false.
fn mask(rng: &mut ChaCha8Rng, b: usize, on: bool, dev: &Device) -> candle::Result<Tensor> {
    let m: Vec<f32> = (0..b)
        .map(|_| f32::from(u8::from(on && rng.gen::<f64>() > 0.5)))
        .collect();
    Tensor::from_vec(m, (b, 1, 1, 1), dev)
}

/// The random draws of one joint step, passed in explicitly so that a step can be replayed
/// (parity fixtures) or drawn from the step's RNG ([`Draws::sample`]).
#[derive(Debug, Clone)]
pub struct Draws {
    /// Continuous ᾱ per sample, (b,).
    pub gammas: Tensor,
    /// ε ~ N(0, I), the shape of the diffusion target.
    pub eps: Tensor,
    /// Slot-swap masks of the positive and negative pass, (b, 1, 1, 1) of 0/1.
    pub mask_pos: Tensor,
    pub mask_neg: Tensor,
}

impl Draws {
    /// Draws ᾱ (t uniform in `t_range`, then between ᾱ[t−1] and ᾱ[t]), ε and the two masks
    /// (all zero without shuffle) for a target of `shape` (b, c, h, w), in that order.
    pub fn sample(
        j: &Joint,
        shape: (usize, usize, usize, usize),
        dev: &Device,
        rng: &mut ChaCha8Rng,
    ) -> candle::Result<Self> {
        let (b, c, h, w) = shape;
        let gammas: Vec<f32> = (0..b)
            .map(|_| j.schedule.sample_gamma(rng, j.t_range) as f32)
            .collect();
        let noise: Vec<f32> = (0..b * c * h * w)
            .map(|_| StandardNormal.sample(rng))
            .collect();
        Ok(Self {
            gammas: Tensor::from_vec(gammas, b, dev)?,
            eps: Tensor::from_vec(noise, (b, c, h, w), dev)?,
            mask_pos: mask(rng, b, j.shuffle, dev)?,
            mask_neg: mask(rng, b, j.shuffle, dev)?,
        })
    }
}

/// method.md §6.3 with draws from `rng`; dropout masks come from `rng` after the draws.
fn joint_step(
    j: &Joint,
    nets: Nets,
    batch: &Batch,
    rng: &mut ChaCha8Rng,
) -> candle::Result<StepOutput> {
    let y0 = diffusion_target(j, batch)?;
    let draws = Draws::sample(j, y0.dims4()?, y0.device(), rng)?;
    joint_step_with(j, nets, batch, &draws, Some(rng))
}

/// The diffusion target y0: the synthetic GT, or the unpaired clean batch of the extension.
fn diffusion_target<'a>(j: &Joint, batch: &'a Batch) -> candle::Result<&'a Tensor> {
    if j.unpaired {
        batch.unpaired.as_ref().ok_or_else(|| {
            candle::Error::Msg("noise-da-unpaired needs an unpaired batch (data.unpaired)".into())
        })
    } else {
        Ok(&batch.gt)
    }
}

/// method.md §6.3 with explicit draws: restorer on both domains, noisy target, positive (and
/// negative) diffusion passes, hinge, λ-weighted sum with the Charbonnier loss. `dropout`
/// enables the diffusion net's dropout.
pub fn joint_step_with(
    j: &Joint,
    nets: Nets,
    batch: &Batch,
    draws: &Draws,
    mut dropout: Option<&mut ChaCha8Rng>,
) -> candle::Result<StepOutput> {
    let diffusion = nets
        .diffusion
        .ok_or_else(|| candle::Error::Msg("the joint step needs the diffusion network".into()))?;
    let x_r = batch.real.as_ref().ok_or_else(|| {
        candle::Error::Msg("the joint step needs a real batch (data.real)".into())
    })?;
    let (x_s, y_s) = (&batch.lq, &batch.gt);
    // 1. Restorer on both domains; residuals kept for the swap. Nothing is detached.
    let r_s = nets.restorer.residual(x_s, true)?;
    let r_r = nets.restorer.residual(x_r, true)?;
    let yh_s = (x_s + &r_s)?;
    let yh_r = (x_r + &r_r)?;
    let charbonnier = loss::charbonnier(&yh_s, y_s, j.charbonnier_eps)?;

    // 2. Noisy target y_t = sqrt(ᾱ)·y0 + sqrt(1 − ᾱ)·ε with per-sample continuous ᾱ.
    let y0 = diffusion_target(j, batch)?;
    let (b, _, _, _) = y0.dims4()?;
    let (gammas, eps) = (&draws.gammas, &draws.eps);
    let g4 = gammas.reshape((b, 1, 1, 1))?;
    let y_t =
        (y0.broadcast_mul(&g4.sqrt()?)? + eps.broadcast_mul(&g4.affine(-1.0, 1.0)?.sqrt()?)?)?;

    // 3. Positive pass: conditions (ŷ_s, ŷ_r), slots swapped per sample.
    let pick = |syn: &Tensor, real: &Tensor| match j.conditions {
        Conditions::Both => (syn.clone(), real.clone()),
        Conditions::Synthetic => (syn.clone(), syn.clone()),
        Conditions::Real => (real.clone(), real.clone()),
    };
    let (a0, b0) = pick(&yh_s, &yh_r);
    let (a, bb) = swap_slots(&a0, &b0, &draws.mask_pos)?;
    let eps_pos = diffusion.forward(
        &Tensor::cat(&[&y_t, &a, &bb], 1)?,
        gammas,
        dropout.as_deref_mut(),
    )?;
    let d_pos = loss::mse(&eps_pos, eps)?;
    let mut scalars = vec![
        ("charbonnier", charbonnier.clone()),
        ("d_pos", d_pos.clone()),
    ];

    // 4. Negative pass on residual-swapped conditions (x_s + R_r, x_r + R_s) and the hinge.
    let l_noise = if j.residual_swap {
        let (a0, b0) = pick(&(x_s + &r_r)?, &(x_r + &r_s)?);
        let (a, bb) = swap_slots(&a0, &b0, &draws.mask_neg)?;
        let eps_neg = diffusion.forward(&Tensor::cat(&[&y_t, &a, &bb], 1)?, gammas, dropout)?;
        let d_neg = loss::mse(&eps_neg, eps)?;
        let hinge = match j.hinge {
            Hinge::Batch => ((&d_pos - &d_neg)? + j.margin)?.relu()?,
            Hinge::Sample => {
                let pos = loss::mse_per_sample(&eps_pos, eps)?;
                let neg = loss::mse_per_sample(&eps_neg, eps)?;
                ((pos - neg)? + j.margin)?.relu()?.mean_all()?
            }
        };
        scalars.push(("d_neg", d_neg));
        scalars.push(("hinge", hinge.clone()));
        ((&d_pos + hinge)? * 0.5)?
    } else {
        d_pos
    };
    // 5. Total: Charbonnier + λ·L_noise.
    let lambda = j.lambda(batch.step);
    let dev = y0.device();
    let loss = (&charbonnier + (&l_noise * lambda)?)?;
    scalars.push(("l_noise", l_noise));
    scalars.push(("lambda", Tensor::new(lambda as f32, dev)?));
    scalars.push(("loss", loss.clone()));
    Ok(StepOutput { loss, scalars })
}
