#!/usr/bin/env python3
"""Contact-map fixtures for esm2go, computed with HF transformers' EsmForMaskedLM.

Writes --out/contacts_tiny.safetensors (normally --out tests/testdata/fixtures).

Reference: HF EsmForMaskedLM loaded from tests/testdata/models/tiny (its weights
include esm.contact_head.regression), fp32, eager attention, on the CPU, each
input alone (batch of 1, no padding, attention_mask all ones):
model.esm.predict_contacts(input_ids, attention_mask), i.e. every layer's
attention probabilities stacked (layers*heads channels), EOS rows/cols masked
and removed, BOS removed, symmetrized, average-product corrected, the
checkpoint's logistic regression, sigmoid.

Self-checks (the run fails when one does not hold):
  - the same contacts recomputed here from output_attentions with the formulas
    written out below (fp32) equal predict_contacts (semantics check);
  - a float64 copy of the model through the same formulas (fp64) gives the fp32
    reference's own error, stored as metadata fp64_max_abs_err;
  - every attention row sums to 1.

Fixture layout (version FIXTURE_VERSION; bump it when anything below changes):
  __metadata__ (all strings): esm2go_fixture_version, generator, torch,
    transformers, model, inputs (JSON [{"name","sequence","row_stride"}] in
    order), layers, heads, fp64_max_abs_err (JSON {name: x}), hf_vs_formula_max_abs
    (JSON {name: x}), notes
  per input <name>, T tokens incl. BOS/EOS, L = T-2 residues, R kept rows:
    <name>.tokens    int32 (T,)
    <name>.rows      int32 (R,)     residue rows kept (0-based, every row_stride-th, always the last)
    <name>.contacts  float32 (R, L) contact probabilities at those rows
The testdata size budget (tests/README.md) is why the long input keeps every
32nd row only.

Run on the GPU test host (CPU is used; seconds):
  PYTHONUNBUFFERED=1 python3 tests/gen_contact_fixtures.py --out tests/testdata/fixtures
--dry-run needs no torch: it checks inputs, tokenization and the size.
"""

import argparse
import json
import os
import re
import sys

FIXTURE_VERSION = "1"
GENERATOR = "tests/gen_contact_fixtures.py"

VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>",
         "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y",
         "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
BOS, EOS = 0, 2
MAX_RESIDUES = 1022

# (name, FASTA id or None for a literal sequence, literal, row stride)
INPUTS = [
    ("one", None, "M", 1),                          # a single residue: a 1x1 map
    ("UniRef50_UPI0003108055", "UniRef50_UPI0003108055", None, 1),  # 80 residues, all rows
    ("UniRef50_V4AGU2", "UniRef50_V4AGU2", None, 32),  # 602 residues (long-ish), every 32nd row
]
SIZE_LIMIT = 100_000  # bytes for the fixture file (tests/testdata is near its 20 MB budget)


def read_fasta(path):
    """{id: sequence}; id is the header up to the first whitespace."""
    records, name, parts = {}, None, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if name is not None:
                    records[name] = "".join(parts)
                hdr = line[1:].split()
                name, parts = (hdr[0] if hdr else f"rec{len(records)}"), []
            else:
                parts.append(line)
    if name is not None:
        records[name] = "".join(parts)
    return records


def tokenize(seq):
    """Table lookup, fair-esm style: first 1022 residues, then BOS/EOS."""
    toks = re.findall(r"<[^<>]+>|.", seq)[:MAX_RESIDUES]
    return [BOS] + [TOKEN_ID[t] for t in toks] + [EOS]


def kept_rows(L, stride):
    rows = list(range(0, L, stride))
    if rows[-1] != L - 1:
        rows.append(L - 1)
    return rows


def contacts_from_attentions(attns, weight, bias):
    """The contact head written out. attns: (layers, heads, T, T) attention
    probabilities of one unpadded sequence (BOS first, EOS last); weight:
    (layers*heads,), bias: scalar. Returns (L, L) with L = T-2, in attns' dtype."""
    import torch
    layers, heads, T, _ = attns.shape
    x = attns[..., 1:T - 1, 1:T - 1]              # drop BOS and EOS rows/cols
    L = T - 2
    x = x.reshape(layers * heads, L, L)            # channel = layer*heads + head
    s = x + x.transpose(-1, -2)                    # symmetrize
    a1 = s.sum(-1, keepdim=True)
    a2 = s.sum(-2, keepdim=True)
    a12 = s.sum((-1, -2), keepdim=True)
    n = s - a1 * a2 / a12                          # average product correction
    logit = torch.einsum("cij,c->ij", n, weight.to(n.dtype)) + bias.to(n.dtype)
    return torch.sigmoid(logit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (tests/testdata/fixtures)")
    ap.add_argument("--model", default="tests/testdata/models/tiny")
    ap.add_argument("--fasta", default="tests/testdata/fairesm_some_proteins.fasta")
    ap.add_argument("--dry-run", action="store_true", help="inputs and size only; no torch")
    args = ap.parse_args()

    fasta = read_fasta(args.fasta)
    inputs = []
    for name, fid, literal, stride in INPUTS:
        seq = literal if fid is None else fasta[fid]
        assert re.fullmatch(r"[A-Za-z0-9_]+", name), name
        inputs.append({"name": name, "sequence": seq, "row_stride": stride})
    token_lists = [tokenize(x["sequence"]) for x in inputs]
    size = 0
    for x, toks in zip(inputs, token_lists):
        L = len(toks) - 2
        R = len(kept_rows(L, x["row_stride"]))
        size += 4 * len(toks) + 4 * R + 4 * R * L + 300
        print(f"  {x['name']}: {L} residues, {R} rows kept")
    size += len(json.dumps(inputs)) + 2048
    print(f"estimated fixture size {size} bytes (limit {SIZE_LIMIT})")
    assert size <= SIZE_LIMIT, "fixture over its size limit"
    if args.dry_run:
        return 0

    import copy
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import EsmForMaskedLM
    torch.set_num_threads(min(16, os.cpu_count() or 1))
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    print(f"torch {versions['torch']}, transformers {versions['transformers']}, python {sys.version.split()[0]}")

    model = EsmForMaskedLM.from_pretrained(args.model, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    model64 = copy.deepcopy(model).double()
    head = model.esm.contact_head
    weight = head.regression.weight.detach().reshape(-1).clone()
    bias = head.regression.bias.detach().reshape(()).clone()
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert weight.numel() == layers * heads, (weight.shape, layers, heads)

    failures, tensors, fp64_err, hf_err = [], {}, {}, {}
    for x, toks in zip(inputs, token_lists):
        name = x["name"]
        ids = torch.tensor([toks], dtype=torch.long)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            ref = model.esm.predict_contacts(ids, attention_mask=mask)[0]          # (L, L) fp32
            out = model.esm(ids, attention_mask=mask, output_attentions=True)
            att32 = torch.stack(out.attentions, dim=1)[0]                          # (layers, heads, T, T)
            out64 = model64.esm(ids, attention_mask=mask, output_attentions=True)
            att64 = torch.stack(out64.attentions, dim=1)[0]
        rowsum = (att32.sum(-1) - 1).abs().max().item()
        if rowsum > 1e-5:
            failures.append(f"{name}: attention rows sum to 1 within {rowsum:.3g}")
        mine32 = contacts_from_attentions(att32, weight, bias)
        mine64 = contacts_from_attentions(att64, weight.double(), bias.double())
        hf_err[name] = (ref - mine32).abs().max().item()
        fp64_err[name] = (ref.double() - mine64).abs().max().item()
        if hf_err[name] > 1e-6:
            failures.append(f"{name}: predict_contacts vs the formulas here (fp32) {hf_err[name]:.3g} > 1e-6")
        if fp64_err[name] > 1e-4:
            failures.append(f"{name}: fp32 vs fp64 {fp64_err[name]:.3g} > 1e-4")
        if not torch.allclose(ref, ref.T, atol=1e-6):
            failures.append(f"{name}: contact map not symmetric")
        L = len(toks) - 2
        rows = kept_rows(L, x["row_stride"])
        tensors[f"{name}.tokens"] = torch.tensor(toks, dtype=torch.int32)
        tensors[f"{name}.rows"] = torch.tensor(rows, dtype=torch.int32)
        tensors[f"{name}.contacts"] = ref[rows].to(torch.float32).contiguous()
        print(f"  {name}: L={L}, contacts in [{ref.min().item():.4f}, {ref.max().item():.4f}], "
              f"hf vs formula {hf_err[name]:.3g}, fp32 vs fp64 {fp64_err[name]:.3g}, row sums {rowsum:.3g}")

    meta = {
        "esm2go_fixture_version": FIXTURE_VERSION,
        "generator": GENERATOR,
        "torch": versions["torch"],
        "transformers": versions["transformers"],
        "model": args.model,
        "inputs": json.dumps(inputs),
        "layers": str(layers),
        "heads": str(heads),
        "fp64_max_abs_err": json.dumps(fp64_err),
        "hf_vs_formula_max_abs": json.dumps(hf_err),
        "notes": "HF EsmModel.predict_contacts, fp32, eager attention, CPU, each input alone",
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "contacts_tiny.safetensors")
    save_file(tensors, path, metadata=meta)
    nbytes = os.path.getsize(path)
    if nbytes > SIZE_LIMIT:
        failures.append(f"{path}: {nbytes} bytes > {SIZE_LIMIT}")
    for f in failures:
        print("FAIL:", f)
    status = "all checks passed" if not failures else f"{len(failures)} checks FAILED"
    print(f"contacts_tiny: {len(inputs)} inputs, {nbytes} bytes; max|hf-formula| {max(hf_err.values()):.3g}, "
          f"max|fp32-fp64| {max(fp64_err.values()):.3g}; {status}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
