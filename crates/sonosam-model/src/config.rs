//! Model descriptions. The input frame and the normalisation are part of the model, so prompts
//! and post-processing follow from the configuration alone.

use serde::{Deserialize, Serialize};

/// How the TinyViT patch embedding reduces resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchEmbedKind {
    /// Two 1×1 Conv+BN, stride 1 (LiteMedSAM: 256² input, stage 0 at full resolution).
    Pointwise,
    /// Two 3×3 Conv+BN, stride 2 each (MobileSAM: 1024² input → 256²).
    Strided,
}

/// TinyViT image encoder configuration (MobileSAM / LiteMedSAM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TinyVitConfig {
    pub img_size: usize,
    pub in_chans: usize,
    pub embed_dims: [usize; 4],
    pub depths: [usize; 4],
    pub num_heads: [usize; 4],
    pub window_sizes: [usize; 4],
    pub mlp_ratio: usize,
    pub mbconv_expand_ratio: usize,
    pub local_conv_size: usize,
    pub patch_embed: PatchEmbedKind,
    /// Channels of the neck output (the embedding).
    pub out_chans: usize,
    /// Add the learned per-offset attention biases (TinyViT's `attention_biases`). `false`
    /// reproduces a PyTorch model whose cached eval-mode bias table `ab` was computed before
    /// the checkpoint was loaded (all zeros).
    #[serde(default = "default_true")]
    pub attention_biases: bool,
}

fn default_true() -> bool {
    true
}

impl TinyVitConfig {
    /// LiteMedSAM's distilled encoder.
    pub fn lite_medsam() -> Self {
        Self {
            img_size: 256,
            in_chans: 3,
            embed_dims: [64, 128, 160, 320],
            depths: [2, 2, 6, 2],
            num_heads: [2, 4, 5, 10],
            window_sizes: [7, 7, 14, 7],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
            local_conv_size: 3,
            patch_embed: PatchEmbedKind::Pointwise,
            out_chans: 256,
            attention_biases: true,
        }
    }

    /// MobileSAM's TinyViT-5M.
    pub fn mobile_sam() -> Self {
        Self {
            img_size: 1024,
            patch_embed: PatchEmbedKind::Strided,
            ..Self::lite_medsam()
        }
    }

    /// Side of the stage-0 feature map.
    pub fn patches_resolution(&self) -> usize {
        match self.patch_embed {
            PatchEmbedKind::Pointwise => self.img_size,
            PatchEmbedKind::Strided => self.img_size / 4,
        }
    }

    /// Input side of stage `i` (the last stage keeps the third stage's resolution: its
    /// patch merging uses stride 1 for output widths 320/448/576, as in the reference).
    pub fn stage_resolution(&self, i: usize) -> usize {
        let p = self.patches_resolution();
        let shift = if i == 3 { 2 } else { i };
        p >> shift
    }

    /// Stride of the depthwise conv in the patch merging after stage `i`.
    pub fn merging_stride(&self, i: usize) -> usize {
        let out = self.embed_dims[(i + 1).min(3)];
        if matches!(out, 320 | 448 | 576) { 1 } else { 2 }
    }
}

/// Which image encoder a model uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EncoderConfig {
    TinyVit(TinyVitConfig),
}

impl EncoderConfig {
    pub fn img_size(&self) -> usize {
        match self {
            EncoderConfig::TinyVit(c) => c.img_size,
        }
    }
}

/// Pixel normalisation applied to the resized image before padding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Normalization {
    /// MedSAM: `(x - min) / max(max - min, 1e-8)` over the whole resized image, x in 0..=255.
    MinMax,
    /// SAM: `(x - mean) / std` per channel, x in 0..=255.
    MeanStd { mean: [f32; 3], std: [f32; 3] },
}

/// Prompt encoder + mask decoder configuration (the same for every SAM variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub embed_dim: usize,
    /// Side of the image embedding grid (64).
    pub embedding_size: usize,
    pub mask_in_chans: usize,
    pub num_multimask_outputs: usize,
    pub transformer_depth: usize,
    pub transformer_mlp_dim: usize,
    pub transformer_heads: usize,
    pub attention_downsample_rate: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            embed_dim: 256,
            embedding_size: 64,
            mask_in_chans: 16,
            num_multimask_outputs: 3,
            transformer_depth: 2,
            transformer_mlp_dim: 2048,
            transformer_heads: 8,
            attention_downsample_rate: 2,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
        }
    }
}

/// A complete SAM description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamConfig {
    /// Short identifier (`litemedsam`, `mobilesam`, …).
    pub id: String,
    pub encoder: EncoderConfig,
    pub decoder: DecoderConfig,
    pub normalization: Normalization,
}

impl SamConfig {
    pub fn lite_medsam() -> Self {
        Self {
            id: "litemedsam".into(),
            encoder: EncoderConfig::TinyVit(TinyVitConfig::lite_medsam()),
            decoder: DecoderConfig::default(),
            normalization: Normalization::MinMax,
        }
    }

    pub fn mobile_sam() -> Self {
        Self {
            id: "mobilesam".into(),
            encoder: EncoderConfig::TinyVit(TinyVitConfig::mobile_sam()),
            decoder: DecoderConfig::default(),
            normalization: Normalization::MeanStd {
                mean: [123.675, 116.28, 103.53],
                std: [58.395, 57.12, 57.375],
            },
        }
    }

    /// The configuration that reproduces the published PyTorch reference outputs
    /// (`../shared/golden`, `../shared/reference`): TinyViT without its learned attention
    /// biases. The reference pipeline built its eval-mode bias cache before loading the
    /// checkpoint, so it ran with zero biases; the trained model (and MedSAM's own inference
    /// code) uses them, and is what sonosam runs by default.
    pub fn reference_compat(mut self) -> Self {
        match &mut self.encoder {
            EncoderConfig::TinyVit(c) => c.attention_biases = false,
        }
        self
    }

    /// Side of the square model input (the "frame" prompts are expressed in).
    pub fn img_size(&self) -> usize {
        self.encoder.img_size()
    }

    /// Side of the low-resolution mask logits (4 × the embedding grid).
    pub fn low_res_size(&self) -> usize {
        self.decoder.embedding_size * 4
    }
}
