//! BI-RADS-style shape descriptors of a lesion outline: pure functions of a mask and its
//! pixel spacing. Each descriptor's definition and source is in its field's doc comment and in
//! the README's descriptor table; [`TABLE`] names them (snake_case, as in JSON exports) with the
//! direction in which the literature associates them with malignancy.
//!
//! The categorical calls ([`Calls`]: shape, orientation, margin — the ACR BI-RADS ultrasound
//! lexicon's geometric categories) come from thresholds chosen on BUSI's **training** split
//! (see [`thresholds`]); they are computed suggestions for a reader, never a diagnosis.
//!
//! Geometry is physical: pixel centres scaled by the spacing `[x, y]` (mm per pixel), or
//! pixels when uncalibrated, so anisotropic pixels give the true shape. The lesion is the
//! mask's largest 4-connected blob with its holes filled ([`outline::lesion_region`]).

use serde::{Deserialize, Serialize};

use super::outline::{self, Point};
use crate::mask::Mask;

/// Below this many pixels an outline is a few pixels' staircase: not measurable.
pub const MIN_AREA_PX: usize = 16;
/// Samples of the outline for the radial-length and corner statistics.
const SAMPLES: usize = 256;
/// Corners are judged over ±1/64 of the outline's length.
const CORNER_SPAN: usize = SAMPLES / 64;
/// A corner turns the outline by at least this much (degrees) within its span.
const CORNER_TURN_DEG: f64 = 60.0;
/// A concavity between two lobes is at least this deep, as a fraction of the lesion's
/// equivalent-circle diameter.
const LOBE_DEPTH: f64 = 0.05;
/// Hysteresis of the radial-length crossings, in units of the largest radius.
const CROSSING_BAND: f64 = 0.02;

/// The thresholds of the categorical calls, chosen on BUSI's training split (466 benign and
/// malignant lesions, ground-truth outlines): for each call, the descriptor of its kind with
/// the best benign-vs-malignant AUC there, at Youden's J (`sonosam eval --split train` prints
/// both; the README gives the figures). Nothing here was chosen on validation or test.
pub mod thresholds {
    /// Shape: irregular when the ellipse misfit reaches this (train: AUC 0.945; sensitivity
    /// 0.89, specificity 0.89 on the true outlines).
    pub const IRREGULAR_MISFIT: f64 = 0.13;
    /// Shape: round (rather than oval) when the fitted ellipse's minor/major axis ratio
    /// reaches this. BUSI has no shape labels, so this one is the lexicon's ("round:
    /// circular") made a number, not fitted.
    pub const ROUND_AXIS_RATIO: f64 = 0.9;
    /// Orientation: not parallel when the depth/width ratio exceeds this — the lexicon's own
    /// definition ("taller than wide"), kept: Youden's threshold on the training split (0.58)
    /// would call a lesion twice as wide as deep "not parallel". On the training split's true
    /// outlines it has sensitivity 0.10 and specificity 0.99.
    pub const NOT_PARALLEL_DEPTH_WIDTH: f64 = 1.0;
    /// Margin: not circumscribed when the convexity falls below this (train: AUC 0.993;
    /// sensitivity 0.99, specificity 0.94 on the true outlines).
    pub const NOT_CIRCUMSCRIBED_CONVEXITY: f64 = 0.986;
}

/// Why a mask has no descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotMeasurable {
    #[error("the mask is empty")]
    Empty,
    #[error("the lesion has {area_px} pixels, fewer than {MIN_AREA_PX}: too small to describe")]
    TooSmall { area_px: usize },
}

/// Units of the lengths and areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Mm,
    Px,
}

/// The moment-equivalent ellipse: the ellipse with the lesion's area-normalised second
/// moments (a filled ellipse of semi-axes a, b has variances a²/4 and b²/4 along its axes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ellipse {
    /// Centre (the lesion's centroid), physical `[x, y]`.
    pub centre: Point,
    pub semi_major: f64,
    pub semi_minor: f64,
    /// Angle of the major axis from the image's +x axis, degrees in (−90, 90], y downwards
    /// (positive: the axis descends to the right).
    pub angle_deg: f64,
}

/// Normalised radial length (NRL) statistics (Kilday, Palmieri & Fox, IEEE Trans Med Imaging
/// 1993;12:664–669): distances from the centroid to 256 points spaced evenly along the
/// outline, divided by the largest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RadialLength {
    /// Mean NRL: 1 for a circle, lower when spikes or lobes reach out.
    pub mean: f64,
    /// Standard deviation of the NRL: 0 for a circle.
    pub std: f64,
    /// Roughness: mean absolute change of the NRL between neighbouring samples (×100).
    pub roughness: f64,
    /// Crossings of the NRL through its mean (hysteresis ±0.02): 0 for a circle, 4 for an
    /// ellipse, more for undulating margins.
    pub crossings: usize,
}

/// ACR BI-RADS ultrasound shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Oval,
    Round,
    Irregular,
}

/// ACR BI-RADS ultrasound orientation (to the skin line: the image's top edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Orientation {
    Parallel,
    NotParallel,
}

/// ACR BI-RADS ultrasound margin, at the lexicon's first level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Margin {
    Circumscribed,
    NotCircumscribed,
}

impl Shape {
    /// The snake_case name (as in JSON).
    pub fn key(self) -> &'static str {
        match self {
            Shape::Oval => "oval",
            Shape::Round => "round",
            Shape::Irregular => "irregular",
        }
    }
}

impl Orientation {
    pub fn key(self) -> &'static str {
        match self {
            Orientation::Parallel => "parallel",
            Orientation::NotParallel => "not_parallel",
        }
    }
}

impl Margin {
    pub fn key(self) -> &'static str {
        match self {
            Margin::Circumscribed => "circumscribed",
            Margin::NotCircumscribed => "not_circumscribed",
        }
    }
}

/// The categorical calls: computed suggestions from [`thresholds`], not a diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calls {
    pub shape: Shape,
    pub orientation: Orientation,
    pub margin: Margin,
}

impl Calls {
    /// `(concept, value)` snake_case keys: `[("shape", "oval"), ("orientation", …), ("margin", …)]`.
    pub fn keys(&self) -> [(&'static str, &'static str); 3] {
        [("shape", self.shape.key()), ("orientation", self.orientation.key()), ("margin", self.margin.key())]
    }

    /// For people: `oval · parallel · circumscribed`.
    pub fn words(&self) -> String {
        self.keys().map(|(_, v)| v.replace('_', " ")).join(" · ")
    }
}

/// The descriptors of one lesion. Lengths in `unit`, areas in `unit`².
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Descriptors {
    pub unit: Unit,
    /// Pixel count × pixel area.
    pub area: f64,
    /// Length of the outer boundary: the 8-connected boundary chain through pixel centres,
    /// smoothed to remove its staircase ([`outline::smooth_polygon`]).
    pub perimeter: f64,
    /// Vertical extent (the depth direction of an ultrasound image).
    pub depth: f64,
    /// Horizontal extent (parallel to the skin).
    pub width: f64,
    /// Depth / width: above 1 the lesion is "taller than wide" (Stavros et al., Radiology
    /// 1995;196:123–134), the lexicon's "not parallel" orientation.
    pub depth_width_ratio: f64,
    /// Angle between the fitted ellipse's major axis and the horizontal, 0–90°: the measured
    /// orientation (0: parallel to the skin).
    pub orientation_deg: f64,
    pub ellipse: Ellipse,
    /// Area of the symmetric difference between the lesion and its ellipse, over the
    /// lesion's area: 0 for an ellipse, growing with irregularity (ellipse-fit features:
    /// Chen et al., Radiology 2003;226:504–514; Shen et al., Acad Radiol 2007;14:928–939).
    pub ellipse_misfit: f64,
    /// 4π·area / perimeter² (from the smoothed outline): 1 for a circle, lower for elongated
    /// or ragged outlines.
    pub circularity: f64,
    /// Convex-hull perimeter / perimeter: 1 for a convex outline, lower for undulating margins.
    pub convexity: f64,
    /// Area / convex-hull area: 1 for a convex outline, lower for lobes and spicules.
    pub solidity: f64,
    pub radial_length: RadialLength,
    /// Concavities between lobes deeper than 5 % of the equivalent-circle diameter (convexity
    /// defects): 0 for an ellipse, n for an n-lobed outline.
    pub lobulations: usize,
    /// Corners: points where the outline turns by at least 60° within ±1/64 of its length
    /// (angular margins, spicule tips); 0 for a circle, 4 for a rectangle.
    pub angular_points: usize,
    /// The lesion reaches the image's edge: its outline there is the image's, so the shape
    /// descriptors may be cut off.
    pub touches_border: bool,
    pub calls: Calls,
}

/// The direction in which a descriptor is associated with malignancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Malignant {
    Higher,
    Lower,
}

/// A named descriptor value (for tables, JSON and the evaluation).
pub struct Named {
    pub name: &'static str,
    pub malignant: Malignant,
    pub value: fn(&Descriptors) -> f64,
}

/// Every numeric descriptor, by its snake_case name.
pub const TABLE: [Named; 14] = [
    Named { name: "area", malignant: Malignant::Higher, value: |d| d.area },
    Named { name: "perimeter", malignant: Malignant::Higher, value: |d| d.perimeter },
    Named { name: "depth_width_ratio", malignant: Malignant::Higher, value: |d| d.depth_width_ratio },
    Named { name: "orientation_deg", malignant: Malignant::Higher, value: |d| d.orientation_deg },
    Named { name: "ellipse_misfit", malignant: Malignant::Higher, value: |d| d.ellipse_misfit },
    Named { name: "circularity", malignant: Malignant::Lower, value: |d| d.circularity },
    Named { name: "convexity", malignant: Malignant::Lower, value: |d| d.convexity },
    Named { name: "solidity", malignant: Malignant::Lower, value: |d| d.solidity },
    Named { name: "nrl_mean", malignant: Malignant::Lower, value: |d| d.radial_length.mean },
    Named { name: "nrl_std", malignant: Malignant::Higher, value: |d| d.radial_length.std },
    Named { name: "nrl_roughness", malignant: Malignant::Higher, value: |d| d.radial_length.roughness },
    Named { name: "nrl_crossings", malignant: Malignant::Higher, value: |d| d.radial_length.crossings as f64 },
    Named { name: "lobulations", malignant: Malignant::Higher, value: |d| d.lobulations as f64 },
    Named { name: "angular_points", malignant: Malignant::Higher, value: |d| d.angular_points as f64 },
];

/// What the app draws of a lesion's shape, in pixels: its fitted ellipse and the convex hull of
/// its outline. `None` when the mask is not measurable.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeGeometry {
    pub ellipse: Ellipse,
    pub hull: Vec<Point>,
}

/// The fitted ellipse and convex hull of the lesion in `mask`, in pixels.
pub fn shape_geometry(mask: &Mask) -> Option<ShapeGeometry> {
    let o = Outline::of(mask, [1.0, 1.0]).ok()?;
    Some(ShapeGeometry { ellipse: o.ellipse, hull: o.hull })
}

/// The measured lesion both [`describe`] and [`shape_geometry`] start from: its region, its
/// smoothed outline, that outline's hull and the moment-equivalent ellipse, in physical units.
struct Outline {
    region: Mask,
    area_px: usize,
    polygon: Vec<Point>,
    hull: Vec<Point>,
    ellipse: Ellipse,
}

impl Outline {
    fn of(mask: &Mask, spacing: [f64; 2]) -> Result<Self, NotMeasurable> {
        let region = outline::lesion_region(mask);
        let area_px = region.area();
        if area_px == 0 {
            return Err(NotMeasurable::Empty);
        }
        if area_px < MIN_AREA_PX {
            return Err(NotMeasurable::TooSmall { area_px });
        }
        let polygon = outline::smooth_polygon(&outline::trace_boundary(&region), spacing);
        let hull = outline::convex_hull(&polygon).into_iter().map(|i| polygon[i]).collect();
        let ellipse = Moments::of(&region, spacing).ellipse();
        Ok(Self { region, area_px, polygon, hull, ellipse })
    }
}

/// Describe the lesion in `mask`; `mm_per_px` `[x, y]` when calibrated (else pixels).
pub fn describe(mask: &Mask, mm_per_px: Option<[f64; 2]>) -> Result<Descriptors, NotMeasurable> {
    let spacing = mm_per_px.unwrap_or([1.0, 1.0]);
    let Outline { region, area_px, polygon, hull, ellipse } = Outline::of(mask, spacing)?;
    let [x0, y0, x1, y1] = region.bbox().expect("non-empty");
    let (depth, width) = ((y1 - y0 + 1) as f64 * spacing[1], (x1 - x0 + 1) as f64 * spacing[0]);
    let area = area_px as f64 * spacing[0] * spacing[1];
    let (perimeter, polygon_area) = (outline::perimeter(&polygon), outline::area(&polygon));
    let samples = outline::resample(&polygon, SAMPLES);
    let mut d = Descriptors {
        unit: if mm_per_px.is_some() { Unit::Mm } else { Unit::Px },
        area,
        perimeter,
        depth,
        width,
        depth_width_ratio: depth / width,
        orientation_deg: ellipse.angle_deg.abs(),
        ellipse,
        ellipse_misfit: ellipse_misfit(&region, spacing, &ellipse) as f64 / area_px as f64,
        circularity: ratio(4.0 * std::f64::consts::PI * polygon_area, perimeter * perimeter),
        convexity: ratio(outline::perimeter(&hull), perimeter),
        solidity: ratio(polygon_area, outline::area(&hull)),
        radial_length: radial_length(&samples, ellipse.centre),
        lobulations: lobulations(&polygon, (4.0 * polygon_area / std::f64::consts::PI).sqrt()),
        angular_points: angular_points(&samples),
        touches_border: x0 == 0 || y0 == 0 || x1 + 1 == region.width || y1 + 1 == region.height,
        calls: Calls { shape: Shape::Oval, orientation: Orientation::Parallel, margin: Margin::Circumscribed },
    };
    d.calls = calls(&d);
    Ok(d)
}

impl Descriptors {
    /// The numbers for people, as labelled rows (the app's panel and the report show these).
    pub fn table(&self) -> Vec<(&'static str, String)> {
        let unit = match self.unit {
            Unit::Mm => "mm",
            Unit::Px => "px",
        };
        let r = &self.radial_length;
        vec![
            ("Area", format!("{:.1} {unit}²", self.area)),
            ("Perimeter", format!("{:.1} {unit}", self.perimeter)),
            ("Depth × width", format!("{:.1} × {:.1} {unit} (ratio {:.2})", self.depth, self.width, self.depth_width_ratio)),
            ("Orientation of the major axis", format!("{:.0}° to the skin line", self.orientation_deg)),
            ("Fitted ellipse", format!("{:.1} × {:.1} {unit}, misfit {:.3}", 2.0 * self.ellipse.semi_major, 2.0 * self.ellipse.semi_minor, self.ellipse_misfit)),
            ("Circularity", format!("{:.3}", self.circularity)),
            ("Convexity / solidity", format!("{:.3} / {:.3}", self.convexity, self.solidity)),
            ("Radial length (mean, sd, roughness, crossings)", format!("{:.3}, {:.3}, {:.2}, {}", r.mean, r.std, r.roughness, r.crossings)),
            ("Lobulations / angular points", format!("{} / {}", self.lobulations, self.angular_points)),
        ]
    }

    /// One line for people: the calls with the numbers behind them.
    pub fn summary(&self) -> String {
        let word = |k: &str| k.replace('_', " ");
        let border = if self.touches_border { "; the lesion reaches the image edge, so its shape may be cut off" } else { "" };
        format!(
            "shape {} (ellipse misfit {:.2}), orientation {} (depth/width {:.2}, axis {:.0}°), margin {} \
             (convexity {:.3}, {} lobulations, {} angular points) — computed suggestions, not a diagnosis{border}",
            word(self.calls.shape.key()),
            self.ellipse_misfit,
            word(self.calls.orientation.key()),
            self.depth_width_ratio,
            self.orientation_deg,
            word(self.calls.margin.key()),
            self.convexity,
            self.lobulations,
            self.angular_points,
        )
    }
}

/// `num / den` capped at 1; 1 when both vanish (a one-pixel-wide outline is its own hull).
fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { (num / den).min(1.0) } else { 1.0 }
}

/// The categorical suggestions from the descriptors and [`thresholds`].
pub fn calls(d: &Descriptors) -> Calls {
    use thresholds::*;
    let shape = if d.ellipse_misfit >= IRREGULAR_MISFIT {
        Shape::Irregular
    } else if d.ellipse.semi_minor / d.ellipse.semi_major >= ROUND_AXIS_RATIO {
        Shape::Round
    } else {
        Shape::Oval
    };
    let orientation =
        if d.depth_width_ratio > NOT_PARALLEL_DEPTH_WIDTH { Orientation::NotParallel } else { Orientation::Parallel };
    let margin =
        if d.convexity < NOT_CIRCUMSCRIBED_CONVEXITY { Margin::NotCircumscribed } else { Margin::Circumscribed };
    Calls { shape, orientation, margin }
}

/// First and second moments of a region's pixels in physical units; each pixel counts as
/// its square (a uniform cell adds s²/12 to the variance along each axis).
struct Moments {
    centre: Point,
    /// Covariance `[xx, yy, xy]`.
    cov: [f64; 3],
}

impl Moments {
    fn of(region: &Mask, spacing: [f64; 2]) -> Self {
        let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (i, _) in region.data.iter().enumerate().filter(|(_, v)| **v != 0) {
            let (x, y) = ((i % region.width) as f64 * spacing[0], (i / region.width) as f64 * spacing[1]);
            n += 1.0;
            (sx, sy) = (sx + x, sy + y);
            (sxx, syy, sxy) = (sxx + x * x, syy + y * y, sxy + x * y);
        }
        let (mx, my) = (sx / n, sy / n);
        let cell = |s: f64| s * s / 12.0;
        Self {
            centre: [mx, my],
            cov: [sxx / n - mx * mx + cell(spacing[0]), syy / n - my * my + cell(spacing[1]), sxy / n - mx * my],
        }
    }

    fn ellipse(&self) -> Ellipse {
        let [xx, yy, xy] = self.cov;
        let (mean, half_gap) = ((xx + yy) / 2.0, ((xx - yy) / 2.0).hypot(xy));
        let (major, minor) = (mean + half_gap, (mean - half_gap).max(0.0));
        let mut angle = 0.5 * (2.0 * xy).atan2(xx - yy);
        if angle <= -std::f64::consts::FRAC_PI_2 {
            angle += std::f64::consts::PI;
        }
        Ellipse { centre: self.centre, semi_major: 2.0 * major.sqrt(), semi_minor: 2.0 * minor.sqrt(), angle_deg: angle.to_degrees() }
    }
}

/// Pixels in the lesion or in its ellipse but not both (pixel centres tested; the ellipse's
/// pixels beyond the image count as outside the lesion). Only the box holding both is scanned.
fn ellipse_misfit(region: &Mask, spacing: [f64; 2], e: &Ellipse) -> usize {
    let (sin, cos) = e.angle_deg.to_radians().sin_cos();
    let (a, b) = (e.semi_major.max(1e-9), e.semi_minor.max(1e-9));
    let inside_ellipse = |x: i64, y: i64| {
        let (dx, dy) = (x as f64 * spacing[0] - e.centre[0], y as f64 * spacing[1] - e.centre[1]);
        let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
        (u / a).powi(2) + (v / b).powi(2) <= 1.0
    };
    // The ellipse's bounding box in pixels, joined with the lesion's.
    let half = [(a * cos).hypot(b * sin) / spacing[0], (a * sin).hypot(b * cos) / spacing[1]];
    let (cx, cy) = (e.centre[0] / spacing[0], e.centre[1] / spacing[1]);
    let [rx0, ry0, rx1, ry1] = region.bbox().map_or([0; 4], |b| b.map(|v| v as i64));
    let x0 = ((cx - half[0]).floor() as i64 - 1).min(rx0);
    let y0 = ((cy - half[1]).floor() as i64 - 1).min(ry0);
    let x1 = ((cx + half[0]).ceil() as i64 + 1).max(rx1);
    let y1 = ((cy + half[1]).ceil() as i64 + 1).max(ry1);
    let in_region = |x: i64, y: i64| {
        x >= 0 && y >= 0 && (x as usize) < region.width && (y as usize) < region.height && region.get(x as usize, y as usize)
    };
    (y0..=y1)
        .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
        .filter(|&(x, y)| in_region(x, y) != inside_ellipse(x, y))
        .count()
}

fn radial_length(samples: &[Point], centre: Point) -> RadialLength {
    let radii: Vec<f64> = samples.iter().map(|&p| outline::distance(p, centre)).collect();
    let max = radii.iter().copied().fold(0.0, f64::max).max(1e-12);
    let nrl: Vec<f64> = radii.iter().map(|r| r / max).collect();
    let n = nrl.len() as f64;
    let mean = nrl.iter().sum::<f64>() / n;
    let std = (nrl.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let roughness = 100.0 * (0..nrl.len()).map(|i| (nrl[i] - nrl[(i + 1) % nrl.len()]).abs()).sum::<f64>() / n;
    // Crossings with hysteresis, around the closed outline: the side (above/below) changes
    // only past the band; counted over one full turn from the first decided side.
    let side = |v: f64| {
        if v > mean + CROSSING_BAND {
            Some(true)
        } else if v < mean - CROSSING_BAND {
            Some(false)
        } else {
            None
        }
    };
    let mut crossings = 0;
    if let Some(start) = nrl.iter().position(|&v| side(v).is_some()) {
        let mut current = side(nrl[start]).unwrap();
        for k in 1..=nrl.len() {
            if let Some(s) = side(nrl[(start + k) % nrl.len()]) {
                if s != current {
                    crossings += 1;
                    current = s;
                }
            }
        }
    }
    RadialLength { mean, std, roughness, crossings }
}

/// Convexity defects deeper than [`LOBE_DEPTH`] × `diameter`: between consecutive hull
/// vertices (in the outline's order), the farthest outline point from the hull edge.
fn lobulations(polygon: &[Point], diameter: f64) -> usize {
    let mut hull = outline::convex_hull(polygon);
    hull.sort_unstable();
    let n = polygon.len();
    if hull.len() < 3 {
        return 0;
    }
    (0..hull.len())
        .filter(|&k| {
            let (i, j) = (hull[k], hull[(k + 1) % hull.len()]);
            let j = if j <= i { j + n } else { j };
            let (a, b) = (polygon[i], polygon[j % n]);
            let len = outline::distance(a, b).max(1e-12);
            let depth = (i + 1..j)
                .map(|m| {
                    let p = polygon[m % n];
                    ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])).abs() / len
                })
                .fold(0.0, f64::max);
            depth >= LOBE_DEPTH * diameter
        })
        .count()
}

/// Points where the outline turns by ≥ [`CORNER_TURN_DEG`] within ±[`CORNER_SPAN`] samples,
/// one per corner (the sharpest sample of its neighbourhood).
fn angular_points(samples: &[Point]) -> usize {
    let n = samples.len();
    let k = CORNER_SPAN;
    let turn: Vec<f64> = (0..n)
        .map(|i| {
            let (p, a, b) = (samples[i], samples[(i + n - k) % n], samples[(i + k) % n]);
            let (u, v) = ([p[0] - a[0], p[1] - a[1]], [b[0] - p[0], b[1] - p[1]]);
            let cross = u[0] * v[1] - u[1] * v[0];
            let dot = u[0] * v[0] + u[1] * v[1];
            cross.atan2(dot).abs().to_degrees()
        })
        .collect();
    (0..n)
        .filter(|&i| {
            turn[i] >= CORNER_TURN_DEG
                && (1..=k).all(|d| turn[i] > turn[(i + n - d) % n] && turn[i] >= turn[(i + d) % n])
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: f64 = std::f64::consts::PI;

    fn shape(w: usize, h: usize, inside: impl Fn(f64, f64) -> bool) -> Mask {
        Mask::from_fn(w, h, |i| inside((i % w) as f64, (i / w) as f64))
    }

    fn rotated_ellipse(a: f64, b: f64, angle_deg: f64) -> Mask {
        let (s, c) = angle_deg.to_radians().sin_cos();
        shape(240, 240, |x, y| {
            let (dx, dy) = (x - 120.0, y - 120.0);
            let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
            (u / a).powi(2) + (v / b).powi(2) <= 1.0
        })
    }

    #[test]
    fn circle() {
        let d = describe(&Mask::disc(120, 120, 60.0, 60.0, 40.0), None).unwrap();
        assert_eq!(d.unit, Unit::Px);
        assert!((d.area / (PI * 1600.0) - 1.0).abs() < 0.01, "{d:?}");
        assert!((d.perimeter / (2.0 * PI * 40.0) - 1.0).abs() < 0.02, "{d:?}");
        assert!(d.circularity > 0.97, "{d:?}");
        assert!(d.solidity > 0.98 && d.convexity > 0.98, "{d:?}");
        assert!((d.depth_width_ratio - 1.0).abs() < 1e-9);
        assert!(d.ellipse_misfit < 0.03, "{d:?}");
        assert!((d.ellipse.semi_major / 40.0 - 1.0).abs() < 0.02, "{d:?}");
        assert!(d.radial_length.mean > 0.98 && d.radial_length.std < 0.01, "{d:?}");
        assert_eq!(d.radial_length.crossings, 0);
        assert_eq!((d.lobulations, d.angular_points), (0, 0));
        assert_eq!(d.calls, Calls { shape: Shape::Round, orientation: Orientation::Parallel, margin: Margin::Circumscribed });
        assert!(!d.touches_border);
        assert!(d.summary().starts_with("shape round (ellipse misfit 0.0"), "{}", d.summary());
        assert!(d.summary().contains("orientation parallel") && d.summary().contains("not a diagnosis"));
    }

    #[test]
    fn ellipse_at_a_known_angle() {
        for angle in [0.0, 30.0, -60.0, 90.0] {
            let d = describe(&rotated_ellipse(80.0, 30.0, angle), None).unwrap();
            let expect = if angle == -60.0 { 60.0 } else { f64::abs(angle) };
            assert!((d.orientation_deg - expect).abs() < 1.0, "{angle}: {d:?}");
            assert!((d.ellipse.semi_major / 80.0 - 1.0).abs() < 0.01, "{d:?}");
            assert!((d.ellipse.semi_minor / 30.0 - 1.0).abs() < 0.02, "{d:?}");
            assert!(d.ellipse_misfit < 0.03, "{d:?}");
            assert_eq!(d.radial_length.crossings, 4, "{d:?}");
            assert_eq!(d.lobulations, 0, "{d:?}");
            assert_eq!(d.calls.shape, Shape::Oval);
        }
        assert!((describe(&rotated_ellipse(80.0, 30.0, 30.0), None).unwrap().ellipse.angle_deg - 30.0).abs() < 1.0);
        let tall = describe(&rotated_ellipse(80.0, 30.0, 90.0), None).unwrap();
        assert!((tall.depth_width_ratio - 161.0 / 61.0).abs() < 0.05, "{tall:?}");
        assert_eq!(tall.calls.orientation, Orientation::NotParallel);
    }

    #[test]
    fn lobulated_star() {
        // Five lobes: r(θ) = 50 (1 + 0.3 cos 5θ).
        let star = shape(200, 200, |x, y| {
            let (dx, dy) = (x - 100.0, y - 100.0);
            dx.hypot(dy) <= 50.0 * (1.0 + 0.3 * (5.0 * dy.atan2(dx)).cos())
        });
        let d = describe(&star, None).unwrap();
        assert_eq!(d.lobulations, 5, "{d:?}");
        assert_eq!(d.radial_length.crossings, 10, "{d:?}");
        assert!(d.solidity < 0.9 && d.circularity < 0.8, "{d:?}");
        assert!(d.ellipse_misfit > 0.15, "{d:?}");
        assert_eq!(d.calls.shape, Shape::Irregular);
        assert_eq!(d.calls.margin, Margin::NotCircumscribed);
    }

    #[test]
    fn geometry_to_draw() {
        let g = shape_geometry(&rotated_ellipse(80.0, 30.0, 30.0)).unwrap();
        assert!((g.ellipse.angle_deg - 30.0).abs() < 1.0 && (g.ellipse.centre[0] - 120.0).abs() < 0.5, "{g:?}");
        assert!(g.hull.len() >= 8 && g.hull.iter().all(|p| (p[0] - 120.0).hypot(p[1] - 120.0) <= 81.0));
        assert!(shape_geometry(&Mask::new(5, 5)).is_none());
    }

    #[test]
    fn rectangle() {
        let d = describe(&shape(200, 100, |x, y| (20.0..=139.0).contains(&x) && (30.0..=69.0).contains(&y)), None).unwrap();
        assert_eq!(d.angular_points, 4, "{d:?}");
        assert_eq!((d.width, d.depth), (120.0, 40.0));
        assert!((d.depth_width_ratio - 1.0 / 3.0).abs() < 1e-9);
        assert!((d.area - 4800.0).abs() < 1e-9 && d.solidity > 0.99, "{d:?}");
        assert!((d.perimeter - 2.0 * (119.0 + 39.0)).abs() < 3.0, "{d:?}");
        assert_eq!(d.lobulations, 0);
    }

    #[test]
    fn anisotropic_spacing_gives_the_physical_shape() {
        // A 40-px-radius disk of pixels 0.1 mm wide and 0.2 mm tall is an ellipse 8 × 16 mm.
        let disk = Mask::disc(120, 120, 60.0, 60.0, 40.0);
        let px = describe(&disk, None).unwrap();
        let mm = describe(&disk, Some([0.1, 0.2])).unwrap();
        assert_eq!(mm.unit, Unit::Mm);
        assert!((mm.area - px.area * 0.02).abs() < 1e-9);
        assert!((mm.depth_width_ratio - 2.0).abs() < 1e-9);
        assert!((mm.orientation_deg - 90.0).abs() < 1e-6, "{mm:?}");
        assert!((mm.ellipse.semi_major / 8.0 - 1.0).abs() < 0.02, "{mm:?}");
        assert!((mm.ellipse.semi_minor / 4.0 - 1.0).abs() < 0.02, "{mm:?}");
        assert!(mm.ellipse_misfit < 0.03, "{mm:?}");
        assert_eq!(mm.calls.shape, Shape::Oval);
        assert_eq!(mm.calls.orientation, Orientation::NotParallel);
        // Perimeter of that ellipse (Ramanujan): π (3(a+b) − √((3a+b)(a+3b))).
        let (a, b): (f64, f64) = (8.0, 4.0);
        let expect = PI * (3.0 * (a + b) - ((3.0 * a + b) * (a + 3.0 * b)).sqrt());
        assert!((mm.perimeter / expect - 1.0).abs() < 0.02, "{} vs {expect}", mm.perimeter);
    }

    #[test]
    fn bad_masks_are_not_measurable_or_flagged() {
        assert_eq!(describe(&Mask::new(10, 10), None), Err(NotMeasurable::Empty));
        let mut one = Mask::new(10, 10);
        one.data[55] = 1;
        assert_eq!(describe(&one, None), Err(NotMeasurable::TooSmall { area_px: 1 }));
        // Touching the border: described, flagged, nothing undefined.
        let edge = describe(&shape(100, 100, |x, y| x.hypot(y - 50.0) <= 30.0), None).unwrap();
        assert!(edge.touches_border);
        for named in &TABLE {
            assert!((named.value)(&edge).is_finite(), "{}", named.name);
        }
        // A full image and a one-pixel-wide line: defined values.
        let full = describe(&Mask::from_fn(20, 20, |_| true), None).unwrap();
        assert!(full.touches_border && full.solidity > 0.99);
        let line = describe(&shape(50, 50, |x, y| y == 10.0 && (5.0..45.0).contains(&x)), None).unwrap();
        for named in &TABLE {
            assert!((named.value)(&line).is_finite(), "{}: {line:?}", named.name);
        }
    }
}
