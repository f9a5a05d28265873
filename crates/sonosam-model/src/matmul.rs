//! Matrix products of the model's linear layers, dense convolutions and attention on the CPU,
//! with the bias and GELU applied as the product is finished.
//!
//! Two thirds of the image encoder's 75 GFLOP are linear layers and a sixth 1×1 convolutions.
//! In the browser, burn-flex hands them to the `gemm` crate, whose wasm kernel (a 12 × 4 tile:
//! 16 live vectors, one more than V8 keeps in registers on x86-64) ran at 11–22 GFLOP/s on one
//! core of the 2-core machine kind. The kernel here keeps a 3 × 12 tile (9 accumulators, 3
//! vectors of B, 1 of A: no spills) and reads B from panels packed per 256-deep block, and ran
//! the same products at 24–38 GFLOP/s in the same engine — 1.5–2.8× — and with relaxed SIMD
//! (the threaded build) as one fused multiply-add per lane. Natively the products are the
//! `gemm` crate's (its AVX-512, AVX2 or NEON kernels, chosen at run time), called directly:
//! burn-flex's path around it zero-fills and copies every output and adds the bias and GELU in
//! passes of their own. [`window_attention`] keeps TinyViT's per-window attention in small
//! buffers; [`batched`] serves the mask decoder's other products.
//!
//! Layout: `C[m×n] = A[m×k] · B[k×n]`, all row-major ([`View`]). A linear layer is
//! `x[tokens×in] · W[in×out]` (burn keeps `W` as `[in, out]`); a 1×1 convolution of an NCHW
//! image is `W[out×in] · x[in×(h·w)]` per image.

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::Tensor;

use crate::activation::{gelu, gelu_f32, softmax_row};
use crate::depthwise;
#[cfg(all(feature = "threads", feature = "flex", not(target_arch = "wasm32")))]
use crate::host::for_chunks;
use crate::host::{floats, multiversion, on_host, tensor, values};

/// `x · W + b` for `x: [.., in]` → `[.., out]` (burn's `Linear::forward`).
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if runs_here(&x) { host_linear(layer, x, false) } else { layer.forward(x) }
}

/// `GELU(x · W + b)`, the activation applied as the product is written.
pub fn linear_gelu<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if runs_here(&x) { host_linear(layer, x, true) } else { gelu(layer.forward(x)) }
}

fn host_linear<const D: usize>(layer: &Linear, x: Tensor<D>, gelu: bool) -> Tensor<D> {
    host_affine(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()), gelu)
}

/// `x · W + b` for `x: [.., k]`, `W: [k, n]`, `b: [n]`, then GELU when `gelu_after`: on the host
/// with the bias and GELU applied as the product is written (a linear layer whose weights are
/// computed, such as the mask decoder's transposed convolutions); else burn's ops.
pub fn affine<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Tensor<1>, gelu_after: bool) -> Tensor<D> {
    if runs_here(&x) {
        return host_affine(x, weight, Some(bias), gelu_after);
    }
    let [k, n] = weight.dims();
    let mut shape = x.dims();
    let m = shape[..D - 1].iter().product();
    shape[D - 1] = n;
    let y = (x.reshape([m, k]).matmul(weight) + bias.unsqueeze::<2>()).reshape(shape);
    if gelu_after { gelu(y) } else { y }
}

fn host_affine<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>, gelu: bool) -> Tensor<D> {
    let (mut shape, device) = (x.dims(), x.device());
    let [k, n] = weight.dims();
    let m = shape[..D - 1].iter().product();
    let (a, w) = (x.into_data(), values(weight));
    let a = floats(&a);
    let bias = bias.map(values);
    let mut c = vec![0f32; m * n];
    let epilogue = Epilogue { bias: bias.as_deref().map_or(Bias::None, Bias::PerColumn), gelu };
    product(View::dense(a, m, k), View::dense(&w, k, n), &mut c, &epilogue, true);
    shape[D - 1] = n;
    tensor(c, shape, &device)
}

/// A 2-D convolution (burn's `Conv2d::forward`), through this kernel when it is dense (one
/// group) with symmetric padding: `[B, in, H, W]` → `[B, out, H', W']`. A 1×1 convolution is
/// one product per image; a larger kernel first lays the input out as columns (im2col). A
/// depthwise one goes to [`depthwise::planes`].
pub fn conv2d(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match Geometry::dense(layer) {
        Some(g) if runs_here(&x) => host_conv(layer, &g, x, false),
        _ if depthwise::planes_here(layer, &x) => depthwise::planes(layer, x, false),
        _ => layer.forward(x),
    }
}

/// `GELU(conv(x))`, the activation applied as the product is written.
pub fn conv2d_gelu(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match Geometry::dense(layer) {
        Some(g) if runs_here(&x) => host_conv(layer, &g, x, true),
        _ if depthwise::planes_here(layer, &x) => depthwise::planes(layer, x, true),
        _ => gelu(layer.forward(x)),
    }
}

/// Kernel size, stride, dilation and padding of a convolution whose padding is the same on
/// every side (the host kernels' convolutions: here and in [`depthwise`]).
pub(crate) struct Geometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub padding: usize,
}

impl Geometry {
    /// `None` for asymmetric or implicit padding.
    pub fn of(layer: &Conv2d) -> Option<Self> {
        let padding = match layer.padding {
            PaddingConfig2d::Valid => 0,
            PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
            _ => return None,
        };
        Some(Self {
            kernel: layer.kernel_size,
            stride: layer.stride,
            dilation: layer.dilation,
            padding,
        })
    }

    /// Of a dense convolution (one group); `None` for grouped (depthwise) ones too.
    fn dense(layer: &Conv2d) -> Option<Self> {
        Self::of(layer).filter(|_| layer.groups == 1)
    }

    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == 0
    }

    /// The output's height and width for an input of `h × w`.
    pub fn output(&self, h: usize, w: usize) -> [usize; 2] {
        let out = |size: usize, d: usize| {
            let span = self.dilation[d] * (self.kernel[d] - 1) + 1;
            (size + 2 * self.padding).saturating_sub(span) / self.stride[d] + 1
        };
        [out(h, 0), out(w, 1)]
    }

    /// Lay out one image `[c, h, w]` as the columns of the product: row `(ci·kh + dy)·kw + dx`
    /// holds, for every output pixel, the input value under that kernel tap (0 in the padding).
    fn im2col(&self, image: &[f32], [_, h, w]: [usize; 3], col: &mut [f32]) {
        let ([kh, kw], [ho, wo]) = (self.kernel, self.output(h, w));
        let tap = |o: usize, k: usize, d: usize| (o * self.stride[d] + k * self.dilation[d]).checked_sub(self.padding);
        for (r, row) in col.chunks_exact_mut(ho * wo).enumerate() {
            let (ci, dy, dx) = (r / (kh * kw), r / kw % kh, r % kw);
            let plane = &image[ci * h * w..(ci + 1) * h * w];
            for (oy, out) in row.chunks_exact_mut(wo).enumerate() {
                match tap(oy, dy, 0).filter(|&y| y < h) {
                    None => out.fill(0.0),
                    Some(y) => out.iter_mut().enumerate().for_each(|(ox, v)| {
                        *v = tap(ox, dx, 1).filter(|&x| x < w).map_or(0.0, |x| plane[y * w + x]);
                    }),
                }
            }
        }
    }
}

fn host_conv(layer: &Conv2d, g: &Geometry, x: Tensor<4>, gelu: bool) -> Tensor<4> {
    let ([batch, c, h, w], device) = (x.dims(), x.device());
    let [m, _, kh, kw] = layer.weight.dims();
    let [ho, wo] = g.output(h, w);
    let (k, n) = (c * kh * kw, ho * wo);
    let (input, weight) = (x.into_data(), values(layer.weight.val()));
    let input = floats(&input);
    let bias = layer.bias.as_ref().map(|b| values(b.val()));
    let epilogue = Epilogue { bias: bias.as_deref().map_or(Bias::None, Bias::PerRow), gelu };
    let mut col = if g.pointwise() { Vec::new() } else { vec![0f32; k * n] };
    let mut out = vec![0f32; batch * m * n];
    for (image, c_out) in input.chunks_exact(c * h * w).zip(out.chunks_exact_mut(m * n)) {
        let columns = if g.pointwise() {
            image
        } else {
            g.im2col(image, [c, h, w], &mut col);
            &col
        };
        product(View::dense(&weight, m, k), View::dense(columns, k, n), c_out, &epilogue, true);
    }
    tensor(out, [batch, m, ho, wo], &device)
}

/// Whether products with `x` run here: CPU inference, natively and in the browser.
/// (f32 only: the kernels' precision; a model in another precision keeps burn's ops.)
pub fn runs_here<const D: usize>(x: &Tensor<D>) -> bool {
    on_host(x) && x.dtype() == burn::tensor::DType::F32
}

/// `a · b` over the last two axes, batched over the leading ones (`b`'s may also be a single
/// matrix): burn's `Tensor::matmul`, through this kernel when it runs here (other broadcasts
/// stay burn's).
pub fn batched<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if fits_batched(&a, &b, false) { host_batched(a, b, false) } else { a.matmul(b) }
}

/// `a · bᵀ` over the last two axes (`b: [.., n, k]`), as [`batched`] with `b` transposed —
/// read in place, without the copy that `b.swap_dims(D − 2, D − 1)` makes.
pub fn batched_t<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if fits_batched(&a, &b, true) { host_batched(a, b, true) } else { a.matmul(b.swap_dims(D - 2, D - 1)) }
}

/// Whether the host takes `a · b` (`a · bᵀ` when `transposed`).
fn fits_batched<const D: usize>(a: &Tensor<D>, b: &Tensor<D>, transposed: bool) -> bool {
    let (lhs, rhs) = (a.dims(), b.dims());
    let batch = |dims: &[usize; D]| dims[..D - 2].iter().product::<usize>();
    let inner = if transposed { rhs[D - 1] } else { rhs[D - 2] };
    inner == lhs[D - 1] && (batch(&rhs) == batch(&lhs) || batch(&rhs) == 1) && runs_here(a)
}

fn host_batched<const D: usize>(a: Tensor<D>, b: Tensor<D>, transposed: bool) -> Tensor<D> {
    let (mut shape, device, rhs) = (a.dims(), a.device(), b.dims());
    let (m, k) = (shape[D - 2], shape[D - 1]);
    let n = if transposed { rhs[D - 2] } else { rhs[D - 1] };
    let b_single = rhs[..D - 2].iter().product::<usize>() == 1;
    let (a, b) = (a.into_data(), b.into_data());
    let (a, b) = (floats(&a), floats(&b));
    let mut c = vec![0f32; shape[..D - 2].iter().product::<usize>() * m * n];
    for i in 0..c.len() / (m * n).max(1) {
        let j = if b_single { 0 } else { i };
        let (a, b) = (&a[i * m * k..(i + 1) * m * k], &b[j * k * n..(j + 1) * k * n]);
        let b = if transposed { View::transpose_of(b, k, n) } else { View::dense(b, k, n) };
        product(View::dense(a, m, k), b, &mut c[i * m * n..(i + 1) * m * n], &Epilogue::default(), true);
    }
    shape[D - 1] = n;
    tensor(c, shape, &device)
}

/// TinyViT's windowed self-attention, here: for every window and head,
/// `softmax(Q·Kᵀ·scale + bias)·V`, from the `qkv` projection `[windows, N, heads·3·kd]` (per
/// head, `kd` values each of q, k and v) and the bias table `[heads, N, N]`, to
/// `[windows, N, heads·kd]`. Each head's scores stay in one small buffer (no `[windows, heads,
/// N, N]` tensor, no layout changes); the threaded build shares the heads among the pool.
pub fn window_attention(qkv: Tensor<3>, heads: usize, scale: f32, bias: Tensor<3>) -> Tensor<3> {
    let ([windows, n, width], device) = (qkv.dims(), qkv.device());
    let kd = width / (3 * heads);
    let (qkv, bias) = (qkv.into_data(), values(bias));
    let qkv = floats(&qkv);
    let one_head = |(w, h): (usize, usize)| -> Vec<f32> {
        let base = w * n * width + h * 3 * kd;
        let q = View { data: &qkv[base..], rows: n, cols: kd, stride: width, transposed: false };
        let v = View { data: &qkv[base + 2 * kd..], rows: n, cols: kd, stride: width, transposed: false };
        let mut kt = vec![0f32; kd * n];
        for (j, key) in qkv[base + kd..].chunks(width).take(n).enumerate() {
            key[..kd].iter().enumerate().for_each(|(p, &x)| kt[p * n + j] = x);
        }
        let mut scores = vec![0f32; n * n];
        product(q, View::dense(&kt, kd, n), &mut scores, &Epilogue::default(), false);
        attention_weights(&mut scores, &bias[h * n * n..(h + 1) * n * n], n, scale);
        let mut out = vec![0f32; n * kd];
        product(View::dense(&scores, n, n), v, &mut out, &Epilogue::default(), false);
        out
    };
    let pairs: Vec<(usize, usize)> = (0..windows).flat_map(|w| (0..heads).map(move |h| (w, h))).collect();
    #[cfg(feature = "threads")]
    let results: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        pairs.par_iter().copied().map(one_head).collect()
    };
    #[cfg(not(feature = "threads"))]
    let results: Vec<Vec<f32>> = pairs.iter().copied().map(one_head).collect();
    let mut out = vec![0f32; windows * n * heads * kd];
    for ((w, h), result) in pairs.into_iter().zip(results) {
        for (i, row) in result.chunks_exact(kd).enumerate() {
            let at = (w * n + i) * heads * kd + h * kd;
            out[at..at + kd].copy_from_slice(row);
        }
    }
    tensor(out, [windows, n, heads * kd], &device)
}

multiversion! {
    /// Attention scores `[n, n]` → weights, in place: `softmax(scores · scale + bias)` by row.
    fn attention_weights(scores: &mut [f32], bias: &[f32], n: usize, scale: f32) {
        for (row, b) in scores.chunks_exact_mut(n).zip(bias.chunks_exact(n)) {
            for (s, b) in row.iter_mut().zip(b) {
                *s = *s * scale + b;
            }
            softmax_row(row);
        }
    }
}

/// What is done to `C`'s values as they are finished: a bias, then optionally GELU.
#[derive(Clone, Copy, Default)]
struct Epilogue<'a> {
    bias: Bias<'a>,
    gelu: bool,
}

#[derive(Clone, Copy, Default)]
enum Bias<'a> {
    #[default]
    None,
    /// One value per column of `C` (a linear layer's output features).
    PerColumn(&'a [f32]),
    /// One value per row of `C` (a convolution's output channels).
    PerRow(&'a [f32]),
}

impl Epilogue<'_> {
    /// Apply to `row[j]`, which is column `j0 + j` of row `i` of `C`.
    #[inline(always)]
    fn apply(&self, i: usize, j0: usize, row: &mut [f32]) {
        match self.bias {
            Bias::None => {}
            Bias::PerColumn(b) => row.iter_mut().zip(&b[j0..]).for_each(|(v, b)| *v += b),
            Bias::PerRow(b) => row.iter_mut().for_each(|v| *v += b[i]),
        }
        if self.gelu {
            row.iter_mut().for_each(|v| *v = gelu_f32(*v));
        }
    }

    #[inline(always)]
    fn is_identity(&self) -> bool {
        matches!(self.bias, Bias::None) && !self.gelu
    }
}

/// A matrix of `rows × cols` values: row-major, row `i` starting at `data[i · stride]`; or,
/// when `transposed` (only as the right-hand side of a product), stored as its transpose,
/// column `j` starting at `data[j · stride]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
    pub transposed: bool,
}

impl<'a> View<'a> {
    /// A matrix whose rows follow each other (`stride = cols`).
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, stride: cols, transposed: false }
    }

    /// The transpose of the dense `cols × rows` matrix in `data`, read in place.
    pub fn transpose_of(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, stride: rows, transposed: true }
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

/// `C = A · B` with `A: [m, k]`, `B: [k, n]` and `C: [m, n]` dense (`c.len() == m · n`), then
/// `epilogue` on each value of `C`; with `threads`, on every core of the pool. Natively by the
/// `gemm` crate, in the browser by this module's kernel.
fn product(a: View, b: View, c: &mut [f32], epilogue: &Epilogue, threads: bool) {
    #[cfg(all(feature = "flex", not(target_arch = "wasm32")))]
    gemm_product(a, b, c, epilogue, threads);
    #[cfg(not(all(feature = "flex", not(target_arch = "wasm32"))))]
    kernel_product(a, b, c, epilogue, threads);
}

/// Check the shapes of `C = A · B`; `false` when there is nothing to multiply (`C` empty, or
/// `k = 0`: then `C` is the epilogue applied to zeros).
fn check(a: View, b: View, c: &mut [f32], epilogue: &Epilogue) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert_eq!(c.len(), m * n, "matmul: output size");
    assert!(!a.transposed, "matmul: A is read by rows");
    // Values per stored row of B, and stored rows.
    let (b_len, b_lines) = if b.transposed { (k, n) } else { (n, k) };
    assert!(a.stride >= k && b.stride >= b_len, "matmul: strides");
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 {
        c.fill(0.0);
        finish(c, n, 0, epilogue);
        return false;
    }
    assert!(a.data.len() >= (m - 1) * a.stride + k, "matmul: A too short");
    assert!(b.data.len() >= (b_lines - 1) * b.stride + b_len, "matmul: B too short");
    true
}

/// [`product`] by the `gemm` crate (natively), then the epilogue in a pass of its own. (Bands
/// of rows multiplied and finished per task, while in cache, measured 10–20 % slower on the
/// encoder than gemm's own parallel split.)
#[cfg(all(feature = "flex", not(target_arch = "wasm32")))]
fn gemm_product(a: View, b: View, c: &mut [f32], epilogue: &Epilogue, threads: bool) {
    if !check(a, b, c, epilogue) {
        return;
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    #[cfg(feature = "threads")]
    if threads && m * n * k >= GEMM_PARALLEL_MIN {
        // SAFETY: `C` is `m × n`, `A` and `B` hold their rows of their strides (`check`).
        unsafe { gemm_call(a, b, c, gemm::Parallelism::Rayon(0)) };
        if !epilogue.is_identity() {
            let rows = (EPILOGUE_CHUNK / n).max(1);
            for_chunks(c, rows * n, |(t, c)| finish(c, n, t * rows, epilogue));
        }
        return;
    }
    let _ = (threads, m, k);
    // SAFETY: as above.
    unsafe { gemm_call(a, b, c, gemm::Parallelism::None) };
    finish(c, n, 0, epilogue);
}

/// `C = A · B` by `gemm` (`C` written, not read).
///
/// # Safety
/// `c` must hold `A.rows × B.cols` values, `A` and `B` their rows of their strides.
#[cfg(all(feature = "flex", not(target_arch = "wasm32")))]
unsafe fn gemm_call(a: View, b: View, c: &mut [f32], parallelism: gemm::Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let stride = b.stride as isize;
    let (b_cs, b_rs) = if b.transposed { (stride, 1) } else { (1, stride) };
    // SAFETY: by the caller's contract; A and C row-major (column stride 1).
    unsafe {
        gemm::gemm(
            m, n, k,
            c.as_mut_ptr(), 1, n as isize, false,
            a.data.as_ptr(), 1, a.stride as isize,
            b.data.as_ptr(), b_cs, b_rs,
            0.0, 1.0, false, false, false,
            parallelism,
        );
    }
}

/// Products smaller than this (`m · n · k`) stay on one thread natively (burn-flex's choice).
#[cfg(all(feature = "threads", feature = "flex", not(target_arch = "wasm32")))]
const GEMM_PARALLEL_MIN: usize = 192 * 192 * 192;

/// Values per task of the native epilogue pass (64 KiB of f32, whole rows).
#[cfg(all(feature = "threads", feature = "flex", not(target_arch = "wasm32")))]
const EPILOGUE_CHUNK: usize = 16 * 1024;

multiversion! {
    /// The epilogue on the rows of `c` (`n` values each), which are rows `i0 ..` of `C`.
    fn finish(c: &mut [f32], n: usize, i0: usize, epilogue: &Epilogue) {
        if epilogue.is_identity() {
            return;
        }
        for (r, row) in c.chunks_exact_mut(n).enumerate() {
            epilogue.apply(i0 + r, 0, row);
        }
    }
}

/// [`product`] by this module's kernel: with `threads` (the browser's threaded build), the
/// rows of `C` — or, for short `A`, its columns — are shared among the pool. Natively it only
/// runs in tests (the same code, with portable lanes).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn kernel_product(a: View, b: View, c: &mut [f32], epilogue: &Epilogue, threads: bool) {
    if !check(a, b, c, epilogue) {
        return;
    }
    #[cfg(feature = "threads")]
    if threads && parallel(a, b, c, epilogue) {
        return;
    }
    let _ = threads;
    let n = b.cols;
    // SAFETY: `c` holds `m × n` values (checked above), the extent written with stride `n`.
    unsafe { multiply(a, b, Out(c.as_mut_ptr()), n, 0, n, 0, epilogue) }
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
fn parallel(a: View, b: View, c: &mut [f32], epilogue: &Epilogue) -> bool {
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
            unsafe { multiply(a.rows(r0, rows), b, out.add(r0 * n), n, 0, n, r0, epilogue) }
        });
    } else {
        // Bands of columns (whole register tiles).
        let band = n.div_ceil(2 * threads).next_multiple_of(NR);
        (0..n.div_ceil(band)).into_par_iter().for_each(|t| {
            let j0 = t * band;
            // SAFETY: columns `j0 .. j0 + band` of `C` belong to this task only.
            unsafe { multiply(a, b, out, n, j0, band.min(n - j0), 0, epilogue) }
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

/// Columns `j0 .. j0 + width` of `C = A · B` (`A`'s rows being rows `i0 ..` of the whole
/// product, for the epilogue), written at `c` with row stride `ldc`.
///
/// # Safety
/// `c` must be valid for writes of `A.rows` rows of stride `ldc`, columns `j0 .. j0 + width`,
/// which no one else reads or writes meanwhile; `j0 + width ≤ B.cols`.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply(a: View, b: View, c: Out, ldc: usize, j0: usize, width: usize, i0: usize, epilogue: &Epilogue) {
    let mut packed = Vec::new();
    for k0 in (0..a.cols).step_by(KC) {
        let kc = KC.min(a.cols - k0);
        let last = k0 + kc == a.cols;
        pack(b, k0, kc, j0, width, &mut packed);
        for m0 in (0..a.rows).step_by(MC) {
            let mc = MC.min(a.rows - m0);
            for (p, panel) in packed.chunks_exact(kc * NR).enumerate() {
                let w = NR.min(width - p * NR);
                for r0 in (m0..m0 + mc).step_by(MR) {
                    let h = MR.min(m0 + mc - r0);
                    // Rows past the end repeat the last one; their results are dropped.
                    let rows = std::array::from_fn(|r| (r0 + r.min(h - 1)) * a.stride + k0);
                    // SAFETY: the rows hold `k0 + kc ≤ A.cols` values (checked by `matmul`).
                    let acc = unsafe { tile(kc, a.data.as_ptr(), rows, panel.as_ptr()) };
                    // SAFETY: the tile's `h × w` lie inside the caller's part of `C`.
                    unsafe { store(&acc, c.add(r0 * ldc + j0 + p * NR).0, ldc, h, w, k0 == 0) };
                }
            }
            if last && !epilogue.is_identity() {
                // The block's rows are finished (and still in cache).
                for r in m0..m0 + mc {
                    // SAFETY: row `r`, columns `j0 .. j0 + width`: the caller's part of `C`.
                    let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc + j0).0, width) };
                    epilogue.apply(i0 + r, j0, row);
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
            if b.transposed {
                for (j, v) in row[..w].iter_mut().enumerate() {
                    *v = b.data[(from + j) * b.stride + k0 + kk];
                }
            } else {
                let src = (k0 + kk) * b.stride + from;
                row[..w].copy_from_slice(&b.data[src..src + w]);
            }
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
                    write(p, if first { *v } else { add(load(p), *v) });
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
                    .map(|p| f64::from(at(a, i, p)) * f64::from(at(b, p, j)))
                    .sum();
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    /// Element `(i, j)` of `v`.
    fn at(v: View, i: usize, j: usize) -> f32 {
        if v.transposed { v.data[j * v.stride + i] } else { v.data[i * v.stride + j] }
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
            let (lda, ldb, ldbt) = (k + 3, n + 5, k + 2);
            let a = values(m * lda, 1.0);
            let (b, bt) = (values(k * ldb, 2.0), values(n * ldbt, 2.5));
            let a = View { data: &a, rows: m, cols: k, stride: lda, transposed: false };
            // B stored by rows, and stored as its transpose.
            let bs = [
                View { data: &b, rows: k, cols: n, stride: ldb, transposed: false },
                View { data: &bt, rows: k, cols: n, stride: ldbt, transposed: true },
            ];
            // The platform's product (natively `gemm`) and this module's kernel.
            for (product, b) in [product, kernel_product].into_iter().flat_map(|f| bs.map(|b| (f, b))) {
            let mut c = vec![f32::NAN; m * n];
            product(a, b, &mut c, &Epilogue::default(), true);
            let want = reference(a, b);
            // The epilogue, on every path: a bias per row, then GELU.
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.01 - 0.2).collect();
            let mut fused = vec![f32::NAN; m * n];
            product(a, b, &mut fused, &Epilogue { bias: Bias::PerRow(&bias), gelu: true }, true);
            for (i, (got, plain)) in fused.chunks_exact(n).zip(c.chunks_exact(n)).enumerate() {
                for (g, p) in got.iter().zip(plain) {
                    assert!((g - gelu_f32(p + bias[i])).abs() <= 1e-6, "{m}×{k}×{n}: fused epilogue");
                }
            }
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
        close(host_linear(&layer, x.clone(), false), layer.forward(x.clone()));
        close(host_linear(&layer, x.clone(), true), gelu(layer.forward(x)));
        // 1×1, 3×3 padded, 2×2 stride 2 (the mask prompt's), 3×3 dilated and strided.
        for spec in [
            ConvSpec::new(16, 24, 1),
            ConvSpec::new(16, 24, 3).padding(1),
            ConvSpec::new(16, 24, 2).stride(2),
            ConvSpec::new(16, 24, 3).stride(2).padding(2),
        ] {
            let [o, i, k, _] = [spec.out_chans, spec.in_chans, spec.kernel, 0];
            let mut conv = spec.build(tensor(vec![o, i, k, k], 6.0), Some(tensor(vec![1, 1, 1, o], 7.0).reshape([o])));
            if spec.padding == 2 {
                conv.dilation = [2, 2];
            }
            let g = Geometry::dense(&conv).expect("a dense convolution");
            let x = tensor(vec![2, 16, 9, 11], 8.0);
            close(host_conv(&conv, &g, x.clone(), false), conv.forward(x.clone()));
            close(host_conv(&conv, &g, x.clone(), true), gelu(conv.forward(x)));
        }
        let depthwise = ConvSpec::new(16, 16, 3).padding(1).groups(16).build(tensor(vec![16, 1, 3, 3], 1.0), None);
        assert!(Geometry::dense(&depthwise).is_none());
    }

    #[test]
    fn batched_products_give_burns_outputs() {
        let device = burn::tensor::Device::flex();
        let tensor = |shape: [usize; 4], seed: f32| {
            Tensor::<4>::from_data(burn::tensor::TensorData::new(values(shape.iter().product(), seed), shape), &device)
        };
        for (a, b) in [([2, 3, 7, 16], [2, 3, 16, 5]), ([1, 8, 56, 32], [1, 1, 32, 40])] {
            let (a, b) = (tensor(a, 1.0), tensor(b, 2.0));
            // `a · b`, and `a · (bᵀ)ᵀ` with the transpose read in place.
            let bt = b.clone().swap_dims(2, 3).into_data();
            let bt = Tensor::<4>::from_data(bt, &device);
            let t: Vec<f32> = batched_t(a.clone(), bt).into_data().try_to_vec().unwrap();
            let (want, got) = (a.clone().matmul(b.clone()), host_batched(a, b, false));
            let got: Vec<f32> = got.into_data().try_to_vec().unwrap();
            let want: Vec<f32> = want.into_data().try_to_vec().unwrap();
            let d = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
            assert!(d < 1e-4, "max difference {d}");
            let d = t.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
            assert!(d < 1e-4, "transposed: max difference {d}");
        }
    }

    #[test]
    fn window_attention_gives_burns_outputs() {
        let device = burn::tensor::Device::flex();
        let tensor = |shape: [usize; 3], seed: f32| {
            Tensor::<3>::from_data(burn::tensor::TensorData::new(values(shape.iter().product(), seed), shape), &device)
        };
        for (windows, n, heads, kd) in [(3, 49, 2, 8), (1, 196, 5, 32)] {
            let (qkv, bias, scale) = (tensor([windows, n, heads * 3 * kd], 1.0), tensor([heads, n, n], 2.0), 0.35);
            let got = window_attention(qkv.clone(), heads, scale, bias.clone());
            let qkv = qkv.reshape([windows, n, heads, 3 * kd]);
            let q = qkv.clone().narrow(3, 0, kd).swap_dims(1, 2);
            let k = qkv.clone().narrow(3, kd, kd).swap_dims(1, 2);
            let v = qkv.narrow(3, 2 * kd, kd).swap_dims(1, 2);
            let attn = crate::activation::softmax(q.matmul(k.swap_dims(2, 3)) * scale + bias.unsqueeze::<4>(), 3);
            let want = attn.matmul(v).swap_dims(1, 2).reshape([windows, n, heads * kd]);
            let d: f32 = (got - want).abs().max().into_scalar();
            assert!(d < 1e-5, "{windows}×{n}, {heads} heads of {kd}: max difference {d}");
        }
    }

    #[test]
    fn an_empty_depth_gives_zeros() {
        for product in [product, kernel_product] {
            let mut c = vec![f32::NAN; 6];
            product(View::dense(&[], 2, 0), View::dense(&[], 0, 3), &mut c, &Epilogue::default(), true);
            assert_eq!(c, vec![0.0; 6]);
        }
    }
}
