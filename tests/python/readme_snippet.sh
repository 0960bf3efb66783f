#!/usr/bin/env bash
# The README's Python snippet, run as a reader would: train the main job with `--save`, then load
# the checkpoint with safetensors and numpy and check that the snippet prints the test accuracy
# the main job printed. Makes a virtual environment under target/ once and reuses it.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run --quiet --release --example mnist -- --save "$work/book.safetensors" | tee "$work/run.txt"
expected=$(sed -n 's/^done: test accuracy \([0-9.]*\).*/\1/p' "$work/run.txt")

# The snippet is the README's first `python` block, reading the checkpoint the main job wrote.
awk '/^```python$/ { inside = 1; next } /^```$/ && inside { exit } inside' README.md \
    | sed "s#\"book.safetensors\"#\"$work/book.safetensors\"#" > "$work/snippet.py"
got=$("$venv/bin/python" "$work/snippet.py")

if ! "$venv/bin/python" -c "import sys; sys.exit(abs(float('$got') - float('$expected')) > 5e-5)"; then
    echo "README's Python snippet printed $got; the main job printed test accuracy $expected" >&2
    exit 1
fi
echo "README's Python snippet: $got, as the main job ($expected)"
