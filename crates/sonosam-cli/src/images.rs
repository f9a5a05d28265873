//! The images the commands take: PNG, JPEG, BMP — or a frame of a DICOM file, which brings the
//! calibration of its pixels. Measurements take their millimetres from there (or from a scale
//! the user gives), never from a guess.

use std::path::Path;

use anyhow::{Context, bail};
use image::RgbImage;
use sonosam_dicom::{Calibration, Dicom};
use sonosam_model::decode_image;
use sonosam_model::measure::{Measurements, measure};
use sonosam_model::Mask;

use crate::CliResult;
use crate::model_io;

/// An image read from a file.
pub struct InputImage {
    pub rgb: RgbImage,
    /// The DICOM file it is a frame of.
    pub dicom: Option<Dicom>,
    /// Which frame (0 for other images).
    pub frame: u32,
}

impl InputImage {
    /// Read `path`: a DICOM file (frame `frame`, default 0) or a PNG/JPEG/BMP image.
    pub fn read(path: &Path, frame: Option<u32>) -> CliResult<Self> {
        Self::from_bytes(&model_io::read(path)?, path, frame)
    }

    /// The image in `bytes` (read from `path`, which names it in errors; a `.dcm` extension or
    /// the DICM signature makes it a DICOM file).
    pub fn from_bytes(bytes: &[u8], path: &Path, frame: Option<u32>) -> CliResult<Self> {
        let what = || path.display().to_string();
        let looks_dicom = sonosam_dicom::is_dicom(bytes) || path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
        match Dicom::read(bytes) {
            Ok(dicom) => {
                let frame = frame.unwrap_or(0);
                let rgb = dicom.frame(frame).with_context(what)?;
                return Ok(Self { rgb, dicom: Some(dicom), frame });
            }
            Err(e) if looks_dicom => return Err(e).with_context(what),
            Err(_) => {} // an ordinary image
        }
        if frame.is_some_and(|f| f > 0) {
            bail!("{}: --frame applies to DICOM files only", path.display());
        }
        Ok(Self { rgb: decode_image(bytes).with_context(what)?, dicom: None, frame: 0 })
    }

    /// The mask's measurements, in mm where its calibration allows (`mm_per_px`: the user's
    /// scale), with that calibration.
    pub fn measure(&self, mask: &Mask, mm_per_px: Option<f64>) -> Option<(Measurements, Calibration)> {
        let px = measure(mask, None)?;
        let calibration = sonosam_dicom::calibrate(self.dicom.as_ref(), &px.ends(), mm_per_px);
        Some((Measurements { mm_per_px: calibration.isotropic(), ..px }, calibration))
    }
}
