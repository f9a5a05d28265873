//! Decoding one frame into 8-bit RGB. JPEG baseline/extended frames go through this crate's
//! decoder ([`crate::jpeg`], libjpeg's samples); other syntaxes through dicom-pixeldata. Colour
//! samples (RGB, YBR_FULL, YBR_FULL_422) become RGB here, with the YBR → RGB conversion of the
//! DICOM standard as pydicom computes it; palette colour goes through the file's own colour
//! tables; monochrome (rescale, window, MONOCHROME1) through dicom-pixeldata.

use std::borrow::Cow;

use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;
use image::RgbImage;

use crate::{DicomError, Info, Result};

/// The transfer syntaxes whose frames [`crate::jpeg`] decodes: JPEG baseline (process 1) and
/// extended (processes 2 and 4; 8-bit only).
pub(crate) const JPEG_SEQUENTIAL: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];

pub(crate) fn decode(obj: &DefaultDicomObject, info: &Info, n: u32) -> Result<RgbImage> {
    let err = |e: &dyn std::fmt::Display| DicomError::Decode { frame: n, message: e.to_string() };
    if JPEG_SEQUENTIAL.contains(&info.transfer_syntax.as_str()) {
        return jpeg_frame(obj, info, n).map_err(|e| err(&e));
    }
    let pixels = obj.decode_pixel_data_frame(n).map_err(|e| err(&e))?;
    if info.photometric == "PALETTE COLOR" {
        return palette(obj, pixels.data(), info).map_err(|e| err(&e));
    }
    if info.samples_per_pixel == 3 && info.bits_allocated == 8 {
        let data = pixels.data().get(..info.columns as usize * info.rows as usize * 3).ok_or_else(|| err(&"the frame holds fewer samples than its size"))?;
        let interleaved = match pixels.planar_configuration() {
            dicom_pixeldata::PlanarConfiguration::Standard => Cow::Borrowed(data),
            dicom_pixeldata::PlanarConfiguration::PixelFirst => Cow::Owned(interleave(data)),
        };
        return colour(info, &interleaved).map_err(|e| err(&e));
    }
    Ok(pixels.to_dynamic_image_with_options(0, &monochrome_options(obj, info)).map_err(|e| err(&e))?.to_rgb8())
}

/// Monochrome display: the file's window (or VOI LUT) when it has one; 8-bit samples without
/// one are shown as they are, like pydicom and viewers show them (dicom-pixeldata would stretch
/// the frame's own min–max to 0–255, changing the pixels the model sees frame by frame).
fn monochrome_options(obj: &DefaultDicomObject, info: &Info) -> dicom_pixeldata::ConvertOptions {
    let options = dicom_pixeldata::ConvertOptions::new();
    let windowed = obj.get(tags::WINDOW_CENTER).is_some() || obj.get(tags::VOILUT_SEQUENCE).is_some();
    if info.bits_allocated == 8 && !windowed {
        return options.with_voi_lut(dicom_pixeldata::VoiLutOption::Identity);
    }
    options
}

/// A JPEG frame: decoded here, then colour samples converted like native ones; a monochrome
/// (or palette) frame is handed on as a one-frame uncompressed data set, so that rescale,
/// window and palette apply as they do to uncompressed files.
fn jpeg_frame(obj: &DefaultDicomObject, info: &Info, n: u32) -> std::result::Result<RgbImage, String> {
    let bytes = compressed_frame(obj, info, n)?;
    let image = crate::jpeg::decode(&bytes, (info.columns, info.rows))?;
    if image.components != usize::from(info.samples_per_pixel) {
        return Err(format!("the JPEG frame has {} components, the header says {} samples per pixel", image.components, info.samples_per_pixel));
    }
    if image.components == 3 {
        return colour(info, &image.samples);
    }
    let native = uncompressed(obj, image.samples)?;
    let info = Info { transfer_syntax: native.meta().transfer_syntax().to_string(), frames: 1, bits_allocated: 8, ..info.clone() };
    decode(&native, &info, 0).map_err(|e| e.to_string())
}

/// The compressed bytes of frame `n`: its fragment, or the fragments the Basic Offset Table
/// (or, without one, each fragment starting with a JPEG SOI marker) assigns to it.
fn compressed_frame<'a>(obj: &'a DefaultDicomObject, info: &Info, n: u32) -> std::result::Result<Cow<'a, [u8]>, String> {
    let value = obj.get(tags::PIXEL_DATA).ok_or("no Pixel Data")?.value();
    let fragments = value.fragments().ok_or("the Pixel Data is not encapsulated")?;
    let n = n as usize;
    if fragments.len() == info.frames as usize {
        return Ok(Cow::Borrowed(&fragments[n]));
    }
    if info.frames == 1 {
        return Ok(Cow::Owned(fragments.concat()));
    }
    // Where each frame starts, as an index into `fragments`.
    let starts: Vec<usize> = match value.offset_table().filter(|t| t.len() == info.frames as usize) {
        Some(table) => {
            let mut at = 0u64;
            let positions: Vec<u64> = fragments
                .iter()
                .map(|f| {
                    let p = at;
                    at += 8 + f.len() as u64;
                    p
                })
                .collect();
            table
                .iter()
                .map(|&o| positions.iter().position(|&p| p == u64::from(o)))
                .collect::<Option<_>>()
                .ok_or("the Basic Offset Table does not point at fragments")?
        }
        None => fragments.iter().enumerate().filter(|(_, f)| f.starts_with(&[0xFF, 0xD8])).map(|(i, _)| i).collect(),
    };
    if starts.len() != info.frames as usize || starts.first() != Some(&0) {
        return Err(format!("cannot tell which of the {} fragments hold frame {n}", fragments.len()));
    }
    let end = starts.get(n + 1).copied().unwrap_or(fragments.len());
    if end <= starts[n] {
        return Err("the Basic Offset Table is not in order".into());
    }
    Ok(Cow::Owned(fragments[starts[n]..end].concat()))
}

/// `obj` with `samples` as its only frame, uncompressed (explicit VR little endian, 8 bits).
fn uncompressed(obj: &DefaultDicomObject, samples: Vec<u8>) -> std::result::Result<DefaultDicomObject, String> {
    let mut ds = InMemDicomObject::new_empty();
    for e in obj.iter().filter(|e| !matches!(e.tag(), tags::PIXEL_DATA | tags::NUMBER_OF_FRAMES)) {
        ds.put(e.clone());
    }
    ds.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8_u16)));
    ds.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(8_u16)));
    ds.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7_u16)));
    ds.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(samples)));
    let meta = dicom_object::FileMetaTableBuilder::new()
        .transfer_syntax(dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.uid())
        .media_storage_sop_class_uid(obj.meta().media_storage_sop_class_uid())
        .media_storage_sop_instance_uid(obj.meta().media_storage_sop_instance_uid())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(ds.with_exact_meta(meta))
}

/// Colour samples (pixel-interleaved) as RGB: RGB as they are; YBR_FULL and YBR_FULL_422 (once
/// decompressed, every pixel has its own Cb, Cr) by the standard's YCbCr → RGB (PS3.3
/// C.7.6.3.1.2), in single precision and rounded as pydicom does.
fn colour(info: &Info, samples: &[u8]) -> std::result::Result<RgbImage, String> {
    let rgb = match info.photometric.as_str() {
        "RGB" => samples.to_vec(),
        "YBR_FULL" | "YBR_FULL_422" => ybr_to_rgb(samples),
        pi => return Err(format!("colour samples in photometric interpretation {pi:?} are not supported")),
    };
    RgbImage::from_raw(info.columns, info.rows, rgb).ok_or_else(|| "the frame does not match its size".into())
}

fn ybr_to_rgb(ybr: &[u8]) -> Vec<u8> {
    const R_CR: f32 = 1.402;
    const G_CB: f32 = (-0.114 * 1.772 / 0.587) as f32;
    const G_CR: f32 = (-0.299 * 1.402 / 0.587) as f32;
    const B_CB: f32 = 1.772;
    let round = |v: f32| (v + 0.5).floor().clamp(0.0, 255.0) as u8;
    ybr.chunks_exact(3)
        .flat_map(|p| {
            let (y, cb, cr) = (f32::from(p[0]), f32::from(p[1]) - 128.0, f32::from(p[2]) - 128.0);
            [round(y + cr * R_CR), round(y + cb * G_CB + cr * G_CR), round(y + cb * B_CB)]
        })
        .collect()
}

/// Colour-by-plane samples (all R, then all G, then all B) interleaved per pixel.
fn interleave(planes: &[u8]) -> Vec<u8> {
    let n = planes.len() / 3;
    (0..n).flat_map(|i| [planes[i], planes[n + i], planes[2 * n + i]]).collect()
}

/// One of the Red/Green/Blue Palette Color Lookup Tables, as 8-bit values.
struct Lut {
    first: u32,
    values: Vec<u8>,
}

impl Lut {
    fn read(obj: &InMemDicomObject, descriptor: dicom_core::Tag, data: dicom_core::Tag, colour: &str) -> std::result::Result<Self, String> {
        let d = obj
            .get(descriptor)
            .and_then(|e| e.to_multi_int::<i32>().ok())
            .filter(|d| d.len() == 3)
            .ok_or_else(|| format!("no {colour} palette descriptor"))?;
        let entries = if d[0] == 0 { 65_536 } else { d[0].clamp(1, 65_536) as usize };
        let first = u32::try_from(d[1].max(0)).unwrap_or(0);
        let bits = d[2];
        let bytes = obj
            .get(data)
            .and_then(|e| e.to_bytes().ok())
            .ok_or_else(|| format!("no {colour} palette data (segmented palettes are not supported)"))?;
        // Entries are stored in 16-bit words; 8-bit tables keep their value in the low byte.
        let words: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        if words.len() < entries {
            return Err(format!("the {colour} palette holds {} of its {entries} entries", words.len()));
        }
        let values = words[..entries].iter().map(|&w| if bits > 8 { (w >> 8) as u8 } else { w as u8 }).collect();
        Ok(Self { first, values })
    }

    fn get(&self, index: u32) -> u8 {
        let i = index.saturating_sub(self.first) as usize;
        self.values[i.min(self.values.len() - 1)]
    }
}

/// Palette colour: each pixel's index through the file's three colour tables.
fn palette(obj: &DefaultDicomObject, data: &[u8], info: &Info) -> std::result::Result<RgbImage, String> {
    let r = Lut::read(obj, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, "red")?;
    let g = Lut::read(obj, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, "green")?;
    let b = Lut::read(obj, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA, "blue")?;
    let n = info.columns as usize * info.rows as usize;
    let indices: Vec<u32> = match info.bits_allocated {
        8 => data.iter().take(n).map(|&v| u32::from(v)).collect(),
        16 => data.chunks_exact(2).take(n).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
        bits => return Err(format!("{bits}-bit palette indices")),
    };
    if indices.len() < n {
        return Err(format!("the frame holds {} of its {n} pixels", indices.len()));
    }
    let rgb = indices.iter().flat_map(|&i| [r.get(i), g.get(i), b.get(i)]).collect();
    RgbImage::from_raw(info.columns, info.rows, rgb).ok_or_else(|| "the frame does not match its size".into())
}
