//! Drawing the image and its annotations on a canvas: masks blended into the pixels (fill with
//! the user's opacity, opaque contour), ground truth as a green contour, then boxes, points and
//! calipers as vector strokes.

use sonosam_model::measure::{Caliper, Measurements};
use sonosam_model::overlay::MASK_COLORS;
use sonosam_model::{Mask, PointLabel, Prompt};
use wasm_bindgen::{Clamped, JsValue};
use web_sys::{CanvasRenderingContext2d, ImageData};

/// Colour of object `i`.
pub fn object_color(i: usize) -> [u8; 3] {
    MASK_COLORS[i % MASK_COLORS.len()]
}

fn css([r, g, b]: [u8; 3]) -> String {
    format!("rgb({r},{g},{b})")
}

/// One mask layer to blend.
pub struct Layer<'a> {
    pub mask: &'a Mask,
    pub color: [u8; 3],
    /// Fill opacity (0 = contour only).
    pub alpha: f32,
    pub contour: bool,
}

/// Blend `layers` into RGBA pixels (`rgba` is the image, `w × h`).
pub fn compose(rgba: &[u8], w: usize, h: usize, layers: &[Layer]) -> Vec<u8> {
    let mut out = rgba.to_vec();
    for l in layers {
        if (l.mask.width, l.mask.height) != (w, h) {
            continue;
        }
        if l.alpha > 0.0 {
            for (i, &m) in l.mask.data.iter().enumerate() {
                if m != 0 {
                    for c in 0..3 {
                        let p = &mut out[4 * i + c];
                        *p = (f32::from(*p) * (1.0 - l.alpha) + f32::from(l.color[c]) * l.alpha) as u8;
                    }
                }
            }
        }
        if l.contour {
            for (x, y) in l.mask.contour() {
                let i = 4 * (y * w + x);
                out[i..i + 3].copy_from_slice(&l.color);
            }
        }
    }
    out
}

/// Put RGBA pixels on the canvas.
pub fn put_pixels(ctx: &CanvasRenderingContext2d, rgba: &[u8], w: usize, h: usize) -> Result<(), JsValue> {
    let data = ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), w as u32, h as u32)?;
    ctx.put_image_data(&data, 0, 0)
}

/// Stroke a box, with `scale` = image pixels per screen pixel (lines stay visible when zoomed).
pub fn draw_box(ctx: &CanvasRenderingContext2d, b: [f32; 4], color: &str, scale: f64, dashed: bool) {
    ctx.set_stroke_style_str(color);
    ctx.set_line_width(2.0 * scale);
    if dashed {
        let dash = js_sys::Array::of2(&(6.0 * scale).into(), &(4.0 * scale).into());
        let _ = ctx.set_line_dash(&dash);
    }
    ctx.stroke_rect(
        f64::from(b[0]),
        f64::from(b[1]),
        f64::from(b[2] - b[0]),
        f64::from(b[3] - b[1]),
    );
    let _ = ctx.set_line_dash(&js_sys::Array::new());
}

/// Draw the points of `prompt` (green positive, red negative, white ring).
pub fn draw_points(ctx: &CanvasRenderingContext2d, prompt: &Prompt, scale: f64) {
    for p in &prompt.points {
        let color = match p.label {
            PointLabel::Positive => "rgb(0,200,0)",
            PointLabel::Negative => "rgb(230,0,0)",
        };
        ctx.begin_path();
        let _ = ctx.arc(f64::from(p.x), f64::from(p.y), 5.0 * scale, 0.0, std::f64::consts::TAU);
        ctx.set_fill_style_str(color);
        ctx.fill();
        ctx.set_stroke_style_str("white");
        ctx.set_line_width(1.5 * scale);
        ctx.stroke();
    }
}

fn caliper(ctx: &CanvasRenderingContext2d, c: &Caliper, label: &str, scale: f64) {
    ctx.begin_path();
    ctx.move_to(c.from[0], c.from[1]);
    ctx.line_to(c.to[0], c.to[1]);
    ctx.stroke();
    // End ticks: small crosses, as on an ultrasound console.
    for p in [c.from, c.to] {
        let r = 4.0 * scale;
        ctx.begin_path();
        ctx.move_to(p[0] - r, p[1] - r);
        ctx.line_to(p[0] + r, p[1] + r);
        ctx.move_to(p[0] - r, p[1] + r);
        ctx.line_to(p[0] + r, p[1] - r);
        ctx.stroke();
    }
    let _ = ctx.fill_text(label, c.to[0] + 6.0 * scale, c.to[1]);
}

/// Draw both calipers of `m` with their lengths.
pub fn draw_calipers(ctx: &CanvasRenderingContext2d, m: &Measurements, color: [u8; 3], scale: f64) {
    ctx.set_stroke_style_str(&css(color));
    ctx.set_fill_style_str(&css(color));
    ctx.set_line_width(1.5 * scale);
    ctx.set_font(&format!("{}px sans-serif", (13.0 * scale).round()));
    let len = |px: f64, mm: Option<f64>| match mm {
        Some(v) => format!("{v:.1} mm"),
        None => format!("{px:.0} px"),
    };
    caliper(ctx, &m.long_axis, &len(m.long_axis.length_px, m.long_mm()), scale);
    caliper(ctx, &m.short_axis, &len(m.short_axis.length_px, m.short_mm()), scale);
}
