#!/usr/bin/env python3
"""Orchestrates the side-by-side GPU benchmark (entry point: bench/run.sh).

Per model x input: esm2go end to end (its own process, wall clock around it), the
PyTorch packed-varlen baseline (bench/torch_varlen.py) and HF EsmModel on padded batches
(bench/hf_padded.py); nvidia-smi sampled every 200 ms during each timed region; results
in OUT/results.json and OUT/results.md. See docs/BENCHMARKS.md.
"""

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common as C  # noqa: E402
import report  # noqa: E402

PROKKA = os.path.join(HERE, "data", "prokka_viruses_sprot.fasta")
TINY = os.path.join(REPO, "tests", "testdata", "models", "tiny")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, logfile, timeout):
    """Run cmd, stdout+stderr to logfile (and the tail echoed). Returns (rc, wall_s)."""
    log("$ " + " ".join(cmd))
    t = time.time()
    with open(logfile, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
            f.write(f"TIMEOUT after {timeout}s\n")
    wall = time.time() - t
    try:
        with open(logfile) as f:
            tail = f.read().splitlines()[-6:]
        for line in tail:
            print("    " + line[:300], flush=True)
    except OSError:
        pass
    return rc, wall


def slice_fasta(records, n, path):
    if not os.path.exists(path):
        C.write_fasta(path, records[:n])
    return path


def parse_done(logfile):
    """esm2go's final 'done' log record (--log-format json), or {}."""
    return parse_record(logfile, "done")


def parse_record(logfile, msg):
    """esm2go's last log record with that msg (--log-format json), or {}."""
    done = {}
    try:
        with open(logfile) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{") and f'"{msg}"' in line:
                    try:
                        d = json.loads(line)
                        if d.get("msg") == msg:
                            done = d
                    except ValueError:
                        pass
    except OSError:
        pass
    return done


def dur_s(s):
    """Go duration string ('1.234s', '850ms', '1m2.5s') -> seconds, or None."""
    if not isinstance(s, str):
        return None
    try:
        total, num = 0.0, ""
        i = 0
        while i < len(s):
            c = s[i]
            if c.isdigit() or c == ".":
                num += c
                i += 1
                continue
            unit = c
            if s[i:i + 2] in ("ms", "us", "µs", "ns"):
                unit = s[i:i + 2]
            i += len(unit)
            total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}[unit]
            num = ""
        return total
    except Exception:  # noqa: BLE001
        return None


def own_time(done):
    """esm2go's own time (after loading) from its `done` record: `elapsed_s` (seconds) in
    current versions, `time` (a Go duration string) in earlier ones; None if absent."""
    v = done.get("elapsed_s")
    if isinstance(v, (int, float)):
        return float(v)
    return dur_s(done.get("time"))


def esm2go_supports(binpath, flag):
    try:
        out = subprocess.run([binpath, "embed", "--help"], capture_output=True, text=True, timeout=30)
        return flag in (out.stdout + out.stderr)
    except Exception:  # noqa: BLE001
        return False


def steady_state(metrics_path, tokens_per_seq):
    """esm2go's throughput after its first metrics window (which holds in-process start-up:
    kernel module loads, cuBLAS set-up, the first allocations, GPU clocks ramping up), from
    the --metrics-json records; {} when there are fewer than two windows after the first."""
    try:
        with open(metrics_path) as f:
            recs = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return {}
    ws = [r for r in recs if not r.get("final") and r.get("window", 0) > 1 and r.get("window_s")]
    if len(ws) < 2:
        return {}
    secs, toks = sum(r["window_s"] for r in ws), sum(r["window_tokens"] for r in ws)
    out = {"steady_tokens_per_s": round(toks / secs), "steady_seqs_per_s": round(toks / secs / tokens_per_seq, 1),
           "steady_windows": len(ws)}
    # GPU busy in the same windows, weighted by their length (NVML's utilization, which the
    # windows carry when esm2go could read it).
    wu = [(r["window_s"], r["gpu_util_pct"]) for r in ws if isinstance(r.get("gpu_util_pct"), (int, float))]
    if wu:
        out["gpu_busy_steady_pct"] = round(sum(w * u for w, u in wu) / sum(w for w, _ in wu), 1)
    return out


def run_esm2go(a, name, model_dir, label, fasta, records, work, outdir, metrics_ok):
    L, D, H = C.MODEL_SHAPES[name]
    n_all = len(records)
    logf = os.path.join(outdir, "logs", f"esm2go_{name}_{label}.log")
    device = ["--device", "cpu"] if a.dry_run else ["--device", "cuda", "--precision", "fp16"]

    every = 10  # --metrics-every of the timed run, set from the warm-up's rate below (cmd reads it when called)

    def cmd(inp, out, metrics=None):
        c = [a.esm2go, "embed"] + device + ["--include", "mean", "--format", "npy",
                                            "--toks-per-batch", str(a.toks_per_batch), "--model", model_dir,
                                            "--out", out, "--overwrite", "--log-format", "json"]
        if metrics:
            c += ["--metrics-json", metrics, "--metrics-every", str(every)]
        return c + [inp]

    # Warm-up in two processes: the first, on a small slice, fills the NVRTC compile cache
    # (seconds of kernel compilation the first time); the second, on a larger slice, gives
    # the rate (its own time after loading, like the Python baselines' in-process warm-up)
    # used to cut the input to the time box.
    w = min(a.esm2go_warmup_seqs, n_all)
    w0 = min(256, w)
    for i, n in enumerate((w0, w)):
        wf = slice_fasta(records, n, os.path.join(work, f"{label}_first{n}.fasta"))
        rc, wwall = sh(cmd(wf, os.path.join(work, f"esm2go_{name}_{label}_warmup{i}")), logf, a.timeout)
        if rc != 0:
            return {"error": f"warm-up exit {rc}, see logs/{os.path.basename(logf)}"}
    done = parse_done(logf)
    rate = done.get("records_per_s") or (w / max(wwall, 1e-3))
    # Metrics windows of about 3 s (at most esm2go's default of 10 batches): the steady
    # state needs two windows after the first, which 10 batches of the 15B shape (~37 s)
    # would not give in a time-boxed run.
    tps = float(done.get("tokens_per_s") or 0)
    if tps > 0:
        every = max(1, min(10, int(3 * tps / a.toks_per_batch)))
    limit = n_all if a.budget_s <= 0 else min(n_all, max(w, int(float(rate) * a.budget_s)))
    inp = fasta if limit == n_all else slice_fasta(records, limit, os.path.join(work, f"{label}_first{limit}.fasta"))
    out = os.path.join(work, f"esm2go_{name}_{label}")
    metrics = os.path.join(outdir, f"esm2go_{name}_{label}.metrics.jsonl") if metrics_ok else None
    with open(logf, "a") as f:
        f.write("---- timed run ----\n")
    sampler = C.GpuSampler().start()
    rc, wall = sh(cmd(inp, out, metrics), logf, a.timeout)
    smp = sampler.stop()
    if rc != 0:
        return {"error": f"exit {rc}, see logs/{os.path.basename(logf)}"}
    done = parse_done(logf)
    counts = [C.n_tokens(s) for _, s in records[:limit]]
    own = own_time(done)
    steady = steady_state(metrics, sum(counts) / max(len(counts), 1)) if metrics else {}
    extra = dict(toks_per_batch=a.toks_per_batch, warmup_rate_seqs_per_s=round(float(rate), 1),
                 esm2go_internal_time_s=own,
                 # GPU busy over esm2go's own time (its NVML samples after loading), beside the
                 # whole-process figure (gpu_busy_pct: nvidia-smi around the process, start-up and
                 # loading included).
                 gpu_busy_own_pct=parse_record(logf, "metrics").get("mean_gpu_util_pct"),
                 # The backend that ran, as its 'model loaded' record names it (on a GPU:
                 # card, architecture, precision and the attention kernels).
                 esm2go_backend=parse_record(logf, "model loaded").get("backend"),
                 seqs_per_s_own=round(limit / own, 1) if own else None, **steady,
                 esm2go_embedded=done.get("embedded"),
                 esm2go_skipped=done.get("skipped"), metrics_json=os.path.basename(metrics) if metrics else None,
                 timing="wall clock around the process (includes start-up, CUDA init, weight load)", **smp)
    if done.get("skipped"):
        extra["note"] = f"esm2go skipped {done.get('skipped')} records"
    rec = C.result_record("esm2go", name, label, counts, wall, L, D, n_all, **extra)
    rec["_out_dir"] = out
    return rec


def run_python(a, script, system, name, model_dir, inputs, work, outdir):
    L, D, H = C.MODEL_SHAPES[name]
    rj = os.path.join(work, f"{system}_{name}.json")
    if os.path.exists(rj):
        os.remove(rj)
    cmd = [sys.executable, os.path.join(HERE, script), "--model", model_dir, "--model-name", name,
           "--shape", f"{L},{D},{H}", "--out-dir", os.path.join(work, f"{system}_{name}"), "--result-json", rj,
           "--budget-s", str(a.budget_s)]
    for label, path, _ in inputs:
        cmd += ["--input", f"{label}={path}"]
    if a.dry_run:
        cmd.append("--dry-run")
    if a.no_check and script == "torch_varlen.py":
        cmd.append("--no-check")
    rc, _ = sh(cmd, os.path.join(outdir, "logs", f"{system}_{name}.log"), a.timeout * 3)
    rows = []
    try:
        with open(rj) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        pass
    got = {r["input"] for r in rows}
    for label, _, recs in inputs:
        if label not in got:
            rows.append({"system": system, "model": name, "input": label, "n_input_seqs": len(recs),
                         "error": f"exit {rc}, no result; see logs/{system}_{name}.log"})
    return rows


def cross_check(rows, work, name):
    """max rel err between esm2go's and torch_varlen's means on the sequences both ran."""
    try:
        import numpy as np
    except ImportError:
        return
    for r in rows:
        if r.get("system") != "esm2go" or r.get("model") != name or "_out_dir" not in r:
            continue
        try:
            ours = glob.glob(os.path.join(r["_out_dir"], "mean_*.npy"))
            ref = os.path.join(work, f"torch_varlen_{name}", f"torch_varlen_{r['input']}_mean.npy")
            if len(ours) != 1 or not os.path.exists(ref):
                continue
            A, B = np.load(ours[0]), np.load(ref)
            n = min(len(A), len(B))
            if n == 0 or A.shape[1:] != B.shape[1:]:
                continue
            e = float(np.abs(A[:n] - B[:n]).max() / max(np.abs(B[:n]).max(), 1e-30))
            r["esm2go_vs_varlen_max_rel_err"] = round(e, 6)
            log(f"{name}/{r['input']}: esm2go vs torch_varlen means, first {n} sequences: max rel err {e:.3e}")
        except Exception as ex:  # noqa: BLE001
            r["esm2go_vs_varlen_max_rel_err"] = f"failed: {ex!r}"


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader",
                              "-i", C.gpu_index()], capture_output=True, text=True, timeout=20).stdout.strip()
        return out or None
    except Exception:  # noqa: BLE001
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="results folder (results.json, results.md, logs/)")
    ap.add_argument("--models", default=C.DEFAULT_MODELS, help="comma list of " + ",".join(C.MODEL_SHAPES))
    ap.add_argument("--n", type=int, default=20000, help="synthetic sequences")
    ap.add_argument("--inputs", default="synthetic,prokka")
    ap.add_argument("--systems", default="esm2go,torch_varlen,hf_padded")
    ap.add_argument("--budget-s", type=float, default=20.0,
                    help="time box per system, model and input: the input is cut to what the warm-up rate "
                         "says fits (0 = no cut)")
    ap.add_argument("--toks-per-batch", type=int, default=65536, help="esm2go --toks-per-batch")
    ap.add_argument("--esm2go-warmup-seqs", type=int, default=2000)
    ap.add_argument("--work", default="/tmp/esm2go_bench", help="models, inputs and embeddings (large)")
    ap.add_argument("--esm2go", default=os.path.join(REPO, "bin", "esm2go"))
    ap.add_argument("--timeout", type=int, default=300, help="seconds per esm2go process")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the baselines' check against HF EsmModel fp32 (for 15B: a 60 GB fp32 load); "
                         "esm2go's means are still compared with torch_varlen's")
    ap.add_argument("--dry-run", action="store_true",
                    help="no torch, no GPU: tiny model on the CPU for esm2go, fake timings for the baselines")
    a = ap.parse_args()

    outdir = os.path.abspath(a.out)
    os.makedirs(os.path.join(outdir, "logs"), exist_ok=True)
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    for m in models:
        if m not in C.MODEL_SHAPES:
            sys.exit(f"unknown model {m!r}; known: {','.join(C.MODEL_SHAPES)}")
    if a.dry_run:
        a.n = min(a.n, 300)

    have_bin = os.path.isfile(a.esm2go) and os.access(a.esm2go, os.X_OK)
    if "esm2go" in systems and not have_bin and not a.dry_run:
        sys.exit(f"{a.esm2go} not found: build it with `go build -o bin/esm2go ./cmd/esm2go` and carry bin/")
    metrics_ok = have_bin and esm2go_supports(a.esm2go, "--metrics-json")
    t_start = time.time()

    # inputs
    inputs = []
    for label in [s.strip() for s in a.inputs.split(",") if s.strip()]:
        if label == "synthetic":
            path = os.path.join(work, f"synthetic_n{a.n}.fasta")
            if not os.path.exists(path):
                log(f"writing {a.n} synthetic sequences to {path}")
                C.write_fasta(path, C.synthetic_records(a.n))
        elif label == "prokka":
            path = PROKKA
            if a.dry_run:
                path = slice_fasta(C.read_fasta(PROKKA), 300, os.path.join(work, "prokka_first300.fasta"))
        else:
            sys.exit(f"unknown input {label!r} (synthetic, prokka)")
        recs = C.read_fasta(path)
        inputs.append((label, path, recs))
        log(f"input {label}: {len(recs)} sequences, {sum(C.n_tokens(s) for _, s in recs):,} tokens after truncation")

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "gpu": gpu_name(), "host": platform.node(),
            "dry_run": a.dry_run, "models": models, "n_synthetic": a.n, "budget_s": a.budget_s,
            "esm2go_toks_per_batch": a.toks_per_batch, "metrics_json": metrics_ok, "python": sys.version.split()[0]}
    doc = {"meta": meta, "results": []}

    def save():
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in doc["results"]]
        C.save_json(os.path.join(outdir, "results.json"), {"meta": meta, "results": clean})
        report_md = report.markdown({"meta": meta, "results": clean})
        with open(os.path.join(outdir, "results.md"), "w") as f:
            f.write(report_md)
        return report_md

    # models
    if a.dry_run:
        model_dirs = {m: TINY for m in models}
        log("dry run: every model is the tiny test fixture on the CPU; FLOPs use the named shapes")
        subprocess.run([sys.executable, os.path.join(HERE, "make_models.py"), "--out", work, "--models",
                        ",".join(models), "--dry-run"], check=False)
    else:
        t = time.time()
        rc, _ = sh([sys.executable, os.path.join(HERE, "make_models.py"), "--out", work, "--models", ",".join(models)],
                   os.path.join(outdir, "logs", "make_models.log"), 3600)
        if rc != 0:
            sys.exit(f"make_models failed (exit {rc}); see {outdir}/logs/make_models.log")
        meta["make_models_s"] = round(time.time() - t, 1)
        model_dirs = {m: os.path.join(work, "models", C.model_dir_name(m)) for m in models}

    for m in models:
        log(f"==== model {m} {C.MODEL_SHAPES[m]} ====")
        if "esm2go" in systems:
            for label, path, recs in inputs:
                if not have_bin:
                    r = C.result_record("esm2go", m, label, [C.n_tokens(s) for _, s in recs], 1.0,
                                        *C.MODEL_SHAPES[m][:2], len(recs), note="dry run without bin/esm2go: fake")
                else:
                    r = run_esm2go(a, m, model_dirs[m], label, path, recs, work, outdir, metrics_ok)
                    r.setdefault("system", "esm2go")
                    r.setdefault("model", m)
                    r.setdefault("input", label)
                    r.setdefault("n_input_seqs", len(recs))
                    if a.dry_run:
                        r["dry_run"] = True
                doc["results"].append(r)
                save()
        if "torch_varlen" in systems:
            doc["results"] += run_python(a, "torch_varlen.py", "torch_varlen", m, model_dirs[m], inputs, work, outdir)
            save()
        if "hf_padded" in systems:
            doc["results"] += run_python(a, "hf_padded.py", "hf_padded", m, model_dirs[m], inputs, work, outdir)
            save()
        if not a.dry_run:
            cross_check(doc["results"], work, m)
        save()
    meta["total_s"] = round(time.time() - t_start, 1)
    print(save())
    log(f"done in {meta['total_s']}s: {outdir}/results.md and results.json")


if __name__ == "__main__":
    main()
