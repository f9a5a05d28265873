//! Image decoding and the model's input transform: resize the longest side to the frame with
//! area interpolation (OpenCV `INTER_AREA` semantics), normalise, zero-pad bottom/right to a
//! square. Pure Rust, identical natively and in the browser.

use std::io::Cursor;

use image::codecs::{bmp::BmpDecoder, jpeg::JpegDecoder, png::PngDecoder};
use image::{DynamicImage, ImageDecoder, ImageFormat, Limits, RgbImage};

use crate::config::{Normalization, ResizeKind, SamConfig};
use crate::error::{Result, SamError};
use crate::prompt::{Point, PointLabel, Prompt};

/// Largest accepted side of an input image, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest accepted pixel count (guards against decompression bombs).
pub const MAX_PIXELS: u64 = 100_000_000;
/// Largest model input frame of any supported model (SAM's 1024).
const MAX_FRAME: usize = 4096;

/// What the header of an image file says, checked before anything is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: image::ImageFormat,
    pub width: u32,
    pub height: u32,
}

/// Identify PNG, JPEG or BMP bytes and read their size from the header, refusing empty,
/// unknown, truncated and oversized files without decoding the pixels.
pub fn inspect_image(bytes: &[u8]) -> Result<ImageInfo> {
    if bytes.is_empty() {
        return Err(SamError::Image("the file is empty".into()));
    }
    let format = image::guess_format(bytes).ok().filter(|f| matches!(f, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp));
    let Some(format) = format else {
        return Err(SamError::Image(
            "not a PNG, JPEG or BMP image (unrecognised file signature)".into(),
        ));
    };
    check_complete(bytes, format)?;
    let (width, height) = decoder(bytes, format)?.dimensions();
    check_size(width, height)?;
    Ok(ImageInfo { format, width, height })
}

/// The decoder of `format` (PNG, JPEG or BMP) over `bytes`. Each codec is named here rather
/// than reached through `image`'s generic reader, which would accept — and link into every
/// build, the browser's modules included — each format the crate's features enable (TIFF,
/// WebP and OpenEXR too, which the DICOM reader's dependencies turn on).
fn decoder(bytes: &[u8], format: ImageFormat) -> Result<Box<dyn ImageDecoder + '_>> {
    let bad = |e: image::ImageError| SamError::Image(format!("cannot decode: {e}"));
    let c = Cursor::new(bytes);
    Ok(match format {
        ImageFormat::Png => Box::new(PngDecoder::new(c).map_err(bad)?),
        ImageFormat::Jpeg => Box::new(JpegDecoder::new(c).map_err(bad)?),
        ImageFormat::Bmp => Box::new(BmpDecoder::new(c).map_err(bad)?),
        other => return Err(SamError::Image(format!("not a PNG, JPEG or BMP image ({other:?})"))),
    })
}

/// Decode PNG, JPEG or BMP bytes (8-bit gray, RGB, RGBA, 16-bit PNG) to 8-bit RGB.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    Ok(decode_any(bytes)?.to_rgb8())
}

/// Decode PNG, JPEG or BMP bytes as they are, within the size limits.
pub(crate) fn decode_any(bytes: &[u8]) -> Result<DynamicImage> {
    let info = inspect_image(bytes)?;
    let bad = |e: image::ImageError| SamError::Image(format!("cannot decode: {e}"));
    let mut decoder = decoder(bytes, info.format)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(2 * 1024 * 1024 * 1024);
    // As image's own reader: the output buffer counts against the allocation limit.
    limits.reserve(decoder.total_bytes()).map_err(bad)?;
    decoder.set_limits(limits).map_err(bad)?;
    DynamicImage::from_decoder(decoder).map_err(bad)
}

/// Refuse files that end before their image data does. JPEG decoders fill a truncated scan
/// with grey and report success, so a JPEG's segments are walked to its end-of-image marker
/// (see [`jpeg_is_complete`]). PNG and BMP decoders report truncation themselves.
pub fn check_complete(bytes: &[u8], format: ImageFormat) -> Result<()> {
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(SamError::Image(
            "truncated or corrupt JPEG: the file ends before its image data does".into(),
        ));
    }
    Ok(())
}

/// Walk a JPEG's marker segments (skipping each by its length, so thumbnails inside APP
/// segments do not count) and its entropy-coded scans (where a data `FF` is always followed
/// by `00` or a restart marker) to the end-of-image marker `FF D9`.
pub fn jpeg_is_complete(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // A marker: one or more 0xFF (fill bytes), then its code.
        if b.get(i) != Some(&0xFF) {
            return false;
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = b.get(i) else { return false };
        i += 1;
        match code {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let Some(len) = b.get(i..i + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                i += len;
                if code == 0xDA {
                    // Entropy-coded data up to the next real marker.
                    loop {
                        match (b.get(i), b.get(i + 1)) {
                            (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => i += 2,
                            (Some(0xFF), Some(_)) => break,
                            (Some(_), _) => i += 1,
                            (None, _) => return false,
                        }
                    }
                }
            }
        }
    }
}

fn check_size(w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(SamError::Image(format!("image has no pixels ({w}×{h})")));
    }
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(SamError::ImageTooLarge(format!(
            "image is {w}×{h}: larger than the supported {MAX_SIDE} px per side / {} Mpx",
            MAX_PIXELS / 1_000_000
        )));
    }
    Ok(())
}

/// Where the original image sits in the model's square input frame.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    pub orig_h: usize,
    pub orig_w: usize,
    /// Size after resizing the longest side to `frame` (rounded half up).
    pub new_h: usize,
    pub new_w: usize,
    /// Side of the square model input.
    pub frame: usize,
}

impl Geometry {
    /// Whether `g` is what [`Geometry::new`] makes of its own image size and frame, for an
    /// image this crate accepts (a check on geometries read from files and the network).
    pub fn plausible(g: Geometry) -> bool {
        let side_ok = |v: usize| v > 0 && v <= MAX_SIDE as usize;
        side_ok(g.orig_h)
            && side_ok(g.orig_w)
            && (1..=MAX_FRAME).contains(&g.frame)
            && g == Geometry::new(g.orig_h, g.orig_w, g.frame)
    }

    pub fn new(orig_h: usize, orig_w: usize, frame: usize) -> Self {
        let scale = frame as f64 / orig_h.max(orig_w) as f64;
        let round = |v: usize| ((v as f64 * scale + 0.5) as usize).clamp(1, frame);
        Self {
            orig_h,
            orig_w,
            new_h: round(orig_h),
            new_w: round(orig_w),
            frame,
        }
    }

    /// Factor from original pixels to the model frame (`frame / max(H, W)`).
    pub fn scale(&self) -> f64 {
        self.frame as f64 / self.orig_h.max(self.orig_w) as f64
    }

    /// Scale a box `[x0, y0, x1, y1]` in original pixels to the frame, after checking it.
    pub fn box_to_frame(&self, b: [f32; 4]) -> Result<[f32; 4]> {
        let [x0, y0, x1, y1] = b;
        if b.iter().any(|v| !v.is_finite()) {
            return Err(SamError::Prompt(format!("box {b:?} has non-finite coordinates")));
        }
        if x1 <= x0 || y1 <= y0 {
            return Err(SamError::Prompt(format!(
                "box {x0},{y0},{x1},{y1} has zero or negative area (need x0 < x1 and y0 < y1)"
            )));
        }
        let (w, h) = (self.orig_w as f32, self.orig_h as f32);
        if x1 < 0.0 || y1 < 0.0 || x0 > w - 1.0 || y0 > h - 1.0 {
            return Err(SamError::Prompt(format!(
                "box {x0},{y0},{x1},{y1} lies outside the {}×{} image",
                self.orig_w, self.orig_h
            )));
        }
        // A box partly outside is clipped to the image, as a user dragging past the edge means;
        // what is left must still be a box (at least a pixel wide and high).
        let clip = |v: f32, max: f32| v.clamp(0.0, max);
        let [cx0, cy0, cx1, cy1] = [clip(x0, w - 1.0), clip(y0, h - 1.0), clip(x1, w - 1.0), clip(y1, h - 1.0)];
        if cx1 - cx0 < 1.0 || cy1 - cy0 < 1.0 {
            return Err(SamError::Prompt(format!(
                "box {x0},{y0},{x1},{y1} covers less than a pixel of the {}×{} image once clipped to it",
                self.orig_w, self.orig_h
            )));
        }
        let s = self.scale();
        let f = |v: f32| (v as f64 * s) as f32;
        Ok([f(cx0), f(cy0), f(cx1), f(cy1)])
    }

    /// Scale a point in original pixels to the frame, after checking it lies in the image.
    pub fn point_to_frame(&self, x: f32, y: f32, label: PointLabel) -> Result<Point> {
        if !x.is_finite() || !y.is_finite() {
            return Err(SamError::Prompt(format!("point {x},{y} is not finite")));
        }
        if x < 0.0 || y < 0.0 || x > self.orig_w as f32 - 1.0 || y > self.orig_h as f32 - 1.0 {
            return Err(SamError::Prompt(format!(
                "point {x},{y} lies outside the {}×{} image",
                self.orig_w, self.orig_h
            )));
        }
        let s = self.scale();
        Ok(Point {
            x: (x as f64 * s) as f32,
            y: (y as f64 * s) as f32,
            label,
        })
    }

    /// A prompt in original pixels → the same prompt in the frame.
    pub fn prompt_to_frame(&self, p: &Prompt) -> Result<Prompt> {
        Ok(Prompt {
            points: p
                .points
                .iter()
                .map(|pt| self.point_to_frame(pt.x, pt.y, pt.label))
                .collect::<Result<_>>()?,
            bbox: p.bbox.map(|b| self.box_to_frame(b)).transpose()?,
        })
    }
}

/// The model input of one image: `[3, frame, frame]` CHW, with its geometry.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub data: Vec<f32>,
    pub geometry: Geometry,
}

/// Resize an RGB image so its longest side fits `config`'s frame, with the model's resize
/// kind: interleaved RGB `u8`, `new_h × new_w` (see [`Geometry`]).
pub fn resize_for_model(img: &RgbImage, config: &SamConfig) -> (Vec<u8>, Geometry) {
    let g = Geometry::new(img.height() as usize, img.width() as usize, config.img_size());
    let resized = match config.resize {
        ResizeKind::Area => resize_area(img.as_raw(), g.orig_w, g.orig_h, g.new_w, g.new_h),
        ResizeKind::PilBilinear => {
            resize_pil_bilinear(img.as_raw(), g.orig_w, g.orig_h, g.new_w, g.new_h)
        }
    };
    (resized, g)
}

/// Resize, normalise and pad an RGB image for `config`.
pub fn preprocess(img: &RgbImage, config: &SamConfig) -> ModelInput {
    let (resized, geometry) = resize_for_model(img, config);
    preprocess_resized(&resized, geometry, config)
}

/// Normalise and pad an image already resized to `geometry`'s `new_h × new_w` (interleaved
/// RGB `u8`).
pub fn preprocess_resized(resized: &[u8], geometry: Geometry, config: &SamConfig) -> ModelInput {
    let frame = config.img_size();
    assert_eq!(resized.len(), geometry.new_h * geometry.new_w * 3, "resized image size");
    let (nw, nh) = (geometry.new_w, geometry.new_h);
    let mut data = vec![0f32; 3 * frame * frame];
    match &config.normalization {
        Normalization::MinMax => {
            let min = *resized.iter().min().unwrap_or(&0);
            let max = *resized.iter().max().unwrap_or(&0);
            let range = (f64::from(max - min)).max(1e-8);
            for y in 0..nh {
                for x in 0..nw {
                    for c in 0..3 {
                        let v = resized[(y * nw + x) * 3 + c];
                        data[c * frame * frame + y * frame + x] =
                            (f64::from(v - min) / range) as f32;
                    }
                }
            }
        }
        Normalization::MeanStd { mean, std } => {
            for y in 0..nh {
                for x in 0..nw {
                    for c in 0..3 {
                        let v = f32::from(resized[(y * nw + x) * 3 + c]);
                        data[c * frame * frame + y * frame + x] = (v - mean[c]) / std[c];
                    }
                }
            }
        }
    }
    ModelInput { data, geometry }
}

/// One output sample's source contributions along an axis: (source index, weight).
type AreaTab = Vec<Vec<(usize, f32)>>;

/// OpenCV's `computeResizeAreaTab` for a downscale by `scale = src / dst` (≥ 1).
fn area_tab(src: usize, dst: usize) -> AreaTab {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let fsx1 = d as f64 * scale;
            let fsx2 = fsx1 + scale;
            let cell = scale.min(src as f64 - fsx1);
            let sx2 = (fsx2.floor() as usize).min(src - 1);
            let sx1 = (fsx1.ceil() as usize).min(sx2);
            let mut tab = Vec::new();
            if sx1 as f64 - fsx1 > 1e-3 {
                tab.push((sx1 - 1, ((sx1 as f64 - fsx1) / cell) as f32));
            }
            for s in sx1..sx2 {
                tab.push((s, (1.0 / cell) as f32));
            }
            if fsx2 - sx2 as f64 > 1e-3 {
                tab.push((sx2, ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32));
            }
            tab
        })
        .collect()
}

/// OpenCV's `INTER_AREA` upscale coefficients (a bilinear variant): per output sample the
/// two source indices and the weight of the second.
fn area_upscale_tab(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    let inv = 1.0 / scale;
    (0..dst)
        .map(|d| {
            let sx = (d as f64 * scale).floor() as isize;
            let mut fx = ((d + 1) as f64 - (sx + 1) as f64 * inv) as f32;
            fx = if fx <= 0.0 { 0.0 } else { fx - fx.floor() };
            let s0 = sx.clamp(0, src as isize - 1) as usize;
            let s1 = (sx + 1).clamp(0, src as isize - 1) as usize;
            (s0, s1, fx)
        })
        .collect()
}

/// Resize interleaved RGB `u8` pixels with `INTER_AREA` semantics.
pub fn resize_area(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    const CN: usize = 3;
    let mut out = vec![0u8; dw * dh * CN];
    if sw == dw && sh == dh {
        out.copy_from_slice(src);
        return out;
    }
    if dw <= sw && dh <= sh {
        let (ix, iy) = (sw / dw, sh / dh);
        if ix * dw == sw && iy * dh == sh {
            // Integer factors: OpenCV's fast path, a plain box average. Its 2×2 SIMD kernel
            // rounds halves up: (sum + 2) >> 2.
            let area = (ix * iy) as u32;
            for y in 0..dh {
                for x in 0..dw {
                    for c in 0..CN {
                        let mut sum = 0u32;
                        for yy in 0..iy {
                            for xx in 0..ix {
                                sum += u32::from(src[((y * iy + yy) * sw + x * ix + xx) * CN + c]);
                            }
                        }
                        out[(y * dw + x) * CN + c] = if area == 4 {
                            ((sum + 2) >> 2) as u8
                        } else {
                            round_u8(sum as f32 * (1.0 / area as f32))
                        };
                    }
                }
            }
            return out;
        }
        let xtab = area_tab(sw, dw);
        let ytab = area_tab(sh, dh);
        let mut row = vec![0f32; dw * CN];
        let mut acc = vec![0f32; dw * CN];
        for (dy, ys) in ytab.iter().enumerate() {
            acc.iter_mut().for_each(|v| *v = 0.0);
            for &(sy, beta) in ys {
                row.iter_mut().for_each(|v| *v = 0.0);
                let line = &src[sy * sw * CN..(sy + 1) * sw * CN];
                for (dx, xs) in xtab.iter().enumerate() {
                    for &(sx, alpha) in xs {
                        for c in 0..CN {
                            row[dx * CN + c] += f32::from(line[sx * CN + c]) * alpha;
                        }
                    }
                }
                for (a, r) in acc.iter_mut().zip(&row) {
                    *a += beta * r;
                }
            }
            for (o, a) in out[dy * dw * CN..(dy + 1) * dw * CN].iter_mut().zip(&acc) {
                *o = round_u8(*a);
            }
        }
        return out;
    }
    // Upscaling (images smaller than the frame): OpenCV's area-flavoured bilinear.
    let xt = area_upscale_tab(sw, dw);
    let yt = area_upscale_tab(sh, dh);
    for (dy, &(y0, y1, fy)) in yt.iter().enumerate() {
        for (dx, &(x0, x1, fx)) in xt.iter().enumerate() {
            for c in 0..CN {
                let p = |y: usize, x: usize| f32::from(src[(y * sw + x) * CN + c]);
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                out[(dy * dw + dx) * CN + c] = round_u8(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// Fixed-point precision of PIL's 8-bit resampling coefficients.
const PIL_PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's `precompute_coeffs` for the bilinear (triangle) filter: per output sample the first
/// source index and its fixed-point weights. Downscaling widens the filter (antialiasing).
fn pil_bilinear_coeffs(src: usize, dst: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = src as f64 / dst as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle filter's support is 1
    let triangle = |x: f64| {
        let x = x.abs();
        if x < 1.0 { 1.0 - x } else { 0.0 }
    };
    (0..dst)
        .map(|d| {
            let center = (d as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(src as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| triangle((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = w.iter().sum();
            let one = f64::from(1u32 << PIL_PRECISION_BITS);
            let k = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    if v < 0.0 { (-0.5 + v * one) as i32 } else { (0.5 + v * one) as i32 }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// PIL's `Image.resize(..., BILINEAR)` of interleaved RGB `u8` pixels (the resize of SAM's
/// `ResizeLongestSide`): a horizontal then a vertical pass, each rounding to `u8`, with
/// PIL's fixed-point arithmetic.
pub fn resize_pil_bilinear(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    const CN: usize = 3;
    let pass = |k: &[i32], sample: &dyn Fn(usize) -> u8| -> u8 {
        let mut ss: i64 = 1 << (PIL_PRECISION_BITS - 1);
        for (i, &w) in k.iter().enumerate() {
            ss += i64::from(sample(i)) * i64::from(w);
        }
        (ss >> PIL_PRECISION_BITS).clamp(0, 255) as u8
    };
    let horizontal = if dw == sw {
        src.to_vec()
    } else {
        let xs = pil_bilinear_coeffs(sw, dw);
        let mut out = vec![0u8; sh * dw * CN];
        for y in 0..sh {
            for (x, (x0, k)) in xs.iter().enumerate() {
                for c in 0..CN {
                    out[(y * dw + x) * CN + c] =
                        pass(k, &|i| src[(y * sw + x0 + i) * CN + c]);
                }
            }
        }
        out
    };
    if dh == sh {
        return horizontal;
    }
    let ys = pil_bilinear_coeffs(sh, dh);
    let mut out = vec![0u8; dh * dw * CN];
    for (y, (y0, k)) in ys.iter().enumerate() {
        for x in 0..dw {
            for c in 0..CN {
                out[(y * dw + x) * CN + c] = pass(k, &|i| horizontal[((y0 + i) * dw + x) * CN + c]);
            }
        }
    }
    out
}

/// `saturate_cast<uchar>(float)`: round half to even, clamp to 0..=255.
fn round_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_rounds_half_up_and_scales_prompts() {
        let g = Geometry::new(466, 561, 256);
        assert_eq!((g.new_h, g.new_w), (213, 256));
        let b = g.box_to_frame([0.0, 0.0, 560.0, 465.0]).unwrap();
        assert!((b[2] - 560.0 * 256.0 / 561.0).abs() < 1e-4);
    }

    #[test]
    fn bad_boxes_are_rejected() {
        let g = Geometry::new(100, 200, 256);
        assert!(g.box_to_frame([10.0, 10.0, 10.0, 50.0]).is_err());
        assert!(g.box_to_frame([300.0, 10.0, 400.0, 50.0]).is_err());
        assert!(g.box_to_frame([f32::NAN, 10.0, 40.0, 50.0]).is_err());
        // Partly outside: clipped.
        let b = g.box_to_frame([-20.0, 10.0, 500.0, 50.0]).unwrap();
        assert_eq!(b[0], 0.0);
        assert!((b[2] - 199.0 * 256.0 / 200.0).abs() < 1e-3);
    }

    #[test]
    fn boxes_that_clip_to_nothing_are_rejected() {
        // The probe's case: x0 = -100 and x1 = 0 clip to a zero-width box.
        let g = Geometry::new(466, 561, 256);
        let e = g.box_to_frame([-100.0, 10.0, 0.0, 100.0]).unwrap_err().to_string();
        assert!(e.contains("less than a pixel"), "{e}");
        assert!(g.box_to_frame([10.0, 465.5, 50.0, 600.0]).is_err());
    }

    #[test]
    fn truncated_files_are_refused() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
        for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png, image::ImageFormat::Bmp] {
            let mut buf = Vec::new();
            image::DynamicImage::ImageRgb8(img.clone())
                .write_to(&mut Cursor::new(&mut buf), format)
                .unwrap();
            assert_eq!(decode_image(&buf).unwrap().dimensions(), (64, 48));
            // Cuts into the image data. (A PNG that loses only its IEND trailer still has every
            // pixel and decodes; a JPEG must keep its end-of-image marker.)
            let mut cuts = vec![buf.len() / 10, buf.len() / 2];
            if format == image::ImageFormat::Jpeg {
                cuts.extend([buf.len() - 2, buf.len() - 1]);
            }
            for cut in cuts {
                let e = decode_image(&buf[..cut]);
                assert!(e.is_err(), "{format:?} cut at {cut} of {} was accepted", buf.len());
            }
        }
        // Trailing bytes after a complete JPEG are harmless.
        let mut buf = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Jpeg).unwrap();
        buf.extend_from_slice(&[0, 0, 0]);
        assert!(decode_image(&buf).is_ok());
    }

    #[test]
    fn formats_other_than_png_jpeg_bmp_are_refused() {
        // Signatures the image crate knows (TIFF, WebP, OpenEXR, GIF): refused by name, not
        // handed to a decoder this app does not promise.
        let tiff = b"II*\0\x08\0\0\0\x01\0\0\x01\x03\0\x01\0\0\0\x04\0\0\0\0\0\0\0".to_vec();
        let webp = b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f\0\0\0\x10\x07\x10\x11\x11\x88\x88\xfe\x07\0".to_vec();
        let exr = [0x76u8, 0x2f, 0x31, 0x01, 2, 0, 0, 0].to_vec();
        let gif = b"GIF89a\x01\0\x01\0\0\0\0;".to_vec();
        for bytes in [tiff, webp, exr, gif] {
            let e = decode_image(&bytes).unwrap_err().to_string();
            assert!(e.contains("not a PNG, JPEG or BMP"), "{e}");
            assert!(crate::Mask::from_image_bytes(&bytes).is_err());
        }
    }

    #[test]
    fn area_resize_averages_and_handles_constant_images() {
        let src = vec![7u8; 10 * 6 * 3];
        let out = resize_area(&src, 10, 6, 4, 3);
        assert!(out.iter().all(|&v| v == 7));
        // 2×2 box average rounds halves up.
        let src = [0u8, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(resize_area(&src, 2, 2, 1, 1), vec![0, 0, 0]);
        let src = [1u8, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(resize_area(&src, 2, 2, 1, 1), vec![1, 1, 1]);
    }

    #[test]
    fn upscaling_keeps_range() {
        let src: Vec<u8> = (0..4 * 4 * 3).map(|i| (i * 5) as u8).collect();
        let out = resize_area(&src, 4, 4, 9, 9);
        assert_eq!(out.len(), 9 * 9 * 3);
        assert!(out.iter().all(|&v| v <= 235));
    }

    #[test]
    fn pil_bilinear_keeps_constants_and_interpolates() {
        let src = vec![9u8; 5 * 4 * 3];
        assert!(resize_pil_bilinear(&src, 5, 4, 13, 11).iter().all(|&v| v == 9));
        assert!(resize_pil_bilinear(&src, 5, 4, 2, 3).iter().all(|&v| v == 9));
        // 2 → 4 px upscale of [0, 200]: centres at 0.25, 0.75 → 0, 50, 150, 200.
        let src = [0u8, 0, 0, 200, 200, 200];
        let out = resize_pil_bilinear(&src, 2, 1, 4, 1);
        assert_eq!(out.iter().step_by(3).copied().collect::<Vec<_>>(), vec![0, 50, 150, 200]);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = decode_image(b"definitely not an image").unwrap_err();
        assert!(e.to_string().contains("not a PNG, JPEG or BMP"), "{e}");
        assert!(decode_image(&[]).is_err());
    }
}
