#!/usr/bin/env python3
"""Compare two esm2go npy outputs: same records, every column within tol x max|ref|.

  python3 tests/compare_npy.py REF_DIR OTHER_DIR TOL
"""
import json
import os
import sys

import numpy as np


def main():
    ref, other, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ra = open(os.path.join(ref, "records.tsv")).read()
    rb = open(os.path.join(other, "records.tsv")).read()
    if ra != rb:
        print("records.tsv differ")
        return 1
    cols = json.load(open(os.path.join(ref, "metadata.json")))["columns"]
    bad = 0
    for c in cols:
        a = np.load(os.path.join(ref, c["name"] + ".npy"))
        b = np.load(os.path.join(other, c["name"] + ".npy"))
        err = float(np.abs(a - b).max() / np.abs(a).max())
        ok = a.shape == b.shape and err <= tol
        bad += not ok
        print(f"{c['name']:12s} shape {a.shape} max|diff|/max|ref| {err:.3e} {'ok' if ok else 'FAIL'} (tol {tol:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
