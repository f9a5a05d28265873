//! `sonosam eval`: Dice, IoU and HD95 per instance at the original resolution, summaries by
//! class, a box-jitter robustness curve, side-by-side comparison of two decoders, and whether
//! the predicted outlines keep the shape descriptors' benign-vs-malignant signal.

use anyhow::bail;
use std::path::PathBuf;

use clap::Args;
use sonosam_model::backend::host_threads;

use crate::CliResult;
use crate::descriptor_stats::roc_svg;
use crate::files::write_atomic;
use crate::model_io::load_decoder;
use crate::prepare::{DataArgs, Prepared};
use crate::scoring::{Scores, Scoring, Strategy, Summary, labelled_descriptors, score, summarise};
use sonosam_model::measure::descriptors::TABLE;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub source: DataArgs,
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
    /// Prompt protocols, each its own column and `prompts`/`noc` JSON key: `tight`, `jitterN`
    /// (box sides pushed out by U[0, N) px), `click` (one positive click at the lesion's most
    /// interior point), `correct-box` / `correct-click` (correction clicks at the largest error
    /// from the tight box / one click: Dice after 1…5 clicks, NoC@85/90, capped at 20).
    #[arg(long = "prompt", value_delimiter = ',')]
    pub prompts: Vec<crate::protocols::Protocol>,
    /// Seed of the box jitter.
    #[arg(long, default_value_t = crate::scoring::PROMPT_SEED)]
    pub seed: u64,
    /// Per-instance CSV [default: eval_<split>.csv].
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// ROC curves of the shape descriptors (SVG) [default: eval_<split>_roc.svg].
    #[arg(long)]
    pub roc: Option<PathBuf>,
    /// Also write the summary as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Inference strategy (comma-separated): `multimask` (best of 3 by predicted IoU),
    /// `refine=N` (N passes with the previous logits as mask prompt), `ensemble=A:B:…`
    /// (average the logits of the box grown by A, B… px per side at the model frame),
    /// `largest` (largest connected component), `fill` (fill holes), `threshold=T` (logit
    /// threshold, default 0). Empty: one plain decode.
    #[arg(long, default_value = "")]
    pub strategy: String,
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
    row("predicted-IoU r", &|s| format!("{:.3}", s.predicted_iou_r));
    let prompt_keys: Vec<String> = summaries[0].prompts.as_ref().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    for key in &prompt_keys {
        row(&format!("Dice, {key}"), &|s| s.prompts.as_ref().and_then(|p| p.get(key)).map_or("-".into(), |p| format!("{:.4}", p.dice_mean)));
    }
    let noc_keys: Vec<String> = summaries[0].noc.as_ref().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    for key in &noc_keys {
        let get = |s: &Summary| s.noc.as_ref().and_then(|n| n.get(key)).cloned();
        row(&format!("NoC@85, {key}"), &|s| get(s).map_or("-".into(), |n| format!("{:.2}", n.noc85)));
        row(&format!("NoC@90, {key}"), &|s| get(s).map_or("-".into(), |n| format!("{:.2}", n.noc90)));
        row(&format!("fail@90, {key}"), &|s| get(s).map_or("-".into(), |n| format!("{:.3}", n.failure_rate)));
        for k in 0..crate::protocols::REPORTED_CLICKS {
            row(&format!("Dice, {key}, {} clk", k + 1), &|s| get(s).map_or("-".into(), |n| format!("{:.4}", n.dice_after_clicks[k])));
        }
    }
}

/// Benign-vs-malignant AUC of each descriptor on the ground-truth outlines and on each
/// decoder's, the calls' agreement, and the ground truth's Youden thresholds.
fn print_descriptors(summaries: &[Summary]) {
    let Some(first) = summaries[0].descriptors.as_ref() else {
        println!("\nshape descriptors: no AUC (the split needs benign and malignant lesions)");
        return;
    };
    println!(
        "\nshape descriptors, benign ({}) vs malignant ({}) AUC; {} lesions not measurable on an outline",
        first.descriptor_benign, first.descriptor_malignant, first.descriptor_not_measurable
    );
    print!("{:<20}{:>10}", "", "truth");
    for s in summaries {
        print!("{:>14}", truncate(&s.model, 13));
    }
    println!("{:>26}", "Youden (truth): threshold");
    for named in &TABLE {
        print!("{:<20}{:>10.3}", named.name, first.descriptors_auc[named.name].gt);
        for s in summaries {
            print!("{:>14.3}", s.descriptors.as_ref().map_or(f64::NAN, |d| d.descriptors_auc[named.name].pred));
        }
        let y = &first.descriptor_youden[named.name];
        let op = if matches!(y.malignant_when, sonosam_model::measure::descriptors::Malignant::Higher) { "≥" } else { "≤" };
        println!("{:>10} {op} {:<9.4} (sens {:.2}, spec {:.2})", "malignant", y.threshold, y.sensitivity, y.specificity);
    }
    for call in ["shape", "orientation", "margin"] {
        print!("{:<30}", format!("{call} call, kappa vs truth"));
        for s in summaries {
            print!("{:>14.3}", s.descriptors.as_ref().map_or(f64::NAN, |d| d.descriptor_calls_kappa[call]));
        }
        println!();
    }
}

/// ROC curves of the descriptors, truth vs the first decoder (`--roc`, default
/// `eval_<split>_roc.svg`).
fn write_roc(args: &EvalArgs, prepared: &Prepared, all_scores: &[(String, Vec<Scores>)]) -> CliResult<()> {
    let (name, scores) = &all_scores[0];
    let (items, _) = labelled_descriptors(prepared, scores);
    if !items.iter().any(|i| i.malignant) || items.iter().all(|i| i.malignant) {
        return Ok(());
    }
    let path = args.roc.clone().unwrap_or_else(|| PathBuf::from(format!("eval_{}_roc.svg", args.split)));
    let title = format!("Shape descriptors, benign vs malignant: {} split, decoder {name}", args.split);
    write_atomic(&path, roc_svg(&items, &title).as_bytes())?;
    println!("descriptor ROC curves: {}", path.display());
    Ok(())
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
        bail!("give at most two --decoder to compare");
    }
    let strategy: Strategy = args.strategy.parse().map_err(anyhow::Error::msg)?;
    let source = &args.source;
    let study = source.open_study(&args.split)?;
    let prepared = study.prepare(&args.split, source.limit)?;
    if prepared.instances.is_empty() {
        bail!("no instance to evaluate");
    }
    let mut summaries = Vec::new();
    let mut all_scores = Vec::new();
    for spec in &args.decoders {
        let (name, decoder) = load_decoder(spec, &study.model, &study.device)?;
        let job = Scoring { decoder: &decoder, prepared: &prepared, jitter: &args.jitter, seed: args.seed, strategy: &strategy, protocols: &args.prompts, describe: true };
        let scores = score(&job, &name, host_threads(source.backend))?;
        summaries.push(summarise(&name, &args.split, &prepared, &scores, &args.jitter));
        all_scores.push((name, scores));
    }
    println!(
        "\n{} split of {}: tight ground-truth boxes, scores at the original resolution{}",
        args.split,
        source.data.display(),
        if source.model.reference_compat { " (reference-compat encoder)" } else { "" }
    );
    print_table(&summaries, &args.jitter);
    print_descriptors(&summaries);
    write_csv(&args, &prepared, &all_scores)?;
    write_roc(&args, &prepared, &all_scores)?;
    if let Some(path) = &args.json {
        let mut json = serde_json::to_value(&summaries[0])?;
        json["models"] = serde_json::to_value(&summaries)?;
        json["reference_compat"] = serde_json::Value::Bool(source.model.reference_compat);
        json["base_model"] = serde_json::Value::String(study.model.id.clone());
        write_atomic(path, &serde_json::to_vec_pretty(&json)?)?;
        println!("summary: {}", path.display());
    }
    Ok(())
}

/// The per-instance scores of every decoder as CSV (`--csv`, default `eval_<split>.csv`), with
/// the shape descriptors of the true (`gt_…`) and predicted (`pred_…`) outlines.
fn write_csv(args: &EvalArgs, prepared: &Prepared, all_scores: &[(String, Vec<Scores>)]) -> CliResult<()> {
    let csv_path = args.csv.clone().unwrap_or_else(|| PathBuf::from(format!("eval_{}.csv", args.split)));
    let mut csv = String::from("model,image,mask,label,dice,iou,hd95,predicted_iou");
    for j in &args.jitter {
        csv.push_str(&format!(",dice_jitter_{j}"));
    }
    for side in ["gt", "pred"] {
        for named in &TABLE {
            csv.push_str(&format!(",{side}_{}", named.name));
        }
    }
    csv.push('\n');
    for (name, scores) in all_scores {
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
            // Descriptors of the true and the predicted outline (empty: not measurable).
            for d in &s.descriptors {
                for named in &TABLE {
                    csv.push_str(&d.as_ref().map_or(",".into(), |d| format!(",{:.6}", (named.value)(d))));
                }
            }
            csv.push('\n');
        }
    }
    write_atomic(&csv_path, csv.as_bytes())?;
    println!("\nper-instance scores: {}", csv_path.display());
    Ok(())
}
