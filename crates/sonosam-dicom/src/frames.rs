//! Decoding one frame into 8-bit RGB: dicom-pixeldata decodes the transfer syntax and handles
//! monochrome (rescale, window), RGB and YBR; palette colour goes through the file's own colour
//! tables here.

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;
use image::RgbImage;

use crate::{DicomError, Info, Result};

pub(crate) fn decode(obj: &DefaultDicomObject, info: &Info, n: u32) -> Result<RgbImage> {
    let err = |e: &dyn std::fmt::Display| DicomError::Decode { frame: n, message: e.to_string() };
    let pixels = obj.decode_pixel_data_frame(n).map_err(|e| err(&e))?;
    if info.photometric == "PALETTE COLOR" {
        return palette(obj, pixels.data(), info).map_err(|e| err(&e));
    }
    Ok(pixels.to_dynamic_image(0).map_err(|e| err(&e))?.to_rgb8())
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
