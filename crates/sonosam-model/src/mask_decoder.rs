//! Mask decoder: image embedding + prompt tokens → mask logits `[B, M, 4E, 4E]` and predicted
//! IoU `[B, M]` (M = 1, or 3 in multimask mode).

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::relu;
use crate::matmul;
use crate::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::common::{layer_norm, linear};
use crate::config::DecoderConfig;
use crate::error::{Result, SamError};
use crate::transformer::TwoWayTransformer;
use crate::weights::TensorMap;

/// Plain MLP with ReLU between layers: `[B, in]` → `[B, out]`.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn load(
        w: &TensorMap,
        p: &str,
        d_in: usize,
        hidden: usize,
        d_out: usize,
        depth: usize,
        device: &Device,
    ) -> Result<Self> {
        let layers = (0..depth)
            .map(|i| {
                let a = if i == 0 { d_in } else { hidden };
                let b = if i + 1 == depth { d_out } else { hidden };
                linear(w, &format!("{p}.layers.{i}"), a, b, device)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = matmul::linear(layer, x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// `torch.nn.ConvTranspose2d(in, out, kernel_size=2, stride=2)` applied to a list of pixels:
/// the 2×2 kernels of a stride-2 transposed convolution do not overlap, so each input pixel
/// becomes its own 2×2 block of output pixels by one matmul. `[B, P, in]` → `[B, 4P, out]`,
/// output pixel `4p + 2i + j` being row `i`, column `j` of input pixel `p`'s block (the caller
/// restores the image order once, at the end).
#[derive(Module, Debug)]
pub struct BlockConvTranspose2x2 {
    /// `[in, out, 2, 2]` (PyTorch layout).
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

impl BlockConvTranspose2x2 {
    fn load(w: &TensorMap, p: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: w.param(&format!("{p}.weight"), [d_in, d_out, 2, 2], device)?,
            bias: w.param(&format!("{p}.bias"), [d_out], device)?,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.apply(x, false)
    }

    /// `GELU(forward(x))`, the activation applied as the product is written.
    pub fn forward_gelu(&self, x: Tensor<3>) -> Tensor<3> {
        self.apply(x, true)
    }

    fn apply(&self, x: Tensor<3>, gelu_after: bool) -> Tensor<3> {
        let [b, p, d_in] = x.dims();
        let [_, d_out, _, _] = self.weight.dims();
        // Columns ordered (i, j, out).
        let weight = self.weight.val().permute([0, 2, 3, 1]).reshape([d_in, 4 * d_out]);
        let bias = self.bias.val().unsqueeze::<2>().expand([4, d_out]).reshape([4 * d_out]);
        matmul::affine(x.reshape([b * p, d_in]), weight, bias, gelu_after).reshape([b, 4 * p, d_out])
    }
}

/// Output of the mask decoder.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `[B, M, 4E, 4E]` mask logits (threshold at 0).
    pub low_res_logits: Tensor<4>,
    /// `[B, M]` predicted IoU of each mask.
    pub iou: Tensor<2>,
}

/// SAM's mask decoder.
#[derive(Module, Debug)]
pub struct MaskDecoder {
    pub transformer: TwoWayTransformer,
    /// `[1, C]`.
    pub iou_token: Param<Tensor<2>>,
    /// `[M+1, C]`: the single-mask token then the multimask tokens.
    pub mask_tokens: Param<Tensor<2>>,
    /// SAM's `output_upscaling`: transposed conv, LayerNorm2d, GELU, transposed conv, GELU,
    /// computed on pixel lists (`[B, E·E, C]` → `[B, 16·E·E, C/8]`, block order).
    pub upscale_conv1: BlockConvTranspose2x2,
    /// LayerNorm2d = a LayerNorm over the channels of each pixel.
    pub upscale_norm: LayerNorm,
    pub upscale_conv2: BlockConvTranspose2x2,
    pub hypernetworks: Vec<Mlp>,
    pub iou_head: Mlp,
    num_mask_tokens: usize,
}

impl MaskDecoder {
    pub fn load(w: &TensorMap, p: &str, c: &DecoderConfig, device: &Device) -> Result<Self> {
        let d = c.embed_dim;
        let m = c.num_multimask_outputs + 1;
        let hypernetworks = (0..m)
            .map(|i| {
                Mlp::load(
                    w,
                    &format!("{p}.output_hypernetworks_mlps.{i}"),
                    d,
                    d,
                    d / 8,
                    3,
                    device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            transformer: TwoWayTransformer::load(w, &format!("{p}.transformer"), c, device)?,
            iou_token: w.param(&format!("{p}.iou_token.weight"), [1, d], device)?,
            mask_tokens: w.param(&format!("{p}.mask_tokens.weight"), [m, d], device)?,
            upscale_conv1: BlockConvTranspose2x2::load(w, &format!("{p}.output_upscaling.0"), d, d / 4, device)?,
            upscale_norm: layer_norm(w, &format!("{p}.output_upscaling.1"), d / 4, 1e-6, device)?,
            upscale_conv2: BlockConvTranspose2x2::load(w, &format!("{p}.output_upscaling.3"), d / 4, d / 8, device)?,
            hypernetworks,
            iou_head: Mlp::load(
                w,
                &format!("{p}.iou_prediction_head"),
                d,
                c.iou_head_hidden_dim,
                m,
                c.iou_head_depth,
                device,
            )?,
            num_mask_tokens: m,
        })
    }

    /// Predict masks.
    ///
    /// - `image_embeddings`: `[1 or B, C, E, E]` (one image shared by all prompts, or one each)
    /// - `image_pe`: `[1, C, E, E]`
    /// - `sparse`: `[B, N, C]`, `dense`: `[B, C, E, E]`
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        multimask: bool,
    ) -> Result<DecoderOutput> {
        let [b, _, _] = sparse.dims();
        let [bi, c, e, _] = image_embeddings.dims();
        if bi != 1 && bi != b {
            return Err(SamError::Invalid(format!(
                "{bi} image embeddings for {b} prompts: give one embedding, or one per prompt"
            )));
        }
        self.check_channels(c)?;
        let src = image_embeddings.expand([b, c, e, e]) + dense;
        let pos = image_pe.expand([b, c, e, e]);
        let (hs, src) = self.transformer.forward(src, pos, self.tokens(sparse));
        Ok(self.predict(hs, src, e, multimask))
    }

    /// What [`Self::forward`] computes from one image alone when the dense prompt is the same
    /// for every prompt (no mask prompt): `image_embedding [1, C, E, E]`, `image_pe
    /// [1, C, E, E]`, `dense [1, C, E, E]`.
    pub fn prepare(&self, image_embedding: Tensor<4>, image_pe: Tensor<4>, dense: Tensor<4>) -> Result<PreparedImage> {
        let [bi, c, e, _] = image_embedding.dims();
        if bi != 1 {
            return Err(SamError::Invalid(format!("prepare one image at a time, not {bi}")));
        }
        self.check_channels(c)?;
        Ok(PreparedImage { transformer: self.transformer.prepare(image_embedding + dense, image_pe), side: e })
    }

    /// [`Self::forward`] for prompts `sparse [B, N, C]` against a prepared image.
    pub fn forward_prepared(&self, image: &PreparedImage, sparse: Tensor<3>, multimask: bool) -> Result<DecoderOutput> {
        self.check_channels(sparse.dims()[2])?;
        let (hs, src) = self.transformer.forward_prepared(&image.transformer, self.tokens(sparse));
        Ok(self.predict(hs, src, image.side, multimask))
    }

    fn check_channels(&self, c: usize) -> Result<()> {
        let d = self.iou_token.dims()[1];
        if c != d {
            return Err(SamError::Invalid(format!(
                "embedding has {c} channels, the decoder expects {d}"
            )));
        }
        Ok(())
    }

    /// The output tokens (IoU token, mask tokens) followed by the prompt tokens `[B, N, C]`.
    fn tokens(&self, sparse: Tensor<3>) -> Tensor<3> {
        let [b, _, d] = sparse.dims();
        let m = self.num_mask_tokens;
        let output_tokens = Tensor::cat(vec![self.iou_token.val(), self.mask_tokens.val()], 0)
            .unsqueeze::<3>()
            .expand([b, m + 1, d]);
        Tensor::cat(vec![output_tokens, sparse], 1)
    }

    /// Masks and IoU from the transformer's tokens `hs [B, T, C]` and image tokens
    /// `src [B, E·E, C]` (`e` = E).
    fn predict(&self, hs: Tensor<3>, src: Tensor<3>, e: usize, multimask: bool) -> DecoderOutput {
        let [b, _, d] = hs.dims();
        let m = self.num_mask_tokens;
        let iou_token_out = hs.clone().narrow(1, 0, 1).reshape([b, d]);
        // `src` is `[B, E·E, C]`: pixels in row-major order, channels last.
        let up = gelu(self.upscale_norm.forward(self.upscale_conv1.forward(src)));
        let up = self.upscale_conv2.forward_gelu(up); // [B, 16·E·E, C/8], block order

        // Only the masks asked for (SAM computes all M and then slices).
        let (start, count) = if multimask { (1, m - 1) } else { (0, 1) };
        let hyper: Vec<Tensor<3>> = self.hypernetworks[start..start + count]
            .iter()
            .enumerate()
            .map(|(i, mlp)| {
                let token = hs.clone().narrow(1, 1 + start + i, 1).reshape([b, d]);
                mlp.forward(token).unsqueeze_dim::<3>(1)
            })
            .collect();
        let hyper = Tensor::cat(hyper, 1); // [B, count, C/8]
        // [B, 16·E·E, count] in block order: pixel (y, x, i, j, k, l) is output row
        // 4y + 2i + k, column 4x + 2j + l.
        let masks = matmul::batched(up, hyper.swap_dims(1, 2))
            .reshape([b, e, e, 2, 2, 2 * 2 * count])
            .permute([0, 5, 1, 3, 2, 4]) // [B, (k, l, count), y, i, x, j]
            .reshape([b, 2, 2, count, 2 * e, 2 * e])
            .permute([0, 3, 4, 1, 5, 2]) // [B, count, (y, i), k, (x, j), l]
            .reshape([b, count, 4 * e, 4 * e]);
        let iou = self.iou_head.forward(iou_token_out);

        DecoderOutput {
            low_res_logits: masks,
            iou: iou.narrow(1, start, count),
        }
    }
}

/// The decoder's per-image work for one image, done once: see [`MaskDecoder::prepare`].
#[derive(Debug, Clone)]
pub struct PreparedImage {
    transformer: crate::transformer::PreparedImage,
    /// Side `E` of the embedding grid.
    side: usize,
}
