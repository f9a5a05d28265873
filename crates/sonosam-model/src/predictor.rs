//! The predictor: SAM's `SamPredictor`. It holds one image at a time — encoded here
//! ([`Predictor::set_image`]) or an embedding computed elsewhere, by a cache or a server
//! ([`Predictor::set_embedding`]) — and answers prompts given in the image's own pixels with
//! masks at its size ([`Predictor::predict`]). The decoder's per-image work is done once per
//! image, at the first prompt without a mask prompt.
//!
//! `sonosam segment`, `sonosam eval` and the browser engine all decode through it:
//!
//! ```text
//! prompt (image px) ─ Geometry::prompt_to_frame ─ SamDecoder (prepared image) ─ read back
//!   ─► logits [M, lr, lr], IoU [M] ─ Segmentation::from_outputs ─► masks at the image size
//! ```

use std::borrow::Cow;
use std::cell::OnceCell;

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;

use crate::config::SamConfig;
use crate::error::{Result, SamError};
use crate::image_encoder::ImageEncoder;
use crate::mask_decoder::{DecoderOutput, PreparedImage};
use crate::preprocess::{Geometry, preprocess};
use crate::prompt_encoder::Prompt;
use crate::sam::{SamDecoder, input_tensor};
#[cfg(not(target_family = "wasm"))]
use crate::segmentation::read_f32;
use crate::segmentation::{Segmentation, read_f32_async};

/// A decoder (its own, or borrowed: many predictors can share one) and the image it answers
/// prompts about.
pub struct Predictor<'d> {
    decoder: Cow<'d, SamDecoder>,
    image: Option<CurrentImage>,
}

/// The image being segmented.
struct CurrentImage {
    /// `[1, 256, e, e]` on the decoder's device.
    embedding: Tensor<4>,
    geometry: Geometry,
    /// The decoder's per-image work, once a prompt needed it.
    prepared: OnceCell<PreparedImage>,
}

/// The read-back answer to one prompt: low-res logits `[M, lr, lr]` and predicted IoU `[M]`
/// (M = 1, or 3 with multimask).
#[derive(Debug, Clone, PartialEq)]
pub struct RawPrediction {
    pub logits: Vec<f32>,
    pub iou: Vec<f32>,
}

impl RawPrediction {
    /// Read decoder outputs back (native backends), checked.
    #[cfg(not(target_family = "wasm"))]
    pub fn read(out: DecoderOutput, low_res_size: usize) -> Result<Self> {
        Self::checked(read_f32(out.low_res_logits)?, read_f32(out.iou)?, low_res_size)
    }

    /// Read decoder outputs back without blocking (required on WebGPU), checked.
    pub async fn read_async(out: DecoderOutput, low_res_size: usize) -> Result<Self> {
        let logits = read_f32_async(out.low_res_logits).await?;
        let iou = read_f32_async(out.iou).await?;
        Self::checked(logits, iou, low_res_size)
    }

    /// Finite logits, as many as the masks need.
    fn checked(logits: Vec<f32>, iou: Vec<f32>, lr: usize) -> Result<Self> {
        if logits.iter().any(|v| v.is_nan()) {
            return Err(SamError::Invalid("the decoder produced NaN (GPU error?): try the CPU backend".into()));
        }
        if iou.is_empty() || logits.len() != iou.len() * lr * lr {
            return Err(SamError::Invalid("the decoder produced outputs of the wrong size".into()));
        }
        Ok(Self { logits, iou })
    }
}

impl Predictor<'static> {
    /// A predictor that owns its decoder.
    pub fn new(decoder: SamDecoder) -> Self {
        Self { decoder: Cow::Owned(decoder), image: None }
    }

    /// Decode with another decoder (a fine-tuned one) from now on; the image stays.
    pub fn set_decoder(&mut self, decoder: SamDecoder) {
        self.decoder = Cow::Owned(decoder);
        if let Some(image) = &mut self.image {
            image.prepared = OnceCell::new();
        }
    }
}

impl<'d> Predictor<'d> {
    /// A predictor that borrows `decoder` (one per image or per thread, sharing the weights).
    pub fn with_decoder(decoder: &'d SamDecoder) -> Self {
        Self { decoder: Cow::Borrowed(decoder), image: None }
    }

    pub fn decoder(&self) -> &SamDecoder {
        &self.decoder
    }

    /// The device the decoder runs on.
    fn device(&self) -> Device {
        self.decoder.prompt_encoder.dense_pe().device()
    }

    /// `lr × lr` low-res logits (an earlier answer's) as a mask prompt `[1, 1, lr, lr]`.
    pub fn mask_prompt(&self, logits: &[f32]) -> Result<Tensor<4>> {
        let lr = self.low_res_size();
        if logits.len() != lr * lr {
            return Err(SamError::Prompt(format!("a mask prompt has {lr} × {lr} values, not {}", logits.len())));
        }
        Ok(Tensor::from_data(TensorData::new(logits.to_vec(), [1, 1, lr, lr]), &self.device()))
    }

    /// Encode `image` with `encoder` (of the model `config` describes) and make it the current
    /// image.
    pub fn set_image(&mut self, encoder: &ImageEncoder, image: &RgbImage, config: &SamConfig) -> Result<()> {
        let input = preprocess(image, config);
        let embedding = encoder.forward(input_tensor(&[&input], config.img_size(), &self.device()));
        self.set_embedding(embedding, input.geometry)
    }

    /// Make the image whose embedding `[1, 256, e, e]` this is, at `geometry`, the current
    /// image.
    pub fn set_embedding(&mut self, embedding: Tensor<4>, geometry: Geometry) -> Result<()> {
        let e = self.decoder.prompt_encoder.embedding_size();
        let [b, c, h, w] = embedding.dims();
        if b != 1 || h != e || w != e || c == 0 {
            return Err(SamError::Invalid(format!("an image embedding has shape [1, C, {e}, {e}], not {:?}", [b, c, h, w])));
        }
        self.image = Some(CurrentImage { embedding, geometry, prepared: OnceCell::new() });
        Ok(())
    }

    /// [`Self::set_embedding`] from host data (`[1, 256, e, e]`, row-major).
    pub fn set_embedding_data(&mut self, data: Vec<f32>, geometry: Geometry) -> Result<()> {
        let e = self.decoder.prompt_encoder.embedding_size();
        let c = data.len() / (e * e);
        if c * e * e != data.len() {
            return Err(SamError::Invalid(format!("{} values are not an embedding of {e} × {e} positions", data.len())));
        }
        self.set_embedding(Tensor::from_data(TensorData::new(data, [1, c, e, e]), &self.device()), geometry)
    }

    /// Forget the current image.
    pub fn clear(&mut self) {
        self.image = None;
    }

    /// The current image's geometry, once there is one.
    pub fn geometry(&self) -> Option<Geometry> {
        self.image.as_ref().map(|i| i.geometry)
    }

    fn current(&self) -> Result<&CurrentImage> {
        self.image.as_ref().ok_or_else(|| SamError::Invalid("no image set: set an image or its embedding first".into()))
    }

    /// The decoder's per-image work for the current image (made on first use).
    pub fn prepare(&self) -> Result<&PreparedImage> {
        let image = self.current()?;
        if image.prepared.get().is_none() {
            let prepared = self.decoder.prepare(image.embedding.clone())?;
            let _ = image.prepared.set(prepared);
        }
        Ok(image.prepared.get().expect("just made"))
    }

    /// Decode prompts given in the model frame (B of them, with the same number of tokens
    /// each) against the current image: the decoder's outputs, on the device. `mask_input`:
    /// `[B, 1, lr, lr]` low-res logits from an earlier decoding.
    pub fn decode_frame(&self, prompts: &[Prompt], mask_input: Option<Tensor<4>>, multimask: bool) -> Result<DecoderOutput> {
        match mask_input {
            Some(mask) => self.decoder.decode(self.current()?.embedding.clone(), prompts, Some(mask), multimask),
            None => self.decoder.decode_prepared(self.prepare()?, prompts, multimask),
        }
    }

    /// Decode `prompt` (image pixels) with an optional mask prompt (`lr × lr` low-res logits
    /// from an earlier answer): the decoder's outputs, on the device, to read back with
    /// [`RawPrediction::read`] or [`RawPrediction::read_async`].
    pub fn decode(&self, prompt: &Prompt, mask_input: Option<&[f32]>, multimask: bool) -> Result<DecoderOutput> {
        let frame_prompt = self.current()?.geometry.prompt_to_frame(prompt)?;
        let mask = mask_input.map(|m| self.mask_prompt(m)).transpose()?;
        self.decode_frame(std::slice::from_ref(&frame_prompt), mask, multimask)
    }

    /// Side of the low-res logits (and of a mask prompt).
    pub fn low_res_size(&self) -> usize {
        self.decoder.prompt_encoder.mask_input_size()
    }

    /// The masks for `prompt` (image pixels) at the image's size, read back without blocking
    /// (required on WebGPU).
    pub async fn predict_async(&self, prompt: &Prompt, mask_input: Option<&[f32]>, multimask: bool) -> Result<Segmentation> {
        let out = self.decode(prompt, mask_input, multimask)?;
        let raw = RawPrediction::read_async(out, self.low_res_size()).await?;
        Ok(self.segmentation(&raw))
    }

    /// The masks for `prompt` (image pixels) at the image's size.
    #[cfg(not(target_family = "wasm"))]
    pub fn predict(&self, prompt: &Prompt, mask_input: Option<&[f32]>, multimask: bool) -> Result<Segmentation> {
        let out = self.decode(prompt, mask_input, multimask)?;
        let raw = RawPrediction::read(out, self.low_res_size())?;
        Ok(self.segmentation(&raw))
    }

    /// Masks at the current image's size from a read-back answer.
    pub fn segmentation(&self, raw: &RawPrediction) -> Segmentation {
        let geometry = self.geometry().expect("an answer comes from a set image");
        Segmentation::from_outputs(&raw.logits, &raw.iou, self.low_res_size(), &geometry)
    }
}
