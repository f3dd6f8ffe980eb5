#!/usr/bin/env python3
"""HF transformers EsmModel baseline (attn_implementation="sdpa", fp16) on length-sorted
padded batches of at most --padded-tokens (default 32768) padded tokens: FASTA in, mean
embeddings (over residues, last layer after emb_layer_norm_after) out to a .npy.

Tokenization is the ESM alphabet as a byte table (same ids as EsmTokenizer for the 20
standard residues and X), truncation to 1022 residues, BOS/EOS, <pad>=1 and an
attention mask. Timed region per input: read FASTA, tokenize, sort, pad, H2D, forward,
pooling, D2H, np.save. A warm-up on a slice comes first and gives the rate used to cut
the input to --budget-s seconds (the row records how many sequences ran).

  python3 bench/hf_padded.py --model DIR --shape L,D,H --input syn=path.fasta ... \
      --out-dir D --result-json R.json [--budget-s 20] [--dry-run]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

SYSTEM = "hf_padded"


def run_input(model, fasta, limit, padded_tokens, dev, out_npy=None):
    import numpy as np
    import torch
    recs = C.read_fasta(fasta)
    if limit is not None:
        recs = recs[:limit]
    toks = [C.tokenize(s) for _, s in recs]
    batches = C.pack_padded(toks, padded_tokens)
    D = model.config.hidden_size
    outs = torch.empty(len(toks), D, dtype=torch.float32, device=dev)
    for idx, max_len in batches:
        b = len(idx)
        buf = bytearray([C.PAD]) * (b * max_len)
        res = bytearray(b * max_len)  # 1 on residue positions
        for j, i in enumerate(idx):
            t = toks[i]
            buf[j * max_len: j * max_len + len(t)] = t
            res[j * max_len + 1: j * max_len + len(t) - 1] = b"\x01" * (len(t) - 2)
        ids = torch.frombuffer(buf, dtype=torch.uint8).view(b, max_len).to(torch.int64)
        am = (ids != C.PAD).to(torch.int64)
        rm = torch.frombuffer(res, dtype=torch.uint8).view(b, max_len)
        ids, am, rm = (t.pin_memory().to(dev, non_blocking=True) for t in (ids, am, rm))
        hs = model(input_ids=ids, attention_mask=am).last_hidden_state
        rmf = rm.to(hs.dtype).unsqueeze(-1)
        means = (hs * rmf).float().sum(1) / rmf.float().sum(1).clamp(min=1)
        outs[torch.tensor(idx, dtype=torch.int64).to(dev, non_blocking=True)] = means
    out = outs.cpu().numpy()
    if out_npy:
        np.save(out_npy, out)
    return out, [len(t) for t in toks]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-name", default="")
    ap.add_argument("--shape", required=True, help="layers,hidden,heads")
    ap.add_argument("--input", action="append", required=True, help="label=path.fasta (repeatable)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--result-json", required=True)
    ap.add_argument("--padded-tokens", type=int, default=32768)
    ap.add_argument("--budget-s", type=float, default=20.0)
    ap.add_argument("--warmup-seqs", type=int, default=512)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    layers, hidden, heads = (int(x) for x in a.shape.split(","))
    os.makedirs(a.out_dir, exist_ok=True)
    inputs = [x.split("=", 1) for x in a.input]
    results = []

    if a.dry_run:
        for label, path in inputs:
            recs = C.read_fasta(path)
            toks = [C.tokenize(s) for _, s in recs]
            b = C.pack_padded(toks, a.padded_tokens)
            counts = [len(t) for t in toks]
            padded = sum(len(i) * m for i, m in b)
            wall = 3e-6 * padded * (1 + layers * hidden / 20000.0)  # fake
            results.append(C.result_record(SYSTEM, a.model_name, label, counts, wall, layers, hidden, len(recs),
                                           batches=len(b), padding_frac=round(1 - sum(counts) / padded, 3),
                                           dry_run=True))
            print(f"[dry-run] {SYSTEM} {a.model_name} {label}: {len(recs)} seqs, {len(b)} batches, "
                  f"padding {1 - sum(counts) / padded:.1%}", flush=True)
        C.save_json(a.result_json, results)
        return

    import torch
    import transformers
    from transformers import EsmModel
    dev = torch.device("cuda")
    t0 = time.time()
    model = EsmModel.from_pretrained(a.model, dtype=torch.float16, attn_implementation="sdpa",
                                     add_pooling_layer=False).to(dev).eval()
    torch.cuda.synchronize()
    load_s = time.time() - t0
    print(f"{SYSTEM} {a.model_name}: loaded in {load_s:.1f}s; transformers {transformers.__version__}, "
          f"attn {getattr(model.config, '_attn_implementation', '?')}", flush=True)
    with torch.inference_mode():
        for label, path in inputs:
            n_all = len(C.read_fasta(path))
            w = min(a.warmup_seqs, n_all)
            run_input(model, path, w, a.padded_tokens, dev)
            torch.cuda.synchronize()
            t = time.time()
            run_input(model, path, w, a.padded_tokens, dev)
            torch.cuda.synchronize()
            rate = w / max(time.time() - t, 1e-6)
            limit = n_all if a.budget_s <= 0 else min(n_all, max(w, int(rate * a.budget_s)))
            torch.cuda.reset_peak_memory_stats()
            sampler = C.GpuSampler().start()
            t = time.time()
            _, counts = run_input(model, path, limit, a.padded_tokens, dev,
                                  out_npy=os.path.join(a.out_dir, f"{SYSTEM}_{label}_mean.npy"))
            torch.cuda.synchronize()
            wall = time.time() - t
            smp = sampler.stop()
            rec = C.result_record(SYSTEM, a.model_name, label, counts, wall, layers, hidden, n_all,
                                  padded_tokens=a.padded_tokens,
                                  torch_peak_alloc_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                                  warmup_rate_seqs_per_s=round(rate, 1), load_s=round(load_s, 2), **smp)
            print(f"{SYSTEM} {a.model_name} {label}: {rec['n_seqs']}/{n_all} seqs in {wall:.2f}s = "
                  f"{rec['seqs_per_s']} seq/s, {rec['useful_tflops']} TFLOP/s, busy {smp['gpu_busy_pct']}%", flush=True)
            results.append(rec)
            C.save_json(a.result_json, results)


if __name__ == "__main__":
    main()
