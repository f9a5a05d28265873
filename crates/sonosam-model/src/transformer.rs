//! SAM's two-way transformer: prompt tokens attend to image tokens and image tokens attend back
//! to the prompt tokens, twice, then a final token→image attention.
//!
//! Queries (tokens) `[B, N, C]`, keys (image) `[B, H·W, C]`.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::relu;
use crate::matmul;
use crate::activation::softmax;
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

    /// Width of one head (the internal width over the heads).
    fn head_dim(&self) -> usize {
        self.q_proj.weight.dims()[1] / self.num_heads
    }

    /// `[B, N, C]` → `[B, H, N, c]` through `proj`.
    fn project(&self, proj: &Linear, x: Tensor<3>) -> Tensor<4> {
        self.separate_heads(matmul::linear(proj, x))
    }

    /// The image side of token→image attention, once per image: keys and values by head,
    /// `[B, H, P, c]` each.
    pub fn project_kv(&self, k: Tensor<3>, v: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (self.project(&self.k_proj, k), self.project(&self.v_proj, v))
    }

    /// The image side of image→token attention, once per image: queries by head `[B, H, P, c]`.
    pub fn project_q(&self, q: Tensor<3>) -> Tensor<4> {
        self.project(&self.q_proj, q)
    }

    /// Scaled dot-product attention of heads `[B, H, Nq, c]` × `[B, H, Nk, c]` → `[B, Nq, C]`.
    fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
        let [b, h, nq, ch] = q.dims();
        let attn = matmul::batched(q, k.swap_dims(2, 3)) / (ch as f64).sqrt();
        let attn = softmax(attn, 3);
        let out = matmul::batched(attn, v).swap_dims(1, 2).reshape([b, nq, h * ch]);
        matmul::linear(&self.out_proj, out)
    }

    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.project(&self.q_proj, q);
        let (k, v) = self.project_kv(k, v);
        self.attend(q, k, v)
    }

    /// Tokens attend to image-side keys and values already projected by [`Self::project_kv`].
    pub fn forward_projected_kv(&self, q: Tensor<3>, k: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
        let q = self.project(&self.q_proj, q);
        self.attend(q, k, v)
    }

    /// Whether projecting the prompt side through the other side's weights is cheaper than
    /// projecting the image side: `H·N` against the internal width, with `N` prompt tokens.
    fn fold(&self, prompt_tokens: usize) -> bool {
        self.num_heads * prompt_tokens < self.num_heads * self.head_dim()
    }

    /// `[C, H·c]` weight of `proj` as `[H, C, c]` (one `C × c` block per head).
    fn weight_by_head(&self, proj: &Linear) -> Tensor<3> {
        let [d, _] = proj.weight.dims();
        let (h, ch) = (self.num_heads, self.head_dim());
        proj.weight.val().reshape([d, h, ch]).swap_dims(0, 1)
    }

    /// `[H·c]` bias of `proj` as `[1, H, 1, c]`.
    fn bias_by_head(&self, proj: &Linear) -> Tensor<4> {
        let (h, ch) = (self.num_heads, self.head_dim());
        proj.bias.as_ref().expect("projections have biases").val().reshape([1, h, 1, ch])
    }

    /// Prompt tokens `q [B, N, C]` attend to image tokens (keys `k`, values `v`, `[B, P, C]`).
    ///
    /// For short prompts the image side is never projected: with `W` a head's key (value)
    /// weights, `q·(kW)ᵀ = (qWᵀ)·kᵀ` and `softmax(·)(vW + b) = (softmax(·)v)W + b` (softmax rows
    /// sum to 1; the key bias adds a constant per row, which softmax ignores). That is
    /// `2·H·N·P·C` multiply-adds instead of `2·P·C·H·c` — 2.3× fewer for a box prompt.
    pub fn forward_to_image(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = q.dims();
        if !self.fold(n) {
            return self.forward(q, k, v);
        }
        let (h, ch) = (self.num_heads, self.head_dim());
        let q = self.project(&self.q_proj, q); // [B, H, N, c]
        let wk = self.weight_by_head(&self.k_proj).swap_dims(1, 2); // [H, c, C]
        let qk = matmul::batched(q.clone(), per_batch(wk, b)); // [B, H, N, C]
        // q·bₖ is the same for every image token, so softmax ignores it; it is kept so that
        // training sees the same function of every parameter as SAM's (a zero gradient for
        // the key bias rather than none).
        let bk = self.bias_by_head(&self.k_proj).expand([b, h, 1, ch]).swap_dims(2, 3); // [B, H, c, 1]
        let qb = matmul::batched(q, bk).reshape([b, h * n, 1]);
        let scores = (matmul::batched_t(qk.reshape([b, h * n, c]), k) + qb) / (ch as f64).sqrt();
        let attn = softmax(scores, 2); // [B, H·N, P]
        let pooled = matmul::batched(attn, v).reshape([b, h, n, c]); // [B, H, N, C]
        let wv = per_batch(self.weight_by_head(&self.v_proj), b); // [B, H, C, c]
        let out = matmul::batched(pooled, wv) + self.bias_by_head(&self.v_proj); // [B, H, N, c]
        matmul::linear(&self.out_proj, out.swap_dims(1, 2).reshape([b, n, h * ch]))
    }

    /// Image tokens (queries `q [B, P, C]`, or already projected by [`Self::project_q`])
    /// attend to prompt tokens (`k`, `v` `[B, N, C]`).
    ///
    /// For short prompts neither the image queries nor the output are projected per image
    /// token: with `Wq`, `Wo` a head's query and output weights, `(qWq + bq)·kᵀ =
    /// q·(Wq·kᵀ) + bq·kᵀ` and the heads' outputs `Σₕ attnₕ·vₕ·Woₕ = [attn₁ … attnₕ]·[v₁Wo₁; …]`.
    pub fn forward_from_image(&self, q: ImageQueries, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = k.dims();
        let (h, ch) = (self.num_heads, self.head_dim());
        let (k, v) = (self.project(&self.k_proj, k), self.project(&self.v_proj, v)); // [B, H, N, c]
        let q = match q {
            ImageQueries::Tokens(q) if !self.fold(n) => return self.attend(self.project(&self.q_proj, q), k, v),
            ImageQueries::Projected(q) if !self.fold(n) => return self.attend(q, k, v),
            q => q,
        };
        let scale = 1.0 / (ch as f64).sqrt();
        let attn = match q {
            ImageQueries::Projected(q) => {
                let [_, _, p, _] = q.dims();
                let scores = matmul::batched(q, k.swap_dims(2, 3)) * scale; // [B, H, P, N]
                softmax(scores, 3).swap_dims(1, 2).reshape([b, p, h * n])
            }
            ImageQueries::Tokens(q) => {
                let [_, p, _] = q.dims();
                let wq = per_batch(self.weight_by_head(&self.q_proj), b); // [B, H, C, c]
                let kt = k.swap_dims(2, 3); // [B, H, c, N]
                let g = matmul::batched(wq, kt.clone()).swap_dims(1, 2).reshape([b, c, h * n]); // [B, C, H·N]
                let bq = self.bias_by_head(&self.q_proj).expand([b, h, 1, ch]);
                let bias = matmul::batched(bq, kt).reshape([b, 1, h * n]);
                let scores = (matmul::batched(q, g) + bias) * scale; // [B, P, H·N]
                softmax(scores.reshape([b, p, h, n]), 3).reshape([b, p, h * n])
            }
        };
        let wo = per_batch(self.out_proj.weight.val().reshape([h, ch, c]), b); // [B, H, c, C]
        let u = matmul::batched(v, wo).reshape([b, h * n, c]); // [B, H·N, C]
        let bo = self.out_proj.bias.as_ref().expect("out_proj has a bias").val().reshape([1, 1, c]);
        matmul::batched(attn, u) + bo
    }
}

/// A weight `[H, X, Y]` repeated (as a view) for a batch of `b`: `[b, H, X, Y]`.
fn per_batch(w: Tensor<3>, b: usize) -> Tensor<4> {
    let [h, x, y] = w.dims();
    w.unsqueeze::<4>().expand([b, h, x, y])
}

/// The queries of image→token attention: image tokens `[B, P, C]`, or their projection by
/// head `[B, H, P, c]` computed once per image.
pub enum ImageQueries {
    Tokens(Tensor<3>),
    Projected(Tensor<4>),
}

/// Linear, ReLU, Linear.
#[derive(Module, Debug)]
pub struct MlpBlock {
    lin1: Linear,
    lin2: Linear,
}

impl MlpBlock {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        matmul::linear(&self.lin2, relu(matmul::linear(&self.lin1, x)))
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

    /// `queries [B, N, C]`, `keys [B, P, C]`, their positional encodings, and optionally the
    /// image-side projections of this block computed once per image (first block only: later
    /// blocks see keys the prompt has changed).
    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
        prepared: Option<&FirstBlockProjections>,
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
        // The image side: projected once per image, or the image tokens with their positional
        // encoding (keys of token→image attention, queries of image→token attention).
        enum Side<'a> {
            Prepared(&'a FirstBlockProjections),
            Tokens(Tensor<3>),
        }
        let side = match prepared {
            Some(p) => Side::Prepared(p),
            None => Side::Tokens(keys.clone() + key_pe),
        };
        let attn = match &side {
            Side::Prepared(p) => self.cross_attn_token_to_image.forward_projected_kv(q, p.k.clone(), p.v.clone()),
            Side::Tokens(k) => self.cross_attn_token_to_image.forward_to_image(q, k.clone(), keys.clone()),
        };
        let queries = self.norm2.forward(queries + attn);

        let queries = queries.clone() + self.mlp.forward(queries);
        let queries = self.norm3.forward(queries);

        let q = queries.clone() + query_pe;
        let image_queries = match side {
            Side::Prepared(p) => ImageQueries::Projected(p.q.clone()),
            Side::Tokens(k) => ImageQueries::Tokens(k),
        };
        let out = self.cross_attn_image_to_token.forward_from_image(image_queries, q, queries.clone());
        let keys = self.norm4.forward(keys + out);
        (queries, keys)
    }
}

/// The first block's image-side projections for one image (by head, `[1, H, P, c]`).
#[derive(Debug, Clone)]
pub struct FirstBlockProjections {
    /// Keys and values of token→image attention.
    k: Tensor<4>,
    v: Tensor<4>,
    /// Queries of image→token attention.
    q: Tensor<4>,
}

/// What the two-way transformer computes from the image alone, once per image, when there is
/// no mask prompt (the dense prompt is then the same learned vector everywhere): the image
/// tokens, and the first block's projections of them — about a third of the decoder's work.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// `[1, P, C]` image tokens: embedding + the no-mask embedding, channel-last.
    keys: Tensor<3>,
    /// `[1, P, C]` positional encoding of the image tokens, channel-last.
    key_pe: Tensor<3>,
    first: FirstBlockProjections,
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
        self.run(channels_last(image), channels_last(image_pe), tokens, None)
    }

    /// The image side of [`Self::forward`] for one image without a mask prompt:
    /// `image [1, C, H, W]` (embedding + no-mask embedding), `image_pe [1, C, H, W]`.
    pub fn prepare(&self, image: Tensor<4>, image_pe: Tensor<4>) -> PreparedImage {
        let keys = channels_last(image);
        let key_pe = channels_last(image_pe);
        let first = &self.layers[0];
        let k = keys.clone() + key_pe.clone();
        let (pk, pv) = first.cross_attn_token_to_image.project_kv(k.clone(), keys.clone());
        let pq = first.cross_attn_image_to_token.project_q(k);
        PreparedImage { keys, key_pe, first: FirstBlockProjections { k: pk, v: pv, q: pq } }
    }

    /// [`Self::forward`] for `tokens [B, N, C]` against a prepared image.
    pub fn forward_prepared(&self, image: &PreparedImage, tokens: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let b = tokens.dims()[0];
        let [_, p, c] = image.keys.dims();
        let batch = |x: &Tensor<3>| x.clone().expand([b, p, c]);
        let first = if b == 1 {
            image.first.clone()
        } else {
            let batch4 = |x: &Tensor<4>| {
                let [_, h, p, ch] = x.dims();
                x.clone().expand([b, h, p, ch])
            };
            FirstBlockProjections { k: batch4(&image.first.k), v: batch4(&image.first.v), q: batch4(&image.first.q) }
        };
        self.run(batch(&image.keys), batch(&image.key_pe), tokens, Some(&first))
    }

    /// The blocks and the final attention on channel-last image tokens.
    fn run(
        &self,
        keys: Tensor<3>,
        key_pe: Tensor<3>,
        tokens: Tensor<3>,
        first: Option<&FirstBlockProjections>,
    ) -> (Tensor<3>, Tensor<3>) {
        let mut queries = tokens.clone();
        let mut keys = keys;
        for (i, layer) in self.layers.iter().enumerate() {
            let prepared = if i == 0 { first } else { None };
            (queries, keys) = layer.forward(queries, keys, tokens.clone(), key_pe.clone(), prepared);
        }
        let q = queries.clone() + tokens;
        let k = keys.clone() + key_pe;
        let attn = self.final_attn_token_to_image.forward_to_image(q, k, keys.clone());
        (self.norm_final_attn.forward(queries + attn), keys)
    }
}

/// `[B, C, H, W]` → `[B, H·W, C]`, materialised once (the reshape of the transposed view
/// copies): every later op then reads contiguous memory instead of a strided view.
fn channels_last(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w])
        .swap_dims(1, 2)
        .reshape([b * h * w, c])
        .reshape([b, h * w, c])
}
