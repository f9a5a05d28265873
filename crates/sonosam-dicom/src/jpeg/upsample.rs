//! Chroma upsampling as libjpeg(-turbo) does it by default ("fancy" upsampling): a triangle
//! filter for 2:1 horizontal and/or vertical ratios — 3/4 of the nearer sample and 1/4 of the
//! further, with libjpeg's alternating rounding — and plain replication for other integer
//! ratios. Edge samples are repeated, as libjpeg's context rows repeat the first and last row.

/// One component's samples, `width × height`, row-major.
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub samples: Vec<u8>,
}

impl Plane {
    fn row(&self, y: usize) -> &[u8] {
        &self.samples[y * self.width..(y + 1) * self.width]
    }
}

/// `plane` enlarged `h` × `v` times (each 1–4). Output rows and columns past the image's are
/// computed too; the caller crops.
pub fn upsample(plane: &Plane, h: usize, v: usize) -> Plane {
    let (w, ht) = (plane.width, plane.height);
    let mut out = Plane { width: w * h, height: ht * v, samples: vec![0; w * h * ht * v] };
    for y in 0..ht {
        let row = plane.row(y);
        let above = plane.row(y.saturating_sub(1));
        let below = plane.row((y + 1).min(ht - 1));
        for dy in 0..v {
            let dst = &mut out.samples[(y * v + dy) * w * h..(y * v + dy + 1) * w * h];
            match (h, v) {
                (1, 1) => dst.copy_from_slice(row),
                (2, 1) if w > 2 => h2v1(row, dst),
                (1, 2) => h1v2(row, if dy == 0 { above } else { below }, dy, dst),
                (2, 2) if w > 2 => h2v2(row, if dy == 0 { above } else { below }, dy, dst),
                _ => {
                    for (x, &s) in row.iter().enumerate() {
                        dst[x * h..(x + 1) * h].fill(s);
                    }
                }
            }
        }
    }
    out
}

/// Horizontal 2:1: each sample becomes two, 3/4 itself and 1/4 its left or right neighbour.
fn h2v1(row: &[u8], dst: &mut [u8]) {
    let n = row.len();
    let s = |i: usize| u32::from(row[i]);
    dst[0] = row[0];
    dst[1] = ((s(0) * 3 + s(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let near = s(i) * 3;
        dst[2 * i] = ((near + s(i - 1) + 1) >> 2) as u8;
        dst[2 * i + 1] = ((near + s(i + 1) + 2) >> 2) as u8;
    }
    dst[2 * n - 2] = ((s(n - 1) * 3 + s(n - 2) + 1) >> 2) as u8;
    dst[2 * n - 1] = row[n - 1];
}

/// Vertical 2:1: the upper output row (`dy` 0) leans on the row above, the lower on the row below.
fn h1v2(row: &[u8], other: &[u8], dy: usize, dst: &mut [u8]) {
    let bias = if dy == 0 { 1 } else { 2 };
    for ((d, &a), &b) in dst.iter_mut().zip(row).zip(other) {
        *d = ((u32::from(a) * 3 + u32::from(b) + bias) >> 2) as u8;
    }
}

/// Both 2:1: vertical sums first (3 × this row + the other), then the horizontal triangle, in
/// 1/16ths with libjpeg's rounding (8 and 7, alternating).
fn h2v2(row: &[u8], other: &[u8], _dy: usize, dst: &mut [u8]) {
    let n = row.len();
    let col = |i: usize| u32::from(row[i]) * 3 + u32::from(other[i]);
    let (mut last, mut this) = (col(0), col(0));
    for i in 0..n {
        let next = if i + 1 < n { col(i + 1) } else { this };
        dst[2 * i] = if i == 0 { ((this * 4 + 8) >> 4) as u8 } else { ((this * 3 + last + 8) >> 4) as u8 };
        dst[2 * i + 1] = if i + 1 == n { ((this * 4 + 7) >> 4) as u8 } else { ((this * 3 + next + 7) >> 4) as u8 };
        last = this;
        this = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizontal_triangle_with_libjpegs_rounding() {
        let p = Plane { width: 3, height: 1, samples: vec![0, 100, 201] };
        let out = upsample(&p, 2, 1);
        // 0 | (0·3+100+2)/4=25 | (300+0+1)/4=75 | (300+201+2)/4=125 | (603+100+1)/4=176 | 201
        assert_eq!(out.samples, vec![0, 25, 75, 125, 176, 201]);
    }

    #[test]
    fn narrow_rows_and_other_ratios_replicate() {
        let p = Plane { width: 2, height: 1, samples: vec![10, 20] };
        assert_eq!(upsample(&p, 2, 1).samples, vec![10, 10, 20, 20]);
        let p = Plane { width: 1, height: 1, samples: vec![7] };
        assert_eq!(upsample(&p, 4, 1).samples, vec![7; 4]);
    }

    #[test]
    fn vertical_and_both() {
        let p = Plane { width: 1, height: 2, samples: vec![0, 100] };
        // Row 0: up (0·3+0+1)/4=0, down (0+100+2)/4=25; row 1: up (300+0+1)/4=75, down (300+100+2)/4=100.
        assert_eq!(upsample(&p, 1, 2).samples, vec![0, 25, 75, 100]);
        let p = Plane { width: 3, height: 1, samples: vec![16, 16, 16] };
        assert_eq!(upsample(&p, 2, 2).samples, vec![16; 12], "flat stays flat");
    }
}
