//! The lean encoder's kernels on plain f32 slices: matrix products on
//! `matrixmultiply` (AVX-512 kernels) or `gemm`, and the fused element-wise
//! steps around them (bias + exact-erf GELU, softmax, residual + LayerNorm),
//! written branch-free so they vectorise.

use gemm::Parallelism;

/// Which crate runs the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `matrixmultiply::sgemm`, single-threaded (we split rows ourselves);
    /// picks AVX-512 kernels at run time where the CPU has them.
    MatrixMultiply,
    /// `gemm::gemm` (what candle uses); AVX2/FMA kernels on stable Rust.
    Gemm,
}

impl Backend {
    /// `LOGSIEVE_LEAN_GEMM=gemm|matrixmultiply`, else the default.
    pub fn from_env() -> Self {
        match std::env::var("LOGSIEVE_LEAN_GEMM").as_deref() {
            Ok("gemm") => Backend::Gemm,
            _ => Backend::MatrixMultiply,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::MatrixMultiply => "matrixmultiply",
            Backend::Gemm => "gemm",
        }
    }
}

/// Lanes for hand-split reductions: floats don't reassociate on their own, so
/// sums and maxima are kept in this many independent accumulators.
const LANES: usize = 16;

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, all row-major and contiguous; with
/// `accumulate`, onto what `dst` holds (a bias, a residual), else over it.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    backend: Backend,
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    threads: usize,
) {
    assert!(
        dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matmul shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if backend == Backend::MatrixMultiply {
        let d = View {
            offset: 0,
            rows: m,
            cols: n,
            rs: n,
            cs: 1,
        };
        let av = View {
            offset: 0,
            rows: m,
            cols: k,
            rs: k,
            cs: 1,
        };
        let bv = View {
            offset: 0,
            rows: k,
            cols: n,
            rs: n,
            cs: 1,
        };
        return matmul_strided(backend, dst, d, a, av, b, bv, accumulate);
    }
    let par = if threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // Safety: the assertion above bounds every element gemm reads or writes
    // (row strides k and n, column stride 1); `dst` does not alias `a` or `b`
    // (a `&mut` and two `&` borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// A strided view of a matrix inside a larger slice: element (r, c) is at
/// `offset + r * rs + c * cs`.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    fn last(&self) -> usize {
        self.offset + (self.rows.max(1) - 1) * self.rs + (self.cols.max(1) - 1) * self.cs
    }
}

/// `dst (+)= a · b` on strided views, single-threaded.
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided(
    backend: Backend,
    dst: &mut [f32],
    d: View,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    accumulate: bool,
) {
    assert!(
        av.cols == bv.rows && d.rows == av.rows && d.cols == bv.cols,
        "matmul shapes"
    );
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if av.cols == 0 {
        if accumulate {
            return;
        }
        for r in 0..d.rows {
            for c in 0..d.cols {
                dst[d.offset + r * d.rs + c * d.cs] = 0.0;
            }
        }
        return;
    }
    assert!(
        d.last() < dst.len() && av.last() < a.len() && bv.last() < b.len(),
        "view out of bounds"
    );
    let beta = if accumulate { 1.0 } else { 0.0 };
    if backend == Backend::MatrixMultiply {
        // Safety: as below; sgemm reads `dst` only when beta is non-zero.
        unsafe {
            matrixmultiply::sgemm(
                d.rows,
                av.cols,
                d.cols,
                1.0,
                a.as_ptr().add(av.offset),
                av.rs as isize,
                av.cs as isize,
                b.as_ptr().add(bv.offset),
                bv.rs as isize,
                bv.cs as isize,
                beta,
                dst.as_mut_ptr().add(d.offset),
                d.rs as isize,
                d.cs as isize,
            )
        }
        return;
    }
    // Safety: the assertion bounds the last element of every view, and all
    // strides are non-negative, so every access lies inside its slice; `dst`
    // is a `&mut` borrow distinct from `a` and `b`.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            av.cols,
            dst.as_mut_ptr().add(d.offset),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            a.as_ptr().add(av.offset),
            av.cs as isize,
            av.rs as isize,
            b.as_ptr().add(bv.offset),
            bv.cs as isize,
            bv.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Sum with independent accumulators (vectorises; order differs from a
/// sequential sum by rounding only).
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// e^x for f32, branch-free (Cephes' polynomial after reduction by ln 2);
/// relative error ~2e-7 over the f32 range, 0 below -87.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let under = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    // t = ROUND + n exactly (one ulp of ROUND is 1), so n is also the
    // difference of the bit patterns: an integer op that vectorises, where
    // `as i32` (saturating) would not.
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // the fitted 5.0000001e-1 is exactly 0.5 in f32
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if under {
        0.0
    } else {
        y * scale
    }
}

/// erf for f32: a rational approximation on [-4, 4] (the one Eigen and XLA
/// use), ±1 beyond; absolute error ~1e-7.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `x = gelu(x + bias)` row by row, GELU with the exact erf as BERT uses it.
#[inline(always)]
fn bias_gelu_impl(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            let y = *v + b;
            *v = 0.5 * y * (1.0 + erf(y * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// `x = gelu(x)` with the exact erf.
#[cfg(test)]
pub fn gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        let y = *v;
        *v = 0.5 * y * (1.0 + erf(y * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax in place over each row of `len`.
#[inline(always)]
fn softmax_rows_impl(x: &mut [f32], len: usize) {
    for row in x.chunks_exact_mut(len) {
        softmax(row);
    }
}

/// Softmax in place over one row.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let m = max(row);
    for v in row.iter_mut() {
        *v = exp(*v - m);
    }
    let inv = 1.0 / sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// LayerNorm in place over each row (row length `gamma.len()`).
#[inline(always)]
fn layer_norm_rows_impl(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        layer_norm(row, gamma, beta, eps);
    }
}

/// LayerNorm in place over one row.
#[inline(always)]
fn layer_norm(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let var = (acc.iter().sum::<f32>() + rest) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// Whether the wider (AVX2) copies of the element-wise kernels can run here.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// A public kernel that runs the AVX2 build of `$imp` where the CPU has it
/// (the default target is SSE2, 4 lanes) and the portable one elsewhere.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $avx:ident, $imp:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx($($arg: $ty),*) {
            $imp($($arg),*)
        }

        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // Safety: the CPU has AVX2 and FMA, checked at run time.
                return unsafe { $avx($($arg),*) };
            }
            $imp($($arg),*)
        }
    };
}

dispatch!(
    /// `x = gelu(x + bias)` row by row (row length `bias.len()`), exact-erf GELU.
    bias_gelu, bias_gelu_avx2, bias_gelu_impl, (x: &mut [f32], bias: &[f32])
);
dispatch!(
    /// Softmax in place over each row of `len` values.
    softmax_rows, softmax_rows_avx2, softmax_rows_impl, (x: &mut [f32], len: usize)
);
dispatch!(
    /// LayerNorm in place over each row (row length `gamma.len()`).
    layer_norm_rows, layer_norm_rows_avx2, layer_norm_rows_impl,
    (x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32)
);

/// Fill each row of `dst` (row length `bias.len()`) with `bias`.
pub fn fill_rows(dst: &mut [f32], bias: &[f32]) {
    for row in dst.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// `dst[r] += bias` for every row.
pub fn add_rows(dst: &mut [f32], bias: &[f32]) {
    for row in dst.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series; exact to ~1e-11 on [-4, 4].
    fn erf_ref(x: f64) -> f64 {
        if x.abs() > 4.5 {
            return x.signum();
        }
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn erf_matches_series() {
        let mut worst = 0f64;
        for x in grid(-6.0, 6.0, 24_000) {
            let err = (erf(x) as f64 - erf_ref(x as f64)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "erf max abs error {worst}");
    }

    #[test]
    fn gelu_matches_scalar_reference() {
        let mut xs: Vec<f32> = grid(-10.0, 10.0, 4001).collect();
        let want: Vec<f64> = xs
            .iter()
            .map(|&x| 0.5 * x as f64 * (1.0 + erf_ref(x as f64 / 2f64.sqrt())))
            .collect();
        gelu(&mut xs);
        for (g, w) in xs.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 2e-6 * (1.0 + w.abs()), "gelu {g} vs {w}");
        }
        let mut y = vec![0.5f32, -1.0, 2.0, 0.0];
        bias_gelu(&mut y, &[0.5, 1.0]);
        let mut y2 = vec![0.5f32, -1.0, 2.0, 0.0];
        bias_gelu_impl(&mut y2, &[0.5, 1.0]);
        assert_eq!(y, y2);
        let mut z = vec![1.0f32, 0.0, 2.5, 1.0];
        gelu(&mut z);
        assert_eq!(y, z);
    }

    #[test]
    fn exp_matches_std() {
        for x in grid(-100.0, 80.0, 50_000) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            if x < -87.0 {
                assert!(got == 0.0 || got < 1e-37);
            } else {
                assert!((got - want).abs() <= 5e-7 * want, "exp({x}) = {got}, want {want}");
            }
        }
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn softmax_matches_scalar_reference() {
        let mut seed = 7;
        for len in [1usize, 2, 15, 16, 17, 80, 257] {
            let mut row: Vec<f32> = (0..len).map(|_| lcg(&mut seed) * 20.0).collect();
            let m = row
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, |a, b| a.max(b as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            softmax_rows(&mut row, len);
            for (g, w) in row.iter().zip(&e) {
                assert!((*g as f64 - w / s).abs() < 1e-6, "softmax {g} vs {}", w / s);
            }
        }
    }

    #[test]
    fn layer_norm_matches_scalar_reference() {
        let mut seed = 11;
        for len in [3usize, 16, 384, 385] {
            let row: Vec<f32> = (0..len).map(|_| lcg(&mut seed) * 3.0 + 0.5).collect();
            let gamma: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
            let beta: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
            let want: Vec<f64> = row
                .iter()
                .zip(&gamma)
                .zip(&beta)
                .map(|((&v, &g), &b)| (v as f64 - mean) / (var + 1e-12).sqrt() * g as f64 + b as f64)
                .collect();
            let mut got = row.clone();
            layer_norm_rows(&mut got, &gamma, &beta, 1e-12);
            let mut portable = row.clone();
            layer_norm(&mut portable, &gamma, &beta, 1e-12);
            for (g, p) in got.iter().zip(&portable) {
                assert!((g - p).abs() < 1e-5);
            }
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "layer_norm {g} vs {w}");
            }
        }
    }

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_accumulates_onto_dst() {
        let mut seed = 3;
        for (m, k, n) in [(1, 5, 7), (33, 64, 96), (130, 70, 40)] {
            let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed)).collect();
            for backend in [Backend::MatrixMultiply, Backend::Gemm] {
                let mut dst = vec![1.0f32; m * n];
                matmul(backend, &mut dst, &a, &b, m, k, n, true, 2);
                for (g, w) in dst.iter().zip(naive(&a, &b, m, k, n)) {
                    assert!((g - (w + 1.0)).abs() < 1e-4);
                }
                matmul(backend, &mut dst, &a, &b, m, k, n, false, 1);
                for (g, w) in dst.iter().zip(naive(&a, &b, m, k, n)) {
                    assert!((g - w).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn strided_matmul_reads_transposed_views() {
        // a is 3×4 inside rows of 6; b is read as the transpose of a 5×4 block.
        let mut seed = 5;
        let abuf: Vec<f32> = (0..3 * 6).map(|_| lcg(&mut seed)).collect();
        let bbuf: Vec<f32> = (0..5 * 4).map(|_| lcg(&mut seed)).collect();
        let a = View {
            offset: 1,
            rows: 3,
            cols: 4,
            rs: 6,
            cs: 1,
        };
        let bt = View {
            offset: 0,
            rows: 4,
            cols: 5,
            rs: 1,
            cs: 4,
        };
        let d = View {
            offset: 0,
            rows: 3,
            cols: 5,
            rs: 5,
            cs: 1,
        };
        for backend in [Backend::MatrixMultiply, Backend::Gemm] {
            let mut dst = vec![9f32; 15];
            matmul_strided(backend, &mut dst, d, &abuf, a, &bbuf, bt, false);
            for i in 0..3 {
                for j in 0..5 {
                    let w: f32 = (0..4).map(|p| abuf[1 + i * 6 + p] * bbuf[j * 4 + p]).sum();
                    assert!((dst[i * 5 + j] - w).abs() < 1e-5);
                }
            }
        }
    }
}
