//! The scale of the pixels: ultrasound regions, pixel spacing, or none.
//!
//! Ultrasound files usually carry no Pixel Spacing: the scale lives in the Sequence of
//! Ultrasound Regions (0018,6011), per region, as Physical Delta X/Y (0018,602C/602E) in the
//! units of Physical Units X/Y Direction (0018,6024/6026; 3 = cm). A measurement takes the
//! scale of the region that holds both its ends; a file whose regions do not fit its pixel
//! matrix (resampled without updating them) is not calibrated at all.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;

use crate::Info;

/// Physical Units X/Y Direction value for centimetres.
const UNITS_CM: u16 = 3;
/// Region Spatial Format value for a 2-D (tissue or flow) image.
const SPATIAL_2D: u16 = 1;
/// How far apart the X and Y scales may be for a single mm-per-pixel value (1 %).
const ISOTROPY_TOLERANCE: f64 = 0.01;

/// One item of the Sequence of Ultrasound Regions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UsRegion {
    /// Region Location Min X0, Min Y0, Max X1, Max Y1 (pixels, inclusive).
    pub bounds: [u32; 4],
    pub spatial_format: u16,
    pub data_type: u16,
    pub units_x: u16,
    pub units_y: u16,
    /// Physical Delta X/Y: physical units per pixel.
    pub delta_x: f64,
    pub delta_y: f64,
}

impl UsRegion {
    /// A 2-D region with a scale in centimetres on both axes.
    pub fn is_spatial_cm(&self) -> bool {
        self.spatial_format == SPATIAL_2D
            && self.units_x == UNITS_CM
            && self.units_y == UNITS_CM
            && self.delta_x > 0.0
            && self.delta_y > 0.0
            && self.delta_x.is_finite()
            && self.delta_y.is_finite()
    }

    /// Whether the region lies inside an image of `columns × rows`.
    pub fn fits(&self, columns: u32, rows: u32) -> bool {
        let [x0, y0, x1, y1] = self.bounds;
        x0 <= x1 && y0 <= y1 && x1 < columns && y1 < rows
    }

    /// Whether pixel position `p` (x, y) is inside the region.
    pub fn contains(&self, p: (f64, f64)) -> bool {
        let [x0, y0, x1, y1] = self.bounds.map(f64::from);
        (x0..=x1).contains(&p.0) && (y0..=y1).contains(&p.1)
    }
}

/// Where a calibration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationSource {
    /// An ultrasound region (its number, from 1, is in [`Calibration::region`]).
    UsRegion,
    /// Pixel Spacing (0028,0030).
    PixelSpacing,
    /// Imager Pixel Spacing (0018,1164).
    ImagerPixelSpacing,
    /// Typed by the user (two points on the depth ruler and their distance).
    Manual,
    /// None: pixels only.
    None,
}

/// The scale of a measurement's pixels, and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub source: CalibrationSource,
    /// The ultrasound region used (from 1).
    pub region: Option<usize>,
    /// Millimetres per pixel along x and y.
    pub mm_per_px: Option<[f64; 2]>,
    /// Why there is no calibration, when there is none.
    pub note: Option<String>,
}

impl Calibration {
    /// No calibration, and why.
    pub fn none(why: impl Into<String>) -> Self {
        Self { source: CalibrationSource::None, region: None, mm_per_px: None, note: Some(why.into()) }
    }

    /// A manual calibration: `mm` between two points `px` pixels apart.
    pub fn manual(mm: f64, px: f64) -> Option<Self> {
        let v = mm / px;
        (v > 0.0 && v.is_finite()).then_some(Self { source: CalibrationSource::Manual, region: None, mm_per_px: Some([v, v]), note: None })
    }

    /// One mm-per-pixel value when x and y agree (within 1 %); `None` otherwise (anisotropic
    /// pixels are not turned into one number).
    pub fn isotropic(&self) -> Option<f64> {
        let [x, y] = self.mm_per_px?;
        ((x - y).abs() <= ISOTROPY_TOLERANCE * x.max(y)).then_some((x + y) / 2.0)
    }

    /// How the app and the reports name it: "ultrasound region 1", "Pixel Spacing", …
    pub fn describe(&self) -> String {
        match (self.source, self.region) {
            (CalibrationSource::UsRegion, Some(n)) => format!("ultrasound region {n}"),
            (CalibrationSource::UsRegion, None) => "ultrasound region".into(),
            (CalibrationSource::PixelSpacing, _) => "Pixel Spacing".into(),
            (CalibrationSource::ImagerPixelSpacing, _) => "Imager Pixel Spacing".into(),
            (CalibrationSource::Manual, _) => "manual".into(),
            (CalibrationSource::None, _) => format!("none ({})", self.note.as_deref().unwrap_or("uncalibrated")),
        }
    }
}

/// The Sequence of Ultrasound Regions of `obj` (items it cannot read are left out).
pub(crate) fn regions(obj: &InMemDicomObject) -> Vec<UsRegion> {
    let Some(items) = obj.get(tags::SEQUENCE_OF_ULTRASOUND_REGIONS).and_then(|e| e.items()) else {
        return Vec::new();
    };
    items.iter().filter_map(region).collect()
}

fn region(item: &InMemDicomObject) -> Option<UsRegion> {
    let u32_of = |tag| item.get(tag).and_then(|e| e.to_int::<u32>().ok());
    let u16_of = |tag| item.get(tag).and_then(|e| e.to_int::<u16>().ok());
    let f64_of = |tag| item.get(tag).and_then(|e| e.to_float64().ok());
    Some(UsRegion {
        bounds: [
            u32_of(tags::REGION_LOCATION_MIN_X0)?,
            u32_of(tags::REGION_LOCATION_MIN_Y0)?,
            u32_of(tags::REGION_LOCATION_MAX_X1)?,
            u32_of(tags::REGION_LOCATION_MAX_Y1)?,
        ],
        spatial_format: u16_of(tags::REGION_SPATIAL_FORMAT).unwrap_or(0),
        data_type: u16_of(tags::REGION_DATA_TYPE).unwrap_or(0),
        units_x: u16_of(tags::PHYSICAL_UNITS_X_DIRECTION).unwrap_or(0),
        units_y: u16_of(tags::PHYSICAL_UNITS_Y_DIRECTION).unwrap_or(0),
        delta_x: f64_of(tags::PHYSICAL_DELTA_X).unwrap_or(0.0),
        delta_y: f64_of(tags::PHYSICAL_DELTA_Y).unwrap_or(0.0),
    })
}

/// The calibration of a measurement spanning `points` (x, y pixels) in the image `info`
/// describes.
pub(crate) fn choose(info: &Info, points: &[(f64, f64)]) -> Calibration {
    let spatial: Vec<(usize, &UsRegion)> = info.regions.iter().enumerate().filter(|(_, r)| r.is_spatial_cm()).collect();
    if !spatial.is_empty() {
        if let Some((i, r)) = spatial.iter().find(|(_, r)| !r.fits(info.columns, info.rows)) {
            let [x0, y0, x1, y1] = r.bounds;
            return Calibration::none(format!(
                "the ultrasound regions do not fit this image (region {} spans x {x0}–{x1}, y {y0}–{y1}; the image is {} × {}): not calibrated",
                i + 1,
                info.columns,
                info.rows
            ));
        }
        return match spatial.iter().find(|(_, r)| points.iter().all(|p| r.contains(*p))) {
            Some((i, r)) => Calibration {
                source: CalibrationSource::UsRegion,
                region: Some(i + 1),
                mm_per_px: Some([r.delta_x * 10.0, r.delta_y * 10.0]),
                note: None,
            },
            None => Calibration::none("the measurement does not lie inside one calibrated ultrasound region"),
        };
    }
    if let Some([row, col]) = info.pixel_spacing {
        return Calibration { source: CalibrationSource::PixelSpacing, region: None, mm_per_px: Some([col, row]), note: None };
    }
    if let Some([row, col]) = info.imager_pixel_spacing {
        return Calibration { source: CalibrationSource::ImagerPixelSpacing, region: None, mm_per_px: Some([col, row]), note: None };
    }
    Calibration::none(if info.regions.is_empty() {
        "the file has no ultrasound regions and no pixel spacing"
    } else {
        "its ultrasound regions carry no scale in cm"
    })
}
