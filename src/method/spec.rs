//! The method and loss sections of a job spec (owned here): which objective trains the
//! restorer and the weights of its terms.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Charbonnier on the synthetic pairs only.
    #[default]
    Vanilla,
    /// Denoising as Adaptation: + λ·diffusion loss conditioned on the restored synthetic and
    /// real images, with channel shuffle and the residual-swap hinge.
    NoiseDa,
    /// The paper's extension ("Ours-Ex"): the diffusion target is an unpaired clean image, no
    /// contrastive term.
    NoiseDaUnpaired,
}

impl Method {
    pub fn uses_diffusion(self) -> bool {
        !matches!(self, Method::Vanilla)
    }
}

/// What the residual-swap hinge compares.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Hinge {
    /// `relu(mean MSE_pos − mean MSE_neg + δ)` over the batch (the official code).
    #[default]
    Batch,
    /// `mean_i relu(MSE_pos,i − MSE_neg,i + δ)`: stays active while any sample violates it.
    Sample,
}

/// Which restored images fill the diffusion network's two condition slots.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Conditions {
    /// Synthetic and real (the method).
    #[default]
    Both,
    /// Only the synthetic output, in both slots (ablation).
    Synthetic,
    /// Only the real output, in both slots (ablation).
    Real,
}

/// The diffusion network: a preset or explicit sizes, and the noise schedule.

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    /// Charbonnier ε (the square is added inside the root).
    #[serde(default = "default_charbonnier_eps")]
    pub charbonnier_eps: f64,
    /// λ_max of the diffusion loss: λ = diffusion_weight·tanh(2.5·p).
    #[serde(default = "default_diffusion_weight")]
    pub diffusion_weight: f64,
    /// Steps over which p ramps from 0 to 1 (the official code: 300 epochs).
    #[serde(default = "default_ramp_steps")]
    pub ramp_steps: u64,
    /// Steps with λ = 0 before the ramp starts (the diffusion net trains alone first).
    #[serde(default)]
    pub hold_steps: u64,
    /// Margin δ of the residual-swap hinge.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Whether the hinge compares batch-mean MSEs (the official code) or each sample's.
    #[serde(default)]
    pub hinge: Hinge,
    /// Per-sample swap of the two condition slots ("channel shuffle").
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// The residual-swap contrastive term (noise-da only).
    #[serde(default = "yes")]
    pub residual_swap: bool,
    /// Which restored images condition the diffusion network.
    #[serde(default)]
    pub conditions: Conditions,
    /// Integer timestep range [lo, hi] drawn per sample (1 ≤ lo ≤ hi < diffusion.timesteps).
    #[serde(default = "default_t_range")]
    pub t_range: [usize; 2],
}

fn yes() -> bool {
    true
}
fn default_diffusion_weight() -> f64 {
    0.2
}
fn default_ramp_steps() -> u64 {
    1000
}
fn default_margin() -> f64 {
    0.1
}
fn default_t_range() -> [usize; 2] {
    [1, 999]
}

fn default_charbonnier_eps() -> f64 {
    1e-3
}

impl Default for LossSpec {
    fn default() -> Self {
        Self {
            charbonnier_eps: default_charbonnier_eps(),
            diffusion_weight: default_diffusion_weight(),
            ramp_steps: default_ramp_steps(),
            hold_steps: 0,
            margin: default_margin(),
            hinge: Hinge::default(),
            shuffle: true,
            residual_swap: true,
            conditions: Conditions::default(),
            t_range: default_t_range(),
        }
    }
}
