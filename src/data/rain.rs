//! Synthetic rain for the deraining task: a layer of streaks (random seeds drawn as tapered
//! line segments at one angle per image with a small per-streak jitter), softened by a Gaussian
//! blur and screen-blended over the photo, as in the Rain100L/H-style synthesis.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::draw::draw;
use super::Image;
use crate::check::range_ok;

/// Ranges the rain recipe draws from (uniformly, once per image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RainStreaks {
    /// Streaks per pixel (light rain ≈ 0.002, heavy ≈ 0.01).
    #[serde(default = "default_density")]
    pub density: [f32; 2],
    /// Streak length in pixels.
    #[serde(default = "default_length")]
    pub length: [f32; 2],
    /// Angle from vertical in degrees.
    #[serde(default = "default_angle")]
    pub angle: [f32; 2],
    /// Gaussian blur σ of the streak layer in pixels (thickness and softness).
    #[serde(default = "default_blur")]
    pub blur: [f32; 2],
    /// Peak brightness a streak adds, in [0, 1].
    #[serde(default = "default_intensity")]
    pub intensity: [f32; 2],
}

fn default_density() -> [f32; 2] {
    [0.002, 0.01]
}
fn default_length() -> [f32; 2] {
    [8.0, 30.0]
}
fn default_angle() -> [f32; 2] {
    [-30.0, 30.0]
}
fn default_blur() -> [f32; 2] {
    [0.5, 1.5]
}
fn default_intensity() -> [f32; 2] {
    [0.3, 0.8]
}

impl Default for RainStreaks {
    fn default() -> Self {
        Self {
            density: default_density(),
            length: default_length(),
            angle: default_angle(),
            blur: default_blur(),
            intensity: default_intensity(),
        }
    }
}

/// Separable Gaussian blur of one plane (edges clamped); σ ≤ 0.1 leaves it unchanged.
pub fn gaussian_blur(plane: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.1 {
        return plane.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let taps: Vec<f32> = (-r..=r)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f32 = taps.iter().sum();
    let pass = |src: &[f32], horizontal: bool| {
        let mut dst = vec![0f32; src.len()];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut acc = 0f32;
                for (k, t) in taps.iter().enumerate() {
                    let d = k as isize - r;
                    let (sx, sy) = if horizontal {
                        ((x + d).clamp(0, w as isize - 1), y)
                    } else {
                        (x, (y + d).clamp(0, h as isize - 1))
                    };
                    acc += t * src[(sy * w as isize + sx) as usize];
                }
                dst[(y * w as isize + x) as usize] = acc / norm;
            }
        }
        dst
    };
    pass(&pass(plane, true), false)
}

impl RainStreaks {
    /// Checks the ranges; errors are (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let unit = |[lo, hi]: [f32; 2]| range_ok([lo, hi]) && hi <= 1.0;
        if !unit(self.density) {
            return Err((
                "density",
                format!("must be [low, high] within [0, 1], got {:?}", self.density),
            ));
        }
        if !unit(self.intensity) {
            return Err((
                "intensity",
                format!(
                    "must be [low, high] within [0, 1], got {:?}",
                    self.intensity
                ),
            ));
        }
        if !range_ok(self.length) || self.length[1] > 200.0 {
            return Err((
                "length",
                format!(
                    "must be [low, high] pixels with 0 <= low <= high <= 200, got {:?}",
                    self.length
                ),
            ));
        }
        if !range_ok(self.blur) || self.blur[1] > 10.0 {
            return Err((
                "blur",
                format!(
                    "must be [low, high] with 0 <= low <= high <= 10, got {:?}",
                    self.blur
                ),
            ));
        }
        let [a0, a1] = self.angle;
        if !(a0.is_finite() && a1.is_finite() && -90.0 <= a0 && a0 <= a1 && a1 <= 90.0) {
            return Err((
                "angle",
                format!(
                    "must be [low, high] degrees within [-90, 90], got {:?}",
                    self.angle
                ),
            ));
        }
        Ok(())
    }

    /// The streak layer for a `w`×`h` image, values in [0, 1].
    pub fn layer(&self, rng: &mut impl Rng, w: usize, h: usize) -> Vec<f32> {
        let density = draw(rng, self.density);
        let length = draw(rng, self.length).max(1.0);
        let angle = draw(rng, self.angle).to_radians();
        let sigma = draw(rng, self.blur);
        let intensity = draw(rng, self.intensity);
        // Seeds over the image grown by one streak length, so streaks enter from outside.
        let pad = length;
        let (ew, eh) = (w as f32 + 2.0 * pad, h as f32 + 2.0 * pad);
        let count = (density * ew * eh).round() as usize;
        // Blur spreads a one-pixel line over ~√(2π)σ pixels; scale so a streak keeps its peak.
        let gain = intensity * (std::f32::consts::TAU.sqrt() * sigma).max(1.0);
        let mut layer = vec![0f32; w * h];
        for _ in 0..count {
            let (x0, y0) = (rng.gen::<f32>() * ew - pad, rng.gen::<f32>() * eh - pad);
            let a = angle + rng.gen_range(-0.05..0.05);
            let len = length * rng.gen_range(0.7..1.0);
            let bright = gain * rng.gen_range(0.6..1.0);
            let (dx, dy) = (a.sin(), a.cos());
            let n = (2.0 * len).ceil() as usize;
            for i in 0..n {
                let s = i as f32 / n as f32;
                // Tapered ends; half-pixel steps, so each sample carries half the weight.
                let v = 0.5 * bright * (std::f32::consts::PI * s).sin();
                let (fx, fy) = (x0 + dx * s * len, y0 + dy * s * len);
                let (xi, yi) = (fx.floor(), fy.floor());
                let (ax, ay) = (fx - xi, fy - yi);
                for (oy, wy) in [(0, 1.0 - ay), (1, ay)] {
                    for (ox, wx) in [(0, 1.0 - ax), (1, ax)] {
                        let (px, py) = (xi as isize + ox, yi as isize + oy);
                        if px >= 0 && py >= 0 && (px as usize) < w && (py as usize) < h {
                            layer[py as usize * w + px as usize] += v * wx * wy;
                        }
                    }
                }
            }
        }
        let mut layer = gaussian_blur(&layer, w, h, sigma);
        layer.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        layer
    }

    /// Adds rain to a clean image: screen blend 1 − (1 − x)(1 − r), so it stays in [0, 1].
    pub fn apply(&self, rng: &mut impl Rng, img: &Image) -> Image {
        let layer = self.layer(rng, img.width, img.height);
        let data = img
            .data
            .chunks_exact(3)
            .zip(&layer)
            .flat_map(|(px, &r)| {
                px.iter()
                    .map(move |&x| 1.0 - (1.0 - x) * (1.0 - r))
                    .collect::<Vec<_>>()
            })
            .collect();
        Image {
            width: img.width,
            height: img.height,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rain_only_brightens_and_streaks_follow_the_angle() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let img = Image {
            width: 64,
            height: 64,
            data: vec![0.3; 64 * 64 * 3],
        };
        let recipe = RainStreaks {
            angle: [0.0, 0.0],
            blur: [0.0, 0.0],
            density: [0.005, 0.005],
            ..RainStreaks::default()
        };
        let out = recipe.apply(&mut rng, &img);
        assert!(out.data.iter().all(|&v| (0.3 - 1e-6..=1.0).contains(&v)));
        let changed = out.data.iter().filter(|&&v| v > 0.31).count() / 3;
        assert!(changed > 64 * 64 / 50, "only {changed} rainy pixels");
        // Vertical streaks: the layer correlates far more along columns than along rows.
        let layer = recipe.layer(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2), 64, 64);
        let corr = |dx: usize, dy: usize| {
            let mut s = 0f32;
            for y in 0..64 - dy {
                for x in 0..64 - dx {
                    s += layer[y * 64 + x] * layer[(y + dy) * 64 + x + dx];
                }
            }
            s
        };
        assert!(
            corr(0, 3) > 3.0 * corr(3, 0),
            "{} vs {}",
            corr(0, 3),
            corr(3, 0)
        );
    }

    #[test]
    fn gaussian_blur_keeps_the_mean_of_a_constant() {
        let out = gaussian_blur(&[0.5; 100], 10, 10, 1.2);
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-5));
    }
}
