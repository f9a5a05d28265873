//! `sonosam eval`: Dice, IoU and HD95 per instance at the original resolution, summaries by
//! class, a box-jitter robustness curve, and side-by-side comparison of two decoders.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sonosam_model::backend::{BackendKind, host_threads, init_device};
use sonosam_model::burn::tensor::{Tensor, TensorData};
use sonosam_model::rng::Rng;
use sonosam_model::sam::DECODER_PREFIXES;
use sonosam_model::segmentation::read_f32;
use sonosam_model::train::{grow_box, jitter_box, tight_box};
use sonosam_model::{Mask, Predictor, Prompt, SamDecoder, Segmentation, StoreDType, TensorMap};

use crate::CliResult;
use sonosam_data::Dataset;
use crate::fetch::write_atomic;
use crate::model_io::{self, ModelArgs};
use crate::prepare::{EmbeddingCache, Prepared, cache_root, model_key, prepare};

#[derive(Args)]
pub struct EvalArgs {
    /// Data folder (BUSI layout with splits.csv, or images/ + masks/).
    #[arg(long)]
    pub data: PathBuf,
    /// Splits file [default: DATA/splits.csv].
    #[arg(long)]
    pub splits: Option<PathBuf>,
    /// Split to evaluate (train, val, test, all).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Decoder to evaluate: `base`, a fine-tuning run folder or a decoder .safetensors file.
    /// Give it twice to compare two decoders side by side.
    #[arg(long = "decoder", default_value = "base")]
    pub decoders: Vec<String>,
    /// Box jitter levels (px per side at the model frame) for the robustness curve.
    #[arg(long, default_value = "0,5,10,20", value_delimiter = ',')]
    pub jitter: Vec<f32>,
    /// Seed of the box jitter.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-instance CSV [default: eval_<split>.csv].
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Also write the summary as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Only the first N images of the split (quick checks).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value = "cpu", value_parser = crate::parse_backend)]
    pub backend: BackendKind,
    /// Weights precision: f32, f16 or i8 (the browser's files; computation is f32).
    #[arg(long, default_value = "f32", value_parser = crate::segment::parse_dtype)]
    pub dtype: StoreDType,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cache folder for embeddings [env: SONOSAM_CACHE; default: ~/.cache/sonosam].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Inference strategy (comma-separated): `multimask` (best of 3 by predicted IoU),
    /// `refine=N` (N passes with the previous logits as mask prompt), `ensemble=A:B:…`
    /// (average the logits of the box grown by A, B… px per side at the model frame),
    /// `largest` (largest connected component), `fill` (fill holes), `threshold=T` (logit
    /// threshold, default 0). Empty: one plain decode.
    #[arg(long, default_value = "")]
    pub strategy: String,
}

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
    }
}

/// Resolve `--decoder`: `base` (the model's own), a fine-tuning run folder (its exported
/// decoder, which must come from the same base model) or a decoder .safetensors file.
pub fn decoder_weights(spec: &str, model_id: &str, base: &TensorMap) -> CliResult<(String, TensorMap)> {
    if spec == "base" {
        return Ok(("base".into(), base.subset(&DECODER_PREFIXES, "base decoder")));
    }
    let path = PathBuf::from(spec);
    let file = if path.is_dir() {
        let card = path.join("model.json");
        if let Ok(bytes) = std::fs::read(&card) {
            let card: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not valid JSON: {e}", card.display()))?;
            if let Some(b) = card["base_model"].as_str()
                && b != model_id
            {
                return Err(format!(
                    "{spec} was fine-tuned on {b} embeddings: it cannot decode {model_id} \
                     embeddings (pass --model {b})"
                ));
            }
        }
        path.join("decoder.f32.safetensors")
    } else {
        path.clone()
    };
    let bytes = model_io::read(&file)?;
    let map = TensorMap::from_safetensors(&bytes, file.display().to_string())
        .map_err(|e| e.to_string())?;
    Ok((spec.to_string(), map))
}

/// The mask for one box (model frame) on the predictor's image under `strategy`, and its
/// predicted IoU.
pub fn predict(predictor: &Predictor<'_>, frame_box: [f32; 4], strategy: &Strategy) -> CliResult<(Mask, f32)> {
    let g = predictor.geometry().ok_or("no image")?;
    let lr = predictor.low_res_size();
    let grows = if strategy.ensemble.is_empty() { vec![0.0] } else { strategy.ensemble.clone() };
    let prompts: Vec<Prompt> = grows.iter().map(|&a| Prompt::from_box(grow_box(frame_box, [a; 4], &g))).collect();
    let res = predictor
        .decode_frame(&prompts, None, strategy.multimask)
        .map_err(|e| e.to_string())?;
    let logits = read_f32(res.low_res_logits).map_err(|e| e.to_string())?;
    let ious = read_f32(res.iou).map_err(|e| e.to_string())?;
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
        let device = predictor.decoder().prompt_encoder.dense_pe().device();
        let mask = Tensor::<4>::from_data(TensorData::new(mean.clone(), [1, 1, lr, lr]), &device);
        let res = predictor
            .decode_frame(&[Prompt::from_box(frame_box)], Some(mask), false)
            .map_err(|e| e.to_string())?;
        mean = read_f32(res.low_res_logits).map_err(|e| e.to_string())?;
        iou = read_f32(res.iou).map_err(|e| e.to_string())?[0];
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
    p.set_embedding_data(img.embedding.clone(), img.geometry).map_err(|e| e.to_string())?;
    Ok(p)
}

/// The tight box of an instance's mask, in the model frame.
fn tight_frame_box(inst: &crate::prepare::Instance, g: &sonosam_model::preprocess::Geometry) -> CliResult<[f32; 4]> {
    g.box_to_frame(tight_box(&inst.mask).expect("instances have foreground"))
        .map_err(|e| e.to_string())
}

/// Candidate mask-logit biases of [`fit_mask_logit_bias`]: −2 to +3 in steps of 0.25.
pub const BIAS_GRID: [f32; 21] = [
    -2.0, -1.75, -1.5, -1.25, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75,
    2.0, 2.25, 2.5, 2.75, 3.0,
];

/// Fit the decoder's mask-logit bias on `prepared` (a training split): the value of
/// [`BIAS_GRID`] with the highest mean Dice at the original resolution, tight boxes. Returns
/// (bias, mean Dice without it, mean Dice with it). One decode per instance: the upscaled
/// logits are thresholded at every candidate.
pub fn fit_mask_logit_bias(decoder: &SamDecoder, prepared: &Prepared) -> CliResult<(f32, f64, f64)> {
    if decoder.mask_logit_bias != 0.0 {
        return Err("the decoder is calibrated already".into());
    }
    let lr = decoder.prompt_encoder.mask_input_size();
    let bar = ProgressBar::new(prepared.instances.len() as u64).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} instances, ETA {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_message("calibrate");
    let mut sums = [0f64; BIAS_GRID.len()];
    for inst in &prepared.instances {
        bar.inc(1);
        let img = &prepared.images[inst.image];
        let g = img.geometry;
        let tight = tight_frame_box(inst, &g)?;
        let res = predictor(decoder, img)?.decode_frame(&[Prompt::from_box(tight)], None, false).map_err(|e| e.to_string())?;
        let logits = read_f32(res.low_res_logits).map_err(|e| e.to_string())?;
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
    let bar = ProgressBar::new(prepared.instances.len() as u64).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} instances, ETA {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
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
                all.extend(h.join().map_err(|_| "a scoring thread panicked".to_string())??);
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
}

impl Scoring<'_> {
    /// Scores of instance `n` (tight box, then each jitter).
    fn one(&self, n: usize) -> CliResult<Scores> {
        let Scoring { decoder, prepared, jitter, seed, strategy } = *self;
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
                .decode_frame(&prompts, None, false)
                .map_err(|err| err.to_string())?;
            let logits = read_f32(res.low_res_logits).map_err(|e| e.to_string())?;
            let ious = read_f32(res.iou).map_err(|e| e.to_string())?;
            let mut dices = Vec::new();
            let mut first = None;
            for (k, chunk) in logits.chunks_exact(lr * lr).enumerate() {
                let seg = Segmentation::from_outputs(chunk, &ious[k..=k], lr, &g);
                dices.push(seg.masks[0].dice(&inst.mask).map_err(|e| e.to_string())?);
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
                dices.push(mask.dice(&inst.mask).map_err(|e| e.to_string())?);
                if k == 0 {
                    first = Some((mask, iou));
                }
            }
            (dices, first)
        };
        let (mask, predicted_iou) = first.unwrap();
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
            iou: mask.iou(&inst.mask).map_err(|e| e.to_string())?,
            hd95: mask.hd95(&inst.mask).map_err(|e| e.to_string())?,
            predicted_iou,
            jitter_dice,
        })
    }
}

fn print_table(summaries: &[Summary], jitter: &[f32]) {
    let w = 14;
    print!("{:<22}", "");
    for s in summaries {
        print!("{:>w$}", truncate(&s.model, w - 1));
    }
    println!();
    let row = |name: &str, f: &dyn Fn(&Summary) -> String| {
        print!("{name:<22}");
        for s in summaries {
            print!("{:>w$}", f(s));
        }
        println!();
    };
    row("instances", &|s| s.overall.n.to_string());
    row("Dice mean", &|s| format!("{:.4}", s.overall.dice_mean));
    row("Dice median", &|s| format!("{:.4}", s.overall.dice_median));
    row("IoU mean", &|s| format!("{:.4}", s.overall.iou_mean));
    row("IoU median", &|s| format!("{:.4}", s.overall.iou_median));
    row("HD95 mean (px)", &|s| format!("{:.2}", s.overall.hd95_mean));
    let classes: Vec<String> = summaries[0].by_class.keys().cloned().collect();
    for c in &classes {
        row(&format!("{c}: n"), &|s| s.by_class.get(c).map_or("-".into(), |x| x.n.to_string()));
        row(&format!("{c}: Dice mean"), &|s| {
            s.by_class.get(c).map_or("-".into(), |x| format!("{:.4}", x.dice_mean))
        });
        row(&format!("{c}: IoU mean"), &|s| {
            s.by_class.get(c).map_or("-".into(), |x| format!("{:.4}", x.iou_mean))
        });
        row(&format!("{c}: HD95 mean"), &|s| {
            s.by_class.get(c).map_or("-".into(), |x| format!("{:.2}", x.hd95_mean))
        });
    }
    for j in jitter {
        row(&format!("Dice, jitter {j} px"), &|s| {
            format!("{:.4}", s.jitter.get(&format!("{j}")).copied().unwrap_or(f64::NAN))
        });
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().rev().take(n - 1).collect::<Vec<_>>().into_iter().rev().collect();
        format!("…{tail}")
    }
}

pub fn run(args: EvalArgs) -> CliResult<()> {
    if args.decoders.len() > 2 {
        return Err("give at most two --decoder to compare".into());
    }
    let data = Dataset::open(&args.data, args.splits.as_deref())?;
    let mut entries = data.split(&args.split);
    if entries.is_empty() {
        return Err(format!("split `{}` has no images in {}", args.split, args.data.display()));
    }
    if let Some(n) = args.limit {
        entries.truncate(n);
    }
    let device = init_device(args.backend).map_err(|e| e.to_string())?;
    let loaded = args.model.load(args.dtype, &device)?;
    let sam = &loaded.sam;
    let e = sam.config.decoder.embedding_size;
    let cache = EmbeddingCache::new(
        &cache_root(args.cache.clone()),
        &model_key(&loaded.encoder_sha256, args.model.reference_compat),
        sam.config.decoder.embed_dim * e * e,
    )?;
    let prepared = prepare(&data, &entries, sam, &cache, &args.split)?;
    prepared.report_skipped(&args.split);
    if prepared.instances.is_empty() {
        return Err("no instance to evaluate".into());
    }

    let mut summaries = Vec::new();
    let mut all_scores = Vec::new();
    for spec in &args.decoders {
        let (name, weights) = decoder_weights(spec, &loaded.id, &loaded.base_decoder)?;
        let decoder = SamDecoder::load(&sam.config, &weights, &device).map_err(|e| e.to_string())?;
        let strategy: Strategy = args.strategy.parse()?;
        let job = Scoring {
            decoder: &decoder,
            prepared: &prepared,
            jitter: &args.jitter,
            seed: args.seed,
            strategy: &strategy,
        };
        let scores = score(&job, &name, host_threads(args.backend))?;
        summaries.push(summarise(&name, &args.split, &prepared, &scores, &args.jitter));
        all_scores.push((name, scores));
    }
    println!(
        "\n{} split of {}: tight ground-truth boxes, scores at the original resolution{}",
        args.split,
        args.data.display(),
        if args.model.reference_compat { " (reference-compat encoder)" } else { "" }
    );
    print_table(&summaries, &args.jitter);

    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("eval_{}.csv", args.split)));
    let mut csv = String::from("model,image,mask,label,dice,iou,hd95,predicted_iou");
    for j in &args.jitter {
        csv.push_str(&format!(",dice_jitter_{j}"));
    }
    csv.push('\n');
    for (name, scores) in &all_scores {
        for (inst, s) in prepared.instances.iter().zip(scores) {
            let img = &prepared.images[inst.image].entry;
            csv.push_str(&format!(
                "{},\"{}\",\"{}\",{},{:.6},{:.6},{},{:.6}",
                name,
                img.image,
                inst.mask_path,
                img.label,
                s.dice,
                s.iou,
                s.hd95.map_or(String::new(), |h| format!("{h:.4}")),
                s.predicted_iou
            ));
            for d in &s.jitter_dice {
                csv.push_str(&format!(",{d:.6}"));
            }
            csv.push('\n');
        }
    }
    write_atomic(&csv_path, csv.as_bytes())?;
    println!("\nper-instance scores: {}", csv_path.display());
    if let Some(path) = &args.json {
        let mut json = serde_json::to_value(&summaries[0]).map_err(|e| e.to_string())?;
        json["models"] = serde_json::to_value(&summaries).map_err(|e| e.to_string())?;
        json["reference_compat"] = serde_json::Value::Bool(args.model.reference_compat);
        json["base_model"] = serde_json::Value::String(loaded.id.clone());
        write_atomic(path, &serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?)?;
        println!("summary: {}", path.display());
    }
    Ok(())
}
