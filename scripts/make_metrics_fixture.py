#!/usr/bin/env python3
"""Regenerate the PSNR/SSIM reference fixture in tests/fixtures/metrics/.

The fixture pins `noiseda::metrics` (src/metrics.rs) to scikit-image's
reference implementation; tests/metrics_fixture.rs checks against it.

How to regenerate (from the crate root):

    pip install scikit-image==0.26.0 numpy pillow
    python3 scripts/make_metrics_fixture.py

Output is deterministic for a given scikit-image / numpy version (fixed
crops, fixed synthetic pattern, seeded noise). What it writes:

  gt_<name>.png, noisy_<name>.png   uint8 RGB pairs, odd / non-square sizes
  expected.json                     reference values for every pair

Reference values are computed on float64 images = uint8 / 255, read back
from the written PNGs (PNG is lossless, so this is what the Rust test sees):

  psnr     skimage.metrics.peak_signal_noise_ratio(gt, noisy, data_range=1)
  ssim     skimage.metrics.structural_similarity(gt, noisy, channel_axis=2,
               data_range=1.0, gaussian_weights=True, sigma=1.5,
               use_sample_covariance=False)
  psnr_y   as psnr, on the BT.601 luma plane (below), data_range=1
  ssim_y   as ssim, on the luma plane (2-D, no channel_axis), data_range=1

  Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255   (R, G, B in [0, 1];
      the BasicSR / MATLAB rgb2ycbcr convention, so Y is in [16/255, 235/255])

Image sources: crops of skimage.data.astronaut (public domain, NASA) and
skimage.data.coffee (CC0), plus a synthetic gradient-and-shapes pattern.
"""

import json
from pathlib import Path

import numpy as np
import skimage
import skimage.data
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "metrics"


def synthetic(width: int, height: int) -> np.ndarray:
    """Smooth gradients plus hard-edged shapes, with saturated (0 / 255) areas."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u = xx / (width - 1)
    v = yy / (height - 1)
    r = 255.0 * u
    g = 255.0 * (0.5 + 0.5 * np.sin(2.0 * np.pi * (1.5 * u + v)))
    b = 255.0 * v
    img = np.stack([r, g, b], axis=-1)
    # A pure-white disc and a pure-black rectangle: noise there must clip.
    disc = (xx - 0.3 * width) ** 2 + (yy - 0.45 * height) ** 2 < (0.22 * height) ** 2
    img[disc] = 255.0
    img[int(0.55 * height) : int(0.85 * height), int(0.6 * width) : int(0.9 * width)] = 0.0
    # A mid-grey diagonal stripe.
    stripe = np.abs((xx - width / 2) - (yy - height / 2)) < 2.5
    img[stripe] = 128.0
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def add_noise(gt: np.ndarray, sigma255: float, seed: int) -> tuple[np.ndarray, int]:
    """gt + N(0, sigma^2) in uint8 units, rounded and clipped; also returns how many
    values fell outside [0, 255] before clipping."""
    rng = np.random.default_rng(seed)
    noisy = gt.astype(np.float64) + rng.normal(0.0, sigma255, size=gt.shape)
    noisy = np.round(noisy)
    n_clipped = int(np.count_nonzero((noisy < 0) | (noisy > 255)))
    return np.clip(noisy, 0, 255).astype(np.uint8), n_clipped


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma, float64 RGB in [0, 1] -> Y in [16/255, 235/255]."""
    return (16.0 + 65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def load(path: Path) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB"))
    return arr.astype(np.float64) / 255.0


def ssim_ref(a: np.ndarray, b: np.ndarray, channel_axis) -> float:
    return float(
        structural_similarity(
            a,
            b,
            channel_axis=channel_axis,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    # (name, gt image, noise sigma in uint8 units, seed); sizes are width x height.
    pairs = [
        # 37 x 29 crop of the astronaut's face (eyes, nose), light noise.
        ("astronaut_37x29", skimage.data.astronaut()[100:129, 200:237], 5.0, 1),
        # 64 x 48 synthetic pattern with saturated regions, medium noise (clips).
        ("synthetic_64x48", synthetic(64, 48), 15.0, 2),
        # 23 x 71 tall crop of the coffee image, heavy noise (clips).
        ("coffee_23x71", skimage.data.coffee()[150:221, 300:323], 40.0, 3),
    ]

    entries = []
    for name, gt, sigma, seed in pairs:
        gt = np.ascontiguousarray(gt, dtype=np.uint8)
        assert gt.ndim == 3 and gt.shape[2] == 3, gt.shape
        noisy, n_clipped = add_noise(gt, sigma, seed)
        gt_file, noisy_file = f"gt_{name}.png", f"noisy_{name}.png"
        Image.fromarray(gt).save(OUT_DIR / gt_file, optimize=True)
        Image.fromarray(noisy).save(OUT_DIR / noisy_file, optimize=True)

        a = load(OUT_DIR / gt_file)
        b = load(OUT_DIR / noisy_file)
        assert np.array_equal(np.round(a * 255).astype(np.uint8), gt)
        assert np.array_equal(np.round(b * 255).astype(np.uint8), noisy)
        ya, yb = rgb_to_y(a), rgb_to_y(b)

        entry = {
            "name": name,
            "gt": gt_file,
            "noisy": noisy_file,
            "width": int(gt.shape[1]),
            "height": int(gt.shape[0]),
            "noise_sigma_255": sigma,
            "seed": seed,
            "values_clipped": n_clipped,
            "psnr": float(peak_signal_noise_ratio(a, b, data_range=1.0)),
            "ssim": ssim_ref(a, b, channel_axis=2),
            "psnr_y": float(peak_signal_noise_ratio(ya, yb, data_range=1.0)),
            "ssim_y": ssim_ref(ya, yb, channel_axis=None),
        }
        entries.append(entry)
        print(
            f"{name:18s} {entry['width']:3d}x{entry['height']:<3d} sigma={sigma:4.1f} "
            f"clipped={n_clipped:4d}  psnr={entry['psnr']:.6f} ssim={entry['ssim']:.8f} "
            f"psnr_y={entry['psnr_y']:.6f} ssim_y={entry['ssim_y']:.8f}"
        )

    assert any(e["values_clipped"] > 0 for e in entries), "no pair exercises clipping"

    expected = {
        "generator": "scripts/make_metrics_fixture.py",
        "skimage_version": skimage.__version__,
        "numpy_version": np.__version__,
        "conventions": {
            "input": "float64 = uint8 / 255",
            "psnr": "peak_signal_noise_ratio(data_range=1.0)",
            "ssim": "structural_similarity(channel_axis=2, data_range=1.0, "
            "gaussian_weights=True, sigma=1.5, use_sample_covariance=False)",
            "y": "Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, data_range=1.0",
        },
        "pairs": entries,
    }
    with open(OUT_DIR / "expected.json", "w") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
