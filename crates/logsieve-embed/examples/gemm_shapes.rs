//! Time the lean encoder's matrix-product backends on its own shapes, one
//! thread each, interleaved: `cargo run --release -p logsieve-embed --example gemm_shapes`.
//! Prints GFLOP/s per (backend, shape); figures only.

use std::time::Instant;

use logsieve_embed::lean::kernels::{matmul, Backend};

fn main() {
    // (rows per tile, K, N): QKV, attention output, FFN in, FFN out.
    let shapes = [
        (128, 384, 1152),
        (128, 384, 384),
        (128, 384, 1536),
        (128, 1536, 384),
        (40, 384, 1536),
        (40, 1536, 384),
    ];
    let backends = [Backend::MatrixMultiply, Backend::Gemm];
    let rounds = 5;
    let mut best = vec![vec![0f64; backends.len()]; shapes.len()];
    for _ in 0..rounds {
        for (si, &(m, k, n)) in shapes.iter().enumerate() {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0f32; m * n];
            for (bi, &backend) in backends.iter().enumerate() {
                let reps = 20;
                let t0 = Instant::now();
                for _ in 0..reps {
                    matmul(backend, &mut c, &a, &b, m, k, n, true, 1);
                }
                let gflops = (2 * m * k * n * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9;
                best[si][bi] = f64::max(best[si][bi], gflops);
            }
        }
    }
    for (si, &(m, k, n)) in shapes.iter().enumerate() {
        let cells: Vec<String> = backends
            .iter()
            .zip(&best[si])
            .map(|(b, g)| format!("{} {g:6.1}", b.name()))
            .collect();
        println!(
            "M={m:4} K={k:5} N={n:5}: {} GFLOP/s (best of {rounds})",
            cells.join("  ")
        );
    }
}
