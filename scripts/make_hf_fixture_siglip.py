#!/usr/bin/env python3
"""Build a seeded random Hugging Face SiglipModel and dump its inputs and outputs.

The ground truth for flashclip's SigLIP CPU reference (crates/flashclip-model/src/siglip) and, through it, the
CUDA model; the SigLIP sibling of make_hf_fixture.py, with the same traps.

Usage:
    python3 scripts/make_hf_fixture_siglip.py CONFIG OUT_DIR [--seed N] [--half] [--device cpu|cuda]

CONFIG is "tiny" (committed under crates/flashclip-model/tests/fixtures/tiny-siglip) or a preset name matching
SiglipConfig::preset (siglip-base-patch16-224, ..., siglip-so400m-patch14-384).

Needs torch, transformers, safetensors, numpy, sentencepiece and tokenizers. Writes into OUT_DIR:

  config.json            SiglipModel config
  model.safetensors      the weights with Hugging Face keys; "tiny" stores them as fp16 (every weight is rounded
                         to fp16 first, and the outputs below are the fp32 model's on those exact values)
  spiece.model, tokenizer.json, tokenizer_config.json   ("tiny") a small SentencePiece unigram vocabulary trained
                         on the test texts, SiglipTokenizer's files, and the tokenizer.json converted from it
  texts.json             the test texts
  inputs.safetensors     pixel_values [B,3,S,S] f32; input_ids [B,L] i64, the texts through SiglipTokenizer with
                         padding="max_length", truncation=True ("tiny"; random ids for presets), L =
                         max_position_embeddings; attention_mask [B,L] i64
  expected.safetensors   fp32 forward, all f32:
      vision.last_hidden_state   post_layernorm(encoder output) [B,N,D]
      image_embeds               pooling-head output (pooler_output), not normalized
      text.last_hidden_state     final_layer_norm(encoder output), input_ids only (no mask, as SigLIP is trained)
      text_embeds                head(last position), not normalized
      text_embeds_masked         the same with attention_mask (what HF's processor output passes)
      logits_per_image           exp(logit_scale) * cos + logit_bias, from the unmasked text embeddings
      probs                      sigmoid(logits_per_image)
      logit_scale, logit_bias    [] scalars
  preprocessed.safetensors   ("tiny") SiglipImageProcessorPil (Pillow BICUBIC straight to the square, rescale,
                         mean/std 0.5) of tests/fixtures/openai/franz-kafka.pil-decoded.webp (450x655) at 64 and
                         at 48 with mean/std (0.4, 0.45, 0.5)/(0.25, 0.3, 0.35): f32 [3,S,S] each
  expected_fp16.safetensors, expected_bf16.safetensors   with --half: the same keys from the model in half
                         precision (CUDA if available, else CPU), upcast to f32.

Weights are not HF's init (see make_hf_fixture.randomize, applied here as well): Linear std gain/sqrt(fan_in),
biases std 0.1, LayerNorm weights 1 + N(0, 0.2) and biases N(0, 0.2), embeddings N(0, 0.5), the probe N(0, 1),
logit_scale 2.3 and logit_bias -1.5 (both matter to the logits).
"""

import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import SiglipConfig, SiglipModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_fixture as shared  # noqa: E402

DEFAULT_SEED = 20261207

# Same numbers as SiglipConfig::preset: (image, patch, width, layers, heads, mlp, context).
PRESETS = {
    "siglip-base-patch16-224": (224, 16, 768, 12, 12, 3072, 64),
    "siglip-base-patch16-384": (384, 16, 768, 12, 12, 3072, 64),
    "siglip-large-patch16-256": (256, 16, 1024, 24, 16, 4096, 64),
    "siglip-large-patch16-384": (384, 16, 1024, 24, 16, 4096, 64),
    "siglip-so400m-patch14-224": (224, 14, 1152, 27, 16, 4304, 16),
    "siglip-so400m-patch14-384": (384, 14, 1152, 27, 16, 4304, 64),
}

# Mixed lengths, case, punctuation, whitespace, accents and CJK; one longer than the tiny context (truncated).
TEXTS = [
    "a photo of a cat",
    "Hello, World!",
    "  two   cats\tsleeping on a red sofa ",
    "Ünïcödé café naïve résumé",
    "東京の夜景 and a cat",
    "the quick brown fox jumps over the lazy dog and keeps running far away",
]

TINY_TOKENIZER_CORPUS = TEXTS + [
    "a photo of a dog", "an astronaut riding a horse on the moon", "a bowl of ramen with chopsticks",
    "street at night in tokyo with neon signs", "mountains and a lake at sunrise", "price: $100 (approx.)",
]


def make_config(name):
    if name == "tiny":
        # Vision: head dim 72 (so400m's) in two heads; text: one head of 64, two layers. The text width differs
        # from the vision width so the head's [projection, D] orientation matters.
        vision = dict(hidden_size=144, intermediate_size=144, num_hidden_layers=1, num_attention_heads=2,
                      image_size=16, patch_size=4)
        text = dict(vocab_size=90, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=1, max_position_embeddings=16, projection_size=144, pad_token_id=1)
        return dict(vision_config=vision, text_config=text), 2
    key = name.removeprefix("google/")
    if key not in PRESETS:
        sys.exit(f"unknown config {name!r}; use tiny or one of {', '.join(PRESETS)}")
    image, patch, width, layers, heads, mlp, context = PRESETS[key]
    common = dict(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads)
    vision = dict(common, image_size=image, patch_size=patch)
    text = dict(common, vocab_size=32000, max_position_embeddings=context, pad_token_id=1)
    return dict(vision_config=vision, text_config=text), 2


@torch.no_grad()
def randomize(model, gen):
    """make_hf_fixture.randomize's rules, plus the SigLIP-only parameters."""

    normal = shared.normal_sampler(gen)
    for name, p in model.named_parameters():
        if name == "logit_scale":
            p.fill_(2.3)
        elif name == "logit_bias":
            p.fill_(-1.5)
        elif name.endswith("head.probe"):
            p.copy_(normal(p.shape, 1.0))
        elif name.endswith("in_proj_weight"):
            # Q and K rows peaked like the encoder's (gain 1.5), V rows gain 1.
            d = p.shape[1]
            gains = torch.cat([torch.full((2 * d, 1), 1.5), torch.ones((d, 1))])
            p.copy_(normal(p.shape, 1.0 / math.sqrt(d)) * gains)
        elif any(s in name for s in ("layer_norm", "layernorm")):
            p.copy_(normal(p.shape, 0.2, 1.0 if name.endswith("weight") else 0.0))
        elif "position_embedding" in name or "token_embedding" in name:
            p.copy_(normal(p.shape, 0.5))
        elif "patch_embedding.weight" in name:
            p.copy_(normal(p.shape, 1.0 / math.sqrt(p[0].numel())))
        else:
            shared.init_bias_or_matrix(name, p, normal)


def tiny_tokenizer(out_dir, context):
    """Trains a 90-piece SentencePiece unigram model (SiglipTokenizer's layout: pad 0, </s> 1, unk 2), saves
    SiglipTokenizer's files and the tokenizer.json converted from them."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer
    from transformers.convert_slow_tokenizer import T5Converter

    prefix = os.path.join(out_dir, "spiece")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_TOKENIZER_CORPUS * 20), model_prefix=prefix, vocab_size=90,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", character_coverage=1.0, normalization_rule_name="identity", num_threads=1,
        minloglevel=2,
    )
    os.remove(prefix + ".vocab")
    tok = SiglipTokenizer(prefix + ".model", model_max_length=context)
    tok.save_pretrained(out_dir)
    for extra in ("special_tokens_map.json", "added_tokens.json"):
        if os.path.exists(os.path.join(out_dir, extra)):
            os.remove(os.path.join(out_dir, extra))
    tok._extra_ids = 0  # T5Converter reads T5's sentinel count
    T5Converter(tok).converted().save(os.path.join(out_dir, "tokenizer.json"))
    return tok


def preprocessed(out_dir):
    """SiglipImageProcessorPil outputs of a committed image (see the module docstring)."""
    from PIL import Image
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "crates/flashclip-model/tests/fixtures/openai/franz-kafka.pil-decoded.webp")
    image = Image.open(path).convert("RGB")
    out = {}
    for size, mean, std in ((64, None, None), (48, [0.4, 0.45, 0.5], [0.25, 0.3, 0.35])):
        kwargs = dict(size={"height": size, "width": size})
        if mean is not None:
            kwargs.update(image_mean=mean, image_std=std)
        pil = SiglipImageProcessorPil(**kwargs)(image, return_tensors="pt")["pixel_values"][0]
        out[f"kafka_{size}"] = pil.float().contiguous()
        try:
            from transformers import SiglipImageProcessor

            tv = SiglipImageProcessor(**kwargs)(image, return_tensors="pt")["pixel_values"][0]
            print(f"preprocess {size}: torchvision backend differs from Pillow by {(tv - pil).abs().max():.3e}")
        except ImportError:
            pass
    save_file(out, os.path.join(out_dir, "preprocessed.safetensors"))


def make_inputs(config, n_images, tokenizer, gen):
    t = config.text_config
    v = config.vision_config
    pixel_values = torch.randn((n_images, v.num_channels, v.image_size, v.image_size), generator=gen)
    if tokenizer is not None:
        enc = tokenizer(TEXTS, padding="max_length", max_length=t.max_position_embeddings, truncation=True,
                        return_tensors="pt")
        input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
    else:
        lengths = [5, t.max_position_embeddings // 2, t.max_position_embeddings]
        input_ids = torch.full((len(lengths), t.max_position_embeddings), t.pad_token_id, dtype=torch.int64)
        attention_mask = torch.zeros_like(input_ids)
        for b, n in enumerate(lengths):
            input_ids[b, : n - 1] = torch.randint(3, t.vocab_size, (n - 1,), generator=gen)
            input_ids[b, n - 1] = 1
            attention_mask[b, :n] = 1
    return dict(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)


@torch.no_grad()
def forward(model, inputs, device, dtype):
    model = model.to(device=device, dtype=dtype).eval()
    pixel_values = inputs["pixel_values"].to(device=device, dtype=dtype)
    input_ids = inputs["input_ids"].to(device)
    attention_mask = inputs["attention_mask"].to(device)
    out = {}
    v_states, handles = shared.capture_layers(model.vision_model)
    vision = model.vision_model(pixel_values=pixel_values)
    for h in handles:
        h.remove()
    assert len(v_states) == model.config.vision_config.num_hidden_layers + 1
    out["vision.last_hidden_state"] = vision.last_hidden_state
    out["image_embeds"] = vision.pooler_output
    text = model.text_model(input_ids=input_ids)
    out["text.last_hidden_state"] = text.last_hidden_state
    out["text_embeds"] = text.pooler_output
    out["text_embeds_masked"] = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    # SiglipModel.forward itself gives the logits (input_ids only).
    full = model(pixel_values=pixel_values, input_ids=input_ids)
    out["logits_per_image"] = full.logits_per_image
    out["probs"] = torch.sigmoid(full.logits_per_image)
    out["logit_scale"] = model.logit_scale.detach().reshape(())
    out["logit_bias"] = model.logit_bias.detach().reshape(())
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(full.image_embeds * out["image_embeds"].norm(dim=-1, keepdim=True),
                          out["image_embeds"], atol=tol, rtol=tol)
    return {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in out.items()}


def main():
    args = shared.parse_args(__doc__, '"tiny" or a preset name (siglip-base-patch16-224, ...)', DEFAULT_SEED)
    gen = shared.seeded_generator(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)

    kwargs, n_images = make_config(args.config)
    config = SiglipConfig(**kwargs)
    model = SiglipModel(config).eval()
    shared.set_attn(model, "eager")
    randomize(model, gen)
    tiny = args.config == "tiny"
    if tiny:
        # Round every weight to fp16 so the fp16 file holds exactly the model the outputs come from.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    tokenizer = tiny_tokenizer(args.out_dir, config.text_config.max_position_embeddings) if tiny else None
    inputs = make_inputs(config, n_images, tokenizer, gen)

    config.save_pretrained(args.out_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    if tiny:
        state = {k: v.half() for k, v in state.items()}
    meta = shared.fixture_metadata(args)
    save_file(state, os.path.join(args.out_dir, "model.safetensors"), metadata={"format": "pt"})
    save_file(inputs, os.path.join(args.out_dir, "inputs.safetensors"), metadata=meta)
    with open(os.path.join(args.out_dir, "texts.json"), "w", encoding="utf-8") as f:
        json.dump(TEXTS if tiny else [], f, ensure_ascii=False, indent=1)

    if tiny:
        preprocessed(args.out_dir)
    expected = forward(model, inputs, "cpu", torch.float32)
    save_file(expected, os.path.join(args.out_dir, "expected.safetensors"), metadata=meta)
    print(f"wrote {args.out_dir}: {len(expected)} expected tensors")

    if args.half:
        shared.write_half_outputs(args, lambda: SiglipModel(config), model, forward, inputs, expected, meta)

    print(json.dumps({k: list(v.shape) for k, v in expected.items()}))


if __name__ == "__main__":
    main()
