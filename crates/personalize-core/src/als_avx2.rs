//! The conjugate-gradient row solver written with AVX2+FMA intrinsics, for k a multiple of 8
//! (k = 8·C). The portable version in `als.rs` leaves the vectors in memory: every multiply-add
//! of YᵀY·p and of the sparse sum stores and reloads its accumulator. Here the accumulators stay
//! in registers, and the sparse part Σ (c−1)(yᵢ·p) yᵢ runs in two passes:
//! - all the dot products first, with p held in registers;
//! - then every scaled row, added into accumulators held in registers.
//!
//! The two passes have no dependency between nonzeros, so consecutive rows overlap in the
//! pipeline instead of waiting on each dot product's horizontal sum.
//!
//! Callers check for AVX2 and FMA first (`kernels::has_avx2_fma`). A row's result depends only on
//! its inputs, never on the thread that computes it, so training stays deterministic.

use std::arch::x86_64::*;

/// The sum of the eight lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Loads k = 8·C floats into registers.
///
/// # Safety
/// `v` must hold at least 8·C floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load<const C: usize>(v: *const f32) -> [__m256; C] {
    let mut out = [_mm256_setzero_ps(); C];
    for (c, o) in out.iter_mut().enumerate() {
        *o = unsafe { _mm256_loadu_ps(v.add(8 * c)) };
    }
    out
}

/// Stores registers to k = 8·C floats.
///
/// # Safety
/// `v` must hold at least 8·C floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store<const C: usize>(v: *mut f32, regs: &[__m256; C]) {
    for (c, r) in regs.iter().enumerate() {
        unsafe { _mm256_storeu_ps(v.add(8 * c), *r) };
    }
}

/// M·v for a symmetric k × k matrix: Σ_l v_l · M[l, :], one broadcast and C multiply-adds per
/// row of M, the C accumulators in registers.
///
/// # Safety
/// `m` must hold k·k floats and `v` k floats (k = 8·C).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn matvec<const C: usize>(m: *const f32, v: *const f32) -> [__m256; C] {
    let k = 8 * C;
    let mut acc = [_mm256_setzero_ps(); C];
    for l in 0..k {
        let b = unsafe { _mm256_broadcast_ss(&*v.add(l)) };
        let row = unsafe { m.add(l * k) };
        for (c, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(b, unsafe { _mm256_loadu_ps(row.add(8 * c)) }, *a);
        }
    }
    acc
}

/// yᵢ·v with v in registers; two accumulators so the multiply-adds do not wait on each other.
///
/// # Safety
/// `y` must hold k = 8·C floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_regs<const C: usize>(y: *const f32, v: &[__m256; C]) -> f32 {
    let mut a = [_mm256_setzero_ps(); 2];
    for (c, vc) in v.iter().enumerate() {
        a[c & 1] = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(y.add(8 * c)) }, *vc, a[c & 1]);
    }
    hsum(_mm256_add_ps(a[0], a[1]))
}

/// Dot product of two k-vectors in memory.
///
/// # Safety
/// `a` and `b` must hold k = 8·C floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_mem<const C: usize>(a: *const f32, b: *const f32) -> f32 {
    let v = unsafe { load::<C>(b) };
    unsafe { dot_regs::<C>(a, &v) }
}

/// acc += Σⱼ tⱼ · y[colsⱼ], the C accumulators in registers.
///
/// # Safety
/// Every column must index a row of `y` (k = 8·C floats per row).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn add_scaled_rows<const C: usize>(
    acc: &mut [__m256; C],
    cols: &[u32],
    t: &[f32],
    y: *const f32,
) {
    let k = 8 * C;
    for (&i, &tj) in cols.iter().zip(t) {
        let b = _mm256_set1_ps(tj);
        let row = unsafe { y.add(i as usize * k) };
        for (c, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(b, unsafe { _mm256_loadu_ps(row.add(8 * c)) }, *a);
        }
    }
}

/// One CG solve of row `x` (k = 8·C factors) against fixed factors `y`, as `als::cg_row`:
/// A = YᵀY + reg·I + extra·I + Σ (c−1) y yᵀ (`yty` already holds YᵀY + reg·I; `extra` is the
/// row's λ − reg under frequency scaling, else 0), b = Σ c y.
/// `scratch` holds at least 3k floats; `t` is resized to the row's nonzeros.
///
/// # Safety
/// The CPU must have AVX2 and FMA. `x` holds k floats, `yty` k·k, and every column indexes a
/// row of `y` (k floats per row).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn cg_row<const C: usize>(
    cols: &[u32],
    conf: &[f32],
    y: &[f32],
    yty: &[f32],
    x: &mut [f32],
    steps: usize,
    scratch: &mut [f32],
    t: &mut Vec<f32>,
    extra: f32,
) {
    let k = 8 * C;
    let extra_v = _mm256_set1_ps(extra);
    assert!(x.len() == k && yty.len() >= k * k && scratch.len() >= 3 * k);
    debug_assert!(cols.iter().all(|&i| (i as usize + 1) * k <= y.len()));
    let (r, rest) = scratch.split_at_mut(k);
    let (p, rest) = rest.split_at_mut(k);
    let ap = &mut rest[..k];
    let (y, yty) = (y.as_ptr(), yty.as_ptr());
    t.clear();
    t.resize(cols.len(), 0.0);

    // r = b − A x = −(YᵀY + reg·I) x + Σ (c − (c−1) yᵢ·x) yᵢ
    unsafe {
        let xr = load::<C>(x.as_ptr());
        for ((tj, &i), &c) in t.iter_mut().zip(cols).zip(conf) {
            *tj = c - (c - 1.0) * dot_regs::<C>(y.add(i as usize * k), &xr);
        }
        let mut acc = matvec::<C>(yty, x.as_ptr());
        for (a, xc) in acc.iter_mut().zip(&xr) {
            *a = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_fmadd_ps(extra_v, *xc, *a));
        }
        add_scaled_rows::<C>(&mut acc, cols, t, y);
        store::<C>(r.as_mut_ptr(), &acc);
    }
    p.copy_from_slice(r);
    let mut rsold = unsafe { dot_mem::<C>(r.as_ptr(), r.as_ptr()) };
    if rsold < 1e-20 {
        return;
    }
    for _ in 0..steps {
        // ap = A p
        unsafe {
            let pr = load::<C>(p.as_ptr());
            for ((tj, &i), &c) in t.iter_mut().zip(cols).zip(conf) {
                *tj = (c - 1.0) * dot_regs::<C>(y.add(i as usize * k), &pr);
            }
            let mut acc = matvec::<C>(yty, p.as_ptr());
            for (a, pc) in acc.iter_mut().zip(&pr) {
                *a = _mm256_fmadd_ps(extra_v, *pc, *a);
            }
            add_scaled_rows::<C>(&mut acc, cols, t, y);
            store::<C>(ap.as_mut_ptr(), &acc);
        }
        let pap = unsafe { dot_mem::<C>(p.as_ptr(), ap.as_ptr()) };
        if pap <= 0.0 || !pap.is_finite() {
            return;
        }
        let a = rsold / pap;
        for j in 0..k {
            x[j] = a.mul_add(p[j], x[j]);
            r[j] = (-a).mul_add(ap[j], r[j]);
        }
        let rsnew = unsafe { dot_mem::<C>(r.as_ptr(), r.as_ptr()) };
        if rsnew < 1e-20 {
            return;
        }
        let beta = rsnew / rsold;
        for j in 0..k {
            p[j] = beta.mul_add(p[j], r[j]);
        }
        rsold = rsnew;
    }
}

/// One row's part of the training loss (see `als::loss`): xᵀ(YᵀY)x + Σ ((c−1)p² − 2cp + c) with
/// p = yᵢ·x, and Σ c; in f64 per nonzero as the portable version sums.
///
/// # Safety
/// The CPU must have AVX2 and FMA. `x` holds k = 8·C floats, `yty` k·k, and every column
/// indexes a row of `y`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn row_loss<const C: usize>(
    cols: &[u32],
    conf: &[f32],
    y: &[f32],
    yty: &[f32],
    x: &[f32],
) -> (f64, f64) {
    let k = 8 * C;
    assert!(x.len() == k && yty.len() >= k * k);
    debug_assert!(cols.iter().all(|&i| (i as usize + 1) * k <= y.len()));
    let y = y.as_ptr();
    unsafe {
        let xr = load::<C>(x.as_ptr());
        let gx = matvec::<C>(yty.as_ptr(), x.as_ptr());
        let mut l = 0f64;
        let mut ct = 0f64;
        let mut quad = _mm256_setzero_ps();
        for (g, xc) in gx.iter().zip(&xr) {
            quad = _mm256_fmadd_ps(*g, *xc, quad);
        }
        l += hsum(quad) as f64;
        for (&i, &c) in cols.iter().zip(conf) {
            let p = dot_regs::<C>(y.add(i as usize * k), &xr) as f64;
            let c = c as f64;
            l += (c - 1.0) * p * p - 2.0 * c * p + c;
            ct += c;
        }
        (l, ct)
    }
}
