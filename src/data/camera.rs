//! A realistic camera-noise pipeline for "real-like" degraded images: sRGB → linear, RGGB Bayer
//! mosaic, signal-dependent Poisson–Gaussian noise on the raw values, bilinear demosaic, sRGB
//! gamma, 8-bit quantisation and JPEG compression. The noise is spatially correlated by the
//! demosaic and the JPEG blocks — the kind AWGN-trained denoisers fail on.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::draw::draw;
use super::Image;

/// Ranges the pipeline draws its parameters from (uniformly, once per image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraNoise {
    /// Shot-noise gain a: variance a·x of a raw value x in [0, 1].
    pub shot: [f32; 2],
    /// Read-noise standard deviation b (in [0, 1] raw units).
    pub read: [f32; 2],
    /// JPEG quality.
    pub jpeg: [u8; 2],
}

impl Default for CameraNoise {
    fn default() -> Self {
        Self {
            shot: [2e-4, 2e-3],
            read: [2e-3, 1e-2],
            jpeg: [75, 95],
        }
    }
}

fn srgb_to_linear(v: f32) -> f32 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(v: f32) -> f32 {
    let v = v.clamp(0.0, 1.0);
    if v <= 0.003_130_8 {
        v * 12.92
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    }
}

/// Bilinear demosaic of an RGGB mosaic `site` (w×h) at (x, y): the site's own colour, and each
/// missing colour as the mean of its 3×3 neighbours of that colour.
pub(super) fn demosaic_at(site: &[f32], w: usize, h: usize, x: usize, y: usize) -> [f32; 3] {
    let mut sum = [0f32; 3];
    let mut cnt = [0u32; 3];
    for yy in y.saturating_sub(1)..(y + 2).min(h) {
        for xx in x.saturating_sub(1)..(x + 2).min(w) {
            let c = bayer(xx, yy);
            sum[c] += site[yy * w + xx];
            cnt[c] += 1;
        }
    }
    let own = bayer(x, y);
    [0, 1, 2].map(|c| {
        if c == own || cnt[c] == 0 {
            site[y * w + x]
        } else {
            sum[c] / cnt[c] as f32
        }
    })
}

/// Colour of the RGGB Bayer site at (x, y): 0 = R, 1 = G, 2 = B.
pub(super) fn bayer(x: usize, y: usize) -> usize {
    match (y % 2, x % 2) {
        (0, 0) => 0,
        (1, 1) => 2,
        _ => 1,
    }
}

impl CameraNoise {
    /// Degrades a clean sRGB image; the result is 8-bit-exact (it went through a JPEG).
    pub fn apply(&self, rng: &mut impl Rng, img: &Image) -> Image {
        let (w, h) = (img.width, img.height);
        let shot = draw(rng, self.shot);
        let read = draw(rng, self.read);
        let quality =
            rng.gen_range(self.jpeg[0].min(self.jpeg[1])..=self.jpeg[1].max(self.jpeg[0]));
        // 1. Mosaic the linear image and add Poisson–Gaussian noise per raw site.
        let mut raw = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let v = srgb_to_linear(img.data[(y * w + x) * 3 + bayer(x, y)].clamp(0.0, 1.0));
                let sigma = (shot * v + read * read).sqrt();
                let n: f32 = StandardNormal.sample(rng);
                raw[y * w + x] = (v + sigma * n).clamp(0.0, 1.0);
            }
        }
        // 2. Bilinear demosaic: each missing colour is the mean of its 3×3 neighbours of that colour.
        let mut rgb = vec![0f32; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let px = demosaic_at(&raw, w, h, x, y);
                for c in 0..3 {
                    // 3. Back to sRGB and 8 bits.
                    rgb[(y * w + x) * 3 + c] = (linear_to_srgb(px[c]) * 255.0).round();
                }
            }
        }
        // 4. JPEG round trip.
        let bytes: Vec<u8> = rgb.iter().map(|&v| v as u8).collect();
        let mut jpeg = Vec::new();
        let encoded = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality)
            .encode(&bytes, w as u32, h as u32, image::ExtendedColorType::Rgb8);
        let out = match encoded
            .ok()
            .and_then(|_| image::load_from_memory(&jpeg).ok())
        {
            Some(decoded) => decoded.to_rgb8(),
            // The encoder only fails on empty images; keep the unencoded pixels then.
            None => image::RgbImage::from_raw(w as u32, h as u32, bytes)
                .expect("buffer is w*h*3. This is a bug."),
        };
        Image::from_rgb8(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shot_noise_adds_variance_and_is_reproducible() {
        let (w, h) = (64, 64);
        let flat = |v: f32| Image {
            width: w,
            height: h,
            data: vec![v; w * h * 3],
        };
        let cam = CameraNoise {
            shot: [2e-3, 2e-3],
            read: [2e-3, 2e-3],
            jpeg: [95, 95],
        };
        let std = |img: &Image, src: &Image| {
            let n = img.data.len() as f32;
            let d: Vec<f32> = img.data.iter().zip(&src.data).map(|(a, b)| a - b).collect();
            let mean = d.iter().sum::<f32>() / n;
            (d.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let bright = flat(0.8);
        let read_only = CameraNoise {
            shot: [0.0, 0.0],
            ..cam.clone()
        };
        // The shot term adds signal-dependent variance on top of the read noise.
        let with_shot = std(&cam.apply(&mut rng, &bright), &bright);
        let without = std(&read_only.apply(&mut rng, &bright), &bright);
        assert!(with_shot > 2.0 * without, "{with_shot} vs {without}");
        let dark = flat(0.1);
        let nd = cam.apply(&mut rng, &dark);
        assert!(std(&nd, &dark) > 0.002);
        // Same seed, same image.
        let once = cam.apply(&mut rand_chacha::ChaCha8Rng::seed_from_u64(9), &dark);
        let twice = cam.apply(&mut rand_chacha::ChaCha8Rng::seed_from_u64(9), &dark);
        assert!(once == twice, "camera noise is not reproducible");
    }
}
