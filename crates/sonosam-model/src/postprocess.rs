//! From low-resolution logits to a mask at the original resolution: (upsample to the frame if
//! the logits are smaller than it,) crop to the resized extent, bilinear upsampling
//! (`align_corners = false`, as PyTorch's `F.interpolate`) to the original size, threshold at 0.

use crate::mask::Mask;
use crate::preprocess::Geometry;

/// PyTorch's bilinear resize (`align_corners = false`) of a single-channel `src` (`sh × sw`)
/// restricted to its top-left `ch × cw` crop, to `dh × dw`.
pub fn bilinear_crop_resize(
    src: &[f32],
    sw: usize,
    ch: usize,
    cw: usize,
    dh: usize,
    dw: usize,
) -> Vec<f32> {
    let axis = |inp: usize, out: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (s as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let xs = axis(cw, dw);
    let ys = axis(ch, dh);
    let mut out = vec![0f32; dh * dw];
    for (y, &(y0, y1, ly)) in ys.iter().enumerate() {
        let (r0, r1) = (&src[y0 * sw..], &src[y1 * sw..]);
        for (x, &(x0, x1, lx)) in xs.iter().enumerate() {
            let top = (1.0 - lx) * r0[x0] + lx * r0[x1];
            let bottom = (1.0 - lx) * r1[x0] + lx * r1[x1];
            out[y * dw + x] = (1.0 - ly) * top + ly * bottom;
        }
    }
    out
}

/// Low-res logits (`lr × lr`, row-major) → logits at the original resolution.
pub fn upscale_logits(low_res: &[f32], lr: usize, g: &Geometry) -> Vec<f32> {
    assert_eq!(low_res.len(), lr * lr, "low-res logits must be {lr}×{lr}");
    if g.frame == lr {
        bilinear_crop_resize(low_res, lr, g.new_h, g.new_w, g.orig_h, g.orig_w)
    } else {
        // SAM (1024 frame): logits go to the frame first, then crop and resize.
        let framed = bilinear_crop_resize(low_res, lr, lr, lr, g.frame, g.frame);
        bilinear_crop_resize(&framed, g.frame, g.new_h, g.new_w, g.orig_h, g.orig_w)
    }
}

/// Low-res logits → binary mask at the original resolution (`logit > 0`).
pub fn logits_to_mask(low_res: &[f32], lr: usize, g: &Geometry) -> Mask {
    let logits = upscale_logits(low_res, lr, g);
    Mask::from_fn(g.orig_w, g.orig_h, |i| logits[i] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_is_exact() {
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(bilinear_crop_resize(&src, 4, 4, 4, 4, 4), src);
    }

    #[test]
    fn upsampling_matches_pytorch_half_pixel_rule() {
        // F.interpolate([[0, 1]], size=4, mode="bilinear", align_corners=False) → 0, .25, .75, 1
        let src = [0.0, 1.0, 0.0, 1.0];
        let out = bilinear_crop_resize(&src, 2, 2, 2, 2, 4);
        assert_eq!(&out[..4], &[0.0, 0.25, 0.75, 1.0]);
    }
}
