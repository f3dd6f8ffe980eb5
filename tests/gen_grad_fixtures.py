#!/usr/bin/env python3
"""Gradient fixtures for esm2go's graph package, from HF transformers' EsmForMaskedLM in float64.

Writes --out (normally tests/testdata/fixtures/grad_tiny.safetensors), read by the Go test
graph/fixture_test.go (build tag gradfixture).

Reference: HF EsmForMaskedLM loaded with from_pretrained from tests/testdata/models/tiny (eager
attention), converted to float64, on the CPU; each input alone (batch 1, attention_mask all ones).
The cost of an input is one masked-LM logit, logits[pos, token]. Its gradient is taken

  - w.r.t. the input embeddings: the word-embedding rows E[tokens] BEFORE token dropout. A forward
    hook on esm.embeddings.word_embeddings replaces the lookup's output with a leaf tensor that
    requires grad, and the model is called with input_ids, so HF's own token-dropout code (rows of
    <mask> zeroed, x *= 0.88 / (1 - n_mask/n)) runs on it unchanged, exactly as esm2go's graph
    applies token dropout to Pass.Embeddings. (Passing inputs_embeds instead would skip token
    dropout in HF: it needs input_ids to find the masks.) Gradient rows of <mask> tokens are 0.
  - w.r.t. the parameters in GRAD_PARAMS (canonical names: the HF EsmModel names without "esm.").

Softmax: HF's eager attention may call softmax with dtype=torch.float32 (an upcast meant for fp16;
in a float64 model it is a downcast). The reference wraps torch.nn.functional.softmax so that it
keeps its input's dtype, making the whole reference float64; the same gradients with HF's softmax
as written are computed too, and their difference is recorded (checks.hf_softmax_as_written).

Checks (exit status 3 if one fails, the file is still written; the last line printed is
"SELF-CHECK PASS ..." or "SELF-CHECK FAIL ..." with the measured errors and their bounds):
  - the float64 HF logits equal gen_fixtures.ref_forward (the ESM2 equations) in float64;
  - every gradient agrees with finite differences (fourth-order central stencil) of the ESM2
    equations in float64 (equations_logit below) along random directions (embeddings: one per
    input over all rows, and one on the row before the logit's; each parameter: one);
  - every gradient agrees, as a whole tensor, with autograd through the same equations;
  - the hook changed nothing: logits with the hook equal a plain call;
  - embedding-gradient rows of <mask> tokens are exactly 0.

Why the finite differences run on the equations and not on the HF model: HF's "float64" forward is
not exactly the float64 equations. Its logits differ from them by ~1e-7 relative, the float32
level (checks.equations_vs_hf_logits: 8.5e-8 with transformers 5.17), although its softmax runs in
float64 (hf_softmax_as_written was exactly 0 there). Where part of that is rounding of values that
depend on the input (not only of constant tables), a central difference with step h turns it into
an error of about noise/h: at h = 1e-6, eps32 * |logit| / h is ~0.1 * |logit|, which over
|grad| * |direction| (|direction| ~ 50) is of the order of the 5.6e-3 that the first version of this
check (h = 1e-6 on the HF model) measured against gradients the Go test confirms to 2.5e-6. Differences of the float64 equations have no such noise.
The HF model's own central differences are still computed, for a sweep of h, and printed
(checks.fd_hf_by_step, a diagnostic): an error that falls as h grows is rounding noise in the
forward; one that stays put would be a wrong gradient.

Fixture layout (version GRAD_FIXTURE_VERSION; bump it when anything below changes):
  __metadata__ (all strings): esm2go_grad_fixture_version, generator, torch, transformers, model,
    inputs (JSON [{"name","record","sequence","pos","token"}] in order; sequence with literal
    <mask>; pos = token index, 0 = <cls>, residue r (1-based) = r), params (JSON list of canonical
    names), checks (JSON {"equations_vs_hf_logits", "fd_max_rel" (finite differences of the float64
    equations), "grad_vs_equations_autograd", "hf_softmax_as_written", "fd_hf_by_step" (an object:
    step -> error of the HF model's own central differences, a diagnostic), "softmax_wrapper_calls"}),
    notes
  per input <name> (T tokens with BOS/EOS, D hidden):
    <name>.tokens           int32   (T,)
    <name>.logit            float32 (1,)   the cost, logits[pos, token]
    <name>.grad.embeddings  float32 (T, D) d logit / d E[tokens] (before token dropout)
    <name>.grad.<param>     float32 (shape of the parameter)
  Values are computed in float64 and stored rounded to float32 (esm2go's safetensors reader takes
  F32, F16, BF16, I32, I64); the rounding (6e-8 relative) is far below the Go test's tolerance.

Run on the GPU test host (CPU only; seconds), from the repository root:
  PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES= python3 tests/gen_grad_fixtures.py
--dry-run needs no torch: it prints the inputs and their tokens.
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures as gf  # noqa: E402

GRAD_FIXTURE_VERSION = "1"
GENERATOR = "tests/gen_grad_fixtures.py"
TRUNCATE = 40  # residues kept of each FASTA record

GRAD_PARAMS = [
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.1.intermediate.dense.bias",
    "encoder.layer.2.attention.LayerNorm.weight",
]

# (FASTA record index, residues kept, 1-based residues replaced by <mask>, 1-based residue of the
# logit). The logit's token is the true residue there: a masked-LM prediction when it is masked.
PLAN = [
    (0, TRUNCATE, [10], 10),        # one mask: scale 0.88 / (1 - 1/42)
    (1, TRUNCATE, [5, 23], 23),     # two masks, logit at the second
    (2, 36, [], 17),                # no mask: scale 0.88, an ordinary logit
]


# Finite differences of the float64 equations: step (directions have unit-rms entries, like the
# tensors) and bound. The bound is set by HF, not by the differences (~1e-10 here): the fixture's
# gradients come from HF's forward, which rounds some input-dependent values to float32 (its logits
# differ from the equations by ~1e-7), so they may differ from the equations' derivative by ~1e-7.
FD_STEP = 1e-3
FD_BOUND = 1e-6
AUTOGRAD_BOUND = 1e-6  # the same reasoning, whole tensors: max|diff| / max|grad|
# Steps of the diagnostic central differences of the HF model itself (printed, not checked).
HF_FD_STEPS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def equations_logit(sd, spec, tokens, inv_freq, x_emb, pos, tok, keep_graph=False):
    """logits[pos, tok] of the ESM2 equations in float64 (the same equations as
    gen_fixtures.ref_forward), with the word-embedding rows E[tokens] replaced by x_emb (T, D)
    before token dropout, and the weights taken from sd (so a perturbed copy can be passed)."""
    import torch
    import torch.nn.functional as F

    W = {k: v.to(torch.float64) for k, v in sd.items()}
    D, H = spec["hidden"], spec["heads"]
    hd, T, eps = D // H, tokens.shape[0], 1e-5

    def lin(x, p):
        return x @ W[p + ".weight"].T + W[p + ".bias"]

    def ln(x, p):
        return F.layer_norm(x, (D,), W[p + ".weight"], W[p + ".bias"], eps)

    def gelu(x):
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))

    def rot_half(x):
        return torch.cat((-x[..., hd // 2:], x[..., :hd // 2]), dim=-1)

    is_mask = (tokens == gf.MASK).unsqueeze(-1)
    x = torch.where(is_mask, torch.zeros_like(x_emb), x_emb.to(torch.float64))
    x = x * (1 - 0.15 * 0.8) / (1 - is_mask.sum().to(torch.float64) / T)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq.to(torch.float64))
    ang = torch.cat((ang, ang), dim=-1)                      # (T, hd)
    cos, sin = ang.cos(), ang.sin()
    for i in range(spec["layers"]):
        p = f"esm.encoder.layer.{i}."
        h = ln(x, p + "attention.LayerNorm")
        q = lin(h, p + "attention.self.query").view(T, H, hd).transpose(0, 1) * hd ** -0.5
        k = lin(h, p + "attention.self.key").view(T, H, hd).transpose(0, 1)
        v = lin(h, p + "attention.self.value").view(T, H, hd).transpose(0, 1)
        q = q * cos + rot_half(q) * sin
        k = k * cos + rot_half(k) * sin
        a = torch.softmax(q @ k.transpose(1, 2), dim=-1)     # (H, T, T)
        o = (a @ v).transpose(0, 1).reshape(T, D)
        x = x + lin(o, p + "attention.output.dense")
        h = ln(x, p + "LayerNorm")
        x = x + lin(gelu(lin(h, p + "intermediate.dense")), p + "output.dense")
    x = ln(x, "esm.encoder.emb_layer_norm_after")
    h = ln(gelu(lin(x[pos], "lm_head.dense")), "lm_head.layer_norm")
    logit = h @ W["esm.embeddings.word_embeddings.weight"][tok] + W["lm_head.bias"][tok]  # tied decoder
    return logit if keep_graph else float(logit)


def equations_grads(sd, spec, tokens, inv_freq, x_emb, pos, tok, names):
    """autograd of equations_logit w.r.t. x_emb ("embeddings") and the parameters names."""
    import torch

    leaves = {"embeddings": x_emb.detach().clone().requires_grad_(True)}
    moved = dict(sd)
    for n in names:
        leaves[n] = sd["esm." + n].detach().clone().requires_grad_(True)
        moved["esm." + n] = leaves[n]
    logit = equations_logit(moved, spec, tokens, inv_freq, leaves["embeddings"], pos, tok, keep_graph=True)
    gs = torch.autograd.grad(logit, list(leaves.values()))
    return {k: g.detach() for k, g in zip(leaves, gs)}


def rounded(v):
    """checks with floats cut to 4 significant digits, for the metadata"""
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return float(f"{v:.3e}") if isinstance(v, float) else v


def make_inputs(fasta):
    recs = gf.read_fasta(fasta)
    inputs = []
    for i, (rec, n, masks, at) in enumerate(PLAN):
        rid, seq = recs[rec]
        res = list(seq[:n])
        assert all(c in gf.STANDARD_RESIDUES for c in res), f"{rid}: non-standard residue in the first {n}"
        true = res[at - 1]
        for m in masks:
            res[m - 1] = "<mask>"
        inputs.append({"name": f"p{i}", "record": rid, "sequence": "".join(res), "pos": at,
                       "token": gf.TOKEN_ID[true]})
    return inputs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/testdata/fixtures/grad_tiny.safetensors")
    ap.add_argument("--model", default="tests/testdata/models/tiny")
    ap.add_argument("--fasta", default="tests/testdata/fairesm_some_proteins.fasta")
    ap.add_argument("--dry-run", action="store_true", help="inputs and tokens only; no torch")
    args = ap.parse_args()

    inputs = make_inputs(args.fasta)
    tokens = [gf.tokenize(x["sequence"]) for x in inputs]
    for x, t in zip(inputs, tokens):
        print(f"{x['name']} ({x['record']}): T={len(t)} masks={t.count(gf.MASK)} pos={x['pos']} "
              f"token={x['token']} ({gf.VOCAB[x['token']]}) {x['sequence']}")
        assert 0 < x["pos"] < len(t) - 1
    if args.dry_run:
        return 0

    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import EsmForMaskedLM

    torch.set_num_threads(8)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    print(f"torch {versions['torch']}, transformers {versions['transformers']}")

    model = EsmForMaskedLM.from_pretrained(args.model, dtype=torch.float64, attn_implementation="eager")
    model = model.double().eval()
    cfg = model.config
    spec = dict(name="tiny", layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, heads=cfg.num_attention_heads)
    assert cfg.token_dropout, "the tiny model must use token dropout"
    params = dict(model.named_parameters())
    for p in GRAD_PARAMS:
        assert "esm." + p in params, f"no parameter esm.{p} in {sorted(params)[:8]}..."
    inv = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
    assert inv, "no rotary inv_freq buffer"
    inv_freq = inv[0].detach().double()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if "lm_head.decoder.weight" not in sd:
        sd["lm_head.decoder.weight"] = sd["esm.embeddings.word_embeddings.weight"]

    orig_softmax = torch.nn.functional.softmax
    calls = {"n": 0}

    def softmax_same_dtype(x, dim=None, _stacklevel=3, dtype=None):
        calls["n"] += 1
        return orig_softmax(x, dim=dim)

    emb_mod = model.esm.embeddings.word_embeddings

    def run(ids, x_emb, exact_softmax):
        """logits (T, V) of one input, with E[tokens] (1, T, D) replaced by x_emb through a hook."""
        h = emb_mod.register_forward_hook(lambda mod, inp, out: x_emb)
        if exact_softmax:
            torch.nn.functional.softmax = softmax_same_dtype
        try:
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        finally:
            torch.nn.functional.softmax = orig_softmax
            h.remove()
        return out.logits[0]

    def cost_and_grads(ids, pos, tok, exact_softmax):
        model.zero_grad(set_to_none=True)
        x = emb_mod.weight.detach()[ids].clone().requires_grad_(True)  # (1, T, D)
        logit = run(ids, x, exact_softmax)[pos, tok]
        logit.backward()
        assert x.grad is not None, "the embedding hook was not used: no gradient reached it"
        grads = {"embeddings": x.grad.detach()[0].clone()}  # (T, D)
        for p in GRAD_PARAMS:
            g = params["esm." + p].grad
            assert g is not None, f"no gradient for {p}"
            grads[p] = g.detach().clone()
        return logit.detach(), x.detach(), grads

    failures, tensors = [], {}
    checks = {"equations_vs_hf_logits": 0.0, "fd_max_rel": 0.0, "grad_vs_equations_autograd": 0.0,
              "hf_softmax_as_written": 0.0, "fd_hf_by_step": {}}
    gen = torch.Generator().manual_seed(gf.SEED)
    for x, toks in zip(inputs, tokens):
        name, pos, tok = x["name"], x["pos"], x["token"]
        ids = torch.tensor([toks], dtype=torch.long)
        n0 = calls["n"]
        logit, x0, grads = cost_and_grads(ids, pos, tok, exact_softmax=True)
        print(f"{name}: logit {float(logit):.10g}; softmax wrapper called {calls['n'] - n0} times")
        _, _, grads_hf = cost_and_grads(ids, pos, tok, exact_softmax=False)
        for k in grads:
            checks["hf_softmax_as_written"] = max(checks["hf_softmax_as_written"], gf.rel_err(grads_hf[k], grads[k]))

        with torch.no_grad():
            plain = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            hooked = run(ids, x0, exact_softmax=False)
            if not torch.equal(plain, hooked):
                failures.append(f"{name}: the hook changed the logits by {float((plain - hooked).abs().max()):.3e}")
            _, lg64 = gf.ref_forward(sd, spec, ids[0], inv_freq, torch.float64)
            full = run(ids, x0, exact_softmax=True)
        eq = equations_logit(sd, spec, ids[0], inv_freq, x0[0], pos, tok)
        if abs(eq - float(lg64[pos, tok])) > 1e-12 * max(1.0, abs(eq)):  # same equations, same order: ~1e-16
            failures.append(f"{name}: equations_logit {eq!r} differs from gen_fixtures.ref_forward {float(lg64[pos, tok])!r}")
        e = gf.rel_err(full, lg64)
        checks["equations_vs_hf_logits"] = max(checks["equations_vs_hf_logits"], e)
        # float64 throughout, up to HF's rotary tables (transformers may build them in fp32:
        # ~1e-7); a semantic difference (a scale, an order, a position offset) is >= 1e-3
        if e > 1e-5:
            failures.append(f"{name}: float64 HF logits differ from the ESM2 equations by {e:.3e}")

        masked = [i for i, t in enumerate(toks) if t == gf.MASK]
        if masked and float(grads["embeddings"][masked].abs().max()) != 0:
            failures.append(f"{name}: nonzero embedding gradient on <mask> rows {masked}")

        # Finite differences of the float64 ESM2 equations along random directions (unit-rms
        # entries, like the tensors themselves), fourth-order central stencil: truncation
        # ~h^4 f^(5) ~ 1e-12 and rounding ~1e-16/h ~ 1e-13 at h = 1e-3.
        row = torch.zeros_like(x0)
        row[0, pos - 1] = 1  # the residue before the logit's token: never a <mask> in PLAN's inputs
        assert toks[pos - 1] != gf.MASK
        dirs = [("embeddings", torch.randn(x0.shape, generator=gen, dtype=torch.float64)),
                ("embeddings", torch.randn(x0.shape, generator=gen, dtype=torch.float64) * row)]
        for p in GRAD_PARAMS:
            dirs.append((p, torch.randn(params["esm." + p].shape, generator=gen, dtype=torch.float64)))

        def f_eq(k, s, v):
            """the equations' logit with input k moved by s*v"""
            if k == "embeddings":
                return equations_logit(sd, spec, ids[0], inv_freq, x0[0] + s * v[0], pos, tok)
            moved = dict(sd)
            moved["esm." + k] = sd["esm." + k] + s * v
            return equations_logit(moved, spec, ids[0], inv_freq, x0[0], pos, tok)

        def f_hf(k, s, v):
            """HF's logit with input k moved by s*v"""
            with torch.no_grad():
                if k == "embeddings":
                    return float(run(ids, x0 + s * v, exact_softmax=True)[pos, tok])
                w = params["esm." + k]
                saved = w.detach().clone()
                w.add_(s * v)
                try:
                    return float(run(ids, x0, exact_softmax=True)[pos, tok])
                finally:
                    w.copy_(saved)  # restored exactly (add then sub would leave rounding behind)

        for k, v in dirs:
            an = float((grads[k] * v).sum())
            scale = float(grads[k].norm()) * float(v.norm())
            h = FD_STEP
            fd = (8 * (f_eq(k, h, v) - f_eq(k, -h, v)) - (f_eq(k, 2 * h, v) - f_eq(k, -2 * h, v))) / (12 * h)
            checks["fd_max_rel"] = max(checks["fd_max_rel"], abs(fd - an) / scale)
            for hh in HF_FD_STEPS:
                fd_hf = (f_hf(k, hh, v) - f_hf(k, -hh, v)) / (2 * hh)
                key = f"{hh:.0e}"
                checks["fd_hf_by_step"][key] = max(checks["fd_hf_by_step"].get(key, 0.0), abs(fd_hf - an) / scale)

        # The same gradients by autograd through the equations, whole tensors.
        eq_grads = equations_grads(sd, spec, ids[0], inv_freq, x0[0], pos, tok, GRAD_PARAMS)
        for k, g in eq_grads.items():
            checks["grad_vs_equations_autograd"] = max(checks["grad_vs_equations_autograd"], gf.rel_err(grads[k], g))

        tensors[f"{name}.tokens"] = torch.tensor(toks, dtype=torch.int32)
        tensors[f"{name}.logit"] = logit.reshape(1).float().contiguous()
        for k, g in grads.items():
            tensors[f"{name}.grad.{k}"] = g.float().contiguous()

    if checks["fd_max_rel"] > FD_BOUND:
        failures.append(f"gradients differ from finite differences of the float64 equations by "
                        f"{checks['fd_max_rel']:.3e} > {FD_BOUND:g}")
    if checks["grad_vs_equations_autograd"] > AUTOGRAD_BOUND:
        failures.append(f"gradients differ from autograd through the float64 equations by "
                        f"{checks['grad_vs_equations_autograd']:.3e} > {AUTOGRAD_BOUND:g}")
    checks["softmax_wrapper_calls"] = calls["n"]
    if calls["n"] == 0:
        print("note: HF never called torch.nn.functional.softmax; its softmax ran as transformers wrote it")
    print("checks: " + json.dumps(checks))
    print("HF model's own central differences by step h (error falling as h grows = rounding noise in "
          "HF's forward, not a wrong gradient): " +
          ", ".join(f"h={k}: {v:.2e}" for k, v in checks["fd_hf_by_step"].items()))

    notes = [
        "Reference: HF transformers EsmForMaskedLM (from_pretrained of the tiny model, eager attention) "
        "in float64 on the CPU, each input alone (batch 1, attention_mask ones), softmax kept in float64.",
        "grad.embeddings is d logit / d E[tokens], the word-embedding rows before token dropout "
        "(replaced through a forward hook; HF's token dropout then runs on them).",
        f"Inputs: the first residues of records of fairesm_some_proteins.fasta, some replaced by <mask>; "
        f"pos is the token index of the logit, token the true residue's id.",
        "checks.hf_softmax_as_written is max|grad with HF's softmax call as written - grad|/max|grad|.",
    ]
    meta = {
        "esm2go_grad_fixture_version": GRAD_FIXTURE_VERSION,
        "generator": GENERATOR,
        "torch": versions["torch"],
        "transformers": versions["transformers"],
        "model": "tiny",
        "inputs": json.dumps(inputs, separators=(",", ":")),
        "params": json.dumps(GRAD_PARAMS),
        "checks": json.dumps(rounded(checks)),
        "notes": " ".join(notes),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    print(f"{args.out}: {len(tensors)} tensors, {os.path.getsize(args.out)} bytes")
    summary = (f"fd_max_rel={checks['fd_max_rel']:.2e} (bound {FD_BOUND:g}), "
               f"grad_vs_equations_autograd={checks['grad_vs_equations_autograd']:.2e} (bound {AUTOGRAD_BOUND:g}), "
               f"equations_vs_hf_logits={checks['equations_vs_hf_logits']:.2e} (bound 1e-05)")
    if failures:
        print("\nFAILED CHECKS:")
        for f in failures:
            print("  " + f)
        print(f"SELF-CHECK FAIL: {len(failures)} check(s) failed; {summary}")
        return 3
    print(f"SELF-CHECK PASS: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
