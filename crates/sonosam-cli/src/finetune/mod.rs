//! `sonosam finetune`: train the mask decoder on labelled data (frozen image encoder; the
//! prompt encoder frozen or trained with it), with validation every epoch, atomic best/last
//! checkpoints, resume, and export to the browser's weight format.

mod batches;
mod records;

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};
use sonosam_data::Dataset;
use sonosam_model::backend::{BackendKind, host_threads};
use sonosam_model::rng::Rng;
use sonosam_model::sam::{CLICK_MASK_LOGIT_BIAS_KEY, DECODER_PREFIXES, MASK_LOGIT_BIAS_KEY};
use sonosam_model::burn::tensor::Device;
use sonosam_model::train::{Adam, AdamConfig, DecoderTrainer, LossKind, default_shards, target_low_res};
use sonosam_model::weights::sha256_hex;
use sonosam_model::{SamDecoder, StoreDType, TensorMap};

use crate::CliResult;
use crate::files::write_atomic;
use crate::model_io::{ModelArgs, decoder_weights};
use crate::prepare::{Prepared, Study, split_entries};
use crate::progress;
use crate::protocols::Protocol;
use crate::scoring::{fit_mask_logit_bias, validate};
use batches::{PromptMix, make_batch};
use records::{EpochMetrics, State, ValScores, plot, read_checkpoint, read_metrics, save_checkpoint, write_metrics};

#[derive(Args, Clone, Serialize, Deserialize)]
pub struct FinetuneArgs {
    /// Data folder (BUSI layout with splits.csv, or images/ + masks/).
    #[arg(long)]
    pub data: PathBuf,
    /// Splits file [default: DATA/splits.csv].
    #[arg(long)]
    pub splits: Option<PathBuf>,
    /// Run folder: checkpoints, metrics.csv, curves.svg, the exported decoder.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// Cosine decay of the learning rate to 0 over the run (default: constant).
    #[arg(long)]
    pub cosine: bool,
    /// `dice` or `dice+bce`.
    #[arg(long, default_value = "dice", value_parser = parse_loss)]
    pub loss: LossKind,
    /// How samples are prompted: boxes with jitter, clicks, correction rounds.
    #[command(flatten)]
    #[serde(flatten)]
    pub prompts: PromptMix,
    /// Also train the IoU head: this weight × the squared error of each predicted IoU
    /// against its mask's real IoU (0: the head is left as it is).
    #[arg(long, default_value_t = 0.0)]
    pub iou_weight: f64,
    /// Train the prompt encoder too: its click, box-corner, not-a-point and no-mask
    /// embeddings and the convolutions that embed a mask prompt (LiteMedSAM learned boxes
    /// only; by default these stay as they are).
    #[arg(long)]
    #[serde(default)]
    pub train_prompt_encoder: bool,
    /// What validation scores and the best epoch is chosen by: the mean Dice over these
    /// prompt protocols (tight, jitterN, click) on the validation split.
    #[arg(long, value_delimiter = ',', default_value = "tight,jitter10,jitter20,click", value_parser = parse_objective)]
    pub objective: Vec<Protocol>,
    /// Adam (L2) weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu", value_parser = crate::parse_backend)]
    pub backend: BackendKind,
    /// Training split name.
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Validation split name (never the test split).
    #[arg(long, default_value = "val")]
    pub val_split: String,
    /// Use only the first N training / validation images (quick runs, CI).
    #[arg(long)]
    pub limit_train: Option<usize>,
    #[arg(long)]
    pub limit_val: Option<usize>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start from this decoder (`base`, a run folder or a .safetensors file).
    #[arg(long, default_value = "base")]
    pub init: String,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cache folder for embeddings [env: SONOSAM_CACHE; default: ~/.cache/sonosam].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Also read and write embeddings in this Redis, as `serve --cache-url` and `embed` do.
    #[arg(long)]
    pub cache_url: Option<String>,
    /// After training, fit biases added to the mask logits (the decision threshold) — one for
    /// boxes, one for clicks alone — on the training split, and export those that raise the
    /// validation objective. With `--epochs 0` only that is done.
    #[arg(long)]
    pub calibrate: bool,
    /// After training, also validate weight averages of the starting and the best decoder,
    /// (1 − a)·start + a·best for each a (between 0 and 1, e.g. 0.25,0.5,0.75: weight-space
    /// ensembling, WiSE-FT), and go on with whichever of them and the best epoch scores highest
    /// on the validation objective: an average can keep what the starting decoder did well
    /// (tight boxes) with what fine-tuning added (clicks, loose boxes).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub average_with_start: Vec<f64>,
}

fn lr_at(args: &FinetuneArgs, epoch: usize) -> f64 {
    if args.cosine && args.epochs > 1 {
        args.lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / args.epochs as f64).cos())
    } else {
        args.lr
    }
}

fn parse_loss(s: &str) -> Result<LossKind, String> {
    s.parse()
}

/// A single-prompt protocol (the objective averages Dice over them).
fn parse_objective(s: &str) -> Result<Protocol, String> {
    match s.parse::<Protocol>()? {
        Protocol::CorrectFromBox | Protocol::CorrectFromClick => {
            Err(format!("`{s}` is a correction run: the objective takes tight, jitterN and click"))
        }
        p => Ok(p),
    }
}

/// The data of a run: the prepared training and validation splits, and the training targets.
struct RunData {
    train: Prepared,
    val: Prepared,
    /// Low-res training target of each training instance (they depend only on the mask).
    targets: Vec<Vec<f32>>,
}

/// A run in progress: the trainer, the checkpoint state and the metrics so far.
struct Progress {
    trainer: DecoderTrainer,
    state: State,
    rows: Vec<EpochMetrics>,
}

pub fn run(args: FinetuneArgs) -> CliResult<()> {
    check_args(&args)?;
    let study = open_study(&args)?;
    let data = prepare_data(&args, &study)?;
    let mut run = start_or_resume(&args, &study, &data)?;
    for epoch in run.state.epoch + 1..=args.epochs {
        let (train_loss, lr, seconds) = train_epoch(&args, &study.device, &mut run.trainer, &data, epoch)?;
        end_epoch(&args, &study, &data, &mut run, epoch, train_loss, lr, seconds)?;
    }
    let (_, best) = read_checkpoint(&args.out.join("best"))?;
    let (decoder, averaging) = average_with_start(&args, &study, &data, &run.state, best.decoder)?;
    let calibration = if args.calibrate { Some(calibrate(&args, &study, &data, &decoder)?) } else { None };
    export(&args, &study, &data, &run, Chosen { decoder, averaging, calibration })
}

/// Refuse what cannot be a sensible run before any work.
fn check_args(args: &FinetuneArgs) -> CliResult<()> {
    if args.val_split == "test" || args.train_split == "test" {
        bail!("never train or tune on the test split: pick another --train-split/--val-split");
    }
    if args.batch_size == 0 || (args.epochs == 0 && !args.calibrate) {
        bail!("--batch-size and --epochs must be positive (--epochs 0 only with --calibrate)");
    }
    if !(args.iou_weight >= 0.0 && args.iou_weight.is_finite()) || args.objective.is_empty() {
        bail!("--iou-weight must be 0 or more, and --objective name at least one protocol");
    }
    if args.average_with_start.iter().any(|a| !(*a > 0.0 && *a < 1.0)) {
        bail!("--average-with-start takes fractions between 0 and 1 (the fine-tuned decoder's share)");
    }
    if args.prompts.box_multimask && args.iou_weight == 0.0 {
        bail!("--box-multimask needs --iou-weight above 0: the IoU head picks a box's mask");
    }
    args.prompts.check()
}

/// The data set (both splits must have images) and the model, and the run folder.
fn open_study(args: &FinetuneArgs) -> CliResult<Study> {
    let data = Dataset::open(&args.data, args.splits.as_deref()).map_err(anyhow::Error::msg)?;
    let empty = |split: &str, limit| split_entries(&data, split, limit).is_empty();
    if empty(&args.train_split, args.limit_train) || empty(&args.val_split, args.limit_val) {
        bail!("need images in both splits `{}` and `{}`", args.train_split, args.val_split);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    Study::open(data, &args.model, StoreDType::F32, args.backend, args.cache.clone(), args.cache_url.as_deref())
}

/// Both splits with their embeddings, and the training targets.
fn prepare_data(args: &FinetuneArgs, study: &Study) -> CliResult<RunData> {
    let train = study.prepare(&args.train_split, args.limit_train)?;
    let val = study.prepare(&args.val_split, args.limit_val)?;
    if train.instances.is_empty() || val.instances.is_empty() {
        bail!("no usable training or validation instance");
    }
    let lr_size = study.model.sam.config.low_res_size();
    let targets = train
        .instances
        .iter()
        .map(|i| target_low_res(&i.mask, &train.images[i.image].geometry, lr_size))
        .collect::<Result<_, _>>()?;
    Ok(RunData { train, val, targets })
}

/// A new run from `--init` (validated once: the starting decoder is the best until an epoch
/// beats it), or the run in `--out` from its last checkpoint.
fn start_or_resume(args: &FinetuneArgs, study: &Study, data: &RunData) -> CliResult<Progress> {
    let (config, device) = (study.model.sam.config.clone(), &study.device);
    let last_dir = args.out.join("last");
    let progress = if args.resume {
        let from = if last_dir.exists() { last_dir.clone() } else { last_dir.with_extension("old") };
        let (state, checkpoint) = read_checkpoint(&from)?;
        if state.objective != objective_names(args) {
            bail!(
                "the run in {} chose its best epoch by {}: resume it with --objective {0}",
                args.out.display(),
                state.objective.join(",")
            );
        }
        let trainer = DecoderTrainer::from_checkpoint(config, &checkpoint, device)?;
        println!("resuming {} after epoch {}", args.out.display(), state.epoch);
        let rows = read_metrics(&args.out.join("metrics.csv"), state.epoch);
        Progress { trainer: configure(args, trainer)?, state, rows }
    } else {
        let init = start_weights(args, study, true)?;
        let adam = Adam::new(AdamConfig { weight_decay: args.weight_decay, ..Default::default() });
        let trainer = DecoderTrainer::new(config, &init, device, adam)?;
        let state = State {
            epoch: 0,
            best_epoch: 0,
            best_val_score: f64::NEG_INFINITY,
            base_val_score: f64::NAN,
            objective: objective_names(args),
            decoder_sha256: String::new(),
            adam_sha256: String::new(),
        };
        Progress { trainer: configure(args, trainer)?, state, rows: Vec::new() }
    };
    write_atomic(&args.out.join("config.json"), &serde_json::to_vec_pretty(args)?)?;
    let mut progress = progress;
    if progress.state.epoch == 0 {
        let base = validate_trainer(args, study, data, &progress.trainer)?;
        progress.state.best_val_score = base.score;
        progress.state.base_val_score = base.score;
        println!("validation before fine-tuning: {}", describe(&base));
        save_checkpoint(&args.out.join("best"), &progress.trainer, &mut progress.state)?;
    }
    // Only now: the starting decoder is validated (and kept as the best so far) as it is.
    let Progress { trainer, state, rows } = progress;
    Ok(Progress { trainer: trainer.with_box_multimask(args.prompts.box_multimask), state, rows })
}

/// The starting decoder (`--init`) without its mask-logit biases: training works on raw
/// logits, so a calibrated starting decoder leaves its bias behind (validation and export would
/// otherwise apply a bias the training never saw). `say` notes it when there was one.
fn start_weights(args: &FinetuneArgs, study: &Study, say: bool) -> CliResult<TensorMap> {
    let (_, mut init) = decoder_weights(&args.init, &study.model.id, &study.model.base_decoder)?;
    init.remove_metadata(CLICK_MASK_LOGIT_BIAS_KEY);
    if let Some(bias) = init.remove_metadata(MASK_LOGIT_BIAS_KEY).filter(|_| say) {
        println!(
            "note: {} is calibrated (mask-logit bias {bias}): training starts from its weights \
             without the bias; --calibrate fits a new one",
            args.init
        );
    }
    Ok(init)
}

/// The trainer as the run asks: threads for the backend, the IoU head's loss, what is trained.
fn configure(args: &FinetuneArgs, trainer: DecoderTrainer) -> CliResult<DecoderTrainer> {
    let trainer = trainer.with_shards(default_shards(args.backend)).with_iou_loss(args.iou_weight);
    Ok(trainer.with_prompt_encoder_training(args.train_prompt_encoder)?)
}

/// The objective's protocols by name, as the run's state records them.
fn objective_names(args: &FinetuneArgs) -> Vec<String> {
    args.objective.iter().map(|p| p.name()).collect()
}

/// The trainer's current decoder on the validation split.
fn validate_trainer(args: &FinetuneArgs, study: &Study, data: &RunData, trainer: &DecoderTrainer) -> CliResult<ValScores> {
    let decoder = SamDecoder::load(&trainer.config, &trainer.decoder_weights(), &study.device)?;
    validate_decoder(args, data, &decoder)
}

/// `decoder`'s objective score on the validation split: the mean over the objective's
/// protocols of their mean Dice, with the tight box's Dice and IoU.
fn validate_decoder(args: &FinetuneArgs, data: &RunData, decoder: &SamDecoder) -> CliResult<ValScores> {
    let s = validate(decoder, &data.val, &args.val_split, &args.objective, host_threads(args.backend))?;
    let prompts: BTreeMap<String, f64> = s.prompts.iter().flatten().map(|(k, p)| (k.clone(), p.dice_mean)).collect();
    let score = prompts.values().sum::<f64>() / prompts.len().max(1) as f64;
    Ok(ValScores { score, dice: s.overall.dice_mean, iou: s.overall.iou_mean, prompts })
}

/// "score 0.9012 (tight 0.93, …)".
fn describe(v: &ValScores) -> String {
    let parts: Vec<String> = v.prompts.iter().map(|(k, d)| format!("{k} {d:.4}")).collect();
    format!("score {:.4} ({}), tight-box IoU {:.4}", v.score, parts.join(", "), v.iou)
}

/// One epoch over the shuffled training instances: the mean training loss, the learning rate
/// and the seconds it took.
fn train_epoch(args: &FinetuneArgs, device: &Device, trainer: &mut DecoderTrainer, data: &RunData, epoch: usize) -> CliResult<(f64, f64, f64)> {
    let lr = lr_at(args, epoch - 1);
    let t0 = Instant::now();
    let train = &data.train;
    let mut order: Vec<usize> = (0..train.instances.len()).collect();
    Rng::derive(args.seed, epoch as u64).shuffle(&mut order);
    let steps = train.instances.len().div_ceil(args.batch_size);
    let bar = progress::epoch(steps, epoch, args.epochs);
    let mut loss_sum = 0.0;
    for (step, chunk) in order.chunks(args.batch_size).enumerate() {
        let mut rng = Rng::derive(args.seed, ((epoch as u64) << 32) | step as u64);
        let current = || Ok(SamDecoder::load(&trainer.config, &trainer.decoder_weights(), device)?);
        let batch = make_batch(&args.prompts, &data.train, &data.targets, chunk, current, &mut rng)?;
        loss_sum += f64::from(trainer.step(&batch, args.loss, lr)?);
        bar.set_message(format!("{:.4}", loss_sum / (step + 1) as f64));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((loss_sum / steps as f64, lr, t0.elapsed().as_secs_f64()))
}

/// After an epoch: validate, report, keep the checkpoint (as best too when it beats the best),
/// and write the metrics and curves.
#[allow(clippy::too_many_arguments)]
fn end_epoch(
    args: &FinetuneArgs,
    study: &Study,
    data: &RunData,
    run: &mut Progress,
    epoch: usize,
    train_loss: f64,
    lr: f64,
    seconds_training: f64,
) -> CliResult<()> {
    let t0 = Instant::now();
    let val = validate_trainer(args, study, data, &run.trainer)?;
    let seconds = seconds_training + t0.elapsed().as_secs_f64();
    println!("epoch {epoch}/{}: train loss {train_loss:.4}, val {}, lr {lr:.2e}, {seconds:.0} s", args.epochs, describe(&val));
    let score = val.score;
    run.rows.push(EpochMetrics { epoch, train_loss, val, lr, seconds });
    run.state.epoch = epoch;
    if score > run.state.best_val_score {
        run.state.best_val_score = score;
        run.state.best_epoch = epoch;
        save_checkpoint(&args.out.join("best"), &run.trainer, &mut run.state)?;
    }
    save_checkpoint(&args.out.join("last"), &run.trainer, &mut run.state)?;
    write_metrics(&args.out.join("metrics.csv"), &run.rows)?;
    plot(&args.out.join("curves.svg"), &run.rows, run.state.base_val_score)
}

/// Fit the chosen decoder's mask-logit biases — one for boxes, one for clicks alone — on the
/// training split; then keep those that help: of no bias, either, or both, the choice with
/// the best validation objective (ties to fewer). A box bias fitted on tight boxes also moves
/// jittered boxes, which it can hurt: the objective weighs both.
fn calibrate(args: &FinetuneArgs, study: &Study, data: &RunData, weights: &TensorMap) -> CliResult<Calibration> {
    let config = &study.model.sam.config;
    let decoder = SamDecoder::load(config, weights, &study.device)?;
    let boxes = fit_mask_logit_bias(&decoder, &data.train, false)?;
    let clicks = fit_mask_logit_bias(&decoder, &data.train, true)?;
    println!(
        "fitted on {}: mask-logit bias {:+.2} for boxes (train tight-box Dice {:.4} → {:.4}), {:+.2} for clicks \
         (train one-click Dice {:.4} → {:.4})",
        args.train_split, boxes.0, boxes.1, boxes.2, clicks.0, clicks.1, clicks.2
    );
    let mut choices: Vec<(f32, f32, ValScores)> = Vec::new();
    for (b, c) in [(0.0, 0.0), (boxes.0, 0.0), (0.0, clicks.0), (boxes.0, clicks.0)] {
        if choices.iter().any(|x| (x.0, x.1) == (b, c)) {
            continue;
        }
        let mut w = weights.subset(&DECODER_PREFIXES, "calibrated decoder");
        w.set_metadata(MASK_LOGIT_BIAS_KEY, b.to_string());
        w.set_metadata(CLICK_MASK_LOGIT_BIAS_KEY, c.to_string());
        let val = validate_decoder(args, data, &SamDecoder::load(config, &w, &study.device)?)?;
        println!("  boxes {b:+.2}, clicks {c:+.2}: val {}", describe(&val));
        choices.push((b, c, val));
    }
    let val_before = choices[0].2.clone();
    let (bias, click_bias, val_after) = choices.into_iter().fold(None, |best: Option<(f32, f32, ValScores)>, x| match best {
        Some(b) if b.2.score >= x.2.score => Some(b),
        _ => Some(x),
    }).expect("at least no bias");
    println!("calibration kept: boxes {bias:+.2}, clicks {click_bias:+.2} (val score {:.4} → {:.4})", val_before.score, val_after.score);
    Ok(Calibration {
        bias,
        click_bias,
        fitted_bias: boxes.0,
        train_dice_before: boxes.1,
        train_dice_after: boxes.2,
        fitted_click_bias: clicks.0,
        click_train_dice_before: clicks.1,
        click_train_dice_after: clicks.2,
        val_before,
        val_after,
    })
}

/// The mask-logit biases kept (`bias`: boxes, `click_bias`: clicks alone; 0 where fitting did
/// not help on validation), those fitted on the training split and what they did there
/// (tight boxes, one click), and the validation objective without and with the kept ones.
#[derive(Serialize)]
struct Calibration {
    bias: f32,
    click_bias: f32,
    fitted_bias: f32,
    train_dice_before: f64,
    train_dice_after: f64,
    fitted_click_bias: f32,
    click_train_dice_before: f64,
    click_train_dice_after: f64,
    val_before: ValScores,
    val_after: ValScores,
}

/// What the run exports: the decoder chosen after training, how (the weight averages tried,
/// when asked for) and its calibration (when asked for).
struct Chosen {
    decoder: TensorMap,
    averaging: Option<Averaging>,
    calibration: Option<Calibration>,
}

/// The decoder the run goes on with: the best epoch's, or the weight average of the starting
/// decoder and it (`--average-with-start`) that scores highest on the validation objective
/// (ties to the best epoch as it is).
fn average_with_start(args: &FinetuneArgs, study: &Study, data: &RunData, state: &State, best: TensorMap) -> CliResult<(TensorMap, Option<Averaging>)> {
    if args.average_with_start.is_empty() {
        return Ok((best, None));
    }
    if state.best_epoch == 0 {
        println!("no epoch beat the starting decoder on validation: nothing to average");
        return Ok((best, None));
    }
    let (start, best) = (start_weights(args, study, false)?.subset(&DECODER_PREFIXES, "starting decoder"), best.subset(&DECODER_PREFIXES, "best epoch"));
    println!("weight averages of the starting decoder and epoch {} on {}:", state.best_epoch, args.val_split);
    let mut tried = Vec::new();
    let (mut kept, mut kept_score, mut kept_weights) = (1.0, state.best_val_score, None);
    for &share in &args.average_with_start {
        let weights = start.interpolate(&best, share as f32, format!("{:.2}·start + {share:.2}·best", 1.0 - share))?;
        let val = validate_decoder(args, data, &SamDecoder::load(&study.model.sam.config, &weights, &study.device)?)?;
        println!("  {:.2}·start + {share:.2}·epoch {}: val {}", 1.0 - share, state.best_epoch, describe(&val));
        if val.score > kept_score {
            (kept, kept_score, kept_weights) = (share, val.score, Some(weights));
        }
        tried.push(AverageScore { share, val });
    }
    println!("weight averaging kept: {kept:.2}·epoch {} (val score {kept_score:.4}; the epoch alone {:.4})", state.best_epoch, state.best_val_score);
    let averaging = Averaging { best_epoch: state.best_epoch, best_epoch_val_score: state.best_val_score, tried, kept_share: kept };
    Ok((kept_weights.unwrap_or(best), Some(averaging)))
}

/// The weight averages tried (`share`: the best epoch's weight, the rest the starting
/// decoder's) with their validation scores, and the share kept (1: the best epoch as it is).
#[derive(Serialize)]
struct Averaging {
    best_epoch: usize,
    best_epoch_val_score: f64,
    tried: Vec<AverageScore>,
    kept_share: f64,
}

#[derive(Serialize)]
struct AverageScore {
    share: f64,
    val: ValScores,
}

/// Every prompt protocol of `eval` on the validation split, for the run card: per-protocol
/// Dice, NoC from a box and from a click, and the predicted IoU's correlation with the real.
fn card_validation(args: &FinetuneArgs, study: &Study, data: &RunData, weights: &TensorMap) -> CliResult<serde_json::Value> {
    let decoder = SamDecoder::load(&study.model.sam.config, weights, &study.device)?;
    let all = ["tight", "jitter10", "jitter20", "click", "correct-box", "correct-click"].map(|p| p.parse::<Protocol>().expect("known"));
    let s = validate(&decoder, &data.val, &args.val_split, &all, host_threads(args.backend))?;
    Ok(serde_json::json!({ "prompts": s.prompts, "noc": s.noc, "predicted_iou_r": s.predicted_iou_r }))
}

/// The best decoder (by the objective; the starting one when no epoch beat it) in the
/// browser's weight format (f32, f16) and a model card with every prompt protocol's
/// validation scores for the starting and the exported decoder.
fn export(args: &FinetuneArgs, study: &Study, data: &RunData, run: &Progress, chosen: Chosen) -> CliResult<()> {
    let (loaded, state, rows) = (&study.model, &run.state, &run.rows);
    let Chosen { decoder, averaging, calibration } = chosen;
    let calibration = calibration.as_ref();
    if state.best_epoch == 0 && state.epoch > 0 {
        println!("no epoch beat the starting decoder on validation: exporting the starting decoder");
    }
    let mut files = Vec::new();
    let mut exported = None;
    for dtype in [StoreDType::F32, StoreDType::F16] {
        let mut map = decoder.subset(&DECODER_PREFIXES, "fine-tuned decoder");
        map.set_metadata("model", format!("{}-finetuned", loaded.id));
        map.set_metadata("component", "decoder");
        if let Some(c) = calibration {
            map.set_metadata(MASK_LOGIT_BIAS_KEY, c.bias.to_string());
            map.set_metadata(CLICK_MASK_LOGIT_BIAS_KEY, c.click_bias.to_string());
        }
        let bytes = map.to_safetensors(dtype)?;
        let name = format!("decoder.{}.safetensors", dtype.suffix());
        files.push(serde_json::json!({
            "component": "decoder", "dtype": dtype.suffix(), "file": name,
            "bytes": bytes.len(), "sha256": sha256_hex(&bytes),
        }));
        write_atomic(&args.out.join(&name), &bytes)?;
        exported.get_or_insert(map);
    }
    println!("validating the starting and the exported decoder with every prompt protocol");
    let (_, start) = decoder_weights(&args.init, &loaded.id, &loaded.base_decoder)?;
    let validation = serde_json::json!({
        "split": args.val_split,
        "start": card_validation(args, study, data, &start)?,
        "exported": card_validation(args, study, data, &exported.expect("two files"))?,
    });
    let card = serde_json::json!({
        "model": format!("{}-finetuned", loaded.id),
        "base_model": loaded.id,
        "base_sha256": loaded.source_sha256,
        "encoder_sha256": loaded.encoder_sha256,
        "config": loaded.sam.config,
        "data": args.data.display().to_string(),
        "splits": { "train": args.train_split, "val": args.val_split },
        "recipe": {
            "frozen": if args.train_prompt_encoder { vec!["image_encoder"] } else { vec!["image_encoder", "prompt_encoder"] },
            "loss": args.loss, "optimizer": "Adam", "lr": args.lr, "cosine": args.cosine,
            "weight_decay": args.weight_decay, "batch_size": args.batch_size,
            "prompts": args.prompts, "iou_loss_weight": args.iou_weight,
            "seed": args.seed, "init": args.init,
            "reference_compat": args.model.reference_compat,
        },
        "objective": state.objective,
        "epochs": state.epoch,
        "weight_averaging": averaging,
        "calibration": calibration,
        "metrics": {
            "val_score_before": state.base_val_score,
            "best_epoch": state.best_epoch,
            "best_val_score": state.best_val_score,
            "per_epoch": rows.iter().map(|r| serde_json::json!({
                "epoch": r.epoch, "train_loss": r.train_loss, "val_score": r.val.score,
                "val_dice": r.val.dice, "val_iou": r.val.iou, "val_prompts": r.val.prompts,
            })).collect::<Vec<_>>(),
        },
        "validation": validation,
        "files": files,
    });
    write_atomic(&args.out.join("model.json"), &serde_json::to_vec_pretty(&card)?)?;
    println!(
        "best epoch {} (val score {:.4}, before {:.4}); exported {}/decoder.{{f32,f16}}.safetensors and model.json",
        state.best_epoch,
        state.best_val_score,
        state.base_val_score,
        args.out.display()
    );
    Ok(())
}
