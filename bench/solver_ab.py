"""Before/after of quantkit/quantize/gptq.py on real ERNIE-4.5-VL expert shapes, in one process.

Loads the solver at a git revision (`--ref`, default HEAD) next to the working tree's, and runs both on
the same batch (MAX_BATCH experts, synthetic ill-conditioned Hessians, heavy-tailed weights), alternating,
with the load average and this machine's fp32 matmul GFLOP/s after every run. Reports the wall and CPU
seconds, whether the codes (and scales, zeros, g_idx, damping) are identical, the share of codes that
differ and the GPTQ objective tr((W - W_hat) H (W - W_hat)^T) of the working tree over the reference's
(an algorithm change that is exact up to float rounding keeps it at ~1).

    python -m bench.solver_ab --ref 00798f2 --threads 2          # from the repository root
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHAPES = {"text.gate": (1536, 2560), "text.down": (2560, 1536), "vision.gate": (512, 2560), "vision.down": (2560, 512)}


def load_ref(ref: str):
    src = subprocess.run(["git", "show", f"{ref}:quantkit/quantize/gptq.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "gptq_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("gptq_ref", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gptq_ref"] = mod
    spec.loader.exec_module(mod)
    return mod


def problem(n_mats: int, out_f: int, in_f: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_mats, 2 * in_f, in_f // 8, generator=g) @ torch.randn(n_mats, in_f // 8, in_f, generator=g)
    x = x / (in_f // 8) ** 0.5 + 0.3 * torch.randn(n_mats, 2 * in_f, in_f, generator=g)
    x[:, :, :8] *= 20.0  # massive-activation channels
    h = x.mT @ x / (2 * in_f)
    w = 0.02 * torch.randn(n_mats, out_f, in_f, generator=g) * torch.exp(0.7 * torch.randn(n_mats, out_f, in_f, generator=g))
    return w, h


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def sample() -> dict:
    torch.set_num_threads(2)
    a = torch.randn(2048, 2048)
    a @ a
    t0 = time.perf_counter()
    a @ a
    gflops = 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "matmul_gflops": round(gflops, 1)}


def run(mod, w, h, threads: int):
    torch.set_num_threads(threads)
    c0, t0 = cpu(), time.perf_counter()
    r = mod.gptq_quantize(w, h, bits=4, group_size=128, sym=True)
    wall = time.perf_counter() - t0
    return r, {"seconds": round(wall, 2), "cpu_seconds": round(cpu() - c0, 2), **sample()}


def same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("codes", "scales", "zeros", "g_idx", "damp"))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--ref", default="HEAD")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--shapes", default="text.gate,text.down,vision.gate")
    p.add_argument("--json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from quantkit.quantize import gptq as new

    ref = load_ref(args.ref)
    out = {"ref": args.ref, "threads": args.threads, "experts": args.experts, "shapes": {}}
    for name in args.shapes.split(","):
        w, h = problem(args.experts, *SHAPES[name])
        r_new, t_new = run(new, w, h, args.threads)
        r_ref, t_ref = run(ref, w, h, args.threads)
        err_new = new.reconstruction_error(w, r_new.dequantize(), h)
        err_ref = new.reconstruction_error(w, r_ref.dequantize(), h)
        rec = {"shape": list(SHAPES[name]), "after": t_new, "before": t_ref,
               "speedup": round(t_ref["seconds"] / t_new["seconds"], 2),
               "identical_to_before": same(r_new, r_ref),
               "codes_differ": float((r_new.codes != r_ref.codes).float().mean()),
               # tr((W - W_hat) H (W - W_hat)^T), after / before, worst and mean over the experts
               "error_after_over_before_max": round(float((err_new / err_ref).max()), 5),
               "error_after_over_before_mean": round(float((err_new / err_ref).mean()), 5)}
        out["shapes"][name] = rec
        print(json.dumps({name: rec}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
