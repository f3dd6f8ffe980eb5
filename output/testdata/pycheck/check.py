#!/usr/bin/env python3
"""Reads the esm2go outputs in this directory the way docs/OUTPUT.md says
Python users should, and checks the values against expected.json.

Needs numpy, pyarrow and pandas (duckdb and polars are checked when present).
Run from anywhere: python3 output/testdata/pycheck/check.py
The outputs are rewritten by: go test ./output -run TestPyCheckFixtures -args -update-pycheck
"""
import csv
import json
import os
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
exp = json.load(open(os.path.join(HERE, "expected.json")))
D = 4
passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def bf16(arr):  # as in docs/OUTPUT.md
    bits = np.frombuffer(arr.buffers()[1], dtype="<u2", count=len(arr), offset=2 * arr.offset)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def want_rows(dtype):
    mean = np.array([r[:D] for r in exp["values"][dtype]], dtype=np.float32)
    tok = np.array([x for r in exp["values"][dtype] for x in r[D:]], dtype=np.float32).reshape(-1, D)
    return mean, tok


for dtype in ("float32", "float16", "bfloat16"):
    mean_want, tok_want = want_rows(dtype)

    # parquet, pyarrow
    path = os.path.join(HERE, f"emb_{dtype}.parquet")
    t = pq.read_table(path)
    check(f"{dtype} parquet ids", t.column("id").to_pylist() == exp["ids"])
    elem = t.schema.field("mean_3").type.value_type
    want_type = {"float32": pa.float32(), "float16": pa.float16(), "bfloat16": pa.binary(2)}[dtype]
    check(f"{dtype} parquet element type", elem == want_type, f"{elem} (pyarrow {pa.__version__}), want {want_type}")
    flat = t.column("mean_3").combine_chunks().flatten()
    tflat = t.column("per_tok_3").combine_chunks().flatten().flatten()
    if pa.types.is_fixed_size_binary(flat.type):
        dec = bf16 if dtype == "bfloat16" else (lambda a: np.frombuffer(a.buffers()[1], "<f2", len(a), 2 * a.offset).astype(np.float32))
        mean, tok = dec(flat), dec(tflat)
    else:
        mean, tok = flat.to_numpy().astype(np.float32), tflat.to_numpy().astype(np.float32)
    check(f"{dtype} parquet mean values", np.array_equal(mean.reshape(-1, D), mean_want), f"{mean} vs {mean_want}")
    check(f"{dtype} parquet per_tok values", np.array_equal(tok.reshape(-1, D), tok_want), f"{tok} vs {tok_want}")
    lengths = t.column("length").to_numpy()
    check(f"{dtype} parquet lengths", list(lengths) == [2, 0, 1] and int(lengths.sum()) == len(tok_want))
    meta = json.loads(pq.read_schema(path).metadata[b"esm2go.output"])
    check(f"{dtype} parquet metadata dtype", meta.get("dtype", "float32") == dtype, str(meta))

    # parquet, pandas (pandas cannot convert lists of 2-byte binaries, so
    # bfloat16 is read through pyarrow as above; docs/OUTPUT.md says so)
    df = None if dtype == "bfloat16" else pd.read_parquet(path)
    if dtype == "float32":
        check("float32 pandas mean", np.array_equal(np.stack(df["mean_3"]), mean_want))
        check("float32 pandas per_tok row 0", np.array_equal(np.stack(df["per_tok_3"][0]), tok_want[:2]))
    elif dtype == "float16" and elem == pa.float16():
        check("float16 pandas mean", np.array_equal(np.stack(df["mean_3"]).astype(np.float32), mean_want))

    # npy
    d = os.path.join(HERE, f"emb_{dtype}.npy")
    X = np.load(f"{d}/mean_3.npy")
    T = np.load(f"{d}/per_tok_3.npy", mmap_mode="r")
    off = np.load(f"{d}/per_tok_3.offsets.npy")
    want_descr = {"float32": "<f4", "float16": "<f2", "bfloat16": "|V2"}[dtype]
    check(f"{dtype} npy descr", X.dtype.str == want_descr, X.dtype.str)
    if dtype == "bfloat16":
        X = (X.view("<u2").astype(np.uint32) << 16).view(np.float32)
        T = (np.asarray(T).view("<u2").astype(np.uint32) << 16).view(np.float32)
    check(f"{dtype} npy mean", np.array_equal(X.astype(np.float32), mean_want))
    check(f"{dtype} npy per_tok", np.array_equal(np.asarray(T, dtype=np.float32), tok_want))
    check(f"{dtype} npy offsets", list(off) == [0, 2, 2, 3])
    rec = pd.read_csv(f"{d}/records.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype={"id": str}, keep_default_na=False)
    check(f"{dtype} npy records", list(rec["id"]) == exp["ids"] and list(rec["truncated"]) == [False, False, True])
    npymeta = json.load(open(f"{d}/metadata.json"))
    check(f"{dtype} npy metadata dtype", npymeta.get("dtype", "float32") == dtype)

# A dataset directory of shard parts.
dsdir = os.path.join(HERE, "dataset")
mean_want, _ = want_rows("float32")
df = pd.read_parquet(dsdir)
check("dataset pandas ids in order", list(df["id"]) == exp["ids"], str(list(df["id"])))
check("dataset pandas index shard-local", list(df["index"]) == [0, 1, 0])
check("dataset pandas mean", np.array_equal(np.stack(df["mean_3"]), mean_want))
t = ds.dataset(dsdir, format="parquet").to_table()
check("dataset pyarrow rows", t.num_rows == 3 and t.column("id").to_pylist() == exp["ids"])
try:
    import duckdb

    r = duckdb.sql(f"SELECT id FROM read_parquet('{dsdir}/*.parquet', filename = true) ORDER BY filename, index").fetchall()
    check("dataset duckdb order", [x[0] for x in r] == exp["ids"], str(r))
except ImportError:
    print("duckdb not installed: skipped")
try:
    import polars as pl

    p = pl.read_parquet(f"{dsdir}/*.parquet", include_file_paths="file").sort("file", "index")
    check("dataset polars order", p["id"].to_list() == exp["ids"])
except ImportError:
    print("polars not installed: skipped")

print(f"pyarrow {pa.__version__}, pandas {pd.__version__}, numpy {np.__version__}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
