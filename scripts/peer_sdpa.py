#!/usr/bin/env python3
"""Time torch.nn.functional.scaled_dot_product_attention per forced backend.

The PyTorch peer of flashclip's attention benchmark. For every shape (B, H, N, D,
causal), dtype (fp16, bf16), input layout and backend (cuDNN, FlashAttention-2,
memory-efficient, PyTorch's default choice) it times groups of back-to-back calls between
CUDA events after a warm-up (see time_calls) and reports the median, mean and standard
deviation of the per-call times and the TFLOP/s at the median (4*B*H*N*N*D FLOPs, halved
when causal).

Layouts:
  packed      q, k, v are views of one [B, N, 3, H, D] tensor, transposed to
              [B, H, N, D] -- what a fused QKV projection produces
  contiguous  three separate contiguous [B, H, N, D] tensors

A backend that refuses a shape (or is not built) is reported as "n/a".

    python3 scripts/peer_sdpa.py --json sdpa.json
    python3 scripts/peer_sdpa.py --smoke          # tiny shapes on the CPU, checks it runs
"""

import argparse
import json
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# (B, H, N, D, causal)
SHAPES = [
    (16, 16, 577, 64, False),
    (256, 16, 577, 64, False),
    (1, 16, 577, 64, False),
    (16, 16, 257, 64, False),
    (16, 16, 257, 80, False),
    (16, 12, 77, 64, True),
] + [(16, 16, 577, d, False) for d in (96, 104, 112, 128)] + [
    (16, 16, 729, 72, False),  # SigLIP so400m/14 at 384 px
]
SMOKE_SHAPES = [(2, 2, 17, 64, False), (2, 2, 9, 32, True)]

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "default": None,
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("packed", "contiguous")


def make_qkv(b, h, n, d, dtype, device, layout):
    if layout == "packed":
        qkv = torch.randn(b, n, 3, h, d, dtype=dtype, device=device)
        return tuple(qkv[:, :, i].transpose(1, 2) for i in range(3))
    return tuple(torch.randn(b, h, n, d, dtype=dtype, device=device) for _ in range(3))


def time_calls(fn, warmup, iters, device, inner=10):
    """Per-call times in microseconds, GPU time alone: each sample is `inner` back-to-back calls between two CUDA
    events, enqueued while the GPU spins in torch.cuda._sleep, so Python's dispatch cost (larger than the kernel at
    the small shapes) overlaps the spin instead of leaving the GPU idle between calls; flashclip's kernel benches
    queue behind a GPU wait the same way (testing::time_device_us). Wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        enqueue_s = time.perf_counter() - t0
        torch.cuda.synchronize(device)
        # Cycles that outlast enqueueing one sample (its host time, twice over, at ~2 GHz).
        spin = int(2 * enqueue_s * 2e9)
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(spin)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3 / inner)
        return times
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return times


def bench_one(q, k, v, causal, backend, warmup, iters, device):
    """Stats dict, or None when the backend refuses the inputs."""

    def call():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    with warnings.catch_warnings():
        # A refusing backend warns about why before raising; the table says n/a.
        warnings.simplefilter("ignore")
        try:
            if backend is None:
                return stats(time_calls(call, warmup, iters, device))
            with sdpa_kernel([backend]):
                return stats(time_calls(call, warmup, iters, device))
        except RuntimeError:
            return None


def stats(times_us):
    return {
        "median_us": statistics.median(times_us),
        "mean_us": statistics.fmean(times_us),
        "sd_us": statistics.stdev(times_us) if len(times_us) > 1 else 0.0,
        "iters": len(times_us),
    }


def cell(r):
    if r is None:
        return "n/a"
    return (
        f"{r['median_us']:.1f} ({r['mean_us']:.1f} ± {r['sd_us']:.1f}) "
        f"{r['tflops']:.3g} TF/s"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    p.add_argument("--iters", type=int, default=50, help="timed samples of 10 calls each (default 50)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny shapes, few iterations, CPU")
    args = p.parse_args()
    if args.iters < 1 or args.warmup < 0:
        p.error("--iters must be >= 1 and --warmup >= 0")

    if args.smoke:
        device, shapes = torch.device("cpu"), SMOKE_SHAPES
        args.warmup, args.iters = min(args.warmup, 1), min(args.iters, 3)
    elif torch.cuda.is_available():
        device, shapes = torch.device("cuda"), SHAPES
    else:
        sys.exit("no CUDA device (use --smoke for a CPU run)")
    torch.manual_seed(args.seed)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    results = []
    for b, h, n, d, causal in shapes:
        flops = 4 * b * h * n * n * d / (2 if causal else 1)
        for dt in args.dtypes:
            for layout in args.layouts:
                q, k, v = make_qkv(b, h, n, d, DTYPES[dt], device, layout)
                row = {"B": b, "H": h, "N": n, "D": d, "causal": causal, "dtype": dt,
                       "layout": layout, "flops": flops, "backends": {}}
                for name in args.backends:
                    r = bench_one(q, k, v, causal, BACKENDS[name], args.warmup, args.iters, device)
                    if r is not None:
                        r["tflops"] = flops / (r["median_us"] * 1e-6) / 1e12
                    row["backends"][name] = r
                results.append(row)
                del q, k, v

    print(f"# SDPA forward, {gpu}, torch {torch.__version__}")
    print(f"\ncells: median µs (mean ± sd µs) TFLOP/s at the median; {args.iters} timed calls "
          f"after {args.warmup} warm-ups; FLOPs = 4·B·H·N²·D (halved when causal)\n")
    print("| B | H | N | D | causal | dtype | layout | " + " | ".join(args.backends) + " |")
    print("|---" * (7 + len(args.backends)) + "|")
    for r in results:
        cells = " | ".join(cell(r["backends"][name]) for name in args.backends)
        print(f"| {r['B']} | {r['H']} | {r['N']} | {r['D']} | {'yes' if r['causal'] else 'no'} "
              f"| {r['dtype']} | {r['layout']} | {cells} |")

    if args.json:
        meta = {"device": gpu, "torch": torch.__version__, "warmup": args.warmup,
                "iters": args.iters, "timer": "cuda events" if device.type == "cuda" else "wall"}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
