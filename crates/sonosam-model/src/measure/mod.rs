//! Lesion measurements from a mask, as a sonographer takes them: area, the longest diameter,
//! and the longest diameter perpendicular to it (calipers), in pixels and, given the pixel
//! spacing, in millimetres. Pure Rust, shared by the browser app and the CLI.
//!
//! - [`descriptors`]: BI-RADS-style shape descriptors and their categorical suggestions;
//! - [`outline`]: the lesion's outline as a polygon, and the plane geometry both use.

pub mod descriptors;
pub mod outline;

use serde::{Deserialize, Serialize};

use crate::mask::Mask;

/// A caliper: a segment between two pixel centres `(x, y)` in original-image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Caliper {
    pub from: [f64; 2],
    pub to: [f64; 2],
    /// Length in pixels (centre to centre, plus one pixel for the extent of the end pixels).
    pub length_px: f64,
}

impl Caliper {
    fn new(from: [f64; 2], to: [f64; 2]) -> Self {
        let length_px = ((to[0] - from[0]).hypot(to[1] - from[1])) + 1.0;
        Self { from, to, length_px }
    }
}

/// Measurements of one lesion mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// Foreground pixel count.
    pub area_px: usize,
    /// The longest diameter.
    pub long_axis: Caliper,
    /// The longest diameter perpendicular to `long_axis`.
    pub short_axis: Caliper,
    /// Millimetres per pixel, when the user gave it.
    pub mm_per_px: Option<f64>,
}

impl Measurements {
    /// The end points (x, y) of both calipers: what a calibration must cover.
    pub fn ends(&self) -> [(f64, f64); 4] {
        let p = |v: [f64; 2]| (v[0], v[1]);
        [p(self.long_axis.from), p(self.long_axis.to), p(self.short_axis.from), p(self.short_axis.to)]
    }

    pub fn area_mm2(&self) -> Option<f64> {
        self.mm_per_px.map(|s| self.area_px as f64 * s * s)
    }
    pub fn long_mm(&self) -> Option<f64> {
        self.mm_per_px.map(|s| self.long_axis.length_px * s)
    }
    pub fn short_mm(&self) -> Option<f64> {
        self.mm_per_px.map(|s| self.short_axis.length_px * s)
    }

    /// One line for people: `area 1234 px (12.3 mm²), long 45.0 px (4.5 mm), perp 30.0 px`.
    pub fn summary(&self) -> String {
        let mm = |v: Option<f64>, unit: &str| v.map(|v| format!(" ({v:.1} {unit})")).unwrap_or_default();
        format!(
            "area {} px{}, long axis {:.1} px{}, perpendicular {:.1} px{}",
            self.area_px,
            mm(self.area_mm2(), "mm²"),
            self.long_axis.length_px,
            mm(self.long_mm(), "mm"),
            self.short_axis.length_px,
            mm(self.short_mm(), "mm"),
        )
    }
}

/// Measure a mask; `None` when it is empty. `mm_per_px` is the pixel spacing, if known.
pub fn measure(mask: &Mask, mm_per_px: Option<f64>) -> Option<Measurements> {
    let contour = mask.contour();
    if contour.is_empty() {
        return None;
    }
    let points: Vec<outline::Point> = contour.iter().map(|&(x, y)| [x as f64, y as f64]).collect();
    let hull: Vec<outline::Point> = outline::convex_hull(&points).into_iter().map(|i| points[i]).collect();
    // Longest diameter: the farthest pair of hull vertices (hulls of masks are small; integer
    // coordinates, so the squared distances are exact).
    let (mut from, mut to, mut best) = (hull[0], hull[0], -1.0);
    for (i, &p) in hull.iter().enumerate() {
        for &q in &hull[i..] {
            let d = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2);
            if d > best {
                (from, to, best) = (p, q, d);
            }
        }
    }
    let long_axis = Caliper::new(from, to);
    // Perpendicular diameter: along each 1-px slice across the long axis, the extent of the
    // lesion in the perpendicular direction; the widest slice wins.
    let len = (to[0] - from[0]).hypot(to[1] - from[1]);
    let (u, v) = if len > 0.0 {
        let u = [(to[0] - from[0]) / len, (to[1] - from[1]) / len];
        (u, [-u[1], u[0]])
    } else {
        ([1.0, 0.0], [0.0, 1.0])
    };
    let bins = len.ceil() as usize + 3;
    let mut lo = vec![f64::INFINITY; bins];
    let mut hi = vec![f64::NEG_INFINITY; bins];
    for &(x, y) in &contour {
        let (dx, dy) = (x as f64 - from[0], y as f64 - from[1]);
        let t = dx * u[0] + dy * u[1];
        let s = dx * v[0] + dy * v[1];
        let k = ((t + 1.0).round().max(0.0) as usize).min(bins - 1);
        lo[k] = lo[k].min(s);
        hi[k] = hi[k].max(s);
    }
    let (k, width) = (0..bins)
        .filter(|&k| hi[k] >= lo[k])
        .map(|k| (k, hi[k] - lo[k]))
        .max_by(|p, q| p.1.total_cmp(&q.1))
        .unwrap_or((0, 0.0));
    let t = k as f64 - 1.0;
    let at = |s: f64| [from[0] + t * u[0] + s * v[0], from[1] + t * u[1] + s * v[1]];
    let short_axis = if width > 0.0 {
        Caliper::new(at(lo[k]), at(hi[k]))
    } else {
        Caliper::new(at(0.0), at(0.0))
    };
    Some(Measurements {
        area_px: mask.area(),
        long_axis,
        short_axis,
        mm_per_px,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ellipse(w: usize, h: usize, cx: f64, cy: f64, a: f64, b: f64) -> Mask {
        Mask::from_fn(w, h, |i| {
            let (x, y) = ((i % w) as f64 - cx, (i / w) as f64 - cy);
            (x / a).powi(2) + (y / b).powi(2) <= 1.0
        })
    }

    #[test]
    fn axis_aligned_ellipse() {
        let m = ellipse(200, 120, 100.0, 60.0, 80.0, 30.0);
        let r = measure(&m, Some(0.1)).unwrap();
        assert!((r.long_axis.length_px - 161.0).abs() <= 1.5, "{r:?}");
        assert!((r.short_axis.length_px - 61.0).abs() <= 1.5, "{r:?}");
        let expect_area = std::f64::consts::PI * 80.0 * 30.0;
        assert!((r.area_px as f64 - expect_area).abs() / expect_area < 0.01);
        assert!((r.long_mm().unwrap() - 16.1).abs() < 0.2);
        assert!(r.summary().contains("mm²"));
    }

    #[test]
    fn rotated_rectangle_perpendicular_axis() {
        // A 100×20 bar rotated by 45°: the long axis is its diagonal-ish length, the
        // perpendicular one about its width.
        let (w, h) = (200, 200);
        let m = Mask::from_fn(w, h, |i| {
            let (x, y) = ((i % w) as f64 - 100.0, (i / w) as f64 - 100.0);
            let s = std::f64::consts::FRAC_1_SQRT_2;
            let (p, q) = (x * s + y * s, -x * s + y * s);
            p.abs() <= 50.0 && q.abs() <= 10.0
        });
        let r = measure(&m, None).unwrap();
        let diag = (100f64.powi(2) + 20f64.powi(2)).sqrt();
        assert!((r.long_axis.length_px - diag).abs() < 3.0, "{r:?}");
        assert!(r.short_axis.length_px > 15.0 && r.short_axis.length_px < 30.0, "{r:?}");
        assert!(r.area_mm2().is_none());
    }

    #[test]
    fn empty_and_single_pixel() {
        assert!(measure(&Mask::new(10, 10), None).is_none());
        let mut m = Mask::new(10, 10);
        m.data[55] = 1;
        let r = measure(&m, None).unwrap();
        assert_eq!(r.area_px, 1);
        assert_eq!(r.long_axis.length_px, 1.0);
    }
}
