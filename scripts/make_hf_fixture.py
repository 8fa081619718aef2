#!/usr/bin/env python3
"""Build a seeded random Hugging Face CLIPModel and dump its inputs and outputs.

The files it writes are the ground truth for flashclip's Rust CPU reference
(crates/flashclip-model/src/reference) and, through it, for the CUDA model.

Usage:
    python3 scripts/make_hf_fixture.py CONFIG OUT_DIR [--seed N] [--half] [--device cpu|cuda]

CONFIG is "tiny" (the small model committed under crates/flashclip-model/tests/fixtures/tiny) or a preset name
matching the Rust presets: ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14,
ViT-bigG-14 (the "ViT-L/14" spelling works too).

Needs torch, transformers, safetensors and numpy. Writes into OUT_DIR:

  config.json, model.safetensors   the model, as CLIPModel.save_pretrained writes it (fp32)
  inputs.safetensors               pixel_values [B,3,S,S] f32; input_ids [B,L] i64 padded
                                   with pad_token_id; attention_mask [B,L] i64; lengths [B] i64
  expected.safetensors             fp32 forward, all f32:
      vision.hidden_states.{i}     i = 0: after pre_layrnorm; i = k: after encoder layer k
      vision.last_hidden_state     output of the last layer (no post_layernorm)
      vision.pooler_output         post_layernorm(class token)
      image_embeds                 visual_projection(pooler_output), not normalized
      image_embeds_normalized      image_embeds / ||image_embeds||
      text.hidden_states.{i}       i = 0: token + position embeddings; i = k: after layer k
      text.last_hidden_state       final_layer_norm(output of the last layer)
      text.pooler_output           last_hidden_state at the end-of-text token
      text_embeds, text_embeds_normalized
      logits_per_image             [B_img, B_txt] = exp(logit_scale) * cos
      logit_scale                  [] (the log scale)
    Text rows past each text's length are whatever HF computes there (with the
    attention mask); compare only positions < lengths[b].
  expected_fp16.safetensors, expected_bf16.safetensors   with --half: the same keys from
    the same model run in half precision (CUDA if available, else CPU), upcast to f32,
    to measure HF's own half-precision error.

The weights are not HF's tiny init: every Linear gets std gain/sqrt(fan_in) (gain 1.5
for Q and K so attention is far from uniform), biases std 0.1, LayerNorm weights
1 + N(0, 0.2) and biases N(0, 0.2), embeddings N(0, 0.5), logit_scale 3.0, so that
indexing, transposition and masking bugs all change the outputs.
"""

import argparse
import json
import math
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

DEFAULT_SEED = 20240611

# Same numbers as ClipConfig::preset in src/config.rs.
PRESETS = {
    # name: (embed, image, patch, v_width, v_layers, v_heads, v_mlp, t_width, t_layers, t_heads, act)
    "ViT-B-32": (512, 224, 32, 768, 12, 12, 3072, 512, 12, 8, "quick_gelu"),
    "ViT-B-16": (512, 224, 16, 768, 12, 12, 3072, 512, 12, 8, "quick_gelu"),
    "ViT-L-14": (768, 224, 14, 1024, 24, 16, 4096, 768, 12, 12, "quick_gelu"),
    "ViT-L-14-336": (768, 336, 14, 1024, 24, 16, 4096, 768, 12, 12, "quick_gelu"),
    "ViT-H-14": (1024, 224, 14, 1280, 32, 16, 5120, 1024, 24, 16, "gelu"),
    "ViT-bigG-14": (1280, 224, 14, 1664, 48, 16, 8192, 1280, 32, 20, "gelu"),
}


def canonical_preset(name):
    key = name.strip().replace("/", "-").lower()
    if key.endswith("@336px"):
        key = key[: -len("@336px")] + "-336"
    for preset in PRESETS:
        if preset.lower() == key:
            return preset
    return None


def make_config(name):
    """Returns (CLIPConfig kwargs, text lengths, image batch)."""
    if name == "tiny":
        text = dict(
            vocab_size=1000,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            bos_token_id=998,
            eos_token_id=999,
            pad_token_id=0,
        )
        vision = dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            num_channels=3,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
        return dict(text_config=text, vision_config=vision, projection_dim=64), [5, 9, 16], 3
    preset = canonical_preset(name)
    if preset is None:
        sys.exit(f"unknown config {name!r}; use 'tiny' or one of {', '.join(PRESETS)}")
    embed, image, patch, vw, vl, vh, vmlp, tw, tl, th, act = PRESETS[preset]
    text = dict(
        vocab_size=49408,
        hidden_size=tw,
        intermediate_size=4 * tw,
        num_hidden_layers=tl,
        num_attention_heads=th,
        max_position_embeddings=77,
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=vw,
        intermediate_size=vmlp,
        num_hidden_layers=vl,
        num_attention_heads=vh,
        image_size=image,
        patch_size=patch,
        num_channels=3,
        hidden_act=act,
        layer_norm_eps=1e-5,
    )
    return dict(text_config=text, vision_config=vision, projection_dim=embed), [5, 17, 77], 2


@torch.no_grad()
def randomize(model, gen):
    """Re-initializes every parameter so that bugs show (see the module docstring)."""

    normal = normal_sampler(gen)
    for name, p in model.named_parameters():
        if name == "logit_scale":
            p.fill_(3.0)
        elif any(s in name for s in ("layer_norm", "layrnorm", "layernorm")):
            p.copy_(normal(p.shape, 0.2, 1.0 if name.endswith("weight") else 0.0))
        elif name.endswith("class_embedding") or "embeddings.position_embedding" in name:
            p.copy_(normal(p.shape, 0.5))
        elif "token_embedding" in name:
            p.copy_(normal(p.shape, 0.5))
        elif "patch_embedding" in name:
            fan_in = p[0].numel()
            p.copy_(normal(p.shape, 1.0 / math.sqrt(fan_in)))
        else:
            init_bias_or_matrix(name, p, normal)


def make_inputs(cfg, lengths, n_images, gen):
    t = cfg.text_config
    v = cfg.vision_config
    pixel_values = torch.randn(
        (n_images, v.num_channels, v.image_size, v.image_size), generator=gen, dtype=torch.float32
    )
    max_len = max(lengths)
    input_ids = torch.full((len(lengths), max_len), t.pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(lengths), max_len), dtype=torch.int64)
    # Ordinary tokens avoid the special ids so that the first eos is the real one.
    specials = {t.bos_token_id, t.eos_token_id, t.pad_token_id}
    ordinary = torch.tensor([i for i in range(t.vocab_size) if i not in specials])
    for b, n in enumerate(lengths):
        middle = ordinary[torch.randint(len(ordinary), (n - 2,), generator=gen)]
        row = torch.cat([torch.tensor([t.bos_token_id]), middle, torch.tensor([t.eos_token_id])])
        input_ids[b, :n] = row
        attention_mask[b, :n] = 1
    return dict(
        pixel_values=pixel_values,
        input_ids=input_ids,
        attention_mask=attention_mask,
        lengths=torch.tensor(lengths, dtype=torch.int64),
    )


def set_attn(model, impl):
    """Selects the attention implementation (older transformers lack the setter)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:
        model.config._attn_implementation = impl


def parse_args(doc, config_help, default_seed):
    """The command line of every fixture script."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help=config_help)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=default_seed)
    ap.add_argument("--half", action="store_true", help="also write fp16 and bf16 outputs")
    ap.add_argument("--device", default=None, help="device for --half (default: cuda if available)")
    ap.add_argument(
        "--attn",
        default="eager",
        help="attn_implementation for the half-precision runs (fp32 always uses eager)",
    )
    return ap.parse_args()


def seeded_generator(seed):
    """Prints the seed and versions and seeds torch; returns the generator weights and inputs are drawn from."""
    print(f"seed: {seed}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fixture_metadata(args):
    """What made a fixture, written into its safetensors files."""
    return {
        "seed": str(args.seed),
        "config": args.config,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def normal_sampler(gen):
    """N(mean, std^2) samples of a shape, in fp32, drawn from `gen`."""

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean

    return normal


def init_bias_or_matrix(name, p, normal, peaked=("q_proj", "k_proj")):
    """The traps' last rules: biases N(0, 0.1); matrices std gain/sqrt(fan_in), gain 1.5 for the query and key
    projections (`peaked` names them) so that attention is peaked; any other parameter has no rule."""
    if name.endswith("bias"):
        p.copy_(normal(p.shape, 0.1))
    elif p.dim() == 2:
        gain = 1.5 if any(s in name for s in peaked) else 1.0
        p.copy_(normal(p.shape, gain / math.sqrt(p.shape[1])))
    else:
        raise RuntimeError(f"no init rule for parameter {name} {tuple(p.shape)}")


def write_half_outputs(args, make_model, model, forward, inputs, expected, meta):
    """--half: HF's own fp16 and bf16 outputs with `model`'s weights (on CUDA when there is one), and their largest
    embedding errors against the fp32 `expected`."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        print("warning: no CUDA; half-precision outputs computed on CPU", file=sys.stderr)
    for dtype, tag in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        half_model = make_model().eval()
        half_model.load_state_dict(model.state_dict())
        set_attn(half_model, args.attn)
        half_out = forward(half_model, inputs, device, dtype)
        half_meta = dict(meta, dtype=tag, device=device, attn_implementation=args.attn)
        path = os.path.join(args.out_dir, f"expected_{tag}.safetensors")
        save_file(half_out, path, metadata=half_meta)
        err = (half_out["image_embeds"] - expected["image_embeds"]).abs().max().item()
        err_t = (half_out["text_embeds"] - expected["text_embeds"]).abs().max().item()
        print(f"{tag} on {device}: max |image_embeds err| {err:.3e}, max |text_embeds err| {err_t:.3e}")


def capture_layers(tower):
    """Hooks recording the encoder input and every layer's output (version-independent
    alternative to output_hidden_states)."""
    states = []
    handles = [
        tower.encoder.register_forward_pre_hook(
            lambda mod, args, kwargs: states.append(kwargs.get("inputs_embeds", args[0] if args else None)),
            with_kwargs=True,
        )
    ]
    for layer in tower.encoder.layers:
        handles.append(
            layer.register_forward_hook(
                lambda mod, args, out: states.append(out[0] if isinstance(out, tuple) else out)
            )
        )
    return states, handles


@torch.no_grad()
def forward(model, inputs, device, dtype):
    model = model.to(device=device, dtype=dtype).eval()
    pixel_values = inputs["pixel_values"].to(device=device, dtype=dtype)
    input_ids = inputs["input_ids"].to(device)
    attention_mask = inputs["attention_mask"].to(device)

    out = {}
    v_states, v_handles = capture_layers(model.vision_model)
    vision = model.vision_model(pixel_values=pixel_values)
    for h in v_handles:
        h.remove()
    t_states, t_handles = capture_layers(model.text_model)
    text = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
    for h in t_handles:
        h.remove()
    n_v = model.config.vision_config.num_hidden_layers
    n_t = model.config.text_config.num_hidden_layers
    assert len(v_states) == n_v + 1, len(v_states)
    assert len(t_states) == n_t + 1, len(t_states)
    assert torch.equal(v_states[-1], vision.last_hidden_state)

    for i, s in enumerate(v_states):
        out[f"vision.hidden_states.{i}"] = s
    out["vision.last_hidden_state"] = vision.last_hidden_state
    out["vision.pooler_output"] = vision.pooler_output
    image_embeds = model.visual_projection(vision.pooler_output)
    out["image_embeds"] = image_embeds
    for i, s in enumerate(t_states):
        out[f"text.hidden_states.{i}"] = s
    out["text.last_hidden_state"] = text.last_hidden_state
    out["text.pooler_output"] = text.pooler_output
    text_embeds = model.text_projection(text.pooler_output)
    out["text_embeds"] = text_embeds

    image_n = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
    text_n = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
    out["image_embeds_normalized"] = image_n
    out["text_embeds_normalized"] = text_n
    out["logits_per_image"] = model.logit_scale.exp() * image_n @ text_n.t()
    out["logit_scale"] = model.logit_scale.detach().reshape(())

    # Cross-check against CLIPModel.forward itself.
    full = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(full.logits_per_image, out["logits_per_image"], atol=tol, rtol=tol)
    return {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in out.items()}


def main():
    args = parse_args(__doc__, '"tiny" or a preset name (ViT-B-32, ..., ViT-bigG-14)', DEFAULT_SEED)
    gen = seeded_generator(args.seed)

    kwargs, lengths, n_images = make_config(args.config)
    config = CLIPConfig(**kwargs)
    config.logit_scale_init_value = 3.0
    model = CLIPModel(config).eval()
    set_attn(model, "eager")
    randomize(model, gen)
    inputs = make_inputs(config, lengths, n_images, gen)

    os.makedirs(args.out_dir, exist_ok=True)
    model.save_pretrained(args.out_dir, safe_serialization=True)
    meta = fixture_metadata(args)
    save_file(inputs, os.path.join(args.out_dir, "inputs.safetensors"), metadata=meta)

    expected = forward(model, inputs, "cpu", torch.float32)
    save_file(expected, os.path.join(args.out_dir, "expected.safetensors"), metadata=meta)
    print(f"wrote {args.out_dir}: {len(expected)} expected tensors, text lengths {lengths}")

    if args.half:
        write_half_outputs(args, lambda: CLIPModel(config), model, forward, inputs, expected, meta)

    summary = {k: list(v.shape) for k, v in expected.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
