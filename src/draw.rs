//! Drawing on canvases: layers of pixels (the image; a mask's fill or contour in one colour)
//! that are drawn onto the visible canvas with the user's opacity, and vector strokes for
//! boxes, points, calipers and the fitted ellipse and convex hull.

use sonosam_model::measure::descriptors::ShapeGeometry;
use sonosam_model::measure::{Caliper, Measurements};
use sonosam_model::overlay::MASK_COLORS;
use sonosam_model::{Mask, PointLabel, Prompt};
use wasm_bindgen::{Clamped, JsCast, JsValue};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData};

/// Colour of object `i`.
pub fn object_color(i: usize) -> [u8; 3] {
    MASK_COLORS[i % MASK_COLORS.len()]
}

fn css([r, g, b]: [u8; 3]) -> String {
    format!("rgb({r},{g},{b})")
}

/// A canvas of `w × h` that is not in the page (a layer drawn onto the visible canvas).
fn offscreen(w: usize, h: usize) -> Result<HtmlCanvasElement, JsValue> {
    let doc = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let canvas: HtmlCanvasElement = doc.create_element("canvas")?.dyn_into()?;
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    Ok(canvas)
}

/// The 2-D context of `canvas`.
pub fn context_2d(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten()?.dyn_into().ok()
}

/// A layer holding RGBA pixels (`w × h`).
pub fn pixel_layer(rgba: &[u8], w: usize, h: usize) -> Result<HtmlCanvasElement, JsValue> {
    let canvas = offscreen(w, h)?;
    let data = ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), w as u32, h as u32)?;
    context_2d(&canvas).ok_or("no 2-D context")?.put_image_data(&data, 0, 0)?;
    Ok(canvas)
}

/// A layer with `mask` in opaque `color` — its pixels, or only its contour — and transparent
/// elsewhere; drawn with the user's opacity for a fill.
pub fn mask_layer(mask: &Mask, color: [u8; 3], contour_only: bool) -> Result<HtmlCanvasElement, JsValue> {
    let mut rgba = vec![0u8; mask.width * mask.height * 4];
    let mut paint = |i: usize| rgba[4 * i..4 * i + 4].copy_from_slice(&[color[0], color[1], color[2], 255]);
    if contour_only {
        mask.contour().into_iter().for_each(|(x, y)| paint(y * mask.width + x));
    } else {
        mask.data.iter().enumerate().filter(|(_, m)| **m != 0).for_each(|(i, _)| paint(i));
    }
    pixel_layer(&rgba, mask.width, mask.height)
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
    label_with_halo(ctx, label, c.to[0] + 6.0 * scale, c.to[1], scale);
}

/// Text in the current fill colour with a dark halo, legible on the image and on any mask.
fn label_with_halo(ctx: &CanvasRenderingContext2d, text: &str, x: f64, y: f64, scale: f64) {
    ctx.save();
    ctx.set_stroke_style_str("rgba(0,0,0,0.85)");
    ctx.set_line_width(3.5 * scale);
    ctx.set_line_join("round");
    let _ = ctx.stroke_text(text, x, y);
    ctx.restore();
    let _ = ctx.fill_text(text, x, y);
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

/// Draw a lesion's fitted ellipse (dashed) and convex hull (dotted).
pub fn draw_shape(ctx: &CanvasRenderingContext2d, g: &ShapeGeometry, color: [u8; 3], scale: f64) {
    ctx.set_stroke_style_str(&css(color));
    ctx.set_line_width(1.5 * scale);
    let dash = |a: f64, b: f64| {
        let _ = ctx.set_line_dash(&js_sys::Array::of2(&(a * scale).into(), &(b * scale).into()));
    };
    dash(8.0, 4.0);
    let e = &g.ellipse;
    ctx.begin_path();
    let _ = ctx.ellipse(e.centre[0], e.centre[1], e.semi_major, e.semi_minor, e.angle_deg.to_radians(), 0.0, std::f64::consts::TAU);
    ctx.stroke();
    dash(2.0, 3.0);
    ctx.begin_path();
    for (k, p) in g.hull.iter().enumerate() {
        if k == 0 { ctx.move_to(p[0], p[1]) } else { ctx.line_to(p[0], p[1]) }
    }
    ctx.close_path();
    ctx.stroke();
    let _ = ctx.set_line_dash(&js_sys::Array::new());
}

/// The marks picked on the depth ruler (manual calibration) and the segment between them.
pub fn draw_ruler(ctx: &CanvasRenderingContext2d, points: &[(f64, f64)], scale: f64) {
    ctx.set_stroke_style_str("rgb(255,0,255)");
    ctx.set_line_width(2.0 * scale);
    if let [a, b] = points {
        ctx.begin_path();
        ctx.move_to(a.0, a.1);
        ctx.line_to(b.0, b.1);
        ctx.stroke();
    }
    for p in points {
        let r = 5.0 * scale;
        ctx.begin_path();
        ctx.move_to(p.0 - r, p.1);
        ctx.line_to(p.0 + r, p.1);
        ctx.move_to(p.0, p.1 - r);
        ctx.line_to(p.0, p.1 + r);
        ctx.stroke();
    }
}
