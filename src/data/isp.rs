//! A realistic synthetic degradation: a clean sRGB photo is "unprocessed" back to camera raw,
//! given raw-domain noise and run forward through a camera pipeline whose parameters are drawn
//! per image (Brooks et al. 2019, *Unprocessing Images for Learned Raw Denoising*, with the
//! per-image randomisation of the BSRGAN / Real-ESRGAN degradation pipelines).
//!
//! Per image: exposure and white-balance gains, a colour-correction matrix mixed from four real
//! cameras, shot and read noise (log-uniform), JPEG quality. Steps:
//! 1. inverse tone curve (smoothstep), inverse gamma (x^2.2), sRGB → camera RGB, ÷ white
//!    balance, × exposure;
//! 2. Poisson–Gaussian noise on an RGGB mosaic (variance `shot·x + read²` at each site), spread
//!    to the three colours by a bilinear demosaic of the *noise* (so the noise is correlated as
//!    after a real demosaic, while the signal itself is not re-interpolated), optionally
//!    blurred (`noise_blur`) for the coarser grain in-camera noise reduction leaves, its chroma
//!    scaled (`chroma`) for the mostly grey noise chroma noise reduction leaves;
//! 3. × gains, camera RGB → sRGB, gamma, tone curve, clip, 8 bits, JPEG.
//!
//! Without noise steps 1 and 3 are inverses, so the clean photo stays the target.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::camera::{bayer, demosaic_at};
use super::draw::draw;
use super::Image;

/// Ranges the pipeline draws its parameters from, once per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IspNoise {
    /// Shot-noise gain a (variance a·x of a raw value x in [0, 1]); log-uniform.
    pub shot: [f32; 2],
    /// Read-noise standard deviation b (raw units); log-uniform.
    pub read: [f32; 2],
    /// Red white-balance gain (uniform).
    pub red_gain: [f32; 2],
    /// Blue white-balance gain (uniform).
    pub blue_gain: [f32; 2],
    /// Factor the raw is brightened by before the noise and darkened by after it (uniform;
    /// larger = brighter raw = relatively weaker noise). Brooks et al. darken instead (their
    /// `rgb_gain` ≈ 1/N(0.8, 0.1)): `exposure` below 1, e.g. [0.6, 0.9], is their convention.
    pub exposure: [f32; 2],
    /// Mix a random colour-correction matrix from four real cameras (else identity).
    pub ccm: bool,
    /// Apply the smoothstep tone curve (else gamma only).
    pub tone: bool,
    /// Correlate the noise through a bilinear demosaic (else independent per channel).
    pub demosaic: bool,
    /// Gaussian σ (pixels, uniform) of a blur applied to the noise field after the demosaic:
    /// the wider spatial correlation that in-camera noise reduction and resampling leave
    /// (0 = none). It lowers the noise's standard deviation as it widens its grain.
    pub noise_blur: [f32; 2],
    /// Share of the noise's chroma kept (uniform; 1 = as drawn, 0 = luminance-only noise): the
    /// chroma noise reduction cameras apply, which makes real sRGB noise mostly grey.
    pub chroma: [f32; 2],
    /// JPEG quality (uniform integer); 100 = no compression step.
    pub jpeg: [u8; 2],
}

impl Default for IspNoise {
    /// Brooks et al.'s white-balance ranges; shot/read from their low-to-moderate ISO span.
    fn default() -> Self {
        Self {
            shot: [1e-4, 1e-2],
            read: [1e-3, 2e-2],
            red_gain: [1.9, 2.4],
            blue_gain: [1.5, 1.9],
            exposure: [1.0, 1.6],
            ccm: true,
            tone: true,
            demosaic: true,
            noise_blur: [0.0, 0.0],
            chroma: [1.0, 1.0],
            jpeg: [75, 98],
        }
    }
}

/// The parameters drawn for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IspParams {
    pub shot: f32,
    pub read: f32,
    pub red_gain: f32,
    pub blue_gain: f32,
    pub exposure: f32,
    pub noise_blur: f32,
    pub chroma: f32,
    /// sRGB-linear → camera RGB (rows sum to 1, so grey stays grey).
    pub rgb2cam: [[f32; 3]; 3],
    pub jpeg: u8,
}

/// XYZ → camera matrices of four cameras (Brooks et al., `unprocess.random_ccm`).
const XYZ2CAMS: [[[f32; 3]; 3]; 4] = [
    [
        [1.0234, -0.2969, -0.2266],
        [-0.5625, 1.6328, -0.0469],
        [-0.0703, 0.2188, 0.6406],
    ],
    [
        [0.4913, -0.0541, -0.0202],
        [-0.613, 1.3513, 0.2906],
        [-0.1564, 0.2151, 0.7183],
    ],
    [
        [0.838, -0.263, -0.0639],
        [-0.2887, 1.0725, 0.2496],
        [-0.0627, 0.1427, 0.5438],
    ],
    [
        [0.6596, -0.2079, -0.0562],
        [-0.4782, 1.3016, 0.1933],
        [-0.097, 0.1581, 0.5181],
    ],
];

/// Linear sRGB → XYZ (D65).
const RGB2XYZ: [[f32; 3]; 3] = [
    [0.412_456_4, 0.357_576_1, 0.180_437_5],
    [0.212_672_9, 0.715_152_2, 0.072_175],
    [0.019_333_9, 0.119_192, 0.950_304_1],
];

const IDENTITY: [[f32; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

fn matmul(a: &[[f32; 3]; 3], b: &[[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let mut c = [[0f32; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

fn apply(m: &[[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    [0, 1, 2].map(|i| m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2])
}

/// The inverse of a 3×3 matrix (the CCMs drawn here are well conditioned).
fn inverse(m: &[[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let [[a, b, c], [d, e, f], [g, h, i]] = *m;
    let det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
    [
        [
            (e * i - f * h) / det,
            (c * h - b * i) / det,
            (b * f - c * e) / det,
        ],
        [
            (f * g - d * i) / det,
            (a * i - c * g) / det,
            (c * d - a * f) / det,
        ],
        [
            (d * h - e * g) / det,
            (b * g - a * h) / det,
            (a * e - b * d) / det,
        ],
    ]
}

/// Log-uniform in [lo, hi] (lo when the range is empty or not positive).
fn draw_log(rng: &mut impl Rng, [lo, hi]: [f32; 2]) -> f32 {
    if hi > lo && lo > 0.0 {
        (rng.gen_range(lo.ln()..=hi.ln())).exp()
    } else {
        lo
    }
}

fn smoothstep(x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

fn inverse_smoothstep(y: f32) -> f32 {
    let y = y.clamp(0.0, 1.0);
    0.5 - ((1.0 - 2.0 * y).asin() / 3.0).sin()
}

/// Separable Gaussian blur (σ in pixels, radius ⌈3σ⌉, edges clamped) of an HWC RGB field.
fn gaussian_blur(data: &mut [f32], w: usize, h: usize, sigma: f32) {
    let r = (3.0 * sigma).ceil() as isize;
    let taps: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = taps.iter().sum();
    let taps: Vec<f32> = taps.iter().map(|t| t / sum).collect();
    let mut tmp = vec![0f32; data.len()];
    // Rows into `tmp`, then columns back into `data`.
    blur_pass(data, &mut tmp, w, h, &taps, r, true);
    blur_pass(&tmp, data, w, h, &taps, r, false);
}

/// One 1-D pass of [`gaussian_blur`] along rows (`horizontal`) or columns.
fn blur_pass(
    src: &[f32],
    dst: &mut [f32],
    w: usize,
    h: usize,
    taps: &[f32],
    r: isize,
    horizontal: bool,
) {
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, t) in taps.iter().enumerate() {
                    let d = k as isize - r;
                    let (xx, yy) = if horizontal {
                        (clamp(x as isize + d, w), y)
                    } else {
                        (x, clamp(y as isize + d, h))
                    };
                    acc += t * src[(yy * w + xx) * 3 + c];
                }
                dst[(y * w + x) * 3 + c] = acc;
            }
        }
    }
}

impl IspNoise {
    /// Checks every range; `Err((key, message))` names the first bad field.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let positive = |k: &'static str, [lo, hi]: [f32; 2], min: f32| {
            if lo.is_finite() && hi.is_finite() && lo >= min && lo <= hi {
                Ok(())
            } else {
                Err((
                    k,
                    format!("must be [low, high] with {min} <= low <= high, got [{lo}, {hi}]"),
                ))
            }
        };
        positive("shot", self.shot, 0.0)?;
        positive("read", self.read, 0.0)?;
        positive("red_gain", self.red_gain, 0.1)?;
        positive("blue_gain", self.blue_gain, 0.1)?;
        positive("exposure", self.exposure, 0.1)?;
        positive("noise_blur", self.noise_blur, 0.0)?;
        positive("chroma", self.chroma, 0.0)?;
        if self.chroma[1] > 1.0 {
            return Err((
                "chroma",
                format!("must be at most 1, got {}", self.chroma[1]),
            ));
        }
        if self.noise_blur[1] > 8.0 {
            return Err((
                "noise_blur",
                format!("must be at most 8 px, got {}", self.noise_blur[1]),
            ));
        }
        if self.jpeg[0] == 0 || self.jpeg[0] > self.jpeg[1] || self.jpeg[1] > 100 {
            return Err((
                "jpeg",
                format!(
                    "must be [low, high] qualities with 1 <= low <= high <= 100, got {:?}",
                    self.jpeg
                ),
            ));
        }
        Ok(())
    }

    /// Draws one image's parameters.
    pub fn draw(&self, rng: &mut impl Rng) -> IspParams {
        let shot = draw_log(rng, self.shot);
        let read = draw_log(rng, self.read);
        let red_gain = draw(rng, self.red_gain);
        let blue_gain = draw(rng, self.blue_gain);
        let exposure = draw(rng, self.exposure);
        let noise_blur = draw(rng, self.noise_blur);
        let chroma = draw(rng, self.chroma);
        let rgb2cam = if self.ccm {
            let w: [f32; 4] = [0; 4].map(|_| rng.gen_range(1e-8f32..1.0));
            let sum: f32 = w.iter().sum();
            let mut xyz2cam = [[0f32; 3]; 3];
            for (m, wk) in XYZ2CAMS.iter().zip(w) {
                for i in 0..3 {
                    for j in 0..3 {
                        xyz2cam[i][j] += m[i][j] * wk / sum;
                    }
                }
            }
            let mut m = matmul(&xyz2cam, &RGB2XYZ);
            for row in &mut m {
                let s: f32 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= s);
            }
            m
        } else {
            IDENTITY
        };
        let jpeg = rng.gen_range(self.jpeg[0]..=self.jpeg[1]);
        IspParams {
            shot,
            read,
            red_gain,
            blue_gain,
            exposure,
            noise_blur,
            chroma,
            rgb2cam,
            jpeg,
        }
    }

    /// Degrades a clean sRGB image with freshly drawn parameters.
    pub fn apply(&self, rng: &mut impl Rng, img: &Image) -> Image {
        let p = self.draw(rng);
        self.apply_with(rng, img, &p)
    }

    /// Degrades a clean sRGB image with the given parameters (noise drawn from `rng`).
    /// ~100 lines: the camera stages in the order a camera runs them, each a few lines over
    /// the same buffers.
    pub fn apply_with(&self, rng: &mut impl Rng, img: &Image, p: &IspParams) -> Image {
        let (w, h) = (img.width, img.height);
        let gains = [
            p.red_gain / p.exposure,
            1.0 / p.exposure,
            p.blue_gain / p.exposure,
        ];
        let cam2rgb = inverse(&p.rgb2cam);
        // 1. Unprocess: sRGB → linear → camera RGB → raw (÷ white balance, × exposure).
        let mut raw = vec![0f32; w * h * 3];
        for (px, out) in img.data.chunks_exact(3).zip(raw.chunks_exact_mut(3)) {
            let lin = [0, 1, 2].map(|c| {
                let v = px[c].clamp(0.0, 1.0);
                let v = if self.tone { inverse_smoothstep(v) } else { v };
                v.max(1e-8).powf(2.2)
            });
            let cam = apply(&p.rgb2cam, lin);
            for c in 0..3 {
                out[c] = cam[c] / gains[c];
            }
        }
        // 2. Noise on the mosaic sites, spread to all colours by a bilinear demosaic.
        let mut site = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let c = if self.demosaic { bayer(x, y) } else { 0 };
                let v = raw[(y * w + x) * 3 + c].max(0.0);
                let sigma = (p.shot * v + p.read * p.read).sqrt();
                let n: f32 = StandardNormal.sample(rng);
                site[y * w + x] = sigma * n;
            }
        }
        let mut noise = vec![0f32; w * h * 3];
        if self.demosaic {
            for y in 0..h {
                for x in 0..w {
                    let px = demosaic_at(&site, w, h, x, y);
                    noise[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&px);
                }
            }
        } else {
            // Independent noise per channel: two more draws per pixel.
            for (i, px) in noise.chunks_exact_mut(3).enumerate() {
                for (c, n) in px.iter_mut().enumerate() {
                    *n = if c == 0 {
                        site[i]
                    } else {
                        let v = raw[i * 3 + c].max(0.0);
                        let s = (p.shot * v + p.read * p.read).sqrt();
                        let n: f32 = StandardNormal.sample(rng);
                        s * n
                    };
                }
            }
        }
        if p.noise_blur > 0.0 {
            gaussian_blur(&mut noise, w, h, p.noise_blur);
        }
        if p.chroma < 1.0 {
            for px in noise.chunks_exact_mut(3) {
                let l = (px[0] + px[1] + px[2]) / 3.0;
                px.iter_mut().for_each(|v| *v = l + p.chroma * (*v - l));
            }
        }
        for (r, n) in raw.iter_mut().zip(&noise) {
            *r += n;
        }
        // 3. Process: × gains → sRGB-linear → gamma → tone curve → 8 bits.
        let bytes: Vec<u8> = raw
            .chunks_exact(3)
            .flat_map(|px| {
                let cam = [0, 1, 2].map(|c| px[c] * gains[c]);
                let lin = apply(&cam2rgb, cam);
                lin.map(|v| {
                    let g = v.clamp(0.0, 1.0).powf(1.0 / 2.2);
                    let s = if self.tone { smoothstep(g) } else { g };
                    (s * 255.0).round() as u8
                })
            })
            .collect();
        // 4. JPEG round trip.
        let out = if p.jpeg >= 100 {
            None
        } else {
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, p.jpeg)
                .encode(&bytes, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .ok()
                .and_then(|_| image::load_from_memory(&jpeg).ok())
                .map(|d| d.to_rgb8())
        };
        match out {
            Some(decoded) => Image::from_rgb8(&decoded),
            // Quality 100, or an empty image the encoder refuses: the 8-bit pixels as they are.
            None => Image {
                width: w,
                height: h,
                data: bytes.iter().map(|&v| v as f32 / 255.0).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn flat(v: f32, side: usize) -> Image {
        Image {
            width: side,
            height: side,
            data: vec![v; side * side * 3],
        }
    }

    fn photo() -> Image {
        // A smooth colour ramp with some texture, values inside (0, 1).
        let side = 48;
        let mut data = Vec::with_capacity(side * side * 3);
        for y in 0..side {
            for x in 0..side {
                let t = ((x * 7 + y * 3) % 11) as f32 / 40.0;
                data.extend([
                    0.2 + 0.6 * x as f32 / side as f32,
                    0.3 + t,
                    0.8 - 0.5 * y as f32 / side as f32,
                ]);
            }
        }
        Image {
            width: side,
            height: side,
            data,
        }
    }

    #[test]
    fn drawn_parameters_stay_in_their_ranges() {
        let isp = IspNoise {
            shot: [1e-4, 4e-3],
            read: [5e-4, 5e-3],
            red_gain: [1.5, 2.0],
            blue_gain: [1.2, 1.4],
            exposure: [1.0, 2.0],
            jpeg: [80, 90],
            ..IspNoise::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut lo_shot, mut hi_shot) = (f32::MAX, 0f32);
        for _ in 0..2000 {
            let p = isp.draw(&mut rng);
            assert!((1e-4..=4e-3).contains(&p.shot), "{p:?}");
            assert!((5e-4..=5e-3).contains(&p.read), "{p:?}");
            assert!((1.5..=2.0).contains(&p.red_gain), "{p:?}");
            assert!((1.2..=1.4).contains(&p.blue_gain), "{p:?}");
            assert!((1.0..=2.0).contains(&p.exposure), "{p:?}");
            assert!((80..=90).contains(&p.jpeg), "{p:?}");
            for row in p.rgb2cam {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
            }
            lo_shot = lo_shot.min(p.shot);
            hi_shot = hi_shot.max(p.shot);
        }
        // Log-uniform: the whole range is visited, and the median sits at the geometric mean.
        assert!(lo_shot < 1.2e-4 && hi_shot > 3.6e-3, "{lo_shot} {hi_shot}");
        let mut shots: Vec<f32> = (0..2001).map(|_| isp.draw(&mut rng).shot).collect();
        shots.sort_by(f32::total_cmp);
        let median = shots[1000];
        assert!(
            (median / (1e-4f32 * 4e-3).sqrt() - 1.0).abs() < 0.15,
            "{median}"
        );
        assert!(isp.validate().is_ok());
        let bad = IspNoise {
            read: [2e-3, 1e-3],
            ..isp.clone()
        };
        assert_eq!(bad.validate().unwrap_err().0, "read");
        let bad = IspNoise {
            jpeg: [0, 90],
            ..isp
        };
        assert_eq!(bad.validate().unwrap_err().0, "jpeg");
    }

    #[test]
    fn without_noise_the_pipeline_returns_the_photo() {
        // Unprocess and process are inverses: with zero noise and no JPEG only 8-bit rounding is
        // left, whatever gains and colour matrix were drawn.
        let isp = IspNoise {
            shot: [0.0, 0.0],
            read: [0.0, 0.0],
            jpeg: [100, 100],
            ..IspNoise::default()
        };
        let img = photo();
        for seed in 0..5 {
            let out = isp.apply(&mut ChaCha8Rng::seed_from_u64(seed), &img);
            let worst = out
                .data
                .iter()
                .zip(&img.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 0.6 / 255.0, "seed {seed}: {worst}");
        }
    }

    #[test]
    fn same_seed_same_image_other_seed_other_noise() {
        let isp = IspNoise::default();
        let img = photo();
        let a = isp.apply(&mut ChaCha8Rng::seed_from_u64(7), &img);
        let b = isp.apply(&mut ChaCha8Rng::seed_from_u64(7), &img);
        let c = isp.apply(&mut ChaCha8Rng::seed_from_u64(8), &img);
        assert!(a == b, "not reproducible");
        assert!(a != c, "seed does not change the draw");
    }

    #[test]
    /// ~125 lines: one noise model checked at several (shot, read) settings on the same flat
    /// patches.
    fn noise_statistics_follow_the_shot_and_read_parameters() {
        // Gains 1, no CCM, no tone curve, no demosaic, no JPEG: the linear output is
        // x + N(0, shot·x + read²) exactly, up to 8-bit rounding. Measure the std in linear
        // space on flat patches and compare with the model.
        let base = IspNoise {
            red_gain: [1.0, 1.0],
            blue_gain: [1.0, 1.0],
            exposure: [1.0, 1.0],
            ccm: false,
            tone: false,
            demosaic: false,
            jpeg: [100, 100],
            ..IspNoise::default()
        };
        let measure = |isp: &IspNoise, srgb: f32| {
            let img = flat(srgb, 128);
            let out = isp.apply(&mut ChaCha8Rng::seed_from_u64(3), &img);
            let lin: Vec<f64> = out.data.iter().map(|&v| (v as f64).powf(2.2)).collect();
            let x = (srgb as f64).powf(2.2);
            let n = lin.len() as f64;
            let mean = lin.iter().sum::<f64>() / n;
            let std = (lin.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            (x, mean, std)
        };
        for (shot, read, srgb) in [
            (4e-3f32, 2e-3f32, 0.7f32),
            (0.0, 1e-2, 0.6),
            (1e-2, 0.0, 0.8),
        ] {
            let isp = IspNoise {
                shot: [shot, shot],
                read: [read, read],
                ..base.clone()
            };
            let (x, mean, std) = measure(&isp, srgb);
            let expected = (shot as f64 * x + (read as f64).powi(2)).sqrt();
            assert!(
                (std / expected - 1.0).abs() < 0.1,
                "shot {shot} read {read}: std {std} vs model {expected}"
            );
            // Zero-mean noise: the mean of a bright flat patch stays where it was.
            assert!((mean - x).abs() < 0.1 * expected + 2e-3, "{mean} vs {x}");
        }
        // The demosaic spreads each site's noise to its neighbours: less variance per
        // channel, and neighbouring pixels correlate.
        let mosaic = IspNoise {
            shot: [4e-3, 4e-3],
            read: [2e-3, 2e-3],
            demosaic: true,
            ..base.clone()
        };
        let img = flat(0.7, 128);
        let out = mosaic.apply(&mut ChaCha8Rng::seed_from_u64(4), &img);
        let g: Vec<f32> = out.data.iter().map(|&v| v - 0.7).collect();
        let corr = |dx: usize| {
            let (mut num, mut den) = (0f64, 0f64);
            for y in 0..128 {
                for x in 0..127 - dx {
                    let a = g[(y * 128 + x) * 3] as f64;
                    let b = g[(y * 128 + x + dx) * 3] as f64;
                    num += a * b;
                    den += a * a;
                }
            }
            num / den
        };
        assert!(
            corr(1) > 0.2,
            "demosaiced noise should correlate: {}",
            corr(1)
        );
        let indep = IspNoise {
            demosaic: false,
            ..mosaic
        };
        let out = indep.apply(&mut ChaCha8Rng::seed_from_u64(4), &img);
        let g2: Vec<f32> = out.data.iter().map(|&v| v - 0.7).collect();
        let mut num = 0f64;
        let mut den = 0f64;
        for i in 0..127 {
            num += (g2[i * 3] * g2[(i + 1) * 3]) as f64;
            den += (g2[i * 3] * g2[i * 3]) as f64;
        }
        assert!(
            (num / den).abs() < 0.2,
            "independent noise correlates: {}",
            num / den
        );
        // A noise blur widens the grain: correlation two pixels away rises, the std falls.
        let blurred = IspNoise {
            noise_blur: [1.5, 1.5],
            ..indep
        };
        let stats = |isp: &IspNoise| {
            let out = isp.apply(&mut ChaCha8Rng::seed_from_u64(5), &img);
            let g: Vec<f64> = out.data.iter().map(|&v| v as f64 - 0.7).collect();
            let (mut num, mut den) = (0f64, 0f64);
            for y in 0..128 {
                for x in 0..126 {
                    num += g[(y * 128 + x) * 3 + 1] * g[(y * 128 + x + 2) * 3 + 1];
                    den += g[(y * 128 + x) * 3 + 1].powi(2);
                }
            }
            (num / den, (den / (128.0 * 126.0)).sqrt())
        };
        let (c_sharp, s_sharp) = stats(&indep);
        let (c_blur, s_blur) = stats(&blurred);
        assert!(c_blur > 0.5 && c_sharp.abs() < 0.2, "{c_blur} vs {c_sharp}");
        assert!(s_blur < 0.5 * s_sharp, "{s_blur} vs {s_sharp}");
        // chroma = 0: the noise is grey (the same in R, G and B before the 8-bit rounding).
        let grey = IspNoise {
            chroma: [0.0, 0.0],
            ..indep
        };
        let out = grey.apply(&mut ChaCha8Rng::seed_from_u64(6), &img);
        let spread = out
            .data
            .chunks_exact(3)
            .map(|px| px[0].max(px[1]).max(px[2]) - px[0].min(px[1]).min(px[2]))
            .fold(0f32, f32::max);
        assert!(
            spread <= 1.0 / 255.0 + 1e-6,
            "grey noise differs across channels: {spread}"
        );
    }
}
