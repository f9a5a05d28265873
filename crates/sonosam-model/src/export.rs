//! Exporting segmentations: COCO run-length encoding (the compressed string form of
//! pycocotools), outer-boundary polygons, and a COCO-style JSON document with every object and
//! its measurements. Shared by the browser app and the CLI.

use serde_json::{Value, json};

use crate::mask::Mask;
use crate::measure::Measurements;
use crate::measure::outline::trace_from;

/// Uncompressed COCO RLE counts: run lengths in column-major order, starting with a
/// (possibly empty) run of background.
pub fn rle_counts(mask: &Mask) -> Vec<u32> {
    let mut counts = Vec::new();
    let (mut current, mut run) = (0u8, 0u32);
    for x in 0..mask.width {
        for y in 0..mask.height {
            let v = u8::from(mask.get(x, y));
            if v != current {
                counts.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

/// pycocotools' compressed RLE string (`rleToString`): differences of counts from the count
/// two before (from the third on), 5-bit groups with a continuation bit, offset by 48.
pub fn rle_to_string(counts: &[u32]) -> String {
    let mut s = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = i64::from(c);
        if i > 2 {
            x -= i64::from(counts[i - 2]);
        }
        loop {
            let mut c = (x & 0x1f) as u8;
            x >>= 5;
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            s.push((c + 48) as char);
            if !more {
                break;
            }
        }
    }
    s
}

/// Decode pycocotools' compressed RLE string into counts.
pub fn rle_from_string(s: &str) -> Option<Vec<u32>> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k) = (0i64, 0);
        loop {
            let c = i64::from(bytes.get(p)?.checked_sub(48)?);
            x |= (c & 0x1f) << (5 * k);
            let more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1 << (5 * k);
                }
                break;
            }
        }
        if counts.len() > 2 {
            x += i64::from(counts[counts.len() - 2]);
        }
        counts.push(u32::try_from(x).ok()?);
    }
    Some(counts)
}

/// Rebuild a mask from column-major counts.
pub fn mask_from_rle(counts: &[u32], width: usize, height: usize) -> Option<Mask> {
    let mut mask = Mask::new(width, height);
    let mut i = 0usize;
    for (k, &c) in counts.iter().enumerate() {
        for _ in 0..c {
            if i >= width * height {
                return None;
            }
            if k % 2 == 1 {
                let (x, y) = (i / height, i % height);
                mask.data[y * width + x] = 1;
            }
            i += 1;
        }
    }
    (i == width * height).then_some(mask)
}

/// The outer boundary of every 8-connected component (Moore-neighbour tracing of pixel
/// centres, [`trace_from`]), as COCO polygons `[x0, y0, x1, y1, …]`. Components smaller than `min_area`
/// pixels are left out.
pub fn polygons(mask: &Mask, min_area: usize) -> Vec<Vec<f64>> {
    let (w, h) = (mask.width as i64, mask.height as i64);
    let on = |x: i64, y: i64| x >= 0 && y >= 0 && x < w && y < h && mask.get(x as usize, y as usize);
    let mut label = vec![0u32; mask.data.len()];
    let mut out = Vec::new();
    let mut next = 0u32;
    // Clockwise neighbours starting west.
    const DIRS: [(i64, i64); 8] = [(-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1)];
    for start in 0..mask.data.len() {
        if mask.data[start] == 0 || label[start] != 0 {
            continue;
        }
        // Flood-fill the component (raster order guarantees `start` is its top-left pixel).
        next += 1;
        let mut stack = vec![start];
        label[start] = next;
        let mut area = 0;
        while let Some(i) = stack.pop() {
            area += 1;
            let (x, y) = ((i % mask.width) as i64, (i / mask.width) as i64);
            for (dx, dy) in DIRS {
                let (nx, ny) = (x + dx, y + dy);
                if on(nx, ny) {
                    let j = (ny * w + nx) as usize;
                    if label[j] == 0 {
                        label[j] = next;
                        stack.push(j);
                    }
                }
            }
        }
        if area < min_area.max(1) {
            continue;
        }
        let s = ((start % mask.width) as i64, (start / mask.width) as i64);
        let current = next;
        let boundary = trace_from(s, area, |(x, y)| on(x, y) && label[(y * w + x) as usize] == current);
        let poly: Vec<f64> = boundary.iter().flat_map(|&(x, y)| [x as f64, y as f64]).collect();
        out.push(poly);
    }
    out
}

/// One segmented object for export.
#[derive(Debug, Clone)]
pub struct ExportObject<'a> {
    pub name: String,
    pub mask: &'a Mask,
    /// Predicted IoU of the chosen mask.
    pub score: f32,
    pub measurements: Option<Measurements>,
    /// Where the measurements' millimetres come from (`source`, `region`, `mm_per_px`,
    /// `note`), when known.
    pub calibration: Option<Value>,
}

/// COCO-style JSON (one image, category "lesion") with, per object: compressed RLE
/// `segmentation`, `polygon`, `bbox` `[x, y, w, h]`, `area`, `score` and `measurements`.
pub fn coco_json(file_name: &str, width: usize, height: usize, objects: &[ExportObject]) -> Value {
    let annotations: Vec<Value> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let bbox = o
                .mask
                .bbox()
                .map(|[x0, y0, x1, y1]| json!([x0, y0, x1 - x0 + 1, y1 - y0 + 1]))
                .unwrap_or(json!([0, 0, 0, 0]));
            json!({
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "name": o.name,
                "iscrowd": 0,
                "area": o.mask.area(),
                "bbox": bbox,
                "segmentation": {
                    "size": [height, width],
                    "counts": rle_to_string(&rle_counts(o.mask)),
                },
                "polygon": polygons(o.mask, 4),
                "score": o.score,
                "measurements": o.measurements,
                "calibration": o.calibration,
            })
        })
        .collect();
    json!({
        "info": { "description": "sonosam segmentation", "version": env!("CARGO_PKG_VERSION") },
        "images": [{ "id": 1, "file_name": file_name, "width": width, "height": height }],
        "categories": [{ "id": 1, "name": "lesion" }],
        "annotations": annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_round_trip() {
        let m = Mask::disc(37, 23, 15.0, 11.0, 8.0);
        let counts = rle_counts(&m);
        assert_eq!(counts.iter().sum::<u32>() as usize, 37 * 23);
        let s = rle_to_string(&counts);
        assert_eq!(rle_from_string(&s).unwrap(), counts);
        assert_eq!(mask_from_rle(&counts, 37, 23).unwrap(), m);
    }

    #[test]
    fn rle_matches_pycocotools() {
        // Expected strings from pycocotools.mask.encode (2.0.x) on the same arrays.
        let mut m = Mask::new(3, 3);
        for y in 0..3 {
            m.data[y * 3 + 1] = 1;
        }
        assert_eq!(rle_counts(&m), vec![3, 3, 3]);
        assert_eq!(rle_to_string(&[3, 3, 3]), "333");
        // Larger counts use continuation groups: a 100×1 background column.
        assert_eq!(rle_to_string(&[100]), "T3");
        assert_eq!(rle_from_string("T3").unwrap(), vec![100]);
        // A disc of radius 6 at (20, 15) in a 40×30 image.
        let d = Mask::disc(40, 30, 20.0, 15.0, 6.0);
        assert_eq!(rle_to_string(&rle_counts(&d)), "c=1j06L2N2O000O20N10001N2N4Jj;");
        // Leading foreground: a zero-length background run first.
        let full = Mask::from_fn(2, 2, |_| true);
        assert_eq!(rle_counts(&full), vec![0, 4]);
    }

    #[test]
    fn polygon_traces_outer_boundary() {
        let m = Mask::from_fn(10, 10, |i| (2..=6).contains(&(i % 10)) && (3..=5).contains(&(i / 10)));
        let polys = polygons(&m, 1);
        assert_eq!(polys.len(), 1);
        let p = &polys[0];
        let pts: Vec<(f64, f64)> = p.chunks(2).map(|c| (c[0], c[1])).collect();
        // Perimeter pixels of a 5×3 block: 5 + 5 + 1 + 1 = 12.
        assert_eq!(pts.len(), 12, "{pts:?}");
        assert!(pts.contains(&(2.0, 3.0)) && pts.contains(&(6.0, 5.0)));
        // Two components, one below the area threshold.
        let mut two = m.clone();
        two.data[99] = 1;
        assert_eq!(polygons(&two, 1).len(), 2);
        assert_eq!(polygons(&two, 4).len(), 1);
    }

    #[test]
    fn coco_document() {
        let m = Mask::disc(40, 30, 20.0, 15.0, 6.0);
        let meas = crate::measure::measure(&m, Some(0.2));
        let doc = coco_json("x.png", 40, 30, &[ExportObject { name: "lesion 1".into(), mask: &m, score: 0.9, measurements: meas, calibration: None }]);
        let a = &doc["annotations"][0];
        assert_eq!(a["area"], m.area());
        assert_eq!(a["segmentation"]["size"], json!([30, 40]));
        let counts = rle_from_string(a["segmentation"]["counts"].as_str().unwrap()).unwrap();
        assert_eq!(mask_from_rle(&counts, 40, 30).unwrap(), m);
        assert!(a["measurements"]["long_axis"]["length_px"].as_f64().unwrap() > 12.0);
    }
}
