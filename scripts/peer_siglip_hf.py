#!/usr/bin/env python3
"""Time Hugging Face transformers' SiglipModel computing image and text features.

The SigLIP sibling of peer_clip_hf.py (same variants, timer and output): for each batch
size B, B images at the model's resolution and B texts of the model's context length
(SigLIP pads every text to it) go through get_image_features + get_text_features, timed
with CUDA events around each call after warm-ups.

Without --model the model is SiglipModel with google/siglip-so400m-patch14-384's
configuration (27 layers of width 1152, 16 heads of 72, 729 patches) and random weights
(no hub access needed); with --model DIR it is loaded from that checkpoint directory.
TFLOP/s use the 2-FLOPs-per-multiply-accumulate count of the matrix products.

    python3 scripts/peer_siglip_hf.py --batch 1 16 128 --json siglip_hf.json
    python3 scripts/peer_siglip_hf.py --smoke       # tiny model on the CPU, checks it runs
"""

import argparse
import copy
import json
import os
import statistics
import sys

import torch
from transformers import SiglipConfig, SiglipModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_clip_hf import VARIANTS, set_attention, time_calls, unwrap  # noqa: E402

# google/siglip-so400m-patch14-384
SO400M_14_384 = dict(
    text_config=dict(vocab_size=32000, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                     num_attention_heads=16, max_position_embeddings=64),
    vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                       num_attention_heads=16, image_size=384, patch_size=14),
)
SMOKE = dict(
    text_config=dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=16),
    vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, image_size=56, patch_size=14),
)


def features_flops(cfg, batch):
    """Matrix-product FLOPs (2 per MAC) of image + text features for `batch` pairs."""

    def blocks(width, mlp, layers, seq):
        return seq * layers * (8 * width * width + 4 * width * mlp + 4 * seq * width)

    v, t = cfg.vision_config, cfg.text_config
    n = (v.image_size // v.patch_size) ** 2
    d = v.hidden_size
    # Pooling head: K/V of every token, the probe's attention, out_proj and the MLP on one row.
    head = 4 * n * d * d + 4 * n * d + 2 * d * d + 4 * d * v.intermediate_size
    image = (blocks(d, v.intermediate_size, v.num_hidden_layers, n)
             + n * 2 * v.num_channels * v.patch_size ** 2 * d + head)
    text = (blocks(t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.max_position_embeddings)
            + 2 * t.hidden_size * t.projection_size)
    return batch * (image + text)


def make_inputs(cfg, batch, dtype, device, gen):
    v, t = cfg.vision_config, cfg.text_config
    pixels = torch.randn(batch, v.num_channels, v.image_size, v.image_size, generator=gen)
    ids = torch.randint(2, t.vocab_size, (batch, t.max_position_embeddings), generator=gen)
    return pixels.to(device, dtype), ids.to(device)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", metavar="DIR", help="SigLIP checkpoint directory (default: random "
                   "weights with the so400m/14-384 config)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode (default, reduce-overhead, max-autotune)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny random model on the CPU")
    args = p.parse_args()
    if args.iters < 1 or args.warmup < 0 or min(args.batch) < 1:
        p.error("need --iters >= 1, --warmup >= 0, batches >= 1")

    if args.smoke:
        device = torch.device("cpu")
        args.batch, args.iters, args.warmup = [2], min(args.iters, 2), min(args.warmup, 1)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        sys.exit("no CUDA device (use --smoke for a CPU run)")

    torch.manual_seed(args.seed)
    if args.model:
        base = SiglipModel.from_pretrained(args.model, dtype=torch.float32)
    else:
        base = SiglipModel(SiglipConfig(**(SMOKE if args.smoke else SO400M_14_384)))
    base.eval()
    cfg = base.config
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    results = []
    for name in args.variants:
        dtype, attn, compiled = VARIANTS[name]
        model = copy.deepcopy(base).to(device, dtype)
        set_attention(model, attn)

        def step(pixels, ids):
            return (unwrap(model.get_image_features(pixel_values=pixels)),
                    unwrap(model.get_text_features(input_ids=ids)))

        if compiled:
            step = torch.compile(step, mode=args.compile_mode)
        for batch in args.batch:
            gen = torch.Generator().manual_seed(args.seed)
            pixels, ids = make_inputs(cfg, batch, dtype, device, gen)
            with torch.inference_mode():
                times = time_calls(lambda: step(pixels, ids), args.warmup, args.iters, device)
            med = statistics.median(times)
            flops = features_flops(cfg, batch)
            results.append({
                "variant": name, "batch": batch, "text_len": cfg.text_config.max_position_embeddings,
                "median_ms": med, "mean_ms": statistics.fmean(times),
                "sd_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
                "times_ms": times, "flops_mac2": flops, "tflops": flops / (med * 1e-3) / 1e12,
            })
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()

    v = cfg.vision_config
    print(f"# HF SiglipModel features, {gpu}, torch {torch.__version__}")
    label = "tiny smoke config" if args.smoke else "so400m/14-384 config, random weights"
    print(f"\nmodel: {args.model or label} ({v.image_size} px); {args.warmup} warm-ups, {args.iters} timed"
          " runs; CUDA events around get_image_features + get_text_features\n")
    print("| B | text len | variant | median ms | mean ± sd ms | TFLOP/s (2/MAC, median) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['text_len']} | {r['variant']} | {r['median_ms']:.2f} "
              f"| {r['mean_ms']:.2f} ± {r['sd_ms']:.2f} | {r['tflops']:.3g} |")

    if args.json:
        meta = {"device": gpu, "torch": torch.__version__, "model": args.model or "so400m-14-384 random",
                "warmup": args.warmup, "iters": args.iters, "compile_mode": args.compile_mode,
                "timer": "cuda events" if device.type == "cuda" else "wall"}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
