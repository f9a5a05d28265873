//! Training batches with prompts as people give them: per sample a box pushed out by random
//! jitter or one click in the lesion's core, then up to `--corrections` rounds of the
//! interactive setup ([`sonosam_model::interactive`]: the current decoder answers, the
//! simulated user clicks its largest error, its logits become the mask prompt) — as SAM was
//! trained. Deterministic for a seed and step.

use clap::Args;
use serde::{Deserialize, Serialize};
use sonosam_model::box_prompts::{jitter_box, tight_box};
use sonosam_model::clicker::random_click;
use sonosam_model::interactive::Session;
use sonosam_model::rng::Rng;
use sonosam_model::train::Batch;
use sonosam_model::{PointLabel, Predictor, Prompt, SamDecoder};

use crate::CliResult;
use crate::prepare::Prepared;

/// How training samples are prompted.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct PromptMix {
    /// Box jitter: each side pushed out by U[0, J) px at the model frame (0: tight boxes).
    #[arg(long, default_value_t = 20.0)]
    pub jitter: f32,
    /// Share of samples prompted by one positive click instead of a box (0 … 1).
    #[arg(long, default_value_t = 0.0)]
    pub click_share: f64,
    /// Where training clicks fall: uniformly over the lesion's pixels at least this share of
    /// its deepest point's depth from the edge (0: anywhere in the lesion).
    #[arg(long, default_value_t = 0.3)]
    pub click_core: f64,
    /// Most correction rounds per sample (each draws 0 … N): the decoder being trained
    /// answers, a click goes to its largest error, its logits become the mask prompt.
    #[arg(long, default_value_t = 0)]
    pub corrections: usize,
    /// Train boxes as ambiguous prompts: three masks, the one nearest the truth trained and
    /// the IoU head taught to pick it (use with --iou-weight); the exported decoder answers a
    /// box with the best of its three by predicted IoU (its file says so).
    #[arg(long)]
    #[serde(default)]
    pub box_multimask: bool,
}

impl PromptMix {
    pub fn check(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.click_share) || !(0.0..=1.0).contains(&self.click_core) {
            anyhow::bail!("--click-share and --click-core are shares: between 0 and 1");
        }
        if !(self.jitter >= 0.0 && self.jitter.is_finite()) {
            anyhow::bail!("--jitter must be a number of pixels, 0 or more");
        }
        Ok(())
    }
}

/// The training batch of instances `chunk` of `train`: their embeddings, prompts (and mask
/// prompts after correction rounds, which `decoder` — the current weights — answers) and
/// low-res targets.
pub fn make_batch(
    mix: &PromptMix,
    train: &Prepared,
    targets: &[Vec<f32>],
    chunk: &[usize],
    decoder: impl FnOnce() -> CliResult<SamDecoder>,
    rng: &mut Rng,
) -> CliResult<Batch> {
    // Every draw first, in sample order: the prompts do not depend on whether a decoder is
    // built.
    let plans: Vec<(Prompt, usize)> = chunk
        .iter()
        .map(|&i| {
            let start = start_prompt(mix, train, i, rng)?;
            let rounds = if mix.corrections > 0 { rng.below(mix.corrections + 1) } else { 0 };
            Ok((start, rounds))
        })
        .collect::<CliResult<_>>()?;
    let decoder = if plans.iter().any(|p| p.1 > 0) { Some(decoder()?) } else { None };
    let mut batch = Batch::new(Vec::new(), Vec::with_capacity(chunk.len()), Vec::new());
    for (&i, (start, rounds)) in chunk.iter().zip(plans) {
        let inst = &train.instances[i];
        let img = &train.images[inst.image];
        let (prompt, mask_input) = match &decoder {
            Some(decoder) if rounds > 0 => {
                let mut predictor = Predictor::with_decoder(decoder);
                predictor.set_embedding_data(img.embedding.clone(), img.geometry)?;
                correction_rounds(&predictor, &inst.mask, start, rounds)?
            }
            _ => (start, None),
        };
        batch.embeddings.extend_from_slice(&img.embedding);
        batch.prompts.push(prompt);
        batch.mask_inputs.push(mask_input);
        batch.targets.extend_from_slice(&targets[i]);
    }
    Ok(batch)
}

/// The first prompt of instance `i` (model frame): one click in the lesion's core with
/// probability `click_share`, else its tight box pushed out by the jitter.
fn start_prompt(mix: &PromptMix, train: &Prepared, i: usize, rng: &mut Rng) -> CliResult<Prompt> {
    let inst = &train.instances[i];
    let g = train.images[inst.image].geometry;
    if mix.click_share > 0.0 && rng.next_f64() < mix.click_share {
        let click = random_click(&inst.mask, mix.click_core, PointLabel::Positive, rng).expect("instances have foreground");
        return Ok(Prompt { points: vec![g.point_to_frame(click.x, click.y, click.label)?], bbox: None });
    }
    let tight = g.box_to_frame(tight_box(&inst.mask).expect("instances have foreground"))?;
    Ok(Prompt::from_box(jitter_box(tight, mix.jitter, &g, rng)))
}

/// `rounds` rounds of the interactive setup from `start`: the prompt with the clicks added
/// and the last answer's logits (the mask prompt). Fewer when an answer is exact.
fn correction_rounds(predictor: &Predictor<'_>, truth: &sonosam_model::Mask, start: Prompt, rounds: usize) -> CliResult<(Prompt, Option<Vec<f32>>)> {
    let mut session = Session::new(predictor, truth, start);
    for _ in 0..rounds {
        let answer = session.answer()?;
        if !session.correct(answer)? {
            break;
        }
    }
    Ok(session.into_parts())
}
