#!/usr/bin/env python3
"""The PyTorch peer of `flashclip embed`: Hugging Face CLIPModel, fp16 with SDPA attention, fed by a torch
DataLoader (worker processes decoding and preprocessing with the CLIP image processor, pinned memory), over a
folder of images.

The model is a random-init ViT-L/14-336 (openai/clip-vit-large-patch14-336's shapes, config built here, nothing
downloaded). Each batch goes through get_image_features, is L2-normalized and copied to the host, as an
embedding job would keep it. Time runs from the first batch requested to the last one on the host, so it
includes decoding wherever the GPU waits for it. Prints one line: `peer_embed_hf images_per_s=<x>`.

    python3 scripts/peer_embed_hf.py FOLDER [--batch 128] [--workers 15]

Needs torch, transformers (5.x), Pillow and a GPU.
"""

import argparse
import os
import sys
import time

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

try:
    from transformers import CLIPImageProcessor as Processor
except ImportError:  # transformers builds that keep only the torchvision-based processor
    from transformers import CLIPImageProcessorFast as Processor

# openai/clip-vit-large-patch14-336
VIT_L_14_336 = dict(
    projection_dim=768,
    logit_scale_init_value=2.6592,
    text_config=dict(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ),
    vision_config=dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        num_channels=3, image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        projection_dim=768,
    ),
)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


class Folder(torch.utils.data.Dataset):
    def __init__(self, paths, size):
        self.paths = paths
        # openai/clip-vit-large-patch14-336's preprocessor_config.json.
        self.processor = Processor(
            do_resize=True, size={"shortest_edge": size}, resample=3, do_center_crop=True,
            crop_size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255,
            do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
            image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True,
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            return self.processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    paths = sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(args.folder)
        for f in files
        if f.lower().endswith(EXTENSIONS)
    )
    if not paths:
        print(f"no images in {args.folder}", file=sys.stderr)
        return 1
    torch.manual_seed(args.seed)
    config = CLIPConfig(**VIT_L_14_336)
    model = CLIPModel(config).to("cuda", torch.float16).eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
    else:  # older transformers
        for c in (model.config, model.config.text_config, model.config.vision_config):
            c._attn_implementation = "sdpa"
    size = config.vision_config.image_size
    loader = torch.utils.data.DataLoader(
        Folder(paths, size), batch_size=args.batch, num_workers=args.workers, pin_memory=True,
        persistent_workers=False, prefetch_factor=4 if args.workers > 0 else None,
    )
    with torch.inference_mode():
        # Warm-up outside the timing: cuBLAS handles, SDPA kernel choice.
        warm = torch.zeros(args.batch, 3, size, size, device="cuda", dtype=torch.float16)
        model.get_image_features(pixel_values=warm)
        torch.cuda.synchronize()
        done = 0
        start = time.perf_counter()
        for pixels in loader:
            feats = model.get_image_features(pixel_values=pixels.to("cuda", torch.float16, non_blocking=True))
            if not torch.is_tensor(feats):  # transformers versions that return a model output
                feats = feats.pooler_output
            feats = torch.nn.functional.normalize(feats.float(), dim=-1).cpu()
            done += feats.shape[0]
        seconds = time.perf_counter() - start
    print(f"peer_embed_hf images_per_s={done / seconds:.1f}")
    print(f"({done} images in {seconds:.2f} s, batch {args.batch}, {args.workers} workers, "
          f"{torch.cuda.get_device_name()})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
