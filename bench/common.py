"""Shared helpers for the esm2go GPU benchmark (bench/): FASTA, tokenizer, packing,
FLOP counts, the synthetic input, model shapes and an nvidia-smi sampler.

Pure standard library: everything here runs without torch or numpy (--dry-run).
"""

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from gen_fixtures import read_fasta  # noqa: E402,F401  (stdlib only at import time)

BOS, PAD, EOS, UNK = 0, 1, 2, 3
MAX_RESIDUES = 1022
STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
RESIDUE_ORDER = "LAGVSERTIDPKQNFYMHWCXBUZO.-"  # ids 4..30, ESM alphabet order

# name -> (layers, hidden, heads); FFN = 4*hidden
MODEL_SHAPES = {
    "35M": (12, 480, 20),
    "150M": (30, 640, 20),
    "650M": (33, 1280, 20),
    "3B": (36, 2560, 40),
    "15B": (48, 5120, 40),
}
DEFAULT_MODELS = "35M,150M,650M"
# Saved in float16: in float32 the 15B shape is ~60 GB, more than the GPU host's disk holds
# beside its inputs and outputs. The released 15B checkpoint is used in fp16 in practice too.
SAVE_FP16 = {"15B"}

# bytes.translate table: ASCII residue -> token id, anything else -> <unk>
_TABLE = bytearray([UNK] * 256)
for _i, _c in enumerate(RESIDUE_ORDER):
    _TABLE[ord(_c)] = 4 + _i
TOKEN_TABLE = bytes(_TABLE)


def model_dir_name(name):
    return f"esm2_{name}_shape"


def write_fasta(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for name, seq in records:
            f.write(f">{name}\n")
            for i in range(0, len(seq), 80):
                f.write(seq[i:i + 80] + "\n")
    os.replace(tmp, path)


def tokenize(seq):
    """bytes of token ids: BOS + first 1022 residues + EOS (fair-esm truncation)."""
    s = seq[:MAX_RESIDUES].upper().encode("ascii", "replace")
    return bytes([BOS]) + s.translate(TOKEN_TABLE) + bytes([EOS])


def n_tokens(seq):
    return min(len(seq), MAX_RESIDUES) + 2


def flops(token_counts, layers, hidden):
    """Useful forward FLOPs: per sequence of n tokens n*(24*L*d^2 + 4*L*n*d)."""
    return float(sum(n * (24.0 * layers * hidden * hidden + 4.0 * layers * n * hidden) for n in token_counts))


def pack_varlen(token_seqs, order, max_tokens):
    """Greedy packing of token_seqs (list of bytes) taken in `order` into batches of at
    most max_tokens concatenated tokens. Returns [(indices, cu_seqlens, max_len)]."""
    batches, cur, cu, total, mx = [], [], [0], 0, 0
    for i in order:
        n = len(token_seqs[i])
        if cur and total + n > max_tokens:
            batches.append((cur, cu, mx))
            cur, cu, total, mx = [], [0], 0, 0
        cur.append(i)
        total += n
        cu.append(total)
        mx = max(mx, n)
    if cur:
        batches.append((cur, cu, mx))
    return batches


def pack_padded(token_seqs, max_padded_tokens):
    """Length-sorted (longest first) padded batches: count*max_len <= max_padded_tokens.
    Returns [(indices, max_len)]."""
    order = sorted(range(len(token_seqs)), key=lambda i: -len(token_seqs[i]))
    batches, cur, mx = [], [], 0
    for i in order:
        n = len(token_seqs[i])
        m = max(mx, n)
        if cur and (len(cur) + 1) * m > max_padded_tokens:
            batches.append((cur, mx))
            cur, m = [], n
        cur.append(i)
        mx = m
    if cur:
        batches.append((cur, mx))
    return batches


def synthetic_records(n, seed=20251126, median=300.0, sigma=0.6, lo=30, hi=1022):
    """n random sequences, lengths lognormal(median, sigma) clipped to [lo, hi]."""
    rng = random.Random(seed)
    mu = math.log(median)
    out = []
    for i in range(n):
        length = int(round(rng.lognormvariate(mu, sigma)))
        length = max(lo, min(hi, length))
        out.append((f"syn{i:06d}", "".join(rng.choices(STANDARD_RESIDUES, k=length))))
    return out


def save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def gpu_index():
    """nvidia-smi index of the GPU the benchmark uses (BENCH_GPU, default 0).
    run.sh sets CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA ordinal 0 is nvidia-smi index 0."""
    return os.environ.get("BENCH_GPU", "0")


class GpuSampler:
    """nvidia-smi utilization.gpu and memory.used every interval_ms while running.
    Without nvidia-smi it records nothing and says so (summary()['note'])."""

    def __init__(self, interval_ms=200):
        self.interval_ms = interval_ms
        self.proc = None
        self.thread = None
        self.samples = []  # (t, util%, mem MiB)
        self.note = ""

    def _reader(self):
        try:
            for line in self.proc.stdout:
                parts = [p.strip() for p in line.strip().split(",")]
                if len(parts) < 2:
                    continue
                try:
                    self.samples.append((time.time(), float(parts[0]), float(parts[1])))
                except ValueError:
                    continue
        except Exception as e:  # noqa: BLE001
            self.note = f"sampler read error: {e!r}"

    def start(self):
        exe = shutil.which("nvidia-smi")
        if exe is None:
            self.note = "nvidia-smi not found: no GPU utilization or memory samples"
            return self
        cmd = [exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
               "-lms", str(self.interval_ms), "-i", gpu_index()]
        if shutil.which("stdbuf"):
            cmd = [shutil.which("stdbuf"), "-oL"] + cmd
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except Exception as e:  # noqa: BLE001
            self.note = f"nvidia-smi failed to start: {e!r}"
            self.proc = None
            return self
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.proc is not None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=3)
            except Exception:  # noqa: BLE001
                try:
                    self.proc.kill()
                    self.proc.wait(timeout=3)
                except Exception:  # noqa: BLE001
                    pass
            if self.thread is not None:
                self.thread.join(timeout=3)
        return self.summary()

    def summary(self):
        u = [s[1] for s in self.samples]
        m = [s[2] for s in self.samples]
        return {
            "gpu_busy_pct": round(sum(u) / len(u), 1) if u else None,
            "gpu_busy_min_pct": min(u) if u else None,
            "peak_mem_mib": max(m) if m else None,
            "n_samples": len(u),
            "sampler_note": self.note,
        }


def gpu_mem_used_now():
    """memory.used (MiB) of the benchmark GPU right now, or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", gpu_index()],
                             capture_output=True, text=True, timeout=20).stdout
        return float(out.strip().splitlines()[0])
    except Exception:  # noqa: BLE001
        return None


def result_record(system, model, inp, token_counts, wall_s, layers, hidden, n_input, **extra):
    """One row of results.json."""
    n = len(token_counts)
    tok = sum(token_counts)
    fl = flops(token_counts, layers, hidden)
    rec = {
        "system": system, "model": model, "input": inp,
        "n_seqs": n, "n_input_seqs": n_input, "cut": n < n_input, "n_tokens": tok,
        "wall_s": round(wall_s, 4),
        "seqs_per_s": round(n / wall_s, 2) if wall_s > 0 else None,
        "tokens_per_s": round(tok / wall_s, 1) if wall_s > 0 else None,
        "useful_tflops": round(fl / wall_s / 1e12, 3) if wall_s > 0 else None,
        "flops": fl,
    }
    rec.update(extra)
    return rec
