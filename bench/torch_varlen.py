#!/usr/bin/env python3
"""PyTorch packed-varlen ESM2 baseline (FASTA in, mean embeddings out), fp16.

An HF-equivalent ESM2 forward written here over cu_seqlens batches: tokens of many
sequences concatenated (no padding), fused QKV GEMM, rotary with positions restarting
per sequence (cos/sin in fp32), attention by
torch.nn.attention.varlen.varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k)
(q/k/v (total_tokens, heads, head_dim) fp16; softmax scale = its default head_dim^-0.5,
which equals HF's "q *= head_dim^-0.5 before rotary" because rotary is linear), pre-LN,
exact GELU, token-dropout scale 0.88, final emb_layer_norm_after, mean over residues.
If varlen_attn cannot be imported, a per-sequence SDPA loop is used and every result
says so (attention field).

Weights: model.safetensors in the folder (released ESM2 names, prefix "esm."), cast to fp16.
Timed region per input: read FASTA, tokenize, pack (CPU), H2D, forward, pooling, D2H,
np.save of the (N, D) float32 means. Before it: a warm-up on a slice (kernels, cuBLAS),
which also measures the rate used to cut the input to --budget-s seconds (the row says
how many sequences ran). A check against HF EsmModel (fp32) on 3 sequences prints the
max relative error.

  python3 bench/torch_varlen.py --model DIR --input syn=path.fasta --input prokka=... \
      --out-dir D --result-json R.json [--budget-s 20] [--dry-run]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from sustained import sustained_tflops  # noqa: E402

SYSTEM = "torch_varlen"


def load_weights(model_dir, layers, dev):
    import torch
    from safetensors.torch import load_file

    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    h = torch.float16

    def g(name, dtype=h):
        return sd["esm." + name].to(device=dev, dtype=dtype).contiguous()

    W = {"emb": g("embeddings.word_embeddings.weight"),
         "lnf_w": g("encoder.emb_layer_norm_after.weight"), "lnf_b": g("encoder.emb_layer_norm_after.bias"),
         "inv_freq": None, "layers": []}
    key = "esm.encoder.layer.0.attention.self.rotary_embeddings.inv_freq"
    if key in sd:
        W["inv_freq"] = sd[key].to(device=dev, dtype=torch.float32)
    for i in range(layers):
        p = f"encoder.layer.{i}."
        s = p + "attention.self."
        W["layers"].append({
            "wqkv": torch.cat([g(s + "query.weight"), g(s + "key.weight"), g(s + "value.weight")], 0).contiguous(),
            "bqkv": torch.cat([g(s + "query.bias"), g(s + "key.bias"), g(s + "value.bias")], 0).contiguous(),
            "wo": g(p + "attention.output.dense.weight"), "bo": g(p + "attention.output.dense.bias"),
            "ln1_w": g(p + "attention.LayerNorm.weight"), "ln1_b": g(p + "attention.LayerNorm.bias"),
            "w1": g(p + "intermediate.dense.weight"), "b1": g(p + "intermediate.dense.bias"),
            "w2": g(p + "output.dense.weight"), "b2": g(p + "output.dense.bias"),
            "ln2_w": g(p + "LayerNorm.weight"), "ln2_b": g(p + "LayerNorm.bias"),
        })
    del sd
    return W


def get_attention():
    """(attn(q, k, v, cu, cu_list, max_len) -> out, state); state["name"] says which path ran."""
    import torch
    import torch.nn.functional as F

    def loop(q, k, v, cu, cu_list, max_len):
        out = torch.empty_like(q)
        for a, b in zip(cu_list[:-1], cu_list[1:]):
            qs, ks, vs = (t[a:b].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            out[a:b] = F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
        return out

    state = {"name": "varlen_attn"}
    try:
        from torch.nn.attention.varlen import varlen_attn
    except Exception as e:  # noqa: BLE001
        varlen_attn = None
        state["name"] = f"sdpa_per_sequence_loop (varlen_attn import failed: {e!r})"
        print(f"WARNING: {state['name']}; this baseline is slower than a real packed one", flush=True)

    def attn(q, k, v, cu, cu_list, max_len):
        if varlen_attn is not None and state["name"] == "varlen_attn":
            try:
                out = varlen_attn(q, k, v, cu, cu, max_len, max_len)
                return out[0] if isinstance(out, tuple) else out
            except Exception as e:  # noqa: BLE001
                state["name"] = f"sdpa_per_sequence_loop (varlen_attn failed: {e!r})"
                print(f"WARNING: {state['name']}; this baseline is slower than a real packed one", flush=True)
        return loop(q, k, v, cu, cu_list, max_len)
    return attn, state


class Model:
    def __init__(self, model_dir, layers, hidden, heads, dev):
        import torch
        self.L, self.D, self.H, self.hd = layers, hidden, heads, hidden // heads
        self.dev = dev
        self.W = load_weights(model_dir, layers, dev)
        inv = self.W["inv_freq"]
        if inv is None:
            inv = 1.0 / (10000 ** (torch.arange(0, self.hd, 2, dtype=torch.float32, device=dev) / self.hd))
        t = torch.arange(1026, dtype=torch.float32, device=dev)
        fr = torch.outer(t, inv)
        emb = torch.cat([fr, fr], -1)
        self.cos = emb.cos().unsqueeze(1)  # (P, 1, hd) fp32
        self.sin = emb.sin().unsqueeze(1)
        self.attn, self.attn_state = get_attention()

    @property
    def attn_name(self):
        return self.attn_state["name"]

    def rotary(self, x, cos, sin):
        import torch
        xf = x.float()
        x1, x2 = xf[..., : self.hd // 2], xf[..., self.hd // 2:]
        rot = torch.cat([-x2, x1], -1)
        return (xf * cos + rot * sin).to(x.dtype)

    def forward_means(self, tok, pos, seg, cu, cu_list, max_len, nseq):
        """Mean over residues of the last layer (after emb_layer_norm_after), (nseq, D) fp32."""
        import torch
        import torch.nn.functional as F
        W, D, H, hd = self.W, self.D, self.H, self.hd
        T = tok.shape[0]
        x = F.embedding(tok, W["emb"]) * 0.88
        cos, sin = self.cos[pos], self.sin[pos]
        for lw in W["layers"]:
            h = F.layer_norm(x, (D,), lw["ln1_w"], lw["ln1_b"], 1e-5)
            qkv = F.linear(h, lw["wqkv"], lw["bqkv"]).view(T, 3, H, hd)
            q = self.rotary(qkv[:, 0], cos, sin)
            k = self.rotary(qkv[:, 1], cos, sin)
            v = qkv[:, 2].contiguous()
            o = self.attn(q, k, v, cu, cu_list, max_len).reshape(T, D)
            x = x + F.linear(o, lw["wo"], lw["bo"])
            h = F.layer_norm(x, (D,), lw["ln2_w"], lw["ln2_b"], 1e-5)
            x = x + F.linear(F.gelu(F.linear(h, lw["w1"], lw["b1"])), lw["w2"], lw["b2"])
        x = F.layer_norm(x, (D,), W["lnf_w"], W["lnf_b"], 1e-5)
        sums = torch.zeros(nseq + 1, D, dtype=torch.float32, device=self.dev)
        sums.index_add_(0, seg, x.float())
        counts = (cu[1:] - cu[:-1] - 2).clamp(min=1).to(torch.float32).unsqueeze(1)
        return sums[:nseq] / counts


def host_batch(token_seqs, idx, cu_list):
    """CPU tensors for one packed batch: tokens, positions, segment ids (BOS/EOS -> nseq)."""
    import torch
    nseq = len(idx)
    buf = b"".join(token_seqs[i] for i in idx)
    tok = torch.frombuffer(bytearray(buf), dtype=torch.uint8).to(torch.int64)
    pos_parts, seg_parts = [], []
    for j, i in enumerate(idx):
        n = len(token_seqs[i])
        pos_parts.append(torch.arange(n, dtype=torch.int64))
        s = torch.full((n,), j, dtype=torch.int64)
        s[0] = nseq
        s[-1] = nseq
        seg_parts.append(s)
    pos = torch.cat(pos_parts)
    seg = torch.cat(seg_parts)
    cu = torch.tensor(cu_list, dtype=torch.int32)
    return tok, pos, seg, cu


def run_input(model, fasta, limit, toks_per_batch, out_npy=None):
    """The timed pipeline: FASTA -> means (N, D) float32 on the host. Returns (means, token_counts)."""
    import numpy as np
    import torch
    recs = C.read_fasta(fasta)
    if limit is not None:
        recs = recs[:limit]
    toks = [C.tokenize(s) for _, s in recs]
    order = sorted(range(len(toks)), key=lambda i: -len(toks[i]))
    batches = C.pack_varlen(toks, order, toks_per_batch)
    dev = model.dev
    outs = torch.empty(len(toks), model.D, dtype=torch.float32, device=dev)
    for idx, cu_list, max_len in batches:
        tok, pos, seg, cu = host_batch(toks, idx, cu_list)
        tok, pos, seg, cu = (t.pin_memory().to(dev, non_blocking=True) for t in (tok, pos, seg, cu))
        means = model.forward_means(tok, pos, seg, cu, cu_list, max_len, len(idx))
        outs[torch.tensor(idx, dtype=torch.int64).to(dev, non_blocking=True)] = means
    res = outs.cpu().numpy()
    if out_npy:
        np.save(out_npy, res)
    return res, [len(t) for t in toks]


def forward_alone(model, fasta, limit, toks_per_batch, reps=1):
    """The forward-alone ceiling of any PyTorch pipeline: the same sequences, tokenized, packed
    and uploaded BEFORE the timer; timed: the forward passes with mean pooling on the GPU, one
    synchronize at the end. No FASTA reading, no D2H of results, no file writing. Returns
    (wall seconds, token counts)."""
    import torch
    recs = C.read_fasta(fasta)[:limit]
    toks = [C.tokenize(s) for _, s in recs]
    order = sorted(range(len(toks)), key=lambda i: -len(toks[i]))
    dev = model.dev
    staged = []
    for idx, cu_list, max_len in C.pack_varlen(toks, order, toks_per_batch):
        tok, pos, seg, cu = (t.to(dev) for t in host_batch(toks, idx, cu_list))
        staged.append((tok, pos, seg, cu, cu_list, max_len, len(idx)))
    outs = []
    model.forward_means(*staged[0])  # warm for this input's shapes
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(reps):
        outs.clear()
        for b in staged:
            outs.append(model.forward_means(*b))
    torch.cuda.synchronize()
    return (time.time() - t) / reps, [len(x) for x in toks]


def hf_check(model, model_dir, fasta, dev):
    """max rel err of our fp16 means vs HF EsmModel fp32 (and HF fp16 vs fp32 for scale) on 3 sequences."""
    import torch
    from transformers import EsmModel
    recs = C.read_fasta(fasta)
    recs = sorted(recs, key=lambda r: len(r[1]))
    pick = [recs[0], recs[len(recs) // 2], recs[-1]]
    toks = [C.tokenize(s) for _, s in pick]
    cu_list = [0]
    for t in toks:
        cu_list.append(cu_list[-1] + len(t))
    tok, pos, seg, cu = (t.to(dev) for t in host_batch(toks, list(range(3)), cu_list))
    with torch.no_grad():
        ours = model.forward_means(tok, pos, seg, cu, cu_list, max(len(t) for t in toks), 3).cpu()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    errs = {}
    for name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
        m = EsmModel.from_pretrained(model_dir, dtype=dt, attn_implementation="sdpa",
                                     add_pooling_layer=False).to(dev).eval()
        rows = []
        with torch.no_grad():
            for t in toks:
                ids = torch.tensor([list(t)], dtype=torch.long, device=dev)
                hs = m(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].float()
                rows.append(hs[1:-1].mean(0).cpu())
        errs[name] = torch.stack(rows)
        del m
        torch.cuda.empty_cache()
    ref = errs["fp32"]
    e_ours = float((ours - ref).abs().max() / ref.abs().max())
    e_hf16 = float((errs["fp16"] - ref).abs().max() / ref.abs().max())
    lens = [len(s) for _, s in pick]
    ok = e_ours <= max(10 * e_hf16, 2e-2)
    print(f"check vs HF EsmModel fp32 on 3 sequences (lengths {lens}): varlen fp16 max rel err {e_ours:.3e}; "
          f"HF fp16 max rel err {e_hf16:.3e} -> {'OK' if ok else 'MISMATCH'}", flush=True)
    return {"check_max_rel_err": e_ours, "check_hf_fp16_max_rel_err": e_hf16, "check_ok": ok, "check_lengths": lens}


def matmul_peak_tflops(dev):
    """Measured fp16 GEMM throughput (8192^3, fp32 accumulate), the 'matmul peak' of the goals."""
    import torch
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.float16)
    b = torch.randn(n, n, device=dev, dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    reps = 20
    t = time.time()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return round(2.0 * n ** 3 * reps / (time.time() - t) / 1e12, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="model folder (config.json + model.safetensors)")
    ap.add_argument("--model-name", default="", help="label for the results (35M, 650M, ...)")
    ap.add_argument("--shape", required=True, help="layers,hidden,heads")
    ap.add_argument("--input", action="append", required=True, help="label=path.fasta (repeatable)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--result-json", required=True)
    ap.add_argument("--toks-per-batch", type=int, default=65536)
    ap.add_argument("--budget-s", type=float, default=20.0)
    ap.add_argument("--warmup-seqs", type=int, default=512)
    ap.add_argument("--sustained-s", type=float, default=10.0,
                    help="seconds of back-to-back GEMMs for the sustained matmul rate (0: skip)")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="no torch: parse, tokenize, pack; fake timings")
    a = ap.parse_args()
    layers, hidden, heads = (int(x) for x in a.shape.split(","))
    os.makedirs(a.out_dir, exist_ok=True)
    inputs = [x.split("=", 1) for x in a.input]
    results = []

    if a.dry_run:
        for label, path in inputs:
            recs = C.read_fasta(path)
            toks = [C.tokenize(s) for _, s in recs]
            b = C.pack_varlen(toks, sorted(range(len(toks)), key=lambda i: -len(toks[i])), a.toks_per_batch)
            counts = [len(t) for t in toks]
            wall = 1e-6 * sum(counts) * (1 + layers * hidden / 20000.0)  # fake
            results.append(C.result_record(SYSTEM, a.model_name, label, counts, wall, layers, hidden, len(recs),
                                           attention="dry-run", batches=len(b), dry_run=True))
            print(f"[dry-run] {SYSTEM} {a.model_name} {label}: {len(recs)} seqs, {len(b)} batches", flush=True)
        C.save_json(a.result_json, results)
        return

    import torch
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.time()
    model = Model(a.model, layers, hidden, heads, dev)
    torch.cuda.synchronize()
    load_s = time.time() - t0
    print(f"{SYSTEM} {a.model_name}: weights loaded in {load_s:.1f}s; attention = {model.attn_name}; "
          f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
    check = {}
    try:
        peak = matmul_peak_tflops(dev)
        print(f"measured fp16 matmul peak: {peak} TFLOP/s", flush=True)
    except Exception as e:  # noqa: BLE001
        peak = None
        print(f"WARNING: matmul peak measurement failed: {e!r}", flush=True)
    sustained = None
    if a.sustained_s > 0:
        try:
            sustained = sustained_tflops(dev, a.sustained_s)
            print(f"sustained fp16 matmul rate ({a.sustained_s:g} s of GEMMs): {sustained} TFLOP/s", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"WARNING: sustained matmul measurement failed: {e!r}", flush=True)
    with torch.inference_mode():
        for label, path in inputs:
            n_all = len(C.read_fasta(path))
            w = min(a.warmup_seqs, n_all)
            run_input(model, path, w, a.toks_per_batch)  # warm-up: kernels, cuBLAS, allocator
            torch.cuda.synchronize()
            t = time.time()
            run_input(model, path, w, a.toks_per_batch)  # rate estimate
            torch.cuda.synchronize()
            rate = w / max(time.time() - t, 1e-6)
            limit = n_all if a.budget_s <= 0 else min(n_all, max(w, int(rate * a.budget_s)))
            torch.cuda.reset_peak_memory_stats()
            sampler = C.GpuSampler().start()
            t = time.time()
            _, counts = run_input(model, path, limit, a.toks_per_batch,
                                  out_npy=os.path.join(a.out_dir, f"{SYSTEM}_{label}_mean.npy"))
            torch.cuda.synchronize()
            wall = time.time() - t
            smp = sampler.stop()
            rec = C.result_record(SYSTEM, a.model_name, label, counts, wall, layers, hidden, n_all,
                                  attention=model.attn_name, toks_per_batch=a.toks_per_batch,
                                  torch_peak_alloc_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                                  warmup_rate_seqs_per_s=round(rate, 1), load_s=round(load_s, 2),
                                  matmul_peak_tflops=peak, matmul_sustained_tflops=sustained, **smp)
            print(f"{SYSTEM} {a.model_name} {label}: {rec['n_seqs']}/{n_all} seqs in {wall:.2f}s = "
                  f"{rec['seqs_per_s']} seq/s, {rec['useful_tflops']} TFLOP/s, busy {smp['gpu_busy_pct']}%", flush=True)
            results.append(rec)
            C.save_json(a.result_json, results)
            # The forward-alone baseline over the same sequences (system torch_forward).
            torch.cuda.reset_peak_memory_stats()
            sampler = C.GpuSampler().start()
            fwall, fcounts = forward_alone(model, path, limit, a.toks_per_batch)
            smp = sampler.stop()
            frec = C.result_record("torch_forward", a.model_name, label, fcounts, fwall, layers, hidden, n_all,
                                   attention=model.attn_name, toks_per_batch=a.toks_per_batch,
                                   torch_peak_alloc_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                                   matmul_peak_tflops=peak, matmul_sustained_tflops=sustained, **smp)
            print(f"torch_forward {a.model_name} {label}: {frec['n_seqs']} seqs in {fwall:.2f}s = "
                  f"{frec['seqs_per_s']} seq/s, {frec['useful_tflops']} TFLOP/s (forward alone)", flush=True)
            results.append(frec)
            C.save_json(a.result_json, results)
    if not a.no_check:
        try:
            check = hf_check(model, a.model, inputs[0][1], dev)
        except Exception as e:  # noqa: BLE001
            print(f"WARNING: HF check failed: {e!r}", flush=True)
            check = {"check_error": repr(e)}
    for r in results:
        r.update(check)
    C.save_json(a.result_json, results)


if __name__ == "__main__":
    main()
