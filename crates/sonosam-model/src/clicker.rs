//! The simulated user of interactive segmentation: where a person would click, given the true
//! mask and the current prediction — the protocol of the interactive-segmentation literature
//! (one click at the centre of the largest error region, positive in a missed region,
//! negative in a false one; "centre" = the point farthest from the region's edge). Pure and
//! deterministic: ties go to the first pixel in raster order, and the same masks always give
//! the same click. Used by `eval`'s click protocols (and NoC@85/90) and by training.

use crate::mask::Mask;
use crate::prompt::{Point, PointLabel};
use crate::rng::Rng;

/// The most interior point of `region` (the maximum of its distance to the nearest pixel
/// outside it; the image's border counts as outside), as a pixel centre; `None` when empty.
/// Where several pixels share the maximum (a plateau, as in a rectangle), the one nearest
/// their mean, then the first in raster order.
pub fn interior_point(region: &Mask) -> Option<(usize, usize)> {
    let w = region.width;
    let depth = depth(region);
    let members = || (0..depth.len()).filter(|&i| region.data[i] != 0);
    let deepest = members().map(|i| depth[i]).fold(f64::NEG_INFINITY, f64::max);
    let plateau: Vec<usize> = members().filter(|&i| depth[i] >= deepest - 1e-9).collect();
    // Distances to the mean, scaled by the count: exact in integers.
    let n = plateau.len() as i128;
    let (sx, sy) = plateau.iter().fold((0i128, 0i128), |(x, y), &i| (x + (i % w) as i128, y + (i / w) as i128));
    let off = |i: usize| ((i % w) as i128 * n - sx).pow(2) + ((i / w) as i128 * n - sy).pow(2);
    let best = plateau.into_iter().fold(None, |best: Option<usize>, i| match best {
        Some(b) if off(b) <= off(i) => Some(b),
        _ => Some(i),
    })?;
    Some((best % w, best / w))
}

/// Each pixel's distance to the nearest pixel outside `region` (the image's border counts as
/// outside; 0 outside the region).
fn depth(region: &Mask) -> Vec<f64> {
    let (w, h) = (region.width, region.height);
    let outside: Vec<(usize, usize)> = (0..w * h).filter(|&i| region.data[i] == 0).map(|i| (i % w, i / w)).collect();
    let inside = crate::mask::distance_to(&outside, w, h);
    let border = |x: usize, y: usize| (x.min(w - 1 - x).min(y).min(h - 1 - y) + 1) as f64;
    (0..w * h).map(|i| if region.data[i] == 0 { 0.0 } else { inside[i].min(border(i % w, i / w)) }).collect()
}

/// A click where a person might put it on `region` when asked to click the lesion: uniform
/// over the region's core — its pixels at least `core` × the deepest pixel's depth from the
/// edge (0: anywhere in it; 1: only the most interior points) — with `label`. How training
/// samples click prompts; `None` when the region is empty.
pub fn random_click(region: &Mask, core: f64, label: PointLabel, rng: &mut Rng) -> Option<Point> {
    let w = region.width;
    let depth = depth(region);
    let deepest = depth.iter().copied().fold(0.0, f64::max);
    if deepest <= 0.0 {
        return None;
    }
    let candidates: Vec<usize> = (0..depth.len()).filter(|&i| depth[i] > 0.0 && depth[i] >= core * deepest).collect();
    let i = candidates[rng.below(candidates.len())];
    Some(Point { x: (i % w) as f32, y: (i / w) as f32, label })
}

/// The first click on a lesion: positive, at its most interior point.
pub fn first_click(truth: &Mask) -> Option<Point> {
    let (x, y) = interior_point(truth)?;
    Some(Point { x: x as f32, y: y as f32, label: PointLabel::Positive })
}

/// The next correction: the largest 4-connected error region — missed lesion (positive
/// click) or false lesion (negative click), the missed one on a tie — clicked at its most
/// interior point. `None` when the prediction is exact.
pub fn next_click(truth: &Mask, prediction: &Mask) -> Option<Point> {
    let missed = Mask::from_fn(truth.width, truth.height, |i| truth.data[i] != 0 && prediction.data[i] == 0);
    let false_pos = Mask::from_fn(truth.width, truth.height, |i| truth.data[i] == 0 && prediction.data[i] != 0);
    let (m, f) = (missed.largest_component(), false_pos.largest_component());
    let (region, label) = if m.area() >= f.area() { (m, PointLabel::Positive) } else { (f, PointLabel::Negative) };
    let (x, y) = interior_point(&region)?;
    Some(Point { x: x as f32, y: y as f32, label })
}

/// Number of clicks to reach Dice `target` in a run of Dice values after 1, 2, … clicks
/// (`dice[k]`: after k + 1 clicks), or `None` when it never does within the run (the
/// protocol then counts the cap and a failure).
pub fn clicks_to_reach(dice: &[f64], target: f64) -> Option<usize> {
    dice.iter().position(|&d| d >= target).map(|k| k + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(w: usize, h: usize, r: [usize; 4]) -> Mask {
        Mask::from_fn(w, h, |i| (r[0]..=r[2]).contains(&(i % w)) && (r[1]..=r[3]).contains(&(i / w)))
    }

    #[test]
    fn first_click_is_the_most_interior_point() {
        let disc = Mask::disc(60, 40, 30.0, 20.0, 10.0);
        let p = first_click(&disc).unwrap();
        assert_eq!((p.x, p.y, p.label), (30.0, 20.0, PointLabel::Positive));
        // An L shape: the click is inside its thick part, not at its bounding box's centre.
        let mut l = rect(50, 50, [5, 5, 44, 14]);
        l.union_with(&rect(50, 50, [5, 5, 14, 44])).unwrap();
        let p = first_click(&l).unwrap();
        assert!(l.get(p.x as usize, p.y as usize), "{p:?}");
        // A lesion touching the border: the border counts as outside.
        let edge = rect(40, 40, [0, 10, 9, 29]);
        let p = first_click(&edge).unwrap();
        assert_eq!((p.x, p.y), (4.0, 19.0), "the middle of the plateau, then raster order");
        assert!(first_click(&Mask::new(10, 10)).is_none());
    }

    #[test]
    fn correction_goes_to_the_largest_error_region() {
        let truth = rect(80, 60, [10, 10, 49, 39]);
        // Missed: the right part of the lesion (x 40..49 → 300 px); false: a 5×5 blob away.
        let mut pred = rect(80, 60, [10, 10, 39, 39]);
        pred.union_with(&rect(80, 60, [60, 50, 64, 54])).unwrap();
        let c = next_click(&truth, &pred).unwrap();
        assert_eq!(c.label, PointLabel::Positive);
        assert!((40.0..=49.0).contains(&c.x) && (10.0..=39.0).contains(&c.y), "{c:?}");
        // A large false region wins: a negative click inside it.
        let mut pred = truth.clone();
        pred.union_with(&rect(80, 60, [55, 5, 75, 55])).unwrap();
        let c = next_click(&truth, &pred).unwrap();
        assert_eq!(c.label, PointLabel::Negative);
        assert!(!truth.get(c.x as usize, c.y as usize) && pred.get(c.x as usize, c.y as usize));
        assert!(next_click(&truth, &truth).is_none());
        // Deterministic.
        assert_eq!(next_click(&truth, &pred), next_click(&truth, &pred));
    }

    #[test]
    fn random_clicks_fall_in_the_core_and_repeat_for_a_seed() {
        let disc = Mask::disc(80, 60, 40.0, 30.0, 20.0);
        let clicks = |seed| {
            let mut rng = Rng::new(seed);
            (0..50).map(|_| random_click(&disc, 0.5, PointLabel::Positive, &mut rng).unwrap()).collect::<Vec<_>>()
        };
        let a = clicks(7);
        assert_eq!(a, clicks(7));
        assert_ne!(a, clicks(8));
        for p in &a {
            // Depth ≥ half of the disc's 20 px radius: within ≈ 10 px of the centre.
            let r = ((p.x - 40.0).powi(2) + (p.y - 30.0).powi(2)).sqrt();
            assert!(r <= 11.0 && p.label == PointLabel::Positive, "{p:?} at {r}");
        }
        // Spread over the core, not one point.
        assert!(a.iter().map(|p| (p.x as i32, p.y as i32)).collect::<std::collections::BTreeSet<_>>().len() > 20);
        let mut rng = Rng::new(1);
        let anywhere: Vec<Point> = (0..200).map(|_| random_click(&disc, 0.0, PointLabel::Negative, &mut rng).unwrap()).collect();
        assert!(anywhere.iter().all(|p| disc.get(p.x as usize, p.y as usize)));
        assert!(anywhere.iter().any(|p| ((p.x - 40.0).powi(2) + (p.y - 30.0).powi(2)).sqrt() > 15.0));
        assert!(random_click(&Mask::new(10, 10), 0.0, PointLabel::Positive, &mut rng).is_none());
    }

    #[test]
    fn noc_counts_clicks_to_the_target() {
        assert_eq!(clicks_to_reach(&[0.7, 0.86, 0.91], 0.85), Some(2));
        assert_eq!(clicks_to_reach(&[0.7, 0.86, 0.91], 0.90), Some(3));
        assert_eq!(clicks_to_reach(&[0.95], 0.90), Some(1));
        assert_eq!(clicks_to_reach(&[0.5, 0.6], 0.90), None);
    }
}
