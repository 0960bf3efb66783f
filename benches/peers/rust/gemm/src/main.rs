//! The sgemm peak behind the tables' "% of peak" column: C = A·B at 2048x2048 with
//! matrixmultiply's f32 kernel (AVX-512 on), as GFLOP/s, the median of 9 batches of at least
//! 20 ms each. Threads: the caller sets MATMUL_NUM_THREADS (and pins the process for 1 thread);
//! `--threads N` is only reported.

#[path = "../../common.rs"]
mod common;

use std::time::{Duration, Instant};

const N: usize = 2048;
const BATCHES: usize = 9;
const MIN_BATCH: Duration = Duration::from_millis(20);

fn sgemm(a: &[f32], b: &[f32], c: &mut [f32]) {
    // Row-major n x n: row stride n, column stride 1.
    let n = N as isize;
    // SAFETY: all three slices hold N*N elements, laid out as the strides say.
    unsafe {
        matrixmultiply::sgemm(
            N,
            N,
            N,
            1.0,
            a.as_ptr(),
            n,
            1,
            b.as_ptr(),
            n,
            1,
            0.0,
            c.as_mut_ptr(),
            n,
            1,
        );
    }
}

fn main() {
    let a = common::args();
    let mut rng = common::Rng::new(1);
    let x: Vec<f32> = (0..N * N).map(|_| rng.uniform()).collect();
    let y: Vec<f32> = (0..N * N).map(|_| rng.uniform()).collect();
    let mut z = vec![0f32; N * N];

    // Calls per batch: enough for MIN_BATCH, from one warm-up call.
    let t = Instant::now();
    sgemm(&x, &y, &mut z);
    let calls = (MIN_BATCH.as_secs_f64() / t.elapsed().as_secs_f64())
        .ceil()
        .max(1.0) as usize;

    let flop = 2.0 * (N as f64).powi(3) * calls as f64;
    let mut rates: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                sgemm(&x, &y, &mut z);
            }
            flop / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    std::hint::black_box(&z);
    rates.sort_by(f64::total_cmp);
    let name = a.label.unwrap_or_else(|| "matrixmultiply".into());
    common::emit(
        &name,
        "gemm:sq2048",
        a.threads,
        "gflops",
        rates[BATCHES / 2],
        &format!("\"calls_per_batch\":{calls}"),
    );
}
