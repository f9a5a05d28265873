//! GELU and softmax, the model's two transcendental activations.
//!
//! On GPUs and while training they are burn's. On the CPU backend (burn-flex) at inference
//! they run here instead, each as one pass over the data with vectorisable approximations of
//! `erf` and `exp` (no branches, no table lookups: the compiler turns the loops into SIMD, wasm
//! `simd128` included), where burn-flex calls libm's scalar `erff`/`expf` per element and
//! makes a pass per elementary op. Both approximations are within a few units in the last
//! place of libm over the whole f32 range (tested below against f64).

use burn::tensor::Tensor;
use burn::tensor::activation;

use crate::host::{map_values, multiversion, on_host};

/// GELU, `x · Φ(x)` (the exact, erf-based form, as PyTorch's default).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if on_host(&x) {
        map_values(x, 1, gelu_values)
    } else {
        activation::gelu(x)
    }
}

/// Softmax along `dim`.
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    if dim + 1 == D && on_host(&x) {
        let n = x.dims()[D - 1];
        map_values(x, n, |rows| softmax_rows(rows, n))
    } else {
        activation::softmax(x, dim)
    }
}

multiversion! {
    /// GELU of every value, in place.
    fn gelu_values(values: &mut [f32]) {
        for x in values {
            *x = gelu_f32(*x);
        }
    }
}

multiversion! {
    /// Softmax of each row of `n` values, in place.
    fn softmax_rows(values: &mut [f32], n: usize) {
        for row in values.chunks_exact_mut(n) {
            softmax_row(row);
        }
    }
}

/// `erf(x)` as a rational function of `x²` on `[-4, 4]` (where `|erf| < 1 − 1.6e-8`, so the
/// clamp is exact in f32); numerator degree 13, denominator degree 8 in `x`.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_600_2e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329_2e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

#[inline(always)]
pub(crate) fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `exp(x)` by range reduction `x = k·ln2 + r`, `|r| ≤ ln2/2`, a degree-6 polynomial for
/// `exp(r)` and `2^k` built in the exponent bits. Inputs below −87 give 0 (softmax only
/// exponentiates values ≤ 0).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and removing 1.5·2²³ (exact for |v| < 2²²): `round()` would
    // be a libm call on wasm and baseline x86-64, and keep the loop from vectorising.
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let k = shifted - SHIFT;
    // ln 2 in two parts, so that `x − k·ln2` is exact to f32 precision.
    let r = x - k * 0.693_145_75;
    let r = r - k * 1.428_606_8e-6;
    let mut p = 1.0 / 720.0_f32;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // `k` as an integer, read off the mantissa of `shifted` (whose unit is 1): integer ops
    // that vectorise everywhere, where `k as i32` (saturating) kept x86 loops scalar.
    let k_int = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let scale = f32::from_bits((k_int.wrapping_add(127) as u32) << 23);
    p * scale
}

/// Softmax of one row, in place: `exp(x − max) / Σ`. Each pass is a loop the compiler
/// vectorises: the maximum and the sum are kept in eight lanes (one lane would chain every
/// step to the last and keep the whole row scalar). Inlined into its callers, so that it is
/// compiled for their target features ([`multiversion`]).
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) {
    let max = lanes_fold(row, f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
    row.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let inv = 1.0 / lanes_fold(row, 0.0, |s, v| s + v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `f` folded over `values` in 8 interleaved lanes, then over the lanes (`f` associative).
#[inline(always)]
fn lanes_fold(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = f(*lane, v);
        }
    }
    lanes.into_iter().fold(rest, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest error over a dense grid, relative to `scale(reference)` (ulp-like).
    fn max_error(f: impl Fn(f32) -> f32, reference: impl Fn(f64) -> f64, lo: f32, hi: f32, absolute: bool) -> f64 {
        let n = 2_000_000;
        (0..=n)
            .map(|i| {
                let x = lo + (hi - lo) * i as f32 / n as f32;
                let want = reference(f64::from(x));
                let err = (f64::from(f(x)) - want).abs();
                if absolute { err } else { err / want.abs().max(f64::MIN_POSITIVE) }
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_libm() {
        // 4.5e-7 measured: under 4 ulp of values near 1.
        let err = max_error(erf_f32, libm::erf, -6.0, 6.0, true);
        assert!(err < 6e-7, "erf: max absolute error {err:e}");
        assert_eq!(erf_f32(f32::INFINITY), erf_f32(10.0));
        assert_eq!(erf_f32(0.0), 0.0);
    }

    #[test]
    fn exp_is_within_a_few_ulp_over_the_softmax_range() {
        let err = max_error(exp_f32, f64::exp, -87.0, 0.0, false);
        assert!(err < 5e-7, "exp: max relative error {err:e}");
        assert!(exp_f32(-1000.0) >= 0.0 && exp_f32(-1000.0) < 1e-37);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_definition() {
        let mut row: Vec<f32> = (0..4096).map(|i| ((i as f32) * 0.37).sin() * 12.0).collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let denom: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        let want: Vec<f64> = row.iter().map(|&v| f64::from(v - max).exp() / denom).collect();
        softmax_row(&mut row);
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - 1.0).abs() < 1e-5, "sum {sum}");
        let err = row.iter().zip(&want).map(|(&a, &b)| (f64::from(a) - b).abs() / b.max(1e-30)).fold(0.0, f64::max);
        // The f32 sum of 4096 terms dominates (burn's softmax sums in f32 too).
        assert!(err < 1e-5, "relative error {err:e}");
    }
}
