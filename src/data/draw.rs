//! The random draws every degradation recipe shares: a per-image parameter from a range, and
//! Gaussian noise. All from a caller-provided seeded RNG.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::Image;

/// A value uniform in [lo, hi] (lo itself when the range is empty): how every recipe draws
/// its per-image parameters.
pub fn draw(rng: &mut impl Rng, [lo, hi]: [f32; 2]) -> f32 {
    if hi > lo {
        rng.gen_range(lo..=hi)
    } else {
        lo
    }
}

/// Adds N(0, σ²) noise (σ in [0, 1] units) to every sample, unclipped.
pub fn add_gaussian(rng: &mut impl Rng, img: &mut Image, sigma: f32) {
    if sigma <= 0.0 {
        return;
    }
    let normal = Normal::new(0f32, sigma).expect("sigma is finite and positive");
    for v in img.data.iter_mut() {
        *v += normal.sample(rng);
    }
}
