#!/usr/bin/env python3
"""Variant-scoring fixtures for esm2go's score package, from HF transformers' EsmForMaskedLM.

Writes --out/score_tiny.safetensors (--out is normally tests/testdata/fixtures), read by the Go
test score/fixture_test.go.

Reference: HF EsmForMaskedLM loaded with from_pretrained from tests/testdata/models/tiny, float32,
eager attention, on the CPU. Every forward pass is one sequence (batch 1, attention_mask all ones,
no padding), as in fair-esm's examples/variant-prediction/predict.py. The scores are computed from
the log-softmax of the logits over the whole vocabulary (33 tokens), with the formulas below. The
same formulas are run a second time on logits of gen_fixtures.ref_forward (the ESM2 equations) in
float64; the difference is the fp32 reference's own error (metadata "checks").

Formulas (residue positions i are 1-based; token index of residue i is i, <cls> is token 0):
  masked log-probs   M[i] = log_softmax(logits(x with residue i replaced by <mask>))[i]  (33,)
  wt log-probs       W[i] = log_softmax(logits(x))[i]                                     (33,)
  masked_marginals   sum over the substitutions (wt, i, mt) of M[i][mt] - M[i][wt]
  wt_marginals       sum over the substitutions of W[i][mt] - W[i][wt]
  pll(s)             sum over i = 1..L of log_softmax(logits(s with residue i masked))[i][s_i]
  pll_mutant         pll(wild type with every substitution applied); pll_wt = pll(wild type)
A multi-mutant "A23G:K45R" sums its substitutions (the additive convention of ESM-1v's scoring in
ProteinGym); PLL applies all of them to one sequence. predict.py's pseudo-ppl differs on two
indexing points (see docs/SCORE.md): this fixture is the pseudo-log-likelihood as defined, with
every residue masked once and scored by its own letter.

Fixture layout (version SCORE_FIXTURE_VERSION; bump it when anything below changes):
  __metadata__ (all strings): esm2go_score_fixture_version, generator, torch, transformers, model,
    wildtypes (JSON [{"name","record","sequence"}]), mutants (JSON {"<name>": ["A12G", "A12G:K40R",
    ...]}), scan (JSON {"wildtype": name, "alphabet": "ACDEFGHIKLMNPQRSTVWY"}), checks (JSON
    {"<quantity>_fp64_max_abs": x, ...}), notes
  per wild type <name> (L residues, N mutants in metadata order):
    <name>.masked_logp       float32 (L, 33)  M rows, residue 1 first
    <name>.wt_logp           float32 (L, 33)  W rows
    <name>.masked_marginals  float32 (N,)
    <name>.wt_marginals      float32 (N,)
    <name>.pll_mutant        float32 (N,)
    <name>.pll_wt            float32 (1,)
  scan of the wild type named in metadata scan (A = 20 residues in the scan alphabet's order):
    scan.masked_marginals    float32 (A, L)  [a, i-1] = M[i][a] - M[i][wt_i]
    scan.wt_marginals        float32 (A, L)  [a, i-1] = W[i][a] - W[i][wt_i]
  Values are computed in float32 (HF) and stored as float32.

Run on a host with torch and transformers (CPU only; seconds), from the repository root:
  PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES= python3 tests/gen_score_fixtures.py --out tests/testdata/fixtures
--dry-run needs no torch: it prints the wild types and the mutants.
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures as gf  # noqa: E402

SCORE_FIXTURE_VERSION = "1"
GENERATOR = "tests/gen_score_fixtures.py"
FILE_NAME = "score_tiny.safetensors"
SCAN_ALPHABET = "ACDEFGHIKLMNPQRSTVWY"  # the 20 standard residues, alphabetical one-letter order

# FASTA records used as wild types (0-based record index in fairesm_some_proteins.fasta): the two
# shortest all-standard records, whole (80 and 71 residues), so the Go test stays fast.
WILDTYPE_RECORDS = [4, 5]
SCAN_WILDTYPE = "w1"
N_SINGLES, N_DOUBLES = 6, 3  # plus position 1, position L and one triple per wild type


def make_mutants(seq, rng):
    """Single, double and triple mutants of seq: 'A12G' or 'A12G:K40R' (1-based positions)."""
    L = len(seq)

    def sub(i):
        mt = rng.choice([a for a in SCAN_ALPHABET if a != seq[i - 1]])
        return f"{seq[i - 1]}{i}{mt}"

    out = [sub(1), sub(L)]
    for i in rng.sample(range(2, L), N_SINGLES):
        out.append(sub(i))
    for _ in range(N_DOUBLES):
        a, b = sorted(rng.sample(range(1, L + 1), 2))
        out.append(f"{sub(a)}:{sub(b)}")
    a, b, c = sorted(rng.sample(range(1, L + 1), 3))
    out.append(f"{sub(c)}:{sub(a)}:{sub(b)}")  # out of position order on purpose
    return out


def parse_mutant(m):
    """'A12G:K40R' -> [(wt, i, mt)] with 1-based i."""
    subs = []
    for s in m.split(":"):
        subs.append((s[0], int(s[1:-1]), s[-1]))
    return subs


def make_inputs(fasta):
    recs = gf.read_fasta(fasta)
    rng = random.Random(gf.SEED)
    wts, muts = [], {}
    for k, r in enumerate(WILDTYPE_RECORDS):
        rid, seq = recs[r]
        assert all(c in SCAN_ALPHABET for c in seq), f"{rid}: non-standard residue"
        assert len(seq) <= gf.MAX_RESIDUES
        name = f"w{k}"
        wts.append({"name": name, "record": rid, "sequence": seq})
        muts[name] = make_mutants(seq, rng)
        for m in muts[name]:
            for wt, i, _ in parse_mutant(m):
                assert seq[i - 1] == wt, (m, seq[i - 1])
    return wts, muts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/testdata/fixtures", help="directory for " + FILE_NAME)
    ap.add_argument("--model", default="tests/testdata/models/tiny")
    ap.add_argument("--fasta", default="tests/testdata/fairesm_some_proteins.fasta")
    ap.add_argument("--dry-run", action="store_true", help="wild types and mutants only; no torch")
    args = ap.parse_args()

    wts, muts = make_inputs(args.fasta)
    for w in wts:
        print(f"{w['name']} ({w['record']}, L={len(w['sequence'])}): {' '.join(muts[w['name']])}")
    if args.dry_run:
        return 0

    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import EsmForMaskedLM

    torch.set_num_threads(8)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    print(f"torch {versions['torch']}, transformers {versions['transformers']}")

    model = EsmForMaskedLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model = model.float().eval()
    cfg = model.config
    assert cfg.token_dropout, "the tiny model must use token dropout"
    assert cfg.vocab_size == len(gf.VOCAB)
    spec = dict(name="tiny", layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, heads=cfg.num_attention_heads)
    inv = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
    assert inv, "no rotary inv_freq buffer"
    inv_freq = inv[0].detach().double()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if "lm_head.decoder.weight" not in sd:
        sd["lm_head.decoder.weight"] = sd["esm.embeddings.word_embeddings.weight"]

    def logp_hf(toks):
        """(T, 33) float32 log-softmax of HF's logits for one sequence."""
        ids = torch.tensor([toks], dtype=torch.long)
        with torch.no_grad():
            lg = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        return torch.log_softmax(lg.float(), dim=-1)

    def logp_eq(toks):
        """(T, 33) float64 log-softmax of the ESM2 equations' logits."""
        with torch.no_grad():
            _, lg = gf.ref_forward(sd, spec, torch.tensor(toks, dtype=torch.long), inv_freq, torch.float64)
        return torch.log_softmax(lg, dim=-1)

    def masked_rows(seq, logp):
        """(L, 33): row i-1 = log-softmax at residue i with residue i masked (one pass per i)."""
        toks = gf.tokenize(seq)
        rows = []
        for i in range(1, len(seq) + 1):
            t = list(toks)
            t[i] = gf.MASK
            rows.append(logp(t)[i])
        return torch.stack(rows)

    def pll(seq, logp):
        rows = masked_rows(seq, logp)
        return float(sum(rows[i - 1, gf.TOKEN_ID[seq[i - 1]]] for i in range(1, len(seq) + 1)))

    def marginal(rows, subs):
        return float(sum(rows[i - 1, gf.TOKEN_ID[mt]] - rows[i - 1, gf.TOKEN_ID[wt]] for wt, i, mt in subs))

    def apply(seq, subs):
        s = list(seq)
        for wt, i, mt in subs:
            assert s[i - 1] == wt
            s[i - 1] = mt
        return "".join(s)

    def scores(w, logp):
        seq = w["sequence"]
        M = masked_rows(seq, logp)
        W = logp(gf.tokenize(seq))[1:len(seq) + 1]
        mm, wm, pm = [], [], []
        for m in muts[w["name"]]:
            subs = parse_mutant(m)
            mm.append(marginal(M, subs))
            wm.append(marginal(W, subs))
            pm.append(pll(apply(seq, subs), logp))
        pw = float(sum(M[i, gf.TOKEN_ID[c]] for i, c in enumerate(seq)))
        return M, W, mm, wm, pm, pw

    def scan(seq, rows):
        A = torch.tensor([gf.TOKEN_ID[a] for a in SCAN_ALPHABET])
        wt = torch.tensor([gf.TOKEN_ID[c] for c in seq])
        L = len(seq)
        return (rows[:, A] - rows[torch.arange(L), wt][:, None]).T.contiguous()  # (A, L)

    tensors, failures = {}, []
    checks = {k: 0.0 for k in ("masked_logp", "wt_logp", "masked_marginals", "wt_marginals",
                               "pll_mutant", "pll_wt", "scan")}

    def worst(k, a, b):
        d = float((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max())
        checks[k] = max(checks[k], d)

    for w in wts:
        name, seq = w["name"], w["sequence"]
        M, W, mm, wm, pm, pw = scores(w, logp_hf)
        M64, W64, mm64, wm64, pm64, pw64 = scores(w, logp_eq)
        worst("masked_logp", M, M64)
        worst("wt_logp", W, W64)
        worst("masked_marginals", mm, mm64)
        worst("wt_marginals", wm, wm64)
        worst("pll_mutant", pm, pm64)
        worst("pll_wt", [pw], [pw64])
        tensors[f"{name}.masked_logp"] = M.float().contiguous()
        tensors[f"{name}.wt_logp"] = W.float().contiguous()
        tensors[f"{name}.masked_marginals"] = torch.tensor(mm, dtype=torch.float32)
        tensors[f"{name}.wt_marginals"] = torch.tensor(wm, dtype=torch.float32)
        tensors[f"{name}.pll_mutant"] = torch.tensor(pm, dtype=torch.float32)
        tensors[f"{name}.pll_wt"] = torch.tensor([pw], dtype=torch.float32)
        print(f"{name}: pll_wt {pw:.6f} (fp64 {pw64:.6f}); masked_marginals "
              + " ".join(f"{x:.4f}" for x in mm))
        if name == SCAN_WILDTYPE:
            tensors["scan.masked_marginals"] = scan(seq, M).float()
            tensors["scan.wt_marginals"] = scan(seq, W).float()
            worst("scan", scan(seq, M), scan(seq, M64))
            worst("scan", scan(seq, W), scan(seq, W64))

    # fp32 vs fp64 on log-probs of magnitude ~1-10 and sums of ~80 of them: ~1e-5 expected; a
    # semantic difference (a mask not applied, a row off by one, the wrong scale) is >= 1e-2.
    for k, v in checks.items():
        if v > 1e-3:
            failures.append(f"{k}: HF fp32 differs from the fp64 equations by {v:.3e} > 1e-3")
    print("checks (max |HF fp32 - equations fp64|): " + json.dumps({k: float(f"{v:.3e}") for k, v in checks.items()}))

    notes = [
        "Reference: HF transformers EsmForMaskedLM (from_pretrained of the tiny model, float32, eager "
        "attention) on the CPU, one sequence per forward pass (batch 1, attention_mask ones).",
        "Log-probabilities are log_softmax over all 33 tokens at the scored position.",
        "checks.<k>_fp64_max_abs is max|HF fp32 - ESM2 equations fp64| of that quantity (absolute, in nats).",
        "Multi-mutants sum their substitutions (masked and wt marginals); pll applies them all.",
    ]
    meta = {
        "esm2go_score_fixture_version": SCORE_FIXTURE_VERSION,
        "generator": GENERATOR,
        "torch": versions["torch"],
        "transformers": versions["transformers"],
        "model": "tiny",
        "wildtypes": json.dumps(wts, separators=(",", ":")),
        "mutants": json.dumps(muts, separators=(",", ":")),
        "scan": json.dumps({"wildtype": SCAN_WILDTYPE, "alphabet": SCAN_ALPHABET}),
        "checks": json.dumps({f"{k}_fp64_max_abs": float(f"{v:.3e}") for k, v in checks.items()}),
        "notes": " ".join(notes),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, FILE_NAME)
    save_file(tensors, path, metadata=meta)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
    if failures:
        print("\nFAILED CHECKS:")
        for f in failures:
            print("  " + f)
        return 3
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
