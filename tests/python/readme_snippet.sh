#!/usr/bin/env bash
# The README's Python snippets, run as a reader would: train the main job with `--save` and
# `--export-onnx`, then load the checkpoint with safetensors and numpy and check that the first
# snippet prints the test accuracy the main job printed; train a short run of the conv net with
# `--export-onnx` too, and check that the second snippet (onnxruntime) prints both nets' accuracy.
# Makes a virtual environment under target/ once and reuses it.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run --quiet --release --example mnist -- --save "$work/book.safetensors" \
    --export-onnx "$work/book.onnx" | tee "$work/run.txt"
expected=$(sed -n 's/^done: test accuracy \([0-9.]*\).*/\1/p' "$work/run.txt")
# The conv net briefly (the README's figure is from the full run of its Results table).
cargo run --quiet --release --example mnist -- --arch conv --optimizer adam --lr 0.001 \
    --iterations 300 --export-onnx "$work/conv.onnx" | tee "$work/conv.txt"
expected_conv=$(sed -n 's/^done: test accuracy \([0-9.]*\).*/\1/p' "$work/conv.txt")

# The snippet is the README's first `python` block, reading the checkpoint the main job wrote.
awk '/^```python$/ { inside = 1; next } /^```$/ && inside { exit } inside' README.md \
    | sed "s#\"book.safetensors\"#\"$work/book.safetensors\"#" > "$work/snippet.py"
got=$("$venv/bin/python" "$work/snippet.py")

if ! "$venv/bin/python" -c "import sys; sys.exit(abs(float('$got') - float('$expected')) > 5e-5)"; then
    echo "README's Python snippet printed $got; the main job printed test accuracy $expected" >&2
    exit 1
fi
echo "README's Python snippet: $got, as the main job ($expected)"

# The second snippet: the `python` block after the first, reading the ONNX files.
awk '/^```python$/ { n++; if (n == 2) { inside = 1; next } } /^```$/ && inside { exit } inside' README.md \
    | sed -e "s#\"book.onnx\"#\"$work/book.onnx\"#" -e "s#\"conv.onnx\"#\"$work/conv.onnx\"#" \
    > "$work/onnx.py"
"$venv/bin/python" "$work/onnx.py" | tee "$work/onnx.txt"
for pair in "book.onnx $expected" "conv.onnx $expected_conv"; do
    set -- $pair
    got=$(awk -v f="$1" '$0 ~ f { print $NF }' "$work/onnx.txt")
    if [ -z "$got" ] || ! "$venv/bin/python" -c "import sys; sys.exit(abs(float('$got') - float('$2')) > 5e-5)"; then
        echo "README's ONNX snippet printed '$got' for $1; the main job printed test accuracy $2" >&2
        exit 1
    fi
done
echo "README's ONNX snippet: both nets as the main job ($expected, $expected_conv)"
