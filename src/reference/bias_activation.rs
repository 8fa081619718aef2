use ndarray::{Array1, Array2};

use super::round;
use crate::ops::bias_activation::Activation;
use crate::tensor::Element;

/// The activation in f64.
pub fn activate(act: Activation, h: f64) -> f64 {
    match act {
        Activation::QuickGelu => h / (1.0 + (-1.702 * h).exp()),
        Activation::GeluErf => 0.5 * h * (1.0 + erf(h / std::f64::consts::SQRT_2)),
        Activation::Identity => h,
        Activation::GeluTanh => {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (h + 0.044715 * h * h * h);
            0.5 * h * (1.0 + inner.tanh())
        }
    }
}

/// erf to about 1e-15 (Abramowitz-Stegun is too coarse for a float64 reference): series for small |x|,
/// continued fraction of erfc for large |x|.
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, mut n) = (a, a, 0.0f64);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated from the tail.
        let mut frac = a;
        for k in (1..60).rev() {
            frac = a + (k as f64 / 2.0) / frac;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / frac
    };
    r.copysign(x)
}

/// `act(x + bias)` in f64.
pub fn bias_activation(
    x: &Array2<f64>,
    bias: Option<&Array1<f64>>,
    act: Activation,
) -> Array2<f64> {
    let mut y = x.clone();
    for mut row in y.rows_mut() {
        for (c, v) in row.iter_mut().enumerate() {
            let h = *v + bias.map_or(0.0, |b| b[c]);
            *v = activate(act, h);
        }
    }
    y
}

/// As an unfused framework computes it in `T`: the sum rounded to `T`, then the activation rounded to `T`.
pub fn bias_activation_naive<T: Element>(
    x: &Array2<f64>,
    bias: Option<&Array1<f64>>,
    act: Activation,
) -> Array2<f64> {
    let mut y = x.clone();
    for mut row in y.rows_mut() {
        for (c, v) in row.iter_mut().enumerate() {
            let h = round::<T>(*v + bias.map_or(0.0, |b| b[c]));
            *v = round::<T>(activate(act, h));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::erf;

    #[test]
    fn erf_matches_known_values() {
        // Values from standard tables (15+ digits).
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.5, -0.9661051464753108),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-14,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }
}
