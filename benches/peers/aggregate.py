#!/usr/bin/env python3
"""Prints the markdown tables of a compare.sh run from its JSON lines (RAW/run<N>.jsonl): one
table per workload (implementations x thread counts, median over rounds with spread, GFLOP/s and
% of the sgemm peak, loss0 -> loss1), the sgemm peaks, and chainrule against the fastest peer.

    python3 benches/peers/aggregate.py RAW_DIR

Standard library only."""
import glob
import json
import os
import statistics
import sys

# What each workload is, how it is measured, and its FLOPs per step or call (README.md).
WORKLOADS = {
    "W1": ("book 784-50-10, batch 100, training", "steps_per_s", 15.98e6),
    "W2": ("wide 784-1024-1024-10, batch 256, training", "steps_per_s", 2448.4e6),
    "W3": ("latency 784-50-10, batch 1, forward", "median_us", None),
    "W4": ("conv (SimpleConvNet), batch 100, training", "steps_per_s", 432.6e6),
    "W5": ("conv latency (SimpleConvNet), batch 1, forward", "median_us", None),
    "W6": ("deepconv (DeepConvNet), batch 100, training", "steps_per_s", 5240.8e6),
}
UNIT = {"steps_per_s": "steps/s", "median_us": "µs per call (median)", "gflops": "GFLOP/s"}
OURS = "chainrule"
# The rows of a loop that only reads the weights (see rust/chainrule): a bound, not a peer.
BOUND = "bound: weights read once"


def load(raw):
    """(impl, workload, threads, metric) -> list of rows, one per round."""
    rows = {}
    files = sorted(glob.glob(os.path.join(raw, "run*.jsonl")))
    for path in files:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                key = (r["impl"], r["workload"], int(r["threads"]), r["metric"])
                rows.setdefault(key, []).append(r)
    return rows, len(files)


def num(v):
    """Three significant digits, thousands separated."""
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if v >= 1 else f"{v:.3f}"


def summary(rs):
    """Median value over rounds and its spread, as '±x% (n=k)'."""
    values = [r["value"] for r in rs]
    med = statistics.median(values)
    if len(values) < 2 or med == 0:
        return med, f"n={len(values)}"
    half = (max(values) - min(values)) / 2 / med * 100
    return med, f"±{half:.0f}% (n={len(values)})"


def losses(rs):
    l0 = [r["loss0"] for r in rs if "loss0" in r]
    l1 = [r["loss1"] for r in rs if "loss1" in r]
    if not l0:
        return "—"
    return f"{statistics.median(l0):.5g} → {statistics.median(l1):.5g}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    raw = sys.argv[1]
    rows, rounds = load(raw)
    if not rows:
        sys.exit(f"no JSON lines in {raw}/run*.jsonl")
    threads = sorted({k[2] for k in rows})

    # The sgemm peak at each thread count: the best 2048² GFLOP/s of any library.
    gemm = {k: summary(v) for k, v in rows.items() if k[1].startswith("gemm:")}
    peak = {t: max((m for (i, w, tt, _), (m, _) in gemm.items() if tt == t), default=None)
            for t in threads}

    out = [f"# chainrule and its peers on W1–W6", "",
           f"From `{raw}`: {rounds} round(s); each cell is the median over rounds, "
           "± half the range. Thread counts: " + ", ".join(map(str, threads)) + ".", ""]
    verdicts = []

    for w, (what, metric, flop) in WORKLOADS.items():
        impls = sorted({k[0] for k in rows if k[1] == w and k[3] == metric})
        if not impls:
            continue
        lower = metric == "median_us"
        cell = {(i, t): summary(rows[(i, w, t, metric)])
                for i in impls for t in threads if (i, w, t, metric) in rows}
        # Best first, by the first thread count's value (then the others').
        def rank(i):
            v = [cell[(i, t)][0] for t in threads if (i, t) in cell]
            return (v[0] if lower else -v[0]) if v else float("inf")
        impls.sort(key=rank)

        head = ["implementation"]
        for t in threads:
            head += [f"{t}T {UNIT[metric]}", "spread"]
            if flop:
                head += [f"{t}T GFLOP/s", f"{t}T % of peak"]
        if not lower:
            head.append("loss0 → loss1")
        out += [f"## {w}: {what}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        for i in impls:
            line = [f"**{i}**" if i.startswith(OURS) else i]
            for t in threads:
                if (i, t) not in cell:
                    line += ["—", ""] + (["—", "—"] if flop else [])
                    continue
                med, spread = cell[(i, t)]
                line += [num(med), spread]
                if flop:
                    gf = med * flop / 1e9
                    line += [num(gf), f"{gf / peak[t] * 100:.0f}%" if peak.get(t) else "—"]
            if not lower:
                all_rounds = [r for t in threads for r in rows.get((i, w, t, metric), [])]
                line.append(losses(all_rounds))
            out.append("| " + " | ".join(line) + " |")

        # chainrule (its plain row, named exactly OURS) against the fastest peer.
        notes = []
        for t in threads:
            peers = [(cell[(i, t)][0], i) for i in impls
                     if (i, t) in cell and not i.startswith(OURS) and not i.startswith(BOUND)]
            if (OURS, t) not in cell or not peers:
                continue
            best, who = (min if lower else max)(peers)
            ours = cell[(OURS, t)][0]
            ratio = best / ours if lower else ours / best
            notes.append(f"{t}T {ratio:.2f}× ({who})")
            verdicts.append((w, t, ratio, who))
        if notes:
            out += ["", "chainrule's speed ÷ the fastest peer's: " + ", ".join(notes) + "."]
        # One-sample workloads: chainrule's time against a loop that only reads the weights.
        bound = [f"{t}T {cell[(OURS, t)][0] / cell[(BOUND, t)][0]:.2f}×" for t in threads
                 if (OURS, t) in cell and (BOUND, t) in cell]
        if bound:
            out += ["", "chainrule's time ÷ the time to read its weights once: " + ", ".join(bound) + "."]
        out.append("")

    if gemm:
        out += ["## sgemm peak, 2048×2048 f32 (the “% of peak” reference)", "",
                "| library | " + " | ".join(f"{t}T GFLOP/s" for t in threads) + " |",
                "|---|" + "---|" * len(threads)]
        for i in sorted({k[0] for k in gemm}):
            vals = [gemm.get((i, "gemm:sq2048", t, "gflops")) for t in threads]
            out.append(f"| {i} | " + " | ".join(num(v[0]) if v else "—" for v in vals) + " |")
        out.append("")

    if verdicts:
        out += ["## Summary: chainrule's speed ÷ the fastest peer's (> 1: chainrule is faster)", "",
                "| workload | " + " | ".join(f"{t}T" for t in threads) + " |",
                "|---|" + "---|" * len(threads)]
        for w in WORKLOADS:
            got = {t: (r, who) for (ww, t, r, who) in verdicts if ww == w}
            if got:
                out.append(f"| {w} | " + " | ".join(
                    f"{got[t][0]:.2f}× vs {got[t][1]}" if t in got else "—" for t in threads) + " |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
