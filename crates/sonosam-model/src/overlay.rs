//! Overlay rendering: the image, each mask filled semi-transparently with its contour, the box
//! and the clicked points (green positive, red negative) — as MedSAM's `show_mask`/`show_box`.

use image::{Rgb, RgbImage};

use crate::mask::Mask;
use crate::prompt::{PointLabel, Prompt};

/// Fill colours of successive masks (MedSAM yellow first).
/// Lesion colours: the Okabe–Ito palette's, told apart with every common colour-vision
/// deficiency (orange, sky blue, bluish green, reddish purple, vermillion, blue).
pub const MASK_COLORS: [[u8; 3]; 6] = [
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [204, 121, 167],
    [213, 94, 0],
    [0, 114, 178],
];
const BOX_COLOR: [u8; 3] = [0, 120, 255];
const POSITIVE: [u8; 3] = [0, 200, 0];
const NEGATIVE: [u8; 3] = [230, 0, 0];

/// Draw `masks` and the prompt (original-pixel coordinates) over `image`.
pub fn render_overlay(image: &RgbImage, masks: &[Mask], prompt: &Prompt, alpha: f32) -> RgbImage {
    let mut out = image.clone();
    let (w, h) = (out.width() as usize, out.height() as usize);
    for (k, mask) in masks.iter().enumerate() {
        if (mask.width, mask.height) != (w, h) {
            continue;
        }
        let color = MASK_COLORS[k % MASK_COLORS.len()];
        for y in 0..h {
            for x in 0..w {
                if mask.get(x, y) {
                    let p = out.get_pixel_mut(x as u32, y as u32);
                    for c in 0..3 {
                        p.0[c] = (f32::from(p.0[c]) * (1.0 - alpha) + f32::from(color[c]) * alpha)
                            .round() as u8;
                    }
                }
            }
        }
        // The contour in the full, opaque colour stands out against the blended fill.
        for (x, y) in mask.contour() {
            out.put_pixel(x as u32, y as u32, Rgb(color));
        }
    }
    let thickness = (w.max(h) / 300).max(2) as i64;
    if let Some([x0, y0, x1, y1]) = prompt.bbox {
        draw_rect(&mut out, x0, y0, x1, y1, thickness, BOX_COLOR);
    }
    let radius = (w.max(h) as f32 / 120.0).max(4.0);
    for p in &prompt.points {
        let color = match p.label {
            PointLabel::Positive => POSITIVE,
            PointLabel::Negative => NEGATIVE,
        };
        draw_disc(&mut out, p.x, p.y, radius + 1.5, [255, 255, 255]);
        draw_disc(&mut out, p.x, p.y, radius, color);
    }
    out
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(color));
    }
}

fn draw_rect(img: &mut RgbImage, x0: f32, y0: f32, x1: f32, y1: f32, t: i64, color: [u8; 3]) {
    let (x0, y0, x1, y1) = (
        x0.round() as i64,
        y0.round() as i64,
        x1.round() as i64,
        y1.round() as i64,
    );
    for d in 0..t {
        for x in x0 - d..=x1 + d {
            put(img, x, y0 - d, color);
            put(img, x, y1 + d, color);
        }
        for y in y0 - d..=y1 + d {
            put(img, x0 - d, y, color);
            put(img, x1 + d, y, color);
        }
    }
}

fn draw_disc(img: &mut RgbImage, cx: f32, cy: f32, r: f32, color: [u8; 3]) {
    let ri = r.ceil() as i64;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if (dx * dx + dy * dy) as f32 <= r * r {
                put(img, cx.round() as i64 + dx, cy.round() as i64 + dy, color);
            }
        }
    }
}
