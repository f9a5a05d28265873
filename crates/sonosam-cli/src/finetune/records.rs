//! What a fine-tuning run writes as it goes: checkpoints (`best/`, `last/`: decoder, Adam
//! state and `state.json` with their hashes, each folder written atomically), `metrics.csv`
//! and `curves.svg`.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sonosam_model::train::{Adam, DecoderTrainer, TrainerCheckpoint};
use sonosam_model::weights::sha256_hex;
use sonosam_model::{StoreDType, TensorMap};

use crate::CliResult;
use crate::files::{write_atomic, write_folder_atomic};
use crate::model_io;

/// What `last/state.json` and `best/state.json` record.
#[derive(Serialize, Deserialize, Clone)]
pub struct State {
    /// Epochs completed.
    pub epoch: usize,
    pub best_epoch: usize,
    /// The best validation score (the objective's: mean Dice over its prompt protocols).
    #[serde(alias = "best_val_dice")]
    pub best_val_score: f64,
    /// Validation score of the starting decoder.
    #[serde(alias = "base_val_dice")]
    pub base_val_score: f64,
    /// The objective's protocols (runs from before objectives: the tight box alone).
    #[serde(default = "tight_only")]
    pub objective: Vec<String>,
    /// SHA-256 of the checkpoint's decoder and optimiser files.
    pub decoder_sha256: String,
    pub adam_sha256: String,
}

fn tight_only() -> Vec<String> {
    vec!["tight".into()]
}

/// What validation measures of a decoder: the objective's score (mean of `prompts`), and
/// the tight box's Dice and IoU.
#[derive(Clone, Debug, Serialize)]
pub struct ValScores {
    pub score: f64,
    pub dice: f64,
    pub iou: f64,
    /// Mean Dice per protocol of the objective.
    pub prompts: BTreeMap<String, f64>,
}

/// One row of metrics.csv.
#[derive(Clone)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub val: ValScores,
    pub lr: f64,
    pub seconds: f64,
}

/// Save the trainer's checkpoint with `state` in the folder `dir` (atomically), recording the
/// files' hashes in `state`.
pub fn save_checkpoint(dir: &Path, trainer: &DecoderTrainer, state: &mut State) -> CliResult<()> {
    let TrainerCheckpoint { decoder, adam } = trainer.checkpoint();
    let decoder = decoder.to_safetensors(StoreDType::F32)?;
    let adam = adam.to_safetensors(StoreDType::F32)?;
    state.decoder_sha256 = sha256_hex(&decoder);
    state.adam_sha256 = sha256_hex(&adam);
    let json = serde_json::to_vec_pretty(state)?;
    write_folder_atomic(dir, &[("decoder.safetensors", decoder), ("adam.safetensors", adam), ("state.json", json)])
}

/// Load `dir` (a checkpoint), verifying the recorded hashes.
pub fn read_checkpoint(dir: &Path) -> CliResult<(State, TrainerCheckpoint)> {
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

/// metrics.csv's fixed columns; one `val_<protocol>` column per protocol follows.
const COLUMNS: [&str; 7] = ["epoch", "train_loss", "val_score", "val_dice", "val_iou", "lr", "seconds"];

pub fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> CliResult<()> {
    let keys: Vec<&String> = rows.first().map(|r| r.val.prompts.keys().collect()).unwrap_or_default();
    let mut s = COLUMNS.join(",");
    keys.iter().for_each(|k| s.push_str(&format!(",val_{k}")));
    s.push('\n');
    for r in rows {
        let v = &r.val;
        s.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:e},{:.1}",
            r.epoch, r.train_loss, v.score, v.dice, v.iou, r.lr, r.seconds
        ));
        keys.iter().for_each(|k| s.push_str(&format!(",{:.6}", v.prompts.get(*k).copied().unwrap_or(f64::NAN))));
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

/// The rows of `path` up to epoch `up_to` (by column name: files of older runs, without a
/// score or protocol columns, read with the tight Dice as their score).
pub fn read_metrics(path: &Path, up_to: usize) -> Vec<EpochMetrics> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let get = |name: &str| header.iter().position(|h| *h == name).and_then(|i| f.get(i)?.parse::<f64>().ok());
            let dice = get("val_dice")?;
            let prompts = header
                .iter()
                .filter_map(|h| h.strip_prefix("val_").filter(|k| !["score", "dice", "iou"].contains(k)))
                .filter_map(|k| Some((k.to_string(), get(&format!("val_{k}"))?)))
                .collect();
            Some(EpochMetrics {
                epoch: get("epoch")? as usize,
                train_loss: get("train_loss")?,
                val: ValScores { score: get("val_score").unwrap_or(dice), dice, iou: get("val_iou")?, prompts },
                lr: get("lr")?,
                seconds: get("seconds")?,
            })
        })
        .filter(|m| m.epoch <= up_to)
        .collect()
}

/// Loss and validation score per epoch, as an SVG chart.
pub fn plot(path: &Path, rows: &[EpochMetrics], base_score: f64) -> CliResult<()> {
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
    c.draw_series(LineSeries::new(rows.iter().map(|r| (r.epoch as f64, r.train_loss)), &RED))?;
    let lo = rows.iter().map(|r| r.val.score).fold(base_score, f64::min) - 0.02;
    let hi = rows.iter().map(|r| r.val.score).fold(base_score, f64::max) + 0.02;
    let mut c = ChartBuilder::on(&bottom)
        .caption("validation score (dashed: before fine-tuning)", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..n, lo..hi)?;
    c.configure_mesh().x_desc("epoch").draw()?;
    c.draw_series(LineSeries::new(
        std::iter::once((0.0, base_score)).chain(rows.iter().map(|r| (r.epoch as f64, r.val.score))),
        &BLUE,
    ))?;
    c.draw_series(DashedLineSeries::new(vec![(0.0, base_score), (n, base_score)], 5, 5, BLACK.into()))?;
    Ok(root.present()?)
}
