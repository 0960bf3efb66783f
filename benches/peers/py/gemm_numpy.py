"""The sgemm peak via numpy (its bundled OpenBLAS): C = A·B at 2048x2048 float32, GFLOP/s, the
median of 9 batches of at least 20 ms each."""
import time

from common import emit
import numpy as np

N, BATCHES, MIN_BATCH = 2048, 9, 0.020


def main():
    rng = np.random.default_rng(1)
    a = rng.random((N, N), dtype=np.float32)
    b = rng.random((N, N), dtype=np.float32)
    c = np.empty((N, N), dtype=np.float32)
    t = time.perf_counter()
    np.matmul(a, b, out=c)  # warm-up, and the calls a batch needs
    calls = max(1, int(np.ceil(MIN_BATCH / (time.perf_counter() - t))))
    rates = []
    for _ in range(BATCHES):
        t = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        rates.append(2 * N**3 * calls / (time.perf_counter() - t) / 1e9)
    emit("numpy (OpenBLAS)", "gemm:sq2048", "gflops", float(np.median(rates)), calls_per_batch=calls)


if __name__ == "__main__":
    main()
