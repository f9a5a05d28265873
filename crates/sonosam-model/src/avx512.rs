//! The native matrix product on x86-64 CPUs with AVX-512: `C = A · B` (row-major), blocked for
//! the encoder's shapes (`m` 64…65 536, `k` 64…2 304, `n` 64…65 536).
//!
//! The `gemm` crate's AVX-512 kernel ran these products at 36–43 GFLOP/s per core on the AMD
//! EPYC machine kind, whose cores peak at 117 GFLOP/s (two 256-bit FMA pipes; a 512-bit FMA
//! uses both). This one keeps a 6 × 64 tile of `C` in 24 registers; per step of `k` it loads 4
//! vectors of `B` from a packed panel and broadcasts 6 values of `A`, read in place.
//!
//! Blocking: `k` in blocks of [`KC`]; per block, `B`'s rows are packed into panels of
//! `[KC][64]` (the last one zero-padded), [`NC`] columns at a time so they stay in L2 while
//! every 6-row band of `A` sweeps them.

use std::arch::x86_64::*;

/// Rows of `C` per tile.
const MR: usize = 6;
/// Columns of `C` per tile (4 vectors of 16).
const NR: usize = 64;
/// Depth of a block of `k`: one tile's 6 rows of `A` (6 KiB) stay in L1.
const KC: usize = 256;
/// Columns per group of packed panels: `KC × NC` floats (256 KiB) stay in L2.
const NC: usize = 256;

/// Whether this CPU runs [`product`].
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// A's rows: `a[i * lda + p]` is `A[i, p]`.
/// B: `b[p * b_rs + j * b_cs]` is `B[p, j]`.
#[derive(Clone, Copy)]
pub struct Operands<'a> {
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a [f32],
    pub b_rs: usize,
    pub b_cs: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// `c = A · B` (`c`: `m × n`, row-major, written), then `finish(i, j0, values)` on each
/// stretch of row `i` of `c` from column `j0`, while it is still in cache. With `threads`, on
/// rayon's pool: groups of columns when there are many (each thread packs its own panels: the
/// 1×1 convolutions, `n` = pixels), else bands of rows against panels packed once.
pub fn product<F>(ops: Operands, c: &mut [f32], threads: bool, finish: &F)
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    assert!(available(), "avx512::product needs AVX-512F");
    let Operands { m, k, n, .. } = ops;
    assert!(ops.a.len() >= (m - 1) * ops.lda + k && ops.lda >= k, "avx512::product: A");
    assert!(ops.b.len() > (k - 1) * ops.b_rs + (n - 1) * ops.b_cs, "avx512::product: B");
    assert_eq!(c.len(), m * n, "avx512::product: C");
    let out = Out(c.as_mut_ptr());
    let groups = n.div_ceil(NC);
    let threads = threads && m * n * k >= PARALLEL_MIN;
    if threads && groups >= 8 * pool_size() {
        for_each(groups, |g| {
            let mut packed = Vec::new();
            for k0 in (0..k).step_by(KC) {
                let block = Block::new(ops, k0, g * NC, &mut packed);
                (0..m.div_ceil(MR)).for_each(|band| block.band(out, band, finish));
            }
        });
        return;
    }
    let mut packed = Vec::new();
    for k0 in (0..k).step_by(KC) {
        for g in 0..groups {
            let block = Block::new(ops, k0, g * NC, &mut packed);
            let band = |band| block.band(out, band, finish);
            if threads { for_each(m.div_ceil(MR), band) } else { (0..m.div_ceil(MR)).for_each(band) }
        }
    }
}

/// Products smaller than this (`m · n · k`) run on one thread.
const PARALLEL_MIN: usize = 192 * 192 * 192;

/// `C`'s values, shared by the tasks, which write disjoint tiles.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes its own tiles of `C` (distinct bands, or distinct column groups).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

#[cfg(feature = "threads")]
fn pool_size() -> usize {
    rayon::current_num_threads()
}

#[cfg(not(feature = "threads"))]
fn pool_size() -> usize {
    1
}

/// `work(0 .. count)` on the pool.
fn for_each(count: usize, work: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        (0..count).into_par_iter().for_each(work);
    }
    #[cfg(not(feature = "threads"))]
    (0..count).for_each(work);
}

/// One block of `k` (`k0 .. k0 + kc`) and of columns (`j0 .. j0 + nc`), `B` packed.
struct Block<'a> {
    ops: Operands<'a>,
    packed: &'a [f32],
    k0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
}

impl<'a> Block<'a> {
    fn new(ops: Operands<'a>, k0: usize, j0: usize, packed: &'a mut Vec<f32>) -> Self {
        let (kc, nc) = (KC.min(ops.k - k0), NC.min(ops.n - j0));
        pack(ops, k0, kc, j0, nc, packed);
        Self { ops, packed, k0, kc, j0, nc }
    }

    /// Rows `band · 6 ..` (up to 6) of `C` against every panel of the block; the last block
    /// of `k` finishes them.
    fn band<F: Fn(usize, usize, &mut [f32])>(&self, out: Out, band: usize, finish: &F) {
        let Operands { m, n, k, .. } = self.ops;
        let (i0, last) = (band * MR, self.k0 + self.kc == k);
        let rows = MR.min(m - i0);
        // SAFETY: rows `i0 .. i0 + rows`, columns `j0 .. j0 + nc` of `C` belong to this task.
        let row = |r: usize, j: usize, len: usize| unsafe {
            std::slice::from_raw_parts_mut(out.0.add((i0 + r) * n + j), len)
        };
        // SAFETY: AVX-512F checked by `product`; the tile's values are within `C`.
        unsafe { self.tiles(i0, rows, out.0.add(i0 * n)) };
        if last {
            for r in 0..rows {
                finish(i0 + r, self.j0, row(r, self.j0, self.nc));
            }
        }
    }

    /// `C[i0 .. i0 + rows, j0 .. j0 + nc] (+)= A · B` for this block (overwritten in the first
    /// block of `k`); `c` points at row `i0`, column 0.
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles(&self, i0: usize, rows: usize, c: *mut f32) {
        let (ops, n, first) = (self.ops, self.ops.n, self.k0 == 0);
        // Rows past the end of A repeat its last row; their results are not stored.
        let a: [*const f32; MR] = std::array::from_fn(|r| ops.a[(i0 + r.min(rows - 1)) * ops.lda + self.k0..].as_ptr());
        for (q, panel) in self.packed.chunks_exact(self.kc * NR).enumerate() {
            let (j, width) = (self.j0 + q * NR, NR.min(self.nc - q * NR));
            if rows == MR && width == NR {
                unsafe { tile(a, panel.as_ptr(), self.kc, c.wrapping_add(j), n, first) };
                continue;
            }
            let mut t = [0f32; MR * NR];
            for r in 0..rows {
                let at = c.wrapping_add(r * n + j);
                if !first {
                    unsafe { std::ptr::copy_nonoverlapping(at, t[r * NR..].as_mut_ptr(), width) };
                }
            }
            unsafe { tile(a, panel.as_ptr(), self.kc, t.as_mut_ptr(), NR, first) };
            for r in 0..rows {
                unsafe { std::ptr::copy_nonoverlapping(t[r * NR..].as_ptr(), c.wrapping_add(r * n + j), width) };
            }
        }
    }
}

/// Pack `B[k0 .. k0+kc, j0 .. j0+nc]` into panels `[kc][NR]`, zero-padded to a whole panel.
fn pack(ops: Operands, k0: usize, kc: usize, j0: usize, nc: usize, packed: &mut Vec<f32>) {
    let panels = nc.div_ceil(NR);
    packed.clear();
    packed.resize(panels * kc * NR, 0.0);
    for (q, panel) in packed.chunks_exact_mut(kc * NR).enumerate() {
        let (ja, width) = (j0 + q * NR, NR.min(nc - q * NR));
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            let from = (k0 + p) * ops.b_rs + ja * ops.b_cs;
            if ops.b_cs == 1 {
                row[..width].copy_from_slice(&ops.b[from..from + width]);
            } else {
                for (j, v) in row[..width].iter_mut().enumerate() {
                    *v = ops.b[from + j * ops.b_cs];
                }
            }
        }
    }
}

/// `C[6 × 64] (+)= A[6 × kc] · panel[kc × 64]`; `c` with row stride `ldc`, overwritten when `first`.
/// The 24 accumulators are named locals (an array of them was kept in memory, stored back after
/// every multiply-add); pointers move by `wrapping_add` and values load by intrinsics, so a
/// build with debug assertions adds no precondition checks to the loop.
#[target_feature(enable = "avx512f")]
unsafe fn tile(a: [*const f32; MR], b: *const f32, kc: usize, c: *mut f32, ldc: usize, first: bool) {
    let at = |r: usize, v: usize| c.wrapping_add(r * ldc + v * 16);
    let start = |r: usize, v: usize| {
        // SAFETY: `c` holds 6 rows of 64 values at stride `ldc` (caller).
        if first { _mm512_setzero_ps() } else { unsafe { _mm512_loadu_ps(at(r, v)) } }
    };
    macro_rules! tile_rows {
        ($([$r:literal, $a:ident, $c0:ident, $c1:ident, $c2:ident, $c3:ident]),*) => {
            $(let (mut $c0, mut $c1, mut $c2, mut $c3) = (start($r, 0), start($r, 1), start($r, 2), start($r, 3));
              let mut $a = a[$r];)*
            let mut b = b;
            for _ in 0..kc {
                // SAFETY: the panel holds `kc` rows of 64 values, each row of A `kc` values.
                let (b0, b1, b2, b3) = unsafe {(
                    _mm512_loadu_ps(b),
                    _mm512_loadu_ps(b.wrapping_add(16)),
                    _mm512_loadu_ps(b.wrapping_add(32)),
                    _mm512_loadu_ps(b.wrapping_add(48)),
                )};
                $(let x = _mm512_broadcastss_ps(unsafe { _mm_load_ss($a) });
                  $c0 = _mm512_fmadd_ps(x, b0, $c0);
                  $c1 = _mm512_fmadd_ps(x, b1, $c1);
                  $c2 = _mm512_fmadd_ps(x, b2, $c2);
                  $c3 = _mm512_fmadd_ps(x, b3, $c3);
                  $a = $a.wrapping_add(1);)*
                b = b.wrapping_add(NR);
            }
            // SAFETY: as `start`.
            unsafe {$(
                _mm512_storeu_ps(at($r, 0), $c0);
                _mm512_storeu_ps(at($r, 1), $c1);
                _mm512_storeu_ps(at($r, 2), $c2);
                _mm512_storeu_ps(at($r, 3), $c3);
            )*}
        };
    }
    tile_rows!(
        [0, a0, c00, c01, c02, c03],
        [1, a1, c10, c11, c12, c13],
        [2, a2, c20, c21, c22, c23],
        [3, a3, c30, c31, c32, c33],
        [4, a4, c40, c41, c42, c43],
        [5, a5, c50, c51, c52, c53]
    );
}
