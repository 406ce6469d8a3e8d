//! Full-reference image quality: PSNR and SSIM between two RGB images.
//!
//! This module owns the numeric definition of every PSNR / SSIM number the crate
//! reports. It is pure Rust (std + serde), independent of candle, and is pinned to
//! scikit-image by the fixture in `tests/fixtures/metrics/` (regenerated with
//! `scripts/make_metrics_fixture.py`, checked by `tests/metrics_fixture.rs`).
//!
//! Conventions:
//! - Images are [`RgbF32`]: interleaved HWC RGB `f32`, nominal range `[0, 1]`.
//!   Both inputs are clamped to `[0, 1]` before anything else (NaN is not clamped
//!   and propagates into the result). All accumulation is in `f64`.
//! - The peak / data range is `1.0`, for RGB and for Y alike.
//! - [`Channel::Y`] evaluates on BT.601 luma as in BasicSR / MATLAB `rgb2ycbcr`:
//!   `Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255` with `R, G, B` in `[0, 1]`,
//!   so `Y` lies in `[16/255, 235/255]` (no rescaling to `[0, 1]`).
//! - [`psnr`]: `10 log10(1 / MSE)`, the MSE taken over all pixels and all three
//!   channels (`Rgb`) or over the Y plane (`Y`); `f64::INFINITY` when `MSE == 0`.
//!   Equals `skimage.metrics.peak_signal_noise_ratio(a, b, data_range=1)`.
//! - [`ssim`]: Wang et al. 2004 with an 11×11 Gaussian window (σ = 1.5, weights
//!   normalised to sum 1), `K1 = 0.01`, `K2 = 0.03` (`C1 = 0.01²`, `C2 = 0.03²`),
//!   population covariance. The SSIM map is averaged over the valid region only
//!   (pixels whose window lies entirely inside the image: a 5 px border is
//!   dropped on every side), per channel, then averaged over channels (3 for
//!   `Rgb`, 1 for `Y`). Equals `skimage.metrics.structural_similarity(a, b,
//!   channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
//!   use_sample_covariance=False)` on float64 images (skimage filters with
//!   `mode="reflect"` and then crops the same 5 px border, so the border never
//!   reaches the mean). Both dimensions must be at least 11.
//! - No border cropping or rounding to 8 bits is done here; callers that want a
//!   "crop_border" or uint8-quantised protocol prepare the images themselves.

/// Side of the SSIM Gaussian window: images must be at least this large.
pub const SSIM_WINDOW: usize = 11;

use serde::{Deserialize, Serialize};

/// A borrowed RGB image: `height` rows of `width` pixels, interleaved `[r, g, b]`
/// (HWC), values nominally in `[0, 1]`. `data.len()` must be `width * height * 3`.
#[derive(Clone, Copy, Debug)]
pub struct RgbF32<'a> {
    pub width: usize,
    pub height: usize,
    pub data: &'a [f32],
}

/// Which signal a metric is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// All three RGB channels.
    #[default]
    Rgb,
    /// BT.601 luma only (see the module docs for the formula).
    Y,
}

/// Why a metric could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    /// The two images do not have the same dimensions.
    #[error("image size mismatch: {a_width}x{a_height} vs {b_width}x{b_height}")]
    SizeMismatch {
        a_width: usize,
        a_height: usize,
        b_width: usize,
        b_height: usize,
    },
    /// The images are smaller than the metric needs (SSIM: the 11×11 window).
    #[error("{metric} needs images of at least {min}x{min} pixels, got {width}x{height}")]
    TooSmall {
        metric: &'static str,
        width: usize,
        height: usize,
        min: usize,
    },
    /// `data.len()` does not match `width * height * 3`.
    #[error(
        "RGB buffer for a {width}x{height} image must hold {expected} values \
         (width*height*3), got {len}"
    )]
    BufferLength {
        width: usize,
        height: usize,
        expected: usize,
        len: usize,
    },
}

/// SSIM window side (11 taps: radius `int(3.5 * 1.5 + 0.5) = 5`, as in skimage).
const WIN: usize = SSIM_WINDOW;
/// Half-width of the window; also the border excluded from the SSIM mean.
const RADIUS: usize = WIN / 2;
/// Gaussian window standard deviation.
const SIGMA: f64 = 1.5;
/// SSIM stabilising constants for data range 1: `C1 = (K1 L)^2`, `C2 = (K2 L)^2`.
const C1: f64 = (0.01 * 1.0) * (0.01 * 1.0);
const C2: f64 = (0.03 * 1.0) * (0.03 * 1.0);

/// Peak signal-to-noise ratio in dB (peak 1.0) between `a` and `b`.
///
/// Returns `f64::INFINITY` for identical (after clamping) images.
pub fn psnr(a: RgbF32<'_>, b: RgbF32<'_>, channel: Channel) -> Result<f64, QualityError> {
    check_psnr_pair(&a, &b)?;
    let pixels = a.data.chunks_exact(3).zip(b.data.chunks_exact(3));
    let (sse, count) = match channel {
        Channel::Rgb => {
            let sse: f64 = pixels
                .map(|(pa, pb)| {
                    pa.iter()
                        .zip(pb)
                        .map(|(&u, &v)| {
                            let d = clamp01(u) - clamp01(v);
                            d * d
                        })
                        .sum::<f64>()
                })
                .sum();
            (sse, a.data.len())
        }
        Channel::Y => {
            let sse: f64 = pixels
                .map(|(pa, pb)| {
                    let d = luma(pa) - luma(pb);
                    d * d
                })
                .sum();
            (sse, a.width * a.height)
        }
    };
    let mse = sse / count as f64;
    if mse == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(10.0 * (1.0 / mse).log10())
}

/// The pair checks of both PSNRs: same size, not empty.
fn check_psnr_pair(a: &RgbF32<'_>, b: &RgbF32<'_>) -> Result<(), QualityError> {
    check_pair(a, b)?;
    if a.width == 0 || a.height == 0 {
        return Err(QualityError::TooSmall {
            metric: "PSNR",
            width: a.width,
            height: a.height,
            min: 1,
        });
    }
    Ok(())
}

/// Mean error `a − b` per RGB channel (both clamped to [0, 1]), in 0–255 units: the global
/// colour and brightness cast of `a` against `b`.
pub fn mean_error(a: RgbF32<'_>, b: RgbF32<'_>) -> Result<[f64; 3], QualityError> {
    check_psnr_pair(&a, &b)?;
    let n = (a.width * a.height) as f64;
    let mut bias = [0f64; 3];
    for (pa, pb) in a.data.chunks_exact(3).zip(b.data.chunks_exact(3)) {
        for c in 0..3 {
            bias[c] += (clamp01(pa[c]) - clamp01(pb[c])) / n;
        }
    }
    Ok(bias.map(|v| v * 255.0))
}

/// PSNR (RGB, peak 1) after removing `a`'s mean per-channel error against `b`: a global colour
/// or brightness cast does not count, so the gap to [`psnr`] measures it.
pub fn psnr_debiased(a: RgbF32<'_>, b: RgbF32<'_>) -> Result<f64, QualityError> {
    let bias = mean_error(a, b)?.map(|v| v / 255.0);
    let mut sse = 0f64;
    for (pa, pb) in a.data.chunks_exact(3).zip(b.data.chunks_exact(3)) {
        for c in 0..3 {
            let d = clamp01(pa[c]) - clamp01(pb[c]) - bias[c];
            sse += d * d;
        }
    }
    let mse = sse / a.data.len() as f64;
    if mse == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(10.0 * (1.0 / mse).log10())
}

/// Mean structural similarity between `a` and `b` (see the module docs for the
/// exact definition). Both images must be at least 11×11.
pub fn ssim(a: RgbF32<'_>, b: RgbF32<'_>, channel: Channel) -> Result<f64, QualityError> {
    check_pair(&a, &b)?;
    if a.width < WIN || a.height < WIN {
        return Err(QualityError::TooSmall {
            metric: "SSIM",
            width: a.width,
            height: a.height,
            min: WIN,
        });
    }
    let kernel = gaussian_kernel();
    let pa = planes(&a, channel);
    let pb = planes(&b, channel);
    let total: f64 = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| ssim_plane(x, y, a.width, a.height, &kernel))
        .sum();
    Ok(total / pa.len() as f64)
}

fn check_image(img: &RgbF32<'_>) -> Result<(), QualityError> {
    let expected = img
        .width
        .checked_mul(img.height)
        .and_then(|n| n.checked_mul(3))
        .unwrap_or(usize::MAX);
    if img.data.len() != expected {
        return Err(QualityError::BufferLength {
            width: img.width,
            height: img.height,
            expected,
            len: img.data.len(),
        });
    }
    Ok(())
}

fn check_pair(a: &RgbF32<'_>, b: &RgbF32<'_>) -> Result<(), QualityError> {
    check_image(a)?;
    check_image(b)?;
    if a.width != b.width || a.height != b.height {
        return Err(QualityError::SizeMismatch {
            a_width: a.width,
            a_height: a.height,
            b_width: b.width,
            b_height: b.height,
        });
    }
    Ok(())
}

/// Clamp to `[0, 1]` and widen. NaN stays NaN.
#[inline]
fn clamp01(v: f32) -> f64 {
    f64::from(v.clamp(0.0, 1.0))
}

/// BT.601 luma of one clamped RGB pixel, in `[16/255, 235/255]`.
#[inline]
fn luma(px: &[f32]) -> f64 {
    let (r, g, b) = (clamp01(px[0]), clamp01(px[1]), clamp01(px[2]));
    (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
}

/// Splits an image into clamped `f64` planes: three (R, G, B) or one (Y).
fn planes(img: &RgbF32<'_>, channel: Channel) -> Vec<Vec<f64>> {
    let n = img.width * img.height;
    match channel {
        Channel::Rgb => {
            let mut out: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(n)).collect();
            for px in img.data.chunks_exact(3) {
                for (plane, &v) in out.iter_mut().zip(px) {
                    plane.push(clamp01(v));
                }
            }
            out
        }
        Channel::Y => vec![img.data.chunks_exact(3).map(luma).collect()],
    }
}

/// 1-D Gaussian taps `exp(-x² / 2σ²)`, `x = -5..=5`, normalised to sum 1
/// (as `scipy.ndimage.gaussian_filter` builds them).
fn gaussian_kernel() -> [f64; WIN] {
    let mut k = [0.0f64; WIN];
    for (i, w) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *w = (-0.5 / (SIGMA * SIGMA) * x * x).exp();
    }
    let sum: f64 = k.iter().sum();
    for w in &mut k {
        *w /= sum;
    }
    k
}

/// Mean SSIM of one plane pair over the valid region (window fully inside).
///
/// Separable filtering: a horizontal pass over every row that produces only the
/// valid columns, then a vertical pass that produces only the valid rows. The five
/// local moments (μx, μy, E[x²], E[y²], E[xy]) are filtered together.
fn ssim_plane(x: &[f64], y: &[f64], width: usize, height: usize, k: &[f64; WIN]) -> f64 {
    debug_assert!(width >= WIN && height >= WIN);
    debug_assert_eq!(x.len(), width * height);
    debug_assert_eq!(y.len(), width * height);
    let out_w = width - (WIN - 1);
    let out_h = height - (WIN - 1);

    // Horizontal pass: height rows × out_w valid columns, five moments each.
    let mut horiz = vec![[0.0f64; 5]; height * out_w];
    for ((xr, yr), out) in x
        .chunks_exact(width)
        .zip(y.chunks_exact(width))
        .zip(horiz.chunks_exact_mut(out_w))
    {
        for ((xs, ys), o) in xr.windows(WIN).zip(yr.windows(WIN)).zip(out.iter_mut()) {
            let mut m = [0.0f64; 5];
            for ((&u, &v), &w) in xs.iter().zip(ys).zip(k) {
                m[0] += w * u;
                m[1] += w * v;
                m[2] += w * (u * u);
                m[3] += w * (v * v);
                m[4] += w * (u * v);
            }
            *o = m;
        }
    }

    // Vertical pass, one valid output row at a time, then the SSIM map row.
    let mut acc = vec![[0.0f64; 5]; out_w];
    let mut total = 0.0f64;
    for r in 0..out_h {
        acc.fill([0.0; 5]);
        for (t, &w) in k.iter().enumerate() {
            let row = &horiz[(r + t) * out_w..(r + t + 1) * out_w];
            for (a, m) in acc.iter_mut().zip(row) {
                a[0] += w * m[0];
                a[1] += w * m[1];
                a[2] += w * m[2];
                a[3] += w * m[3];
                a[4] += w * m[4];
            }
        }
        let mut row_sum = 0.0f64;
        for &[ux, uy, uxx, uyy, uxy] in &acc {
            let vx = uxx - ux * ux;
            let vy = uyy - uy * uy;
            let vxy = uxy - ux * uy;
            let num = (2.0 * ux * uy + C1) * (2.0 * vxy + C2);
            let den = (ux * ux + uy * uy + C1) * (vx + vy + C2);
            row_sum += num / den;
        }
        total += row_sum;
    }
    total / (out_w * out_h) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic smooth-ish test pattern in [0, 0.8].
    fn pattern(width: usize, height: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(width * height * 3);
        for yy in 0..height {
            for xx in 0..width {
                for c in 0..3 {
                    let t = (xx * 7 + yy * 13 + c * 29) % 41;
                    v.push(0.8 * t as f32 / 40.0);
                }
            }
        }
        v
    }

    fn img(width: usize, height: usize, data: &[f32]) -> RgbF32<'_> {
        RgbF32 {
            width,
            height,
            data,
        }
    }

    #[test]
    fn identical_images() {
        let d = pattern(23, 17);
        for ch in [Channel::Rgb, Channel::Y] {
            let p = psnr(img(23, 17, &d), img(23, 17, &d), ch).unwrap();
            assert!(p.is_infinite() && p > 0.0, "{ch:?}: {p}");
            let s = ssim(img(23, 17, &d), img(23, 17, &d), ch).unwrap();
            assert!((s - 1.0).abs() < 1e-12, "{ch:?}: {s}");
        }
    }

    #[test]
    fn identical_after_clamping() {
        let a = vec![1.0f32; 12 * 12 * 3];
        let b = vec![1.5f32; 12 * 12 * 3];
        let p = psnr(img(12, 12, &a), img(12, 12, &b), Channel::Rgb).unwrap();
        assert_eq!(p, f64::INFINITY);
        let s = ssim(img(12, 12, &a), img(12, 12, &b), Channel::Y).unwrap();
        assert!((s - 1.0).abs() < 1e-12, "{s}");
    }

    #[test]
    fn constant_offset_psnr() {
        let a = pattern(31, 19);
        let b: Vec<f32> = a.iter().map(|v| v + 0.1).collect();
        let p = psnr(img(31, 19, &a), img(31, 19, &b), Channel::Rgb).unwrap();
        assert!((p - 20.0).abs() < 1e-4, "{p}");
        // ΔY = 0.1 · (65.481 + 128.553 + 24.966) / 255 = 0.1 · 219 / 255.
        let py = psnr(img(31, 19, &a), img(31, 19, &b), Channel::Y).unwrap();
        let expected_y = 20.0 - 20.0 * (219.0f64 / 255.0).log10();
        assert!((py - expected_y).abs() < 1e-4, "{py} vs {expected_y}");
    }

    #[test]
    fn constant_images_ssim() {
        // Flat images: zero variance, so SSIM = (2ab + C1) / (a² + b² + C1).
        let (ca, cb) = (0.3f32, 0.4f32);
        let a = vec![ca; 15 * 13 * 3];
        let b = vec![cb; 15 * 13 * 3];
        let s = ssim(img(15, 13, &a), img(15, 13, &b), Channel::Rgb).unwrap();
        let (fa, fb) = (f64::from(ca), f64::from(cb));
        let expected = (2.0 * fa * fb + C1) / (fa * fa + fb * fb + C1);
        assert!((s - expected).abs() < 1e-10, "{s} vs {expected}");
    }

    #[test]
    fn ssim_is_symmetric_and_below_one() {
        let a = pattern(20, 14);
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.05 * ((i * 37 % 11) as f32 / 10.0 - 0.5))
            .collect();
        for ch in [Channel::Rgb, Channel::Y] {
            let ab = ssim(img(20, 14, &a), img(20, 14, &b), ch).unwrap();
            let ba = ssim(img(20, 14, &b), img(20, 14, &a), ch).unwrap();
            assert!((ab - ba).abs() < 1e-12, "{ch:?}: {ab} vs {ba}");
            assert!(ab < 1.0 && ab > 0.0, "{ch:?}: {ab}");
        }
    }

    #[test]
    fn kernel_matches_scipy() {
        let k = gaussian_kernel();
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        // scipy.ndimage._gaussian_kernel1d(1.5, 0, 5)[5] and [0]
        assert!((k[5] - 0.266_011_724_861_794_36).abs() < 1e-12, "{}", k[5]);
        assert!((k[0] - 0.001_028_380_084_479_11).abs() < 1e-12, "{}", k[0]);
        assert_eq!(k[0], k[10]);
    }

    #[test]
    fn size_mismatch_errors() {
        let a = pattern(12, 11);
        let b = pattern(11, 12);
        let e = psnr(img(12, 11, &a), img(11, 12, &b), Channel::Rgb).unwrap_err();
        assert!(matches!(
            e,
            QualityError::SizeMismatch {
                a_width: 12,
                a_height: 11,
                b_width: 11,
                b_height: 12
            }
        ));
        assert!(e.to_string().contains("12x11") && e.to_string().contains("11x12"));
        let e = ssim(img(12, 11, &a), img(11, 12, &b), Channel::Y).unwrap_err();
        assert!(matches!(e, QualityError::SizeMismatch { .. }));
    }

    #[test]
    fn too_small_for_ssim_window() {
        let a = pattern(10, 20);
        let e = ssim(img(10, 20, &a), img(10, 20, &a), Channel::Rgb).unwrap_err();
        assert!(matches!(
            e,
            QualityError::TooSmall {
                width: 10,
                height: 20,
                min: 11,
                ..
            }
        ));
        assert!(e.to_string().contains("10x20") && e.to_string().contains("11x11"));
        // PSNR has no window; the same images are fine.
        assert!(psnr(img(10, 20, &a), img(10, 20, &a), Channel::Rgb).is_ok());
        let e = psnr(img(0, 0, &[]), img(0, 0, &[]), Channel::Rgb).unwrap_err();
        assert!(matches!(e, QualityError::TooSmall { .. }));
    }

    #[test]
    fn bad_buffer_length() {
        let a = pattern(12, 12);
        let e = psnr(img(12, 13, &a), img(12, 13, &a), Channel::Rgb).unwrap_err();
        assert!(matches!(
            e,
            QualityError::BufferLength {
                expected: 468,
                len: 432,
                ..
            }
        ));
    }

    #[test]
    fn channel_serde_and_default() {
        assert_eq!(Channel::default(), Channel::Rgb);
        assert_eq!(serde_json::to_string(&Channel::Rgb).unwrap(), "\"rgb\"");
        assert_eq!(serde_json::to_string(&Channel::Y).unwrap(), "\"y\"");
        let c: Channel = serde_json::from_str("\"y\"").unwrap();
        assert_eq!(c, Channel::Y);
    }
}
