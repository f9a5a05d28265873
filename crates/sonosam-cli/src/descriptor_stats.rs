//! Whether predicted outlines keep the diagnostic signal of the true ones: for each shape
//! descriptor, the benign-vs-malignant AUC on the ground-truth and on the predicted masks of a
//! labelled split, the agreement of the categorical calls between the two (Cohen's kappa), the
//! ground truth's Youden thresholds (what the calls' thresholds are chosen from, on the training
//! split only), and ROC curves as SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use sonosam_model::measure::descriptors::{Calls, Descriptors, Malignant, Named, TABLE};

/// One lesion with a known class, described on both outlines.
pub struct Labelled<'a> {
    pub malignant: bool,
    pub gt: &'a Descriptors,
    pub pred: &'a Descriptors,
}

#[derive(Debug, Clone, Serialize)]
pub struct AucPair {
    pub gt: f64,
    pub pred: f64,
}

/// The threshold that maximises sensitivity + specificity − 1 (Youden's J).
#[derive(Debug, Clone, Serialize)]
pub struct Youden {
    /// Malignant when the value is at or beyond this, in the descriptor's malignant direction.
    pub threshold: f64,
    pub malignant_when: Malignant,
    pub sensitivity: f64,
    pub specificity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DescriptorSummary {
    /// Benign-vs-malignant AUC per descriptor, oriented so that 1 is perfect in the
    /// direction the literature gives (below 0.5: the data disagree with it).
    pub descriptors_auc: BTreeMap<String, AucPair>,
    /// Cohen's kappa of the categorical calls (shape, orientation, margin), ground truth vs
    /// prediction.
    pub descriptor_calls_kappa: BTreeMap<String, f64>,
    /// Youden's thresholds on the ground-truth outlines.
    pub descriptor_youden: BTreeMap<String, Youden>,
    /// Lesions described on both outlines, by class; and those left out (an outline not
    /// measurable: empty prediction or too small).
    pub descriptor_benign: usize,
    pub descriptor_malignant: usize,
    pub descriptor_not_measurable: usize,
}

/// The statistics of `items`; `None` without both classes. `left_out`: lesions without
/// descriptors on either outline.
pub fn summarise(items: &[Labelled<'_>], left_out: usize) -> Option<DescriptorSummary> {
    let malignant = items.iter().filter(|i| i.malignant).count();
    if malignant == 0 || malignant == items.len() {
        return None;
    }
    let mut auc = BTreeMap::new();
    let mut youden = BTreeMap::new();
    for named in &TABLE {
        let gt = oriented(items, named, |i| i.gt);
        let pred = oriented(items, named, |i| i.pred);
        auc.insert(named.name.to_string(), AucPair { gt: area_under_roc(&gt), pred: area_under_roc(&pred) });
        youden.insert(named.name.to_string(), youden_threshold(&gt, named.malignant));
    }
    let kappa = |f: fn(&Calls) -> u8| cohen_kappa(items.iter().map(|i| (f(&i.gt.calls), f(&i.pred.calls))));
    let calls_kappa = BTreeMap::from([
        ("shape".to_string(), kappa(|c| c.shape as u8)),
        ("orientation".to_string(), kappa(|c| c.orientation as u8)),
        ("margin".to_string(), kappa(|c| c.margin as u8)),
    ]);
    Some(DescriptorSummary {
        descriptors_auc: auc,
        descriptor_calls_kappa: calls_kappa,
        descriptor_youden: youden,
        descriptor_benign: items.len() - malignant,
        descriptor_malignant: malignant,
        descriptor_not_measurable: left_out,
    })
}

/// `(score, malignant)` pairs, scores signed so that higher means "more malignant".
fn oriented<'a>(items: &[Labelled<'a>], named: &Named, side: fn(&Labelled<'a>) -> &'a Descriptors) -> Vec<(f64, bool)> {
    let sign = if named.malignant == Malignant::Higher { 1.0 } else { -1.0 };
    items.iter().map(|i| (sign * (named.value)(side(i)), i.malignant)).collect()
}

/// P(a malignant lesion scores above a benign one), ties counting one half (Mann–Whitney).
pub fn area_under_roc(scored: &[(f64, bool)]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for &(m, _) in scored.iter().filter(|s| s.1) {
        for &(b, _) in scored.iter().filter(|s| !s.1) {
            pairs += 1.0;
            wins += if m > b { 1.0 } else if m == b { 0.5 } else { 0.0 };
        }
    }
    wins / pairs
}

/// The ROC curve's points `(1 − specificity, sensitivity)`, from (0, 0) to (1, 1), one per
/// distinct score.
pub fn roc_points(scored: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = sorted.iter().filter(|s| s.1).count().max(1) as f64;
    let negatives = sorted.iter().filter(|s| !s.1).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![(0.0, 0.0)];
    for (k, &(score, malignant)) in sorted.iter().enumerate() {
        if malignant { tp += 1.0 } else { fp += 1.0 }
        if sorted.get(k + 1).is_none_or(|next| next.0 != score) {
            points.push((fp / negatives, tp / positives));
        }
    }
    points
}

fn youden_threshold(scored: &[(f64, bool)], malignant_when: Malignant) -> Youden {
    let positives = scored.iter().filter(|s| s.1).count().max(1) as f64;
    let negatives = scored.iter().filter(|s| !s.1).count().max(1) as f64;
    let best = scored
        .iter()
        .map(|&(t, _)| {
            let tp = scored.iter().filter(|s| s.1 && s.0 >= t).count() as f64;
            let tn = scored.iter().filter(|s| !s.1 && s.0 < t).count() as f64;
            (t, tp / positives, tn / negatives)
        })
        .max_by(|a, b| (a.1 + a.2).total_cmp(&(b.1 + b.2)).then(b.0.total_cmp(&a.0)))
        .unwrap_or((0.0, 0.0, 0.0));
    let sign = if malignant_when == Malignant::Higher { 1.0 } else { -1.0 };
    Youden { threshold: sign * best.0, malignant_when, sensitivity: best.1, specificity: best.2 }
}

/// Cohen's kappa of paired categorical ratings; 1 when both always give the same single
/// category.
pub fn cohen_kappa(pairs: impl Iterator<Item = (u8, u8)>) -> f64 {
    let pairs: Vec<(u8, u8)> = pairs.collect();
    let n = pairs.len().max(1) as f64;
    let observed = pairs.iter().filter(|(a, b)| a == b).count() as f64 / n;
    let share = |k: u8, side: fn(&(u8, u8)) -> u8| pairs.iter().filter(|p| side(p) == k).count() as f64 / n;
    let expected: f64 = (0..=u8::MAX).map(|k| share(k, |p| p.0) * share(k, |p| p.1)).sum();
    if expected >= 1.0 { 1.0 } else { (observed - expected) / (1.0 - expected) }
}

/// ROC curves of every descriptor, ground truth (solid) and prediction (dashed), as one SVG
/// of small panels.
pub fn roc_svg(items: &[Labelled<'_>], title: &str) -> String {
    const PANEL: f64 = 170.0;
    const PLOT: f64 = 120.0;
    const COLUMNS: usize = 4;
    let rows = TABLE.len().div_ceil(COLUMNS);
    let (width, height) = (PANEL * COLUMNS as f64, PANEL * rows as f64 + 40.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"10\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"8\" y=\"16\" font-size=\"13\">{}</text>\n\
         <text x=\"8\" y=\"31\"><tspan fill=\"#0072B2\">━ ground-truth outline</tspan>   <tspan fill=\"#D55E00\">╍ predicted outline</tspan>   (x: 1 − specificity, y: sensitivity)</text>\n",
        escape(title)
    );
    for (k, named) in TABLE.iter().enumerate() {
        let (x0, y0) = ((k % COLUMNS) as f64 * PANEL + 35.0, (k / COLUMNS) as f64 * PANEL + 60.0);
        let gt = oriented(items, named, |i| i.gt);
        let pred = oriented(items, named, |i| i.pred);
        let _ = writeln!(
            svg,
            "<g transform=\"translate({x0},{y0})\"><text x=\"0\" y=\"-6\">{} — AUC {:.3} / {:.3}</text>\
             <rect width=\"{PLOT}\" height=\"{PLOT}\" fill=\"none\" stroke=\"#999\"/>\
             <line x1=\"0\" y1=\"{PLOT}\" x2=\"{PLOT}\" y2=\"0\" stroke=\"#ccc\"/>",
            named.name,
            area_under_roc(&gt),
            area_under_roc(&pred)
        );
        for (curve, colour, dash) in [(&gt, "#0072B2", ""), (&pred, "#D55E00", " stroke-dasharray=\"4 2\"")] {
            let path: Vec<String> = roc_points(curve)
                .iter()
                .map(|(fpr, tpr)| format!("{:.1},{:.1}", fpr * PLOT, (1.0 - tpr) * PLOT))
                .collect();
            let _ = writeln!(svg, "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash}/>", path.join(" "));
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_roc_and_youden_on_known_scores() {
        let perfect = [(0.9, true), (0.8, true), (0.2, false), (0.1, false)];
        assert_eq!(area_under_roc(&perfect), 1.0);
        assert_eq!(roc_points(&perfect), vec![(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]);
        let y = youden_threshold(&perfect, Malignant::Higher);
        assert_eq!((y.threshold, y.sensitivity, y.specificity), (0.8, 1.0, 1.0));
        let lower = youden_threshold(&[(-0.2, true), (-0.9, false)], Malignant::Lower);
        assert_eq!(lower.threshold, 0.2); // malignant at or below 0.2
        let ties = [(0.5, true), (0.5, false)];
        assert_eq!(area_under_roc(&ties), 0.5);
        let mixed = [(0.9, true), (0.7, false), (0.6, true), (0.1, false)];
        assert_eq!(area_under_roc(&mixed), 0.75);
    }

    #[test]
    fn kappa() {
        assert_eq!(cohen_kappa([(0, 0), (1, 1), (0, 0), (1, 1)].into_iter()), 1.0);
        assert_eq!(cohen_kappa([(0, 0), (0, 0)].into_iter()), 1.0);
        // Agreement at chance: 0.
        assert!(cohen_kappa([(0, 0), (0, 1), (1, 0), (1, 1)].into_iter()).abs() < 1e-12);
    }
}
