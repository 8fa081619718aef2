#!/usr/bin/env python3
"""Make a folder of seeded, photo-like JPEGs for embedding-job benchmarks.

Each file is one of scikit-image's sample images (skimage.data, the ones shipped with the package) with a random
crop, a resize to 500x375 .. 1024x768 (either orientation), a random flip, Gaussian noise and a random JPEG quality,
so that decoding and resizing cost what they cost on real photos. The same N and seed give the same files.

    python3 scripts/make_photo_folder.py OUT_DIR --count 8192 [--seed 0] [--workers 8]

Needs numpy, Pillow and scikit-image.
"""

import argparse
import os
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image
from skimage import data

# Bundled with scikit-image (no download); the ones missing from an installed version are left out.
SAMPLES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
           "camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "clock", "colorwheel"]


def load_samples():
    out = []
    for name in SAMPLES:
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # not in this version, or needs a download
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(1e-9, float(img.max())))).astype(np.uint8)
        out.append(np.ascontiguousarray(img[..., :3]))
    return out


SOURCES = []


def init():
    SOURCES.extend(load_samples())


def make(job):
    index, seed, out_dir = job
    path = os.path.join(out_dir, f"photo_{index:06d}.jpg")
    rng = np.random.default_rng([seed, index])
    src = SOURCES[int(rng.integers(len(SOURCES)))]
    h, w = src.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = Image.fromarray(src[top:top + ch, left:left + cw])
    long_side, short_side = int(rng.integers(500, 1025)), int(rng.integers(375, 769))
    size = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    img = np.asarray(crop.resize(size, Image.BICUBIC), dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img + rng.normal(0.0, rng.uniform(0.0, 8.0), img.shape)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    out.save(path, quality=int(rng.integers(75, 96)))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--count", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if not load_samples():
        print("no scikit-image sample images found", file=sys.stderr)
        return 1
    jobs = [(i, args.seed, args.out_dir) for i in range(args.count)]
    with Pool(args.workers, initializer=init) as pool:
        for _ in pool.imap_unordered(make, jobs, chunksize=32):
            pass
    print(f"{args.count} photos in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
