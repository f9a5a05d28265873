//! Scoring segmentations against ground truth: Dice, IoU and HD95 per instance at the
//! original resolution, for tight and jittered boxes, under an inference strategy; summaries
//! by class; and the fit of a decoder's mask-logit bias. Shared by `eval` and `finetune`.

use anyhow::{Context, anyhow, bail};
use std::collections::BTreeMap;

use serde::Serialize;
use sonosam_model::rng::Rng;
use sonosam_model::segmentation::read_f32;
use sonosam_model::box_prompts::{grow_box, jitter_box, tight_box};
use sonosam_model::measure::descriptors::{Descriptors, describe};
use sonosam_model::clicker::first_click;
use sonosam_model::interactive::Session;
use sonosam_model::{Mask, Predictor, Prompt, SamDecoder, Segmentation};

use crate::CliResult;
use crate::descriptor_stats::{self, DescriptorSummary, Labelled};
use crate::protocols::{self, InstanceProtocols, NocSummary, Protocol, ProtocolSummary};
use crate::prepare::Prepared;
use crate::progress;

/// How a box becomes a mask: see `--strategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Strategy {
    pub multimask: bool,
    pub refine: usize,
    pub ensemble: Vec<f32>,
    pub largest: bool,
    pub fill: bool,
    /// Logit threshold (0: probability 0.5).
    pub threshold: f32,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Strategy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match k {
                "multimask" => out.multimask = true,
                "refine" => out.refine = v.parse().map_err(|_| format!("refine=N, not {part}"))?,
                "ensemble" => {
                    out.ensemble = v
                        .split(':')
                        .map(|x| x.parse::<f32>().map_err(|_| format!("ensemble=A:B…, not {part}")))
                        .collect::<Result<_, _>>()?
                }
                "largest" => out.largest = true,
                "threshold" => out.threshold = v.parse().map_err(|_| format!("threshold=T, not {part}"))?,
                "fill" => out.fill = true,
                other => return Err(format!("unknown strategy part `{other}`")),
            }
        }
        Ok(out)
    }
}

/// Scores of one instance under one decoder.
#[derive(Debug, Clone)]
pub struct Scores {
    pub dice: f64,
    pub iou: f64,
    pub hd95: Option<f64>,
    pub predicted_iou: f32,
    /// Dice at each jitter level.
    pub jitter_dice: Vec<f64>,
    /// Shape descriptors of the ground-truth and the predicted (tight-box) outline, when
    /// measurable and asked for (uncalibrated: pixels).
    pub descriptors: [Option<Descriptors>; 2],
    /// The prompt protocols' results (`--prompt`), when asked for.
    pub protocols: Option<InstanceProtocols>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassSummary {
    pub n: usize,
    pub dice_mean: f64,
    pub dice_median: f64,
    pub iou_mean: f64,
    pub iou_median: f64,
    pub hd95_mean: f64,
    /// Instances whose prediction was empty (no HD95).
    pub empty_predictions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub split: String,
    /// All instances (its fields appear at the top level of the JSON summary).
    #[serde(flatten)]
    pub overall: ClassSummary,
    pub by_class: BTreeMap<String, ClassSummary>,
    /// Mean Dice at each box-jitter level (px per side at the model frame).
    pub jitter: BTreeMap<String, f64>,
    /// Whether the predicted outlines keep the descriptors' benign-vs-malignant signal
    /// (absent without both classes).
    #[serde(flatten)]
    pub descriptors: Option<DescriptorSummary>,
    /// Pearson correlation of the decoder's predicted IoU with the real IoU (tight boxes):
    /// whether its confidence can be trusted.
    pub predicted_iou_r: f64,
    /// Dice per prompt protocol (`--prompt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<BTreeMap<String, ProtocolSummary>>,
    /// Clicks to Dice 0.85 / 0.90 per correction protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noc: Option<BTreeMap<String, NocSummary>>,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    sonosam_model::mask::percentile(&mut v, 50.0)
}

fn class_summary(scores: &[&Scores]) -> ClassSummary {
    let dice: Vec<f64> = scores.iter().map(|s| s.dice).collect();
    let iou: Vec<f64> = scores.iter().map(|s| s.iou).collect();
    let hd: Vec<f64> = scores.iter().filter_map(|s| s.hd95).collect();
    ClassSummary {
        n: scores.len(),
        dice_mean: mean(&dice),
        dice_median: median(&dice),
        iou_mean: mean(&iou),
        iou_median: median(&iou),
        hd95_mean: mean(&hd),
        empty_predictions: scores.len() - hd.len(),
    }
}

/// Summarise scores of `prepared`'s instances.
pub fn summarise(
    model: &str,
    split: &str,
    prepared: &Prepared,
    scores: &[Scores],
    jitter: &[f32],
) -> Summary {
    let all: Vec<&Scores> = scores.iter().collect();
    let overall = class_summary(&all);
    let mut by_class = BTreeMap::new();
    let mut labels: Vec<&str> = prepared
        .instances
        .iter()
        .map(|i| prepared.images[i.image].entry.label.as_str())
        .collect();
    labels.sort();
    labels.dedup();
    for label in labels.into_iter().filter(|l| !l.is_empty()) {
        let sel: Vec<&Scores> = prepared
            .instances
            .iter()
            .zip(scores)
            .filter(|(i, _)| prepared.images[i.image].entry.label == label)
            .map(|(_, s)| s)
            .collect();
        by_class.insert(label.to_string(), class_summary(&sel));
    }
    let with_protocols: Vec<&InstanceProtocols> = scores.iter().filter_map(|s| s.protocols.as_ref()).collect();
    let protocol_summary = (!with_protocols.is_empty()).then(|| protocols::summarise(&with_protocols));
    let jitter = jitter
        .iter()
        .enumerate()
        .map(|(k, j)| {
            let d: Vec<f64> = scores.iter().map(|s| s.jitter_dice[k]).collect();
            (format!("{j}"), mean(&d))
        })
        .collect();
    Summary {
        model: model.to_string(),
        split: split.to_string(),
        overall,
        by_class,
        jitter,
        descriptors: summarise_descriptors(prepared, scores),
        predicted_iou_r: pearson(scores.iter().map(|s| (f64::from(s.predicted_iou), s.iou))),
        prompts: protocol_summary.as_ref().map(|p| p.0.clone()),
        noc: protocol_summary.map(|p| p.1),
    }
}

/// Pearson's r of paired values (0 when either side is constant).
pub fn pearson(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
    let pairs: Vec<(f64, f64)> = pairs.collect();
    let n = pairs.len().max(1) as f64;
    let (mx, my) = pairs.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx, syy) = pairs.iter().fold((0.0, 0.0, 0.0), |(a, b, c), p| {
        let (dx, dy) = (p.0 - mx, p.1 - my);
        (a + dx * dy, b + dx * dx, c + dy * dy)
    });
    if sxx > 0.0 && syy > 0.0 { sxy / (sxx * syy).sqrt() } else { 0.0 }
}

/// The benign and malignant lesions described on both outlines, and how many were not.
pub fn labelled_descriptors<'a>(prepared: &Prepared, scores: &'a [Scores]) -> (Vec<Labelled<'a>>, usize) {
    let mut left_out = 0;
    let mut items = Vec::new();
    for (inst, s) in prepared.instances.iter().zip(scores) {
        let malignant = match prepared.images[inst.image].entry.label.as_str() {
            "malignant" => true,
            "benign" => false,
            _ => continue,
        };
        match &s.descriptors {
            [Some(gt), Some(pred)] => items.push(Labelled { malignant, gt, pred }),
            _ => left_out += 1,
        }
    }
    (items, left_out)
}

fn summarise_descriptors(prepared: &Prepared, scores: &[Scores]) -> Option<DescriptorSummary> {
    let (items, left_out) = labelled_descriptors(prepared, scores);
    descriptor_stats::summarise(&items, left_out)
}


/// The mask for one box (model frame) on the predictor's image under `strategy`, and its
/// predicted IoU.
pub fn predict(predictor: &Predictor<'_>, frame_box: [f32; 4], strategy: &Strategy) -> CliResult<(Mask, f32)> {
    let g = predictor.geometry().context("no image")?;
    let lr = predictor.low_res_size();
    let grows = if strategy.ensemble.is_empty() { vec![0.0] } else { strategy.ensemble.clone() };
    let prompts: Vec<Prompt> = grows.iter().map(|&a| Prompt::from_box(grow_box(frame_box, [a; 4], &g))).collect();
    let res = predictor
        .decode_frame(&prompts, None, strategy.multimask)?;
    let logits = read_f32(res.low_res_logits)?;
    let ious = read_f32(res.iou)?;
    let m = ious.len() / prompts.len();
    // Per box, the candidate with the highest predicted IoU; then the mean of the boxes.
    let mut mean = vec![0f32; lr * lr];
    let mut iou = 0.0;
    for p in 0..prompts.len() {
        let best = (0..m).max_by(|a, b| ious[p * m + a].total_cmp(&ious[p * m + b])).unwrap_or(0);
        let k = p * m + best;
        iou += ious[k] / prompts.len() as f32;
        for (acc, v) in mean.iter_mut().zip(&logits[k * lr * lr..(k + 1) * lr * lr]) {
            *acc += v / prompts.len() as f32;
        }
    }
    for _ in 0..strategy.refine {
        let mask = predictor.mask_prompt(&mean)?;
        let res = predictor.decode_frame(&[Prompt::from_box(frame_box)], Some(mask), false)?;
        mean = read_f32(res.low_res_logits)?;
        iou = read_f32(res.iou)?[0];
    }
    if strategy.threshold != 0.0 {
        mean.iter_mut().for_each(|v| *v -= strategy.threshold);
    }
    let mut mask = sonosam_model::postprocess::logits_to_mask(&mean, lr, &g);
    if strategy.largest {
        mask = mask.largest_component();
    }
    if strategy.fill {
        mask = mask.fill_holes();
    }
    Ok((mask, iou))
}

/// A predictor on `decoder` with a prepared image's cached embedding.
fn predictor<'d>(decoder: &'d SamDecoder, img: &crate::prepare::PreparedImage) -> CliResult<Predictor<'d>> {
    let mut p = Predictor::with_decoder(decoder);
    p.set_embedding_data(img.embedding.clone(), img.geometry)?;
    Ok(p)
}

/// The tight box of an instance's mask, in the model frame.
fn tight_frame_box(inst: &crate::prepare::Instance, g: &sonosam_model::preprocess::Geometry) -> CliResult<[f32; 4]> {
    Ok(g.box_to_frame(tight_box(&inst.mask).expect("instances have foreground"))?)
}

/// Candidate mask-logit biases of [`fit_mask_logit_bias`]: −2 to +3 in steps of 0.25.
pub const BIAS_GRID: [f32; 21] = [
    -2.0, -1.75, -1.5, -1.25, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75,
    2.0, 2.25, 2.5, 2.75, 3.0,
];

/// Fit the decoder's mask-logit bias for one prompt kind on `prepared` (a training split):
/// the value of [`BIAS_GRID`] with the highest mean Dice at the original resolution, for
/// tight boxes or (`clicks`) one click at each lesion's most interior point (the best of
/// three masks by predicted IoU). Returns (bias, mean Dice without it, mean Dice with it).
/// One decode per instance: the upscaled logits are thresholded at every candidate.
pub fn fit_mask_logit_bias(decoder: &SamDecoder, prepared: &Prepared, clicks: bool) -> CliResult<(f32, f64, f64)> {
    if decoder.mask_logit_bias != 0.0 || decoder.click_mask_logit_bias != 0.0 {
        bail!("the decoder is calibrated already");
    }
    let lr = decoder.prompt_encoder.mask_input_size();
    let bar = progress::items(prepared.instances.len(), "instances", if clicks { "calibrate clicks" } else { "calibrate boxes" });
    let mut sums = [0f64; BIAS_GRID.len()];
    for inst in &prepared.instances {
        bar.inc(1);
        let img = &prepared.images[inst.image];
        let g = img.geometry;
        let prompt = if clicks {
            let click = first_click(&inst.mask).expect("instances have foreground");
            Prompt { points: vec![g.point_to_frame(click.x, click.y, click.label)?], bbox: None }
        } else {
            Prompt::from_box(tight_frame_box(inst, &g)?)
        };
        let predictor = predictor(decoder, img)?;
        let logits = Session::new(&predictor, &inst.mask, prompt).answer()?.logits;
        let full = sonosam_model::postprocess::upscale_logits(&logits[..lr * lr], lr, &g);
    let gt_area = inst.mask.area();
        for (k, b) in BIAS_GRID.iter().enumerate() {
            let (mut inter, mut pred) = (0usize, 0usize);
            for (v, &t) in full.iter().zip(&inst.mask.data) {
                if v + b > 0.0 {
                    pred += 1;
                    inter += usize::from(t != 0);
                }
            }
            sums[k] += if pred + gt_area == 0 { 1.0 } else { 2.0 * inter as f64 / (pred + gt_area) as f64 };
        }
    }
    bar.finish_and_clear();
    let n = prepared.instances.len().max(1) as f64;
    let zero = BIAS_GRID.iter().position(|b| *b == 0.0).unwrap();
    // Ties go to the smallest change.
    let best = (0..BIAS_GRID.len())
        .max_by(|&a, &b| {
            sums[a].total_cmp(&sums[b]).then(BIAS_GRID[b].abs().total_cmp(&BIAS_GRID[a].abs()))
        })
        .unwrap();
    Ok((BIAS_GRID[best], sums[zero] / n, sums[best] / n))
}

/// Decode every instance with tight and jittered boxes; score at the original resolution.
/// Scores of every instance, in order. `threads` > 1 splits the instances into contiguous
/// runs scored on their own threads (worth it on the CPU backend, whose kernels are mostly
/// single-threaded); each instance's jitter is seeded by its index, so the result does not
/// depend on the split.
pub fn score(job: &Scoring<'_>, what: &str, threads: usize) -> CliResult<Vec<Scores>> {
    let prepared = job.prepared;
    let bar = progress::items(prepared.instances.len(), "instances", what);
    let n = prepared.instances.len();
    let per = n.div_ceil(threads.clamp(1, n.max(1))).max(1);
    let one = |i: usize| {
        bar.inc(1);
        job.one(i)
    };
    let out = if per >= n {
        (0..n).map(one).collect::<CliResult<Vec<_>>>()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|start| {
                    let one = &one;
                    scope.spawn(move || (start..(start + per).min(n)).map(one).collect::<CliResult<Vec<_>>>())
                })
                .collect();
            let mut all = Vec::with_capacity(n);
            for h in handles {
                all.extend(h.join().map_err(|_| anyhow!("a scoring thread panicked"))??);
            }
            Ok(all)
        })
    };
    bar.finish_and_clear();
    out
}

/// What to score: a decoder on prepared instances, with jitter levels and an inference
/// strategy.
pub struct Scoring<'a> {
    pub decoder: &'a SamDecoder,
    pub prepared: &'a Prepared,
    pub jitter: &'a [f32],
    pub seed: u64,
    pub strategy: &'a Strategy,
    /// Prompt protocols to run besides the tight and jittered boxes (`--prompt`).
    pub protocols: &'a [Protocol],
    /// Describe the true and predicted outlines (eval; not fine-tuning's validation).
    pub describe: bool,
}

impl Scoring<'_> {
    /// Scores of instance `n` (tight box, then each jitter).
    fn one(&self, n: usize) -> CliResult<Scores> {
        let Scoring { decoder, prepared, jitter, seed, strategy, protocols: asked, describe: with_descriptors } = *self;
        let lr = decoder.prompt_encoder.mask_input_size();
        let inst = &prepared.instances[n];
        let img = &prepared.images[inst.image];
        let g = img.geometry;
        let tight = tight_frame_box(inst, &g)?;
        let mut rng = Rng::derive(seed, n as u64);
        let mut boxes = vec![tight];
        for &j in jitter.iter().filter(|j| **j > 0.0) {
            boxes.push(jitter_box(tight, j, &g, &mut rng));
        }
        let predictor = predictor(decoder, img)?;
        let (dices, first) = if *strategy == Strategy::default() {
            // One batched decode of every box.
            let prompts: Vec<Prompt> = boxes.iter().map(|b| Prompt::from_box(*b)).collect();
            let res = predictor
                .decode_frame(&prompts, None, false)?;
            let logits = read_f32(res.low_res_logits)?;
            let ious = read_f32(res.iou)?;
            let mut dices = Vec::new();
            let mut first = None;
            for (k, chunk) in logits.chunks_exact(lr * lr).enumerate() {
                let seg = Segmentation::from_outputs(chunk, &ious[k..=k], lr, &g);
                dices.push(seg.masks[0].dice(&inst.mask)?);
                if k == 0 {
                    first = Some((seg.masks[0].clone(), ious[0]));
                }
            }
            (dices, first)
        } else {
            let mut dices = Vec::new();
            let mut first = None;
            for (k, b) in boxes.iter().enumerate() {
                let (mask, iou) = predict(&predictor, *b, strategy)?;
                dices.push(mask.dice(&inst.mask)?);
                if k == 0 {
                    first = Some((mask, iou));
                }
            }
            (dices, first)
        };
        let (mask, predicted_iou) = first.unwrap();
        let protocol_runs = (!asked.is_empty())
            .then(|| protocols::run(&predictor, &g, &inst.mask, tight, asked, seed, n as u64))
            .transpose()?;
        // Jitter 0 is the tight box itself.
        let jitter_dice = jitter
            .iter()
            .map(|&j| {
                if j <= 0.0 {
                    dices[0]
                } else {
                    dices[1 + jitter.iter().filter(|x| **x > 0.0).position(|x| *x == j).unwrap()]
                }
            })
            .collect();
        Ok(Scores {
            dice: dices[0],
            iou: mask.iou(&inst.mask)?,
            hd95: mask.hd95(&inst.mask)?,
            predicted_iou,
            jitter_dice,
            descriptors: if with_descriptors { [describe(&inst.mask, None).ok(), describe(&mask, None).ok()] } else { [None, None] },
            protocols: protocol_runs,
        })
    }
}

/// The seed of validation's and `eval`'s random prompts (jittered boxes) unless told: one
/// fixed set of boxes, whatever the training seed.
pub const PROMPT_SEED: u64 = 0;

/// Scores of `decoder` on `prepared` with tight boxes and the plain strategy, and the prompt
/// `protocols` — how fine-tuning validates. Every asked protocol has its entry in `prompts`
/// or `noc` (`tight` is the tight-box score every instance gets anyway, not decoded twice).
pub fn validate(decoder: &SamDecoder, prepared: &Prepared, split: &str, protocols: &[Protocol], threads: usize) -> CliResult<Summary> {
    let asked: Vec<Protocol> = protocols.iter().copied().filter(|p| *p != Protocol::Tight).collect();
    let job = Scoring { decoder, prepared, jitter: &[0.0], seed: PROMPT_SEED, strategy: &Strategy::default(), protocols: &asked, describe: false };
    let scores = score(&job, "validate", threads)?;
    let mut summary = summarise("", split, prepared, &scores, &[0.0]);
    if protocols.contains(&Protocol::Tight) {
        let o = &summary.overall;
        let tight = ProtocolSummary { dice_mean: o.dice_mean, dice_median: o.dice_median, n: o.n };
        summary.prompts.get_or_insert_with(BTreeMap::new).insert(Protocol::Tight.key(), tight);
    }
    Ok(summary)
}
