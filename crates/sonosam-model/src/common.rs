//! Building blocks shared by the components, built from PyTorch-layout weights.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::weights::TensorMap;

/// Epsilon of `torch.nn.BatchNorm2d`.
const BATCH_NORM_EPS: f32 = 1e-5;

fn param<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t)
}

fn join(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

/// `torch.nn.Linear` from `{prefix}.weight` `[d_out, d_in]` and `{prefix}.bias` `[d_out]`.
pub fn linear(
    w: &TensorMap,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<Linear> {
    Ok(Linear {
        weight: w.param_linear(&join(prefix, "weight"), d_in, d_out, device)?,
        bias: Some(w.param(&join(prefix, "bias"), [d_out], device)?),
    })
}

/// `torch.nn.LayerNorm(d, eps)` from `{prefix}.weight` and `{prefix}.bias`.
pub fn layer_norm(
    w: &TensorMap,
    prefix: &str,
    d: usize,
    eps: f64,
    device: &Device,
) -> Result<LayerNorm> {
    let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = w.param(&join(prefix, "weight"), [d], device)?;
    norm.beta = Some(w.param(&join(prefix, "bias"), [d], device)?);
    Ok(norm)
}

/// Geometry of a 2-D convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub in_chans: usize,
    pub out_chans: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl ConvSpec {
    pub fn new(in_chans: usize, out_chans: usize, kernel: usize) -> Self {
        Self {
            in_chans,
            out_chans,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_chans,
            self.in_chans / self.groups,
            self.kernel,
            self.kernel,
        ]
    }
    pub fn build(&self, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Conv2d {
        self.build_params(param(weight), bias.map(param))
    }
    fn build_params(&self, weight: Param<Tensor<4>>, bias: Option<Param<Tensor<1>>>) -> Conv2d {
        let p = self.padding;
        Conv2d {
            weight,
            bias,
            stride: [self.stride; 2],
            kernel_size: [self.kernel; 2],
            dilation: [1, 1],
            groups: self.groups,
            padding: PaddingConfig2d::Explicit(p, p, p, p),
        }
    }
}

/// `torch.nn.Conv2d` from `{prefix}.weight` (and `{prefix}.bias` when `bias`).
pub fn conv2d(
    w: &TensorMap,
    prefix: &str,
    spec: ConvSpec,
    bias: bool,
    device: &Device,
) -> Result<Conv2d> {
    // Parameters built through the map: trainable (and tracked) where the map tracks them.
    let weight = w.param(&join(prefix, "weight"), spec.weight_shape(), device)?;
    let bias = if bias {
        Some(w.param(&join(prefix, "bias"), [spec.out_chans], device)?)
    } else {
        None
    };
    Ok(spec.build_params(weight, bias))
}

/// TinyViT's `Conv2d_BN` (`{prefix}.c` + `{prefix}.bn`), with the BatchNorm folded into the
/// convolution's weight and bias (inference statistics).
pub fn conv2d_bn(w: &TensorMap, prefix: &str, spec: ConvSpec, device: &Device) -> Result<Conv2d> {
    let shape = spec.weight_shape();
    let c = spec.out_chans;
    let weight = w.get(&format!("{prefix}.c.weight"), &shape)?;
    let gamma = &w.get(&format!("{prefix}.bn.weight"), &[c])?.data;
    let beta = &w.get(&format!("{prefix}.bn.bias"), &[c])?.data;
    let mean = &w.get(&format!("{prefix}.bn.running_mean"), &[c])?.data;
    let var = &w.get(&format!("{prefix}.bn.running_var"), &[c])?.data;
    w.ignore(&format!("{prefix}.bn.num_batches_tracked"));

    let per_out = weight.data.len() / c;
    let mut folded = weight.data.clone();
    let mut bias = vec![0f32; c];
    for o in 0..c {
        let scale = gamma[o] / (var[o] + BATCH_NORM_EPS).sqrt();
        for v in &mut folded[o * per_out..(o + 1) * per_out] {
            *v *= scale;
        }
        bias[o] = beta[o] - mean[o] * scale;
    }
    let weight = Tensor::from_data(TensorData::new(folded, shape), device);
    let bias = Tensor::from_data(TensorData::new(bias, [c]), device);
    Ok(spec.build(weight, Some(bias)))
}

/// Layer normalisation over the channel axis of an NCHW tensor (SAM's `LayerNorm2d`).
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm2d {
    pub fn load(
        w: &TensorMap,
        prefix: &str,
        channels: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.param(&join(prefix, "weight"), [channels], device)?,
            bias: w.param(&join(prefix, "bias"), [channels], device)?,
            eps,
        })
    }

    /// `x`: `[B, C, H, W]` → `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let u = x.clone().mean_dim(1);
        let centered = x - u;
        let s = centered.clone().square().mean_dim(1);
        let normed = centered / (s + self.eps).sqrt();
        let c = self.weight.dims()[0];
        let weight = self.weight.val().reshape([1, c, 1, 1]);
        let bias = self.bias.val().reshape([1, c, 1, 1]);
        normed * weight + bias
    }
}

