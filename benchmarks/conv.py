"""Convolution throughput on AlexNet's five convolution layers. Reported, never asserted.

im2col in numpy, F.unfold and one matrix product in torch, torch's own F.conv2d, and, for scale, a
numpy loop over output pixels.

    python benchmarks/conv.py [--impl solutions|exercises|FOLDER] [--batch 8] [--rounds 5]

On the CPU: the numpy conv2d_forward (forward) and conv2d_forward + conv2d_backward (training step),
conv2d_unfold and F.conv2d, float32, with the threads torch and numpy choose. On a CUDA device, when
there is one: conv2d_unfold and F.conv2d (cuDNN) in float32 (TF32 off, then on) and bfloat16, timed
with CUDA events. Throughput is 2 * N * C_out * OH * OW * C * kh * kw floating-point operations per
second of the median round.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from graders.impl import load

# AlexNet's convolutions (Krizhevsky et al., 2012, one tower's width doubled: torchvision's layout):
# name, (C, H, W) of the input, C_out, kernel, stride, padding.
LAYERS = [
    ("conv1 11x11/4", (3, 227, 227), 96, 11, 4, 0),
    ("conv2 5x5", (96, 27, 27), 256, 5, 1, 2),
    ("conv3 3x3", (256, 13, 13), 384, 3, 1, 1),
    ("conv4 3x3", (384, 13, 13), 384, 3, 1, 1),
    ("conv5 3x3", (384, 13, 13), 256, 3, 1, 1),
]


def flops(n, chw, c_out, k, stride, padding):
    c, h, w = chw
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    return 2 * n * c_out * oh * ow * c * k * k


def median_seconds(fn, rounds, cuda=False):
    fn()  # warm up: allocations, kernel selection, lazy initialisation
    times = []
    for _ in range(rounds):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name, what, seconds, work):
    print(f"{name:<15} {what:<34} {seconds * 1e3:9.2f} ms {work / seconds / 1e9:9.1f} GFLOP/s")


def pixel_loop(x, w, b, stride, padding):
    """The convolution as one small matrix product per output pixel: what im2col replaces."""
    n, _, h, wd = x.shape
    c_out, _, k, _ = w.shape
    oh, ow = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    wm, out = w.reshape(c_out, -1).T, np.empty((n, c_out, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
            out[:, :, i, j] = patch.reshape(n, -1) @ wm + b
    return out


def training_step(m, x, w, b, dout, stride, padding):
    _, cache = m.conv2d_forward(x, w, b, stride, padding)
    m.conv2d_backward(dout, cache)


def cpu(m, args):
    print(f"CPU, float32, batch {args.batch}, torch threads {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    for name, chw, c_out, k, s, p in LAYERS:
        x = rng.normal(size=(args.batch, *chw)).astype(np.float32)
        w = (rng.normal(size=(c_out, chw[0], k, k)) / np.sqrt(chw[0] * k * k)).astype(np.float32)
        b = np.zeros(c_out, np.float32)
        work = flops(args.batch, chw, c_out, k, s, p)
        dout = np.ones_like(m.conv2d_forward(x, w, b, s, p)[0])
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        runs = [
            ("numpy conv2d_forward", functools.partial(m.conv2d_forward, x, w, b, s, p), 1),
            # A training step computes three products the size of the forward's: out, dx and dw.
            (
                "numpy forward + backward",
                functools.partial(training_step, m, x, w, b, dout, s, p),
                3,
            ),
            ("numpy loop over pixels", functools.partial(pixel_loop, x, w, b, s, p), 1),
            ("torch conv2d_unfold", functools.partial(m.conv2d_unfold, xt, wt, bt, s, p), 1),
            ("torch F.conv2d", functools.partial(F.conv2d, xt, wt, bt, s, p), 1),
        ]
        with torch.no_grad():
            for what, fn, products in runs:
                row(name, what, median_seconds(fn, args.rounds), products * work)


def gpu(m, args):
    print(f"\nCUDA: {torch.cuda.get_device_name()}, batch {args.gpu_batch}")
    g = torch.Generator(device="cuda").manual_seed(0)
    for name, chw, c_out, k, s, p in LAYERS:
        work = flops(args.gpu_batch, chw, c_out, k, s, p)
        for dtype, tf32 in [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            x = torch.randn(args.gpu_batch, *chw, device="cuda", generator=g).to(dtype)
            w = torch.randn(c_out, chw[0], k, k, device="cuda", generator=g).to(dtype)
            b = torch.zeros(c_out, device="cuda", dtype=dtype)
            label = str(dtype).removeprefix("torch.") + (" tf32" if tf32 else "")
            with torch.no_grad():
                for what, fn in [
                    (f"conv2d_unfold {label}", functools.partial(m.conv2d_unfold, x, w, b, s, p)),
                    (f"F.conv2d {label}", functools.partial(F.conv2d, x, w, b, s, p)),
                ]:
                    row(name, what, median_seconds(fn, args.rounds, cuda=True), work)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--impl", default="solutions", help="solutions (default), exercises, or a folder"
    )
    parser.add_argument("--batch", type=int, default=8, help="images per batch on the CPU")
    parser.add_argument("--gpu-batch", type=int, default=128, help="images per batch on CUDA")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-cpu", action="store_true", help="only the CUDA half")
    args = parser.parse_args()
    m = load("conv", args.impl)
    if not args.no_cpu:
        cpu(m, args)
    if torch.cuda.is_available():
        gpu(m, args)
    else:
        print("\nno CUDA device here: the GPU half is skipped")


if __name__ == "__main__":
    main()
