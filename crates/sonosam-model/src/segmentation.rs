//! From decoder output to masks, shared by the native binary and the browser. Reading tensors
//! back is the caller's: synchronous natively ([`read_f32`]), asynchronous on WebGPU
//! ([`read_f32_async`]), where a synchronous read panics.

#[cfg(feature = "burn")]
use burn::tensor::Tensor;

#[cfg(feature = "burn")]
use crate::error::{Result, SamError};
use crate::mask::Mask;
use crate::postprocess::logits_to_mask;
use crate::preprocess::Geometry;

/// A predicted IoU below this marks a mask for checking by eye. Chosen on BUSI's validation
/// split (68 instances, tight boxes, base decoder; 2026-12-01), never on test: the 8 masks
/// predicted below it had a mean real IoU of 0.746 against 0.883 for the other 60, and held 2 of
/// the 3 with a real IoU under 0.75 (predicted vs real IoU: Pearson r 0.717 there).
pub const LOW_PREDICTED_IOU: f32 = 0.85;

/// Whether a mask's predicted IoU says it should be checked (see [`LOW_PREDICTED_IOU`]).
pub fn low_predicted_iou(iou: f32) -> bool {
    iou < LOW_PREDICTED_IOU
}

/// Masks of one prompt, in the order the decoder emitted them (not sorted: SAM's three
/// multimask outputs are ambiguity levels; [`Segmentation::best`] picks by predicted IoU).
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Binary masks at the original resolution.
    pub masks: Vec<Mask>,
    /// Predicted IoU of each mask.
    pub iou: Vec<f32>,
    /// Low-res logits of each mask (`lr × lr`), to feed back as a mask prompt.
    pub low_res: Vec<Vec<f32>>,
    /// Side of the low-res logits.
    pub low_res_size: usize,
}

impl Segmentation {
    /// Build from the read-back decoder output of one prompt: `logits` `[M, lr, lr]`,
    /// `iou` `[M]`.
    pub fn from_outputs(logits: &[f32], iou: &[f32], lr: usize, geometry: &Geometry) -> Self {
        let m = iou.len();
        assert_eq!(logits.len(), m * lr * lr, "logits/IoU size mismatch");
        let low_res: Vec<Vec<f32>> = logits.chunks_exact(lr * lr).map(<[f32]>::to_vec).collect();
        let masks = low_res
            .iter()
            .map(|l| logits_to_mask(l, lr, geometry))
            .collect();
        Self {
            masks,
            iou: iou.to_vec(),
            low_res,
            low_res_size: lr,
        }
    }

    /// Index of the mask with the highest predicted IoU.
    pub fn best(&self) -> usize {
        self.iou
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0)
    }
}

/// Read a tensor back as f32 (native backends).
#[cfg(not(target_family = "wasm"))]
#[cfg(feature = "burn")]
pub fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_data()
        .map_err(|e| SamError::Invalid(format!("reading tensor from the device: {e:?}")))?
        // Casts only when needed and keeps the buffer otherwise (no element-wise copy).
        .try_into_vec_as::<f32>()
        .map_err(|e| SamError::Invalid(format!("reading tensor: {e:?}")))
}

/// Read a tensor back as f32 without blocking (required on WebGPU).
#[cfg(feature = "burn")]
pub async fn read_f32_async<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data_async()
        .await
        .map_err(|e| SamError::Invalid(format!("reading tensor from the device: {e:?}")))?
        // Casts only when needed and keeps the buffer otherwise (no element-wise copy).
        .try_into_vec_as::<f32>()
        .map_err(|e| SamError::Invalid(format!("reading tensor: {e:?}")))
}
