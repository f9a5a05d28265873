//! `sonosam finetune`: train the mask decoder on labelled data (frozen image and prompt
//! encoders), with validation every epoch, atomic best/last checkpoints, resume, and export to
//! the browser's weight format.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};
use sonosam_data::Dataset;
use sonosam_model::backend::{BackendKind, host_threads};
use sonosam_model::rng::Rng;
use sonosam_model::sam::{DECODER_PREFIXES, MASK_LOGIT_BIAS_KEY};
use sonosam_model::box_prompts::{jitter_box, tight_box};
use sonosam_model::train::{
    Adam, AdamConfig, Batch, DecoderTrainer, LossKind, TrainerCheckpoint, default_shards, target_low_res,
};
use sonosam_model::weights::sha256_hex;
use sonosam_model::{Prompt, SamDecoder, StoreDType, TensorMap};

use crate::CliResult;
use crate::files::{write_atomic, write_folder_atomic};
use crate::model_io::{self, LoadedModel, ModelArgs, decoder_weights};
use crate::prepare::{Prepared, Study, split_entries};
use crate::progress;
use crate::scoring::{fit_mask_logit_bias, validate};

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
    /// Box jitter: each side pushed out by U[0, J) px at the model frame.
    #[arg(long, default_value_t = 20.0)]
    pub jitter: f32,
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
    /// After training, fit a bias added to the mask logits (the decision threshold) on the
    /// training split, and export it with the decoder. With `--epochs 0` only that is fitted.
    #[arg(long)]
    pub calibrate: bool,
}

/// What `last/state.json` and `best/state.json` record.
#[derive(Serialize, Deserialize, Clone)]
struct State {
    /// Epochs completed.
    epoch: usize,
    best_epoch: usize,
    best_val_dice: f64,
    /// Validation Dice of the starting decoder.
    base_val_dice: f64,
    /// SHA-256 of the checkpoint's decoder and optimiser files.
    decoder_sha256: String,
    adam_sha256: String,
}

/// One row of metrics.csv.
#[derive(Clone)]
struct EpochMetrics {
    epoch: usize,
    train_loss: f64,
    val_dice: f64,
    val_iou: f64,
    lr: f64,
    seconds: f64,
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

/// Save the trainer's checkpoint with `state` in the folder `dir` (atomically), recording the
/// files' hashes in `state`.
fn save_checkpoint(dir: &Path, trainer: &DecoderTrainer, state: &mut State) -> CliResult<()> {
    let TrainerCheckpoint { decoder, adam } = trainer.checkpoint();
    let decoder = decoder.to_safetensors(StoreDType::F32)?;
    let adam = adam.to_safetensors(StoreDType::F32)?;
    state.decoder_sha256 = sha256_hex(&decoder);
    state.adam_sha256 = sha256_hex(&adam);
    let json = serde_json::to_vec_pretty(state)?;
    write_folder_atomic(dir, &[("decoder.safetensors", decoder), ("adam.safetensors", adam), ("state.json", json)])
}

/// Load `dir` (a checkpoint), verifying the recorded hashes.
fn read_checkpoint(dir: &Path) -> CliResult<(State, TrainerCheckpoint)> {
    let read = || -> CliResult<(State, TrainerCheckpoint)> {
        let state: State = serde_json::from_slice(&model_io::read(&dir.join("state.json"))?).context("state.json unreadable")?;
        let dec_bytes = model_io::read(&dir.join("decoder.safetensors"))?;
        let adam_bytes = model_io::read(&dir.join("adam.safetensors"))?;
        if sha256_hex(&dec_bytes) != state.decoder_sha256 || sha256_hex(&adam_bytes) != state.adam_sha256 {
            bail!("files do not match the hashes in state.json (corrupt or partial)");
        }
        let decoder = TensorMap::from_safetensors(&dec_bytes, dir.join("decoder.safetensors").display().to_string())?;
        let adam = TensorMap::from_safetensors(&adam_bytes, "adam.safetensors")?;
        Adam::from_map(&adam)?;
        Ok((state, TrainerCheckpoint { decoder, adam }))
    };
    read().with_context(|| format!("checkpoint {}: cannot resume from it", dir.display()))
}

fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> CliResult<()> {
    let mut s = String::from("epoch,train_loss,val_dice,val_iou,lr,seconds\n");
    for r in rows {
        s.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:e},{:.1}\n",
            r.epoch, r.train_loss, r.val_dice, r.val_iou, r.lr, r.seconds
        ));
    }
    write_atomic(path, s.as_bytes())
}

fn read_metrics(path: &Path, up_to: usize) -> Vec<EpochMetrics> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(EpochMetrics {
                epoch: f.first()?.parse().ok()?,
                train_loss: f.get(1)?.parse().ok()?,
                val_dice: f.get(2)?.parse().ok()?,
                val_iou: f.get(3)?.parse().ok()?,
                lr: f.get(4)?.parse().ok()?,
                seconds: f.get(5)?.parse().ok()?,
            })
        })
        .filter(|m| m.epoch <= up_to)
        .collect()
}

/// Loss and validation Dice per epoch, as an SVG chart.
fn plot(path: &Path, rows: &[EpochMetrics], base_dice: f64) -> CliResult<()> {
    use plotters::prelude::*;
    let n = rows.len().max(1) as f64;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(210);
    let loss_max = rows.iter().map(|r| r.train_loss).fold(0.0, f64::max) * 1.1 + 1e-6;
    let mut c = ChartBuilder::on(&top)
        .caption("training loss", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..n, 0.0..loss_max)?;
    c.configure_mesh().x_desc("epoch").draw()?;
    c.draw_series(LineSeries::new(
        rows.iter().map(|r| (r.epoch as f64, r.train_loss)),
        &RED,
    ))?;
    let lo = rows.iter().map(|r| r.val_dice).fold(base_dice, f64::min) - 0.02;
    let hi = rows.iter().map(|r| r.val_dice).fold(base_dice, f64::max) + 0.02;
    let mut c = ChartBuilder::on(&bottom)
        .caption("validation Dice (dashed: before fine-tuning)", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..n, lo..hi)?;
    c.configure_mesh().x_desc("epoch").draw()?;
    c.draw_series(LineSeries::new(
        std::iter::once((0.0, base_dice)).chain(rows.iter().map(|r| (r.epoch as f64, r.val_dice))),
        &BLUE,
    ))?;
    c.draw_series(DashedLineSeries::new(
        vec![(0.0, base_dice), (n, base_dice)],
        5,
        5,
        BLACK.into(),
    ))?;
    Ok(root.present()?)
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
        let (train_loss, lr, seconds) = train_epoch(&args, &mut run.trainer, &data, epoch)?;
        end_epoch(&args, &study, &data, &mut run, epoch, train_loss, lr, seconds)?;
    }
    let calibration = if args.calibrate { Some(calibrate(&args, &study, &data, &run.state)?) } else { None };
    export(&args, &study.model, &run.state, &run.rows, run.state.base_val_dice, calibration.as_ref())
}

/// Refuse what cannot be a sensible run before any work.
fn check_args(args: &FinetuneArgs) -> CliResult<()> {
    if args.val_split == "test" || args.train_split == "test" {
        bail!("never train or tune on the test split: pick another --train-split/--val-split");
    }
    if args.batch_size == 0 || (args.epochs == 0 && !args.calibrate) {
        bail!("--batch-size and --epochs must be positive (--epochs 0 only with --calibrate)");
    }
    Ok(())
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
        let trainer = DecoderTrainer::from_checkpoint(config, &checkpoint, device)?;
        println!("resuming {} after epoch {}", args.out.display(), state.epoch);
        let rows = read_metrics(&args.out.join("metrics.csv"), state.epoch);
        Progress { trainer: trainer.with_shards(default_shards(args.backend)), state, rows }
    } else {
        let (_, mut init) = decoder_weights(&args.init, &study.model.id, &study.model.base_decoder)?;
        // Training works on raw logits: a calibrated starting decoder leaves its bias behind
        // (validation and export would otherwise apply a bias the training never saw).
        if let Some(bias) = init.remove_metadata(MASK_LOGIT_BIAS_KEY) {
            println!(
                "note: {} is calibrated (mask-logit bias {bias}): training starts from its weights \
                 without the bias; --calibrate fits a new one",
                args.init
            );
        }
        let adam = Adam::new(AdamConfig { weight_decay: args.weight_decay, ..Default::default() });
        let trainer = DecoderTrainer::new(config, &init, device, adam)?;
        let state = State {
            epoch: 0,
            best_epoch: 0,
            best_val_dice: f64::NEG_INFINITY,
            base_val_dice: f64::NAN,
            decoder_sha256: String::new(),
            adam_sha256: String::new(),
        };
        Progress { trainer: trainer.with_shards(default_shards(args.backend)), state, rows: Vec::new() }
    };
    write_atomic(&args.out.join("config.json"), &serde_json::to_vec_pretty(args)?)?;
    let mut progress = progress;
    if progress.state.epoch == 0 {
        let base_dice = validate_trainer(args, study, data, &progress.trainer)?.0;
        progress.state.best_val_dice = base_dice;
        progress.state.base_val_dice = base_dice;
        println!("validation Dice before fine-tuning: {base_dice:.4}");
        save_checkpoint(&args.out.join("best"), &progress.trainer, &mut progress.state)?;
    }
    Ok(progress)
}

/// Mean Dice and IoU on the validation split of the trainer's current decoder.
fn validate_trainer(args: &FinetuneArgs, study: &Study, data: &RunData, trainer: &DecoderTrainer) -> CliResult<(f64, f64)> {
    let decoder = SamDecoder::load(&trainer.config, &trainer.decoder_weights(), &study.device)?;
    let s = validate(&decoder, &data.val, &args.val_split, host_threads(args.backend))?;
    Ok((s.dice_mean, s.iou_mean))
}

/// One epoch over the shuffled training instances: the mean training loss, the learning rate
/// and the seconds it took.
fn train_epoch(args: &FinetuneArgs, trainer: &mut DecoderTrainer, data: &RunData, epoch: usize) -> CliResult<(f64, f64, f64)> {
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
        let batch = make_batch(args, data, chunk, &mut rng)?;
        loss_sum += f64::from(trainer.step(&batch, args.loss, lr)?);
        bar.set_message(format!("{:.4}", loss_sum / (step + 1) as f64));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((loss_sum / steps as f64, lr, t0.elapsed().as_secs_f64()))
}

/// The training batch of instances `chunk`: their embeddings, jittered tight boxes, targets.
fn make_batch(args: &FinetuneArgs, data: &RunData, chunk: &[usize], rng: &mut Rng) -> CliResult<Batch> {
    let mut batch = Batch { embeddings: Vec::new(), prompts: Vec::with_capacity(chunk.len()), targets: Vec::new() };
    for &i in chunk {
        let inst = &data.train.instances[i];
        let img = &data.train.images[inst.image];
        let tight = img.geometry.box_to_frame(tight_box(&inst.mask).expect("non-empty"))?;
        batch.embeddings.extend_from_slice(&img.embedding);
        batch.prompts.push(Prompt::from_box(jitter_box(tight, args.jitter, &img.geometry, rng)));
        batch.targets.extend_from_slice(&data.targets[i]);
    }
    Ok(batch)
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
    let (val_dice, val_iou) = validate_trainer(args, study, data, &run.trainer)?;
    let seconds = seconds_training + t0.elapsed().as_secs_f64();
    println!(
        "epoch {epoch}/{}: train loss {train_loss:.4}, val Dice {val_dice:.4}, val IoU {val_iou:.4}, lr {lr:.2e}, {seconds:.0} s",
        args.epochs
    );
    run.rows.push(EpochMetrics { epoch, train_loss, val_dice, val_iou, lr, seconds });
    run.state.epoch = epoch;
    if val_dice > run.state.best_val_dice {
        run.state.best_val_dice = val_dice;
        run.state.best_epoch = epoch;
        save_checkpoint(&args.out.join("best"), &run.trainer, &mut run.state)?;
    }
    save_checkpoint(&args.out.join("last"), &run.trainer, &mut run.state)?;
    write_metrics(&args.out.join("metrics.csv"), &run.rows)?;
    plot(&args.out.join("curves.svg"), &run.rows, run.state.base_val_dice)
}

/// Fit the best decoder's mask-logit bias on the training split and validate it.
fn calibrate(args: &FinetuneArgs, study: &Study, data: &RunData, state: &State) -> CliResult<Calibration> {
    let (_, best) = read_checkpoint(&args.out.join("best"))?;
    let config = &study.model.sam.config;
    let mut weights = best.decoder;
    let decoder = SamDecoder::load(config, &weights, &study.device)?;
    let (bias, before, after) = fit_mask_logit_bias(&decoder, &data.train)?;
    weights.set_metadata(MASK_LOGIT_BIAS_KEY, bias.to_string());
    let decoder = SamDecoder::load(config, &weights, &study.device)?;
    let val_dice = validate(&decoder, &data.val, &args.val_split, host_threads(args.backend))?.dice_mean;
    println!(
        "calibration on {}: mask-logit bias {bias:+.2} (train Dice {before:.4} → {after:.4}); \
         val Dice {:.4} → {val_dice:.4}",
        args.train_split, state.best_val_dice
    );
    Ok(Calibration {
        bias,
        train_dice_before: before,
        train_dice_after: after,
        val_dice_before: state.best_val_dice,
        val_dice_after: val_dice,
    })
}

/// The fitted mask-logit bias and what it did.
#[derive(Serialize)]
struct Calibration {
    bias: f32,
    train_dice_before: f64,
    train_dice_after: f64,
    val_dice_before: f64,
    val_dice_after: f64,
}

/// The best decoder in the browser's weight format (f32, f16) and a model card.
fn export(
    args: &FinetuneArgs,
    loaded: &LoadedModel,
    state: &State,
    rows: &[EpochMetrics],
    base_dice: f64,
    calibration: Option<&Calibration>,
) -> CliResult<()> {
    let (_, best) = read_checkpoint(&args.out.join("best"))?;
    let decoder = best.decoder;
    if state.best_epoch == 0 && state.epoch > 0 {
        println!("no epoch beat the starting decoder on validation: exporting the starting decoder");
    }
    let mut files = Vec::new();
    for dtype in [StoreDType::F32, StoreDType::F16] {
        let mut map = decoder.subset(&DECODER_PREFIXES, "fine-tuned decoder");
        map.set_metadata("model", format!("{}-finetuned", loaded.id));
        map.set_metadata("component", "decoder");
        if let Some(c) = calibration {
            map.set_metadata(MASK_LOGIT_BIAS_KEY, c.bias.to_string());
        }
        let bytes = map.to_safetensors(dtype)?;
        let name = format!("decoder.{}.safetensors", dtype.suffix());
        files.push(serde_json::json!({
            "component": "decoder", "dtype": dtype.suffix(), "file": name,
            "bytes": bytes.len(), "sha256": sha256_hex(&bytes),
        }));
        write_atomic(&args.out.join(&name), &bytes)?;
    }
    let card = serde_json::json!({
        "model": format!("{}-finetuned", loaded.id),
        "base_model": loaded.id,
        "base_sha256": loaded.source_sha256,
        "encoder_sha256": loaded.encoder_sha256,
        "config": loaded.sam.config,
        "data": args.data.display().to_string(),
        "splits": { "train": args.train_split, "val": args.val_split },
        "recipe": {
            "frozen": ["image_encoder", "prompt_encoder"],
            "loss": args.loss, "optimizer": "Adam", "lr": args.lr, "cosine": args.cosine,
            "weight_decay": args.weight_decay, "batch_size": args.batch_size,
            "box_jitter_px": args.jitter, "seed": args.seed, "init": args.init,
            "reference_compat": args.model.reference_compat,
        },
        "epochs": state.epoch,
        "calibration": calibration,
        "metrics": {
            "val_dice_before": base_dice,
            "best_epoch": state.best_epoch,
            "best_val_dice": state.best_val_dice,
            "per_epoch": rows.iter().map(|r| serde_json::json!({
                "epoch": r.epoch, "train_loss": r.train_loss, "val_dice": r.val_dice, "val_iou": r.val_iou,
            })).collect::<Vec<_>>(),
        },
        "files": files,
    });
    write_atomic(&args.out.join("model.json"), &serde_json::to_vec_pretty(&card)?)?;
    println!(
        "best epoch {} (val Dice {:.4}, before {:.4}); exported {}/decoder.{{f32,f16}}.safetensors and model.json",
        state.best_epoch,
        state.best_val_dice,
        base_dice,
        args.out.display()
    );
    Ok(())
}
