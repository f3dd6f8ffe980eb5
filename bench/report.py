#!/usr/bin/env python3
"""Table of the benchmark results: results.json -> results.md (and stdout).

  python3 bench/report.py OUT/bench/results.json
  python3 bench/report.py RUN1/results.json RUN2/results.json   # runs merged -> RUN1/merged.md
"""

import json
import os
import sys

# torch_forward: torch_varlen's forward alone (inputs staged on the GPU before the timer, no
# reading or writing), the ceiling of any PyTorch pipeline; rows come from torch_varlen.py.
SYSTEMS = ["esm2go", "torch_forward", "torch_varlen", "hf_padded"]


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def ratios(rows):
    """esm2go seq/s divided by each baseline's, per (model, input)."""
    by = {(r["model"], r["input"], r["system"]): r for r in rows}
    out = {}
    for (m, i, s), r in by.items():
        if s != "esm2go" or not r.get("seqs_per_s"):
            continue
        for base in SYSTEMS[1:]:
            b = by.get((m, i, base))
            if b and b.get("seqs_per_s"):
                out[(m, i, base)] = r["seqs_per_s"] / b["seqs_per_s"]
    return out


def like_for_like(rows):
    """esm2go's own time after loading (its `done` line) and its steady state (metrics windows
    after the first) against the baselines, which are timed after loading and an in-process
    warm-up."""
    by = {(r["model"], r["input"], r["system"]): r for r in rows if not r.get("error")}
    out = []
    for (m, i, s), r in sorted(by.items()):
        if s != "esm2go" or not r.get("seqs_per_s_own"):
            continue
        busy = " / ".join(fmt(r.get(k)) for k in ("gpu_busy_pct", "gpu_busy_own_pct", "gpu_busy_steady_pct"))
        cells = [m, i, fmt(r["seqs_per_s_own"]), fmt(r.get("steady_seqs_per_s")), busy]
        for base in SYSTEMS[1:]:
            b = by.get((m, i, base))
            bs = b.get("seqs_per_s") if b else None
            cells.append(f"{r['seqs_per_s_own'] / bs:.2f}" if bs else "-")
            cells.append(f"{r['steady_seqs_per_s'] / bs:.2f}" if bs and r.get("steady_seqs_per_s") else "-")
        out.append("| " + " | ".join(cells) + " |")
    if not out:
        return []
    head = "| model | input | esm2go own seq/s | esm2go steady seq/s | GPU busy % (whole / own / steady) | " + " | ".join(
        f"× {b} (own) | × {b} (steady)" for b in SYSTEMS[1:]) + " |"
    return ["", "Like for like: esm2go timed after loading (own time, from its `done` line) and in steady "
            "state (its metrics windows after the first, which holds in-process start-up), against the "
            "baselines timed after loading and an in-process warm-up (torch_forward: the forward alone, "
            "inputs already on the GPU):", "",
            head, "|---|---|---:|---:|---:|" + "---:|---:|" * len(SYSTEMS[1:])] + out


def markdown(doc):
    rows = doc.get("results", [])
    rat = ratios(rows)
    lines = []
    meta = doc.get("meta", {})
    lines.append("# esm2go GPU benchmark results\n")
    for k in ("date", "gpu", "host", "dry_run", "models", "n_synthetic", "budget_s", "esm2go_toks_per_batch",
              "esm2go_version", "metrics_json"):
        if k in meta:
            lines.append(f"- {k}: {meta[k]}")
    lines.append("")
    lines.append("| model | input | system | seqs run | seq/s | tokens/s | useful TFLOP/s | peak GPU mem MiB | "
                 "GPU busy % | wall s | esm2go × |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {s: i for i, s in enumerate(SYSTEMS)}
    for r in sorted(rows, key=lambda r: (r["model"], r["input"], order.get(r["system"], 9))):
        x = "-"
        if r["system"] != "esm2go":
            v = rat.get((r["model"], r["input"], r["system"]))
            x = f"{v:.2f}" if v else "-"
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['input']} | {r['system']} | FAILED: {r['error'][:80]} |"
                         + " |" * 7)
            continue
        seqs = f"{r['n_seqs']:,}/{r['n_input_seqs']:,}"
        lines.append(f"| {r['model']} | {r['input']} | {r['system']} | {seqs} | {fmt(r.get('seqs_per_s'))} | "
                     f"{fmt(r.get('tokens_per_s'), 0)} | {fmt(r.get('useful_tflops'), 2)} | "
                     f"{fmt(r.get('peak_mem_mib'), 0)} | {fmt(r.get('gpu_busy_pct'))} | {fmt(r.get('wall_s'), 2)} | {x} |")
    lines.append("")
    lines.append("esm2go × = esm2go seq/s ÷ that baseline's seq/s (same model and input; each system ran "
                 "the first N sequences of the input, N in 'seqs run').")
    lines.extend(like_for_like(rows))
    notes = []
    peaks = [r["matmul_peak_tflops"] for r in rows if r.get("matmul_peak_tflops")]
    sustained = [r["matmul_sustained_tflops"] for r in rows if r.get("matmul_sustained_tflops")]
    refs = []
    if peaks:
        refs.append((max(peaks), "Measured fp16 matmul peak (20 GEMMs of 8192^3 in torch, a burst)"))
    if sustained:
        refs.append((max(sustained), "Sustained fp16 matmul rate (the same GEMM back to back for seconds, "
                     "once the clock has settled under the card's power and temperature limits; "
                     "bench/sustained.py)"))
    for peak, what in refs:
        lines.append(f"\n{what}: {peak:.1f} TFLOP/s. "
                     "esm2go useful TFLOP/s as a share of it (whole process; own time; steady state):\n")
        for r in rows:
            if r.get("system") == "esm2go" and r.get("useful_tflops"):
                tf = r["useful_tflops"]
                parts = [f"{tf:.0f} TFLOP/s = {100 * tf / peak:.1f}% whole process"]
                own = r.get("esm2go_internal_time_s")
                if own and r.get("wall_s"):  # same useful FLOPs over esm2go's own time
                    t = tf * r["wall_s"] / own
                    parts.append(f"{t:.0f} = {100 * t / peak:.1f}% own time")
                if r.get("steady_tokens_per_s") and r.get("tokens_per_s"):  # same FLOPs per token
                    t = tf * r["steady_tokens_per_s"] / r["tokens_per_s"]
                    parts.append(f"{t:.0f} = {100 * t / peak:.1f}% steady state")
                lines.append(f"- {r['model']} {r['input']}: " + "; ".join(parts))
    for r in rows:
        for k in ("attention", "check_max_rel_err", "check_hf_fp16_max_rel_err", "check_error",
                  "esm2go_vs_varlen_max_rel_err", "esm2go_internal_time_s", "esm2go_backend", "sampler_note", "note"):
            if r.get(k) not in (None, ""):
                if k == "attention" and r.get(k) == "varlen_attn":
                    continue
                notes.append(f"- {r['model']}/{r['input']}/{r['system']}: {k} = {r[k]}")
    if notes:
        lines.append("\nNotes:\n")
        lines.extend(sorted(set(notes)))
    return "\n".join(lines) + "\n"


def merge(docs):
    """One document from several runs (e.g. one device call per model): the results of
    all, the first run's metadata, and the models, dates and peaks of each."""
    meta = dict(docs[0].get("meta", {}))
    meta["models"] = [m for d in docs for m in d.get("meta", {}).get("models", [])]
    meta["date"] = ", ".join(str(d.get("meta", {}).get("date")) for d in docs)
    return {"meta": meta, "results": [r for d in docs for r in d.get("results", [])]}


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: report.py results.json [more results.json ...]  (several: merged into one table)")
    docs = []
    for path in sys.argv[1:]:
        with open(path) as f:
            docs.append(json.load(f))
    md = markdown(merge(docs) if len(docs) > 1 else docs[0])
    out = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "results.md" if len(docs) == 1 else "merged.md")
    with open(out, "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
