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
    /// Whether a prompt with a box, asked for one mask, is answered with the best of the
    /// three multimask outputs by predicted IoU rather than the single-mask output: a decoder
    /// fine-tuned with `sonosam finetune --box-multimask`, whose three masks for a box are
    /// hypotheses about how tightly it was drawn. Metadata [`BOX_MULTIMASK_KEY`] (`true`);
    /// `false` for SAM's own decoders.
    pub box_multimask: bool,
}

/// Safetensors metadata key of [`SamDecoder::mask_logit_bias`].
pub const MASK_LOGIT_BIAS_KEY: &str = "mask_logit_bias";
/// Safetensors metadata key of [`SamDecoder::click_mask_logit_bias`].
pub const CLICK_MASK_LOGIT_BIAS_KEY: &str = "mask_logit_bias_clicks";
/// Safetensors metadata key of [`SamDecoder::box_multimask`].
pub const BOX_MULTIMASK_KEY: &str = "box_multimask";

/// Whether a decoder file answers boxes with the best of three masks (its metadata).
pub fn box_multimask(w: &TensorMap) -> Result<bool> {
    match w.metadata().get(BOX_MULTIMASK_KEY).map(|v| v.trim()) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(SamError::Invalid(format!("{BOX_MULTIMASK_KEY} = {v:?} is not true or false"))),
    }
}

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
            box_multimask: box_multimask(w)?,
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
        self.answer(prompts, multimask, |multimask| {
            self.mask_decoder.forward(embedding.clone(), self.prompt_encoder.dense_pe(), sparse.clone(), dense.clone(), multimask)
        })
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
        self.answer(prompts, multimask, |multimask| self.mask_decoder.forward_prepared(image, sparse.clone(), multimask))
    }

    /// The answer to `prompts` of `decode` (`decode(multimask)` runs the mask decoder):
    /// calibrated, and, for a [`box_multimask`](Self::box_multimask) decoder asked for one
    /// mask, the best of three by predicted IoU for each prompt with a box (`[B, 1, …]` and
    /// `[B, 1]` either way).
    fn answer(&self, prompts: &[Prompt], multimask: bool, decode: impl Fn(bool) -> Result<DecoderOutput>) -> Result<DecoderOutput> {
        let boxed: Vec<bool> = prompts.iter().map(|p| p.bbox.is_some()).collect();
        if multimask || !self.box_multimask || !boxed.contains(&true) {
            return Ok(self.calibrated(decode(multimask)?, prompts));
        }
        let chosen = best_by_predicted_iou(decode(true)?);
        let out = if boxed.iter().all(|b| *b) { chosen } else { rows_where(&boxed, chosen, decode(false)?) };
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

/// Of each row's masks `[B, M, H, W]`, the one with the highest predicted IoU: `[B, 1, H, W]`
/// and its IoU `[B, 1]`.
fn best_by_predicted_iou(out: DecoderOutput) -> DecoderOutput {
    let [b, _, h, w] = out.low_res_logits.dims();
    let (iou, index) = out.iou.max_dim_with_indices(1);
    let low_res_logits = out.low_res_logits.gather(1, index.reshape([b, 1, 1, 1]).expand([b, 1, h, w]));
    DecoderOutput { low_res_logits, iou }
}

/// Row `i` of `yes` where `pick[i]`, else of `no` (one mask per row each).
fn rows_where(pick: &[bool], yes: DecoderOutput, no: DecoderOutput) -> DecoderOutput {
    let (n, device) = (pick.len(), yes.iou.device());
    let weight: Vec<f32> = pick.iter().map(|&p| f32::from(u8::from(p))).collect();
    let weight = Tensor::<1>::from_data(TensorData::new(weight, [n]), &device);
    let (w4, w2) = (weight.clone().reshape([n, 1, 1, 1]), weight.reshape([n, 1]));
    DecoderOutput {
        low_res_logits: yes.low_res_logits * w4.clone() + no.low_res_logits * (w4.neg() + 1.0),
        iou: yes.iou * w2.clone() + no.iou * (w2.neg() + 1.0),
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
