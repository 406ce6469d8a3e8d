//! The diffusion noise schedule of the official code: linear β over `timesteps` steps (float64),
//! ᾱ = cumprod(1 − β), per-sample integer t and a continuous ᾱ drawn between ᾱ[t−1] and ᾱ[t].

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Schedule {
    /// ᾱ[i] = ∏_{j ≤ i} (1 − β_j), i = 0..timesteps.
    pub gammas: Vec<f64>,
}

impl Schedule {
    /// `make_beta_schedule('linear', n, lo, hi)`: β = linspace(lo, hi, n).
    pub fn linear(timesteps: usize, beta_lo: f64, beta_hi: f64) -> Self {
        let mut gammas = Vec::with_capacity(timesteps);
        let mut acc = 1.0f64;
        for i in 0..timesteps {
            let beta = if timesteps == 1 {
                beta_lo
            } else {
                beta_lo + (beta_hi - beta_lo) * i as f64 / (timesteps - 1) as f64
            };
            acc *= 1.0 - beta;
            gammas.push(acc);
        }
        Self { gammas }
    }

    /// t ~ U{lo..=hi} (1 ≤ lo ≤ hi < timesteps), then ᾱ = ᾱ[t−1] + (ᾱ[t] − ᾱ[t−1])·U(0, 1).
    pub fn sample_gamma(&self, rng: &mut impl Rng, t_range: [usize; 2]) -> f64 {
        let t = rng.gen_range(t_range[0]..=t_range[1]);
        let (lo, hi) = (self.gammas[t - 1], self.gammas[t]);
        lo + (hi - lo) * rng.gen::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_values() {
        // method.md §2.3: ᾱ[0]=0.999999, ᾱ[100]=0.9506, ᾱ[500]=0.2847, ᾱ[999]=0.006623.
        let s = Schedule::linear(1000, 1e-6, 1e-2);
        for (i, v, tol) in [
            (0, 0.999999, 1e-9),
            (100, 0.9506, 1e-4),
            (500, 0.2847, 1e-4),
            (999, 0.006623, 1e-6),
        ] {
            assert!((s.gammas[i] - v).abs() < tol, "ᾱ[{i}] = {}", s.gammas[i]);
        }
        let mut rng = rand::rngs::mock::StepRng::new(0, 1 << 40);
        let g = s.sample_gamma(&mut rng, [1, 999]);
        assert!((s.gammas[999]..=s.gammas[0]).contains(&g));
    }
}
