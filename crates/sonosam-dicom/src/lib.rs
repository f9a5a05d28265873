//! # sonosam-dicom
//!
//! Ultrasound DICOM in, for the app, the CLI and the server alike: a file's frames as the RGB
//! images the model takes, and the calibration of their pixels in millimetres. No model, no
//! I/O beyond bytes.
//!
//! - [`Dicom::read`]: Part-10 files (preamble + meta group) and bare data sets without a meta
//!   header (implicit VR little endian); native, deflate, RLE and JPEG baseline/extended
//!   transfer syntaxes (others — JPEG 2000, JPEG-LS, … — are refused, naming the syntax);
//!   sizes and frame counts are checked before any pixel is decoded.
//! - [`Dicom::frame`]: one frame as 8-bit RGB — MONOCHROME1/2 (with the file's rescale and
//!   window), RGB, YBR_FULL(_422), PALETTE COLOR (the file's colour tables); 8 or 16 bits.
//! - [`Dicom::calibration`]: the scale of the pixels a measurement spans — from the Sequence of
//!   Ultrasound Regions (0018,6011) when there is one (the region that holds every point, in
//!   cm → mm), else Pixel Spacing (0028,0030) or Imager Pixel Spacing (0018,1164); otherwise
//!   none, never a guess. Regions that do not fit the pixel matrix (a resampled file whose
//!   regions were not updated) are detected and not used.
//! - [`export`]: DICOM out — the lesions as a binary Segmentation and a TID 1500 Measurement
//!   Report (Comprehensive SR), in the source's study.

mod calibration;
pub mod export;
mod frames;
mod jpeg;
mod lengths;

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Serialize;

pub use calibration::{Calibration, CalibrationSource, UsRegion};

/// Largest side of a frame, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Most pixels in one frame.
pub const MAX_FRAME_PIXELS: u64 = 100_000_000;
/// Most frames in one file (a cine loop of minutes at 30 frames/s).
pub const MAX_FRAMES: u32 = 10_000;
/// Most bytes a deflated data set may inflate to: a deflate bomb is refused before it fills
/// memory (deflate is used for small objects, not for cine loops).
pub const MAX_INFLATED: u64 = 256 << 20;

/// Why a file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("not a DICOM file (no DICM signature and no readable data set)")]
    NotDicom,
    #[error("damaged or truncated DICOM file: {0}")]
    Damaged(String),
    #[error("transfer syntax {name} ({uid}) is not supported (supported: uncompressed, deflate, RLE, JPEG baseline/extended)")]
    UnsupportedSyntax { uid: String, name: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("the file holds no image (no Pixel Data)")]
    NoPixels,
    #[error("frame {frame} does not exist: the file has {frames} frame(s), numbered from 0")]
    NoSuchFrame { frame: u32, frames: u32 },
    #[error("cannot decode frame {frame}: {message}")]
    Decode { frame: u32, message: String },
    #[error("cannot export: {0}")]
    Export(String),
}

pub type Result<T> = std::result::Result<T, DicomError>;

/// What a file says about itself (shown in the app's header panel; identifiers of the patient
/// are not read).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    pub transfer_syntax: String,
    pub transfer_syntax_name: String,
    pub modality: Option<String>,
    pub manufacturer: Option<String>,
    pub rows: u32,
    pub columns: u32,
    pub frames: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub photometric: String,
    /// The Sequence of Ultrasound Regions, in file order.
    pub regions: Vec<UsRegion>,
    /// Pixel Spacing (0028,0030): row spacing, column spacing, mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Imager Pixel Spacing (0018,1164): row spacing, column spacing, mm.
    pub imager_pixel_spacing: Option<[f64; 2]>,
}

impl Info {
    /// What the image is, for reports: `DICOM US, frame 2 of 12, ACME`.
    pub fn describe_frame(&self, frame: u32) -> String {
        let mut out = format!("DICOM {}", self.modality.as_deref().unwrap_or("image"));
        if self.frames > 1 {
            out.push_str(&format!(", frame {} of {}", frame + 1, self.frames));
        }
        if let Some(m) = self.manufacturer.as_deref().filter(|m| !m.trim().is_empty()) {
            out.push_str(&format!(", {}", m.trim()));
        }
        out
    }
}

/// A DICOM image file, read and checked.
pub struct Dicom {
    obj: DefaultDicomObject,
    pub info: Info,
}

/// The calibration of a measurement whose ends are `points` (pixels) in an image that may be a
/// frame of `dicom`: the user's scale (`manual_mm_per_px`) when given, else the file's, else
/// none. Pixels whose x and y scales differ are not turned into one mm value. The app and the
/// CLI both measure through this.
pub fn calibrate(dicom: Option<&Dicom>, points: &[(f64, f64)], manual_mm_per_px: Option<f64>) -> Calibration {
    if let Some(c) = manual_mm_per_px.and_then(|v| Calibration::manual(v, 1.0)) {
        return c;
    }
    let c = match dicom {
        Some(d) => d.calibration(points),
        None => return Calibration::none("not a DICOM file, and no pixel spacing given: pixels only"),
    };
    if c.mm_per_px.is_some() && c.isotropic().is_none() {
        return Calibration::none("the pixels are not square (x and y scales differ): pixels only");
    }
    c
}

/// Whether `bytes` start like a Part-10 DICOM file (128-byte preamble, then `DICM`).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

impl Dicom {
    /// Read a DICOM file (Part 10, or a bare implicit-VR-little-endian data set) and check that
    /// it holds pixels this crate can decode, of a size it accepts.
    pub fn read(bytes: &[u8]) -> Result<Self> {
        let obj = parse(bytes)?;
        let info = info(&obj)?;
        check(&obj, &info)?;
        Ok(Self { obj, info })
    }

    /// Frame `n` (from 0) as 8-bit RGB.
    pub fn frame(&self, n: u32) -> Result<image::RgbImage> {
        if n >= self.info.frames {
            return Err(DicomError::NoSuchFrame { frame: n, frames: self.info.frames });
        }
        frames::decode(&self.obj, &self.info, n)
    }

    /// The calibration of a measurement whose end points (x, y in pixels) are `points`.
    pub fn calibration(&self, points: &[(f64, f64)]) -> Calibration {
        calibration::choose(&self.info, points)
    }
}

/// A Part-10 file, or a bare data set (implicit VR little endian) given a meta group.
fn parse(bytes: &[u8]) -> Result<DefaultDicomObject> {
    // `DICM` after the preamble, or at the start of a file without one.
    let dicm = if is_dicom(bytes) { Some(128) } else { (bytes.len() >= 4 && &bytes[..4] == b"DICM").then_some(0) };
    if let Some(at) = dicm {
        // Declared lengths are checked first: dicom-rs allocates what a value declares. It then
        // reads from `DICM` on, as checked: with its default preamble detection, a `DICM` 128
        // bytes further on would make it skip the first 128 bytes and read unchecked ones.
        return match lengths::check(bytes, at + 4, true).map_err(DicomError::Damaged)? {
            lengths::Checked::Walked => dicom_object::OpenFileOptions::new()
                .read_preamble(dicom_object::file::ReadPreamble::Never)
                .from_reader(Cursor::new(&bytes[at..]))
                .map_err(|e| DicomError::Damaged(e.to_string())),
            lengths::Checked::Deflated(start) => read_deflated(&bytes[at..start], &bytes[start..]),
        };
    }
    lengths::check(bytes, 0, false).map_err(|_| DicomError::NotDicom)?;
    let ts = TransferSyntaxRegistry.get(dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.uid()).ok_or(DicomError::NotDicom)?;
    let obj = InMemDicomObject::read_dataset_with_ts(Cursor::new(bytes), ts).map_err(|_| DicomError::NotDicom)?;
    if obj.get(tags::PIXEL_DATA).is_none() && obj.get(tags::SOP_CLASS_UID).is_none() {
        return Err(DicomError::NotDicom);
    }
    let meta = dicom_object::FileMetaTableBuilder::new()
        .transfer_syntax(ts.uid())
        .media_storage_sop_class_uid(text(&obj, tags::SOP_CLASS_UID).unwrap_or_else(|| "1.2.840.10008.5.1.4.1.1.6.1".into()))
        .media_storage_sop_instance_uid(text(&obj, tags::SOP_INSTANCE_UID).unwrap_or_else(|| "2.25.0".into()));
    Ok(obj.with_exact_meta(meta.build().map_err(|e| DicomError::Damaged(e.to_string()))?))
}

/// A deflated data set after its meta group (`meta`, from `DICM` on): inflated here, to at most
/// [`MAX_INFLATED`] bytes, and its lengths checked like any other data set's before dicom-rs
/// reads it (dicom-rs would inflate it whole, however large: a deflate bomb of 1 MB fills 1 GB).
fn read_deflated(meta: &[u8], deflated: &[u8]) -> Result<DefaultDicomObject> {
    use std::io::Read;
    let meta = dicom_object::FileMetaTable::from_reader(Cursor::new(meta)).map_err(|e| DicomError::Damaged(e.to_string()))?;
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| DicomError::Damaged(format!("the deflated data set does not inflate: {e}")))?;
    if inflated.len() as u64 > MAX_INFLATED {
        return Err(DicomError::TooLarge(format!(
            "the deflated data set inflates to more than {} MiB",
            MAX_INFLATED >> 20
        )));
    }
    lengths::check_inflated(&inflated).map_err(DicomError::Damaged)?;
    let ts = TransferSyntaxRegistry
        .get(dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.uid())
        .ok_or_else(|| DicomError::Damaged("no explicit VR little endian".into()))?;
    let obj = InMemDicomObject::read_dataset_with_ts(Cursor::new(&inflated), ts).map_err(|e| DicomError::Damaged(e.to_string()))?;
    Ok(obj.with_exact_meta(meta))
}

/// A text element, trimmed; `None` when absent or empty.
fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    let v = v.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!v.is_empty()).then(|| v.to_string())
}

fn uint(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.get(tag)?.to_int::<u32>().ok()
}

fn spacing(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<[f64; 2]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    match v[..] {
        [r, c] if r > 0.0 && c > 0.0 && r.is_finite() && c.is_finite() => Some([r, c]),
        _ => None,
    }
}

fn info(obj: &DefaultDicomObject) -> Result<Info> {
    let uid = obj.meta().transfer_syntax().trim_end_matches('\0').trim().to_string();
    let name = TransferSyntaxRegistry.get(&uid).map_or_else(|| "unknown".to_string(), |ts| ts.name().to_string());
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(DicomError::NoPixels);
    }
    let rows = uint(obj, tags::ROWS).ok_or_else(|| DicomError::Damaged("no Rows".into()))?;
    let columns = uint(obj, tags::COLUMNS).ok_or_else(|| DicomError::Damaged("no Columns".into()))?;
    let frames: i32 = match obj.get(tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(e) => e.to_int::<i32>().map_err(|_| DicomError::Damaged("Number of Frames is not a number".into()))?,
    };
    Ok(Info {
        transfer_syntax: uid,
        transfer_syntax_name: name,
        modality: text(obj, tags::MODALITY),
        manufacturer: text(obj, tags::MANUFACTURER),
        rows,
        columns,
        frames: u32::try_from(frames).map_err(|_| DicomError::Damaged(format!("Number of Frames is {frames}")))?,
        samples_per_pixel: uint(obj, tags::SAMPLES_PER_PIXEL).map_or(1, |v| v.min(u32::from(u16::MAX)) as u16),
        bits_allocated: uint(obj, tags::BITS_ALLOCATED).map_or(8, |v| v.min(u32::from(u16::MAX)) as u16),
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
        regions: calibration::regions(obj),
        pixel_spacing: spacing(obj, tags::PIXEL_SPACING),
        imager_pixel_spacing: spacing(obj, tags::IMAGER_PIXEL_SPACING),
    })
}

/// Refuse what cannot be decoded or is too large, before any pixel is.
fn check(obj: &DefaultDicomObject, info: &Info) -> Result<()> {
    let ts = TransferSyntaxRegistry.get(&info.transfer_syntax);
    let decodable = frames::JPEG_SEQUENTIAL.contains(&info.transfer_syntax.as_str())
        || ts.is_some_and(|ts| !ts.is_unsupported() && (ts.is_codec_free() || ts.can_decode_all()));
    if !decodable {
        return Err(DicomError::UnsupportedSyntax { uid: info.transfer_syntax.clone(), name: info.transfer_syntax_name.clone() });
    }
    let (w, h) = (info.columns, info.rows);
    if w == 0 || h == 0 || info.frames == 0 {
        return Err(DicomError::Damaged(format!("the image is {w} × {h} with {} frame(s)", info.frames)));
    }
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_FRAME_PIXELS {
        return Err(DicomError::TooLarge(format!(
            "the image is {w} × {h}: larger than the supported {MAX_SIDE} px per side / {} Mpx",
            MAX_FRAME_PIXELS / 1_000_000
        )));
    }
    if info.frames > MAX_FRAMES {
        return Err(DicomError::TooLarge(format!("the file declares {} frames (at most {MAX_FRAMES})", info.frames)));
    }
    if !matches!(info.bits_allocated, 1 | 8 | 16) || !matches!(info.samples_per_pixel, 1 | 3) {
        return Err(DicomError::Damaged(format!(
            "{} bits per sample and {} samples per pixel are not an image this reader decodes",
            info.bits_allocated, info.samples_per_pixel
        )));
    }
    // Bits Stored sizes dicom-pixeldata's lookup table (2^bits entries; it panics past 32).
    let stored = uint(obj, tags::BITS_STORED).unwrap_or(u32::from(info.bits_allocated));
    if stored == 0 || stored > u32::from(info.bits_allocated) {
        return Err(DicomError::Damaged(format!(
            "Bits Stored is {stored} for samples of {} bits",
            info.bits_allocated
        )));
    }
    // Compressed frames come one or more fragments each: fewer fragments than frames is a cut
    // file.
    let pixel_data = obj.get(tags::PIXEL_DATA).map(|e| e.value());
    if let Some(fragments) = pixel_data.and_then(|v| v.fragments())
        && (fragments.len() as u64) < u64::from(info.frames)
    {
        return Err(DicomError::Damaged(format!(
            "the header declares {} frames, the file holds {} compressed fragment(s) (truncated?)",
            info.frames,
            fragments.len()
        )));
    }
    // Uncompressed pixels (deflated ones are, once inflated): the header must not declare more
    // than the file holds.
    if ts.is_some_and(|ts| !ts.is_encapsulated_pixel_data()) {
        let per_frame = u64::from(w) * u64::from(h) * u64::from(info.samples_per_pixel) * u64::from(info.bits_allocated) / 8;
        let declared = per_frame * u64::from(info.frames);
        let held = pixel_data.and_then(|v| v.to_bytes().ok()).map_or(0, |b| b.len() as u64);
        if held < declared {
            return Err(DicomError::Damaged(format!(
                "the header declares {declared} bytes of pixels ({} frame(s) of {w} × {h}), the file holds {held}",
                info.frames
            )));
        }
    }
    Ok(())
}
