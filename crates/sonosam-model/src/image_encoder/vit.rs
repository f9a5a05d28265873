//! SAM's ViT image encoder (`ImageEncoderViT`, ViT-B/L/H). Image `[B, 3, 1024, 1024]` →
//! embedding `[B, 256, 64, 64]`.
//!
//! A 16×16 patch embedding with an absolute position embedding, then pre-norm transformer
//! blocks over the 64×64 grid: most attend inside 14×14 windows (the grid zero-padded to 70×70),
//! a few (`global_attn_indexes`) over the whole grid; every attention adds decomposed relative
//! position embeddings (one table per axis). The neck is shared with TinyViT.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use crate::matmul;
use crate::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::{EncoderTrace, Neck, window_partition, window_unpartition};
use crate::common::{ConvSpec, conv2d, layer_norm, linear};
use crate::config::VitConfig;
use crate::error::{Result, SamError};
use crate::weights::TensorMap;

/// Epsilon of the blocks' LayerNorms in SAM (`partial(nn.LayerNorm, eps=1e-6)`).
const LN_EPS: f64 = 1e-6;

/// Relative position embeddings of one axis gathered for a `size`-long query and key axis:
/// `R[i, :, j] = rel_pos[i - j + size - 1]`, returned as `[size, head_dim, size]` (transposed
/// for the matmul). `rel_pos` is `[2·size − 1, head_dim]`, row-major.
pub fn gather_rel_pos(rel_pos: &[f32], size: usize, head_dim: usize) -> Vec<f32> {
    let mut out = vec![0f32; size * head_dim * size];
    for i in 0..size {
        for j in 0..size {
            let row = &rel_pos[(i + size - 1 - j) * head_dim..][..head_dim];
            for (c, v) in row.iter().enumerate() {
                out[(i * head_dim + c) * size + j] = *v;
            }
        }
    }
    out
}

/// Multi-head attention with decomposed relative positions over a `size × size` grid of
/// tokens: `[B', size², C]` → `[B', size², C]`.
#[derive(Module, Debug)]
pub struct RelPosAttention {
    qkv: Linear,
    proj: Linear,
    /// `[size, head_dim, size]` gathered height table (frozen).
    rel_h: Param<Tensor<3>>,
    /// `[size, head_dim, size]` gathered width table (frozen).
    rel_w: Param<Tensor<3>>,
    num_heads: usize,
    size: usize,
}

impl RelPosAttention {
    fn load(
        w: &TensorMap,
        p: &str,
        dim: usize,
        num_heads: usize,
        size: usize,
        device: &Device,
    ) -> Result<Self> {
        let hd = dim / num_heads;
        let table = |axis: &str| -> Result<Param<Tensor<3>>> {
            let t = w.get(&format!("{p}.rel_pos_{axis}"), &[2 * size - 1, hd])?;
            let data = gather_rel_pos(&t.data, size, hd);
            let t = w.to_device(TensorData::new(data, [size, hd, size]), device);
            Ok(Param::from_tensor(t).set_require_grad(false))
        };
        Ok(Self {
            qkv: linear(w, &format!("{p}.qkv"), dim, 3 * dim, device)?,
            proj: linear(w, &format!("{p}.proj"), dim, dim, device)?,
            rel_h: table("h")?,
            rel_w: table("w")?,
            num_heads,
            size,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = x.dims();
        let (heads, s) = (self.num_heads, self.size);
        let hd = c / heads;
        let qkv = matmul::linear(&self.qkv, x).reshape([b, n, 3, heads, hd]);
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i, 1)
                .reshape([b, n, heads, hd])
                .swap_dims(1, 2)
                .reshape([b * heads, n, hd])
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let scale = (hd as f64).powf(-0.5);
        let attn = (q.clone() * scale).matmul(k.swap_dims(1, 2));

        // Decomposed relative positions, from the unscaled queries `[B·h, s, s, hd]`:
        // rel_h[b, y, x, ky] = q[b, y, x] · Rh[y, ky], rel_w[b, y, x, kx] = q[b, y, x] · Rw[x, kx].
        let bh = b * heads;
        let r_q = q.reshape([bh, s, s, hd]);
        let rel_h = r_q
            .clone()
            .permute([1, 0, 2, 3])
            .reshape([s, bh * s, hd])
            .matmul(self.rel_h.val())
            .reshape([s, bh, s, s])
            .permute([1, 0, 2, 3]);
        let rel_w = r_q
            .permute([2, 0, 1, 3])
            .reshape([s, bh * s, hd])
            .matmul(self.rel_w.val())
            .reshape([s, bh, s, s])
            .permute([1, 2, 0, 3]);
        let attn = attn.reshape([bh, s, s, s, s])
            + rel_h.unsqueeze_dim::<5>(4)
            + rel_w.unsqueeze_dim::<5>(3);
        let attn = softmax(attn.reshape([bh, n, n]), 2);
        let out = attn
            .matmul(v)
            .reshape([b, heads, n, hd])
            .swap_dims(1, 2)
            .reshape([b, n, c]);
        matmul::linear(&self.proj, out)
    }
}

/// MLP of a ViT block: lin1, GELU, lin2.
#[derive(Module, Debug)]
pub struct MlpBlock {
    lin1: Linear,
    lin2: Linear,
}

impl MlpBlock {
    fn load(w: &TensorMap, p: &str, dim: usize, hidden: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            lin1: linear(w, &format!("{p}.lin1"), dim, hidden, device)?,
            lin2: linear(w, &format!("{p}.lin2"), hidden, dim, device)?,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        matmul::linear(&self.lin2, matmul::linear_gelu(&self.lin1, x))
    }
}

/// Pre-norm transformer block with windowed (or global) attention.
/// Grid `[B, H, W, C]` → `[B, H, W, C]`.
#[derive(Module, Debug)]
pub struct VitBlock {
    norm1: LayerNorm,
    attn: RelPosAttention,
    norm2: LayerNorm,
    mlp: MlpBlock,
    /// Window side; equal to the grid side for global attention.
    window: usize,
}

impl VitBlock {
    fn load(w: &TensorMap, p: &str, c: &VitConfig, i: usize, device: &Device) -> Result<Self> {
        let dim = c.embed_dim;
        let window = c.block_window(i);
        Ok(Self {
            norm1: layer_norm(w, &format!("{p}.norm1"), dim, LN_EPS, device)?,
            attn: RelPosAttention::load(w, &format!("{p}.attn"), dim, c.num_heads, window, device)?,
            norm2: layer_norm(w, &format!("{p}.norm2"), dim, LN_EPS, device)?,
            mlp: MlpBlock::load(w, &format!("{p}.mlp"), dim, dim * c.mlp_ratio, device)?,
            window,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, c] = x.dims();
        let shortcut = x.clone();
        let x = self.norm1.forward(x);
        let x = if h == self.window && w == self.window {
            self.attn
                .forward(x.reshape([b, h * w, c]))
                .reshape([b, h, w, c])
        } else {
            let (windows, padded) = window_partition(x, self.window);
            window_unpartition(self.attn.forward(windows), self.window, padded, (h, w))
        };
        let x = shortcut + x;
        x.clone() + self.mlp.forward(self.norm2.forward(x.reshape([b, h * w, c]))).reshape([b, h, w, c])
    }
}

/// SAM's ViT image encoder.
#[derive(Module, Debug)]
pub struct ImageEncoderViT {
    patch_embed: Conv2d,
    /// `[1, 64, 64, C]` absolute position embedding.
    pos_embed: Param<Tensor<4>>,
    blocks: Vec<VitBlock>,
    neck: Neck,
    img_size: usize,
}

impl ImageEncoderViT {
    /// Build from `{prefix}.*` tensors in the official SAM key layout.
    pub fn load(w: &TensorMap, prefix: &str, c: &VitConfig, device: &Device) -> Result<Self> {
        if c.embed_dim % c.num_heads != 0 || c.img_size % c.patch_size != 0 {
            return Err(SamError::Invalid(format!(
                "invalid ViT configuration: embed dim {} / {} heads, image {} / patch {}",
                c.embed_dim, c.num_heads, c.img_size, c.patch_size
            )));
        }
        let g = c.grid_size();
        let patch_embed = conv2d(
            w,
            &format!("{prefix}.patch_embed.proj"),
            ConvSpec::new(c.in_chans, c.embed_dim, c.patch_size).stride(c.patch_size),
            true,
            device,
        )?;
        let pos_embed = Param::from_tensor(w.tensor(
            &format!("{prefix}.pos_embed"),
            [1, g, g, c.embed_dim],
            device,
        )?)
        .set_require_grad(false);
        let blocks = (0..c.depth)
            .map(|i| VitBlock::load(w, &format!("{prefix}.blocks.{i}"), c, i, device))
            .collect::<Result<Vec<_>>>()?;
        let neck = Neck::load(w, &format!("{prefix}.neck"), c.embed_dim, c.out_chans, device)?;
        Ok(Self {
            patch_embed,
            pos_embed,
            blocks,
            neck,
            img_size: c.img_size,
        })
    }

    /// `[B, 3, S, S]` → `[B, 256, S/16, S/16]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.embed(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.neck.forward(x.permute([0, 3, 1, 2]))
    }

    /// Patch embedding plus position embedding, as a `[B, H, W, C]` grid.
    fn embed(&self, x: Tensor<4>) -> Tensor<4> {
        self.patch_embed.forward(x).permute([0, 2, 3, 1]) + self.pos_embed.val()
    }

    /// Forward pass keeping every block's output.
    pub fn forward_trace(&self, x: Tensor<4>) -> EncoderTrace {
        let mut x = self.embed(x);
        let patch_embed = x.clone().permute([0, 3, 1, 2]);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(x);
            let [b, h, w, c] = x.dims();
            layers.push(x.clone().reshape([b, h * w, c]));
        }
        EncoderTrace {
            patch_embed,
            layers,
            embedding: self.neck.forward(x.permute([0, 3, 1, 2])),
        }
    }

    pub fn img_size(&self) -> usize {
        self.img_size
    }
}

/// Every tensor of a ViT encoder under `prefix` with its shape, in the official checkpoint
/// layout (the model zoo tests build ViT-B/L/H from random weights with it).
pub fn checkpoint_shapes(c: &VitConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let (d, g, hd) = (c.embed_dim, c.grid_size(), c.embed_dim / c.num_heads);
    let mut v = vec![
        (format!("{prefix}.pos_embed"), vec![1, g, g, d]),
        (format!("{prefix}.patch_embed.proj.weight"), vec![d, c.in_chans, c.patch_size, c.patch_size]),
        (format!("{prefix}.patch_embed.proj.bias"), vec![d]),
    ];
    for i in 0..c.depth {
        let p = format!("{prefix}.blocks.{i}");
        let r = 2 * c.block_window(i) - 1;
        let hidden = d * c.mlp_ratio;
        for (name, shape) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attn.rel_pos_h", vec![r, hd]),
            ("attn.rel_pos_w", vec![r, hd]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.qkv.bias", vec![3 * d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.lin1.weight", vec![hidden, d]),
            ("mlp.lin1.bias", vec![hidden]),
            ("mlp.lin2.weight", vec![d, hidden]),
            ("mlp.lin2.bias", vec![d]),
        ] {
            v.push((format!("{p}.{name}"), shape));
        }
    }
    let o = c.out_chans;
    v.extend([
        (format!("{prefix}.neck.0.weight"), vec![o, d, 1, 1]),
        (format!("{prefix}.neck.1.weight"), vec![o]),
        (format!("{prefix}.neck.1.bias"), vec![o]),
        (format!("{prefix}.neck.2.weight"), vec![o, o, 3, 3]),
        (format!("{prefix}.neck.3.weight"), vec![o]),
        (format!("{prefix}.neck.3.bias"), vec![o]),
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_pos_gather_matches_sam_indexing() {
        // rel_pos rows hold their own index; R[i, :, j] must be row i - j + size - 1.
        let (size, hd) = (3, 2);
        let rel: Vec<f32> = (0..2 * size - 1).flat_map(|r| [r as f32; 2]).collect();
        let out = gather_rel_pos(&rel, size, hd);
        for i in 0..size {
            for j in 0..size {
                for c in 0..hd {
                    assert_eq!(out[(i * hd + c) * size + j], (i + size - 1 - j) as f32);
                }
            }
        }
    }

    #[test]
    fn checkpoint_shapes_count_vit_b_parameters() {
        let n: usize = checkpoint_shapes(&VitConfig::vit_b(), "e")
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // SAM ViT-B image encoder: 89.67 M parameters.
        assert_eq!(n, 89_670_912);
    }
}
