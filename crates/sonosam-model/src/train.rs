//! Fine-tuning the mask decoder with a frozen image encoder (the prompt encoder frozen too, or
//! its learned embeddings and mask-prompt convolutions trained with it): targets, Dice (+BCE)
//! loss, batches of mixed prompts (boxes, clicks, clicks with a mask prompt from a correction
//! round; a single click trained on the best of its three masks), the IoU head's loss,
//! gradients by PyTorch parameter name, and Adam with PyTorch's update rule.
//!
//! Parameters live on the host as a [`TensorMap`] in PyTorch layout; each step builds the mask
//! decoder from them on an autodiff device, runs forward and backward, reads the gradients back
//! by key and applies Adam on the host. Checkpoints are therefore plain safetensors files with
//! the original key names, loadable everywhere the base decoder is.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::SamConfig;
use crate::error::{Result, SamError};
use crate::mask::Mask;
use crate::mask_decoder::MaskDecoder;
use crate::preprocess::Geometry;
use crate::prompt_encoder::{Prompt, PromptEncoder};
use crate::sam::{BOX_MULTIMASK_KEY, DECODER_PREFIXES, MASK_DECODER_PREFIX, PROMPT_ENCODER_PREFIX, box_multimask};
use crate::segmentation::read_f32;
use crate::weights::{RawTensor, TensorMap};

/// Key prefix of the trainable part.
pub const TRAINABLE_PREFIX: &str = MASK_DECODER_PREFIX;

/// Training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Soft Dice on sigmoid probabilities (MONAI `DiceLoss(sigmoid=True)`).
    Dice,
    /// Dice + binary cross-entropy on the logits.
    DiceBce,
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "dice" => Ok(LossKind::Dice),
            "dice+bce" | "dice-bce" => Ok(LossKind::DiceBce),
            _ => Err(format!("unknown loss `{s}` (dice, dice+bce)")),
        }
    }
}

/// `mean_b [1 − (2 Σ p·t + 1e-5) / (Σ p + Σ t + 1e-5)]`, `p = sigmoid(logits)`;
/// `logits`, `target`: `[B, 1, H, W]` → `[1]`.
pub fn dice_loss(logits: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    dice_loss_per_mask(logits, target).mean()
}

/// Mean binary cross-entropy with logits (numerically stable form) → `[1]`.
pub fn bce_with_logits(logits: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    bce_per_mask(logits, target).mean()
}

/// The soft Dice loss of each mask: `logits [B, M, H, W]` against `target [B, 1, H, W]` →
/// `[B, M]`.
pub fn dice_loss_per_mask(logits: Tensor<4>, target: Tensor<4>) -> Tensor<2> {
    let [b, m, h, w] = logits.dims();
    let p = sigmoid(logits).reshape([b, m, h * w]);
    let t = target.reshape([b, 1, h * w]);
    let inter = (p.clone() * t.clone()).sum_dim(2);
    let denom = p.sum_dim(2) + t.sum_dim(2);
    let dice = (inter * 2.0 + 1e-5) / (denom + 1e-5);
    (dice.neg() + 1.0).reshape([b, m])
}

/// The mean binary cross-entropy of each mask (as [`dice_loss_per_mask`]) → `[B, M]`.
pub fn bce_per_mask(logits: Tensor<4>, target: Tensor<4>) -> Tensor<2> {
    let [b, m, h, w] = logits.dims();
    let logits = logits.reshape([b, m, h * w]);
    let relu = logits.clone().clamp_min(0.0);
    let log_term = (logits.clone().abs().neg().exp() + 1.0).log();
    (relu - logits * target.reshape([b, 1, h * w]) + log_term).mean_dim(2).reshape([b, m])
}

/// The real IoU of each mask (logits above 0) with the target, without gradient:
/// `[B, M, H, W]`, `[B, 1, H, W]` → `[B, M]` — what the IoU head learns to predict.
pub fn real_iou(logits: Tensor<4>, target: Tensor<4>) -> Tensor<2> {
    let [b, m, h, w] = logits.dims();
    let pred = logits.detach().greater_elem(0.0).float().reshape([b, m, h * w]);
    let t = target.detach().reshape([b, 1, h * w]);
    let inter = (pred.clone() * t.clone()).sum_dim(2);
    let union = pred.sum_dim(2) + t.sum_dim(2) - inter.clone();
    (inter / union.clamp_min(1.0)).reshape([b, m])
}

/// The ground truth as a training target: nearest-neighbour resize to the resized extent
/// (`new_h × new_w`), zero-padded to `lr × lr` (the low-res logits' frame).
pub fn target_low_res(mask: &Mask, g: &Geometry, lr: usize) -> Result<Vec<f32>> {
    if (mask.width, mask.height) != (g.orig_w, g.orig_h) {
        return Err(SamError::Invalid(format!(
            "mask is {}×{} but the image is {}×{}",
            mask.width, mask.height, g.orig_w, g.orig_h
        )));
    }
    // Targets live in the frame of the low-res logits (= the input frame for LiteMedSAM).
    let s = lr as f64 / g.frame as f64;
    let nh = ((g.new_h as f64 * s).round() as usize).min(lr);
    let nw = ((g.new_w as f64 * s).round() as usize).min(lr);
    let mut out = vec![0f32; lr * lr];
    let (sy, sx) = (
        g.orig_h as f64 / nh as f64,
        g.orig_w as f64 / nw as f64,
    );
    for y in 0..nh {
        let src_y = ((y as f64 * sy) as usize).min(g.orig_h - 1);
        for x in 0..nw {
            let src_x = ((x as f64 * sx) as usize).min(g.orig_w - 1);
            out[y * lr + x] = f32::from(u8::from(mask.get(src_x, src_y)));
        }
    }
    Ok(out)
}

/// One training batch: embeddings `[B, 256, 64, 64]`, one prompt each (model frame: a box,
/// clicks, or both), optional mask prompts, targets `[B, 1, lr, lr]`. Prompts may differ in
/// kind and number of clicks: samples decoded alike are run together (see
/// [`DecoderTrainer::loss_and_grads`]).
pub struct Batch {
    pub embeddings: Vec<f32>,
    pub prompts: Vec<Prompt>,
    /// Per sample, the low-res logits (`lr × lr`) of an earlier answer given as its mask
    /// prompt — a correction round — or `None`. Empty: no sample has one.
    pub mask_inputs: Vec<Option<Vec<f32>>>,
    pub targets: Vec<f32>,
}

impl Batch {
    /// A batch without mask prompts.
    pub fn new(embeddings: Vec<f32>, prompts: Vec<Prompt>, targets: Vec<f32>) -> Self {
        Self { embeddings, prompts, mask_inputs: Vec::new(), targets }
    }

    fn mask_input(&self, i: usize) -> Option<&[f32]> {
        self.mask_inputs.get(i).and_then(|m| m.as_deref())
    }
}

/// How a sample is decoded: samples of one kind run through the decoder together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SampleKind {
    /// Sparse prompt tokens.
    tokens: usize,
    /// Three masks, trained on the best (an ambiguous prompt: a single click; a box when
    /// boxes are trained as multimask, see [`DecoderTrainer::with_box_multimask`]).
    multimask: bool,
    /// A mask prompt (dense embedding from earlier logits) rather than `no_mask`.
    mask_prompt: bool,
}

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Adam with PyTorch's update rule (`torch.optim.Adam`, L2 weight decay), state by key.
#[derive(Debug, Clone, Default)]
pub struct Adam {
    pub config: AdamConfig,
    pub step: u64,
    m: BTreeMap<String, Vec<f32>>,
    v: BTreeMap<String, Vec<f32>>,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// Apply one step with learning rate `lr` to `params`.
    pub fn update(
        &mut self,
        params: &mut TensorMap,
        grads: &BTreeMap<String, Vec<f32>>,
        lr: f64,
    ) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        for (key, g) in grads {
            let p = params
                .raw(key)
                .ok_or_else(|| SamError::Invalid(format!("gradient for unknown `{key}`")))?;
            let mut data = p.data.clone();
            let m = self
                .m
                .entry(key.clone())
                .or_insert_with(|| vec![0.0; g.len()]);
            let v = self
                .v
                .entry(key.clone())
                .or_insert_with(|| vec![0.0; g.len()]);
            for i in 0..g.len() {
                let gi = if c.weight_decay > 0.0 {
                    g[i] + c.weight_decay as f32 * data[i]
                } else {
                    g[i]
                };
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt as f32 + c.eps as f32;
                data[i] -= step_size * m[i] / denom;
            }
            params.set_data(key, data)?;
        }
        Ok(())
    }

    /// The state as tensors (`adam.m.<key>`, `adam.v.<key>`) plus the step in metadata.
    pub fn to_map(&self, params: &TensorMap) -> TensorMap {
        let mut map = TensorMap::new("adam state");
        for (prefix, states) in [("adam.m.", &self.m), ("adam.v.", &self.v)] {
            for (k, v) in states {
                let shape = params
                    .raw(k)
                    .map(|t| t.shape.clone())
                    .unwrap_or_else(|| vec![v.len()]);
                map.insert(format!("{prefix}{k}"), RawTensor::new(shape, v.clone()));
            }
        }
        map.set_metadata("adam.step", self.step.to_string());
        map.set_metadata(
            "adam.config",
            serde_json::to_string(&self.config).unwrap_or_default(),
        );
        map
    }

    /// Restore a state written by [`to_map`](Self::to_map).
    pub fn from_map(map: &TensorMap) -> Result<Self> {
        let bad = |m: &str| SamError::WeightsFormat {
            source_name: map.source().to_string(),
            message: m.to_string(),
        };
        let step = map
            .metadata()
            .get("adam.step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no adam.step in the optimiser state"))?;
        let config = map
            .metadata()
            .get("adam.config")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no adam.config in the optimiser state"))?;
        let mut adam = Adam {
            config,
            step,
            ..Default::default()
        };
        for key in map.keys() {
            let data = map.raw(key).unwrap().data.clone();
            if let Some(k) = key.strip_prefix("adam.m.") {
                adam.m.insert(k.to_string(), data);
            } else if let Some(k) = key.strip_prefix("adam.v.") {
                adam.v.insert(k.to_string(), data);
            }
        }
        Ok(adam)
    }
}

/// The frozen prompt encoder built from `weights` (`prompt_encoder.*`), and its outputs that
/// do not depend on the prompts.
fn frozen_prompt_encoder(config: &SamConfig, weights: &TensorMap, device: &Device) -> Result<(PromptEncoder, DenseInputs)> {
    let encoder = PromptEncoder::load(weights, "prompt_encoder", &config.decoder, config.img_size(), device)?.no_grad();
    let dense = DenseInputs {
        dense_pe: read_f32(encoder.dense_pe().inner())?,
        no_mask: read_f32(encoder.embed_dense(None, 1).inner())?,
    };
    Ok((encoder, dense))
}

/// Default number of batch shards (see [`DecoderTrainer::with_shards`]) for a backend: on
/// the CPU backend, whose element-wise kernels use one core each, two per core (so that one
/// shard's single-threaded kernels overlap another's; in practice one sample per shard, as
/// batches are small); one on a GPU, which is busy with one graph already.
pub fn default_shards(kind: crate::backend::BackendKind) -> usize {
    match kind {
        crate::backend::BackendKind::Cpu => 2 * crate::backend::host_threads(kind),
        _ => 1,
    }
}

/// Trains the mask decoder of a SAM.
pub struct DecoderTrainer {
    pub config: SamConfig,
    /// The trainable parameters (`mask_decoder.*`).
    pub params: TensorMap,
    /// The prompt encoder's weights (`prompt_encoder.*`) as they were when it was last
    /// frozen, and the file's metadata. While it is trained its weights live in `params`.
    frozen: TensorMap,
    /// The frozen prompt encoder, run on the host to give the parts their prompts as data.
    prompt_encoder: PromptEncoder,
    pub adam: Adam,
    device: Device,
    /// Computation precision (`None` = f32).
    precision: Option<FloatDType>,
    /// Parts a batch is split into (threads); see [`with_shards`](Self::with_shards).
    shards: usize,
    /// The frozen prompt encoder's prompt-independent outputs, read once.
    dense_inputs: DenseInputs,
    /// Weight of the IoU head's loss (0: the head is not trained).
    iou_weight: f64,
    /// Prompts with a box are decoded as three masks, the best trained.
    box_multimask: bool,
    /// The prompt encoder is trained too (its tensors are in `params`).
    train_prompt_encoder: bool,
}

/// Outputs of the frozen prompt encoder that do not depend on the prompts, `[1, C, E, E]` each.
struct DenseInputs {
    dense_pe: Vec<f32>,
    no_mask: Vec<f32>,
}

/// A part of a batch: samples of one [`SampleKind`], as data.
struct ShardInput {
    b: usize,
    /// `b / batch size`: the loss is scaled by it so that the parts' gradients add up.
    weight: f64,
    /// `[b, C, E, E]`.
    embeddings: Vec<f32>,
    prompts: PromptInput,
    /// `[b, 1, lr, lr]`.
    targets: Vec<f32>,
    multimask: bool,
}

/// A part's prompts: encoded already by the frozen prompt encoder, or as given, for the
/// prompt encoder being trained to encode in the part's graph.
enum PromptInput {
    Encoded {
        /// `[b, tokens, C]` sparse prompt embeddings.
        sparse: Vec<f32>,
        tokens: usize,
        /// `[b, C, E, E]` dense embeddings of the mask prompts; `None`: `no_mask` for all.
        dense: Option<Vec<f32>>,
    },
    Raw {
        prompts: Vec<Prompt>,
        /// `[b, 1, lr, lr]` mask prompts (logits); `None`: none of the part has one.
        masks: Option<Vec<f32>>,
    },
}

/// What a shard's thread needs of the trainer (the trainer itself is not `Sync`).
struct ShardTrainer<'a> {
    config: &'a SamConfig,
    device: Device,
    precision: Option<FloatDType>,
    dense_inputs: &'a DenseInputs,
    iou_weight: f64,
}

impl<'a> ShardTrainer<'a> {
    fn of(t: &'a DecoderTrainer) -> Self {
        Self {
            config: &t.config,
            device: t.device.clone(),
            precision: t.precision,
            dense_inputs: &t.dense_inputs,
            iou_weight: t.iou_weight,
        }
    }

    /// Forward and backward of one part on a fresh decoder built from `params`.
    fn run(&self, params: &TensorMap, x: ShardInput, loss: LossKind) -> Result<StepOutput> {
        let b = x.b;
        let lr = self.config.low_res_size();
        let e = self.config.decoder.embedding_size;
        let d = self.config.decoder.embed_dim;
        params.set_precision(self.precision);
        params.track_params();
        let decoder = MaskDecoder::load(params, "mask_decoder", &self.config.decoder, &self.device);
        // The prompt encoder being trained is built from the same map, so it is tracked too.
        let prompt_encoder = match &x.prompts {
            PromptInput::Raw { .. } => {
                let dense_pe = self.dense_inputs.dense_pe.clone();
                Some(PromptEncoder::load_with_dense_pe(params, "prompt_encoder", &self.config.decoder, self.config.img_size(), dense_pe, &self.device))
            }
            PromptInput::Encoded { .. } => None,
        };
        let tracked = params.take_tracked();
        params.set_precision(None);
        let decoder = decoder?;
        let prompt_encoder = prompt_encoder.transpose()?;
        let tensor = |data: &[f32], shape: [usize; 4]| {
            let t = Tensor::<4>::from_data(TensorData::new(data.to_vec(), shape), &self.device);
            match self.precision {
                Some(dtype) => t.cast(dtype),
                None => t,
            }
        };
        let emb = tensor(&x.embeddings, [b, d, e, e]);
        let target = tensor(&x.targets, [b, 1, lr, lr]);
        let dense_pe = tensor(&self.dense_inputs.dense_pe, [1, d, e, e]);
        let (sparse, dense) = match (&x.prompts, prompt_encoder) {
            (PromptInput::Encoded { sparse, tokens, dense }, _) => (
                tensor(sparse, [1, b, *tokens, d]).reshape([b, *tokens, d]),
                match dense {
                    Some(dense) => tensor(dense, [b, d, e, e]),
                    None => tensor(&self.dense_inputs.no_mask, [1, d, e, e]).expand([b, d, e, e]),
                },
            ),
            (PromptInput::Raw { prompts, masks }, Some(encoder)) => (
                encoder.embed_sparse(prompts, &self.device)?,
                encoder.embed_dense(masks.as_ref().map(|m| tensor(m, [b, 1, lr, lr])), b),
            ),
            (PromptInput::Raw { .. }, None) => unreachable!("built above for raw prompts"),
        };
        let out = decoder.forward(emb, dense_pe, sparse, dense, x.multimask)?;
        let logits = out.low_res_logits; // [b, M, lr, lr]
        let m = logits.dims()[1];
        let per_mask = match loss {
            LossKind::Dice => dice_loss_per_mask(logits.clone(), target.clone()),
            LossKind::DiceBce => {
                dice_loss_per_mask(logits.clone(), target.clone()) + bce_per_mask(logits.clone(), target.clone())
            }
        };
        // Of several masks (an ambiguous prompt), only the best is trained: SAM's rule.
        let kept = if m == 1 { vec![0; b] } else { best_per_sample(&read_f32(per_mask.clone().inner())?, m) };
        let mut value = if m == 1 {
            per_mask.mean()
        } else {
            let one_hot: Vec<f32> = kept.iter().flat_map(|&k| (0..m).map(move |j| f32::from(u8::from(j == k)))).collect();
            let one_hot = tensor(&one_hot, [b, m, 1, 1]).reshape([b, m]);
            (per_mask * one_hot).sum_dim(1).mean()
        };
        if self.iou_weight > 0.0 {
            // The IoU head learns the real IoU of every mask it scores (mean squared error).
            let real = real_iou(logits.clone(), target);
            value = value + (out.iou - real).square().mean() * self.iou_weight;
        }
        let value = if x.weight == 1.0 { value } else { value * x.weight };
        let grads = value.backward();
        let mut by_key = BTreeMap::new();
        for t in tracked {
            if let Some(g) = (t.grad)(&grads) {
                by_key.insert(t.key, read_f32(g)?);
            }
        }
        // The kept mask's logits of each sample.
        let all = read_f32(logits.inner())?;
        let logits = kept.iter().enumerate().flat_map(|(i, &k)| all[(i * m + k) * lr * lr..(i * m + k + 1) * lr * lr].iter().copied()).collect();
        Ok(StepOutput { loss: read_f32(value.inner())?[0], grads: by_key, logits })
    }
}

/// The batch's samples grouped by [`SampleKind`], groups in order of first appearance,
/// samples in batch order.
fn group_by_kind(batch: &Batch, box_multimask: bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<(SampleKind, Vec<usize>)> = Vec::new();
    for (i, p) in batch.prompts.iter().enumerate() {
        let kind = SampleKind { tokens: p.num_tokens(), multimask: trains_multimask(p, box_multimask), mask_prompt: batch.mask_input(i).is_some() };
        match groups.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, samples)) => samples.push(i),
            None => groups.push((kind, vec![i])),
        }
    }
    groups.into_iter().map(|(_, samples)| samples).collect()
}

/// Whether `prompt` is decoded as three masks of which the best is trained: a single click
/// (SAM's ambiguous prompt), or any prompt with a box when `box_multimask`.
fn trains_multimask(prompt: &Prompt, box_multimask: bool) -> bool {
    prompt.is_ambiguous() || (box_multimask && prompt.bbox.is_some())
}

/// Index of the smallest of each row of `m` values.
fn best_per_sample(losses: &[f32], m: usize) -> Vec<usize> {
    losses
        .chunks_exact(m)
        .map(|row| (0..m).min_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0))
        .collect()
}

/// Loss value, gradients by key, and the batch's low-res logits (`[B, lr, lr]`: each
/// sample's kept mask).
pub struct StepOutput {
    pub loss: f32,
    pub grads: BTreeMap<String, Vec<f32>>,
    pub logits: Vec<f32>,
}

impl DecoderTrainer {
    /// `decoder_weights`: prompt encoder + mask decoder (PyTorch keys). `device` is made an
    /// autodiff device.
    pub fn new(
        config: SamConfig,
        decoder_weights: &TensorMap,
        device: &Device,
        adam: Adam,
    ) -> Result<Self> {
        let device = device.clone().autodiff();
        let frozen = decoder_weights.subset(&[PROMPT_ENCODER_PREFIX], "prompt encoder");
        let params = decoder_weights.subset(&[TRAINABLE_PREFIX], "mask decoder");
        let (prompt_encoder, dense_inputs) = frozen_prompt_encoder(&config, &frozen, &device)?;
        // Build once to validate every key and shape before training starts.
        MaskDecoder::load(&params, "mask_decoder", &config.decoder, &device)?;
        params.check_all_used(TRAINABLE_PREFIX)?;
        Ok(Self {
            config,
            params,
            frozen,
            prompt_encoder,
            adam,
            device,
            precision: None,
            shards: 1,
            dense_inputs,
            iou_weight: 0.0,
            box_multimask: box_multimask(decoder_weights)?,
            train_prompt_encoder: false,
        })
    }

    /// Train the prompt encoder with the decoder: its learned point, box-corner,
    /// not-a-point and no-mask embeddings and the convolutions that embed a mask prompt (all
    /// of `prompt_encoder.*` but the fixed random Fourier matrix). LiteMedSAM learned boxes
    /// only: its click embeddings and mask-prompt path are SAM's and never saw a correction
    /// round. Off again, the encoder is frozen at its current weights. Default off.
    pub fn with_prompt_encoder_training(mut self, on: bool) -> Result<Self> {
        if on == self.train_prompt_encoder {
            return Ok(self);
        }
        if on {
            self.params.extend(self.frozen.subset(&[PROMPT_ENCODER_PREFIX], ""));
        } else {
            let weights = self.decoder_weights();
            self.frozen = weights.subset(&[PROMPT_ENCODER_PREFIX], "prompt encoder");
            self.params = weights.subset(&[TRAINABLE_PREFIX], "mask decoder");
            (self.prompt_encoder, self.dense_inputs) = frozen_prompt_encoder(&self.config, &self.frozen, &self.device)?;
        }
        self.train_prompt_encoder = on;
        Ok(self)
    }

    /// Compute in f64 (CPU backend): gradients then agree with the f32 PyTorch reference to
    /// its own rounding, at about twice the cost. Default f32.
    pub fn with_precision(mut self, dtype: Option<FloatDType>) -> Self {
        self.precision = dtype;
        self
    }

    /// Split each batch into up to `shards` parts, each run forward and backward on its own
    /// thread with its own autodiff graph; the gradients are summed in shard order (so the
    /// result is deterministic). The losses are means over samples, so the batch's gradient
    /// is the size-weighted sum of the shards' gradients. Worth it on the CPU backend, whose
    /// element-wise kernels run on one core: give it the number of cores. Default 1.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Also train the IoU head: `weight` × the mean squared error between each predicted IoU
    /// and the real IoU of its mask (logits above 0 against the target, at the low-res
    /// frame), so that the predicted IoU can be trusted and multimask choice works. Default 0
    /// (MedSAM's recipe: the head is left as it is).
    pub fn with_iou_loss(mut self, weight: f64) -> Self {
        self.iou_weight = weight.max(0.0);
        self
    }

    /// Train prompts with a box as ambiguous: decoded as three masks, the one nearest the
    /// target trained (with the IoU head's loss, the head learns to pick it), as SAM trains a
    /// single click. A box drawn tight on a lesion and one drawn loosely look alike to the
    /// decoder; three hypotheses and a learned choice can serve both. The weights then say so
    /// (metadata [`BOX_MULTIMASK_KEY`]), and [`crate::SamDecoder`] answers a box with the
    /// best of its three masks. Default: as the starting weights say (SAM's: off).
    pub fn with_box_multimask(mut self, on: bool) -> Self {
        self.box_multimask = on;
        if on {
            self.frozen.set_metadata(BOX_MULTIMASK_KEY, "true");
        } else {
            self.frozen.remove_metadata(BOX_MULTIMASK_KEY);
        }
        self
    }

    /// Loss and gradients of one batch (no update). The samples are grouped by how they are
    /// decoded (number of prompt tokens, one or three masks, with or without a mask prompt),
    /// each group split into parts of at most ⌈B / shards⌉, each part run forward and
    /// backward on its own thread (on this one when unsplit); the losses are means over
    /// samples, so the batch's gradient is the size-weighted sum of the parts' gradients,
    /// summed in a fixed order (deterministic).
    pub fn loss_and_grads(&self, batch: &Batch, loss: LossKind) -> Result<StepOutput> {
        let b = batch.prompts.len();
        let lr = self.config.low_res_size();
        if b == 0 || batch.embeddings.len() != b * self.embedding_len() || batch.targets.len() != b * lr * lr {
            return Err(SamError::Invalid("batch sizes do not match".into()));
        }
        if !(batch.mask_inputs.is_empty() || batch.mask_inputs.len() == b)
            || (0..b).any(|i| batch.mask_input(i).is_some_and(|m| m.len() != lr * lr))
        {
            return Err(SamError::Invalid(format!("mask prompts: one per sample (or none), of {lr} × {lr} logits")));
        }
        let per_part = b.div_ceil(self.shards.min(b));
        let parts: Vec<Vec<usize>> = group_by_kind(batch, self.box_multimask)
            .into_iter()
            .flat_map(|samples| samples.chunks(per_part).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect();
        // The frozen prompt encoder runs here; the parts get its outputs as data.
        let inputs = parts.iter().map(|p| self.part_input(batch, p)).collect::<Result<Vec<_>>>()?;
        let outputs: Vec<Result<StepOutput>> = if self.shards == 1 {
            inputs.into_iter().map(|x| ShardTrainer::of(self).run(&self.params, x, loss)).collect()
        } else {
            std::thread::scope(|scope| {
                let mut inputs = inputs.into_iter();
                let first = inputs.next().expect("a batch has samples");
                let handles: Vec<_> = inputs
                    .map(|input| {
                        // A map per thread: it records the parameters it builds (`params` holds
                        // only the trained ones).
                        let params = self.params.subset(&DECODER_PREFIXES, "trained weights");
                        let trainer = ShardTrainer::of(self);
                        scope.spawn(move || trainer.run(&params, input, loss))
                    })
                    .collect();
                let mut outputs = vec![ShardTrainer::of(self).run(&self.params, first, loss)];
                outputs.extend(handles.into_iter().map(|h| {
                    h.join().unwrap_or_else(|_| Err(SamError::Invalid("a training thread panicked".into())))
                }));
                outputs
            })
        };
        let mut total = StepOutput { loss: 0.0, grads: BTreeMap::new(), logits: vec![0.0; b * lr * lr] };
        for (part, out) in parts.iter().zip(outputs) {
            let out = out?;
            total.loss += out.loss;
            for (k, &i) in part.iter().enumerate() {
                total.logits[i * lr * lr..(i + 1) * lr * lr].copy_from_slice(&out.logits[k * lr * lr..(k + 1) * lr * lr]);
            }
            for (key, g) in out.grads {
                match total.grads.get_mut(&key) {
                    Some(sum) => sum.iter_mut().zip(&g).for_each(|(s, v): (&mut f32, &f32)| *s += v),
                    None => {
                        total.grads.insert(key, g);
                    }
                }
            }
        }
        Ok(total)
    }

    /// Values in one sample's embedding (`C × E × E`).
    fn embedding_len(&self) -> usize {
        let (e, d) = (self.config.decoder.embedding_size, self.config.decoder.embed_dim);
        d * e * e
    }

    /// The data of the part of `batch` made of `samples` (one kind), with the frozen prompt
    /// encoder's outputs for them.
    fn part_input(&self, batch: &Batch, samples: &[usize]) -> Result<ShardInput> {
        let (n, lr, len) = (samples.len(), self.config.low_res_size(), self.embedding_len());
        let gather = |data: &[f32], size: usize| samples.iter().flat_map(|&i| data[i * size..(i + 1) * size].iter().copied()).collect::<Vec<f32>>();
        let prompts: Vec<Prompt> = samples.iter().map(|&i| batch.prompts[i].clone()).collect();
        let masks = batch
            .mask_input(samples[0])
            .is_some()
            .then(|| samples.iter().flat_map(|&i| batch.mask_input(i).expect("one kind").iter().copied()).collect::<Vec<f32>>());
        let multimask = trains_multimask(&prompts[0], self.box_multimask);
        let prompts = if self.train_prompt_encoder {
            PromptInput::Raw { prompts, masks }
        } else {
            let sparse = read_f32(self.prompt_encoder.embed_sparse(&prompts, &self.device)?)?;
            let dense = match masks {
                Some(masks) => {
                    let masks = Tensor::<4>::from_data(TensorData::new(masks, [n, 1, lr, lr]), &self.device);
                    Some(read_f32(self.prompt_encoder.embed_dense(Some(masks), n))?)
                }
                None => None,
            };
            PromptInput::Encoded { tokens: sparse.len() / (n * self.config.decoder.embed_dim), sparse, dense }
        };
        Ok(ShardInput {
            b: n,
            weight: n as f64 / batch.prompts.len() as f64,
            embeddings: gather(&batch.embeddings, len),
            prompts,
            targets: gather(&batch.targets, lr * lr),
            multimask,
        })
    }

    /// One optimisation step; returns the loss before the update.
    pub fn step(&mut self, batch: &Batch, loss: LossKind, lr: f64) -> Result<f32> {
        let out = self.loss_and_grads(batch, loss)?;
        if !out.loss.is_finite() {
            return Err(SamError::Invalid(format!(
                "loss became {} — lower the learning rate",
                out.loss
            )));
        }
        self.adam.update(&mut self.params, &out.grads, lr)?;
        Ok(out.loss)
    }

    /// Prompt encoder + current mask decoder weights, in the layout of a decoder file.
    pub fn decoder_weights(&self) -> TensorMap {
        let mut map = self.frozen.subset(&[PROMPT_ENCODER_PREFIX], "fine-tuned decoder");
        // A prompt encoder being trained: its current weights (in `params`) replace the frozen ones.
        map.extend(self.params.subset(&DECODER_PREFIXES, ""));
        map
    }

    /// What training needs to continue later: the decoder's weights and the optimiser's state.
    pub fn checkpoint(&self) -> TrainerCheckpoint {
        TrainerCheckpoint { decoder: self.decoder_weights(), adam: self.adam.to_map(&self.params) }
    }

    /// Continue training from `checkpoint` (see [`Self::new`] for `device`).
    pub fn from_checkpoint(config: SamConfig, checkpoint: &TrainerCheckpoint, device: &Device) -> Result<Self> {
        Self::new(config, &checkpoint.decoder, device, Adam::from_map(&checkpoint.adam)?)
    }
}

/// A training run's state between steps: [`DecoderTrainer::checkpoint`] makes it,
/// [`DecoderTrainer::from_checkpoint`] continues from it.
pub struct TrainerCheckpoint {
    /// Prompt encoder + mask decoder weights, in the layout of a decoder file.
    pub decoder: TensorMap,
    /// Adam's moments and step (`adam.m.*`, `adam.v.*`).
    pub adam: TensorMap,
}
