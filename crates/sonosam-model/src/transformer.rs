//! SAM's two-way transformer: prompt tokens attend to image tokens and image tokens attend back
//! to the prompt tokens, twice, then a final token→image attention.
//!
//! Queries (tokens) `[B, N, C]`, keys (image) `[B, H·W, C]`.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Tensor};

use crate::common::{layer_norm, linear};
use crate::config::DecoderConfig;
use crate::error::Result;
use crate::weights::TensorMap;

/// Multi-head attention with an optional down-projection of the internal width.
/// `q [B, Nq, C]`, `k [B, Nk, C]`, `v [B, Nk, C]` → `[B, Nq, C]`.
#[derive(Module, Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl Attention {
    pub fn load(
        w: &TensorMap,
        p: &str,
        dim: usize,
        num_heads: usize,
        downsample: usize,
        device: &Device,
    ) -> Result<Self> {
        let internal = dim / downsample;
        Ok(Self {
            q_proj: linear(w, &format!("{p}.q_proj"), dim, internal, device)?,
            k_proj: linear(w, &format!("{p}.k_proj"), dim, internal, device)?,
            v_proj: linear(w, &format!("{p}.v_proj"), dim, internal, device)?,
            out_proj: linear(w, &format!("{p}.out_proj"), internal, dim, device)?,
            num_heads,
        })
    }

    fn separate_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2)
    }

    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.separate_heads(self.q_proj.forward(q));
        let k = self.separate_heads(self.k_proj.forward(k));
        let v = self.separate_heads(self.v_proj.forward(v));
        let [b, h, nq, ch] = q.dims();
        let attn = q.matmul(k.swap_dims(2, 3)) / (ch as f64).sqrt();
        let attn = softmax(attn, 3);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([b, nq, h * ch]);
        self.out_proj.forward(out)
    }
}

/// Linear, ReLU, Linear.
#[derive(Module, Debug)]
pub struct MlpBlock {
    lin1: Linear,
    lin2: Linear,
}

impl MlpBlock {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.lin2.forward(relu(self.lin1.forward(x)))
    }
}

/// One block: token self-attention, token→image cross-attention, MLP on tokens,
/// image→token cross-attention; each followed by a LayerNorm.
#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_attn_token_to_image: Attention,
    norm2: LayerNorm,
    mlp: MlpBlock,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    fn load(
        w: &TensorMap,
        p: &str,
        c: &DecoderConfig,
        skip_first_layer_pe: bool,
        device: &Device,
    ) -> Result<Self> {
        let (d, h, r) = (c.embed_dim, c.transformer_heads, c.attention_downsample_rate);
        let norm = |name: &str| layer_norm(w, &format!("{p}.{name}"), d, 1e-5, device);
        Ok(Self {
            self_attn: Attention::load(w, &format!("{p}.self_attn"), d, h, 1, device)?,
            norm1: norm("norm1")?,
            cross_attn_token_to_image: Attention::load(
                w,
                &format!("{p}.cross_attn_token_to_image"),
                d,
                h,
                r,
                device,
            )?,
            norm2: norm("norm2")?,
            mlp: MlpBlock {
                lin1: linear(w, &format!("{p}.mlp.lin1"), d, c.transformer_mlp_dim, device)?,
                lin2: linear(w, &format!("{p}.mlp.lin2"), c.transformer_mlp_dim, d, device)?,
            },
            norm3: norm("norm3")?,
            norm4: norm("norm4")?,
            cross_attn_image_to_token: Attention::load(
                w,
                &format!("{p}.cross_attn_image_to_token"),
                d,
                h,
                r,
                device,
            )?,
            skip_first_layer_pe,
        })
    }

    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = queries
            + self
                .cross_attn_token_to_image
                .forward(q, k.clone(), keys.clone());
        let queries = self.norm2.forward(queries);

        let queries = queries.clone() + self.mlp.forward(queries);
        let queries = self.norm3.forward(queries);

        let q = queries.clone() + query_pe;
        let keys = keys
            + self
                .cross_attn_image_to_token
                .forward(k, q, queries.clone());
        let keys = self.norm4.forward(keys);
        (queries, keys)
    }
}

/// The two-way transformer of the mask decoder.
#[derive(Module, Debug)]
pub struct TwoWayTransformer {
    layers: Vec<TwoWayAttentionBlock>,
    final_attn_token_to_image: Attention,
    norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    pub fn load(w: &TensorMap, p: &str, c: &DecoderConfig, device: &Device) -> Result<Self> {
        let layers = (0..c.transformer_depth)
            .map(|i| TwoWayAttentionBlock::load(w, &format!("{p}.layers.{i}"), c, i == 0, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            final_attn_token_to_image: Attention::load(
                w,
                &format!("{p}.final_attn_token_to_image"),
                c.embed_dim,
                c.transformer_heads,
                c.attention_downsample_rate,
                device,
            )?,
            norm_final_attn: layer_norm(w, &format!("{p}.norm_final_attn"), c.embed_dim, 1e-5, device)?,
        })
    }

    /// `image [B, C, H, W]`, `image_pe [B, C, H, W]`, `tokens [B, N, C]` →
    /// (tokens `[B, N, C]`, image tokens `[B, H·W, C]`).
    pub fn forward(
        &self,
        image: Tensor<4>,
        image_pe: Tensor<4>,
        tokens: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let [b, c, h, w] = image.dims();
        // Channel-last, materialised once (the reshape of the transposed view copies): every
        // later op then reads contiguous memory instead of a strided view.
        let channels_last = |x: Tensor<4>| {
            x.reshape([b, c, h * w])
                .swap_dims(1, 2)
                .reshape([b * h * w, c])
                .reshape([b, h * w, c])
        };
        let keys_in = channels_last(image);
        let key_pe = channels_last(image_pe);
        let mut queries = tokens.clone();
        let mut keys = keys_in;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, tokens.clone(), key_pe.clone());
        }
        let q = queries.clone() + tokens;
        let k = keys.clone() + key_pe;
        let attn = self.final_attn_token_to_image.forward(q, k, keys.clone());
        (self.norm_final_attn.forward(queries + attn), keys)
    }
}
