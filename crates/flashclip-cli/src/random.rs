//! Seeded random inputs for `flashclip bench`: weights, pixels and token ids (no `rand` dependency; splitmix64).

use rayon::prelude::*;

use flashclip_model::config::{ClipConfig, VisionConfig};

/// Weights are uniform in `[-WEIGHT_SCALE, WEIGHT_SCALE)`.
pub const WEIGHT_SCALE: f32 = 0.02;

/// Elements per independently seeded chunk (lets big tensors fill in parallel, reproducibly).
const CHUNK: usize = 1 << 16;

/// The splitmix64 generator: tiny, fast and good enough for benchmark inputs.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-scale, scale)`.
    pub fn symmetric(&mut self, scale: f32) -> f32 {
        (2.0 * self.unit() - 1.0) * scale
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// FNV-1a of a tensor name, so each tensor gets its own stream whatever the order of calls.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `n` values uniform in `[-scale, scale)`, filled in parallel, reproducible from `seed`.
pub fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng = SplitMix::new(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            for x in chunk {
                *x = rng.symmetric(scale);
            }
        });
    out
}

/// Random weights as a function of (checkpoint key, shape): LayerNorm weights 1 (CLIP's and BERT's spellings),
/// biases 0, the logit scale at `logit_scale_init`, everything else uniform in ±[`WEIGHT_SCALE`].
pub fn weights(logit_scale_init: f32, seed: u64) -> impl FnMut(&str, &[usize]) -> Vec<f32> {
    move |name, shape| {
        let n: usize = shape.iter().product();
        let is_norm = ["layer_norm", "layrnorm", "layernorm", "LayerNorm"]
            .iter()
            .any(|k| name.contains(k));
        if name.ends_with("logit_scale") {
            vec![logit_scale_init; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else if is_norm {
            vec![1.0; n]
        } else {
            uniform(seed ^ name_hash(name), n, WEIGHT_SCALE)
        }
    }
}

/// `batch` preprocessed-looking images: values uniform in `[-2, 2)` (the range of CLIP-normalized pixels).
pub fn pixels(v: &VisionConfig, batch: usize, seed: u64) -> Vec<f32> {
    uniform(
        seed,
        batch * v.num_channels * v.image_size * v.image_size,
        2.0,
    )
}

/// `batch` texts of exactly `len` tokens: start token, random ordinary tokens, end token.
pub fn token_ids(config: &ClipConfig, batch: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let t = &config.text;
    // Ordinary tokens stay below both special ids, so pooling finds the end token where it was put.
    let ordinary = u64::from(t.bos_token_id.min(t.eos_token_id)).clamp(1, t.vocab_size as u64);
    let mut rng = SplitMix::new(seed);
    (0..batch)
        .map(|_| {
            let mut ids = Vec::with_capacity(len);
            ids.push(t.bos_token_id);
            for _ in 2..len {
                ids.push(rng.below(ordinary) as u32);
            }
            ids.push(t.eos_token_id);
            ids.truncate(len.max(1));
            ids
        })
        .collect()
}

/// `batch` BERT texts of exactly `len` tokens (`len >= 2`): `cls`, random ids in `0..vocab` other than `cls` and
/// `sep`, then `sep`.
pub fn wordpiece_ids(
    (cls, sep): (u32, u32),
    vocab: usize,
    batch: usize,
    len: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    let mut rng = SplitMix::new(seed);
    (0..batch)
        .map(|_| {
            let mut ids = vec![cls];
            while ids.len() + 1 < len {
                let id = rng.below(vocab.max(1) as u64) as u32;
                // A vocabulary of the two specials alone has nothing else to draw.
                if vocab <= 2 || (id != cls && id != sep) {
                    ids.push(id);
                }
            }
            ids.push(sep);
            ids
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_reproducible_and_in_range() {
        let a = uniform(7, 200_000, 0.02);
        assert_eq!(a, uniform(7, 200_000, 0.02));
        assert!(a.iter().all(|x| (-0.02..0.02).contains(x)));
        let mean = a.iter().map(|&x| f64::from(x)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 1e-3);
    }

    #[test]
    fn tokens_have_start_and_end() {
        let config = ClipConfig::preset("ViT-B-32").unwrap();
        let ids = token_ids(&config, 3, 77, 1);
        assert_eq!(ids.len(), 3);
        for t in &ids {
            assert_eq!(t.len(), 77);
            assert_eq!(t[0], config.text.bos_token_id);
            assert_eq!(t[76], config.text.eos_token_id);
            assert!(t[1..76].iter().all(|&x| x < config.text.bos_token_id));
        }
    }

    #[test]
    fn random_weights_build() {
        let config = ClipConfig::preset("ViT-B-32").unwrap();
        let w = flashclip_model::ClipWeights::from_fn(&config, weights(config.logit_scale_init, 0))
            .unwrap();
        assert!(w.num_parameters() > 100_000_000);
        assert!(w.vision_model.pre_layrnorm.weight.iter().all(|&x| x == 1.0));
        assert!(w.vision_model.pre_layrnorm.bias.iter().all(|&x| x == 0.0));
        assert_eq!(w.logit_scale, config.logit_scale_init);
    }
}
