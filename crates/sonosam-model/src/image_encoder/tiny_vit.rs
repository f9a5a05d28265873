//! TinyViT image encoder (MobileSAM, LiteMedSAM). Image `[B, 3, S, S]` → embedding
//! `[B, 256, 64, 64]`.
//!
//! Stage 0 is convolutional (MBConv blocks), stages 1–3 are windowed-attention transformer
//! blocks with a depthwise "local conv" between attention and MLP. Conv+BatchNorm pairs are
//! folded into single convolutions when the weights are loaded.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use crate::{depthwise, matmul};
use crate::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use super::{Neck, window_partition, window_unpartition};
use crate::common::{ConvSpec, conv2d_bn, layer_norm, linear};
use crate::config::{PatchEmbedKind, TinyVitConfig};
use crate::error::Result;
use crate::weights::TensorMap;

/// Two Conv+BN with a GELU between: `[B, 3, S, S]` → `[B, C0, P, P]`.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl PatchEmbed {
    fn load(w: &TensorMap, p: &str, c: &TinyVitConfig, device: &Device) -> Result<Self> {
        let n = c.embed_dims[0];
        let (k, s, pad) = match c.patch_embed {
            PatchEmbedKind::Pointwise => (1, 1, 0),
            PatchEmbedKind::Strided => (3, 2, 1),
        };
        let spec = |i, o| ConvSpec::new(i, o, k).stride(s).padding(pad);
        Ok(Self {
            conv1: conv2d_bn(w, &format!("{p}.seq.0"), spec(c.in_chans, n / 2), device)?,
            conv2: conv2d_bn(w, &format!("{p}.seq.2"), spec(n / 2, n), device)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        matmul::conv2d(&self.conv2, matmul::conv2d_gelu(&self.conv1, x))
    }
}

/// Inverted residual block: 1×1 expand, 3×3 depthwise, 1×1 project, residual, GELU.
/// `[B, C, H, W]` → `[B, C, H, W]`.
#[derive(Module, Debug)]
pub struct MbConv {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
}

impl MbConv {
    fn load(w: &TensorMap, p: &str, dim: usize, expand: usize, device: &Device) -> Result<Self> {
        let hidden = dim * expand;
        Ok(Self {
            conv1: conv2d_bn(w, &format!("{p}.conv1"), ConvSpec::new(dim, hidden, 1), device)?,
            conv2: conv2d_bn(
                w,
                &format!("{p}.conv2"),
                ConvSpec::new(hidden, hidden, 3).padding(1).groups(hidden),
                device,
            )?,
            conv3: conv2d_bn(w, &format!("{p}.conv3"), ConvSpec::new(hidden, dim, 1), device)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = x.clone();
        let x = matmul::conv2d_gelu(&self.conv1, x);
        let x = matmul::conv2d_gelu(&self.conv2, x);
        let x = matmul::conv2d(&self.conv3, x);
        gelu(x + shortcut)
    }
}

/// Downsampling between stages: 1×1, depthwise 3×3 (stride 2, or 1 before the last stage),
/// 1×1. `[B, C, H, W]` → tokens `[B, H'·W', C']`.
#[derive(Module, Debug)]
pub struct PatchMerging {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
}

impl PatchMerging {
    fn load(
        w: &TensorMap,
        p: &str,
        dim: usize,
        out: usize,
        stride: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            conv1: conv2d_bn(w, &format!("{p}.conv1"), ConvSpec::new(dim, out, 1), device)?,
            conv2: conv2d_bn(
                w,
                &format!("{p}.conv2"),
                ConvSpec::new(out, out, 3).stride(stride).padding(1).groups(out),
                device,
            )?,
            conv3: conv2d_bn(w, &format!("{p}.conv3"), ConvSpec::new(out, out, 1), device)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let x = matmul::conv2d_gelu(&self.conv1, x);
        let x = matmul::conv2d_gelu(&self.conv2, x);
        let x = matmul::conv2d(&self.conv3, x);
        let [b, c, h, w] = x.dims();
        x.reshape([b, c, h * w]).swap_dims(1, 2)
    }
}

/// TinyViT's relative-position bias index: offsets `(|dy|, |dx|)` between the cells of a
/// `window × window` grid, numbered in order of first appearance. Returns the number of
/// distinct offsets and the `[N, N]` index table (row-major, `N = window²`).
pub fn relative_offset_index(window: usize) -> (usize, Vec<usize>) {
    let points: Vec<(usize, usize)> = (0..window)
        .flat_map(|y| (0..window).map(move |x| (y, x)))
        .collect();
    let mut number = vec![usize::MAX; window * window];
    let mut count = 0;
    let mut idxs = Vec::with_capacity(points.len() * points.len());
    for p1 in &points {
        for p2 in &points {
            let key = p1.0.abs_diff(p2.0) * window + p1.1.abs_diff(p2.1);
            if number[key] == usize::MAX {
                number[key] = count;
                count += 1;
            }
            idxs.push(number[key]);
        }
    }
    (count, idxs)
}

/// Multi-head self-attention inside a window, with a learned bias per head and relative
/// offset. Tokens `[B', N, C]` → `[B', N, C]` with `N = window²`.
#[derive(Module, Debug)]
pub struct Attention {
    norm: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// The bias table expanded to `[heads, N, N]` (derived from `attention_biases`).
    bias: Param<Tensor<3>>,
    num_heads: usize,
    key_dim: usize,
}

impl Attention {
    fn load(
        w: &TensorMap,
        p: &str,
        dim: usize,
        num_heads: usize,
        window: usize,
        use_biases: bool,
        device: &Device,
    ) -> Result<Self> {
        let key_dim = dim / num_heads;
        let (num_offsets, idxs) = relative_offset_index(window);
        let n = window * window;
        let table = w.get(&format!("{p}.attention_biases"), &[num_heads, num_offsets])?;
        let mut expanded = Vec::with_capacity(num_heads * n * n);
        for h in 0..num_heads {
            let row = &table.data[h * num_offsets..(h + 1) * num_offsets];
            expanded.extend(idxs.iter().map(|&i| if use_biases { row[i] } else { 0.0 }));
        }
        w.ignore(&format!("{p}.attention_bias_idxs"));
        let bias = Tensor::from_data(TensorData::new(expanded, [num_heads, n, n]), device);
        Ok(Self {
            norm: layer_norm(w, &format!("{p}.norm"), dim, 1e-5, device)?,
            qkv: linear(w, &format!("{p}.qkv"), dim, 3 * dim, device)?,
            proj: linear(w, &format!("{p}.proj"), dim, dim, device)?,
            bias: Param::from_tensor(bias).set_require_grad(false),
            num_heads,
            key_dim,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = x.dims();
        let (h, kd) = (self.num_heads, self.key_dim);
        let qkv = matmul::linear(&self.qkv, self.norm.forward(x));
        let scale = (kd as f64).powf(-0.5);
        let out = if matmul::runs_here(&qkv) {
            matmul::window_attention(qkv, h, scale as f32, self.bias.val())
        } else {
            let qkv = qkv.reshape([b, n, h, 3 * kd]);
            let q = qkv.clone().narrow(3, 0, kd).swap_dims(1, 2);
            let k = qkv.clone().narrow(3, kd, kd).swap_dims(1, 2);
            let v = qkv.narrow(3, 2 * kd, kd).swap_dims(1, 2);
            let attn = q.matmul(k.swap_dims(2, 3)) * scale + self.bias.val().unsqueeze::<4>();
            let attn = softmax(attn, 3);
            attn.matmul(v).swap_dims(1, 2).reshape([b, n, c])
        };
        matmul::linear(&self.proj, out)
    }
}

/// Pre-norm MLP of a TinyViT block: LayerNorm, fc1, GELU, fc2.
#[derive(Module, Debug)]
pub struct TinyMlp {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl TinyMlp {
    fn load(w: &TensorMap, p: &str, dim: usize, hidden: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            norm: layer_norm(w, &format!("{p}.norm"), dim, 1e-5, device)?,
            fc1: linear(w, &format!("{p}.fc1"), dim, hidden, device)?,
            fc2: linear(w, &format!("{p}.fc2"), hidden, dim, device)?,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = matmul::linear_gelu(&self.fc1, self.norm.forward(x));
        matmul::linear(&self.fc2, hidden)
    }
}

/// Windowed attention + local depthwise conv + MLP, all residual.
/// Tokens `[B, H·W, C]` → `[B, H·W, C]`.
#[derive(Module, Debug)]
pub struct TinyVitBlock {
    attn: Attention,
    local_conv: Conv2d,
    mlp: TinyMlp,
    resolution: usize,
    window: usize,
}

impl TinyVitBlock {
    fn load(
        w: &TensorMap,
        p: &str,
        c: &TinyVitConfig,
        stage: usize,
        device: &Device,
    ) -> Result<Self> {
        let dim = c.embed_dims[stage];
        let window = c.window_sizes[stage];
        let k = c.local_conv_size;
        Ok(Self {
            attn: Attention::load(
                w,
                &format!("{p}.attn"),
                dim,
                c.num_heads[stage],
                window,
                c.attention_biases,
                device,
            )?,
            local_conv: conv2d_bn(
                w,
                &format!("{p}.local_conv"),
                ConvSpec::new(dim, dim, k).padding(k / 2).groups(dim),
                device,
            )?,
            mlp: TinyMlp::load(w, &format!("{p}.mlp"), dim, dim * c.mlp_ratio, device)?,
            resolution: c.stage_resolution(stage),
            window,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (hw, ws) = (self.resolution, self.window);
        let [b, l, c] = x.dims();
        let shortcut = x.clone();
        let x = if hw == ws {
            self.attn.forward(x)
        } else {
            let (windows, padded) = window_partition(x.reshape([b, hw, hw, c]), ws);
            let out = self.attn.forward(windows);
            window_unpartition(out, ws, padded, (hw, hw)).reshape([b, l, c])
        };
        let x = depthwise::tokens(&self.local_conv, shortcut + x, (hw, hw));
        x.clone() + self.mlp.forward(x)
    }
}

/// Stage 0: MBConv blocks then patch merging. `[B, C0, P, P]` → tokens `[B, (P/2)², C1]`.
#[derive(Module, Debug)]
pub struct ConvStage {
    blocks: Vec<MbConv>,
    downsample: PatchMerging,
}

/// Stages 1–3: TinyViT blocks, then patch merging except after the last stage.
#[derive(Module, Debug)]
pub struct AttentionStage {
    blocks: Vec<TinyVitBlock>,
    downsample: Option<PatchMerging>,
    resolution: usize,
}

impl AttentionStage {
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for block in &self.blocks {
            x = block.forward(x);
        }
        match &self.downsample {
            Some(down) => {
                let [b, _, c] = x.dims();
                let r = self.resolution;
                let grid = x.reshape([b, r, r, c]).permute([0, 3, 1, 2]);
                down.forward(grid)
            }
            None => x,
        }
    }
}

/// Intermediate activations of the encoder, for parity checks against the reference.
pub struct EncoderTrace {
    /// `[B, C0, P, P]` (TinyViT) or `[B, C, 64, 64]` with the absolute position embedding
    /// added (ViT).
    pub patch_embed: Tensor<4>,
    /// Output tokens of each stage (TinyViT) or block (ViT), `[B, L_i, C_i]`.
    pub layers: Vec<Tensor<3>>,
    /// `[B, 256, 64, 64]`.
    pub embedding: Tensor<4>,
}

/// The TinyViT image encoder.
#[derive(Module, Debug)]
pub struct TinyVit {
    patch_embed: PatchEmbed,
    stage0: ConvStage,
    stages: Vec<AttentionStage>,
    neck: Neck,
    img_size: usize,
}

impl TinyVit {
    /// Build from `{prefix}.*` tensors in the official TinyViT/MobileSAM key layout.
    pub fn load(w: &TensorMap, prefix: &str, c: &TinyVitConfig, device: &Device) -> Result<Self> {
        let patch_embed = PatchEmbed::load(w, &format!("{prefix}.patch_embed"), c, device)?;
        let l0 = format!("{prefix}.layers.0");
        let blocks = (0..c.depths[0])
            .map(|i| {
                MbConv::load(
                    w,
                    &format!("{l0}.blocks.{i}"),
                    c.embed_dims[0],
                    c.mbconv_expand_ratio,
                    device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let stage0 = ConvStage {
            blocks,
            downsample: PatchMerging::load(
                w,
                &format!("{l0}.downsample"),
                c.embed_dims[0],
                c.embed_dims[1],
                c.merging_stride(0),
                device,
            )?,
        };
        let mut stages = Vec::new();
        for s in 1..4 {
            let p = format!("{prefix}.layers.{s}");
            let blocks = (0..c.depths[s])
                .map(|i| TinyVitBlock::load(w, &format!("{p}.blocks.{i}"), c, s, device))
                .collect::<Result<Vec<_>>>()?;
            let downsample = if s < 3 {
                Some(PatchMerging::load(
                    w,
                    &format!("{p}.downsample"),
                    c.embed_dims[s],
                    c.embed_dims[s + 1],
                    c.merging_stride(s),
                    device,
                )?)
            } else {
                None
            };
            stages.push(AttentionStage {
                blocks,
                downsample,
                resolution: c.stage_resolution(s),
            });
        }
        let neck = Neck::load(w, &format!("{prefix}.neck"), c.embed_dims[3], c.out_chans, device)?;
        Ok(Self {
            patch_embed,
            stage0,
            stages,
            neck,
            img_size: c.img_size,
        })
    }

    /// `[B, 3, S, S]` → `[B, 256, 64, 64]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_trace(x).embedding
    }

    /// Forward pass keeping the intermediates of every stage.
    pub fn forward_trace(&self, x: Tensor<4>) -> EncoderTrace {
        let patch_embed = self.patch_embed.forward(x);
        let mut grid = patch_embed.clone();
        for block in &self.stage0.blocks {
            grid = block.forward(grid);
        }
        let mut tokens = self.stage0.downsample.forward(grid);
        let mut layers = vec![tokens.clone()];
        for stage in &self.stages {
            tokens = stage.forward(tokens);
            layers.push(tokens.clone());
        }
        let [b, l, c] = tokens.dims();
        let side = (l as f64).sqrt() as usize;
        let grid = tokens.reshape([b, side, side, c]).permute([0, 3, 1, 2]);
        EncoderTrace {
            patch_embed,
            layers,
            embedding: self.neck.forward(grid),
        }
    }

    pub fn img_size(&self) -> usize {
        self.img_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_offsets_follow_tinyvit_numbering() {
        let (n, idx) = relative_offset_index(2);
        assert_eq!(n, 4);
        assert_eq!(idx, vec![0, 1, 2, 3, 1, 0, 3, 2, 2, 3, 0, 1, 3, 2, 1, 0]);
        assert_eq!(relative_offset_index(7).0, 49);
        assert_eq!(relative_offset_index(14).0, 196);
    }
}
