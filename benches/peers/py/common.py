"""What every Python peer shares: the six workloads of benches/peers/README.md, their fixed-seed
data (numpy's generator, seed 0), the thread settings, the timing loops, the command line and the
JSON-line output. rust/common.rs is the same for the Rust peers.

Import this module before numpy, torch or jax: it sets the thread variables from --threads first.
"""
import argparse
import json
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1, help="thread count of every library knob")
    p.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6", help="comma-separated subset")
    p.add_argument("--label", help="replaces the implementation's name in the output")
    p.add_argument("--compile", action="store_true", help="torch peers: use torch.compile")
    a = p.parse_args()
    a.workloads = [w for w in a.workloads.split(",") if w]
    return a


ARGS = _parse()

# The thread policy (README.md): every knob at the thread count. compare.sh also pins 1-thread
# runs to one core with taskset. These must be set before numpy/torch/jax load their libraries.
for _knob in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_knob] = str(ARGS.threads)
if ARGS.threads == 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402

_LIMITS = threadpoolctl.threadpool_limits(ARGS.threads)  # numpy's BLAS (kept for the process)

# ---------------------------------------------------------------------------------- workloads

# MLPs: (layer widths, batch, lr, timed steps or calls, warm-up).
MLP = {
    "W1": dict(sizes=[784, 50, 10], batch=100, lr=0.1, steps=3000, warmup=300),
    "W2": dict(sizes=[784, 1024, 1024, 10], batch=256, lr=0.1, steps=100, warmup=10),
    "W3": dict(sizes=[784, 50, 10], batch=1, lr=0.0, steps=20_000, warmup=2_000),
}

# Conv nets: ("conv", out_c, k, pad) with stride 1 and a bias, ("relu",), ("pool",) = max 2x2
# stride 2, ("affine", out) flattening a 4-D input first.
SIMPLE_CONV = [("conv", 30, 5, 0), ("relu",), ("pool",), ("affine", 100), ("relu",), ("affine", 10)]
DEEP_CONV = [
    ("conv", 16, 3, 1), ("relu",), ("conv", 16, 3, 1), ("relu",), ("pool",),
    ("conv", 32, 3, 1), ("relu",), ("conv", 32, 3, 2), ("relu",), ("pool",),
    ("conv", 64, 3, 1), ("relu",), ("conv", 64, 3, 1), ("relu",), ("pool",),
    ("affine", 50), ("relu",), ("affine", 10),
]
CONV_INPUT = (1, 28, 28)  # C, H, W

CONV = {
    "W4": dict(net=SIMPLE_CONV, he=False, batch=100, lr=0.1, steps=300, warmup=30, flat=4320),
    "W5": dict(net=SIMPLE_CONV, he=False, batch=1, lr=0.0, steps=5_000, warmup=500, flat=4320),
    "W6": dict(net=DEEP_CONV, he=True, batch=100, lr=0.1, steps=30, warmup=5, flat=1024),
}


def conv_shapes(net):
    """Each layer's output shape for one sample: (C, H, W), or (n,) after an affine."""
    s, out = CONV_INPUT, []
    for layer in net:
        if layer[0] == "conv":
            _, c, k, pad = layer
            s = (c, s[1] + 2 * pad - k + 1, s[2] + 2 * pad - k + 1)
        elif layer[0] == "pool":
            s = (s[0], s[1] // 2, s[2] // 2)
        elif layer[0] == "affine":
            s = (layer[1],)
        out.append(s)
    return out


def check_conv_shapes(name, got):
    """Raises unless `got` (each layer's output shape, batch first) matches the spec."""
    cfg = CONV[name]
    want = [(cfg["batch"],) + s for s in conv_shapes(cfg["net"])]
    got = [tuple(s) for s in got]
    assert got == want, f"{name}: layer output shapes {got} differ from the spec {want}"
    last_pool = max(i for i, l in enumerate(cfg["net"]) if l[0] == "pool")
    assert int(np.prod(want[last_pool][1:])) == cfg["flat"], f"{name}: flatten size"


def check_mlp_shapes(name, got):
    """Raises unless an MLP's layer outputs (affines and relus, batch first) match the spec."""
    cfg = MLP[name]
    want = []
    for i, n in enumerate(cfg["sizes"][1:]):
        want.append((cfg["batch"], n))
        if i + 2 < len(cfg["sizes"]):
            want.append((cfg["batch"], n))  # the relu after each hidden affine
    got = [tuple(s) for s in got]
    assert got == want, f"{name}: layer output shapes {got} differ from the spec {want}"


# --------------------------------------------------------------------------------------- data

def _draw(x_shape, classes, layers, he):
    """Seed 0, in this order: X ~ U[0,1), labels, then each layer's weights (shape, fan_in)."""
    rng = np.random.default_rng(0)
    x = rng.random(x_shape, dtype=np.float32)
    labels = rng.integers(0, classes, size=x_shape[0])
    params = []
    for shape, fan_in in layers:
        scale = np.float32(np.sqrt(2.0 / fan_in) if he else 0.01)
        w = scale * rng.standard_normal(shape, dtype=np.float32)
        outputs = shape[1] if len(shape) == 2 else shape[0]  # affine (in, out); conv (out, ...)
        params.append((w, np.zeros(outputs, dtype=np.float32)))
    return x, labels, params


def make_data(name):
    """An MLP workload: x (batch, 784), labels, [(W (in, out), b)] with W = 0.01·N(0,1)."""
    cfg = MLP[name]
    layers = [((i, o), i) for i, o in zip(cfg["sizes"], cfg["sizes"][1:])]
    return _draw((cfg["batch"], cfg["sizes"][0]), cfg["sizes"][-1], layers, he=False)


def make_conv_data(name):
    """A conv workload: x (batch, 1, 28, 28), labels, [(W, b)] per conv (out_c, in_c, k, k) and
    affine (in, out) layer; 0.01·N(0,1) or He init."""
    cfg = CONV[name]
    layers, s = [], CONV_INPUT
    for layer, out in zip(cfg["net"], conv_shapes(cfg["net"])):
        if layer[0] == "conv":
            layers.append(((layer[1], s[0], layer[2], layer[2]), s[0] * layer[2] ** 2))
        elif layer[0] == "affine":
            n = int(np.prod(s))
            layers.append(((n, layer[1]), n))
        s = out
    return _draw((cfg["batch"],) + CONV_INPUT, 10, layers, cfg["he"])


# ------------------------------------------------------------------------------------- timing

def _count(n):
    """PEERS_QUICK=1 runs 1/50 of every loop (at least 3): to check a peer, not to measure it."""
    return max(3, n // 50) if os.environ.get("PEERS_QUICK") == "1" else n


def time_steps(warmup, steps, step, sync=lambda: None):
    """`warmup` untimed calls, then steps/s over `steps` calls timed together; `sync` waits for
    work still queued (JAX dispatches asynchronously)."""
    warmup, steps = _count(warmup), _count(steps)
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - t)


def latency_us(calls, warmup, call):
    """`warmup` untimed calls, then `calls` calls each timed alone: (median, p10, p90) in µs.
    `call` must return only when its work is done."""
    calls, warmup = _count(calls), _count(warmup)
    for _ in range(warmup):
        call()
    us = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter()
        call()
        us[i] = (time.perf_counter() - t) * 1e6
    return tuple(float(v) for v in np.percentile(us, [50, 10, 90]))


# ------------------------------------------------------------------------------------- output

def emit(impl, workload, metric, value, variant="", **extra):
    """Prints one measurement as a JSON line: implementation `impl` (or --label) + `variant`."""
    row = dict(impl=(ARGS.label or impl) + variant, workload=workload, threads=ARGS.threads,
               metric=metric, value=float(value))
    row.update({k: float(v) for k, v in extra.items()})
    print(json.dumps(row), flush=True)


def emit_train(impl, workload, rate, loss0, loss1, variant=""):
    emit(impl, workload, "steps_per_s", rate, variant, loss0=loss0, loss1=loss1)


def emit_latency(impl, workload, stats, variant=""):
    median, p10, p90 = stats
    emit(impl, workload, "median_us", median, variant, p10=p10, p90=p90)


def wanted(group):
    """The requested workloads of `group` (MLP or CONV), in order."""
    return [w for w in ARGS.workloads if w in group]


def log(msg):
    print(msg, file=sys.stderr, flush=True)
