//! The numeric kernels that training, serving and the metrics share: dot products, axpy, a
//! k × k matrix-vector product and the item scan behind recommend(), each portable and, where
//! the CPU has AVX2 and FMA (checked at run time), with fused multiply-adds. Results never
//! depend on the thread that computes them, so training stays deterministic.

/// Dot product. Eight independent accumulators let the compiler vectorise while the summation
/// order, and so the result, stays fixed. With `FMA` (only inside functions compiled for
/// AVX2+FMA, see `als::cg_row_avx2`) each step is a fused multiply-add.
#[inline(always)]
pub(crate) fn dot_k<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen lanes: two vector registers, so consecutive multiply-adds do not wait on each
    // other.
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for j in 0..16 {
            acc[j] = if FMA {
                x[j].mul_add(y[j], acc[j])
            } else {
                acc[j] + x[j] * y[j]
            };
        }
    }
    let mut half = [0f32; 8];
    for j in 0..8 {
        half[j] = acc[j] + acc[j + 8];
    }
    let mut s =
        ((half[0] + half[1]) + (half[2] + half[3])) + ((half[4] + half[5]) + (half[6] + half[7]));
    for j in chunks * 16..a.len() {
        s += a[j] * b[j];
    }
    s
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_k::<false>(a, b)
}

#[inline(always)]
pub(crate) fn axpy<const FMA: bool>(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = if FMA {
            alpha.mul_add(*xi, *yi)
        } else {
            *yi + alpha * xi
        };
    }
}

/// Product of a symmetric k × k matrix (YᵀY) with a vector, as a sum of scaled rows: every
/// step is a vectorised multiply-add with no horizontal reductions.
#[inline(always)]
pub(crate) fn matvec<const FMA: bool>(m: &[f32], v: &[f32], out: &mut [f32]) {
    let k = v.len();
    out.fill(0.0);
    for (j, &vj) in v.iter().enumerate() {
        axpy::<FMA>(vj, &m[j * k..(j + 1) * k], out);
    }
}

/// Whether this CPU runs the AVX2+FMA build of the kernels (checked once, cached by std).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i] = y_i · user` for every row of `y`: the scan behind recommend(). Streams the item
/// matrix once; with AVX2+FMA each dot product is fused multiply-adds over two vector registers.
pub fn score_all(y: &[f32], user: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { score_all_avx2(y, user, out) };
        return;
    }
    score_all_k::<false>(y, user, out);
}

/// The scan with 256-bit fused multiply-adds. For the common factor counts (8 to 128 in steps
/// of 8) the user vector's lanes are a compile-time count, so it stays in registers and each
/// item costs k/8 loads and multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn score_all_avx2(y: &[f32], user: &[f32], out: &mut [f32]) {
    match user.len() {
        64 => score_lanes::<8>(y, user, out),
        32 => score_lanes::<4>(y, user, out),
        16 => score_lanes::<2>(y, user, out),
        128 => score_lanes::<16>(y, user, out),
        8 => score_lanes::<1>(y, user, out),
        _ => score_all_k::<true>(y, user, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn score_lanes<const LANES: usize>(y: &[f32], user: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = LANES * 8;
    debug_assert_eq!(user.len(), k);
    let mut u = [_mm256_setzero_ps(); LANES];
    for (l, ul) in u.iter_mut().enumerate() {
        *ul = _mm256_loadu_ps(user.as_ptr().add(l * 8));
    }
    for (o, yi) in out.iter_mut().zip(y.chunks_exact(k)) {
        let p = yi.as_ptr();
        // Two accumulators: consecutive multiply-adds do not wait on each other.
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut l = 0;
        while l + 1 < LANES {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(l * 8)), u[l], a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(l * 8 + 8)), u[l + 1], a1);
            l += 2;
        }
        if l < LANES {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(l * 8)), u[l], a0);
        }
        let a = _mm256_add_ps(a0, a1);
        let h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_movehdup_ps(h));
        *o = _mm_cvtss_f32(h);
    }
}

#[inline(always)]
fn score_all_k<const FMA: bool>(y: &[f32], user: &[f32], out: &mut [f32]) {
    let k = user.len();
    if k == 0 {
        out.fill(0.0);
        return;
    }
    for (o, yi) in out.iter_mut().zip(y.chunks_exact(k)) {
        *o = dot_k::<FMA>(yi, user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_all_matches_dot_for_every_kernel() {
        for k in [3usize, 8, 16, 24, 32, 64, 128] {
            let n = 37;
            let y: Vec<f32> = (0..n * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let user: Vec<f32> = (0..k).map(|i| ((i * 13 % 17) as f32 - 8.0) / 4.0).collect();
            let mut out = vec![0f32; n];
            score_all(&y, &user, &mut out);
            for (i, &s) in out.iter().enumerate() {
                let d = dot(&y[i * k..(i + 1) * k], &user);
                assert!(
                    (s - d).abs() <= 1e-4 * d.abs().max(1.0),
                    "k {k} item {i}: {s} vs {d}"
                );
            }
        }
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..13).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..13).map(|i| (i * i) as f32).sum::<f32>());
    }
}
