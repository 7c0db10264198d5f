"""The allocator's cost at the real ERNIE-4.5-VL-28B-A3B shapes (issue 15; part of `make bench`).

What runs: quantkit.allocate's own `build_units` on the real config's plan (default profile, vLLM
units) and its `measure_errors` on one MoE layer (only routed experts are allocated, so MoE layers are
all there is to measure): per routed expert the RTN error at every candidate width on
`DEFAULT_ROWS` sampled rows, the GPTQ/RTN ratio on each layer, modality and input group's most-routed
expert, and the gate/up output factor (`mlp_output_factors`). Stand-ins (the only difference from a
real run): weights are seeded random tensors of the real shapes generated on the fly (a real run reads
bf16 from disk instead), Hessians are seeded SPD matrices, routing counts are a skewed seeded draw. The
knapsack is timed on the full model's units with random errors.

Projection: T = 27 x T_moe + T_knapsack (+ T_dense per dense layer, were any allocated), compared with
a quarter of the 4-bit quantize run (`total_minutes` of the newest bench/results/realshape-*.json).

    python -m bench.allocate_cost [--threads 2] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import zlib
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "ERNIE-4.5-VL-28B-A3B"


class _Weights:
    """Checkpoint stand-in: `read(name)` is a seeded random tensor of the tensor's real shape."""

    def __init__(self, ckpt):
        self.ckpt = ckpt
        self.shapes = {i.name: i.shape for i in ckpt.infos()}
        self.read_seconds = 0.0

    def read(self, name: str) -> torch.Tensor:
        t = time.perf_counter()
        gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        w = torch.randn(self.shapes[name], generator=gen) * 0.02
        self.read_seconds += time.perf_counter() - t
        return w


class _Layer:
    """LayerCalibration stand-in: SPD mean XᵀX per input group, routing counts per modality."""

    def __init__(self, dims: dict[str, int], experts: dict[str, int], seed: int, clock: dict):
        self.dims, self.seed, self.clock = dims, seed, clock
        rng = np.random.default_rng(seed)
        self.routing = {}
        for modality, n in experts.items():
            counts = rng.zipf(1.6, n).clip(max=50) * 40
            self.routing[modality] = {"tokens": int(counts.sum()), "tokens_per_expert": counts.tolist()}

    def hessian(self, group: str):
        t = time.perf_counter()
        d = self.dims[group]
        gen = torch.Generator().manual_seed(zlib.crc32(group.encode()) ^ self.seed)
        x = torch.randn(2 * d, d, generator=gen)
        h = x.T @ x / (2 * d)
        self.clock["seconds"] += time.perf_counter() - t
        self.clock["bytes"] += d * d * 4  # a real run reads this fp32 matrix from the calibration directory
        return h, 2 * d


class _Store:
    def __init__(self, dims, experts, hidden: int, layers: list[int]):
        self.dims, self.experts, self.hidden, self.layers = dims, experts, hidden, layers
        self.clock = {"seconds": 0.0, "bytes": 0}

    def layer(self, n: int) -> _Layer:
        return _Layer(self.dims, self.experts, n, self.clock)

    def fishers(self):
        """Output Fisher stand-ins (calibrate/sensitivity.py): RANK orthonormal directions, decaying values."""
        from quantkit.calibrate.sensitivity import RANK, OutputFisher

        gen = torch.Generator().manual_seed(7)
        vectors = torch.linalg.qr(torch.randn(self.hidden, RANK, generator=gen))[0].contiguous()
        values = 1e-3 / torch.arange(1, RANK + 1, dtype=torch.float32)
        return {n: {m: OutputFisher(values, vectors, float(values.sum()) * 1.05, 1000) for m in self.experts}
                for n in self.layers}


def measure(threads: int) -> dict:
    from quantkit.adapters import adapter_for, real_config
    from quantkit.allocate import DEFAULT_ROWS, build_units, knapsack, measure_errors
    from quantkit.checkpoint import ConfigCheckpoint
    from quantkit.plan import build_plan
    from quantkit.profiles import resolve_profile

    torch.set_num_threads(threads)
    config = real_config(MODEL)
    adapter = adapter_for(config)
    ckpt = ConfigCheckpoint(config, f"{MODEL} (config only)", adapter.tensor_shapes())
    plan = build_plan(ckpt, adapter, resolve_profile(adapter, bits=None, profile=None), force=True)
    units = build_units(ckpt, adapter, plan, "vllm")
    dims = {adapter.input_group(e.module): e.shape[1] for u in units for e in u.entries}
    shape = adapter.shape
    store = _Store(dims, shape.experts, shape.hidden_size, sorted({u.entries[0].role.layer for u in units}))
    weights = _Weights(ckpt)
    layers = sorted({u.entries[0].role.layer for u in units})
    moe_layer = shape.moe_layers[0]
    dense = [n for n in layers if n not in shape.moe_layers]
    seconds = {}
    for name, layer in [("moe_layer", moe_layer)] + [("dense_layer", n) for n in dense[:1]]:
        mine = [u for u in units if u.entries[0].role.layer == layer]
        t, weights.read_seconds = time.perf_counter(), 0.0
        store.clock.update(seconds=0.0, bytes=0)
        notes = measure_errors(weights, adapter, store, mine, rows=DEFAULT_ROWS, method="gptq")
        seconds[name] = {"total": round(time.perf_counter() - t, 2), "weights_generated": round(weights.read_seconds, 2),
                         "hessians_generated": round(store.clock["seconds"], 2),
                         "hessian_bytes_read_in_a_real_run": store.clock["bytes"],
                         "units": len(mine), "tensors": sum(len(u.entries) for u in mine)}
        seconds[name]["notes"] = notes
    rng = np.random.default_rng(0)
    options = [[(int(b), float(e)) for b, e in zip(u.nbytes, sorted(rng.random(len(u.nbytes)), reverse=True))]
               for u in units]
    t = time.perf_counter()
    knapsack(options, int(np.mean([sum(max(b for b, _ in o) for o in options), sum(min(b for b, _ in o) for o in options)])))
    seconds["knapsack"] = round(time.perf_counter() - t, 2)
    n_moe = len(shape.moe_layers)
    def compute(part: dict) -> float:  # the allocator's own work: stand-in generation subtracted
        return part["total"] - part["weights_generated"] - part["hessians_generated"]

    per_moe = compute(seconds["moe_layer"])
    per_dense = compute(seconds["dense_layer"]) if dense else 0.0
    total = per_dense * len(dense) + n_moe * per_moe + seconds["knapsack"]
    return {"model": MODEL, "threads": threads, "rows": DEFAULT_ROWS, "units": len(units), "moe_layers": n_moe,
            "seconds": seconds, "projected_minutes": round(total / 60, 1),
            "hessian_gb_read_in_a_real_run": round(n_moe * seconds["moe_layer"]["hessian_bytes_read_in_a_real_run"] / 1e9, 1),
            "formula": f"T = {len(dense)} x {per_dense:.1f} + {n_moe} x {per_moe:.1f} + {seconds['knapsack']} s "
                       "(generated weights and Hessians subtracted; a real run reads bf16 weights and the "
                       "calibration's fp32 Hessians from disk instead, not timed here)"}


def quantize_minutes() -> tuple[float | None, str | None]:
    runs = sorted(RESULTS.glob("realshape-*.json"), key=lambda p: p.stat().st_mtime)
    for p in reversed(runs):
        data = json.loads(p.read_text())
        minutes = ((data.get("summary") or {}).get("projection") or {}).get("total_minutes")
        if minutes:
            return float(minutes), p.name
    return None, None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.allocate_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    result = measure(a.threads)
    minutes, source = quantize_minutes()
    result["quantize_4bit_minutes"], result["quantize_source"] = minutes, source
    if minutes:
        result["quarter_minutes"] = round(minutes / 4, 1)
        result["within_quarter"] = result["projected_minutes"] <= minutes / 4
    result.update({"machine": platform.machine(), "cpu": platform.processor(), "date": time.strftime("%Y-%m-%d"),
                   "load_1m": round(__import__("os").getloadavg()[0], 2)})
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "allocate-cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("threads", "projected_minutes", "formula", "quantize_4bit_minutes",
                                             "hessian_gb_read_in_a_real_run")
                      if k in result}, indent=1))
    if minutes:
        print(f"allocator {result['projected_minutes']} min vs a quarter of the 4-bit quantize run "
              f"{result['quarter_minutes']} min: {'within' if result['within_quarter'] else 'OVER'}")


if __name__ == "__main__":
    main()
