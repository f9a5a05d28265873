//! `sonosam finetune`: train the mask decoder on labelled data (frozen image and prompt
//! encoders), with validation every epoch, atomic best/last checkpoints, resume, and export to
//! the browser's weight format.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sonosam_model::backend::{BackendKind, host_threads, init_device};
use sonosam_model::rng::Rng;
use sonosam_model::train::{
    Adam, AdamConfig, Batch, DecoderTrainer, LossKind, default_shards, jitter_box, target_low_res, tight_box,
};
use sonosam_model::sam::MASK_LOGIT_BIAS_KEY;
use sonosam_model::weights::sha256_hex;
use sonosam_model::{Prompt, SamDecoder, StoreDType, TensorMap};

use crate::CliResult;
use sonosam_data::Dataset;
use crate::eval::{Scoring, decoder_weights, fit_mask_logit_bias, score, summarise};
use crate::fetch::write_atomic;
use crate::model_io::{self, LoadedModel, ModelArgs};
use crate::prepare::{EmbeddingCache, Prepared, cache_root, model_key, prepare};

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
    #[arg(long, default_value = "dice")]
    pub loss: String,
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

/// Write `files` into `dir` atomically: a temporary folder renamed over the old one.
fn write_checkpoint(dir: &Path, files: &[(&str, Vec<u8>)]) -> CliResult<()> {
    let tmp = dir.with_extension("partial");
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    for (name, bytes) in files {
        std::fs::write(tmp.join(name), bytes)
            .map_err(|e| format!("cannot write {}: {e}", tmp.join(name).display()))?;
    }
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| format!("cannot replace {}: {e}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn checkpoint_files(trainer: &DecoderTrainer, state: &mut State) -> CliResult<Vec<(&'static str, Vec<u8>)>> {
    let decoder = trainer
        .decoder_weights()
        .to_safetensors(StoreDType::F32)
        .map_err(|e| e.to_string())?;
    let adam = trainer
        .adam
        .to_map(&trainer.params)
        .to_safetensors(StoreDType::F32)
        .map_err(|e| e.to_string())?;
    state.decoder_sha256 = sha256_hex(&decoder);
    state.adam_sha256 = sha256_hex(&adam);
    let json = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    Ok(vec![("decoder.safetensors", decoder), ("adam.safetensors", adam), ("state.json", json)])
}

/// Load `dir` (a checkpoint), verifying the recorded hashes.
fn read_checkpoint(dir: &Path) -> CliResult<(State, TensorMap, Adam)> {
    let ctx = |m: String| format!("checkpoint {}: {m}; cannot resume from it", dir.display());
    let state: State = serde_json::from_slice(&model_io::read(&dir.join("state.json")).map_err(ctx)?)
        .map_err(|e| ctx(format!("state.json unreadable ({e})")))?;
    let dec_bytes = model_io::read(&dir.join("decoder.safetensors")).map_err(ctx)?;
    let adam_bytes = model_io::read(&dir.join("adam.safetensors")).map_err(ctx)?;
    if sha256_hex(&dec_bytes) != state.decoder_sha256 || sha256_hex(&adam_bytes) != state.adam_sha256 {
        return Err(ctx("files do not match the hashes in state.json (corrupt or partial)".into()));
    }
    let decoder = TensorMap::from_safetensors(&dec_bytes, dir.join("decoder.safetensors").display().to_string())
        .map_err(|e| ctx(e.to_string()))?;
    let adam_map = TensorMap::from_safetensors(&adam_bytes, "adam.safetensors").map_err(|e| ctx(e.to_string()))?;
    let adam = Adam::from_map(&adam_map).map_err(|e| ctx(e.to_string()))?;
    Ok((state, decoder, adam))
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
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(210);
    let loss_max = rows.iter().map(|r| r.train_loss).fold(0.0, f64::max) * 1.1 + 1e-6;
    let mut c = ChartBuilder::on(&top)
        .caption("training loss", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..n, 0.0..loss_max)
        .map_err(|e| e.to_string())?;
    c.configure_mesh().x_desc("epoch").draw().map_err(|e| e.to_string())?;
    c.draw_series(LineSeries::new(
        rows.iter().map(|r| (r.epoch as f64, r.train_loss)),
        &RED,
    ))
    .map_err(|e| e.to_string())?;
    let lo = rows.iter().map(|r| r.val_dice).fold(base_dice, f64::min) - 0.02;
    let hi = rows.iter().map(|r| r.val_dice).fold(base_dice, f64::max) + 0.02;
    let mut c = ChartBuilder::on(&bottom)
        .caption("validation Dice (dashed: before fine-tuning)", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..n, lo..hi)
        .map_err(|e| e.to_string())?;
    c.configure_mesh().x_desc("epoch").draw().map_err(|e| e.to_string())?;
    c.draw_series(LineSeries::new(
        std::iter::once((0.0, base_dice)).chain(rows.iter().map(|r| (r.epoch as f64, r.val_dice))),
        &BLUE,
    ))
    .map_err(|e| e.to_string())?;
    c.draw_series(DashedLineSeries::new(
        vec![(0.0, base_dice), (n, base_dice)],
        5,
        5,
        BLACK.into(),
    ))
    .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn validate(
    trainer: &DecoderTrainer,
    val: &Prepared,
    device: &sonosam_model::burn::tensor::Device,
    split: &str,
    threads: usize,
) -> CliResult<(f64, f64)> {
    let decoder = SamDecoder::load(&trainer.config, &trainer.decoder_weights(), device)
        .map_err(|e| e.to_string())?;
    let job = Scoring {
        decoder: &decoder,
        prepared: val,
        jitter: &[0.0],
        seed: 0,
        strategy: &Default::default(),
    };
    let scores = score(&job, "validate", threads)?;
    let s = summarise("", split, val, &scores, &[0.0]);
    Ok((s.overall.dice_mean, s.overall.iou_mean))
}

pub fn run(args: FinetuneArgs) -> CliResult<()> {
    let loss: LossKind = args.loss.parse()?;
    if args.val_split == "test" || args.train_split == "test" {
        return Err("never train or tune on the test split: pick another --train-split/--val-split".into());
    }
    if args.batch_size == 0 || (args.epochs == 0 && !args.calibrate) {
        return Err("--batch-size and --epochs must be positive (--epochs 0 only with --calibrate)".into());
    }
    let data = Dataset::open(&args.data, args.splits.as_deref())?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let device = init_device(args.backend).map_err(|e| e.to_string())?;
    let loaded = args.model.load(StoreDType::F32, &device)?;
    let sam = &loaded.sam;
    let e = sam.config.decoder.embedding_size;
    let cache = EmbeddingCache::new(
        &cache_root(args.cache.clone()),
        &model_key(&loaded.encoder_sha256, args.model.reference_compat),
        sam.config.decoder.embed_dim * e * e,
    )?;
    let mut train_entries = data.split(&args.train_split);
    let mut val_entries = data.split(&args.val_split);
    if let Some(n) = args.limit_train {
        train_entries.truncate(n);
    }
    if let Some(n) = args.limit_val {
        val_entries.truncate(n);
    }
    if train_entries.is_empty() || val_entries.is_empty() {
        return Err(format!(
            "need images in both splits `{}` and `{}`",
            args.train_split, args.val_split
        ));
    }
    let train = prepare(&data, &train_entries, sam, &cache, &args.train_split)?;
    train.report_skipped(&args.train_split);
    let val = prepare(&data, &val_entries, sam, &cache, &args.val_split)?;
    val.report_skipped(&args.val_split);
    if train.instances.is_empty() || val.instances.is_empty() {
        return Err("no usable training or validation instance".into());
    }

    let lr_size = 4 * e;
    let d = 256 * e * e;
    // Targets depend only on the mask and geometry: compute once.
    let targets: Vec<Vec<f32>> = train
        .instances
        .iter()
        .map(|i| target_low_res(&i.mask, &train.images[i.image].geometry, lr_size))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;

    let last_dir = args.out.join("last");
    let best_dir = args.out.join("best");
    let config = sam.config.clone();
    let (mut trainer, mut state, mut rows) = if args.resume {
        let from = if last_dir.exists() { last_dir.clone() } else { last_dir.with_extension("old") };
        let (state, decoder, adam) = read_checkpoint(&from)?;
        let trainer = DecoderTrainer::new(config.clone(), &decoder, &device, adam)
            .map_err(|e| e.to_string())?
            .with_shards(default_shards(args.backend));
        println!("resuming {} after epoch {}", args.out.display(), state.epoch);
        let rows = read_metrics(&args.out.join("metrics.csv"), state.epoch);
        (trainer, state, rows)
    } else {
        let (_, mut init) = decoder_weights(&args.init, &loaded.id, &loaded.base_decoder)?;
        // Training works on raw logits: a calibrated starting decoder leaves its bias behind
        // (validation and export would otherwise apply a bias the training never saw).
        if let Some(bias) = init.remove_metadata(MASK_LOGIT_BIAS_KEY) {
            println!(
                "note: {} is calibrated (mask-logit bias {bias}): training starts from its weights \
                 without the bias; --calibrate fits a new one",
                args.init
            );
        }
        let adam = Adam::new(AdamConfig {
            weight_decay: args.weight_decay,
            ..Default::default()
        });
        let trainer = DecoderTrainer::new(config.clone(), &init, &device, adam)
            .map_err(|e| e.to_string())?
            .with_shards(default_shards(args.backend));
        let state = State {
            epoch: 0,
            best_epoch: 0,
            best_val_dice: f64::NEG_INFINITY,
            base_val_dice: f64::NAN,
            decoder_sha256: String::new(),
            adam_sha256: String::new(),
        };
        (trainer, state, Vec::new())
    };
    write_atomic(
        &args.out.join("config.json"),
        &serde_json::to_vec_pretty(&args).map_err(|e| e.to_string())?,
    )?;
    let inner = device.clone();
    if state.epoch == 0 {
        let (base_dice, _) = validate(&trainer, &val, &inner, &args.val_split, host_threads(args.backend))?;
        state.best_val_dice = base_dice;
        state.base_val_dice = base_dice;
        println!("validation Dice before fine-tuning: {base_dice:.4}");
        // The starting decoder is the best until an epoch beats it on validation.
        let files = checkpoint_files(&trainer, &mut state)?;
        write_checkpoint(&best_dir, &files)?;
    }
    let base_dice = state.base_val_dice;

    let steps_per_epoch = train.instances.len().div_ceil(args.batch_size);
    for epoch in state.epoch + 1..=args.epochs {
        let lr = lr_at(&args, epoch - 1);
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..train.instances.len()).collect();
        Rng::derive(args.seed, epoch as u64).shuffle(&mut order);
        let bar = ProgressBar::new(steps_per_epoch as u64).with_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} steps, loss {msg}, {elapsed}, ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", args.epochs));
        let mut loss_sum = 0.0;
        for (step, chunk) in order.chunks(args.batch_size).enumerate() {
            let mut rng = Rng::derive(args.seed, ((epoch as u64) << 32) | step as u64);
            let mut batch = Batch {
                embeddings: Vec::with_capacity(chunk.len() * d),
                prompts: Vec::with_capacity(chunk.len()),
                targets: Vec::with_capacity(chunk.len() * lr_size * lr_size),
            };
            for &i in chunk {
                let inst = &train.instances[i];
                let img = &train.images[inst.image];
                let tight = img
                    .geometry
                    .box_to_frame(tight_box(&inst.mask).expect("non-empty"))
                    .map_err(|e| e.to_string())?;
                batch.embeddings.extend_from_slice(&img.embedding);
                batch
                    .prompts
                    .push(Prompt::from_box(jitter_box(tight, args.jitter, &img.geometry, &mut rng)));
                batch.targets.extend_from_slice(&targets[i]);
            }
            let l = trainer.step(&batch, loss, lr).map_err(|e| e.to_string())?;
            loss_sum += f64::from(l);
            bar.set_message(format!("{:.4}", loss_sum / (step + 1) as f64));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_loss = loss_sum / steps_per_epoch as f64;
        let (val_dice, val_iou) = validate(&trainer, &val, &inner, &args.val_split, host_threads(args.backend))?;
        let seconds = t0.elapsed().as_secs_f64();
        println!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, val Dice {val_dice:.4}, val IoU {val_iou:.4}, lr {lr:.2e}, {seconds:.0} s",
            args.epochs
        );
        rows.push(EpochMetrics {
            epoch,
            train_loss,
            val_dice,
            val_iou,
            lr,
            seconds,
        });
        state.epoch = epoch;
        if val_dice > state.best_val_dice {
            state.best_val_dice = val_dice;
            state.best_epoch = epoch;
            let files = checkpoint_files(&trainer, &mut state)?;
            write_checkpoint(&best_dir, &files)?;
        }
        let files = checkpoint_files(&trainer, &mut state)?;
        write_checkpoint(&last_dir, &files)?;
        write_metrics(&args.out.join("metrics.csv"), &rows)?;
        plot(&args.out.join("curves.svg"), &rows, base_dice)?;
    }
    let calibration = if args.calibrate {
        let (_, mut weights, _) = read_checkpoint(&best_dir)?;
        let decoder = SamDecoder::load(&loaded.sam.config, &weights, &inner).map_err(|e| e.to_string())?;
        let (bias, before, after) = fit_mask_logit_bias(&decoder, &train)?;
        weights.set_metadata(MASK_LOGIT_BIAS_KEY, bias.to_string());
        let decoder = SamDecoder::load(&loaded.sam.config, &weights, &inner).map_err(|e| e.to_string())?;
        let job = Scoring {
            decoder: &decoder,
            prepared: &val,
            jitter: &[0.0],
            seed: 0,
            strategy: &Default::default(),
        };
        let scores = score(&job, "validate", host_threads(args.backend))?;
        let val_dice = summarise("", &args.val_split, &val, &scores, &[0.0]).overall.dice_mean;
        println!(
            "calibration on {}: mask-logit bias {bias:+.2} (train Dice {before:.4} → {after:.4}); \
             val Dice {:.4} → {val_dice:.4}",
            args.train_split, state.best_val_dice
        );
        Some(Calibration { bias, train_dice_before: before, train_dice_after: after, val_dice_before: state.best_val_dice, val_dice_after: val_dice })
    } else {
        None
    };
    export(&args, &loaded, &state, &rows, base_dice, calibration.as_ref())
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
    let (_, decoder, _) = read_checkpoint(&args.out.join("best"))?;
    if state.best_epoch == 0 && state.epoch > 0 {
        println!("no epoch beat the starting decoder on validation: exporting the starting decoder");
    }
    let mut files = Vec::new();
    for dtype in [StoreDType::F32, StoreDType::F16] {
        let mut map = decoder.subset(&["prompt_encoder.", "mask_decoder."], "fine-tuned decoder");
        map.set_metadata("model", format!("{}-finetuned", loaded.id));
        map.set_metadata("component", "decoder");
        if let Some(c) = calibration {
            map.set_metadata(MASK_LOGIT_BIAS_KEY, c.bias.to_string());
        }
        let bytes = map.to_safetensors(dtype).map_err(|e| e.to_string())?;
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
    write_atomic(&args.out.join("model.json"), &serde_json::to_vec_pretty(&card).map_err(|e| e.to_string())?)?;
    println!(
        "best epoch {} (val Dice {:.4}, before {:.4}); exported {}/decoder.{{f32,f16}}.safetensors and model.json",
        state.best_epoch,
        state.best_val_dice,
        base_dice,
        args.out.display()
    );
    Ok(())
}
