#!/usr/bin/env python3
"""Label-free noise statistics of a folder of noisy images, to match a synthetic recipe to an
unlabeled real domain (README "Real camera noise").

In every image, the 16x16 patches with the lowest gradient energy (the flattest 5 %) are taken
as "signal ~ constant"; in each, a fitted plane is removed and what is left is treated as
noise. Reported (medians over patches): the noise std per channel (0-255 units), the
autocorrelation at 1, 2 and 4 pixels (mean of horizontal and vertical) and the correlation
between the R and B channels. No ground truth is read.

Usage: python3 scripts/noise_stats.py DIR [DIR ...]
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

P = 16


def patches(x):
    h, w = x.shape[0] // P * P, x.shape[1] // P * P
    x = x[:h, :w]
    t = x.reshape(h // P, P, w // P, P, 3).transpose(0, 2, 1, 3, 4).reshape(-1, P, P, 3)
    return t


def stats(d):
    yy, xx = np.mgrid[0:P, 0:P].astype(np.float64)
    A = np.stack([np.ones(P * P), yy.ravel(), xx.ravel()], 1)
    pinv = np.linalg.pinv(A)
    rows = []
    for f in sorted(Path(d).iterdir()):
        if f.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"}:
            continue
        x = np.asarray(Image.open(f).convert("RGB"), dtype=np.float64)
        t = patches(x)
        # Residual after a plane fit, per channel.
        flat = t.reshape(len(t), P * P, 3)
        coef = np.einsum("kp,npc->nkc", pinv, flat)
        res = flat - np.einsum("pk,nkc->npc", A, coef)
        energy = (res ** 2).mean((1, 2))
        # Flattest 5 % of the patches that are not exactly constant (saturated or synthetic).
        order = [i for i in np.argsort(energy) if energy[i] > 1e-6]
        keep = order[: max(1, len(t) // 20)]
        r = res[keep].reshape(-1, P, P, 3)
        std = r.std((1, 2)).mean(0)
        ac = []
        for k in (1, 2, 4):
            h = (r[:, :, :-k] * r[:, :, k:]).mean((1, 2, 3)) / (r * r).mean((1, 2, 3))
            v = (r[:, :-k] * r[:, k:]).mean((1, 2, 3)) / (r * r).mean((1, 2, 3))
            ac.append(np.median((h + v) / 2))
        rb = np.median(
            (r[..., 0] * r[..., 2]).mean((1, 2))
            / np.sqrt((r[..., 0] ** 2).mean((1, 2)) * (r[..., 2] ** 2).mean((1, 2)) + 1e-12)
        )
        rows.append(list(std) + ac + [rb])
    return np.median(np.array(rows), 0)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(f"{'folder':40s} std R G B (0-255) | autocorr 1 2 4 px | corr R-B")
    for d in sys.argv[1:]:
        s = stats(d)
        print(f"{d[-40:]:40s} {s[0]:.2f} {s[1]:.2f} {s[2]:.2f} | {s[3]:.2f} {s[4]:.2f} {s[5]:.2f} | {s[6]:.2f}")


if __name__ == "__main__":
    main()
