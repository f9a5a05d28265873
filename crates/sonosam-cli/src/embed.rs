//! `sonosam embed`: encode a labelled data set's images into the embeddings cache that `eval`
//! and `finetune` read, once — on this machine, or split across machines (`--shard I/N`, e.g.
//! the pods of a Kubernetes Indexed Job with `--shard $JOB_COMPLETION_INDEX/N`) that share the
//! cache folder. Resumable: what the cache holds is not encoded again.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use sonosam_data::Dataset;
use sonosam_model::StoreDType;
use sonosam_model::backend::BackendKind;

use crate::CliResult;
use crate::model_io::ModelArgs;
use crate::prepare::{Study, split_entries};

#[derive(Args)]
pub struct EmbedArgs {
    /// Data folder (BUSI layout with splits.csv, or images/ + masks/)
    #[arg(long)]
    pub data: PathBuf,
    /// Splits file [default: DATA/splits.csv]
    #[arg(long)]
    pub splits: Option<PathBuf>,
    /// Split to encode (train, val, test, all)
    #[arg(long, default_value = "all")]
    pub split: String,
    /// This machine's part, `I/N` (0 ≤ I < N): the split's images whose position modulo N is I
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Only the first N images of the split (before sharding)
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value = "cpu", value_parser = crate::parse_backend)]
    pub backend: BackendKind,
    /// Weights precision: f32, f16 or i8 (the cache is per encoder weights)
    #[arg(long, default_value = "f32", value_parser = crate::parse_dtype)]
    pub dtype: StoreDType,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cache folder for embeddings [env: SONOSAM_CACHE; default: ~/.cache/sonosam]
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Part `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("`{s}` is not I/N (e.g. 0/4)"))?;
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("`{s}` is not I/N (e.g. 0/4)"));
    let shard = Shard { index: parse(i)?, count: parse(n)? };
    if shard.count == 0 || shard.index >= shard.count {
        return Err(format!("shard {s}: I must be in 0 … N − 1"));
    }
    Ok(shard)
}

pub fn run(args: EmbedArgs) -> CliResult<()> {
    let data = Dataset::open(&args.data, args.splits.as_deref()).map_err(anyhow::Error::msg)?;
    if split_entries(&data, &args.split, args.limit).is_empty() {
        bail!("split `{}` has no images in {}", args.split, args.data.display());
    }
    let study = Study::open(data, &args.model, args.dtype, args.backend, args.cache)?;
    let all = split_entries(&study.data, &args.split, args.limit);
    let shard = args.shard.unwrap_or(Shard { index: 0, count: 1 });
    let mine: Vec<_> = all.iter().enumerate().filter(|(k, _)| k % shard.count == shard.index).map(|(_, e)| *e).collect();
    let what = format!("{} split, shard {}/{}", args.split, shard.index, shard.count);
    let done = study.embed(&mine, &what)?;
    let rate = if done.encoded > 0 { format!(" ({:.2} s/image)", done.encode_seconds / done.encoded as f64) } else { String::new() };
    println!(
        "{what}: {} of {} images; embeddings: {} cached, {} encoded{rate}, {} unreadable",
        mine.len(),
        all.len(),
        done.cached,
        done.encoded,
        done.unreadable.len()
    );
    for u in &done.unreadable {
        println!("  - {u}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_are_checked() {
        assert_eq!(parse_shard("2/5"), Ok(Shard { index: 2, count: 5 }));
        for bad in ["5/5", "1/0", "a/2", "3", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
