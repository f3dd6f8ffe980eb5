"""Sustained fp16 GEMM throughput and the GPU's clocks under load.

The bench's matmul peak (torch_varlen.matmul_peak_tflops) times 20 GEMMs of
8192^3, about 30 ms of work, which a GPU runs at its boost clock. An embedding
run keeps the GPU busy for minutes, where power and temperature limits set the
clock. This script runs the same GEMM back to back for --seconds and prints
the rate of each half-second window with the SM clock, power and the active
clock-limit reasons read from nvidia-smi in the same window, then the burst
figure and the sustained one (median of the windows after the first --settle-s
seconds). torch_varlen.py reports sustained_tflops beside the burst figure.

    python3 bench/sustained.py [--seconds 30] [--n 8192] [--settle-s 3] [--out FILE.json]

(--n sizes the sustained GEMMs; the burst figure is always the bench's 8192^3.)
"""
import argparse
import json
import statistics
import subprocess
import threading
import time


def sampler(stop, rows):
    q = "clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active"
    try:
        p = subprocess.Popen(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits", "-lms", "250"],
                             stdout=subprocess.PIPE, text=True)
    except OSError as e:  # no nvidia-smi: rates without clocks
        print(f"WARNING: nvidia-smi not started ({e}); no clock, power or temperature columns", flush=True)
        return
    try:
        for line in p.stdout:
            if stop.is_set():
                break
            f = [x.strip() for x in line.split(",")]
            try:
                rows.append((time.time(), float(f[0]), float(f[1]), float(f[2]), f[3]))
            except (ValueError, IndexError):
                pass
    finally:
        p.terminate()
        p.wait()


def gemm_windows(x, y, seconds, window_s=0.5):
    """Runs x @ y back to back for `seconds`; returns (start, end, TFLOP/s, wall start,
    wall end) per window of about window_s (times from the first window's start)."""
    import torch
    flop = 2.0 * x.shape[0] * x.shape[1] * y.shape[1]
    windows = []
    t0 = time.time()
    while time.time() - t0 < seconds:
        ws, k = time.time(), 0
        while time.time() - ws < window_s:
            for _ in range(8):
                x @ y
            torch.cuda.synchronize()
            k += 8
        we = time.time()
        windows.append((ws - t0, we - t0, flop * k / (we - ws) / 1e12, ws, we))
    return windows


def settled(windows, settle_s):
    """Median TFLOP/s of gemm_windows' windows starting after settle_s seconds (all of
    them if none does), by which time a power- or temperature-limited clock has settled."""
    late = [tf for s, _, tf, _, _ in windows if s >= settle_s] or [tf for _, _, tf, _, _ in windows]
    return round(statistics.median(late), 1)


def sustained_tflops(dev, seconds=10.0, settle_s=3.0, n=8192):
    """fp16 GEMM rate (n^3, fp32 accumulate) the GPU holds when kept busy."""
    import torch
    x = torch.randn(n, n, device=dev, dtype=torch.float16)
    y = torch.randn(n, n, device=dev, dtype=torch.float16)
    return settled(gemm_windows(x, y, seconds), settle_s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--settle-s", type=float, default=3.0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    import torch
    from torch_varlen import matmul_peak_tflops
    n = a.n
    burst = matmul_peak_tflops(torch.device("cuda"))  # the bench's matmul peak (8192^3)
    x = torch.randn(n, n, device="cuda", dtype=torch.float16)
    y = torch.randn(n, n, device="cuda", dtype=torch.float16)
    stop, smp = threading.Event(), []
    th = threading.Thread(target=sampler, args=(stop, smp), daemon=True)
    th.start()
    windows = gemm_windows(x, y, a.seconds)
    stop.set()
    th.join(timeout=2)
    out = []
    for s, e, tf, ws, we in windows:
        inw = [r for r in smp if ws <= r[0] <= we]
        clk = statistics.mean(r[1] for r in inw) if inw else None
        pw = statistics.mean(r[2] for r in inw) if inw else None
        temp = max(r[3] for r in inw) if inw else None
        why = sorted({r[4] for r in inw})
        out.append({"t_s": round(s, 2), "tflops": round(tf, 1), "sm_mhz": clk, "power_w": pw, "temp_c": temp,
                    "clock_event_reasons": why})
        print(f"t={s:6.2f}s {tf:7.1f} TFLOP/s  sm {clk} MHz  {pw} W  {temp} C  {','.join(why)}", flush=True)
    res = {"n": n, "burst_tflops": burst, "sustained_tflops": settled(windows, a.settle_s),
           "seconds": a.seconds, "windows": out, "gpu": torch.cuda.get_device_name(0)}
    print(f"burst (20 GEMMs, as the bench's matmul peak): {res['burst_tflops']} TFLOP/s; "
          f"sustained (median after {a.settle_s:g} s): {res['sustained_tflops']} TFLOP/s", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
