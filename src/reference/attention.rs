use ndarray::{Array3, Array4};

use super::round;
use crate::tensor::Element;

/// Output and row log-sum-exp of a reference attention.
pub struct AttentionRef {
    /// `[batch, seq_q, heads_q, head_dim]`.
    pub o: Array4<f64>,
    /// `[batch, heads_q, seq_q]`; `-inf` for a row that sees no key.
    pub lse: Array3<f64>,
}

/// f64 attention with the kernels' semantics (see [`crate::ops::attention`]): q `[B, Nq, Hq, D]`, k and v
/// `[B, Nk, Hkv, D]`.
pub fn attention(
    q: &Array4<f64>,
    k: &Array4<f64>,
    v: &Array4<f64>,
    key_lens: Option<&[i32]>,
    scale: f64,
    causal: bool,
) -> AttentionRef {
    compute(q, k, v, key_lens, scale, causal, |x| x, |x| x)
}

/// Attention as an unfused framework computes it in `T`: inputs in `T`, scores `(q kᵀ) * scale` rounded to `T`,
/// softmax in fp32 rounded to `T`, `P v` accumulated in fp32 and rounded to `T`.
pub fn attention_naive<T: Element>(
    q: &Array4<f64>,
    k: &Array4<f64>,
    v: &Array4<f64>,
    key_lens: Option<&[i32]>,
    scale: f64,
    causal: bool,
) -> AttentionRef {
    let (q, k, v) = (q.mapv(round::<T>), k.mapv(round::<T>), v.mapv(round::<T>));
    let mut r = compute(&q, &k, &v, key_lens, scale, causal, round::<T>, round::<T>);
    r.o.mapv_inplace(round::<T>);
    r
}

/// The shared loop: `round_s` is applied to each scaled score, `round_p` to each probability.
#[allow(clippy::too_many_arguments)]
fn compute(
    q: &Array4<f64>,
    k: &Array4<f64>,
    v: &Array4<f64>,
    key_lens: Option<&[i32]>,
    scale: f64,
    causal: bool,
    round_s: impl Fn(f64) -> f64,
    round_p: impl Fn(f64) -> f64,
) -> AttentionRef {
    let (b_n, nq, hq, d) = q.dim();
    let (_, nk, hkv, _) = k.dim();
    let group = hq / hkv;
    let mut o = Array4::<f64>::zeros((b_n, nq, hq, d));
    let mut lse = Array3::<f64>::from_elem((b_n, hq, nq), f64::NEG_INFINITY);
    let mut scores = vec![0.0f64; nk];
    for b in 0..b_n {
        let len = key_lens.map_or(nk, |kl| kl[b].clamp(0, nk as i32) as usize);
        for h in 0..hq {
            let hk = h / group;
            for i in 0..nq {
                let visible = if causal { len.min(i + 1) } else { len };
                if visible == 0 {
                    continue;
                }
                let mut max = f64::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate().take(visible) {
                    let dot: f64 = (0..d).map(|c| q[[b, i, h, c]] * k[[b, j, hk, c]]).sum();
                    *s = round_s(dot * scale);
                    max = max.max(*s);
                }
                let denom: f64 = scores[..visible].iter().map(|s| (s - max).exp()).sum();
                lse[[b, h, i]] = max + denom.ln();
                for (j, s) in scores.iter().enumerate().take(visible) {
                    let p = round_p((s - max).exp() / denom);
                    for c in 0..d {
                        o[[b, i, h, c]] += p * v[[b, j, hk, c]];
                    }
                }
            }
        }
    }
    AttentionRef { o, lse }
}
