//! Matrix products of the model's linear layers and 1×1 convolutions, in the browser.
//!
//! Two thirds of the image encoder's 75 GFLOP are linear layers and a sixth 1×1 convolutions;
//! in the browser, burn-flex hands them to the `gemm` crate, whose wasm kernel (a 12 × 4 tile:
//! 16 live vectors, one more than V8 keeps in registers on x86-64) ran at 11–22 GFLOP/s on one
//! core of the 2-core machine kind. The kernel here keeps a 3 × 12 tile (9 accumulators, 3
//! vectors of B, 1 of A: no spills) and reads B from panels packed per 256-deep block, and ran
//! the same products at 24–38 GFLOP/s in the same engine — 1.5–2.8× — and with relaxed SIMD
//! (the threaded build) as one fused multiply-add per lane. Natively burn-flex's `gemm`, with
//! its AVX-512/AVX2 kernels, stays: [`linear`] and [`conv2d`] use this kernel only on wasm.
//!
//! Layout: `C[m×n] = A[m×k] · B[k×n]`, all row-major ([`View`]). A linear layer is
//! `x[tokens×in] · W[in×out]` (burn keeps `W` as `[in, out]`); a 1×1 convolution of an NCHW
//! image is `W[out×in] · x[in×(h·w)]` per image.

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::Tensor;

use crate::host::{on_host, tensor_like, values};

/// `x · W + b` for `x: [.., in]` → `[.., out]` (burn's `Linear::forward`).
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if use_kernel(&x) { host_linear(layer, x) } else { layer.forward(x) }
}

fn host_linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let mut shape = x.dims();
    let [k, n] = layer.weight.dims();
    let m = shape[..D - 1].iter().product();
    let like = x.clone();
    let (a, w) = (values(x), values(layer.weight.val()));
    let mut c = vec![0f32; m * n];
    matmul(View::dense(&a, m, k), View::dense(&w, k, n), &mut c);
    if let Some(bias) = &layer.bias {
        let bias = values(bias.val());
        c.chunks_exact_mut(n)
            .for_each(|row| row.iter_mut().zip(&bias).for_each(|(v, b)| *v += b));
    }
    shape[D - 1] = n;
    tensor_like(c, shape, &like)
}

/// A 2-D convolution (burn's `Conv2d::forward`), through this kernel when it is 1×1, stride
/// 1, dense and unpadded: `[B, in, H, W]` → `[B, out, H, W]`.
pub fn conv2d(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if pointwise(layer) && use_kernel(&x) { host_pointwise(layer, x) } else { layer.forward(x) }
}

fn pointwise(layer: &Conv2d) -> bool {
    layer.kernel_size == [1, 1]
        && layer.stride == [1, 1]
        && layer.dilation == [1, 1]
        && layer.groups == 1
        && matches!(layer.padding, PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0))
}

fn host_pointwise(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [batch, k, h, w] = x.dims();
    let [m, ..] = layer.weight.dims();
    let n = h * w;
    let like = x.clone();
    let (input, weight) = (values(x), values(layer.weight.val()));
    let bias = layer.bias.as_ref().map(|b| values(b.val()));
    let mut out = vec![0f32; batch * m * n];
    for (image, c) in input.chunks_exact(k * n).zip(out.chunks_exact_mut(m * n)) {
        matmul(View::dense(&weight, m, k), View::dense(image, k, n), c);
        if let Some(bias) = &bias {
            c.chunks_exact_mut(n)
                .zip(bias)
                .for_each(|(row, b)| row.iter_mut().for_each(|v| *v += b));
        }
    }
    tensor_like(out, [batch, m, h, w], &like)
}

/// Whether a product with `x` runs here: CPU inference in the browser.
fn use_kernel<const D: usize>(x: &Tensor<D>) -> bool {
    cfg!(target_arch = "wasm32") && on_host(x)
}

/// A row-major matrix: `rows × cols` values, row `i` starting at `data[i · stride]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> View<'a> {
    /// A matrix whose rows follow each other (`stride = cols`).
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            stride: cols,
        }
    }

    /// Rows `r0 .. r0 + rows`.
    #[cfg(feature = "threads")]
    fn rows(self, r0: usize, rows: usize) -> Self {
        Self {
            data: &self.data[r0 * self.stride..],
            rows,
            ..self
        }
    }
}

/// `C = A · B` with `A: [m, k]`, `B: [k, n]` and `C: [m, n]` dense (`c.len() == m · n`).
/// With threads (the browser's threaded build), the rows of `C` — or, for short `A`, its
/// columns — are shared among the pool.
pub fn matmul(a: View, b: View, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert_eq!(c.len(), m * n, "matmul: output size");
    assert!(a.stride >= k && b.stride >= n, "matmul: strides");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    assert!(
        a.data.len() >= (m - 1) * a.stride + k,
        "matmul: A too short"
    );
    assert!(
        b.data.len() >= (k - 1) * b.stride + n,
        "matmul: B too short"
    );
    #[cfg(feature = "threads")]
    if parallel(a, b, c) {
        return;
    }
    // SAFETY: `c` holds `m × n` values (checked above), the extent written with stride `n`.
    unsafe { multiply(a, b, Out(c.as_mut_ptr()), n, 0, n) }
}

/// `C` as a raw pointer, so that tasks on other threads write disjoint parts of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes its own rows or columns of `C` (see `parallel`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// `count` values further on. (A method, so that closures capture the whole `Out`.)
    ///
    /// # Safety
    /// The result must stay inside `C`.
    unsafe fn add(self, count: usize) -> Out {
        Out(unsafe { self.0.add(count) })
    }
}

/// Split the product among the thread pool when it is big enough; `false` when it is not.
#[cfg(feature = "threads")]
fn parallel(a: View, b: View, c: &mut [f32]) -> bool {
    use rayon::prelude::*;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let threads = rayon::current_num_threads();
    if threads < 2 || m * n * k < PARALLEL_MIN {
        return false;
    }
    let out = Out(c.as_mut_ptr());
    if m >= 4 * threads * MC {
        // Bands of rows, a few per thread to even out the load.
        let band = m.div_ceil(4 * threads).next_multiple_of(MR);
        (0..m.div_ceil(band)).into_par_iter().for_each(|t| {
            let r0 = t * band;
            let rows = band.min(m - r0);
            // SAFETY: rows `r0 .. r0 + rows` of `C` belong to this task only.
            unsafe { multiply(a.rows(r0, rows), b, out.add(r0 * n), n, 0, n) }
        });
    } else {
        // Bands of columns (whole register tiles).
        let band = n.div_ceil(2 * threads).next_multiple_of(NR);
        (0..n.div_ceil(band)).into_par_iter().for_each(|t| {
            let j0 = t * band;
            // SAFETY: columns `j0 .. j0 + band` of `C` belong to this task only.
            unsafe { multiply(a, b, out, n, j0, band.min(n - j0)) }
        });
    }
    true
}

/// Products smaller than this (`m · n · k`) stay on one thread.
#[cfg(feature = "threads")]
const PARALLEL_MIN: usize = 64 * 64 * 64;

/// Rows of the register tile.
const MR: usize = 3;
/// Vectors (of 4 lanes) per row of the register tile.
const NV: usize = 3;
/// Columns of the register tile.
const NR: usize = 4 * NV;
/// Depth of a block: a packed panel of B (`KC × NR`, 12 KiB) stays in L1 while it is used.
const KC: usize = 256;
/// Rows of A per block (`MC × KC`, 48 KiB): in L2 while every panel passes over it.
const MC: usize = 48;

/// Columns `j0 .. j0 + width` of `C = A · B`, written at `c` with row stride `ldc`.
///
/// # Safety
/// `c` must be valid for writes of `A.rows` rows of stride `ldc`, columns `j0 .. j0 + width`,
/// which no one else reads or writes meanwhile; `j0 + width ≤ B.cols`.
unsafe fn multiply(a: View, b: View, c: Out, ldc: usize, j0: usize, width: usize) {
    let mut packed = Vec::new();
    for k0 in (0..a.cols).step_by(KC) {
        let kc = KC.min(a.cols - k0);
        pack(b, k0, kc, j0, width, &mut packed);
        for m0 in (0..a.rows).step_by(MC) {
            let mc = MC.min(a.rows - m0);
            for (p, panel) in packed.chunks_exact(kc * NR).enumerate() {
                let w = NR.min(width - p * NR);
                for i0 in (m0..m0 + mc).step_by(MR) {
                    let h = MR.min(m0 + mc - i0);
                    // Rows past the end repeat the last one; their results are dropped.
                    let rows = std::array::from_fn(|r| (i0 + r.min(h - 1)) * a.stride + k0);
                    // SAFETY: the rows hold `k0 + kc ≤ A.cols` values (checked by `matmul`).
                    let acc = unsafe { tile(kc, a.data.as_ptr(), rows, panel.as_ptr()) };
                    // SAFETY: the tile's `h × w` lie inside the caller's part of `C`.
                    unsafe { store(&acc, c.add(i0 * ldc + j0 + p * NR).0, ldc, h, w, k0 == 0) };
                }
            }
        }
    }
}

/// Copy `B[k0 .. k0 + kc, j0 .. j0 + width]` into panels of `NR` columns, each `kc × NR`
/// contiguous; the last panel padded with zeros.
fn pack(b: View, k0: usize, kc: usize, j0: usize, width: usize, packed: &mut Vec<f32>) {
    packed.clear();
    packed.resize(width.div_ceil(NR) * kc * NR, 0.0);
    for (p, panel) in packed.chunks_exact_mut(kc * NR).enumerate() {
        let (from, w) = (j0 + p * NR, NR.min(width - p * NR));
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            let src = (k0 + kk) * b.stride + from;
            row[..w].copy_from_slice(&b.data[src..src + w]);
        }
    }
}

/// The `MR × NR` product of `kc` columns of A (row `r` starting at `a + rows[r]`) and a
/// packed panel of B.
///
/// # Safety
/// `a + rows[r]` must be readable for `kc` values, `panel` for `kc × NR`.
#[cfg_attr(not(all(target_arch = "wasm32", feature = "relaxed-simd")), inline(always))]
#[cfg_attr(all(target_arch = "wasm32", feature = "relaxed-simd"), target_feature(enable = "relaxed-simd"))]
unsafe fn tile(
    kc: usize,
    a: *const f32,
    rows: [usize; MR],
    panel: *const f32,
) -> [[lanes::F4; NV]; MR] {
    use lanes::*;
    let mut acc = [[zero(); NV]; MR];
    // SAFETY: in bounds by the caller's contract.
    unsafe {
        let a: [*const f32; MR] = std::array::from_fn(|r| a.add(rows[r]));
        for kk in 0..kc {
            let bp = panel.add(kk * NR);
            let b: [F4; NV] = std::array::from_fn(|j| load(bp.add(4 * j)));
            for r in 0..MR {
                let x = splat(a[r].add(kk));
                for j in 0..NV {
                    acc[r][j] = madd(x, b[j], acc[r][j]);
                }
            }
        }
    }
    acc
}

/// Write (on the first depth block) or add the top-left `h × w` of a tile at `c`.
///
/// # Safety
/// `c` must be valid for `h` rows of stride `ldc` and `w` columns.
unsafe fn store(
    acc: &[[lanes::F4; NV]; MR],
    c: *mut f32,
    ldc: usize,
    h: usize,
    w: usize,
    first: bool,
) {
    use lanes::*;
    for (r, row) in acc.iter().enumerate().take(h) {
        // SAFETY: inside the `h × w` block by the caller's contract.
        unsafe {
            let out = c.add(r * ldc);
            if w == NR {
                for (j, v) in row.iter().enumerate() {
                    let p = out.add(4 * j);
                    write(p, if first { *v } else { add(read(p), *v) });
                }
            } else {
                let mut vals = [0f32; NR];
                for (j, v) in row.iter().enumerate() {
                    write(vals.as_mut_ptr().add(4 * j), *v);
                }
                for (j, v) in vals.iter().enumerate().take(w) {
                    *out.add(j) = if first { *v } else { *out.add(j) + v };
                }
            }
        }
    }
}

/// Four f32 lanes: wasm `simd128` in the browser; plain arrays natively (where the kernel only
/// runs in tests).
#[cfg(target_arch = "wasm32")]
mod lanes {
    use core::arch::wasm32::*;

    pub type F4 = v128;

    #[inline(always)]
    pub fn zero() -> F4 {
        f32x4_splat(0.0)
    }

    /// # Safety: `p` readable for 4 values.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> F4 {
        unsafe { v128_load(p as *const v128) }
    }

    /// # Safety: `p` readable for 4 values.
    #[inline(always)]
    pub unsafe fn read(p: *const f32) -> F4 {
        unsafe { load(p) }
    }

    /// One value in every lane. # Safety: `p` readable.
    #[inline(always)]
    pub unsafe fn splat(p: *const f32) -> F4 {
        unsafe { v128_load32_splat(p as *const u32) }
    }

    /// # Safety: `p` writable for 4 values.
    #[inline(always)]
    pub unsafe fn write(p: *mut f32, v: F4) {
        unsafe { v128_store(p as *mut v128, v) }
    }

    #[inline(always)]
    pub fn add(a: F4, b: F4) -> F4 {
        f32x4_add(a, b)
    }

    /// `a · b + c` as one fused instruction (relaxed SIMD; only inside functions compiled for
    /// it, such as [`tile`](super::tile)).
    #[cfg(feature = "relaxed-simd")]
    #[inline]
    #[target_feature(enable = "relaxed-simd")]
    pub fn madd(a: F4, b: F4, c: F4) -> F4 {
        f32x4_relaxed_madd(a, b, c)
    }

    /// `a · b + c`.
    #[cfg(not(feature = "relaxed-simd"))]
    #[inline(always)]
    pub fn madd(a: F4, b: F4, c: F4) -> F4 {
        f32x4_add(f32x4_mul(a, b), c)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod lanes {
    pub type F4 = [f32; 4];

    #[inline(always)]
    pub fn zero() -> F4 {
        [0.0; 4]
    }

    /// # Safety: `p` readable for 4 values.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> F4 {
        unsafe { (p as *const F4).read_unaligned() }
    }

    /// # Safety: `p` readable for 4 values.
    #[inline(always)]
    pub unsafe fn read(p: *const f32) -> F4 {
        unsafe { load(p) }
    }

    /// # Safety: `p` readable.
    #[inline(always)]
    pub unsafe fn splat(p: *const f32) -> F4 {
        [unsafe { *p }; 4]
    }

    /// # Safety: `p` writable for 4 values.
    #[inline(always)]
    pub unsafe fn write(p: *mut f32, v: F4) {
        unsafe { (p as *mut F4).write_unaligned(v) }
    }

    #[inline(always)]
    pub fn add(a: F4, b: F4) -> F4 {
        std::array::from_fn(|i| a[i] + b[i])
    }

    #[inline(always)]
    pub fn madd(a: F4, b: F4, c: F4) -> F4 {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: View, b: View) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let s: f64 = (0..a.cols)
                    .map(|p| {
                        f64::from(a.data[i * a.stride + p]) * f64::from(b.data[p * b.stride + j])
                    })
                    .sum();
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
    }

    #[test]
    fn products_match_the_definition_at_every_edge_of_the_blocking() {
        // Sizes below, at and past the tile (3 × 12), the row block (48) and the depth block
        // (256), with strided inputs.
        for &(m, k, n) in &[
            (1, 1, 1),
            (2, 3, 5),
            (3, 12, 12),
            (7, 257, 13),
            (49, 32, 49),
            (50, 513, 25),
            (100, 64, 300),
        ] {
            let (lda, ldb) = (k + 3, n + 5);
            let a = values(m * lda, 1.0);
            let b = values(k * ldb, 2.0);
            let (a, b) = (
                View {
                    data: &a,
                    rows: m,
                    cols: k,
                    stride: lda,
                },
                View {
                    data: &b,
                    rows: k,
                    cols: n,
                    stride: ldb,
                },
            );
            let mut c = vec![f32::NAN; m * n];
            matmul(a, b, &mut c);
            let want = reference(a, b);
            let err = c
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                err <= 2e-5 * (k as f32).sqrt(),
                "{m}×{k}×{n}: max error {err}"
            );
        }
    }

    #[test]
    fn layers_give_burns_outputs() {
        use crate::common::ConvSpec;
        let device = burn::tensor::Device::flex();
        let tensor = |shape: Vec<usize>, seed: f32| {
            let n = shape.iter().product();
            Tensor::<4>::from_data(burn::tensor::TensorData::new(values(n, seed), shape), &device)
        };
        let close = |x: Tensor<4>, y: Tensor<4>| {
            let d: f32 = (x - y).abs().max().into_scalar();
            assert!(d < 1e-4, "max difference {d}");
        };
        let layer = Linear { weight: burn::module::Param::from_tensor(tensor(vec![1, 1, 40, 30], 3.0).reshape([40, 30])), bias: Some(burn::module::Param::from_tensor(tensor(vec![1, 1, 1, 30], 4.0).reshape([30]))) };
        let x = tensor(vec![2, 3, 5, 40], 5.0);
        close(host_linear(&layer, x.clone()), layer.forward(x));
        let conv = ConvSpec::new(16, 24, 1).build(tensor(vec![24, 16, 1, 1], 6.0), Some(tensor(vec![1, 1, 1, 24], 7.0).reshape([24])));
        assert!(pointwise(&conv) && !pointwise(&ConvSpec::new(16, 24, 3).padding(1).build(tensor(vec![24, 16, 3, 3], 1.0), None)));
        let x = tensor(vec![2, 16, 9, 11], 8.0);
        close(host_pointwise(&conv, x.clone()), conv.forward(x));
    }

    #[test]
    fn an_empty_depth_gives_zeros() {
        let mut c = vec![f32::NAN; 6];
        matmul(View::dense(&[], 2, 0), View::dense(&[], 0, 3), &mut c);
        assert_eq!(c, vec![0.0; 6]);
    }
}
