//! Synthetic blur for the deblurring task: camera-shake motion blur along random trajectories
//! (an inertial random walk, after Boracchi & Foi 2012) or an out-of-focus disc, then mild
//! Gaussian noise. Kernels are normalised to sum 1 and applied by direct convolution.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::draw::{add_gaussian, draw};
use super::Image;
use crate::check::range_ok;

/// Ranges the blur recipe draws from (uniformly, once per image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlurKernels {
    /// Probability of motion blur; otherwise the image is defocused.
    #[serde(default = "default_motion")]
    pub motion: f32,
    /// Length of the camera-shake trajectory in pixels.
    #[serde(default = "default_length")]
    pub length: [f32; 2],
    /// Defocus disc radius in pixels.
    #[serde(default = "default_radius")]
    pub radius: [f32; 2],
    /// Gaussian noise σ added after blurring, 0–255 units.
    #[serde(default = "default_noise")]
    pub noise: [f32; 2],
}

fn default_motion() -> f32 {
    0.7
}
fn default_length() -> [f32; 2] {
    [5.0, 25.0]
}
fn default_radius() -> [f32; 2] {
    [1.0, 5.0]
}
fn default_noise() -> [f32; 2] {
    [0.0, 2.0]
}

impl Default for BlurKernels {
    fn default() -> Self {
        Self {
            motion: default_motion(),
            length: default_length(),
            radius: default_radius(),
            noise: default_noise(),
        }
    }
}

/// Longest trajectory or largest disc a recipe accepts, in pixels.
pub const MAX_EXTENT: f32 = 64.0;

/// A square blur kernel of odd side, summing to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub size: usize,
    pub weights: Vec<f32>,
}

impl Kernel {
    fn from_weights(size: usize, mut weights: Vec<f32>) -> Self {
        let sum: f32 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= sum);
        Self { size, weights }
    }

    /// A disc of `radius` pixels, each weight the fraction of its pixel inside the disc
    /// (8×8 supersampling).
    pub fn disc(radius: f32) -> Self {
        let r = radius.max(0.5);
        let half = r.ceil() as usize;
        let size = 2 * half + 1;
        let mut w = vec![0f32; size * size];
        for (i, wi) in w.iter_mut().enumerate() {
            let (py, px) = (
                (i / size) as f32 - half as f32,
                (i % size) as f32 - half as f32,
            );
            let mut inside = 0;
            for sy in 0..8 {
                for sx in 0..8 {
                    let (dy, dx) = (
                        py + (sy as f32 + 0.5) / 8.0 - 0.5,
                        px + (sx as f32 + 0.5) / 8.0 - 0.5,
                    );
                    inside += u32::from(dx * dx + dy * dy <= r * r);
                }
            }
            *wi = inside as f32 / 64.0;
        }
        Self::from_weights(size, w)
    }

    /// The path of a shaking camera: `length` pixels long, constant speed, its direction
    /// turning by Gaussian steps with inertia, occasionally jerking. Samples are splatted
    /// bilinearly around the trajectory's centroid.
    pub fn motion(rng: &mut impl Rng, length: f32) -> Self {
        const SAMPLES: usize = 96;
        let step = length.max(1.0) / SAMPLES as f32;
        let mut angle = rng.gen_range(0.0..std::f32::consts::TAU);
        let mut turn = 0f32;
        let (mut x, mut y) = (0f32, 0f32);
        let mut path = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            // Inertia: the turn rate itself drifts; rare jerks change direction abruptly.
            turn = 0.8 * turn + 0.08 * (rng.gen::<f32>() * 2.0 - 1.0);
            if rng.gen::<f32>() < 0.01 {
                angle += rng.gen_range(-1.5..1.5);
            }
            angle += turn;
            x += step * angle.cos();
            y += step * angle.sin();
            path.push((x, y));
        }
        let n = path.len() as f32;
        let (cx, cy) = path
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x / n, b + y / n));
        let extent = path
            .iter()
            .map(|&(x, y)| (x - cx).abs().max((y - cy).abs()))
            .fold(0f32, f32::max);
        let half = extent.ceil() as usize + 1;
        let size = 2 * half + 1;
        let mut w = vec![0f32; size * size];
        for &(x, y) in &path {
            let (fx, fy) = (x - cx + half as f32, y - cy + half as f32);
            let (x0, y0) = (fx.floor(), fy.floor());
            let (ax, ay) = (fx - x0, fy - y0);
            for (dy, wy) in [(0, 1.0 - ay), (1, ay)] {
                for (dx, wx) in [(0, 1.0 - ax), (1, ax)] {
                    let (kx, ky) = (x0 as usize + dx, y0 as usize + dy);
                    if kx < size && ky < size {
                        w[ky * size + kx] += wx * wy;
                    }
                }
            }
        }
        Self::from_weights(size, w)
    }

    /// Convolves an image (edges clamped), skipping zero taps: motion kernels are sparse.
    pub fn apply(&self, img: &Image) -> Image {
        let (w, h, half) = (
            img.width as isize,
            img.height as isize,
            (self.size / 2) as isize,
        );
        let taps: Vec<(isize, isize, f32)> = self
            .weights
            .iter()
            .enumerate()
            .filter(|(_, &v)| v > 0.0)
            .map(|(i, &v)| {
                let (ky, kx) = ((i / self.size) as isize, (i % self.size) as isize);
                (ky - half, kx - half, v)
            })
            .collect();
        let mut out = vec![0f32; img.data.len()];
        for y in 0..h {
            for x in 0..w {
                let o = ((y * w + x) * 3) as usize;
                let mut acc = [0f32; 3];
                for &(dy, dx, v) in &taps {
                    let sy = (y + dy).clamp(0, h - 1);
                    let sx = (x + dx).clamp(0, w - 1);
                    let s = ((sy * w + sx) * 3) as usize;
                    for (a, &p) in acc.iter_mut().zip(&img.data[s..s + 3]) {
                        *a += v * p;
                    }
                }
                out[o..o + 3].copy_from_slice(&acc);
            }
        }
        Image {
            width: img.width,
            height: img.height,
            data: out,
        }
    }
}

impl BlurKernels {
    /// Checks the ranges; errors are (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.motion) {
            return Err((
                "motion",
                format!("must be a probability in [0, 1], got {}", self.motion),
            ));
        }
        for (key, r) in [("length", self.length), ("radius", self.radius)] {
            if !range_ok(r) || r[1] > MAX_EXTENT {
                return Err((
                    key,
                    format!("must be [low, high] with 0 <= low <= high <= {MAX_EXTENT}, got {r:?}"),
                ));
            }
        }
        if !range_ok(self.noise) {
            return Err((
                "noise",
                format!(
                    "must be [low, high] with 0 <= low <= high, got {:?}",
                    self.noise
                ),
            ));
        }
        Ok(())
    }

    /// Pixels a kernel of this recipe reaches beyond its centre, at most.
    pub fn max_radius(&self) -> usize {
        let motion = if self.motion > 0.0 {
            self.length[1] / 2.0 + 2.0
        } else {
            0.0
        };
        let disc = if self.motion < 1.0 {
            self.radius[1] + 1.0
        } else {
            0.0
        };
        motion.max(disc).ceil() as usize
    }

    /// Draws a kernel for one image.
    pub fn kernel(&self, rng: &mut impl Rng) -> Kernel {
        if rng.gen::<f32>() < self.motion {
            let length = draw(rng, self.length);
            Kernel::motion(rng, length)
        } else {
            Kernel::disc(draw(rng, self.radius))
        }
    }

    /// Blurs a sharp image, then adds the noise (unclipped, as the AWGN recipe).
    pub fn apply(&self, rng: &mut impl Rng, img: &Image) -> Image {
        let mut out = self.kernel(rng).apply(img);
        let sigma = draw(rng, self.noise);
        add_gaussian(rng, &mut out, sigma / 255.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn kernels_sum_to_one_and_fit_the_margin() {
        let recipe = BlurKernels::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let k = recipe.kernel(&mut rng);
            let sum: f32 = k.weights.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "sum {sum}");
            assert!(k.size % 2 == 1);
            assert!(
                k.size / 2 <= recipe.max_radius(),
                "{} > {}",
                k.size / 2,
                recipe.max_radius()
            );
        }
        let disc = Kernel::disc(3.0);
        assert_eq!(disc.size, 7);
        // Centre fully inside, corners outside.
        assert!(disc.weights[3 * 7 + 3] > disc.weights[0]);
        assert_eq!(disc.weights[0], 0.0);
    }

    #[test]
    fn motion_blur_spreads_a_point_along_the_path_and_keeps_flat_areas() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let k = Kernel::motion(&mut rng, 15.0);
        let nonzero = k.weights.iter().filter(|&&w| w > 0.0).count();
        // A path, not a blob: far fewer taps than the square holds, but more than a line of 1.
        assert!(
            nonzero > 10 && nonzero < k.size * k.size / 2,
            "{nonzero} of {}",
            k.size * k.size
        );
        let flat = Image {
            width: 20,
            height: 20,
            data: vec![0.25; 20 * 20 * 3],
        };
        let out = k.apply(&flat);
        assert!(out.data.iter().all(|v| (v - 0.25).abs() < 1e-5));
    }
}
