#!/usr/bin/env python3
"""Time Hugging Face transformers' CLIPModel (or ChineseCLIPModel) computing image and text features.

The PyTorch peer of flashclip's end-to-end benchmark: for each batch size B, B images
(at the model's resolution, 336 px for ViT-L/14-336) and B texts of --text-len tokens go
through get_image_features + get_text_features, timed with CUDA events around each call
after warm-ups (the seed's method: 4 warm-ups, 10 timed runs). Variants:

  fp32-eager          float32 weights, eager attention
  fp16-sdpa           float16 weights, torch scaled_dot_product_attention
  fp16-sdpa-compile   the same under torch.compile

Without --model the model is CLIPModel with openai/clip-vit-large-patch14-336's
configuration and random weights (no hub access needed), or with --family chinese_clip
ChineseCLIPModel with CN-CLIP ViT-L/14@336px's (texts of 52 tokens by default); with
--model DIR it is loaded from that checkpoint directory (the family read from its
config.json's model_type). TFLOP/s use the 2-FLOPs-per-multiply-accumulate count of
the matrix products (flashclip's flops::Convention::MacTimes2, features only).

    python3 scripts/peer_clip_hf.py --batch 1 16 128 --json clip_hf.json
    python3 scripts/peer_clip_hf.py --family chinese_clip --batch 1 16 128 --json cn_clip_hf.json
    python3 scripts/peer_clip_hf.py --smoke       # tiny model on the CPU, checks it runs
"""

import argparse
import copy
import json
import statistics
import sys
import time

import torch
from transformers import ChineseCLIPConfig, ChineseCLIPModel, CLIPConfig, CLIPModel

# openai/clip-vit-large-patch14-336
VIT_L_14_336 = dict(
    projection_dim=768,
    logit_scale_init_value=2.6592,
    text_config=dict(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2,
        pad_token_id=1,
    ),
    vision_config=dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, num_channels=3, image_size=336, patch_size=14,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    ),
)
SMOKE = dict(
    projection_dim=32,
    text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=128,
                     num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
    vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, image_size=56, patch_size=14, projection_dim=32),
)
# OFA-Sys/chinese-clip-vit-large-patch14-336px: the ViT of VIT_L_14_336 with a RoBERTa-wwm-ext-base text tower
# (the numbers of ChineseClipConfig::preset("CN-CLIP-ViT-L-14-336")).
CN_VIT_L_14_336 = dict(
    projection_dim=768,
    logit_scale_init_value=2.6592,
    text_config=dict(
        vocab_size=21128, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
        layer_norm_eps=1e-12, pad_token_id=0,
    ),
    vision_config=dict(VIT_L_14_336["vision_config"]),
)
CN_SMOKE = dict(
    projection_dim=32,
    text_config=dict(vocab_size=21128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2),
    vision_config=dict(SMOKE["vision_config"]),
)
# family: (model class, config class, random config, smoke config, default text length, label)
FAMILIES = {
    "clip": (CLIPModel, CLIPConfig, VIT_L_14_336, SMOKE, 77, "ViT-L/14-336"),
    "chinese_clip": (ChineseCLIPModel, ChineseCLIPConfig, CN_VIT_L_14_336, CN_SMOKE, 52, "CN-CLIP ViT-L/14@336px"),
}
# name: (dtype, attention implementation, torch.compile)
VARIANTS = {
    "fp32-eager": (torch.float32, "eager", False),
    "fp16-sdpa": (torch.float16, "sdpa", False),
    "fp16-sdpa-compile": (torch.float16, "sdpa", True),
}


def features_flops(cfg, batch, text_len):
    """Matrix-product FLOPs (2 per MAC) of image + text features for `batch` pairs."""

    def blocks(width, mlp, layers, seq):
        return seq * layers * (8 * width * width + 4 * width * mlp + 4 * seq * width)

    v, t, p = cfg.vision_config, cfg.text_config, cfg.projection_dim
    patches = (v.image_size // v.patch_size) ** 2
    image = (blocks(v.hidden_size, v.intermediate_size, v.num_hidden_layers, patches + 1)
             + patches * 2 * v.num_channels * v.patch_size ** 2 * v.hidden_size
             + 2 * v.hidden_size * p)
    text = (blocks(t.hidden_size, t.intermediate_size, t.num_hidden_layers, text_len)
            + 2 * t.hidden_size * p)
    return batch * (image + text)


def unwrap(out):
    # transformers >= 5 returns BaseModelOutputWithPooling (projected features in
    # pooler_output); 4.x returned the tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def make_inputs(cfg, family, batch, text_len, dtype, device, gen):
    v, t = cfg.vision_config, cfg.text_config
    pixels = torch.randn(batch, v.num_channels, v.image_size, v.image_size, generator=gen)
    # Random tokens below the special ids, bos first and eos (the largest id) last, so
    # both pooling rules (eos id, legacy argmax) pick the last token; for BERT, [CLS] (101 in BERT-Chinese's
    # vocabulary) first and [SEP] (102) last, as flashclip bench does.
    ids = torch.randint(1, t.vocab_size - 2, (batch, text_len), generator=gen)
    if family == "chinese_clip":
        ids[:, 0], ids[:, -1] = min(101, t.vocab_size - 2), min(102, t.vocab_size - 1)
    else:
        ids[:, 0], ids[:, -1] = t.vocab_size - 2, t.vocab_size - 1
    return pixels.to(device, dtype), ids.to(device)


def time_calls(fn, warmup, iters, device):
    """Per-call times in ms: CUDA events around each call (wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def set_attention(model, impl):
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:  # older transformers
        for c in (model.config, model.config.text_config, model.config.vision_config):
            c._attn_implementation = impl


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", metavar="DIR", help="checkpoint directory (default: random "
                   "weights with the ViT-L/14-336 config of --family)")
    p.add_argument("--family", choices=list(FAMILIES), default=None,
                   help="model family (default: --model's model_type, else clip)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--text-len", type=int, default=None, help="tokens per text (default: 77, Chinese-CLIP 52)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode (default, reduce-overhead, max-autotune)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny random model on the CPU")
    args = p.parse_args()
    family = args.family
    if family is None and args.model:
        with open(f"{args.model}/config.json") as f:
            family = "chinese_clip" if json.load(f).get("model_type") == "chinese_clip" else "clip"
    family = family or "clip"
    model_class, config_class, random_config, smoke_config, default_len, label = FAMILIES[family]
    if args.text_len is None:
        args.text_len = default_len
    if args.iters < 1 or args.warmup < 0 or min(args.batch) < 1 or args.text_len < 2:
        p.error("need --iters >= 1, --warmup >= 0, batches >= 1, --text-len >= 2")

    if args.smoke:
        device = torch.device("cpu")
        args.batch, args.text_len, args.iters = [2], min(args.text_len, 8), min(args.iters, 2)
        args.warmup = min(args.warmup, 1)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        sys.exit("no CUDA device (use --smoke for a CPU run)")

    torch.manual_seed(args.seed)
    if args.model:
        base = model_class.from_pretrained(args.model, dtype=torch.float32)
    else:
        base = model_class(config_class(**(smoke_config if args.smoke else random_config)))
    base.eval()
    cfg = base.config
    if args.text_len > cfg.text_config.max_position_embeddings:
        p.error(f"--text-len exceeds the model's {cfg.text_config.max_position_embeddings}")
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
            pixels, ids = make_inputs(cfg, family, batch, args.text_len, dtype, device, gen)
            with torch.inference_mode():
                times = time_calls(lambda: step(pixels, ids), args.warmup, args.iters, device)
            med = statistics.median(times)
            flops = features_flops(cfg, batch, args.text_len)
            results.append({
                "variant": name, "batch": batch, "text_len": args.text_len,
                "median_ms": med, "mean_ms": statistics.fmean(times),
                "sd_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
                "times_ms": times, "flops_mac2": flops, "tflops": flops / (med * 1e-3) / 1e12,
            })
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()

    v = cfg.vision_config
    print(f"# HF {model_class.__name__} features, {gpu}, torch {torch.__version__}")
    label = "tiny smoke config" if args.smoke else f"{label} config, random weights"
    print(f"\nmodel: {args.model or label}"
          f" ({v.image_size} px); {args.warmup} warm-ups, {args.iters} timed runs; CUDA events"
          f" around get_image_features + get_text_features\n")
    print("| B | text len | variant | median ms | mean ± sd ms | TFLOP/s (2/MAC, median) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['text_len']} | {r['variant']} | {r['median_ms']:.2f} "
              f"| {r['mean_ms']:.2f} ± {r['sd_ms']:.2f} | {r['tflops']:.3g} |")

    if args.json:
        meta = {"device": gpu, "torch": torch.__version__, "model": args.model or label, "family": family,
                "warmup": args.warmup, "iters": args.iters, "compile_mode": args.compile_mode,
                "timer": "cuda events" if device.type == "cuda" else "wall"}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
