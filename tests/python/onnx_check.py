"""Checks ONNX files that chainrule's tests exported against the outputs chainrule computed.

    python onnx_check.py DIR

DIR holds, for each case, CASE.onnx and CASE.json: the inputs and the expected outputs, each a
file of little-endian float32 values and its shape. For every case: `onnx.checker.check_model`
(full check, with shape inference), then onnxruntime on the inputs, and every output compared
with chainrule's: |onnxruntime - chainrule| <= tolerance * max(1, |chainrule|) everywhere. Prints
one line per case and exits with 1 if any case fails.
"""

import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort


def read(folder, entry):
    return np.fromfile(folder / entry["file"], dtype="<f4").reshape(entry["shape"])


def check(folder, manifest):
    case = manifest["case"]
    path = folder / f"{case}.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {name: read(folder, entry) for name, entry in manifest["inputs"].items()}
    names = [o.name for o in session.get_outputs()]
    expected_names = list(manifest["outputs"])
    if names != expected_names:
        return f"outputs {names}, expected {expected_names}"
    got = session.run(None, feeds)
    tolerance = manifest["tolerance"]
    worst = []
    for name, value in zip(names, got):
        want = read(folder, manifest["outputs"][name])
        if value.shape != want.shape:
            return f"{name} has shape {value.shape}, chainrule's {want.shape}"
        diff = np.abs(value.astype(np.float64) - want)
        scaled = diff / np.maximum(1.0, np.abs(want))
        worst.append((name, float(diff.max()), float(scaled.max())))
        if not np.all(np.isfinite(value)) or scaled.max() > tolerance:
            i = np.unravel_index(np.argmax(scaled), scaled.shape)
            return (f"{name}[{', '.join(map(str, i))}] is {value[i]!r} in onnxruntime and "
                    f"{want[i]!r} in chainrule (scaled difference {scaled.max():.2e} > {tolerance:g})")
    shapes = ", ".join(f"{n} {list(e['shape'])}" for n, e in manifest["inputs"].items())
    figures = "; ".join(f"{n}: max |diff| {d:.2e}, scaled {s:.2e}" for n, d, s in worst)
    print(f"{case:<24} ok  ({shapes}; {len(model.graph.node)} nodes)  {figures}")
    return None


def main():
    folder = pathlib.Path(sys.argv[1])
    manifests = sorted(folder.glob("*.json"))
    if not manifests:
        print(f"no cases in {folder}", file=sys.stderr)
        return 1
    failed = 0
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    for file in manifests:
        manifest = json.loads(file.read_text())
        try:
            problem = check(folder, manifest)
        except Exception as error:  # the checker's and the runtime's errors, named per case
            problem = f"{type(error).__name__}: {error}"
        if problem:
            failed += 1
            print(f"{manifest['case']:<24} FAILED: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
