#!/usr/bin/env python3
"""Random-init ESM2 models of the released shapes for the speed benchmark (speed does
not depend on the values). Built with tests/gen_fixtures.build_model, on the GPU when
there is one (float32 draws there: seconds for 3B, where the fixtures' float64 host draws
take minutes), and saved in fp32 with the released tensor names (gen_fixtures.hub_tensors)
plus the config.json transformers writes, into OUT/models/esm2_<name>_shape/. A folder
that already holds a finished model (.bench_done) is reused. The models of
common.SAVE_FP16 (15B) are saved in float16 but for the rotary inv_freq (kept float32).

  python3 bench/make_models.py --out /tmp/esm2go_bench --models 35M,150M,650M [--dry-run]
Disk (fp32): 35M 0.14 GB, 150M 0.6 GB, 650M 2.6 GB, 3B 11.4 GB (3B: ~25 GB of host RAM);
15B (fp16) 30 GB (~60 GB of GPU memory while it is drawn in float32, ~31 GB of host RAM).
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import common as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=C.DEFAULT_MODELS)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    for name in names:
        if name not in C.MODEL_SHAPES:
            sys.exit(f"unknown model {name!r}; known: {','.join(C.MODEL_SHAPES)}")
    for i, name in enumerate(names):
        L, D, H = C.MODEL_SHAPES[name]
        d = os.path.join(a.out, "models", C.model_dir_name(name))
        params = L * 12 * D * D + 33 * D
        if os.path.exists(os.path.join(d, ".bench_done")):
            print(f"{name}: reusing {d}", flush=True)
            continue
        fp16 = name in C.SAVE_FP16
        width = 2 if fp16 else 4
        print(f"{name}: building {L} layers, dim {D}, {H} heads (~{params / 1e6:.0f}M params, "
              f"~{params * width / 1e9:.2f} GB {'fp16' if fp16 else 'fp32'}) -> {d}", flush=True)
        if a.dry_run:
            continue
        import gen_fixtures as gf
        import torch
        from safetensors.torch import save_file
        spec = dict(name=C.model_dir_name(name), layers=L, hidden=D, heads=H, intermediate=4 * D,
                    save_dtype="float16" if fp16 else "float32")
        idx = list(C.MODEL_SHAPES).index(name)
        t0 = time.time()
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        model, _, _ = gf.build_model(spec, gf.SEED + 2000 + idx, device=dev)
        os.makedirs(d, exist_ok=True)
        model.config.save_pretrained(d)  # config.json, as model.save_pretrained writes it
        # float16 copies made on the device (a float32 copy of 15B would not fit beside the model)
        tensors = {}
        for k, v in gf.hub_tensors(model, spec, torch.float16 if fp16 else torch.float32).items():
            if k.endswith("inv_freq"):
                v = v.float()  # exact: the inv_freq values are fp16-rounded (build_model)
            tensors[k] = v.cpu()
        del model
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        print(f"{name}: {len(tensors)} tensors built on {dev} and saved in {time.time() - t0:.1f} s", flush=True)
        del tensors
        with open(os.path.join(d, ".bench_done"), "w") as f:
            f.write("ok\n")


if __name__ == "__main__":
    main()
