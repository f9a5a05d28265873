//! The inverse DCT of an 8 × 8 block, as libjpeg's "islow" method computes it: the
//! Loeffler–Ligtenberg–Moschytz factorisation in 13-bit fixed point, columns then rows, with
//! libjpeg's rounding and its range limit. libjpeg-turbo's SIMD versions of this method give the
//! same integers, so every libjpeg-based reader (Pillow, pydicom, most viewers) sees these samples.

/// Fixed-point precision of the constants.
const CONST_BITS: u32 = 13;
/// Extra precision kept between the two passes.
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// `x / 2^n`, rounded half up.
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// One 1-D pass over 8 values `v[0..8]` (already scaled): the even part from v0, v2, v4, v6,
/// the odd part from v1, v3, v5, v7; returns the 8 outputs before descaling, in order.
fn butterfly(v: [i64; 8]) -> [i64; 8] {
    // Even part.
    let z1 = (v[2] + v[6]) * FIX_0_541196100;
    let tmp2 = z1 - v[6] * FIX_1_847759065;
    let tmp3 = z1 + v[2] * FIX_0_765366865;
    let tmp0 = (v[0] + v[4]) << CONST_BITS;
    let tmp1 = (v[0] - v[4]) << CONST_BITS;
    let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
    let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
    // Odd part.
    let (t0, t1, t2, t3) = (v[7], v[5], v[3], v[1]);
    let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
    let z5 = (z3 + z4) * FIX_1_175875602;
    let (t0, t1, t2, t3) = (t0 * FIX_0_298631336, t1 * FIX_2_053119869, t2 * FIX_3_072711026, t3 * FIX_1_501321110);
    let (z1, z2) = (-z1 * FIX_0_899976223, -z2 * FIX_2_562915447);
    let z3 = -z3 * FIX_1_961570560 + z5;
    let z4 = -z4 * FIX_0_390180644 + z5;
    let (t0, t1, t2, t3) = (t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4);
    [tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0, tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3]
}

/// libjpeg's post-IDCT range limit: `v + 128` clamped to 0..=255 for |v| ≤ 512, and the same
/// wrap-around as its table beyond (only damaged data gets there).
fn range_limit(v: i64) -> u8 {
    match v & 1023 {
        m @ 0..128 => (m + 128) as u8,
        128..512 => 255,
        512..896 => 0,
        m => (m - 896) as u8,
    }
}

/// The samples of one block: `coefficients` in natural (row-major) order, quantised, times
/// `quant` (natural order), into `out` rows of `stride` bytes.
pub fn block(coefficients: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut work = [0i64; 64];
    for col in 0..8 {
        let v: [i64; 8] = std::array::from_fn(|row| i64::from(coefficients[row * 8 + col]) * i64::from(quant[row * 8 + col]));
        let r = butterfly(v);
        for row in 0..8 {
            work[row * 8 + col] = descale(r[row], CONST_BITS - PASS1_BITS);
        }
    }
    for row in 0..8 {
        let v: [i64; 8] = std::array::from_fn(|col| work[row * 8 + col]);
        let r = butterfly(v);
        for (col, &x) in r.iter().enumerate() {
            out[row * stride + col] = range_limit(descale(x, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block with only a DC coefficient is flat: DC × quant / 8 + 128, rounded.
    #[test]
    fn a_dc_only_block_is_flat() {
        let mut c = [0i16; 64];
        c[0] = 10;
        let q = [4u16; 64];
        let mut out = [0u8; 64];
        block(&c, &q, &mut out, 8);
        assert!(out.iter().all(|&v| v == 133), "{out:?}");
        c[0] = -300;
        block(&c, &q, &mut out, 8);
        assert!(out.iter().all(|&v| v == 0), "clamped: {out:?}");
    }

    /// Against the DCT's definition in floating point: within 1 (libjpeg's accuracy).
    #[test]
    fn matches_the_definition_within_one() {
        let mut c = [0i16; 64];
        for (i, v) in c.iter_mut().enumerate() {
            *v = ((i as i32 * 37 % 23) - 11) as i16 * if i < 10 { 4 } else { 1 };
        }
        let q = [3u16; 64];
        let mut out = [0u8; 64];
        block(&c, &q, &mut out, 8);
        let cu = |u: usize| if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
        for y in 0..8 {
            for x in 0..8 {
                let mut s = 0.0;
                for v in 0..8 {
                    for u in 0..8 {
                        let f = f64::from(c[v * 8 + u]) * 3.0;
                        s += cu(u) * cu(v) * f
                            * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                            * ((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI / 16.0).cos();
                    }
                }
                let want = (s / 4.0 + 128.0).round().clamp(0.0, 255.0);
                assert!((f64::from(out[y * 8 + x]) - want).abs() <= 1.0, "({x}, {y}): {} vs {want}", out[y * 8 + x]);
            }
        }
    }
}
