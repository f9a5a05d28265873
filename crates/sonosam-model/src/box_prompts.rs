//! Box prompts made from masks, as evaluation and training simulate people drawing boxes:
//! the tight box of a lesion, and boxes pushed outwards — by a fixed amount (an ensemble of
//! looser boxes) or at random (jitter, as in MedSAM's training). Frame boxes are in the model
//! frame (see [`Geometry::box_to_frame`]).

use crate::mask::Mask;
use crate::preprocess::Geometry;
use crate::rng::Rng;

/// The tight box `[x0, y0, x1, y1]` of a mask in original pixels, if it has any foreground.
pub fn tight_box(mask: &Mask) -> Option<[f32; 4]> {
    mask.bbox()
        .map(|[x0, y0, x1, y1]| [x0 as f32, y0 as f32, x1 as f32, y1 as f32])
}

/// Push each side of a frame box outwards by `U[0, max_px)` pixels, clipped to the resized
/// image extent. `max_px = 0` returns the box unchanged.
pub fn jitter_box(b: [f32; 4], max_px: f32, g: &Geometry, rng: &mut Rng) -> [f32; 4] {
    if max_px <= 0.0 {
        return b;
    }
    let mut d = || rng.uniform(0.0, f64::from(max_px)) as f32;
    grow_box(b, [d(), d(), d(), d()], g)
}

/// Push the sides of a frame box `[x0, y0, x1, y1]` outwards by `by` pixels (left, top, right,
/// bottom), clipped to the resized image extent.
pub fn grow_box(b: [f32; 4], by: [f32; 4], g: &Geometry) -> [f32; 4] {
    let (w, h) = ((g.new_w - 1) as f32, (g.new_h - 1) as f32);
    [(b[0] - by[0]).max(0.0), (b[1] - by[1]).max(0.0), (b[2] + by[2]).min(w), (b[3] + by[3]).min(h)]
}
