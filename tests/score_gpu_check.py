#!/usr/bin/env python3
"""esm2go score on the GPU against the CPU, and the time of a 1,000-residue scan.

  python3 tests/score_gpu_check.py --bin bin/esm2go --out OUTDIR [--scan-model DIR]

1. A table of single, double and triple mutants of two wild types (records 0 and 3
   of tests/testdata/fairesm_some_proteins.fasta), every strategy (masked-marginals,
   wt-marginals, pll), and a --scan of records 0..2 (masked-marginals, wt-marginals),
   on the tiny fixture model with --device cpu, and --device cuda in fp32 and fp16.
   Each score column of a GPU run must match the CPU run's rows (same ids and mutants,
   same order) within tol x max|CPU score|: tol 1e-4 in fp32 and 3e-2 in fp16, the
   bounds tests/parity_cuda_test.go holds the logits to (a score is a difference of
   two log-softmax values of those logits, on the same scale).
2. With --scan-model (a model directory, e.g. the random 650M shape gpu_parity.py
   saves), times `esm2go score --scan` of one synthetic 1,000-residue protein on the
   GPU in fp16 (1,000 masked copies, 20,000 scores: 20 residues a position) and
   reports it.

Needs only the standard library. Exit status 1 if a comparison fails.
"""
import argparse
import csv
import os
import random
import subprocess
import sys
import time

FASTA = "tests/testdata/fairesm_some_proteins.fasta"
MODEL = "tests/testdata/models/tiny"
AA = "ACDEFGHIKLMNPQRSTVWY"


def read_fasta(path):
    recs, name, seq = [], None, []
    for line in open(path):
        line = line.strip()
        if line.startswith(">"):
            if name is not None:
                recs.append((name, "".join(seq)))
            name, seq = line[1:].split()[0], []
        elif line:
            seq.append(line)
    if name is not None:
        recs.append((name, "".join(seq)))
    return recs


def write_inputs(out):
    recs = read_fasta(FASTA)
    rng = random.Random(7)
    wts = [recs[0], recs[3]]
    with open(os.path.join(out, "wt.fasta"), "w") as f:
        for n, s in wts:
            f.write(f">{n}\n{s}\n")
    with open(os.path.join(out, "scan.fasta"), "w") as f:
        for n, s in recs[:3]:
            f.write(f">{n}\n{s[:300]}\n")
    with open(os.path.join(out, "mutants.tsv"), "w") as f:
        f.write("id\tmutant\n")
        for n, s in wts:
            for k in (1, 1, 1, 2, 2, 3):
                pos = sorted(rng.sample(range(min(len(s), 200)), k))
                subs = [f"{s[p]}{p + 1}{rng.choice([a for a in AA if a != s[p]])}" for p in pos]
                f.write(f"{n}\t{':'.join(subs)}\n")


def score(binary, out, name, device, precision, extra):
    path = os.path.join(out, name + ".tsv")
    cmd = [binary, "score", "--model", MODEL, "--device", device, "-q", "--overwrite", "-o", path] + extra
    if device != "cpu":
        cmd += ["--precision", precision]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{name}: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return None
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def compare(what, ref, got, tol):
    if ref is None or got is None:
        print(f"{what}: FAIL (a run failed)")
        return False
    if [(r["id"], r["mutant"]) for r in ref] != [(r["id"], r["mutant"]) for r in got]:
        print(f"{what}: FAIL (rows differ)")
        return False
    ok = True
    for col in [c for c in ref[0] if c not in ("id", "mutant")]:
        a = [float(r[col]) for r in ref]
        b = [float(r[col]) for r in got]
        scale = max(abs(x) for x in a) or 1.0
        err = max(abs(x - y) for x, y in zip(a, b)) / scale
        good = err <= tol
        ok &= good
        print(f"{what:32s} {col:18s} rows {len(a):6d} max|diff|/max|cpu| {err:.3e} (max|cpu| {scale:.3g}) "
              f"{'ok' if good else 'FAIL'} (tol {tol:g})")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="bin/esm2go")
    ap.add_argument("--out", required=True)
    ap.add_argument("--scan-model")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    write_inputs(args.out)
    table = ["--mutations", os.path.join(args.out, "mutants.tsv"), "--strategy", "masked-marginals,wt-marginals,pll",
             os.path.join(args.out, "wt.fasta")]
    scan = ["--scan", "--strategy", "masked-marginals,wt-marginals", os.path.join(args.out, "scan.fasta")]
    ok = True
    for kind, extra in (("table", table), ("scan", scan)):
        ref = score(args.bin, args.out, f"{kind}_cpu", "cpu", "", extra)
        for prec, tol in (("fp32", 1e-4), ("fp16", 3e-2)):
            got = score(args.bin, args.out, f"{kind}_cuda_{prec}", "cuda", prec, extra)
            ok &= compare(f"{kind} cuda {prec} vs cpu", ref, got, tol)
    if args.scan_model:
        rng = random.Random(11)
        long = os.path.join(args.out, "long.fasta")
        with open(long, "w") as f:
            f.write(">synthetic_1000\n" + "".join(rng.choice(AA) for _ in range(1000)) + "\n")
        path = os.path.join(args.out, "scan_1000.tsv")
        cmd = [args.bin, "score", "--model", args.scan_model, "--device", "cuda", "--precision", "fp16", "-q",
               "--overwrite", "--scan", "-o", path, long]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.time() - t0
        rows = sum(1 for _ in open(path)) - 1 if r.returncode == 0 else 0
        print(f"scan of a 1,000-residue protein, {args.scan_model}, cuda fp16: rc {r.returncode}, "
              f"{dt:.2f} s whole process (loading included), {rows} rows {r.stderr.strip()}")
        ok &= r.returncode == 0 and rows == 20000
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
