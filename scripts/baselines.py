#!/usr/bin/env python3
"""Classical denoising baselines on a paired folder, scored exactly as `noiseda eval` scores.

What a user would pick instead of a learned restorer, side by side with it:

  input   the noisy image itself (do nothing)
  cbm3d   bm3d.bm3d_rgb (PyPI `bm3d`), parameter: sigma (0-255 units)
  tv      skimage.restoration.denoise_tv_chambolle, parameter: weight
  nlm     cv2.fastNlMeansDenoisingColored (opencv-python-headless), parameters: h, hColor

Metrics follow `noiseda eval` (src/metrics.rs, pinned to scikit-image by
tests/fixtures/metrics): images as float64 = uint8 / 255 clamped to [0, 1], RGB PSNR with
peak 1 over all pixels and channels, SSIM with an 11x11 Gaussian window (sigma 1.5),
population covariance, averaged over the valid region and the three channels; the mean over
images of the per-image values. `--check-fixture` recomputes that fixture and fails on any
difference above 1e-9.

Parameters are never chosen on the images they are reported on:
  --tune-noisy/--tune-gt DIR   choose each method's parameter on that paired set, or
  --folds K (default 2)        cross-fitting: images sorted by name are split into K folds by
                               index (i % K); each fold is denoised with the parameter that
                               scored best on the other folds.
  --fixed                      use the first value of each grid (no choice at all).

Usage:
  python3 scripts/baselines.py --noisy DIR --gt DIR [--methods input,cbm3d,tv,nlm] [--json]
  python3 scripts/baselines.py --check-fixture

Needs: pip install bm3d scikit-image opencv-python-headless numpy pillow
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}

# Grids searched per method (the first value is the --fixed choice).
GRIDS = {
    "input": [None],
    "cbm3d": [{"sigma": s} for s in (15.0, 10.0, 20.0)],
    "tv": [{"weight": w} for w in (0.015, 0.01, 0.02, 0.03)],
    "nlm": [{"h": h, "hColor": hc} for h, hc in ((3, 2), (3, 3), (4, 3), (5, 4))],
}
LABELS = {
    "input": "noisy input (do nothing)",
    "cbm3d": "CBM3D (PyPI bm3d, bm3d_rgb)",
    "tv": "TV (skimage denoise_tv_chambolle)",
    "nlm": "NLM (OpenCV fastNlMeansDenoisingColored)",
}


def load(path: Path) -> np.ndarray:
    """uint8 HWC RGB (grayscale and RGBA are converted, as noiseda does)."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def as_float(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    return np.clip(img.astype(np.float64), 0.0, 1.0)


def psnr(out, gt) -> float:
    return float(peak_signal_noise_ratio(as_float(gt), as_float(out), data_range=1.0))


def ssim(out, gt) -> float:
    return float(
        structural_similarity(
            as_float(gt),
            as_float(out),
            channel_axis=2,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def denoise(method: str, noisy: np.ndarray, params) -> np.ndarray:
    """The method's output as uint8 (what a user would save), so metrics see 8-bit images."""
    if method == "input":
        return noisy
    x = noisy.astype(np.float64) / 255.0
    if method == "cbm3d":
        import bm3d

        y = bm3d.bm3d_rgb(x, sigma_psd=params["sigma"] / 255.0)
    elif method == "tv":
        from skimage.restoration import denoise_tv_chambolle

        y = denoise_tv_chambolle(x, weight=params["weight"], channel_axis=-1)
    elif method == "nlm":
        import cv2

        bgr = cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR)
        out = cv2.fastNlMeansDenoisingColored(bgr, None, params["h"], params["hColor"], 7, 21)
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    else:
        raise SystemExit(f"unknown method `{method}`; expected one of {', '.join(GRIDS)}")
    return (np.clip(y, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def pairs(noisy_dir: Path, gt_dir: Path, max_images: int = 0):
    for d in (noisy_dir, gt_dir):
        if not d.is_dir():
            raise SystemExit(f"{d}: not a folder")
    names = sorted(p.name for p in noisy_dir.iterdir() if p.suffix.lower() in EXTS)
    out = []
    for n in names:
        g = gt_dir / n
        if not g.exists():
            raise SystemExit(f"{noisy_dir / n} has no target {g}")
        a, b = load(noisy_dir / n), load(g)
        if a.shape != b.shape:
            raise SystemExit(f"{n}: size {a.shape} vs target {b.shape}")
        out.append((n, a, b))
    if not out:
        raise SystemExit(f"{noisy_dir} holds no images")
    return out[:max_images] if max_images > 0 else out


def scores(method, items, params, cache):
    """(psnr, ssim) per image for one parameter choice; cached by (method, params, name)."""
    res = []
    for name, noisy, gt in items:
        key = (method, json.dumps(params, sort_keys=True), name)
        if key not in cache:
            out = denoise(method, noisy, params)
            cache[key] = (psnr(out, gt), ssim(out, gt))
        res.append(cache[key])
    return res


def choose(method, items, cache):
    grid = GRIDS[method]
    if len(grid) == 1 or not items:
        return grid[0]
    best = max(grid, key=lambda p: np.mean([s[0] for s in scores(method, items, p, cache)]))
    return best


def run(args):
    items = pairs(Path(args.noisy), Path(args.gt), args.max_images)
    tune = pairs(Path(args.tune_noisy), Path(args.tune_gt)) if args.tune_noisy else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cache = {}
    rows = []
    for m in methods:
        if m not in GRIDS:
            raise SystemExit(f"unknown method `{m}`; expected one of {', '.join(GRIDS)}")
        t0 = time.time()
        per_image = [None] * len(items)
        chosen = []
        if args.fixed or len(GRIDS[m]) == 1:
            folds = [(list(range(len(items))), GRIDS[m][0])]
            how = "fixed"
        elif tune is not None:
            folds = [(list(range(len(items))), choose(m, tune, cache))]
            how = f"chosen on {args.tune_noisy}"
        else:
            k = max(2, min(args.folds, len(items)))
            folds = []
            for f in range(k):
                held = [i for i in range(len(items)) if i % k == f]
                rest = [items[i] for i in range(len(items)) if i % k != f]
                folds.append((held, choose(m, rest, cache)))
            how = f"{k}-fold cross-fitting (chosen on the other folds)"
        for held, p in folds:
            chosen.append(p)
            sub = [items[i] for i in held]
            for i, s in zip(held, scores(m, sub, p, cache)):
                per_image[i] = {"name": items[i][0], "psnr": s[0], "ssim": s[1], "params": p}
        rows.append(
            {
                "method": m,
                "label": LABELS[m],
                "psnr": float(np.mean([r["psnr"] for r in per_image])),
                "ssim": float(np.mean([r["ssim"] for r in per_image])),
                "images": len(items),
                "params": chosen,
                "selection": how,
                "seconds": time.time() - t0,
                "per_image": per_image,
            }
        )
        print(
            f"{m:6s} PSNR {rows[-1]['psnr']:.3f} dB  SSIM {rows[-1]['ssim']:.4f}  "
            f"params {chosen}  ({how}, {rows[-1]['seconds']:.0f} s)",
            file=sys.stderr,
        )
    report = {
        "noisy": str(args.noisy),
        "gt": str(args.gt),
        "metrics": "RGB PSNR (peak 1) and SSIM as noiseda eval (src/metrics.rs)",
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("| baseline | params | PSNR (dB) | SSIM |")
        print("|---|---|---|---|")
        for r in rows:
            p = "; ".join(json.dumps(x) for x in r["params"]) if r["params"][0] else "—"
            print(f"| {r['label']} | {p} | {r['psnr']:.3f} | {r['ssim']:.4f} |")


def check_fixture():
    d = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "metrics"
    exp = json.loads((d / "expected.json").read_text())
    worst = 0.0
    for p in exp["pairs"]:
        gt, noisy = load(d / p["gt"]), load(d / p["noisy"])
        for key, got in (("psnr", psnr(noisy, gt)), ("ssim", ssim(noisy, gt))):
            diff = abs(got - p[key])
            worst = max(worst, diff)
            if diff > 1e-9:
                raise SystemExit(f"{p['name']} {key}: {got} vs fixture {p[key]}")
    print(f"metrics match tests/fixtures/metrics ({len(exp['pairs'])} pairs, worst {worst:.1e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--noisy")
    ap.add_argument("--gt")
    ap.add_argument("--methods", default="input,cbm3d,tv,nlm")
    ap.add_argument("--tune-noisy")
    ap.add_argument("--tune-gt")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--fixed", action="store_true")
    ap.add_argument("--max-images", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check-fixture", action="store_true")
    args = ap.parse_args()
    if args.check_fixture:
        check_fixture()
        if not args.noisy:
            return
    if not (args.noisy and args.gt):
        ap.error("give --noisy DIR --gt DIR (or --check-fixture)")
    if bool(args.tune_noisy) != bool(args.tune_gt):
        ap.error("--tune-noisy and --tune-gt go together")
    run(args)


if __name__ == "__main__":
    main()
