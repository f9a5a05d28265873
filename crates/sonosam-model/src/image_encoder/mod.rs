//! Image encoder: image `[B, 3, S, S]` → embedding `[B, 256, 64, 64]`.
//!
//! Two architectures, chosen by the model configuration:
//! - [`tiny_vit`]: TinyViT (LiteMedSAM at S = 256, MobileSAM at S = 1024), a distilled
//!   hierarchical encoder;
//! - [`vit`]: SAM's own plain ViT (ViT-B/L/H at S = 1024) with windowed and global attention
//!   and decomposed relative position embeddings.
//!
//! Both end in the same neck (1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d), so their
//! embeddings feed the same prompt encoder and mask decoder.

pub mod tiny_vit;
pub mod vit;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

pub use tiny_vit::{EncoderTrace, TinyVit, relative_offset_index};
pub use vit::ImageEncoderViT;

use crate::matmul;
use crate::common::{ConvSpec, LayerNorm2d, conv2d};
use crate::config::EncoderConfig;
use crate::error::Result;
use crate::weights::TensorMap;

/// Key prefix of the image encoder in checkpoints.
pub const ENCODER_PREFIX: &str = "image_encoder.";

/// An image encoder of any supported architecture.
#[derive(Debug)]
pub enum ImageEncoder {
    TinyVit(TinyVit),
    Vit(ImageEncoderViT),
}

impl ImageEncoder {
    /// Build from `image_encoder.*` tensors; every tensor under that prefix must be used.
    pub fn load(w: &TensorMap, config: &EncoderConfig, device: &Device) -> Result<Self> {
        let enc = match config {
            EncoderConfig::TinyVit(c) => {
                ImageEncoder::TinyVit(TinyVit::load(w, "image_encoder", c, device)?)
            }
            EncoderConfig::Vit(c) => {
                ImageEncoder::Vit(ImageEncoderViT::load(w, "image_encoder", c, device)?)
            }
        };
        w.check_all_used(ENCODER_PREFIX)?;
        Ok(enc)
    }

    /// `[B, 3, S, S]` → `[B, 256, 64, 64]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            ImageEncoder::TinyVit(m) => m.forward(x),
            ImageEncoder::Vit(m) => m.forward(x),
        }
    }

    /// Forward pass keeping stage outputs (parity checks, debugging).
    pub fn forward_trace(&self, x: Tensor<4>) -> EncoderTrace {
        match self {
            ImageEncoder::TinyVit(m) => m.forward_trace(x),
            ImageEncoder::Vit(m) => m.forward_trace(x),
        }
    }
}

/// Projection of the backbone's last feature map to the embedding: 1×1 conv, LayerNorm2d,
/// 3×3 conv, LayerNorm2d (no conv biases). `[B, C, 64, 64]` → `[B, 256, 64, 64]`.
#[derive(Module, Debug)]
pub struct Neck {
    conv1: Conv2d,
    norm1: LayerNorm2d,
    conv2: Conv2d,
    norm2: LayerNorm2d,
}

impl Neck {
    pub fn load(w: &TensorMap, p: &str, dim: usize, out: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            conv1: conv2d(w, &format!("{p}.0"), ConvSpec::new(dim, out, 1), false, device)?,
            norm1: LayerNorm2d::load(w, &format!("{p}.1"), out, 1e-6, device)?,
            conv2: conv2d(
                w,
                &format!("{p}.2"),
                ConvSpec::new(out, out, 3).padding(1),
                false,
                device,
            )?,
            norm2: LayerNorm2d::load(w, &format!("{p}.3"), out, 1e-6, device)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.norm1.forward(matmul::conv2d(&self.conv1, x));
        self.norm2.forward(matmul::conv2d(&self.conv2, x))
    }
}

/// Split a `[B, H, W, C]` grid into non-overlapping `ws × ws` windows, zero-padding the bottom
/// and right to a multiple of `ws`: → `[B·nH·nW, ws², C]` and the padded side `(Hp, Wp)`.
pub fn window_partition(x: Tensor<4>, ws: usize) -> (Tensor<3>, (usize, usize)) {
    let [b, h, w, c] = x.dims();
    let (ph, pw) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
    let mut grid = x;
    let device = grid.device();
    if pw > w {
        grid = Tensor::cat(vec![grid, Tensor::zeros([b, h, pw - w, c], &device)], 2);
    }
    if ph > h {
        grid = Tensor::cat(vec![grid, Tensor::zeros([b, ph - h, pw, c], &device)], 1);
    }
    let (nh, nw) = (ph / ws, pw / ws);
    let windows = grid
        .reshape([b, nh, ws, nw, ws, c])
        .swap_dims(2, 3)
        .reshape([b * nh * nw, ws * ws, c]);
    (windows, (ph, pw))
}

/// Inverse of [`window_partition`]: `[B·nH·nW, ws², C]` → `[B, H, W, C]` (padding removed).
pub fn window_unpartition(
    windows: Tensor<3>,
    ws: usize,
    padded: (usize, usize),
    hw: (usize, usize),
) -> Tensor<4> {
    let [n, _, c] = windows.dims();
    let (ph, pw) = padded;
    let (nh, nw) = (ph / ws, pw / ws);
    let b = n / (nh * nw);
    let grid = windows
        .reshape([b, nh, nw, ws, ws, c])
        .swap_dims(2, 3)
        .reshape([b, ph, pw, c]);
    if (ph, pw) == hw {
        grid
    } else {
        grid.slice([0..b, 0..hw.0, 0..hw.1, 0..c])
    }
}
