#!/usr/bin/env python3
"""PyTorch reference timings for `noiseda bench --compare`: the same networks (scripts/torch_nets.py,
the official architectures), shapes, thread count and step contents as noiseda's benchmark
cases, with random weights. Run one case per process (so peak RSS is the case's own) and print
one JSON object.

    python3 bench/reference.py --case train-vanilla --threads 2 --warmup 2 --runs 7
    python3 bench/reference.py --case matmul-peak --threads 2

Cases: train-vanilla (Unet-T, batch 8, 64x64: Charbonnier, backward, Adam step),
train-joint (Unet-T + Diffusion-T with 2 res blocks, middle attention, dropout 0.2: the
Denoising-as-Adaptation step of method.md §6.3, backward, one Adam over both nets),
restore-512 (Unet-S forward on 1x3x512x512), restore-8x256 (Unet-S forward on 8x3x256x256),
train-joint-paper (Unet-S + Diffusion-B, batch 8, 128x128: the paper's setting), restore-8x512
(Unet-S forward on 8x3x512x512), matmul-peak (2048^3 f32 matmul GFLOP/s).

--device cuda[:N] runs them on a GPU: each run ends with torch.cuda.synchronize(), cuDNN picks
its algorithms (benchmark mode), and TF32 is off, so both sides compute in full f32.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from torch_nets import DiffusionUNet, RestorationNet, charbonnier, joint_step, linear_gammas  # noqa: E402


DEVICE = torch.device("cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def rand(*shape):
    return torch.rand(*shape, device=DEVICE)


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def case_fn(case, seed=0):
    torch.manual_seed(seed)
    if case == "train-vanilla":
        g = RestorationNet(depth=4, wf=32).train().to(DEVICE)
        opt = torch.optim.Adam(g.parameters(), lr=1e-4)
        x = rand(8, 3, 64, 64)
        y = rand(8, 3, 64, 64)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = charbonnier(x + g(x), y)
            loss.backward()
            opt.step()

        return step
    if case in ("train-joint", "train-joint-paper"):
        paper = case == "train-joint-paper"
        g = RestorationNet(depth=4, wf=64 if paper else 32).train().to(DEVICE)
        if paper:  # Diffusion-B
            d = DiffusionUNet(inner_channel=64, channel_mults=(1, 2, 4, 8), res_blocks=2,
                              dropout=0.2)
        else:  # Diffusion-T
            d = DiffusionUNet(inner_channel=32, channel_mults=(1, 1, 2, 2), res_blocks=2,
                              dropout=0.2)
        d = d.train().to(DEVICE)
        opt = torch.optim.Adam(list(g.parameters()) + list(d.parameters()), lr=1e-4)
        gammas_table = torch.from_numpy(linear_gammas()).float().to(DEVICE)
        b, side = 8, (128 if paper else 64)

        def step():
            t = torch.randint(1, 1000, (b,), device=DEVICE)
            lo, hi = gammas_table[t - 1], gammas_table[t]
            inp = dict(
                x_s=rand(b, 3, side, side), y_s=rand(b, 3, side, side),
                x_r=rand(b, 3, side, side),
                eps=torch.randn(b, 3, side, side, device=DEVICE),
                gammas=lo + (hi - lo) * rand(b),
                mask_pos=(rand(b, 1, 1, 1) > 0.5).float(),
                mask_neg=(rand(b, 1, 1, 1) > 0.5).float(),
            )
            opt.zero_grad(set_to_none=True)
            out = joint_step(g, d, inp, lam=0.2)
            out["loss"].backward()
            opt.step()

        return step
    if case in ("restore-512", "restore-8x256", "restore-8x512"):
        g = RestorationNet(depth=4, wf=64).eval().to(DEVICE)
        x = {"restore-512": lambda: rand(1, 3, 512, 512),
             "restore-8x256": lambda: rand(8, 3, 256, 256),
             "restore-8x512": lambda: rand(8, 3, 512, 512)}[case]()

        def fwd():
            with torch.no_grad():
                x + g(x)

        return fwd
    raise SystemExit(f"unknown case {case}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    global DEVICE
    DEVICE = torch.device(a.device)
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if a.case == "matmul-peak":
        m = rand(2048, 2048)
        times = timed(lambda: m @ m, 2, 5)
        gflops = 2 * 2048**3 / (statistics.median(times) / 1e3) / 1e9
        print(json.dumps({"case": a.case, "gflops": gflops, "torch": torch.__version__}))
        return
    fn = case_fn(a.case)
    times = timed(fn, a.warmup, a.runs)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "case": a.case,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "runs_ms": times,
        "peak_rss_mb": peak_kb / 1024.0,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(DEVICE),
    }))


if __name__ == "__main__":
    np.random.seed(0)
    main()
