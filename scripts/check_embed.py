#!/usr/bin/env python3
"""Check `flashclip embed` end to end against Hugging Face transformers on the same files.

flashclip wrote image and text embeddings (an output directory: manifest.json, embeddings-*.npy and
metadata-*.parquet, read here with numpy and pyarrow) for a Hugging Face checkpoint directory. Inputs with status
"error" in the metadata are left out. This script embeds the same images and
texts with transformers' CLIPModel in float32 (OpenAI's preprocessing done with Pillow: shortest side resized to
the model's resolution with bicubic, center crop, CLIP mean/std; texts tokenized with the given tokenizer.json)
and prints the cosine of every row. It fails when a row's cosine is below --min-cosine (default 0.999, the
fp16 parity bar) or when the row counts differ.

    python3 scripts/check_embed.py --model DIR --ours OUT_DIR --tokenizer tokenizer.json
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPTokenizerFast

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def preprocess(path, size):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def read_output(out_dir):
    """The embedded inputs of a flashclip output directory: image paths, texts, and their embeddings (rows)."""
    import pyarrow.parquet as pq

    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)
    paths, texts, image_rows, text_rows = [], [], [], []
    for shard in manifest["shards"]:
        embeds = np.load(os.path.join(out_dir, shard["embeddings"])).astype(np.float32)
        meta = pq.read_table(os.path.join(out_dir, shard["metadata"])).to_pylist()
        for m in meta:
            if m["status"] != "ok":
                continue
            if m["kind"] == "image":
                paths.append(m["source"])
                image_rows.append(embeds[m["row"]])
            else:
                texts.append(m["text"])
                text_rows.append(embeds[m["row"]])
    stack = lambda rows: np.stack(rows) if rows else np.zeros((0, 1), np.float32)
    return paths, texts, {"image_embeds": stack(image_rows), "text_embeds": stack(text_rows)}


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face CLIPModel directory flashclip embedded with")
    ap.add_argument("--ours", required=True, help="flashclip embed output directory")
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json (OpenAI's CLIP BPE)")
    ap.add_argument("--min-cosine", type=float, default=0.999)
    args = ap.parse_args()

    paths, texts, ours = read_output(args.ours)

    model = CLIPModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    worst = 1.0
    ok = True
    with torch.no_grad():
        if paths:
            size = model.config.vision_config.image_size
            pixels = torch.stack([preprocess(p, size) for p in paths])
            theirs = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output).numpy()
            c = cosines(ours["image_embeds"], theirs)
            for p, x in zip(paths, c):
                print(f"image {p}: cosine {x:.6f}")
            worst = min(worst, float(c.min()))
            ok &= ours["image_embeds"].shape[0] == len(paths)
        if texts:
            tok = CLIPTokenizerFast(tokenizer_file=args.tokenizer)
            if tok.pad_token is None:
                tok.pad_token = "<|endoftext|>"  # HF pools at the first end token, so padding with it is exact
            enc = tok(texts, padding=True, truncation=True, max_length=model.config.text_config.max_position_embeddings,
                      return_tensors="pt")
            text = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            theirs = model.text_projection(text.pooler_output).numpy()
            c = cosines(ours["text_embeds"], theirs)
            for t, x in zip(texts, c):
                print(f"text {t!r}: cosine {x:.6f}")
            worst = min(worst, float(c.min()))
            ok &= ours["text_embeds"].shape[0] == len(texts)
    print(f"min cosine {worst:.6f} (bar {args.min_cosine})")
    return 0 if ok and worst >= args.min_cosine else 1


if __name__ == "__main__":
    sys.exit(main())
