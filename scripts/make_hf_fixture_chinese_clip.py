#!/usr/bin/env python3
"""Build a seeded random Hugging Face ChineseCLIPModel and dump its tokenizer, inputs and outputs.

The Chinese-CLIP counterpart of make_hf_fixture.py (same weight traps, same file layout): the ground truth for
flashclip's Chinese-CLIP CPU reference (crates/flashclip-model/src/chinese_clip) and, through it, the CUDA model.

Usage:
    python3 scripts/make_hf_fixture_chinese_clip.py CONFIG OUT_DIR [--seed N] [--half] [--device cpu|cuda]

CONFIG is "tiny" (the model committed under crates/flashclip-model/tests/fixtures/tiny-chinese-clip) or a preset
matching ChineseClipConfig::preset: CN-CLIP-ViT-B-16, CN-CLIP-ViT-L-14, CN-CLIP-ViT-L-14-336, CN-CLIP-ViT-H-14
(the "ViT-L/14@336px" spelling works too).

Writes into OUT_DIR:

  config.json, model.safetensors   ChineseCLIPModel.save_pretrained output (fp32)
  vocab.txt, tokenizer_config.json, tokenizer.json
                                   a WordPiece vocabulary (the test texts' characters and word pieces; presets pad
                                   it with [unusedN] entries to their 21128 tokens) and transformers' BertTokenizer
                                   saved from it
  texts.json                       the test texts (Chinese, English, mixed scripts, one longer than the context)
                                   with HF's ids for each: "ids" at context 52, "ids_short" at context 8
  inputs.safetensors               pixel_values [B,3,S,S] f32; input_ids [T,L] i64 (the texts at context 52,
                                   padded with [PAD] = 0); attention_mask [T,L] i64; lengths [T] i64
  expected.safetensors             fp32 forward, all f32:
      vision.hidden_states.{i}, vision.last_hidden_state, vision.pooler_output, image_embeds,
      image_embeds_normalized      as in make_hf_fixture.py
      text.hidden_states.{i}       i = 0: embeddings after their LayerNorm; i = k: after layer k; packed: the rows
                                   of the texts' real positions one after another, [sum(lengths), D]
      text.last_hidden_state       output of the last layer, packed the same way
      text.pooler_output           its [CLS] row (what ChineseCLIPModel projects)
      text_embeds, text_embeds_normalized, logits_per_image, logit_scale
  expected_fp16.safetensors, expected_bf16.safetensors   with --half: the embeddings and logits of the same model
    run in half precision (CUDA if available, else CPU), upcast to f32, to measure HF's own half error.
"""

import functools
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_fixture as shared  # noqa: E402

CONTEXT = 52
SHORT_CONTEXT = 8
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Chinese, English, mixed scripts, full-width punctuation, digits, an unknown character, and one text longer
# than the context (truncated to [CLS] + 50 pieces + [SEP]).
TEXTS = [
    "一只猫的照片",
    "A photo of a Dog.",
    "一张 iPhone 手机的照片，拍摄于2023年！",
    "小狗在草地上奔跑 running on the grass",
    "皮卡丘",
    "Ünïcode ACCENTS and 未知字符 鑫",
    "这是一段很长的中文描述，" * 6 + "end",
]
ENGLISH_PIECES = [
    "a", "photo", "of", "dog", "cat", "the", "grass", "on", "and", "end", "run", "##ning", "iphone", "un",
    "##ic", "##ode", "accent", "##s", "2023", "20", "##23",
]

# Same numbers as ChineseClipConfig::preset (crates/flashclip-model/src/chinese_clip/presets.rs).
PRESETS = {
    # name: (embed, image, patch, v_width, v_layers, v_head_width, text width, text layers, text heads)
    "CN-CLIP-ViT-B-16": (512, 224, 16, 768, 12, 64, 768, 12, 12),
    "CN-CLIP-ViT-L-14": (768, 224, 14, 1024, 24, 64, 768, 12, 12),
    "CN-CLIP-ViT-L-14-336": (768, 336, 14, 1024, 24, 64, 768, 12, 12),
    "CN-CLIP-ViT-H-14": (1024, 224, 14, 1280, 32, 80, 1024, 24, 16),
}
PRESET_VOCAB = 21128


def canonical_preset(name):
    key = name.strip().replace("/", "-").lower()
    if key.endswith("@336px"):
        key = key[: -len("@336px")] + "-336"
    if not key.startswith("cn-clip-"):
        key = "cn-clip-" + key
    for p in PRESETS:
        if p.lower() == key:
            return p
    raise SystemExit(f"unknown config {name!r}: use tiny or one of {', '.join(PRESETS)}")


def make_vocab(size=None):
    """The test texts' characters and some English word pieces, after the specials; padded to `size`."""
    chars = []
    for text in TEXTS:
        for ch in text.lower():
            if ch.strip() and ch not in chars and ch != "鑫" and not ch.isascii():
                chars.append(ch)
    vocab = SPECIALS + [",", ".", "!", "！", "，"] + ENGLISH_PIECES + chars
    vocab = list(dict.fromkeys(vocab))
    if size is not None:
        vocab += [f"[unused{i}]" for i in range(size - len(vocab))]
    return vocab


def make_config(name, vocab_size):
    if name == "tiny":
        # Text: 2 post-LN layers of width 64 (one head of 64: a head size the GPU kernels take), a position table
        # longer than the context. Vision: CLIP's tower, tested at length by the CLIP fixture; one layer here.
        text = dict(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=1,
            max_position_embeddings=64,
            type_vocab_size=2,
            hidden_act="gelu",
            layer_norm_eps=1e-12,
            pad_token_id=0,
        )
        vision = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=1,
            image_size=32,
            patch_size=8,
            num_channels=3,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
        return dict(text_config=text, vision_config=vision, projection_dim=32), 2
    embed, image, patch, vw, vl, vhw, tw, tl, th = PRESETS[canonical_preset(name)]
    text = dict(
        vocab_size=vocab_size,
        hidden_size=tw,
        intermediate_size=4 * tw,
        num_hidden_layers=tl,
        num_attention_heads=th,
        max_position_embeddings=512,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=vw,
        intermediate_size=4 * vw,
        num_hidden_layers=vl,
        num_attention_heads=vw // vhw,
        image_size=image,
        patch_size=patch,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    return dict(text_config=text, vision_config=vision, projection_dim=embed), 2


@torch.no_grad()
def randomize(model, gen):
    """make_hf_fixture.py's traps, with BERT's names: Linear std gain/sqrt(fan_in) (1.5 for query and key), biases
    N(0, 0.1), LayerNorm weights 1 + N(0, 0.2) and biases N(0, 0.2), embeddings N(0, 0.5), logit_scale 3.0."""

    normal = shared.normal_sampler(gen)
    for name, p in model.named_parameters():
        if name == "logit_scale":
            p.fill_(3.0)
        elif any(s in name for s in ("layer_norm", "layrnorm", "layernorm", "LayerNorm")):
            p.copy_(normal(p.shape, 0.2, 1.0 if name.endswith("weight") else 0.0))
        elif name.endswith("class_embedding") or "embeddings" in name and "patch" not in name:
            p.copy_(normal(p.shape, 0.5))
        elif "patch_embedding" in name:
            p.copy_(normal(p.shape, 1.0 / math.sqrt(p[0].numel())))
        else:
            shared.init_bias_or_matrix(name, p, normal, peaked=("q_proj", "k_proj", "self.query", "self.key"))


def write_tokenizer(out_dir, vocab):
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, f)
    tokenizer = BertTokenizer.from_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def tokenize(tokenizer, context):
    return [tokenizer(t, truncation=True, max_length=context)["input_ids"] for t in TEXTS]


def make_inputs(cfg, tokenizer, n_images, gen):
    v = cfg.vision_config
    pixel_values = torch.randn(
        (n_images, v.num_channels, v.image_size, v.image_size), generator=gen, dtype=torch.float32
    )
    batch = tokenizer(TEXTS, truncation=True, max_length=CONTEXT, padding=True, return_tensors="pt")
    return dict(
        pixel_values=pixel_values,
        input_ids=batch["input_ids"].to(torch.int64),
        attention_mask=batch["attention_mask"].to(torch.int64),
        lengths=batch["attention_mask"].sum(dim=1).to(torch.int64),
    )


def capture(encoder, layers):
    """Hooks recording the encoder's input and every layer's output."""
    states = []
    handles = [
        encoder.register_forward_pre_hook(
            lambda mod, args, kwargs: states.append(
                kwargs.get("inputs_embeds", kwargs.get("hidden_states", args[0] if args else None))
            ),
            with_kwargs=True,
        )
    ]
    for layer in layers:
        handles.append(
            layer.register_forward_hook(lambda mod, args, out: states.append(out[0] if isinstance(out, tuple) else out))
        )
    return states, handles


@torch.no_grad()
def forward(model, inputs, device, dtype, full=True):
    model = model.to(device=device, dtype=dtype).eval()
    pixel_values = inputs["pixel_values"].to(device=device, dtype=dtype)
    input_ids = inputs["input_ids"].to(device)
    attention_mask = inputs["attention_mask"].to(device)
    token_type_ids = torch.zeros_like(input_ids)

    out = {}
    v_states, handles = capture(model.vision_model.encoder, model.vision_model.encoder.layers)
    t_states, t_handles = capture(model.text_model.encoder, model.text_model.encoder.layer)
    vision = model.vision_model(pixel_values=pixel_values)
    text = model.text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    for h in handles + t_handles:
        h.remove()
    assert len(v_states) == model.config.vision_config.num_hidden_layers + 1, len(v_states)
    assert len(t_states) == model.config.text_config.num_hidden_layers + 1, len(t_states)

    image_embeds = model.visual_projection(vision.pooler_output)
    pooled = text.last_hidden_state[:, 0, :]
    text_embeds = model.text_projection(pooled)
    if full:
        for i, s in enumerate(v_states):
            out[f"vision.hidden_states.{i}"] = s
        out["vision.last_hidden_state"] = vision.last_hidden_state
        out["vision.pooler_output"] = vision.pooler_output
        # Text states packed to the real positions (the texts' rows one after another): padding would triple them.
        real = attention_mask.reshape(-1).bool()
        for i, s in enumerate(t_states):
            out[f"text.hidden_states.{i}"] = s.reshape(-1, s.shape[-1])[real]
        out["text.last_hidden_state"] = text.last_hidden_state.reshape(-1, text.last_hidden_state.shape[-1])[real]
        out["text.pooler_output"] = pooled
    out["image_embeds"] = image_embeds
    out["text_embeds"] = text_embeds
    image_n = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
    text_n = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
    out["image_embeds_normalized"] = image_n
    out["text_embeds_normalized"] = text_n
    out["logits_per_image"] = model.logit_scale.exp() * image_n @ text_n.t()
    out["logit_scale"] = model.logit_scale.detach().reshape(())

    # Cross-check against ChineseCLIPModel.forward itself.
    whole = model(
        pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
    )
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(whole.logits_per_image, out["logits_per_image"], atol=tol, rtol=tol)
    return {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in out.items()}


def main():
    config_help = '"tiny" or a preset name (CN-CLIP-ViT-B-16, ..., CN-CLIP-ViT-H-14)'
    args = shared.parse_args(__doc__, config_help, shared.DEFAULT_SEED)
    gen = shared.seeded_generator(args.seed)

    os.makedirs(args.out_dir, exist_ok=True)
    vocab = make_vocab(None if args.config == "tiny" else PRESET_VOCAB)
    tokenizer = write_tokenizer(args.out_dir, vocab)
    kwargs, n_images = make_config(args.config, len(vocab))
    config = ChineseCLIPConfig(**kwargs)
    config.logit_scale_init_value = 3.0
    model = ChineseCLIPModel(config).eval()
    shared.set_attn(model, "eager")
    randomize(model, gen)
    inputs = make_inputs(config, tokenizer, n_images, gen)

    texts = [
        dict(text=t, ids=ids, ids_short=short)
        for t, ids, short in zip(TEXTS, tokenize(tokenizer, CONTEXT), tokenize(tokenizer, SHORT_CONTEXT))
    ]
    with open(os.path.join(args.out_dir, "texts.json"), "w", encoding="utf-8") as f:
        json.dump(dict(context=CONTEXT, short_context=SHORT_CONTEXT, texts=texts), f, ensure_ascii=False, indent=1)

    model.save_pretrained(args.out_dir, safe_serialization=True)
    meta = shared.fixture_metadata(args)
    save_file(inputs, os.path.join(args.out_dir, "inputs.safetensors"), metadata=meta)
    expected = forward(model, inputs, "cpu", torch.float32)
    save_file(expected, os.path.join(args.out_dir, "expected.safetensors"), metadata=meta)
    print(f"wrote {args.out_dir}: {len(expected)} expected tensors, text lengths {inputs['lengths'].tolist()}")

    if args.half:
        half_forward = functools.partial(forward, full=False)
        make_model = lambda: ChineseCLIPModel(config)  # noqa: E731
        shared.write_half_outputs(args, make_model, model, half_forward, inputs, expected, meta)

if __name__ == "__main__":
    main()
