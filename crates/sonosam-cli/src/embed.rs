//! `sonosam embed`: encode a labelled data set's images into the embeddings cache that `eval`
//! and `finetune` read, once — on this machine, or split across machines (`--shard I/N`, e.g.
//! the pods of a Kubernetes Indexed Job with `--shard $JOB_COMPLETION_INDEX/N`) that share the
//! cache folder. Resumable: what the cache holds is not encoded again.

use clap::Args;

use crate::CliResult;
use crate::prepare::{DataArgs, split_entries};

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub source: DataArgs,
    /// Split to encode (train, val, test, all)
    #[arg(long, default_value = "all")]
    pub split: String,
    /// This machine's part, `I/N` (0 ≤ I < N): the split's images whose position modulo N is I
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
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
    let study = args.source.open_study(&args.split)?;
    // The first `--limit` images of the split, then this shard's part of them.
    let all = split_entries(&study.data, &args.split, args.source.limit);
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
