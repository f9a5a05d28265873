//! The whole model: image encoder, prompt encoder, mask decoder; loading, and conversion of
//! checkpoints into per-component files for the browser.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::{SamConfig, VitConfig};
use crate::error::{Result, SamError};
pub use crate::image_encoder::{ENCODER_PREFIX, ImageEncoder};
pub use crate::mask_decoder::PreparedImage;
use crate::mask_decoder::{DecoderOutput, MaskDecoder};
use crate::preprocess::ModelInput;
use crate::prompt_encoder::{Prompt, PromptEncoder};
use crate::weights::{StoreDType, TensorMap, sha256_hex, verify_sha256};

/// Key prefixes of the prompt encoder and mask decoder in checkpoints.
pub const DECODER_PREFIXES: [&str; 2] = ["prompt_encoder.", "mask_decoder."];

/// Prompt encoder + mask decoder: everything that runs per prompt. The browser can load this
/// part alone and take embeddings from elsewhere.
#[derive(Module, Debug)]
pub struct SamDecoder {
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
    /// Added to every mask logit: a calibration fitted on training data by `sonosam finetune
    /// --calibrate` (0 for the model's own decoder). Stored in the decoder file's safetensors
    /// metadata under [`MASK_LOGIT_BIAS_KEY`].
    pub mask_logit_bias: f32,
}

/// Safetensors metadata key of [`SamDecoder::mask_logit_bias`].
pub const MASK_LOGIT_BIAS_KEY: &str = "mask_logit_bias";

impl SamDecoder {
    pub fn load(config: &SamConfig, w: &TensorMap, device: &Device) -> Result<Self> {
        let d = Self {
            prompt_encoder: PromptEncoder::load(
                w,
                "prompt_encoder",
                &config.decoder,
                config.img_size(),
                device,
            )?,
            mask_decoder: MaskDecoder::load(w, "mask_decoder", &config.decoder, device)?,
            mask_logit_bias: match w.metadata().get(MASK_LOGIT_BIAS_KEY) {
                None => 0.0,
                Some(v) => v.trim().parse::<f32>().ok().filter(|b| b.is_finite()).ok_or_else(|| {
                    SamError::Invalid(format!("{MASK_LOGIT_BIAS_KEY} = {v:?} is not a number"))
                })?,
            },
        };
        for p in DECODER_PREFIXES {
            w.check_all_used(p)?;
        }
        Ok(d)
    }

    /// Decode prompts (in the model frame) against an embedding.
    ///
    /// - `embedding`: `[1 or B, 256, 64, 64]`
    /// - `prompts`: B prompts with the same number of tokens each
    /// - `mask_input`: optional `[B, 1, 256, 256]` low-res logits from an earlier decoding
    pub fn decode(
        &self,
        embedding: Tensor<4>,
        prompts: &[Prompt],
        mask_input: Option<Tensor<4>>,
        multimask: bool,
    ) -> Result<DecoderOutput> {
        let device = embedding.device();
        if prompts.iter().any(Prompt::is_empty) && mask_input.is_none() {
            return Err(SamError::Prompt(
                "nothing to segment: give a box, at least one point, or a mask".into(),
            ));
        }
        let b = prompts.len();
        if let Some(m) = &mask_input {
            let s = self.prompt_encoder.mask_input_size();
            if m.dims() != [b, 1, s, s] {
                return Err(SamError::Prompt(format!(
                    "mask prompt has shape {:?}, expected [{b}, 1, {s}, {s}]",
                    m.dims()
                )));
            }
        }
        let sparse = self.prompt_encoder.embed_sparse(prompts, &device)?;
        let dense = self.prompt_encoder.embed_dense(mask_input, b);
        let out = self.mask_decoder.forward(
            embedding,
            self.prompt_encoder.dense_pe(),
            sparse,
            dense,
            multimask,
        )?;
        Ok(self.calibrated(out))
    }

    /// The per-image part of decoding, done once for an embedding `[1, 256, 64, 64]`; then
    /// [`Self::decode_prepared`] answers each prompt without a mask with about a third less
    /// work (the same outputs as [`Self::decode`] up to rounding).
    pub fn prepare(&self, embedding: Tensor<4>) -> Result<PreparedImage> {
        let dense = self.prompt_encoder.embed_dense(None, 1);
        self.mask_decoder.prepare(embedding, self.prompt_encoder.dense_pe(), dense)
    }

    /// [`Self::decode`] without a mask prompt, against a prepared image.
    pub fn decode_prepared(&self, image: &PreparedImage, prompts: &[Prompt], multimask: bool) -> Result<DecoderOutput> {
        if prompts.is_empty() || prompts.iter().any(Prompt::is_empty) {
            return Err(SamError::Prompt(
                "nothing to segment: give a box or at least one point".into(),
            ));
        }
        let device = self.prompt_encoder.dense_pe().device();
        let sparse = self.prompt_encoder.embed_sparse(prompts, &device)?;
        let out = self.mask_decoder.forward_prepared(image, sparse, multimask)?;
        Ok(self.calibrated(out))
    }

    /// Apply the calibration bias.
    fn calibrated(&self, mut out: DecoderOutput) -> DecoderOutput {
        if self.mask_logit_bias != 0.0 {
            out.low_res_logits = out.low_res_logits.add_scalar(self.mask_logit_bias);
        }
        out
    }
}

/// The complete model.
#[derive(Debug)]
pub struct Sam {
    pub config: SamConfig,
    pub encoder: ImageEncoder,
    pub decoder: SamDecoder,
    pub device: Device,
}

impl Sam {
    /// Build from the encoder and decoder weights (the same map may serve both).
    pub fn load(
        config: SamConfig,
        encoder_weights: &TensorMap,
        decoder_weights: &TensorMap,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            encoder: ImageEncoder::load(encoder_weights, &config.encoder, device)?,
            decoder: SamDecoder::load(&config, decoder_weights, device)?,
            config,
            device: device.clone(),
        })
    }

    /// Stack preprocessed images into a `[B, 3, S, S]` tensor.
    pub fn input_tensor(&self, inputs: &[&ModelInput]) -> Tensor<4> {
        input_tensor(inputs, self.config.img_size(), &self.device)
    }

    /// Image embeddings `[B, 256, 64, 64]` of preprocessed images.
    pub fn encode(&self, inputs: &[&ModelInput]) -> Tensor<4> {
        self.encoder.forward(self.input_tensor(inputs))
    }
}

/// Stack preprocessed images into a `[B, 3, S, S]` tensor on `device`.
pub fn input_tensor(inputs: &[&ModelInput], size: usize, device: &Device) -> Tensor<4> {
    let mut data = Vec::with_capacity(inputs.len() * 3 * size * size);
    for i in inputs {
        data.extend_from_slice(&i.data);
    }
    Tensor::from_data(TensorData::new(data, [inputs.len(), 3, size, size]), device)
}

/// Which part of the model a converted file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The image encoder.
    ImageEncoder,
    /// Prompt encoder + mask decoder.
    Decoder,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::ImageEncoder => "image_encoder",
            Component::Decoder => "decoder",
        }
    }
}

/// One converted weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsFile {
    pub component: Component,
    /// `f32` or `f16`.
    pub dtype: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Describes a converted model: what each file holds and its hash, so clients can verify
/// downloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsManifest {
    pub model: String,
    pub config: SamConfig,
    /// SHA-256 of the checkpoint the files were converted from.
    pub source_sha256: String,
    pub files: Vec<WeightsFile>,
}

impl WeightsManifest {
    pub fn file(&self, component: Component, dtype: StoreDType) -> Option<&WeightsFile> {
        self.files
            .iter()
            .find(|f| f.component == component && f.dtype == dtype.suffix())
    }

    /// Check `bytes` against the manifest entry of `component`/`dtype` (size, SHA-256) and
    /// parse them.
    pub fn load_component(
        &self,
        component: Component,
        dtype: StoreDType,
        bytes: &[u8],
    ) -> Result<TensorMap> {
        let entry = self.file(component, dtype).ok_or_else(|| {
            SamError::Invalid(format!(
                "manifest of {} lists no {} {} file",
                self.model,
                dtype.suffix(),
                component.name()
            ))
        })?;
        if bytes.len() as u64 != entry.bytes {
            return Err(SamError::WeightsFormat {
                source_name: entry.file.clone(),
                message: format!(
                    "{} bytes, expected {} (truncated or wrong file)",
                    bytes.len(),
                    entry.bytes
                ),
            });
        }
        verify_sha256(bytes, &entry.sha256, &entry.file)?;
        TensorMap::from_safetensors(bytes, entry.file.clone())
    }

    /// Name of the manifest of model `id`.
    pub fn file_name(id: &str) -> String {
        format!("{id}.json")
    }
}

/// File name of a converted component.
pub fn weights_file_name(id: &str, component: Component, dtype: StoreDType) -> String {
    format!("{id}.{}.{}.safetensors", component.name(), dtype.suffix())
}

/// Split a full checkpoint into per-component safetensors files (f32 and f16), after checking
/// that the model can be built from it. Returns (file name, bytes) pairs and the manifest.
pub fn convert_checkpoint(
    all: &TensorMap,
    config: &SamConfig,
    source_sha256: &str,
    device: &Device,
) -> Result<(Vec<(String, Vec<u8>)>, WeightsManifest)> {
    // Build once: every key and shape is checked, and no tensor is left over.
    Sam::load(config.clone(), all, all, device)?;
    let mut outputs = Vec::new();
    let mut files = Vec::new();
    for component in [Component::ImageEncoder, Component::Decoder] {
        let prefixes: &[&str] = match component {
            Component::ImageEncoder => &[ENCODER_PREFIX],
            Component::Decoder => &DECODER_PREFIXES,
        };
        let mut part = all.subset(prefixes, component.name());
        part.set_metadata("model", config.id.clone());
        part.set_metadata("component", component.name());
        part.set_metadata("source_sha256", source_sha256);
        for dtype in [StoreDType::F32, StoreDType::F16, StoreDType::I8] {
            let bytes = part.to_safetensors(dtype)?;
            let file = weights_file_name(&config.id, component, dtype);
            files.push(WeightsFile {
                component,
                dtype: dtype.suffix().into(),
                file: file.clone(),
                bytes: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            });
            outputs.push((file, bytes));
        }
    }
    let manifest = WeightsManifest {
        model: config.id.clone(),
        config: config.clone(),
        source_sha256: source_sha256.into(),
        files,
    };
    Ok((outputs, manifest))
}

/// Work out which SAM a checkpoint holds from its keys and shapes: SAM ViT (any size; the
/// released B/L/H get their names), MobileSAM or LiteMedSAM. The model is then built from the
/// same map, which checks every tensor.
pub fn detect_config(w: &TensorMap) -> Result<SamConfig> {
    let shape = |key: &str| w.raw(key).map(|t| t.shape.clone());
    let bad = |message: String| SamError::WeightsFormat {
        source_name: w.source().to_string(),
        message,
    };
    if let Some(pe) = shape("image_encoder.patch_embed.proj.weight") {
        let [d, in_chans, patch, _] = pe[..] else {
            return Err(bad(format!("patch embedding weight has shape {pe:?}")));
        };
        let grid = shape("image_encoder.pos_embed")
            .and_then(|s| s.get(1).copied())
            .ok_or_else(|| bad("ViT checkpoint without image_encoder.pos_embed".into()))?;
        let depth = (0..)
            .take_while(|i| w.contains(&format!("image_encoder.blocks.{i}.norm1.weight")))
            .count();
        if depth == 0 {
            return Err(bad("ViT checkpoint without image_encoder.blocks.*".into()));
        }
        let windows: Vec<usize> = (0..depth)
            .map(|i| {
                shape(&format!("image_encoder.blocks.{i}.attn.rel_pos_h"))
                    .map(|s| s[0].div_ceil(2))
                    .ok_or_else(|| bad(format!("block {i} has no relative position table")))
            })
            .collect::<Result<_>>()?;
        let head_dim = shape("image_encoder.blocks.0.attn.rel_pos_h").map_or(0, |s| s[1]);
        let hidden = shape("image_encoder.blocks.0.mlp.lin1.weight").map_or(0, |s| s[0]);
        let out_chans = shape("image_encoder.neck.0.weight").map_or(0, |s| s[0]);
        if head_dim == 0 || d % head_dim != 0 || hidden % d != 0 {
            return Err(bad(format!(
                "inconsistent ViT shapes: embed {d}, head dim {head_dim}, MLP {hidden}"
            )));
        }
        let vit = VitConfig {
            img_size: grid * patch,
            patch_size: patch,
            in_chans,
            embed_dim: d,
            depth,
            num_heads: d / head_dim,
            mlp_ratio: hidden / d,
            window_size: windows.iter().copied().find(|&s| s != grid).unwrap_or(grid),
            global_attn_indexes: (0..depth).filter(|&i| windows[i] == grid).collect(),
            out_chans,
        };
        let id = [
            ("sam-vit-b", VitConfig::vit_b()),
            ("sam-vit-l", VitConfig::vit_l()),
            ("sam-vit-h", VitConfig::vit_h()),
        ]
        .into_iter()
        .find(|(_, c)| *c == vit)
        .map_or_else(|| format!("sam-vit-{d}x{depth}"), |(id, _)| id.to_string());
        return Ok(SamConfig::sam_vit(&id, vit));
    }
    if let Some(s) = shape("image_encoder.patch_embed.seq.0.c.weight") {
        let config = match s.get(2) {
            Some(1) => SamConfig::lite_medsam(),
            Some(3) => SamConfig::mobile_sam(),
            _ => return Err(bad(format!("TinyViT patch embedding with shape {s:?}"))),
        };
        return Ok(config);
    }
    Err(bad(
        "not a SAM checkpoint: no image_encoder.patch_embed tensor (expected SAM ViT-B/L/H, \
         MobileSAM or LiteMedSAM)"
            .into(),
    ))
}
