//! The whole model — image encoder, prompt encoder, mask decoder — and the part that runs per
//! prompt ([`SamDecoder`]), built from weights.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::SamConfig;
use crate::error::{Result, SamError};
pub use crate::image_encoder::{ENCODER_PREFIX, ImageEncoder};
pub use crate::mask_decoder::PreparedImage;
use crate::mask_decoder::{DecoderOutput, MaskDecoder};
use crate::preprocess::ModelInput;
use crate::prompt_encoder::{Prompt, PromptEncoder};
use crate::weights::TensorMap;

/// Key prefix of the prompt encoder in checkpoints.
pub const PROMPT_ENCODER_PREFIX: &str = "prompt_encoder.";
/// Key prefix of the mask decoder in checkpoints.
pub const MASK_DECODER_PREFIX: &str = "mask_decoder.";
/// Key prefixes of the prompt encoder and mask decoder in checkpoints.
pub const DECODER_PREFIXES: [&str; 2] = [PROMPT_ENCODER_PREFIX, MASK_DECODER_PREFIX];

/// Prompt encoder + mask decoder: everything that runs per prompt. The browser can load this
/// part alone and take embeddings from elsewhere.
#[derive(Module, Debug)]
pub struct SamDecoder {
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
    /// Added to every mask logit of a prompt with a box: a calibration fitted on training
    /// data by `sonosam finetune --calibrate` (0 for the model's own decoder). Stored in the
    /// decoder file's safetensors metadata under [`MASK_LOGIT_BIAS_KEY`].
    pub mask_logit_bias: f32,
    /// The same for prompts of clicks alone (metadata [`CLICK_MASK_LOGIT_BIAS_KEY`]; where a
    /// file has none, [`Self::mask_logit_bias`]).
    pub click_mask_logit_bias: f32,
}

/// Safetensors metadata key of [`SamDecoder::mask_logit_bias`].
pub const MASK_LOGIT_BIAS_KEY: &str = "mask_logit_bias";
/// Safetensors metadata key of [`SamDecoder::click_mask_logit_bias`].
pub const CLICK_MASK_LOGIT_BIAS_KEY: &str = "mask_logit_bias_clicks";

/// A calibration bias from a decoder file's metadata, if it has one.
fn bias(w: &TensorMap, key: &str) -> Result<Option<f32>> {
    w.metadata()
        .get(key)
        .map(|v| v.trim().parse::<f32>().ok().filter(|b| b.is_finite()).ok_or_else(|| SamError::Invalid(format!("{key} = {v:?} is not a number"))))
        .transpose()
}

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
            mask_logit_bias: bias(w, MASK_LOGIT_BIAS_KEY)?.unwrap_or(0.0),
            click_mask_logit_bias: match bias(w, CLICK_MASK_LOGIT_BIAS_KEY)? {
                Some(b) => b,
                None => bias(w, MASK_LOGIT_BIAS_KEY)?.unwrap_or(0.0),
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
        Ok(self.calibrated(out, prompts))
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
        Ok(self.calibrated(out, prompts))
    }

    /// The calibration bias for `prompt`: the click bias for clicks alone, else the box one.
    pub fn mask_logit_bias_for(&self, prompt: &Prompt) -> f32 {
        if prompt.bbox.is_none() && !prompt.points.is_empty() { self.click_mask_logit_bias } else { self.mask_logit_bias }
    }

    /// Apply each prompt's calibration bias to its masks.
    fn calibrated(&self, mut out: DecoderOutput, prompts: &[Prompt]) -> DecoderOutput {
        let biases: Vec<f32> = prompts.iter().map(|p| self.mask_logit_bias_for(p)).collect();
        if biases.iter().all(|b| *b == 0.0) {
            return out;
        }
        let logits = out.low_res_logits;
        out.low_res_logits = if biases.iter().all(|b| *b == biases[0]) {
            logits.add_scalar(biases[0])
        } else {
            let (n, device) = (biases.len(), logits.device());
            logits + Tensor::from_data(TensorData::new(biases, [n, 1, 1, 1]), &device)
        };
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
