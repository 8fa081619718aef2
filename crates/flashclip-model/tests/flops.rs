//! Tests of the FLOPs calculator against the reference table (image and text batch 128,
//! text length 64, every floating-point op counted), the reference's symbolic count for
//! ViT-L/14-336, and a hand-counted tiny model in the 2-FLOPs-per-MAC convention.

use flashclip_model::config::{Activation, ClipConfig};
use flashclip_model::flops::{
    count, Convention, FlopsError, FlopsInput, MlpKind, PatchEmbed, TowerShape, VisionDetails,
    REFERENCE_CONSTANT_EXCESS,
};

const BATCH: usize = 128;
const TEXT_LEN: usize = 64;

const VIT_L_336_HF: &str = include_str!("../configs/clip-vit-large-patch14-336.json");
const VIT_H_14_OPEN_CLIP: &str = include_str!("../configs/ViT-H-14.json");
const EVA_BIGE_14_PLUS: &str = include_str!("../configs/EVA02-CLIP-bigE-14-plus.json");

fn every_op_tflops(input: &FlopsInput) -> f64 {
    count(input, BATCH, BATCH, TEXT_LEN).every_op.total() as f64 / 1e12
}

fn assert_within(actual: f64, table: f64, rel: f64, what: &str) {
    let err = (actual - table).abs() / table;
    assert!(
        err <= rel,
        "{what}: {actual:.3} TFLOPs vs table {table} ({:.2}% off)",
        err * 100.0
    );
}

#[test]
fn vit_l_14_336_matches_table() {
    let preset = FlopsInput::from(&ClipConfig::preset("ViT-L-14-336").unwrap());
    let hf = FlopsInput::from_hf_json_str(VIT_L_336_HF).unwrap();
    assert_eq!(preset, hf);
    assert_eq!(hf.vision.seq_len, 577);
    assert_within(every_op_tflops(&hf), 50.0, 0.03, "ViT-L/14-336");
}

#[test]
fn laion_vit_h_14_matches_table() {
    let preset = FlopsInput::from(&ClipConfig::preset("ViT-H-14").unwrap());
    let open_clip = FlopsInput::from_open_clip_json_str(VIT_H_14_OPEN_CLIP).unwrap();
    assert_eq!(preset, open_clip);
    assert_within(every_op_tflops(&preset), 48.0, 0.03, "ViT-H/14");
}

#[test]
fn eva02_clip_e_matches_table() {
    let eva = FlopsInput::eva02_clip_bige_14().unwrap();
    assert_eq!(eva.vision.width, 1792);
    assert_eq!(eva.vision.heads, 16);
    assert_eq!(eva.vision.mlp_width, 15360);
    assert_eq!(eva.vision.mlp, MlpKind::Plain);
    assert_eq!(eva.vision.seq_len, 257);
    assert_eq!(eva.vision_details, VisionDetails::EVA);
    assert!(eva.patch.bias);
    assert_eq!(
        (eva.text.width, eva.text.heads, eva.text.layers),
        (1024, 16, 24)
    );
    assert_eq!(eva.projection_dim, 1024);
    // The table's 295 is reproduced to 0.1% with the plain MLP.
    assert_within(every_op_tflops(&eva), 295.0, 0.001, "EVA02-CLIP-bigE-14");

    // A SwiGLU MLP would be far off the table.
    let mut swiglu = eva;
    swiglu.vision.mlp = MlpKind::SwiGlu;
    assert!(every_op_tflops(&swiglu) > 1.3 * 295.0);

    // bigE-14-plus (ViT-bigG's text tower) is also within 3% but is a different model.
    let plus = FlopsInput::from_open_clip_json_str(EVA_BIGE_14_PLUS).unwrap();
    assert_eq!(
        (plus.text.width, plus.text.heads, plus.text.layers),
        (1280, 20, 32)
    );
    assert_within(
        every_op_tflops(&plus),
        295.0,
        0.03,
        "EVA02-CLIP-bigE-14-plus",
    );
}

/// The reference's symbolic every-op count of ViT-L/14-336 at batch 128, text length 64,
/// with i/t = image/text tower and d/m/l = width/MLP width/layers.
fn reference_polynomial(id: u128, im: u128, il: u128, td: u128, tm: u128, tl: u128) -> u128 {
    590848 * id * id * il
        + 295424 * id * il * im
        + 171789056 * id * il
        + 88082560 * id
        + 369280 * il * im
        + 1362790912 * il
        + 65536 * td * td * tl
        + 32768 * td * tl * tm
        + 2244608 * td * tl
        + 270336 * td
        + 40960 * tl * tm
        + 12517376 * tl
        + 32244224
}

#[test]
fn reference_polynomial_is_reproduced() {
    let base = FlopsInput::from(&ClipConfig::preset("ViT-L-14-336").unwrap());
    // Head counts stay at 16 / 12 (they are numbers, not symbols, in the polynomial).
    for (id, im, il, td, tm, tl) in [
        (1024, 4096, 24, 768, 3072, 12),
        (512, 2048, 6, 384, 1536, 3),
        (1280, 3000, 32, 1020, 2000, 7),
        (2048, 8192, 1, 96, 96, 48),
    ] {
        let mut input = base;
        input.vision.width = id;
        input.vision.mlp_width = im;
        input.vision.layers = il;
        input.text.width = td;
        input.text.mlp_width = tm;
        input.text.layers = tl;
        let ours = count(&input, BATCH, BATCH, TEXT_LEN).every_op.total();
        let theirs = reference_polynomial(
            id as u128, im as u128, il as u128, td as u128, tm as u128, tl as u128,
        );
        // Every coefficient that involves a width, an MLP width or a layer count matches
        // exactly; only the constant term differs, by a fixed amount.
        assert_eq!(
            ours + REFERENCE_CONSTANT_EXCESS,
            theirs,
            "d/m/l = {id}/{im}/{il}, {td}/{tm}/{tl}"
        );
    }
}

/// A model small enough to count by hand: 4×4 one-channel images in 2×2 patches (4
/// patches + class token = 5 tokens) through one layer of width 4 (2 heads, MLP 8); texts
/// of 3 tokens through two layers of width 4 (1 head, MLP 8); shared space of width 2.
fn tiny() -> FlopsInput {
    FlopsInput {
        vision: TowerShape {
            width: 4,
            layers: 1,
            heads: 2,
            mlp_width: 8,
            seq_len: 5,
            activation: Activation::QuickGelu,
            mlp: MlpKind::Plain,
        },
        patch: PatchEmbed {
            image_size: 4,
            patch_size: 2,
            num_channels: 1,
            bias: false,
        },
        vision_details: VisionDetails::CLIP,
        text: TowerShape {
            width: 4,
            layers: 2,
            heads: 1,
            mlp_width: 8,
            seq_len: 77,
            activation: Activation::QuickGelu,
            mlp: MlpKind::Plain,
        },
        projection_dim: 2,
    }
}

#[test]
fn two_flops_per_mac_by_hand() {
    let input = tiny();
    input.validate().unwrap();
    let (images, texts, len) = (2, 3, 3);
    let r = count(&input, images, texts, len);
    let m = &r.mac2;
    // Patch embedding: per image 4 patches × 4 outputs × (1·2·2) MACs.
    assert_eq!(m.vision.embed, 2 * (2 * 4 * 4 * 4));
    // Q, K, V, O: per token 4 × (4×4) MACs; 2 images × 5 tokens × 1 layer.
    assert_eq!(m.vision.attn_proj, 2 * (4 * 16) * 10);
    // QKᵀ and PV: per token 5 keys × 4 channels MACs each.
    assert_eq!(m.vision.attn_core, 2 * (2 * 5 * 4) * 10);
    // fc1 + fc2: per token 2 × (4×8) MACs.
    assert_eq!(m.vision.mlp, 2 * (2 * 32) * 10);
    assert_eq!(m.vision.norm_act, 0);
    // Text: 3 texts × 3 tokens × 2 layers.
    assert_eq!(m.text.embed, 0);
    assert_eq!(m.text.attn_proj, 2 * (4 * 16) * 18);
    assert_eq!(m.text.attn_core, 2 * (2 * 3 * 4) * 18);
    assert_eq!(m.text.mlp, 2 * (2 * 32) * 18);
    // Projections: one 4→2 product per image / text.
    assert_eq!(m.vision_projection, 2 * 8 * 2);
    assert_eq!(m.text_projection, 2 * 8 * 3);
    // Logits: 2×3 dot products of length 2.
    assert_eq!(m.contrastive, 2 * 6 * 2);
    assert_eq!(
        m.total(),
        256 + 1280 + 800 + 1280 + 2304 + 864 + 2304 + 32 + 48 + 24
    );
    assert_eq!(r.breakdown(Convention::MacTimes2), m);
}

#[test]
fn every_op_by_hand_for_one_block() {
    // One text sequence of 3 tokens through one block of width 4 (1 head, MLP 8,
    // QuickGELU), projected to width 2; one 1×1 image patch so the vision side is tiny.
    let mut input = tiny();
    input.text.layers = 1;
    let r = count(&input, 0, 1, 3);
    let a = &r.every_op;
    // 4 linear layers with bias, 4 outputs × (4 mul + 3 add + 1 bias) per token.
    assert_eq!(a.text.attn_proj, 3 * 4 * 4 * 8);
    // Per token: q·scale 4; 3 scores × (4 mul + 3 add); softmax 3 exp + 2 add + 3 div;
    // 4 outputs × (3 mul + 2 add).
    assert_eq!(a.text.attn_core, 3 * (4 + 3 * 7 + 8 + 4 * 5));
    // fc1: 8 × (4 + 3 + 1); fc2: 4 × (8 + 7 + 1).
    assert_eq!(a.text.mlp, 3 * (8 * 8 + 4 * 16));
    // Two LayerNorms (8·4 + 2 each), two residual adds (4 each), QuickGELU (5 × 8); and
    // the final LayerNorm.
    assert_eq!(a.text.norm_act, 3 * (2 * 34 + 2 * 4 + 5 * 8) + 3 * 34);
    assert_eq!(a.text.embed, 3 * 4);
    assert_eq!(a.text_projection, 2 * (4 + 3));
    // No images: no logits; normalising the text embedding: 2 squares, 1 add, sqrt, 2 divs.
    assert_eq!(a.contrastive, 6);
    assert_eq!(a.vision.total(), 0);
}

#[test]
fn display_names_both_conventions() {
    let eva = FlopsInput::eva02_clip_bige_14().unwrap();
    let text = count(&eva, BATCH, BATCH, TEXT_LEN).to_string();
    assert!(text.contains("every op"), "{text}");
    assert!(text.contains("2/MAC"), "{text}");
    assert!(text.contains("TFLOP"), "{text}");
    assert!(text.contains("vision  MLP"), "{text}");
}

#[test]
fn bad_json_is_an_error_not_a_panic() {
    for (json, what) in [
        ("{", "syntax"),
        ("[]", "not an object"),
        (r#"{"vision_cfg": {}}"#, "no embed_dim"),
        (r#"{"embed_dim": -1}"#, "negative"),
        (
            r#"{"embed_dim": 512, "vision_cfg": {"width": 100}}"#,
            "head_width",
        ),
        (
            r#"{"embed_dim": 512, "vision_cfg": {"layers": [3, 4, 6, 3]}}"#,
            "ResNet",
        ),
        (
            r#"{"embed_dim": 512, "vision_cfg": {"mlp_ratio": "x"}}"#,
            "mlp_ratio",
        ),
        (
            r#"{"embed_dim": 512, "vision_cfg": {"image_size": 225}}"#,
            "image/patch",
        ),
        (
            r#"{"embed_dim": 512, "text_cfg": {"heads": 0}}"#,
            "zero heads",
        ),
    ] {
        let result = FlopsInput::from_open_clip_json_str(json);
        assert!(result.is_err(), "{what}: {result:?}");
    }
    assert!(matches!(
        FlopsInput::from_hf_json_str("{\"vision_config\": 3}"),
        Err(FlopsError::Config(_))
    ));
}

#[test]
fn huge_inputs_saturate() {
    let mut input = tiny();
    input.vision.width = usize::MAX;
    input.vision.mlp_width = usize::MAX;
    let r = count(&input, usize::MAX, usize::MAX, usize::MAX);
    assert_eq!(r.every_op.total(), u128::MAX);
}
