#!/usr/bin/env python3
"""GPU parity references for esm2go's CUDA backend (issue: CUDA backend equal to PyTorch).

Runs on the GPU test host. For the committed fixture models (tiny, esm2_8M_shape) and
random-init models of the 35M, 150M and 650M shapes (built and saved here with
gen_fixtures.build_model/save_model, hub names), it runs HF transformers EsmForMaskedLM
on the GPU in fp32 (TF32 off: the reference) and in fp16 (model.half(): HF's own fp16
error), each input alone, and writes under --out/<model>/:
  config.json + model.safetensors   (random-init shapes only; fixtures are read in place)
  ref.safetensors                   per input <name>.tokens int32 (T,), <name>.hidden (T, D)
                                    last layer (after emb_layer_norm_after), <name>.mean (D,),
                                    <name>.bos (D,); __metadata__: version, model, inputs
                                    (JSON), hf_fp16_err (JSON {hidden, mean, bos}: max over
                                    inputs of max|fp16-fp32|/max|fp32|), torch, transformers,
                                    gpu
The Go side (tests/gpu_parity_test.go, ESM2GO_GPU_PARITY_DIR=--out) checks esm2go's fp32
mode within 1e-4 x max|ref| and its fp16 error <= 1.5x HF's fp16 error.

  PYTHONUNBUFFERED=1 python3 tests/gpu_parity.py --out /tmp/gpuref
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures as gf  # noqa: E402

VERSION = "1"
SHAPES = [  # name, layers, hidden, heads (ESM2 sizes)
    ("esm2_35M_shape", 12, 480, 20),
    ("esm2_150M_shape", 30, 640, 20),
    ("esm2_650M_shape", 33, 1280, 20),
]


def inputs_for(fasta):
    rng = random.Random(7)
    ins = [{"name": n, "sequence": s} for n, s in gf.read_fasta(fasta)]
    for n in (1, 30, 300, 1022):
        ins.append({"name": f"rand{n}", "sequence": "".join(rng.choice(gf.STANDARD_RESIDUES) for _ in range(n))})
    return ins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--fasta", default="tests/testdata/fairesm_some_proteins.fasta")
    ap.add_argument("--shapes", default="all", help="comma list of shape names, or all, or none")
    args = ap.parse_args()

    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import EsmForMaskedLM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__} transformers {transformers.__version__} on {gpu}")

    models = [("tiny", "tests/testdata/models/tiny"), ("esm2_8M_shape", "tests/testdata/models/esm2_8M_shape")]
    wanted = [s for s in SHAPES if args.shapes == "all" or s[0] in args.shapes.split(",")]
    for i, (name, L, D, H) in enumerate(wanted):
        spec = dict(name=name, layers=L, hidden=D, heads=H, intermediate=4 * D, save_dtype="float32")
        model, _, _ = gf.build_model(spec, gf.SEED + 1000 + i)
        gf.save_model(model, spec, args.out)  # -> out/models/<name>/
        models.append((name, os.path.join(args.out, "models", name)))
        del model

    ins = inputs_for(args.fasta)
    toks = [gf.tokenize(x["sequence"]) for x in ins]
    summary = {}
    for name, path in models:
        m32 = EsmForMaskedLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").to(dev).eval()
        m16 = EsmForMaskedLM.from_pretrained(path, dtype=torch.float16, attn_implementation="eager").to(dev).eval()
        tensors, err = {}, {"hidden": 0.0, "mean": 0.0, "bos": 0.0}
        for x, t in zip(ins, toks):
            ids = torch.tensor([t], device=dev)
            with torch.no_grad():
                h32 = m32.esm(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].float()
                h16 = m16.esm(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].float()
            T = len(t)
            mean32, mean16 = h32[1:T - 1].mean(0), h16[1:T - 1].mean(0)
            for k, a, b in (("hidden", h16, h32), ("mean", mean16, mean32), ("bos", h16[0], h32[0])):
                err[k] = max(err[k], float((a - b).abs().max() / b.abs().max()))
            n = x["name"]
            tensors[f"{n}.tokens"] = torch.tensor(t, dtype=torch.int32)
            tensors[f"{n}.hidden"] = h32.cpu().contiguous()
            tensors[f"{n}.mean"] = mean32.cpu().contiguous()
            tensors[f"{n}.bos"] = h32[0].cpu().contiguous()
        meta = {"esm2go_gpu_parity_version": VERSION, "model": name, "model_path": path,
                "inputs": json.dumps(ins), "hf_fp16_err": json.dumps(err), "torch": torch.__version__,
                "transformers": transformers.__version__, "gpu": gpu}
        d = os.path.join(args.out, "ref", name)
        os.makedirs(d, exist_ok=True)
        save_file(tensors, os.path.join(d, "ref.safetensors"), metadata=meta)
        summary[name] = err
        print(f"{name}: HF fp16 vs HF fp32 max rel err {err}")
        del m32, m16
        torch.cuda.empty_cache()
    with open(os.path.join(args.out, "hf_fp16_err.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
