//! `sonosam bench`: encoder and decoder latency, median of N runs after a warm-up.

use anyhow::anyhow;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use sonosam_model::backend::{BackendKind, init_device};
use sonosam_model::burn::tensor::Device;
use sonosam_model::segmentation::read_f32;
use sonosam_model::rng::Rng;
use sonosam_model::train::{Adam, AdamConfig, Batch, DecoderTrainer, LossKind, default_shards};
use sonosam_model::{Prompt, StoreDType, decode_image, preprocess};

use crate::CliResult;
use crate::model_io::{self, ModelArgs};

#[derive(Args)]
pub struct BenchArgs {
    /// Backends to measure (comma-separated): cpu, wgpu, cuda.
    #[arg(long, default_value = "cpu,wgpu", value_delimiter = ',', value_parser = crate::parse_backend)]
    pub backend: Vec<BackendKind>,
    /// Timed runs per measurement (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Timed runs of the image encoder [default: --runs; 0: only the decoder is timed].
    #[arg(long)]
    pub encoder_runs: Option<usize>,
    /// Instead of inference, time fine-tuning steps of the mask decoder (seed recipe: batch of
    /// 4 box prompts, Dice loss, Adam) on random embeddings and targets of the real shapes —
    /// the same measurement as `scripts/reference_epoch.py` for PyTorch.
    #[arg(long)]
    pub train: bool,
    /// Batch size of the training-step benchmark.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Shards (threads) a training batch is split over [default: two per core on the CPU
    /// backend, 1 on GPUs; see `default_shards`].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Image to encode [default: a BUSI sample].
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The requested backends' devices, in order; one that cannot start gets its table row saying
/// why and is skipped.
fn devices(backends: &[BackendKind]) -> impl Iterator<Item = (BackendKind, Device)> + '_ {
    backends.iter().filter_map(|&backend| match init_device(backend) {
        Ok(device) => Some((backend, device)),
        Err(e) => {
            println!("{backend:<8} unavailable: {e}");
            None
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn time<T>(runs: usize, mut f: impl FnMut() -> CliResult<T>) -> CliResult<f64> {
    f()?; // warm-up: kernel compilation, autotuning, allocations
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

pub fn run(args: BenchArgs) -> CliResult<()> {
    if args.train {
        return train_steps(&args);
    }
    let image_path = args
        .image
        .clone()
        .unwrap_or_else(|| PathBuf::from("www/samples/benign_93.png"));
    let image = decode_image(&model_io::read(&image_path)?)?;
    let model_name = args
        .model
        .checkpoint
        .as_ref()
        .map_or_else(|| args.model.model.clone().unwrap_or_else(|| model_io::DEFAULT_MODEL.into()), |p| p.display().to_string());
    let runs = args.runs.max(1);
    println!(
        "sonosam bench: {model_name}, image {} ({}×{}), median of {runs} runs after 1 warm-up",
        image_path.display(),
        image.width(),
        image.height()
    );
    println!(
        "{:<8} {:>13} {:>13} {:>14} {:>15} {:>22}",
        "backend", "encoder (ms)", "prepare (ms)", "1 mask (ms)", "3 masks (ms)", "1 mask unprepared (ms)"
    );
    for (backend, device) in devices(&args.backend) {
        let sam = args.model.load(StoreDType::F32, &device)?.sam;
        let input = preprocess(&image, &sam.config);
        let g = input.geometry;
        let bbox = [
            g.orig_w as f32 * 0.3,
            g.orig_h as f32 * 0.3,
            g.orig_w as f32 * 0.7,
            g.orig_h as f32 * 0.7,
        ];
        let prompt = g
            .prompt_to_frame(&Prompt::from_box(bbox))?;
        let prompts = std::slice::from_ref(&prompt);
        let encoder = match args.encoder_runs.unwrap_or(runs) {
            0 => f64::NAN,
            n => time(n, || {
                let e = sam.encode(&[&input]);
                Ok(read_f32(e.narrow(1, 0, 1))?)
            })?,
        };
        let embedding = sam.encode(&[&input]);
        let read = |out: sonosam_model::mask_decoder::DecoderOutput| -> CliResult<Vec<f32>> { Ok(read_f32(out.low_res_logits)?) };
        // Once per image: the decoder's image-side work.
        let prepare = time(runs, || {
            let p = sam.decoder.prepare(embedding.clone())?;
            device.sync().map_err(|e| anyhow!("{e:?}"))?;
            Ok(p)
        })?;
        let prepared = sam.decoder.prepare(embedding.clone())?;
        let per_prompt = |multimask: bool| {
            time(runs, || read(sam.decoder.decode_prepared(&prepared, prompts, multimask)?))
        };
        let single = per_prompt(false)?;
        let multi = per_prompt(true)?;
        let unprepared = time(runs, || read(sam.decoder.decode(embedding.clone(), prompts, None, false)?))?;
        println!("{backend:<8} {encoder:>13.1} {prepare:>13.1} {single:>14.1} {multi:>15.1} {unprepared:>22.1}");
    }
    Ok(())
}

/// Median time of one fine-tuning step (forward, backward, Adam) per backend.
fn train_steps(args: &BenchArgs) -> CliResult<()> {
    let runs = args.runs.max(1);
    let bs = args.batch_size.max(1);
    println!("sonosam bench --train: mask-decoder step, batch {bs}, Dice loss, Adam; median of {runs} steps after 1 warm-up");
    println!("{:<8} {:>12}", "backend", "step (ms)");
    for (backend, device) in devices(&args.backend) {
        let loaded = args.model.load(StoreDType::F32, &device)?;
        let config = loaded.sam.config.clone();
        let e = config.decoder.embedding_size;
        let lr = config.low_res_size();
        let frame = config.img_size() as f64;
        let mut rng = Rng::new(0);
        let embeddings: Vec<f32> = (0..bs * config.decoder.embed_dim * e * e).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let targets: Vec<f32> = (0..bs * lr * lr).map(|_| f32::from(u8::from(rng.uniform(0.0, 1.0) > 0.7))).collect();
        let prompts = (0..bs)
            .map(|_| {
                let (x, y) = (rng.uniform(0.0, frame * 0.6), rng.uniform(0.0, frame * 0.6));
                let (w, h) = (rng.uniform(20.0, frame * 0.35), rng.uniform(20.0, frame * 0.35));
                Prompt::from_box([x as f32, y as f32, (x + w) as f32, (y + h) as f32])
            })
            .collect();
        let batch = Batch::new(embeddings, prompts, targets);
        let mut trainer = DecoderTrainer::new(config, &loaded.base_decoder, &device, Adam::new(AdamConfig::default()))?
            .with_shards(args.shards.unwrap_or_else(|| default_shards(backend)));
        let step = time(runs, || Ok(trainer.step(&batch, LossKind::Dice, 1e-5)?))?;
        println!("{backend:<8} {step:>12.1}");
    }
    Ok(())
}
