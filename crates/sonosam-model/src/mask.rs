//! Binary masks: reading ground truth, Dice/IoU, tight boxes, contours, PNG export.

use image::{GrayImage, ImageEncoder, Luma};

use crate::error::{Result, SamError};

/// A binary mask, row-major, one byte per pixel (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Mask {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    /// Build from a predicate on the flat pixel index.
    pub fn from_fn(width: usize, height: usize, f: impl Fn(usize) -> bool) -> Self {
        Self {
            width,
            height,
            data: (0..width * height).map(|i| u8::from(f(i))).collect(),
        }
    }

    /// Decode a mask image (PNG, JPEG or BMP); luma above 127 is foreground.
    pub fn from_image_bytes(bytes: &[u8]) -> Result<Self> {
        let img = crate::preprocess::decode_any(bytes)
            .map_err(|e| SamError::Image(format!("cannot decode mask: {e}")))?
            .to_luma8();
        let (w, h) = img.dimensions();
        Ok(Self {
            width: w as usize,
            height: h as usize,
            data: img.into_raw().into_iter().map(|v| u8::from(v > 127)).collect(),
        })
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> bool {
        self.data[y * self.width + x] != 0
    }

    /// Foreground pixel count.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.area() == 0
    }

    /// Tight box `[x0, y0, x1, y1]` (inclusive pixel indices) of the foreground, if any.
    pub fn bbox(&self) -> Option<[usize; 4]> {
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.get(x, y) {
                    x0 = x0.min(x);
                    y0 = y0.min(y);
                    x1 = x1.max(x);
                    y1 = y1.max(y);
                }
            }
        }
        (x0 != usize::MAX).then_some([x0, y0, x1, y1])
    }

    fn check_same_size(&self, other: &Mask) -> Result<()> {
        if (self.width, self.height) != (other.width, other.height) {
            return Err(SamError::Invalid(format!(
                "mask sizes differ: {}×{} vs {}×{}",
                self.width, self.height, other.width, other.height
            )));
        }
        Ok(())
    }

    /// (intersection, |self|, |other|).
    fn overlap(&self, other: &Mask) -> Result<(usize, usize, usize)> {
        self.check_same_size(other)?;
        let mut inter = 0;
        let (mut a, mut b) = (0, 0);
        for (&p, &q) in self.data.iter().zip(&other.data) {
            let (p, q) = (p != 0, q != 0);
            inter += usize::from(p && q);
            a += usize::from(p);
            b += usize::from(q);
        }
        Ok((inter, a, b))
    }

    /// Add `other`'s pixels to this mask (set union); masks of another size are an error.
    pub fn union_with(&mut self, other: &Mask) -> Result<()> {
        self.check_same_size(other)?;
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a |= b;
        }
        Ok(())
    }

    /// Dice coefficient; two empty masks agree perfectly (1.0).
    pub fn dice(&self, other: &Mask) -> Result<f64> {
        let (i, a, b) = self.overlap(other)?;
        Ok(if a + b == 0 {
            1.0
        } else {
            2.0 * i as f64 / (a + b) as f64
        })
    }

    /// Intersection over union; two empty masks agree perfectly (1.0).
    pub fn iou(&self, other: &Mask) -> Result<f64> {
        let (i, a, b) = self.overlap(other)?;
        let union = a + b - i;
        Ok(if union == 0 { 1.0 } else { i as f64 / union as f64 })
    }

    /// Fraction of pixels where the two masks agree.
    pub fn agreement(&self, other: &Mask) -> Result<f64> {
        self.check_same_size(other)?;
        let same = self
            .data
            .iter()
            .zip(&other.data)
            .filter(|(p, q)| (**p != 0) == (**q != 0))
            .count();
        Ok(same as f64 / self.data.len().max(1) as f64)
    }

    /// Label the 4-connected components of the pixels where `fg(value)` holds: a label per
    /// pixel (0: not selected) and the size of each label (index = label − 1).
    fn components(&self, fg: impl Fn(u8) -> bool) -> (Vec<u32>, Vec<usize>) {
        let (w, h) = (self.width, self.height);
        let mut labels = vec![0u32; w * h];
        let mut sizes = Vec::new();
        let mut stack = Vec::new();
        for start in 0..w * h {
            if labels[start] != 0 || !fg(self.data[start]) {
                continue;
            }
            let label = sizes.len() as u32 + 1;
            let mut size = 0;
            labels[start] = label;
            stack.push(start);
            while let Some(i) = stack.pop() {
                size += 1;
                let (x, y) = (i % w, i / w);
                let mut visit = |j: usize| {
                    if labels[j] == 0 && fg(self.data[j]) {
                        labels[j] = label;
                        stack.push(j);
                    }
                };
                if x > 0 { visit(i - 1); }
                if x + 1 < w { visit(i + 1); }
                if y > 0 { visit(i - w); }
                if y + 1 < h { visit(i + w); }
            }
            sizes.push(size);
        }
        (labels, sizes)
    }

    /// Only the largest 4-connected foreground component (a lesion is one blob; specks the
    /// decoder leaves elsewhere go). An empty mask stays empty.
    pub fn largest_component(&self) -> Mask {
        let (labels, sizes) = self.components(|v| v != 0);
        let Some(best) = sizes.iter().enumerate().max_by_key(|(_, s)| **s).map(|(i, _)| i as u32 + 1) else {
            return self.clone();
        };
        Mask::from_fn(self.width, self.height, |i| labels[i] == best)
    }

    /// Holes filled: background not 4-connected to the image border becomes foreground.
    pub fn fill_holes(&self) -> Mask {
        let (w, h) = (self.width, self.height);
        let (labels, _) = self.components(|v| v == 0);
        let mut outside = std::collections::HashSet::new();
        for x in 0..w {
            outside.insert(labels[x]);
            outside.insert(labels[(h - 1) * w + x]);
        }
        for y in 0..h {
            outside.insert(labels[y * w]);
            outside.insert(labels[y * w + w - 1]);
        }
        Mask::from_fn(w, h, |i| self.data[i] != 0 || !outside.contains(&labels[i]))
    }

    /// Foreground pixels with a 4-neighbour in the background or outside the image.
    pub fn contour(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for y in 0..self.height {
            for x in 0..self.width {
                if !self.get(x, y) {
                    continue;
                }
                let edge = x == 0
                    || y == 0
                    || x + 1 == self.width
                    || y + 1 == self.height
                    || !self.get(x - 1, y)
                    || !self.get(x + 1, y)
                    || !self.get(x, y - 1)
                    || !self.get(x, y + 1);
                if edge {
                    out.push((x, y));
                }
            }
        }
        out
    }

    /// 95th-percentile Hausdorff distance between the two masks' boundaries, in pixels
    /// (MONAI's definition: the larger of the two directed 95th percentiles). `None` when
    /// either mask is empty.
    pub fn hd95(&self, other: &Mask) -> Result<Option<f64>> {
        self.check_same_size(other)?;
        let (a, b) = (self.contour(), other.contour());
        if a.is_empty() || b.is_empty() {
            return Ok(None);
        }
        let directed = |from: &[(usize, usize)], to: &[(usize, usize)]| {
            let dt = distance_to(to, self.width, self.height);
            let mut d: Vec<f64> = from.iter().map(|&(x, y)| dt[y * self.width + x]).collect();
            percentile(&mut d, 95.0)
        };
        Ok(Some(directed(&a, &b).max(directed(&b, &a))))
    }

    /// 8-bit grayscale PNG, 255 = foreground.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let img = GrayImage::from_fn(self.width as u32, self.height as u32, |x, y| {
            Luma([if self.get(x as usize, y as usize) { 255 } else { 0 }])
        });
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::L8)
            .map_err(|e| SamError::Invalid(format!("encoding mask PNG: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
impl Mask {
    /// A filled disc of radius `r` centred on `(cx, cy)` (pixel centres), for tests.
    pub(crate) fn disc(width: usize, height: usize, cx: f64, cy: f64, r: f64) -> Mask {
        Mask::from_fn(width, height, |i| ((i % width) as f64 - cx).hypot((i / width) as f64 - cy) <= r)
    }
}

/// Euclidean distance from every pixel to the nearest of `points` (exact, separable
/// Felzenszwalb–Huttenlocher transform).
pub(crate) fn distance_to(points: &[(usize, usize)], w: usize, h: usize) -> Vec<f64> {
    const INF: f64 = 1e20;
    let mut f = vec![INF; w * h];
    for &(x, y) in points {
        f[y * w + x] = 0.0;
    }
    let mut col = vec![0.0; h];
    for x in 0..w {
        for y in 0..h {
            col[y] = f[y * w + x];
        }
        let d = edt_1d(&col);
        for y in 0..h {
            f[y * w + x] = d[y];
        }
    }
    for y in 0..h {
        let d = edt_1d(&f[y * w..(y + 1) * w]);
        f[y * w..(y + 1) * w].copy_from_slice(&d);
    }
    f.into_iter().map(f64::sqrt).collect()
}

/// 1-D squared distance transform of a sampled function (lower envelope of parabolas).
fn edt_1d(f: &[f64]) -> Vec<f64> {
    let n = f.len();
    let mut d = vec![0.0; n];
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f64; n + 1];
    let mut k = 0;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    for q in 1..n {
        let mut s;
        loop {
            let p = v[k];
            s = ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * (q - p) as f64);
            // z[0] = -inf, so this never steps below the first parabola.
            if s <= z[k] {
                k -= 1;
            } else {
                break;
            }
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        *out = (q as f64 - p as f64).powi(2) + f[p];
    }
    d
}

/// Percentile with linear interpolation between order statistics (NumPy's default).
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn largest_component_and_fill_holes() {
        // A 5×5 ring with a hole, plus a speck in the corner of a 8×8 mask.
        let mut m = super::Mask::new(8, 8);
        for y in 1..6 {
            for x in 1..6 {
                m.data[y * 8 + x] = u8::from(!(x == 3 && y == 3));
            }
        }
        m.data[7 * 8 + 7] = 1;
        let big = m.largest_component();
        assert_eq!(big.area(), 24);
        assert!(!big.get(7, 7));
        let filled = big.fill_holes();
        assert_eq!(filled.area(), 25);
        assert!(filled.get(3, 3));
        // Background touching the border stays background; empty masks stay empty.
        assert!(!filled.get(0, 0));
        assert!(super::Mask::new(4, 3).largest_component().is_empty());
        assert!(super::Mask::new(4, 3).fill_holes().is_empty());
    }

    use super::*;

    #[test]
    fn dice_iou_bbox_contour() {
        let a = Mask::from_fn(4, 4, |i| i % 4 < 2); // left half
        let b = Mask::from_fn(4, 4, |i| i < 8); // top half
        assert_eq!(a.dice(&b).unwrap(), 0.5);
        assert!((a.iou(&b).unwrap() - 4.0 / 12.0).abs() < 1e-12);
        assert_eq!(a.bbox(), Some([0, 0, 1, 3]));
        assert_eq!(Mask::new(3, 3).bbox(), None);
        assert_eq!(Mask::new(3, 3).dice(&Mask::new(3, 3)).unwrap(), 1.0);
        assert!(a.dice(&Mask::new(3, 3)).is_err());
        let full = Mask::from_fn(3, 3, |_| true);
        assert_eq!(full.contour().len(), 8);
        let round = Mask::from_image_bytes(&a.to_png().unwrap()).unwrap();
        assert_eq!(round, a);
    }

    #[test]
    fn hd95_of_shifted_squares() {
        let sq = |x0: usize| Mask::from_fn(40, 40, |i| (10..20).contains(&(i / 40)) && (x0..x0 + 10).contains(&(i % 40)));
        let a = sq(10);
        assert_eq!(a.hd95(&a).unwrap(), Some(0.0));
        let b = sq(13);
        let d = a.hd95(&b).unwrap().unwrap();
        assert!((d - 3.0).abs() < 1e-9, "{d}");
        assert_eq!(a.hd95(&Mask::new(40, 40)).unwrap(), None);
        // Brute-force check of the distance transform.
        let pts = [(3, 4), (30, 7), (12, 33)];
        let dt = distance_to(&pts, 40, 40);
        for y in 0..40 {
            for x in 0..40 {
                let want = pts
                    .iter()
                    .map(|&(px, py)| ((px as f64 - x as f64).powi(2) + (py as f64 - y as f64).powi(2)).sqrt())
                    .fold(f64::INFINITY, f64::min);
                assert!((dt[y * 40 + x] - want).abs() < 1e-9);
            }
        }
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 50.0), 3.0);
    }
}
