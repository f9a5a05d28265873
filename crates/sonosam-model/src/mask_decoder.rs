//! Mask decoder: image embedding + prompt tokens → mask logits `[B, M, 4E, 4E]` and predicted
//! IoU `[B, M]` (M = 1, or 3 in multimask mode).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::nn::conv::ConvTranspose2d;
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Device, Tensor};

use crate::common::{LayerNorm2d, conv_transpose2d, linear};
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
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
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
    pub upscale_conv1: ConvTranspose2d,
    pub upscale_norm: LayerNorm2d,
    pub upscale_conv2: ConvTranspose2d,
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
            upscale_conv1: conv_transpose2d(
                w,
                &format!("{p}.output_upscaling.0"),
                d,
                d / 4,
                2,
                2,
                device,
            )?,
            upscale_norm: LayerNorm2d::load(w, &format!("{p}.output_upscaling.1"), d / 4, 1e-6, device)?,
            upscale_conv2: conv_transpose2d(
                w,
                &format!("{p}.output_upscaling.3"),
                d / 4,
                d / 8,
                2,
                2,
                device,
            )?,
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
        let [b, _, d] = sparse.dims();
        let [bi, c, e, _] = image_embeddings.dims();
        if bi != 1 && bi != b {
            return Err(SamError::Invalid(format!(
                "{bi} image embeddings for {b} prompts: give one embedding, or one per prompt"
            )));
        }
        if c != d {
            return Err(SamError::Invalid(format!(
                "embedding has {c} channels, the decoder expects {d}"
            )));
        }
        let m = self.num_mask_tokens;
        let output_tokens = Tensor::cat(vec![self.iou_token.val(), self.mask_tokens.val()], 0)
            .unsqueeze::<3>()
            .expand([b, m + 1, d]);
        let tokens = Tensor::cat(vec![output_tokens, sparse], 1);

        let src = image_embeddings.expand([b, c, e, e]) + dense;
        let pos = image_pe.expand([b, c, e, e]);
        let (hs, src) = self.transformer.forward(src, pos, tokens);

        let iou_token_out = hs.clone().narrow(1, 0, 1).reshape([b, d]);
        let src = src.swap_dims(1, 2).reshape([b, c, e, e]);
        let up = gelu(self.upscale_norm.forward(self.upscale_conv1.forward(src)));
        let up = gelu(self.upscale_conv2.forward(up));
        let [_, cu, hu, wu] = up.dims();

        let hyper: Vec<Tensor<3>> = self
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, mlp)| {
                let token = hs.clone().narrow(1, 1 + i, 1).reshape([b, d]);
                mlp.forward(token).unsqueeze_dim::<3>(1)
            })
            .collect();
        let hyper = Tensor::cat(hyper, 1); // [B, M, C/8]
        let masks = hyper
            .matmul(up.reshape([b, cu, hu * wu]))
            .reshape([b, m, hu, wu]);
        let iou = self.iou_head.forward(iou_token_out);

        let (start, count) = if multimask { (1, m - 1) } else { (0, 1) };
        Ok(DecoderOutput {
            low_res_logits: masks.narrow(1, start, count),
            iou: iou.narrow(1, start, count),
        })
    }
}
