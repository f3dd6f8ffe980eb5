#!/usr/bin/env python3
"""Parity fixtures for esm2go, computed with HF transformers' EsmForMaskedLM.

Writes, under --out (normally tests/testdata):

  fairesm_some_proteins.fasta            the FASTA inputs (copied if --out is elsewhere)
  models/tiny/{config.json,model.safetensors}           3 layers, D=64, 4 heads, fp32
  models/esm2_8M_shape/{config.json,model.safetensors}  6 layers, D=320, 20 heads, fp16
  models/tiny_fairesm.pt                 the tiny weights under fair-esm names (torch.save)
  fixtures/<model>.safetensors           reference outputs, layout below

Reference: HF EsmForMaskedLM, fp32, eager attention, on the CPU, each input alone
(batch of 1, no padding, attention_mask all ones, output_hidden_states=True).
A second, independent forward pass written here from the ESM2 equations runs in
float64; it checks the HF semantics and gives the fp32 reference's own error.

Fixture layout (version FIXTURE_VERSION; bump it when anything below changes):
  __metadata__ (all strings): esm2go_fixture_version, generator, torch, transformers,
    model, inputs (JSON [{"name","sequence"}] in order), layers, hidden, heads,
    row_stride, fp64_max_rel_err (JSON {"hidden":[L+1],"mean":[L+1],"bos":[L+1],
    "logits":x}, each max over inputs of max|fp32-fp64| / max|fp64|), notes
  per input <name>, T tokens incl. BOS/EOS, R sampled rows, D hidden, L layers:
    <name>.tokens     int32 (T,)
    <name>.rows       int32 (R,)      token rows kept below (always BOS and EOS)
    <name>.hidden.<k> float32 (R, D)  hidden_states[k] at rows, k = 0..L
    <name>.mean.<k>   float32 (D,)    mean of hidden_states[k] over rows 1..T-2
    <name>.bos.<k>    float32 (D,)    hidden_states[k][0]
    <name>.logits     float32 (R, 33)

Run on the GPU test host (CPU is used; about a minute):
  PYTHONUNBUFFERED=1 python3 tests/gen_fixtures.py --out tests/testdata
--dry-run needs no torch: it checks inputs, tokenization and the size plan.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile

FIXTURE_VERSION = "1"
GENERATOR = "tests/gen_fixtures.py"

# ESM alphabet, in id order: <cls>=0 <pad>=1 <eos>=2 <unk>=3, residues 4..30, <null_1>=31, <mask>=32.
VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>",
         "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y",
         "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
BOS, PAD, EOS, MASK = 0, 1, 2, 32
MAX_RESIDUES = 1022  # fair-esm truncation: first 1022 residues, then BOS/EOS -> <= 1024 tokens
STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
SEED = 20251125

# Model shapes. intermediate = 4*hidden as in ESM2.
MODELS = [
    dict(name="tiny", layers=3, hidden=64, heads=4, intermediate=256, save_dtype="float32"),
    dict(name="esm2_8M_shape", layers=6, hidden=320, heads=20, intermediate=1280, save_dtype="float16"),
]

SIZE_BUDGET = 20_000_000      # bytes, everything under --out
SIZE_MARGIN = 100_000         # bytes kept free (header estimates, later small files)
TINY_FIXTURE_TARGET = 1_500_000


# ---------------------------------------------------------------- inputs

def read_fasta(path):
    """[(id, sequence)] in file order; id is the header up to the first whitespace."""
    records, name, parts = [], None, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if name is not None:
                    records.append((name, "".join(parts)))
                hdr = line[1:].split()
                name, parts = (hdr[0] if hdr else f"rec{len(records)}"), []
            else:
                parts.append(line)
    if name is not None:
        records.append((name, "".join(parts)))
    return records


def make_inputs(fasta_path):
    """[{"name","sequence"}]: the FASTA records, then the edge cases."""
    rng = random.Random(SEED)

    def rand_seq(n):
        return "".join(rng.choice(STANDARD_RESIDUES) for _ in range(n))

    inputs = [{"name": n, "sequence": s} for n, s in read_fasta(fasta_path)]
    masked = list(rand_seq(120))
    for pos in (7, 58, 111):  # three residues replaced by <mask>, none at the ends
        masked[pos] = "<mask>"
    inputs += [
        {"name": "one", "sequence": "M"},
        {"name": "len1022", "sequence": rand_seq(1022)},
        {"name": "len1500", "sequence": rand_seq(1500)},
        {"name": "alphabet", "sequence": "LAGVSERTIDPKQNFYMHWCXBUZO"},
        {"name": "masked", "sequence": "".join(masked)},
        {"name": "dots", "sequence": "MKT.AYIAK-QRQ.ISFVKSH--FSRQ"},
    ]
    names = [x["name"] for x in inputs]
    assert len(set(names)) == len(names), "duplicate input names"
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9_]+", n), f"input name {n!r} unusable in tensor names"
    return inputs


def split_tokens(seq):
    """Residue string -> token strings; '<...>' is one token, anything else one character."""
    return re.findall(r"<[^<>]+>|.", seq)


def tokenize(seq):
    """Plain table lookup, fair-esm style: truncate to 1022 residues, add BOS/EOS."""
    toks = split_tokens(seq)[:MAX_RESIDUES]
    return [BOS] + [TOKEN_ID[t] for t in toks] + [EOS]


def hf_tokenizer_check(inputs):
    """Compare HF EsmTokenizer (built from a vocab.txt) with the table lookup. Returns problems."""
    problems = []
    try:
        from transformers import EsmTokenizer
    except Exception as e:  # noqa: BLE001
        return [f"EsmTokenizer import failed: {e!r}"]
    with tempfile.TemporaryDirectory() as d:
        vocab = os.path.join(d, "vocab.txt")
        with open(vocab, "w") as f:
            f.write("\n".join(VOCAB) + "\n")
        tok = EsmTokenizer(vocab_file=vocab)
        for x in inputs:
            truncated = "".join(split_tokens(x["sequence"])[:MAX_RESIDUES])
            hf = list(tok(truncated)["input_ids"])
            ours = tokenize(x["sequence"])
            if hf != ours:
                first = next((i for i, (a, b) in enumerate(zip(hf, ours)) if a != b), min(len(hf), len(ours)))
                problems.append(f"{x['name']}: HF tokenizer differs from table lookup at token {first} "
                                f"(len {len(hf)} vs {len(ours)})")
    return problems


def sample_rows(T, stride):
    """Every stride-th row plus the first 2 and last 2 (BOS and EOS always in)."""
    rows = set(range(0, T, stride)) | {0, 1, T - 2, T - 1}
    return sorted(r for r in rows if 0 <= r < T)


def fixture_bytes(token_counts, stride, layers, hidden, meta_chars):
    """Estimated fixture file size for a row stride (data plus a header estimate)."""
    n, ntensors = 0, 0
    for T in token_counts:
        R = len(sample_rows(T, stride))
        n += 4 * T + 4 * R + (layers + 1) * (4 * R * hidden + 2 * 4 * hidden) + 4 * R * 33
        ntensors += 3 + 3 * (layers + 1)
    return n + 120 * ntensors + meta_chars + 1024


def choose_stride(token_counts, layers, hidden, meta_chars, budget, candidates):
    for s in candidates:
        if fixture_bytes(token_counts, s, layers, hidden, meta_chars) <= budget:
            return s
    raise SystemExit(f"no row stride fits {budget} bytes (layers={layers} hidden={hidden})")


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ---------------------------------------------------------------- models (torch from here on)

def build_model(spec, seed, device="cpu"):
    """HF EsmForMaskedLM with ESM2 settings, every parameter re-drawn from a fixed seed.

    Weights are scaled so attention is far from uniform (a rotary or head-order bug
    changes the output by O(1)); every bias and LayerNorm is non-trivial; inv_freq is
    fp16-rounded as in the released ESM2 checkpoints (see convert_esm.py's note).

    device "cpu" (fixtures, parity references) draws in float64 on the host, the same
    values on every machine. Another device (the speed benchmark's large shapes, where
    only the shapes matter) builds and draws there in float32: seconds instead of minutes
    for 3B, with the same distributions but values that depend on the device's generator.
    """
    import torch
    from torch import nn
    from transformers import EsmConfig, EsmForMaskedLM

    cfg = EsmConfig(
        vocab_size=len(VOCAB), mask_token_id=MASK, pad_token_id=PAD,
        hidden_size=spec["hidden"], num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"], intermediate_size=spec["intermediate"],
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026, layer_norm_eps=1e-5,
        position_embedding_type="rotary", emb_layer_norm_before=False,
        token_dropout=True, is_folding_model=False, tie_word_embeddings=True,
        architectures=["EsmForMaskedLM"],
    )
    try:
        cfg._attn_implementation = "eager"
    except Exception as e:  # noqa: BLE001
        print(f"  note: config._attn_implementation not settable ({e!r}); using set_attn_implementation")
    torch.manual_seed(seed)
    with torch.device(device):
        model = EsmForMaskedLM(cfg)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    model.eval()

    emb = model.esm.embeddings.word_embeddings
    dec = model.lm_head.decoder
    if dec.weight is not emb.weight:
        model.tie_weights()
    notes = []
    if dec.weight is not emb.weight:
        notes.append("lm_head.decoder.weight was not tied by transformers; tied by hand")
        dec.weight = emb.weight

    g = torch.Generator(device=device).manual_seed(seed + 1)

    def normal(t, std, mean=0.0):
        if device == "cpu":
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64).mul_(std).add_(mean).to(t.dtype))
        else:
            t.normal_(mean, std, generator=g)

    touched, n_qk = set(), 0
    with torch.no_grad():
        for mname, mod in model.named_modules():
            if mod is dec:
                continue
            if isinstance(mod, nn.Linear):
                fan_in = mod.weight.shape[1]
                gain = 1.5 if mname.rsplit(".", 1)[-1] in ("query", "key", "q_proj", "k_proj") else 1.0
                n_qk += gain != 1.0
                normal(mod.weight, gain / math.sqrt(fan_in))
                touched.add(id(mod.weight))
                if mod.bias is not None:
                    normal(mod.bias, 0.1)
                    touched.add(id(mod.bias))
            elif isinstance(mod, nn.LayerNorm):
                normal(mod.weight, 0.1, 1.0)
                normal(mod.bias, 0.1)
                touched.update((id(mod.weight), id(mod.bias)))
            elif isinstance(mod, nn.Embedding):
                normal(mod.weight, 1.0)
                touched.add(id(mod.weight))
        normal(model.lm_head.bias, 0.1)
        touched.add(id(model.lm_head.bias))
        missed = [n for n, p in model.named_parameters() if id(p) not in touched]
        assert not missed, f"parameters not re-drawn: {missed}"
        assert n_qk == 2 * spec["layers"], f"found {n_qk} q/k projections, want {2 * spec['layers']}"

        # rotary inv_freq: find the buffers wherever this transformers version keeps them
        hd = spec["hidden"] // spec["heads"]
        formula = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        bufs = [(n, b) for n, b in model.named_buffers() if n.endswith("inv_freq")]
        assert bufs, "no inv_freq buffer in the model"
        persistent = [k for k in model.state_dict() if k.endswith("inv_freq")]
        for n, b in bufs:
            assert tuple(b.shape) == (hd // 2,), f"{n}: shape {tuple(b.shape)}, want ({hd // 2},)"
        print(f"  inv_freq buffers: {[n for n, _ in bufs]}; in state_dict: {persistent}; "
              f"equal to the fp32 formula: {all(torch.equal(b.float().cpu(), formula) for _, b in bufs)}")
        if persistent:
            # released ESM2 checkpoints carry fp16-rounded inv_freq (convert_esm.py); do the same
            inv_freq = formula.half().float()
            notes.append("rotary inv_freq is the formula rounded to fp16 (as in the released ESM2 "
                         "checkpoints) and is stored in model.safetensors: read it, do not recompute.")
        else:
            inv_freq = formula
            notes.append("rotary inv_freq is not saved by this transformers version (non-persistent "
                         "buffer); the reference uses the fp32 formula 1/10000^(arange(0,hd,2)/hd).")
        for n, b in bufs:
            b.copy_(inv_freq.to(b.dtype))
        for mod in model.modules():
            if hasattr(mod, "original_inv_freq") and isinstance(mod.original_inv_freq, torch.Tensor):
                mod.original_inv_freq = inv_freq.clone().to(mod.original_inv_freq.device)
            if hasattr(mod, "_seq_len_cached"):
                mod._seq_len_cached = None

        if spec["save_dtype"] == "float16":
            for p in model.parameters():
                p.copy_(p.half().float())
    assert dec.weight is emb.weight
    return model, notes, inv_freq


def hub_tensors(model, spec, dtype):
    """The model's weights under the names released ESM2 model.safetensors files use.

    In-memory names are the hub names except the rotary buffer: transformers 5.x keeps one
    model-level esm.rotary_embeddings.inv_freq where the hub has one copy per layer. The tied
    lm_head.decoder.weight is left out (it is the embedding), as save_pretrained does.
    """
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.decoder.weight":
            continue
        v = v.detach().to(dtype).clone().contiguous()
        if k.endswith("inv_freq") and not re.fullmatch(r"esm\.encoder\.layer\.\d+\..+", k):
            for i in range(spec["layers"]):
                out[f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq"] = v.clone()
            continue
        out[k] = v
    return out


def save_model(model, spec, out_dir):
    """config.json from save_pretrained; model.safetensors written here in the hub's layout.

    transformers 5.17's save_pretrained does not write the hub's names: it reverses its load-time
    renames into "<...>.LayerNorm.gamma/.beta" for every "LayerNorm" module and a literal
    "esm.encoder.layer.*.attention.self.rotary_embeddings.inv_freq" key. Its file is inspected
    (differences printed) and replaced by one with the released ESM2 names; reload_check then
    loads the folder back with from_pretrained.
    """
    import copy
    import torch
    from safetensors.torch import load_file, save_file

    d = os.path.join(out_dir, "models", spec["name"])
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    dtype = torch.float16 if spec["save_dtype"] == "float16" else torch.float32
    m = copy.deepcopy(model).to(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        m.save_pretrained(tmp)
        print(f"  save_pretrained wrote {sorted(os.listdir(tmp))}; keeping config.json")
        shutil.copyfile(os.path.join(tmp, "config.json"), os.path.join(d, "config.json"))
        hf_keys = set()
        for f in os.listdir(tmp):
            if f.endswith(".safetensors"):
                hf_keys |= set(load_file(os.path.join(tmp, f)))
    tensors = hub_tensors(model, spec, dtype)
    only_hf, only_hub = sorted(hf_keys - set(tensors)), sorted(set(tensors) - hf_keys)
    if only_hf or only_hub:
        print(f"  save_pretrained's names differ from the hub layout: {len(only_hf)} keys only in its file "
              f"(e.g. {only_hf[:3]}), {len(only_hub)} only in ours (e.g. {only_hub[:3]})")
    path = os.path.join(d, "model.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})

    saved = load_file(path)
    sd = model.state_dict()
    for k, v in saved.items():
        src = k if k in sd else next(n for n in sd if n.endswith("inv_freq"))
        assert v.dtype == dtype, f"{k}: {v.dtype}"
        assert torch.equal(v.float(), sd[src].float()), f"{k}: saved tensor differs from the reference model's"
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in saved.values()})
    print(f"  {path}: {len(saved)} tensors, dtypes {dtypes}, {os.path.getsize(path)} bytes")
    return sorted(saved), ["lm_head.decoder.weight"], bool(only_hf or only_hub)


def reload_check(model, spec, out_dir, tokens):
    """from_pretrained(the folder just written) must reproduce the reference logits bit for bit."""
    import torch
    from transformers import EsmForMaskedLM

    d = os.path.join(out_dir, "models", spec["name"])
    try:
        m = EsmForMaskedLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        m.eval()
        ids = torch.tensor([tokens], dtype=torch.long)
        with torch.no_grad():
            a = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            b = m(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        ours = [v for k, v in model.state_dict().items() if k.endswith("inv_freq")]
        theirs = [v for k, v in m.state_dict().items() if k.endswith("inv_freq")]
        same_if = all(torch.equal(x.float(), ours[0].float()) for x in theirs)
        diff = float((a - b).abs().max())
        print(f"  reload check: from_pretrained logits max|diff| {diff:.3e}, inv_freq loaded from file: {same_if}")
        ok = diff <= 1e-6 * float(a.abs().max()) and same_if
        return None if ok else f"reload: logits differ by {diff:.3e}, inv_freq loaded {same_if}"
    except Exception as e:  # noqa: BLE001
        return f"reload failed: {e!r}"


def fairesm_name(k):
    """HF EsmForMaskedLM state_dict name -> fair-esm ESM2 .pt name (None: not in fair-esm .pt)."""
    m = re.fullmatch(r"esm\.encoder\.layer\.(\d+)\.(.+)", k)
    if m:
        i, rest = m.groups()
        table = {
            "attention.self.query.": "self_attn.q_proj.",
            "attention.self.key.": "self_attn.k_proj.",
            "attention.self.value.": "self_attn.v_proj.",
            "attention.output.dense.": "self_attn.out_proj.",
            "attention.self.rotary_embeddings.inv_freq": "self_attn.rot_emb.inv_freq",
            "attention.LayerNorm.": "self_attn_layer_norm.",
            "intermediate.dense.": "fc1.",
            "output.dense.": "fc2.",
            "LayerNorm.": "final_layer_norm.",
        }
        for a, b in table.items():
            if rest.startswith(a):
                return f"encoder.sentence_encoder.layers.{i}.{b}{rest[len(a):]}"
        raise KeyError(k)
    fixed = {
        "esm.embeddings.word_embeddings.weight": "encoder.sentence_encoder.embed_tokens.weight",
        "esm.encoder.emb_layer_norm_after.weight": "encoder.sentence_encoder.emb_layer_norm_after.weight",
        "esm.encoder.emb_layer_norm_after.bias": "encoder.sentence_encoder.emb_layer_norm_after.bias",
        "lm_head.dense.weight": "encoder.lm_head.dense.weight",
        "lm_head.dense.bias": "encoder.lm_head.dense.bias",
        "lm_head.layer_norm.weight": "encoder.lm_head.layer_norm.weight",
        "lm_head.layer_norm.bias": "encoder.lm_head.layer_norm.bias",
        "lm_head.decoder.weight": "encoder.lm_head.weight",
        "lm_head.bias": "encoder.lm_head.bias",
    }
    if k in fixed:
        return fixed[k]
    if k.startswith("esm.contact_head.") or k == "esm.embeddings.position_ids" or k.endswith("inv_freq"):
        return None  # contact regression: a separate file in ESM2; model-level inv_freq: added per layer
    raise KeyError(k)


def save_fairesm(model, spec, inv_freq, out_dir):
    """tiny_fairesm.pt: {"model": state dict under fair-esm names, "cfg": {"model": Namespace}, "args": None}."""
    import torch

    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        try:
            n = fairesm_name(k)
        except KeyError:
            print(f"  WARNING: no fair-esm name for {k}; left out of the .pt")
            continue
        if n is not None:
            new[n] = v.detach().clone().contiguous()
    for i in range(spec["layers"]):
        new[f"encoder.sentence_encoder.layers.{i}.self_attn.rot_emb.inv_freq"] = inv_freq.clone()
    # as in fair-esm, the LM head's weight is the embedding (one storage)
    new["encoder.lm_head.weight"] = new["encoder.sentence_encoder.embed_tokens.weight"]
    cfg = argparse.Namespace(encoder_layers=spec["layers"], encoder_embed_dim=spec["hidden"],
                             encoder_attention_heads=spec["heads"], token_dropout=True)
    path = os.path.join(out_dir, "models", f"{spec['name']}_fairesm.pt")
    torch.save({"model": new, "cfg": {"model": cfg}, "args": None}, path)
    print(f"  {path}: {len(new)} tensors, {os.path.getsize(path)} bytes")
    return path


# ---------------------------------------------------------------- independent reference

def ref_forward(sd, spec, tokens, inv_freq, dtype, pos_offset=0):
    """ESM2 forward from the equations (not HF code), in dtype. Returns (hidden list L+1, logits).

    inv_freq (hd/2,) is the model's rotary buffer; positions are pos_offset + 0..T-1 (rotary is
    relative, so the offset changes only rounding)."""
    import torch
    import torch.nn.functional as F

    W = {k: v.to(dtype) for k, v in sd.items()}
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

    E = W["esm.embeddings.word_embeddings.weight"]
    is_mask = tokens == MASK
    x = E[tokens].clone()                                   # (T, D)
    x[is_mask] = 0
    x = x * (1 - 0.15 * 0.8) / (1 - is_mask.sum().to(dtype) / T)
    hs = [x]
    pos = torch.arange(T, dtype=dtype) + pos_offset
    ang = torch.outer(pos, inv_freq.to(dtype))               # (T, hd/2)
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
        o = (a @ v).transpose(0, 1).reshape(T, D)            # heads concatenated in order
        x = x + lin(o, p + "attention.output.dense")
        h = ln(x, p + "LayerNorm")
        x = x + lin(gelu(lin(h, p + "intermediate.dense")), p + "output.dense")
        hs.append(x)
    hs[-1] = ln(x, "esm.encoder.emb_layer_norm_after")
    h = ln(gelu(lin(hs[-1], "lm_head.dense")), "lm_head.layer_norm")
    logits = h @ E.T + W["lm_head.bias"]                    # tied decoder
    return hs, logits


def rel_err(a, b):
    """max|a-b| / max|b|, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ---------------------------------------------------------------- main

def run_model(spec, model, inv_freq, inputs, token_lists, stride, out_dir, versions, notes, failures):
    import copy
    import torch
    from safetensors.torch import save_file

    L, D = spec["layers"], spec["hidden"]
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    m64 = copy.deepcopy(model).double()
    tensors = {}
    err = {"hidden": [0.0] * (L + 1), "mean": [0.0] * (L + 1), "bos": [0.0] * (L + 1), "logits": 0.0}
    check = {"hf64_vs_ref64": 0.0, "hf32_vs_ref32": 0.0, "hf32_vs_ref32_pos_from_2": 0.0}
    for x, toks in zip(inputs, token_lists):
        name, T = x["name"], len(toks)
        ids = torch.tensor([toks], dtype=torch.long)
        am = torch.ones_like(ids)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=am, output_hidden_states=True)
            try:
                out64 = m64(input_ids=ids, attention_mask=am, output_hidden_states=True)
            except Exception as e:  # noqa: BLE001
                if m64 is not None:
                    failures.append(f"{spec['name']}: HF fp64 forward failed: {e!r}")
                    print(f"  HF fp64 forward failed ({e!r}); continuing without that check")
                m64 = out64 = None
            ref64, lg64 = ref_forward(sd, spec, ids[0], inv_freq, torch.float64)
            ref32, lg32 = ref_forward(sd, spec, ids[0], inv_freq, torch.float32)
            ref32b, _ = ref_forward(sd, spec, ids[0], inv_freq, torch.float32, pos_offset=PAD + 1)
        if out.hidden_states is None:
            failures.append(f"{spec['name']}: output_hidden_states=True returned no hidden states")
            raise SystemExit("\n".join(failures))
        hs = [h[0] for h in out.hidden_states]
        if len(hs) != L + 1:
            failures.append(f"{spec['name']}/{name}: {len(hs)} hidden states, want {L + 1}")
            raise SystemExit("\n".join(failures))
        logits = out.logits[0]
        assert logits.shape == (T, len(VOCAB)) and logits.dtype == torch.float32

        # semantics: HF (fp64 copy) must equal the equations in fp64 up to its fp32 softmax
        for k in range(L + 1):
            if out64 is not None:
                check["hf64_vs_ref64"] = max(check["hf64_vs_ref64"], rel_err(out64.hidden_states[k][0], ref64[k]))
            check["hf32_vs_ref32"] = max(check["hf32_vs_ref32"], rel_err(hs[k], ref32[k]))
            check["hf32_vs_ref32_pos_from_2"] = max(check["hf32_vs_ref32_pos_from_2"], rel_err(hs[k], ref32b[k]))
        if out64 is not None:
            check["hf64_vs_ref64"] = max(check["hf64_vs_ref64"], rel_err(out64.logits[0], lg64))
        check["hf32_vs_ref32"] = max(check["hf32_vs_ref32"], rel_err(logits, lg32))

        rows = sample_rows(T, stride)
        ri = torch.tensor(rows, dtype=torch.long)
        tensors[f"{name}.tokens"] = torch.tensor(toks, dtype=torch.int32)
        tensors[f"{name}.rows"] = torch.tensor(rows, dtype=torch.int32)
        for k in range(L + 1):
            mean32 = hs[k][1:T - 1].mean(0)
            mean64 = ref64[k][1:T - 1].mean(0)
            tensors[f"{name}.hidden.{k}"] = hs[k][ri].clone().contiguous()
            tensors[f"{name}.mean.{k}"] = mean32.clone().contiguous()
            tensors[f"{name}.bos.{k}"] = hs[k][0].clone().contiguous()
            err["hidden"][k] = max(err["hidden"][k], rel_err(hs[k], ref64[k]))
            err["mean"][k] = max(err["mean"][k], rel_err(mean32, mean64))
            err["bos"][k] = max(err["bos"][k], rel_err(hs[k][0], ref64[k][0]))
        tensors[f"{name}.logits"] = logits[ri].clone().contiguous()
        err["logits"] = max(err["logits"], rel_err(logits, lg64))
        print(f"  {name:24s} T={T:5d} rows={len(rows):5d} "
              f"hidden[L] rel err vs fp64 {rel_err(hs[L], ref64[L]):.2e}")

    if check["hf64_vs_ref64"] > 1e-3:
        failures.append(f"{spec['name']}: HF fp64 differs from the ESM2 equations (fp64): "
                        f"{check['hf64_vs_ref64']:.2e} > 1e-3; transformers semantics changed?")
    if max(err["hidden"] + [err["logits"]]) > 1e-3:
        failures.append(f"{spec['name']}: HF fp32 vs fp64 error {max(err['hidden'] + [err['logits']]):.2e} > 1e-3")

    meta = {
        "esm2go_fixture_version": FIXTURE_VERSION,
        "generator": GENERATOR,
        "torch": versions["torch"],
        "transformers": versions["transformers"],
        "model": spec["name"],
        "inputs": json.dumps(inputs, separators=(",", ":")),
        "layers": str(L),
        "hidden": str(D),
        "heads": str(spec["heads"]),
        "row_stride": str(stride),
        "fp64_max_rel_err": json.dumps({k: ([float(f"{e:.3e}") for e in v] if isinstance(v, list)
                                            else float(f"{v:.3e}")) for k, v in err.items()}),
        "notes": " ".join(notes),
    }
    path = os.path.join(out_dir, "fixtures", f"{spec['name']}.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path, metadata=meta)
    print(f"  {path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes; "
          f"checks: HF fp64 vs equations fp64 {check['hf64_vs_ref64']:.2e}, "
          f"HF fp32 vs equations fp32 {check['hf32_vs_ref32']:.2e} "
          f"(rotary positions from 2: {check['hf32_vs_ref32_pos_from_2']:.2e})")
    return err, check, os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (tests/testdata)")
    ap.add_argument("--fasta", default="tests/testdata/fairesm_some_proteins.fasta")
    ap.add_argument("--dry-run", action="store_true", help="inputs, tokens and size plan only; no torch")
    args = ap.parse_args()

    inputs = make_inputs(args.fasta)
    token_lists = [tokenize(x["sequence"]) for x in inputs]
    counts = [len(t) for t in token_lists]
    masked = inputs[[x["name"] for x in inputs].index("masked")]
    mtoks = token_lists[[x["name"] for x in inputs].index("masked")]
    assert mtoks.count(MASK) == 3 and max(counts) <= MAX_RESIDUES + 2
    assert token_lists[[x["name"] for x in inputs].index("dots")].count(29) > 0
    assert token_lists[[x["name"] for x in inputs].index("dots")].count(30) > 0
    print(f"{len(inputs)} inputs, {sum(counts)} tokens; masked: {mtoks.count(MASK)} masks in {len(mtoks)} tokens "
          f"(scale {0.88 / (1 - 3 / len(mtoks)):.6f}); len1500 -> {counts[-4]} tokens; masked seq {masked['sequence'][:20]}...")
    meta_chars = len(json.dumps(inputs)) + 2048

    os.makedirs(args.out, exist_ok=True)
    fasta_out = os.path.join(args.out, "fairesm_some_proteins.fasta")
    if not (os.path.exists(fasta_out) and os.path.samefile(args.fasta, fasta_out)):
        shutil.copyfile(args.fasta, fasta_out)

    if args.dry_run:
        for spec in MODELS:
            for s in (1, 2, 4, 8, 16, 32, 64):
                print(f"  {spec['name']}: stride {s:3d} -> "
                      f"{fixture_bytes(counts, s, spec['layers'], spec['hidden'], meta_chars):10d} bytes")
        return 0

    import torch
    import transformers
    torch.set_num_threads(16)
    torch.set_default_dtype(torch.float32)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    print(f"torch {versions['torch']}, transformers {versions['transformers']}, "
          f"threads {torch.get_num_threads()}, python {sys.version.split()[0]}")

    failures = []
    tok_problems = hf_tokenizer_check(inputs)
    for p in tok_problems:
        print("TOKENIZER:", p)
    failures += [f"tokenizer: {p}" for p in tok_problems]
    if not tok_problems:
        print("HF EsmTokenizer ids == table lookup for all inputs")

    built = {}
    for i, spec in enumerate(MODELS):
        print(f"model {spec['name']}: building and saving")
        model, notes, inv_freq = build_model(spec, SEED + 100 * i)
        if i == 0:
            print(model)
            print("  state_dict:", ", ".join(f"{k}{tuple(v.shape)}" for k, v in model.state_dict().items()))
        keys, not_saved, rewritten = save_model(model, spec, args.out)
        notes.append("model.safetensors uses the released ESM2 names (one rotary_embeddings.inv_freq per "
                     "layer, LayerNorm .weight/.bias), written by this script"
                     + (" because save_pretrained's names differ (LayerNorm .gamma/.beta, a wildcard "
                        "inv_freq key)." if rewritten else "."))
        problem = reload_check(model, spec, args.out, token_lists[0])
        if problem:
            failures.append(f"{spec['name']}: {problem}")
        if any(k.endswith("inv_freq") for k in model.state_dict()) and not any(k.endswith("inv_freq") for k in keys):
            failures.append(f"{spec['name']}: inv_freq is in the state dict but not in model.safetensors")
        if spec["name"] == "tiny":
            save_fairesm(model, spec, inv_freq, args.out)
        built[spec["name"]] = (model, notes, not_saved, inv_freq)

    # size plan: everything but the fixtures is written now
    fixed = tree_bytes(args.out)
    fixtures_dir = os.path.join(args.out, "fixtures")
    if os.path.isdir(fixtures_dir):
        fixed -= tree_bytes(fixtures_dir)
    tiny, big = MODELS
    tiny_stride = choose_stride(counts, tiny["layers"], tiny["hidden"], meta_chars,
                                TINY_FIXTURE_TARGET, [1, 4, 8, 16, 32])
    tiny_est = fixture_bytes(counts, tiny_stride, tiny["layers"], tiny["hidden"], meta_chars)
    left = SIZE_BUDGET - SIZE_MARGIN - fixed - tiny_est
    big_stride = choose_stride(counts, big["layers"], big["hidden"], meta_chars, left,
                               list(range(16, 257, 8)))
    strides = {tiny["name"]: tiny_stride, big["name"]: big_stride}
    print(f"size plan: fixed files {fixed} bytes; {tiny['name']} stride {tiny_stride} (~{tiny_est} bytes); "
          f"{big['name']} stride {big_stride} (~{fixture_bytes(counts, big_stride, big['layers'], big['hidden'], meta_chars)}"
          f" bytes of {left} left)")

    results = {}
    for spec in MODELS:
        model, model_notes, not_saved, inv_freq = built[spec["name"]]
        s = strides[spec["name"]]
        notes = [
            "Reference: HF transformers EsmForMaskedLM, eager attention, fp32 on the CPU, each input alone "
            "(batch 1, no padding, attention_mask ones, output_hidden_states=True).",
            "hidden_states[0] is the token-dropout-scaled embedding; hidden_states[k] the output of layer k; "
            "hidden_states[L] has emb_layer_norm_after applied. mean.<k> averages rows 1..T-2 (BOS/EOS out).",
            "Weights: random from a fixed seed (Linear N(0,1/fan_in), q/k x1.5, embeddings N(0,1), "
            "LayerNorm weight 1+0.1N, every bias 0.1N); the LM decoder is tied to the embedding.",
            f"Inputs are truncated to the first {MAX_RESIDUES} residues before BOS/EOS (len1500); "
            "'masked' carries literal <mask> tokens in its sequence; tokens are in <name>.tokens.",
            f"Rows: every {s}-th token row plus the first 2 and last 2 (size budget: all of tests/testdata "
            f"<= {SIZE_BUDGET // 1_000_000} MB).",
            f"Not in model.safetensors (tied or non-persistent): {', '.join(not_saved) or 'none'}.",
        ]
        if spec["save_dtype"] == "float16":
            notes.append("model.safetensors is fp16; the reference ran in fp32 on exactly those fp16 values.")
        notes += model_notes
        print(f"model {spec['name']}: reference (fp32 HF, fp64 HF, fp32/fp64 equations)")
        results[spec["name"]] = run_model(spec, model, inv_freq, inputs, token_lists, s, args.out, versions, notes, failures)

    total = tree_bytes(args.out)
    print(f"\nsizes (bytes): total {total} under {args.out} (budget {SIZE_BUDGET})")
    for root, _, files in sorted(os.walk(args.out)):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"  {os.path.getsize(p):10d}  {os.path.relpath(p, args.out)}")
    if total > SIZE_BUDGET:
        failures.append(f"size: {total} bytes > {SIZE_BUDGET}")

    print("\nmax|fp32 - fp64| / max|fp64| over all inputs (fp32 = HF reference, fp64 = ESM2 equations in float64)")
    for name, (err, check, _) in results.items():
        L = len(err["hidden"]) - 1
        print(f"  {name}:")
        print("    hidden  " + " ".join(f"k{k}={e:.2e}" for k, e in enumerate(err["hidden"])))
        print("    mean    " + " ".join(f"k{k}={e:.2e}" for k, e in enumerate(err["mean"])))
        print("    bos     " + " ".join(f"k{k}={e:.2e}" for k, e in enumerate(err["bos"])))
        print(f"    logits  {err['logits']:.2e}")
        print(f"    (checks: HF fp64 vs equations fp64 {check['hf64_vs_ref64']:.2e}; "
              f"HF fp32 vs equations fp32 {check['hf32_vs_ref32']:.2e}, "
              f"with rotary positions from 2 {check['hf32_vs_ref32_pos_from_2']:.2e}; L={L})")

    if failures:
        print("\nFAILED CHECKS:")
        for f in failures:
            print("  " + f)
        return 3
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
