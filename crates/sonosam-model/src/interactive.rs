//! The interactive setup SAM is trained and evaluated in (SAM paper §3, "Training
//! algorithm"): decode the prompt, keep the best mask, let the simulated user
//! ([`crate::clicker`]) click the largest error, and feed the kept mask's low-res logits back
//! as the next round's mask prompt. `eval`'s correction protocols (NoC@85/90) and
//! fine-tuning's correction rounds both run it, so they click alike.
//!
//! ```text
//! prompt (frame) ─ Predictor::decode_frame ─► masks [M, H, W] ─ best ─► Answer
//!   ▲                                                               │
//!   └──── + next_click(truth, mask) (frame), logits as mask prompt ─┘
//! ```

use crate::clicker::next_click;
use crate::error::Result;
use crate::mask::Mask;
use crate::predictor::{Predictor, RawPrediction};
use crate::prompt::Prompt;

/// The decoder's answer to one round: the kept mask at the image's size, its low-res logits
/// (`lr × lr`) and its predicted IoU.
#[derive(Debug, Clone)]
pub struct Answer {
    pub mask: Mask,
    pub logits: Vec<f32>,
    pub predicted_iou: f32,
}

/// One lesion being segmented interactively on the predictor's image.
pub struct Session<'a, 'd> {
    predictor: &'a Predictor<'d>,
    truth: &'a Mask,
    /// The prompt so far, in the model frame.
    prompt: Prompt,
    /// The previous answer's low-res logits: the next round's mask prompt.
    previous: Option<Vec<f32>>,
}

impl<'a, 'd> Session<'a, 'd> {
    /// A session on `truth` (at the image's size) that starts from `start` (model frame).
    pub fn new(predictor: &'a Predictor<'d>, truth: &'a Mask, start: Prompt) -> Self {
        Self { predictor, truth, prompt: start, previous: None }
    }

    /// The prompt so far (model frame).
    pub fn prompt(&self) -> &Prompt {
        &self.prompt
    }

    /// The mask prompt of the next round (the last answer's low-res logits), if any.
    pub fn mask_input(&self) -> Option<&[f32]> {
        self.previous.as_deref()
    }

    /// The decoder's answer to the prompt so far: of three masks for an ambiguous prompt (a
    /// single click), the one with the best predicted IoU; else the one mask.
    pub fn answer(&self) -> Result<Answer> {
        let p = self.predictor;
        let mask_prompt = self.previous.as_deref().map(|m| p.mask_prompt(m)).transpose()?;
        let out = p.decode_frame(std::slice::from_ref(&self.prompt), mask_prompt, self.prompt.is_ambiguous())?;
        let mut seg = p.segmentation(&RawPrediction::read(out, p.low_res_size())?);
        let best = seg.best();
        Ok(Answer { mask: seg.masks.swap_remove(best), logits: seg.low_res.swap_remove(best), predicted_iou: seg.iou[best] })
    }

    /// The user's next round after `answer`: one click at the centre of its largest error
    /// (positive in a missed region, negative in a false one), its logits the mask prompt.
    /// `false` (and nothing added) when the answer is exact.
    pub fn correct(&mut self, answer: Answer) -> Result<bool> {
        let Some(click) = next_click(self.truth, &answer.mask) else {
            return Ok(false);
        };
        let g = self.predictor.geometry().expect("a session's predictor has an image");
        self.prompt.points.push(g.point_to_frame(click.x, click.y, click.label)?);
        self.previous = Some(answer.logits);
        Ok(true)
    }

    /// The prompt and mask prompt the session reached.
    pub fn into_parts(self) -> (Prompt, Option<Vec<f32>>) {
        (self.prompt, self.previous)
    }
}
