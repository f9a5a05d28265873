//! Prompt protocols of `eval` — how people actually prompt: the tight box, boxes pushed out by
//! up to N px per side, one positive click at the lesion's most interior point, and
//! click-based correction (from the tight box or from that click, one click at a time at the
//! centre of the largest error region — [`sonosam_model::interactive`]) with Dice after 1…5 clicks
//! and NoC@85 / NoC@90 (clicks to reach that Dice, capped at 20, with the failure rate).
//! Deterministic for a seed; the same simulated clicker for every decoder.

use std::collections::BTreeMap;

use serde::Serialize;
use sonosam_model::box_prompts::jitter_box;
use sonosam_model::clicker::{clicks_to_reach, first_click};
use sonosam_model::interactive::Session;
use sonosam_model::preprocess::Geometry;
use sonosam_model::rng::Rng;
use sonosam_model::{Mask, Predictor, Prompt};

use crate::CliResult;

/// Most clicks of a correction run.
pub const MAX_CLICKS: usize = 20;
/// Dice after this many clicks is reported.
pub const REPORTED_CLICKS: usize = 5;

/// One prompt protocol (`--prompt`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Protocol {
    /// `tight`: the ground truth's tight box.
    Tight,
    /// `jitterN`: each side of the tight box pushed out by U[0, N) px (model frame).
    Jitter(f32),
    /// `click`: one positive click at the lesion's most interior point.
    Click,
    /// `correct-box`: the tight box, then correction clicks.
    CorrectFromBox,
    /// `correct-click`: one click, then correction clicks.
    CorrectFromClick,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tight" => Ok(Protocol::Tight),
            "click" => Ok(Protocol::Click),
            "correct-box" => Ok(Protocol::CorrectFromBox),
            "correct-click" => Ok(Protocol::CorrectFromClick),
            _ => match s.strip_prefix("jitter").and_then(|n| n.parse::<f32>().ok()) {
                Some(n) if n > 0.0 && n.is_finite() => Ok(Protocol::Jitter(n)),
                _ => Err(format!("unknown prompt protocol `{s}` (tight, jitterN, click, correct-box, correct-click)")),
            },
        }
    }
}

impl Protocol {
    /// Its name on the command line (what `FromStr` reads).
    pub fn name(self) -> String {
        match self {
            Protocol::CorrectFromBox => "correct-box".into(),
            Protocol::CorrectFromClick => "correct-click".into(),
            p => p.key(),
        }
    }

    /// The JSON key and column name.
    pub fn key(self) -> String {
        match self {
            Protocol::Tight => "tight".into(),
            Protocol::Jitter(n) => format!("jitter{n}"),
            Protocol::Click => "click".into(),
            Protocol::CorrectFromBox => "from_box".into(),
            Protocol::CorrectFromClick => "from_click".into(),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One instance's results: Dice per single-prompt protocol, and the Dice run of each
/// correction protocol (`runs[k]`: after k prompts — for `from_box` k = 0 is the box alone).
#[derive(Debug, Clone, Default)]
pub struct InstanceProtocols {
    pub dice: BTreeMap<String, f64>,
    pub runs: BTreeMap<String, Vec<f64>>,
}

/// Run `protocols` on one instance (`truth` at the image's size, `tight` its tight box in the
/// model frame, `stream` its seed stream).
pub fn run(predictor: &Predictor<'_>, g: &Geometry, truth: &Mask, tight: [f32; 4], protocols: &[Protocol], seed: u64, stream: u64) -> CliResult<InstanceProtocols> {
    let mut out = InstanceProtocols::default();
    // Prompts are in the model frame; clicks are found in image pixels and scaled there.
    let click = first_click(truth).map(|c| g.point_to_frame(c.x, c.y, c.label)).transpose()?;
    let one_click = Prompt { points: click.into_iter().collect(), bbox: None };
    for &p in protocols {
        match p {
            Protocol::Tight => {
                let mask = decode(predictor, truth, Prompt::from_box(tight))?;
                out.dice.insert(p.key(), mask.dice(truth)?);
            }
            Protocol::Jitter(n) => {
                // Its own stream per level: the same boxes whatever else is asked.
                let mut rng = Rng::derive(seed ^ u64::from(n.to_bits()).rotate_left(32), stream);
                let mask = decode(predictor, truth, Prompt::from_box(jitter_box(tight, n, g, &mut rng)))?;
                out.dice.insert(p.key(), mask.dice(truth)?);
            }
            Protocol::Click => {
                let mask = decode(predictor, truth, one_click.clone())?;
                out.dice.insert(p.key(), mask.dice(truth)?);
            }
            Protocol::CorrectFromBox => {
                out.runs.insert(p.key(), correct(predictor, truth, Prompt::from_box(tight))?);
            }
            Protocol::CorrectFromClick => {
                out.runs.insert(p.key(), correct(predictor, truth, one_click.clone())?);
            }
        }
    }
    Ok(out)
}

/// The kept mask for `prompt` (model frame) alone: see [`Session::answer`].
fn decode(predictor: &Predictor<'_>, truth: &Mask, prompt: Prompt) -> CliResult<Mask> {
    Ok(Session::new(predictor, truth, prompt).answer()?.mask)
}

/// A correction run from `start`: Dice after each prompt, adding one click per step at the
/// largest error (the previous low-res logits fed back as the mask prompt), until Dice 0.90
/// is reached with at least [`REPORTED_CLICKS`] clicks made, the prediction is exact, or
/// [`MAX_CLICKS`] clicks.
fn correct(predictor: &Predictor<'_>, truth: &Mask, start: Prompt) -> CliResult<Vec<f64>> {
    let mut session = Session::new(predictor, truth, start);
    let mut dice = Vec::new();
    loop {
        let answer = session.answer()?;
        dice.push(answer.mask.dice(truth)?);
        let clicks = session.prompt().points.len();
        let reached = dice.iter().any(|&d| d >= 0.90);
        if clicks >= MAX_CLICKS || (reached && clicks >= REPORTED_CLICKS) || !session.correct(answer)? {
            break; // (exact: every later click would change nothing)
        }
    }
    Ok(dice)
}

/// Mean and median Dice of a single-prompt protocol.
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolSummary {
    pub dice_mean: f64,
    pub dice_median: f64,
    pub n: usize,
}

/// Clicks to reach Dice 0.85 / 0.90 (mean over instances, a failure counting [`MAX_CLICKS`]),
/// the share of instances that never reach 0.90, and the mean Dice after 1…5 clicks.
#[derive(Debug, Clone, Serialize)]
pub struct NocSummary {
    pub noc85: f64,
    pub noc90: f64,
    pub failure_rate: f64,
    pub dice_after_clicks: Vec<f64>,
    pub n: usize,
}

/// The `prompts` and `noc` parts of the summary.
pub fn summarise(all: &[&InstanceProtocols]) -> (BTreeMap<String, ProtocolSummary>, BTreeMap<String, NocSummary>) {
    let mut prompts = BTreeMap::new();
    let keys: Vec<String> = all.first().map(|a| a.dice.keys().cloned().collect()).unwrap_or_default();
    for key in keys {
        let mut v: Vec<f64> = all.iter().filter_map(|a| a.dice.get(&key).copied()).collect();
        let dice_mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let n = v.len();
        prompts.insert(key, ProtocolSummary { dice_mean, dice_median: sonosam_model::mask::percentile(&mut v, 50.0), n });
    }
    let mut noc = BTreeMap::new();
    let keys: Vec<String> = all.first().map(|a| a.runs.keys().cloned().collect()).unwrap_or_default();
    for key in keys {
        let runs: Vec<&Vec<f64>> = all.iter().filter_map(|a| a.runs.get(&key)).collect();
        // `from_box` starts with the box alone (0 clicks); `from_click` with one click.
        let offset = usize::from(key == Protocol::CorrectFromBox.key());
        let clicks = |run: &[f64], target: f64| {
            let reached = clicks_to_reach(run, target).map(|k| k - offset);
            reached.filter(|&k| k <= MAX_CLICKS)
        };
        let mean_noc = |target: f64| runs.iter().map(|r| clicks(r, target).unwrap_or(MAX_CLICKS) as f64).sum::<f64>() / runs.len().max(1) as f64;
        let failures = runs.iter().filter(|r| clicks(r, 0.90).is_none()).count();
        // Dice after k clicks; a run that stopped early (exact, or done) keeps its last value.
        let after = |k: usize| {
            runs.iter().map(|r| r[(k - 1 + offset).min(r.len() - 1)]).sum::<f64>() / runs.len().max(1) as f64
        };
        noc.insert(key, NocSummary {
            noc85: mean_noc(0.85),
            noc90: mean_noc(0.90),
            failure_rate: failures as f64 / runs.len().max(1) as f64,
            dice_after_clicks: (1..=REPORTED_CLICKS).map(after).collect(),
            n: runs.len(),
        });
    }
    (prompts, noc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_and_name_themselves() {
        let keys: Vec<String> = ["tight", "jitter10", "click", "correct-box", "correct-click"]
            .iter()
            .map(|k| k.parse::<Protocol>().unwrap().key())
            .collect();
        assert_eq!(keys, ["tight", "jitter10", "click", "from_box", "from_click"]);
        assert_eq!("jitter20".parse::<Protocol>().unwrap().key(), "jitter20");
        assert_eq!("correct-box".parse::<Protocol>().unwrap().key(), "from_box");
        assert!("jitter-1".parse::<Protocol>().is_err() && "lasso".parse::<Protocol>().is_err());
    }

    #[test]
    fn noc_from_runs() {
        let run = |v: &[f64]| v.to_vec();
        let a = InstanceProtocols { runs: BTreeMap::from([("from_box".into(), run(&[0.80, 0.87, 0.92, 0.93, 0.94, 0.95]))]), ..Default::default() };
        let b = InstanceProtocols { runs: BTreeMap::from([("from_box".into(), run(&[0.95, 0.96, 0.96, 0.96, 0.97, 0.97]))]), ..Default::default() };
        let c = InstanceProtocols { runs: BTreeMap::from([("from_box".into(), vec![0.5; MAX_CLICKS + 1])]), ..Default::default() };
        let (_, noc) = summarise(&[&a, &b, &c]);
        let s = &noc["from_box"];
        // Box alone: a 0.80, b 0.95 (NoC 0), c never. NoC@85: a 1, b 0, c 20; NoC@90: a 2, b 0, c 20.
        assert!((s.noc85 - 21.0 / 3.0).abs() < 1e-12 && (s.noc90 - 22.0 / 3.0).abs() < 1e-12, "{s:?}");
        assert!((s.failure_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.dice_after_clicks[0] - (0.87 + 0.96 + 0.5) / 3.0).abs() < 1e-12);
        let d = InstanceProtocols { runs: BTreeMap::from([("from_click".into(), run(&[0.91]))]), ..Default::default() };
        let (_, noc) = summarise(&[&d]);
        assert_eq!((noc["from_click"].noc90, noc["from_click"].failure_rate), (1.0, 0.0));
        assert_eq!(noc["from_click"].dice_after_clicks, vec![0.91; REPORTED_CLICKS]);
    }
}
