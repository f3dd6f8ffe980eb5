#!/usr/bin/env python3
"""esm2go's own throughput per output kind and for long proteins, on one GPU.

Two questions of docs/BENCHMARKS.md that the side-by-side bench does not answer:

1. Per-residue output at the GPU's pace: the same sequences with `--include mean` and
   `--include per_tok`, in parquet and npy (and each `--dtype` the binary offers), with the
   disk's sequential write speed measured in the same run (a file of --disk-gb written and
   fsynced in the output folder), so a per-token row can be judged against the disk.
2. Long proteins: tokens/s at 1k, 4k, 16k and 35k residues (`--truncation-seq-length -1`),
   about the same number of tokens per length.

Times are esm2go's own (its `done` line, after loading); each configuration runs once
after one warm-up process that fills the kernel cache.

  python3 bench/outputs.py --out "$OUT/outputs" [--model 650M] [--n 3000] [--work /tmp/esm2go_bench]
Needs bin/esm2go and, to build the random-init model, torch (bench/make_models.py).
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common as C  # noqa: E402
from bench import own_time, parse_done  # noqa: E402

BIN = os.path.join(REPO, "bin", "esm2go")


def log(msg):
    print(f"[outputs {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def disk_write_gbps(folder, gb):
    """Sequential write speed of folder's disk: gb GiB in 16 MiB writes, then fsync."""
    path = os.path.join(folder, "disk_probe.bin")
    block = os.urandom(16 << 20)
    t = time.time()
    with open(path, "wb") as f:
        for _ in range(int(gb * 64)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    s = time.time() - t
    os.remove(path)
    return round(gb * (1 << 30) / s / 1e9, 3)


def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def embed(model_dir, fasta, out, logfile, extra, env=None):
    """One esm2go embed process; `vmstat 1` runs beside it into logfile + '.vmstat' (the
    disk's write rate, CPU and I/O wait per second) when vmstat is there."""
    cmd = [BIN, "embed", "--model", model_dir, "--device", "cuda", "--precision", "fp16",
           "--log-format", "json", "--overwrite", "--out", out] + extra + [fasta]
    vm = None
    with open(logfile + ".vmstat", "w") as vf, open(logfile, "w") as f:
        try:
            vm = subprocess.Popen(["vmstat", "-n", "-t", "1"], stdout=vf, stderr=subprocess.DEVNULL)
        except OSError:
            pass
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        t = time.time()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=900,
                                env=dict(os.environ, **(env or {}))).returncode
        finally:
            if vm is not None:
                vm.terminate()
                vm.wait()
        wall = time.time() - t
    done = parse_done(logfile)
    own = own_time(done)
    return rc, wall, own, done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="650M")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--work", default="/tmp/esm2go_bench")
    ap.add_argument("--disk-gb", type=float, default=4.0)
    ap.add_argument("--long", default="1000,4000,16000,35000")
    ap.add_argument("--long-tokens", type=int, default=140000, help="about this many tokens per length")
    ap.add_argument("--skip-outputs", action="store_true")
    ap.add_argument("--dest", help="folder the outputs are written to (default WORK/outputs); a tmpfs such as "
                    "/dev/shm takes the disk out of the figures")
    ap.add_argument("--configs", help="comma list of configs to run (e.g. mean_npy_float32,per_tok_npy_float32); "
                    "default all")
    ap.add_argument("--profile", action="store_true",
                    help="per_tok configs also write a CPU profile and an execution trace to OUT/profiles")
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "make_models.py"), "--out", a.work, "--models", a.model],
                   check=True)
    model_dir = os.path.join(a.work, "models", C.model_dir_name(a.model))
    L, D, _ = C.MODEL_SHAPES[a.model]
    help_text = subprocess.run([BIN, "embed", "--help"], capture_output=True, text=True).stdout
    help_text += subprocess.run([BIN, "embed", "--help"], capture_output=True, text=True).stderr
    rows = []
    doc = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "model": a.model, "n": a.n,
                    "esm2go_version": subprocess.run([BIN, "version"], capture_output=True, text=True).stdout.strip()},
           "rows": rows}
    try:
        doc["meta"]["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    outdir = a.dest or os.path.join(a.work, "outputs")
    os.makedirs(outdir, exist_ok=True)
    doc["meta"]["dest"] = outdir
    wanted = set(a.configs.split(",")) if a.configs else None

    def save():
        C.save_json(os.path.join(a.out, "outputs.json"), doc)

    if not a.skip_outputs:
        doc["meta"]["disk_write_gbps"] = disk_write_gbps(outdir, a.disk_gb)
        log(f"disk: {doc['meta']['disk_write_gbps']} GB/s sequential write + fsync in {outdir}")
        fasta = os.path.join(a.work, f"synthetic_{a.n}.fasta")
        if not os.path.exists(fasta):
            C.write_fasta(fasta, C.synthetic_records(a.n))
        embed(model_dir, fasta, os.path.join(outdir, "warm.npy"), os.path.join(a.out, "logs", "warm.log"),
              ["--include", "mean"])
        dtypes = ["float32"]
        if "--dtype" in help_text:
            dtypes.append("float16")
        for include in ("mean", "per_tok"):
            for fmt in ("npy", "parquet"):
                for dt in dtypes:
                    name = f"{include}_{fmt}_{dt}"
                    if wanted is not None and name not in wanted:
                        continue
                    out = os.path.join(outdir, name + (".parquet" if fmt == "parquet" else ".npy"))
                    extra = ["--include", include, "--format", fmt]
                    if dt != "float32":
                        extra += ["--dtype", dt]
                    env = None
                    if a.profile and include == "per_tok":
                        prof = os.path.join(a.out, "profiles")
                        os.makedirs(prof, exist_ok=True)
                        env = {"ESM2GO_CPUPROFILE": os.path.join(prof, name + ".cpu.prof"),
                               "ESM2GO_TRACE": os.path.join(prof, name + ".trace")}
                    rc, wall, own, done = embed(model_dir, fasta, out, os.path.join(a.out, "logs", name + ".log"),
                                                extra, env)
                    size = du(out) if rc == 0 and os.path.exists(out) else None
                    row = {"config": name, "include": include, "format": fmt, "dtype": dt, "rc": rc,
                           "wall_s": round(wall, 2), "own_s": own, "bytes": size,
                           "seqs_per_s_own": round(a.n / own, 1) if own else None,
                           "out_gbps_own": round(size / own / 1e9, 3) if own and size else None}
                    rows.append(row)
                    log(json.dumps(row))
                    save()
                    if os.path.isdir(out):
                        subprocess.run(["rm", "-rf", out])
                    elif os.path.exists(out):
                        os.remove(out)

    for n in [int(x) for x in a.long.split(",") if x]:
        count = max(2, a.long_tokens // n)
        fasta = os.path.join(a.work, f"long_{n}.fasta")
        if not os.path.exists(fasta):
            recs = C.synthetic_records(count, seed=7 + n, median=n, sigma=0.0001, lo=n, hi=n)
            C.write_fasta(fasta, recs)
        out = os.path.join(outdir, f"long_{n}.npy")
        rc, wall, own, done = embed(model_dir, fasta, out, os.path.join(a.out, "logs", f"long_{n}.log"),
                                    ["--include", "mean", "--truncation-seq-length", "-1", "--format", "npy"])
        toks = count * (n + 2)
        flops = C.flops([n + 2] * count, L, D)
        row = {"config": f"long_{n}", "residues": n, "records": count, "rc": rc, "wall_s": round(wall, 2),
               "own_s": own, "tokens_per_s_own": round(toks / own) if own else None,
               "useful_tflops_own": round(flops / own / 1e12, 1) if own else None}
        rows.append(row)
        log(json.dumps(row))
        save()
        subprocess.run(["rm", "-rf", out])
    save()
    lines = [f"# esm2go outputs and long proteins ({a.model}, {doc['meta'].get('gpu', '?')}, {doc['meta']['date']})", ""]
    if "disk_write_gbps" in doc["meta"]:
        lines += [f"disk sequential write + fsync: {doc['meta']['disk_write_gbps']} GB/s", "",
                  "| config | seq/s (own) | output GB | GB/s (own) | rc |", "|---|---:|---:|---:|---:|"]
        for r in rows:
            if "include" in r:
                gb = f"{r['bytes'] / 1e9:.2f}" if r["bytes"] else "-"
                lines.append(f"| {r['config']} | {r['seqs_per_s_own']} | {gb} | {r['out_gbps_own']} | {r['rc']} |")
        lines.append("")
    lines += ["| residues | records | tokens/s (own) | useful TFLOP/s | rc |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "residues" in r:
            lines.append(f"| {r['residues']} | {r['records']} | {r['tokens_per_s_own']} | {r['useful_tflops_own']} | {r['rc']} |")
    with open(os.path.join(a.out, "outputs.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
