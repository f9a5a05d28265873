//! Depthwise convolution of token grids, channels last: TinyViT's local convolution on the CPU.
//!
//! Each TinyViT block convolves its tokens `[B, H·W, C]` with a k × k depthwise convolution
//! (one filter per channel) between attention and MLP. burn's convolution takes NCHW, so the
//! tokens went through a layout change (a transpose) on the way in and another on the way
//! out — together with the convolution 6 % of the encoder in the browser. Here the filter runs
//! on the tokens as they lie: each output row is the bias plus k² shifted input rows scaled per
//! channel, loops over contiguous channels that the compiler vectorises.
//!
//! [`planes`] does the same for the depthwise convolutions of NCHW images (TinyViT's MBConv
//! and patch merging), plane by plane, with the GELU that follows them applied as each row is
//! finished (burn-flex's convolution and a separate GELU pass were 5 % of the encoder in the
//! browser).

use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};

use crate::activation::gelu_f32;
use crate::host::{floats, for_chunks, multiversion, on_host, tensor, values};
use crate::matmul::Geometry;

/// The depthwise convolution `layer` (one group per channel, stride 1, padding `k / 2` on every
/// side, odd square kernel) of the tokens `x: [B, H·W, C]` of an `H × W` grid → `[B, H·W, C]`,
/// as `layer.forward` on the NCHW grid would give.
pub fn tokens(layer: &Conv2d, x: Tensor<3>, (h, w): (usize, usize)) -> Tensor<3> {
    let [b, l, c] = x.dims();
    assert_eq!(l, h * w, "depthwise: {l} tokens are not a {h}×{w} grid");
    if runs_here(layer, &x) {
        host(layer, x, Grid { h, w, c, k: layer.kernel_size[0] })
    } else {
        let grid = x.swap_dims(1, 2).reshape([b, c, h, w]);
        layer.forward(grid).reshape([b, c, l]).swap_dims(1, 2)
    }
}

/// Whether `layer` on `x` runs here: f32 CPU inference, and a convolution of the shape above.
fn runs_here(layer: &Conv2d, x: &Tensor<3>) -> bool {
    let k = layer.kernel_size[0];
    host_depthwise(layer, x, x.dims()[2]).is_some_and(|g| k % 2 == 1 && g.padding == k / 2 && g.stride == [1, 1])
}

/// The geometry of `layer` when the host kernels take it on `x` (f32 CPU inference), a
/// depthwise convolution of `c` channels: one group per channel, a square kernel, dilation 1,
/// the same padding on every side.
fn host_depthwise<const D: usize>(layer: &Conv2d, x: &Tensor<D>, c: usize) -> Option<Geometry> {
    let [k, kw] = layer.kernel_size;
    let depthwise = layer.groups == c && layer.weight.dims() == [c, 1, k, k] && k == kw;
    let here = on_host(x) && x.dtype() == DType::F32 && depthwise && layer.dilation == [1, 1];
    Geometry::of(layer).filter(|_| here)
}

/// The per-channel bias of `layer` (zeros without one).
fn bias(layer: &Conv2d, c: usize) -> Vec<f32> {
    layer.bias.as_ref().map_or_else(|| vec![0.0; c], |b| values(b.val()))
}

/// Sizes of the grid and the kernel.
#[derive(Clone, Copy)]
struct Grid {
    h: usize,
    w: usize,
    c: usize,
    k: usize,
}

fn host(layer: &Conv2d, x: Tensor<3>, grid: Grid) -> Tensor<3> {
    let (shape, device) = (x.dims(), x.device());
    let Grid { h, w, c, k } = grid;
    let input = x.into_data();
    let input = floats(&input);
    // Taps laid out `[k, k, C]`: each one a row of per-channel weights.
    let weight = values(layer.weight.val());
    let taps: Vec<f32> = (0..k * k).flat_map(|t| (0..c).map(move |ch| (t, ch))).map(|(t, ch)| weight[ch * k * k + t]).collect();
    let bias = bias(layer, c);
    let mut out = vec![0f32; shape.iter().product()];
    for_chunks(&mut out, w * c, |(r, out)| {
        let image = &input[r / h * h * w * c..][..h * w * c];
        conv_row(out, image, &taps, &bias, r % h, grid);
    });
    tensor(out, shape, &device)
}

multiversion! {
    /// Output row `y` (`W × C` values) of one image's grid (`H × W × C` values).
    fn conv_row(out: &mut [f32], image: &[f32], taps: &[f32], bias: &[f32], y: usize, grid: Grid) {
        let Grid { h, w, c, k } = grid;
        let p = k / 2;
        for o in out.chunks_exact_mut(c) {
            o.copy_from_slice(bias);
        }
        for dy in 0..k {
            let Some(sy) = (y + dy).checked_sub(p).filter(|&sy| sy < h) else { continue };
            let src = &image[sy * w * c..][..w * c];
            for dx in 0..k {
                let tap = &taps[(dy * k + dx) * c..][..c];
                // Output column x reads input column x + dx − p, where that lies in the grid.
                let (x0, x1) = (p.saturating_sub(dx), (w + p).saturating_sub(dx).min(w));
                for x in x0..x1 {
                    let (o, i) = (&mut out[x * c..][..c], &src[(x + dx - p) * c..][..c]);
                    for ((o, i), t) in o.iter_mut().zip(i).zip(tap) {
                        *o += i * t;
                    }
                }
            }
        }
    }
}

/// Whether [`planes`] takes `layer` on `x`: f32 CPU inference, a depthwise convolution (one
/// group per channel) with a square kernel, dilation 1, the same padding on every side and the
/// same stride along both axes.
pub fn planes_here(layer: &Conv2d, x: &Tensor<4>) -> bool {
    host_depthwise(layer, x, x.dims()[1]).is_some_and(|g| g.stride[0] == g.stride[1])
}

/// The depthwise convolution `layer` of the NCHW image `x` (see [`planes_here`]), then GELU
/// when `gelu`: `[B, C, H, W]` → `[B, C, H', W']`, as `layer.forward` (and GELU) would give.
pub fn planes(layer: &Conv2d, x: Tensor<4>, gelu: bool) -> Tensor<4> {
    let ([b, c, h, w], device) = (x.dims(), x.device());
    let g = Geometry::of(layer).expect("a convolution that planes_here takes");
    let ([ho, wo], k) = (g.output(h, w), g.kernel[0]);
    let plane = Plane { h, w, ho, wo, k, stride: g.stride[0], pad: g.padding, gelu };
    let input = x.into_data();
    let input = floats(&input);
    let weight = values(layer.weight.val());
    let bias = bias(layer, c);
    let mut out = vec![0f32; b * c * plane.ho * plane.wo];
    for_chunks(&mut out, plane.ho * plane.wo, |(i, out)| {
        let ch = i % c;
        conv_plane(out, &input[i * h * w..][..h * w], &weight[ch * k * k..][..k * k], bias[ch], plane);
    });
    tensor(out, [b, c, plane.ho, plane.wo], &device)
}

/// Sizes of one plane's convolution.
#[derive(Clone, Copy)]
struct Plane {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    k: usize,
    stride: usize,
    pad: usize,
    gelu: bool,
}

multiversion! {
    /// One output plane (`H' × W'`) from one input plane (`H × W`) and its `k × k` filter.
    fn conv_plane(out: &mut [f32], input: &[f32], filter: &[f32], bias: f32, plane: Plane) {
        let Plane { h, w, wo, k, stride, pad, gelu, .. } = plane;
        for (oy, row) in out.chunks_exact_mut(wo).enumerate() {
            row.fill(bias);
            for dy in 0..k {
                let Some(sy) = (oy * stride + dy).checked_sub(pad).filter(|&sy| sy < h) else { continue };
                let src = &input[sy * w..][..w];
                for dx in 0..k {
                    let tap = filter[dy * k + dx];
                    // Output column x reads input column x · stride + dx − pad, where that lies
                    // in the plane.
                    let x0 = pad.saturating_sub(dx).div_ceil(stride);
                    let x1 = ((w + pad).saturating_sub(dx).div_ceil(stride)).min(wo);
                    if stride == 1 {
                        let shift = x0 + dx - pad;
                        for (o, i) in row[x0..x1.max(x0)].iter_mut().zip(&src[shift..]) {
                            *o += tap * i;
                        }
                    } else {
                        for x in x0..x1 {
                            row[x] += tap * src[x * stride + dx - pad];
                        }
                    }
                }
            }
            if gelu {
                for v in row.iter_mut() {
                    *v = gelu_f32(*v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::ConvSpec;

    #[test]
    fn gives_burns_convolution_of_the_grid() {
        let device = burn::tensor::Device::flex();
        let values = |n: usize, seed: f32| (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect::<Vec<f32>>();
        for (b, h, w, c, k) in [(2, 5, 7, 10, 3), (1, 9, 9, 16, 5), (1, 1, 4, 3, 3)] {
            let weight = Tensor::<4>::from_data(burn::tensor::TensorData::new(values(c * k * k, 1.0), [c, 1, k, k]), &device);
            let bias = Tensor::<1>::from_data(burn::tensor::TensorData::new(values(c, 2.0), [c]), &device);
            let layer = ConvSpec::new(c, c, k).padding(k / 2).groups(c).build(weight, Some(bias));
            let x = Tensor::<3>::from_data(burn::tensor::TensorData::new(values(b * h * w * c, 3.0), [b, h * w, c]), &device);
            assert!(runs_here(&layer, &x));
            let want = layer.forward(x.clone().swap_dims(1, 2).reshape([b, c, h, w])).reshape([b, c, h * w]).swap_dims(1, 2);
            let d: f32 = (tokens(&layer, x, (h, w)) - want).abs().max().into_scalar();
            assert!(d < 1e-5, "{b}×{h}×{w}×{c}, {k}×{k}: max difference {d}");
        }
    }

    #[test]
    fn planes_give_burns_convolution() {
        let device = burn::tensor::Device::flex();
        let values = |n: usize, seed: f32| (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect::<Vec<f32>>();
        // TinyViT's (3×3, padding 1, stride 1 and 2), odd sizes, a wider kernel, no padding.
        for (b, c, h, w, k, stride, pad) in [(2, 6, 9, 11, 3, 1, 1), (1, 4, 9, 11, 3, 2, 1), (1, 3, 8, 8, 3, 2, 1), (1, 2, 7, 5, 5, 1, 2), (1, 2, 6, 7, 3, 1, 0), (1, 2, 7, 7, 3, 3, 1)] {
            let weight = Tensor::<4>::from_data(burn::tensor::TensorData::new(values(c * k * k, 1.0), [c, 1, k, k]), &device);
            let bias = Tensor::<1>::from_data(burn::tensor::TensorData::new(values(c, 2.0), [c]), &device);
            let layer = ConvSpec::new(c, c, k).padding(pad).stride(stride).groups(c).build(weight, Some(bias));
            let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(values(b * c * h * w, 3.0), [b, c, h, w]), &device);
            assert!(planes_here(&layer, &x));
            let want = layer.forward(x.clone());
            assert_eq!(planes(&layer, x.clone(), false).dims(), want.dims());
            let d: f32 = (planes(&layer, x.clone(), false) - want.clone()).abs().max().into_scalar();
            assert!(d < 1e-5, "{c}×{h}×{w}, {k}×{k} stride {stride} pad {pad}: max difference {d}");
            let d: f32 = (planes(&layer, x, true) - crate::activation::gelu(want)).abs().max().into_scalar();
            assert!(d < 1e-5, "with GELU: max difference {d}");
        }
    }
}
