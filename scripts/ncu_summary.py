#!/usr/bin/env python3
"""Summarize an `ncu --csv --page raw` kernel table (scripts/profile.sh).

Keeps the kernels of the last forward pass (from the last embed_* launch on),
groups them by kernel name (cuBLAS GEMMs also by grid, which tells the
projections apart) and prints count, total microseconds and share.
"""
import csv
import re
import sys
from collections import OrderedDict


def main(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    hdr_i = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    hdr = rows[hdr_i]
    name_c, dur_c = hdr.index("Kernel Name"), hdr.index("gpu__time_duration.sum")
    grid_c = hdr.index("Grid Size") if "Grid Size" in hdr else None
    unit = rows[hdr_i + 1][dur_c] if not rows[hdr_i + 1][0].strip().isdigit() else "ns"
    scale = {"ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3, "nsecond": 1e-3}.get(unit, 1e-3)
    data = [r for r in rows[hdr_i + 1:] if len(r) == len(hdr) and r[0].strip().isdigit()]
    starts = [i for i, r in enumerate(data) if re.match(r"embed_", r[name_c])]
    if not starts:
        sys.exit("no embed_* kernel: not a forward pass profile")
    fwd = data[starts[-1]:]
    groups = OrderedDict()
    total = 0.0
    for r in fwd:
        name = r[name_c]
        short = re.sub(r"\(.*", "", name)[:70]
        if grid_c is not None and ("gemm" in name.lower() or "xmma" in name.lower() or "cutlass" in name.lower()):
            short += " grid" + r[grid_c].replace(" ", "")
        us = float(r[dur_c].replace(",", "")) * scale
        g = groups.setdefault(short, [0, 0.0])
        g[0] += 1
        g[1] += us
        total += us
    print(f"{path}: {len(fwd)} kernels, {total / 1e3:.2f} ms summed kernel time (unit {unit})")
    print(f"{'kernel':<95} {'n':>5} {'ms':>9} {'share':>6}")
    for k, (n, us) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"{k:<95} {n:>5} {us / 1e3:>9.3f} {100 * us / total:>5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1])
