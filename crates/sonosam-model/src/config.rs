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

/// SAM's plain ViT image encoder configuration (`ImageEncoderViT`: ViT-B/L/H).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: usize,
    /// Side of the attention windows of the non-global blocks.
    pub window_size: usize,
    /// Blocks that attend over the whole 64×64 grid.
    pub global_attn_indexes: Vec<usize>,
    /// Channels of the neck output (the embedding).
    pub out_chans: usize,
}

impl VitConfig {
    fn sam(embed_dim: usize, depth: usize, num_heads: usize, global: [usize; 4]) -> Self {
        Self {
            img_size: 1024,
            patch_size: 16,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4,
            window_size: 14,
            global_attn_indexes: global.to_vec(),
            out_chans: 256,
        }
    }

    /// SAM ViT-B (`sam_vit_b_01ec64.pth`).
    pub fn vit_b() -> Self {
        Self::sam(768, 12, 12, [2, 5, 8, 11])
    }

    /// SAM ViT-L (`sam_vit_l_0b3195.pth`).
    pub fn vit_l() -> Self {
        Self::sam(1024, 24, 16, [5, 11, 17, 23])
    }

    /// SAM ViT-H (`sam_vit_h_4b8939.pth`).
    pub fn vit_h() -> Self {
        Self::sam(1280, 32, 16, [7, 15, 23, 31])
    }

    /// Side of the patch grid (64 for every released SAM).
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Attention window side of block `i` (the whole grid for global blocks).
    pub fn block_window(&self, i: usize) -> usize {
        if self.global_attn_indexes.contains(&i) {
            self.grid_size()
        } else {
            self.window_size
        }
    }
}

/// Which image encoder a model uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EncoderConfig {
    TinyVit(TinyVitConfig),
    Vit(VitConfig),
}

impl EncoderConfig {
    pub fn img_size(&self) -> usize {
        match self {
            EncoderConfig::TinyVit(c) => c.img_size,
            EncoderConfig::Vit(c) => c.img_size,
        }
    }
}

/// How the image is resized so its longest side fits the frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeKind {
    /// OpenCV `INTER_AREA` (MedSAM / LiteMedSAM).
    #[default]
    Area,
    /// PIL bilinear with antialiasing (SAM's `ResizeLongestSide`, MobileSAM).
    PilBilinear,
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
    #[serde(default)]
    pub resize: ResizeKind,
    pub normalization: Normalization,
}

/// SAM's pixel statistics (ImageNet, 0..=255 scale).
pub const SAM_PIXEL_NORM: Normalization = Normalization::MeanStd {
    mean: [123.675, 116.28, 103.53],
    std: [58.395, 57.12, 57.375],
};

/// Names accepted by [`SamConfig::by_name`].
pub const MODEL_NAMES: [&str; 5] = ["litemedsam", "mobilesam", "sam-vit-b", "sam-vit-l", "sam-vit-h"];

impl SamConfig {
    pub fn lite_medsam() -> Self {
        Self {
            id: "litemedsam".into(),
            encoder: EncoderConfig::TinyVit(TinyVitConfig::lite_medsam()),
            decoder: DecoderConfig::default(),
            resize: ResizeKind::Area,
            normalization: Normalization::MinMax,
        }
    }

    /// MobileSAM (`mobile_sam.pt`): TinyViT at 1024 with SAM's preprocessing.
    pub fn mobile_sam() -> Self {
        Self {
            id: "mobilesam".into(),
            encoder: EncoderConfig::TinyVit(TinyVitConfig::mobile_sam()),
            decoder: DecoderConfig::default(),
            resize: ResizeKind::PilBilinear,
            normalization: SAM_PIXEL_NORM,
        }
    }

    /// A SAM with a plain ViT encoder and SAM's preprocessing.
    pub fn sam_vit(id: &str, vit: VitConfig) -> Self {
        Self {
            id: id.into(),
            encoder: EncoderConfig::Vit(vit),
            decoder: DecoderConfig::default(),
            resize: ResizeKind::PilBilinear,
            normalization: SAM_PIXEL_NORM,
        }
    }

    pub fn sam_vit_b() -> Self {
        Self::sam_vit("sam-vit-b", VitConfig::vit_b())
    }

    pub fn sam_vit_l() -> Self {
        Self::sam_vit("sam-vit-l", VitConfig::vit_l())
    }

    pub fn sam_vit_h() -> Self {
        Self::sam_vit("sam-vit-h", VitConfig::vit_h())
    }

    /// One of [`MODEL_NAMES`].
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "litemedsam" => Some(Self::lite_medsam()),
            "mobilesam" => Some(Self::mobile_sam()),
            "sam-vit-b" => Some(Self::sam_vit_b()),
            "sam-vit-l" => Some(Self::sam_vit_l()),
            "sam-vit-h" => Some(Self::sam_vit_h()),
            _ => None,
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
            EncoderConfig::Vit(_) => {}
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
