"""quantkit at real ERNIE-4.5-VL-28B-A3B layer shapes: GPTQ 4-bit, layer by layer (`make bench`).

What is measured (the path): the product's per-layer machinery, driven here in the order
`LayerStream.run` uses with `api.quantize`'s on-the-fly GPTQ callback: `runner.build_layer` (read the
layer's bf16 tensors, upcast to fp32, fuse experts), `LayerStream._forward` with the calibration hooks
over every sample (forward + Hessian accumulation, routed experts per modality), `_supplement` (auto
coverage), then `LayerQuantizer` (read the planned weights, batched GPTQ, pack, hand to a
`ShardWriter` with the CLI's 2 GB shards), with the same object lifetimes as `LayerStream.run`. The prefix
model (embeddings, vision tower, resampler) is bypassed: synthetic hidden states of realistic scale enter
the decoder layers (bench/realshape.py); the vision tower's cost is measured separately on one real-shape
ViT block and enters the projection. Timing only wraps public calls (subclasses of Checkpoint and
LayerCalibration that add timers, LayerStream's `mark` hook, LayerQuantizer's `observe` hook per
solved batch), nothing is patched and no private method is overridden.

Every configuration (1, 2, 3 MoE layers; the dense layer 0) runs in its own subprocess so its peak RSS
(VmHWM, reset per segment through /proc/self/clear_refs) is independent. Every figure sits next to the
load average and this machine's fp32 matmul GFLOP/s measured in the same run, and the CPU share the
process got (CPU seconds / (wall x threads)), because the machine is shared.

    python -m bench.run_bench                      # defaults of `make bench`
    python -m bench.run_bench --layers 1,2,3 --tokens 16384 --threads 2
    python -m bench.run_bench --size smoke --inprocess --out /tmp/x   # tiny shapes (tests)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

SCHEMA = "quantkit-bench/1"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results"
DEFAULT_ACCURACY = REPO / "build" / "profile" / "report" / "report.json"  # `make profile`
REAL_LAYERS = 28  # ERNIE-4.5-VL-28B-A3B: layer 0 dense, 27 MoE layers
REAL_MOE_LAYERS = 27
BLOCK_SIZE = 128  # gptq_quantize's default lazy block
SHARD_BYTES = 2 * 10**9  # the CLI's --max-shard-size default, 2GB
VIT_REPS = 5  # timings of the ViT block and the resampler (their median enters the projection)
MATMUL_N = 2048  # size of the fp32 matmul that measures the machine (--matmul-n)
TARGETS = {"total_minutes": 60.0, "peak_rss_gib": 12.0, "solver_matmul_ratio": 0.5, "batched_speedup": 5.0,
           "calibration_tokens": 16384}


# -- machine and process measurements ------------------------------------------------------------------

def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux clear_refs 5); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def matmul_gflops(n: int | None = None, reps: int = 3) -> dict:
    """fp32 [n, n] @ [n, n] GFLOP/s on this machine now: every sample, their median and best."""
    import torch

    n = n or MATMUL_N
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        samples.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {"median": round(statistics.median(samples), 1), "best": round(max(samples), 1),
            "samples": [round(s, 1) for s in samples], "n": n}


def machine_sample() -> dict:
    return {"time": time.strftime("%H:%M:%S"), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "matmul_gflops": matmul_gflops()}


def machine_info(threads: int) -> dict:
    import torch

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "mem_bytes": mem, "threads": threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "hostname": platform.node()}


# -- FLOP count of the GPTQ solver ------------------------------------------------------------------------

def gptq_flops(out_f: int, in_f: int, block: int = BLOCK_SIZE, group: int = 128) -> dict:
    """What gptq_quantize executes for one [out, in] matrix (LAPACK counts, 1 multiply-add = 2 FLOPs),
    error-feedback form (quantkit/quantize/gptq.py): one Cholesky in^3/3; per lazy block [i1, i2) a bmm
    bringing in the finished blocks' errors 2 out (i2-i1) i1, the in-block rank-1 updates
    2 out sum_(i in block)(i2-i-1), and at each group start after the first block a unit-triangular
    solve out |J|^2 (J = block start .. group end) for the group's scale source; per column quantize +
    error ~8 out."""
    factor = round(in_f**3 / 3)
    bmm = rank1 = group_solve = 0
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        w = i2 - i1
        bmm += 2 * out_f * w * i1
        rank1 += out_f * w * (w - 1)  # 2 out sum_{i<w}(w-1-i) = out w (w-1)
        if i1:
            for c in range(i1 - i1 % group + (group if i1 % group else 0), i2, group):
                group_solve += out_f * (c + group - i1) ** 2
    elementwise = 8 * out_f * in_f
    return {"factor": factor, "bmm": bmm, "rank1": rank1, "group_solve": group_solve, "elementwise": elementwise,
            "total": factor + bmm + rank1 + group_solve + elementwise}


# -- timers on public hooks (no patching) -------------------------------------------------------------------

def _timed_classes():
    from quantkit.calibrate.runner import LayerCalibration, LayerStream
    from quantkit.checkpoint import Checkpoint
    class TimedCheckpoint(Checkpoint):
        read_seconds = 0.0
        read_bytes = 0

        def read(self, name):
            t0 = time.perf_counter()
            t = super().read(name)
            self.read_seconds += time.perf_counter() - t0
            self.read_bytes += t.numel() * t.element_size()
            return t

        def read_many(self, names):
            t0 = time.perf_counter()
            out = super().read_many(names)
            self.read_seconds += time.perf_counter() - t0
            self.read_bytes += sum(t.numel() * t.element_size() for t in out.values())
            return out

    class TimedCalibration(LayerCalibration):
        add_seconds = 0.0

        def add(self, key, x):
            t0 = time.perf_counter()
            super().add(key, x)
            self.add_seconds += time.perf_counter() - t0

    class SolveTimer:
        """`LayerQuantizer(observe=...)`: per kind of solved unit, solver and preparation seconds,
        matrices, batches and FLOPs of the algorithm (the pipeline's public batch hook)."""

        def __init__(self):
            self.kinds: dict[str, dict] = defaultdict(lambda: defaultdict(float))
            self.solve_total = 0.0

        def __call__(self, batch, total, gptq):
            self.solve_total += total
            unit = batch[0]  # the tensors solved as one matrix (gate+up, q/k/v, or one)
            role = unit[0].role
            shape = (sum(e.shape[0] for e in unit), unit[0].shape[1])
            key = ".".join(x for x in (role.kind, role.modality, "+".join(e.role.proj or e.name.rsplit(".", 2)[-2]
                                                                            for e in unit)) if x)
            rec = self.kinds[key]
            rec["gptq_seconds"] += gptq
            rec["prep_seconds"] += total - gptq
            rec["matrices"] += len(batch)
            rec["batches"] += 1
            rec["flops"] = int(rec["flops"]) + len(batch) * gptq_flops(*shape, group=unit[0].scheme.group_size
                                                                       if unit[0].scheme.group_size > 0 else shape[1])["total"]
            rec["shape"] = list(shape)

    class PrefixlessStream(LayerStream):
        """LayerStream without its prefix model: hidden states come from bench/realshape.py. The
        attention / experts kernels are the ones `prefix_model` selects when it loads the real model
        on CPU (sdpa, grouped_mm: checked on the tiny model). `step` is the product's; `mark` records
        each segment's end time, resident and peak memory (then resets the peak)."""

        def __init__(self, ckpt, adapter):
            super().__init__(ckpt, adapter)
            text = self.runner.text_config()
            text._attn_implementation = "sdpa"
            text._experts_implementation = "grouped_mm"
            self.marks: list[tuple[int | None, str, float, int, int]] = []

        def new_calibration(self, n):
            return TimedCalibration(n)

        def mark(self, n, segment):
            st = _status()
            self.marks.append((n, segment, time.perf_counter(), st["VmRSS"], st["VmHWM"]))
            reset_peak()

    return TimedCheckpoint, TimedCalibration, SolveTimer, PrefixlessStream


# -- one configuration (runs in a child process) --------------------------------------------------------

def run_config(args) -> dict:
    """Stream `args.layers` of the checkpoint once over the synthetic calibration set with GPTQ on the
    fly; return the per-layer figures."""
    import torch

    torch.set_num_threads(args.threads)
    from quantkit.adapters import adapter_for
    from quantkit.checkpoint import ShardWriter
    from quantkit.manifest import sha256_file
    from quantkit.plan import build_plan
    from quantkit.profiles import resolve_profile
    from quantkit.quantize.pipeline import LayerQuantizer

    from bench.realshape import synthetic_states

    TimedCheckpoint, TimedCalibration, SolveTimer, PrefixlessStream = _timed_classes()
    segments = []  # (name, peak bytes)
    can_reset = reset_peak()
    result = {"layers_requested": args.layers, "threads": torch.get_num_threads(), "peak_reset": can_reset,
              "machine_start": machine_sample()}
    t_setup = time.perf_counter()
    ckpt = TimedCheckpoint.open(args.ckpt)
    adapter = adapter_for(ckpt.config)
    profile = resolve_profile(adapter, bits=args.bits, profile=None)
    plan = build_plan(ckpt, adapter, profile)
    stream = PrefixlessStream(ckpt, adapter)
    states = synthetic_states(stream.runner.text_config(), args.tokens, args.seq_len, args.vision_frac, args.seed)
    n_vision = sum(int(kw["moe_mm_token_type_ids"].sum()) for _, kw in states)
    result["calibration"] = {"tokens": args.tokens, "samples": len(states), "seq_len": args.seq_len,
                             "vision_tokens": n_vision, "text_tokens": args.tokens - n_vision,
                             "hidden_state_bytes": sum(h.numel() * 4 for h, _ in states),
                             "mode": args.mode, "min_tokens": args.min_tokens}
    result["profile"] = profile.name
    timer = SolveTimer()
    q = LayerQuantizer(ckpt, plan, adapter, observe=timer)
    out_dir = Path(tempfile.mkdtemp(prefix="quantkit-bench-out-", dir=args.work_dir))
    writer = ShardWriter(out_dir, SHARD_BYTES)
    write = {"seconds": 0.0, "bytes": 0}

    def add(group):
        t0 = time.perf_counter()
        for name, t in group.items():
            writer.add(name, t)
            write["bytes"] += t.numel() * t.element_size()
        write["seconds"] += time.perf_counter() - t0

    result["setup_seconds"] = round(time.perf_counter() - t_setup, 2)
    segments.append(("setup", _status()["VmHWM"]))
    result["rss_before_layers_bytes"] = _status()["VmRSS"]

    layers_out = []
    kept = {}  # the last layer's statistics, for the batched-vs-loop comparison afterwards
    last = args.layers[-1]

    def on_layer(n, calib):
        # what api.quantize's on-the-fly GPTQ callback does, plus the figures read off the statistics
        kept["hessian_bytes"] = sum(h.numel() * h.element_size() for h in calib.hessians.values())
        kept["tokens_per_expert"] = _tokens_per_expert(calib, args.min_tokens)
        kept["add_seconds"] = calib.add_seconds
        ckpt.read_seconds, ckpt.read_bytes = 0.0, 0
        timer.solve_total = 0.0
        timer.kinds.clear()
        w0 = write["seconds"]
        t0 = time.perf_counter()
        q(n, calib, add)
        kept["t_quantize"] = time.perf_counter() - t0
        kept["t_read"], kept["t_write"] = ckpt.read_seconds, write["seconds"] - w0
        if n == last and args.compare_loop:
            kept["calib"] = calib
        return None

    # states: the synthetic first-layer inputs built above
    for n in args.layers:
        reset_peak()
        stream.marks.clear()
        stream.mark(n, "start")
        cpu0 = cpu_seconds()
        ckpt.read_seconds, ckpt.read_bytes = 0.0, 0
        wb0 = write["bytes"]
        states = stream.step(n, states, mode=args.mode, min_tokens=args.min_tokens, on_layer=on_layer)
        stream.mark(n, "end")
        cpu = cpu_seconds() - cpu0
        m = {seg: (t, rss, peak) for _, seg, t, rss, peak in stream.marks}
        t_start = m["start"][0]
        seconds = {seg: m[seg][0] - m[prev][0] for prev, seg in
                   (("start", "load"), ("load", "forward"), ("forward", "supplement"), ("supplement", "on_layer"),
                    ("on_layer", "end"))}
        wall = m["end"][0] - t_start
        t_solve = timer.solve_total
        t_gptq = sum(k["gptq_seconds"] for k in timer.kinds.values())
        peak = max(p for _, _, p in m.values())
        segments.append((f"layer {n}", peak))
        flops = sum(k["flops"] for k in timer.kinds.values())
        rec = {
            "layer": n, "kind": "moe" if stream.runner.text_config().mlp_layer_types[n] == "sparse" else "dense",
            "seconds": {
                "total": round(wall, 2),
                "load_layer": round(seconds["load"], 2),
                "forward_hessian": round(seconds["forward"] + seconds["supplement"], 2),
                "forward_hessian_supplement": round(seconds["supplement"], 2),
                "hessian_accumulate": round(kept["add_seconds"], 2),
                "read_weights": round(kept["t_read"], 2),
                "solve": round(t_solve, 2), "solve_gptq": round(t_gptq, 2),
                "pack": round(kept["t_quantize"] - kept["t_read"] - t_solve - kept["t_write"], 2),
                "write": round(kept["t_write"], 2),
                "free_and_carry": round(seconds["end"], 2),
            },
            "cpu_share": round(cpu / (wall * args.threads), 3),
            "rss": {"peak_bytes": peak, "peak_load_layer_bytes": m["load"][2],
                    "peak_calibrate_bytes": max(m["forward"][2], m["supplement"][2]),
                    "peak_quantize_bytes": m["on_layer"][2], "after_load_bytes": m["load"][1],
                    "after_calibration_bytes": m["supplement"][1], "after_layer_bytes": m["end"][1],
                    "hessian_bytes": kept["hessian_bytes"]},
            "solve": {"flops": flops, "gflops": round(flops / t_gptq / 1e9, 2) if t_gptq else None,
                      "by_kind": {k: {**{kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()},
                                      "gflops": round(v["flops"] / v["gptq_seconds"] / 1e9, 2) if v["gptq_seconds"] else None}
                                  for k, v in sorted(timer.kinds.items())}},
            "written_bytes": write["bytes"] - wb0,
            "tokens_per_expert": kept["tokens_per_expert"],
            "machine_after": machine_sample(),
        }
        layers_out.append(rec)
        print(f"bench: layer {n} {rec['kind']}: {wall:.1f}s (load {rec['seconds']['load_layer']}s, forward+H "
              f"{rec['seconds']['forward_hessian']}s, solve {t_solve:.1f}s, pack {rec['seconds']['pack']}s), peak "
              f"{peak / 2**30:.2f} GiB, cpu share {rec['cpu_share']}, load {rec['machine_after']['loadavg'][0]}, "
              f"matmul {rec['machine_after']['matmul_gflops']['median']} GF/s", flush=True)
    calib = kept.get("calib")
    reset_peak()
    t0 = time.perf_counter()
    writer.close()
    t_close = time.perf_counter() - t0
    t0 = time.perf_counter()
    hashed = 0
    for p in sorted(out_dir.iterdir()):  # the manifest's sha256 of every file (variant.write_manifest)
        sha256_file(p)
        hashed += p.stat().st_size
    t_hash = time.perf_counter() - t0
    segments.append(("finalize", _status()["VmHWM"]))
    result["finalize"] = {"close_seconds": round(t_close, 2), "sha256_seconds": round(t_hash, 2),
                          "bytes": hashed, "written_tensor_bytes": write["bytes"]}
    shutil.rmtree(out_dir, ignore_errors=True)
    result["layers"] = layers_out
    result["peak_rss_bytes"] = max(p for _, p in segments)
    result["peak_rss_by_segment"] = {name: p for name, p in segments}
    result["machine_end"] = machine_sample()
    if args.compare_loop and layers_out and layers_out[-1]["kind"] == "moe":
        reset_peak()  # its own segment: not part of the configuration's peak above
        result["loop_compare"] = compare_loop(q, ckpt, adapter, args.layers[-1], calib, args)
        result["loop_compare"]["peak_rss_bytes"] = _status()["VmHWM"]
    if args.vit:
        result["vit"] = measure_vit(args, stream.runner.config)
    return result


def _tokens_per_expert(calib, min_tokens: int) -> dict:
    out = {}
    for modality, r in calib.routing.items():
        counts = r.get("tokens_per_expert") or []
        if not counts:
            continue
        out[modality] = {"modality_tokens": r.get("tokens"), "min": min(counts), "median": statistics.median(counts),
                         "max": max(counts), "mean": round(sum(counts) / len(counts), 1),
                         "under_min_tokens": sum(c < min_tokens for c in counts)}
    return out


# -- batched vs per-expert loop (same inputs, same run) -----------------------------------------------

def compare_loop(q, ckpt, adapter, n: int, calib, args) -> dict:
    """The product's expert batches (pipeline.solve_batches: gate+up units and down, per modality, of
    pipeline.batch_size matrices) solved batched vs gptq.per_expert_reference on the same W and H, one
    batch of each kind, in the same run; the layer-level ratio is extrapolated from the per-matrix
    times and the layer's matrix counts."""
    from quantkit.quantize.gptq import gptq_quantize, per_expert_reference
    from quantkit.quantize.pipeline import batch_hessians, batch_weights, solve_batches

    if calib is None:
        return {"skipped": "needs the layer's statistics"}
    entries = [e for e in q.by_layer[n] if e.quantized and e.role.kind == "routed_expert"]
    batches = solve_batches(entries, adapter.input_group)
    kinds = {}
    for batch in batches:
        unit = batch[0]
        key = f"{unit[0].role.modality}." + "+".join(e.role.proj for e in unit)
        if key in kinds:
            kinds[key]["layer_matrices"] += len(batch)
            continue
        if args.loop_experts:
            batch = batch[:args.loop_experts]
        # W and H exactly as the pipeline builds them (batch_weights, batch_hessians)
        W = batch_weights(batch, ckpt.read_many([e.name for u in batch for e in u]))
        H = batch_hessians(batch, calib, adapter.input_group)
        s = unit[0].scheme
        kw = dict(bits=s.bits, group_size=s.group_size, sym=s.sym, act_order=s.desc_act)
        before = machine_sample()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        batched = gptq_quantize(W, H, **kw)
        t_b = time.perf_counter() - t0
        cpu_b = cpu_seconds() - cpu0
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        looped = per_expert_reference(W, H, **kw)
        t_l = time.perf_counter() - t0
        cpu_l = cpu_seconds() - cpu0
        fl = gptq_flops(*W.shape[1:], group=s.group_size if s.group_size > 0 else W.shape[-1])["total"] * len(batch)
        kinds[key] = {
            "shape": list(W.shape[1:]), "experts": len(batch), "layer_matrices": len(batch),
            "batched_seconds": round(t_b, 4), "loop_seconds": round(t_l, 4), "ratio": round(t_l / t_b, 2),
            "batched_gflops": round(fl / t_b / 1e9, 2), "loop_gflops": round(fl / t_l / 1e9, 2),
            "cpu_share_batched": round(cpu_b / (t_b * args.threads), 3),
            "cpu_share_loop": round(cpu_l / (t_l * args.threads), 3),
            "codes_differ_fraction": float((batched.codes != looped.codes).float().mean()),
            "machine_before": before}
        print(f"bench: batched vs loop {key} {list(W.shape[1:])} x{len(batch)}: batched {t_b:.1f}s, "
              f"loop {t_l:.1f}s, x{t_l / t_b:.2f}", flush=True)
        del W, H, batched, looped
    # layer extrapolation: per-matrix times x the layer's matrices of each kind
    tb = sum(k["batched_seconds"] / k["experts"] * k["layer_matrices"] for k in kinds.values())
    tl = sum(k["loop_seconds"] / k["experts"] * k["layer_matrices"] for k in kinds.values())
    direct_b = sum(k["batched_seconds"] for k in kinds.values())
    direct_l = sum(k["loop_seconds"] for k in kinds.values())
    return {"layer": n, "kinds": kinds, "machine_after": machine_sample(),
            "measured_ratio": round(direct_l / direct_b, 2) if direct_b else None,
            "layer_experts_batched_seconds_est": round(tb, 1), "layer_experts_loop_seconds_est": round(tl, 1),
            "layer_ratio_est": round(tl / tb, 2) if tb else None}


# -- vision tower (prefix) cost: one real-shape ViT block -------------------------------------------------

def measure_vit(args, config) -> dict:
    """One Ernie4_5_VLMoe vision block at the real width (1280, 16 heads, MLP 5120) over one image of the
    calibration's size, x depth (32): the prefix cost the bypassed path leaves out, plus the resampler.
    Medians of VIT_REPS timings: one sample is multiplied by 512 (16 images x 32 blocks)."""
    import copy

    import torch
    from transformers.models.ernie4_5_vl_moe.modeling_ernie4_5_vl_moe import (
        Ernie4_5_VLMoeVariableResolutionResamplerModel,
        Ernie4_5_VLMoeVisionTransformerPretrainedModel,
    )

    vcfg = copy.deepcopy(config.vision_config)
    depth = vcfg.depth
    vcfg.depth = 1
    vcfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vit = Ernie4_5_VLMoeVisionTransformerPretrainedModel(vcfg).eval()
        resampler = Ernie4_5_VLMoeVariableResolutionResamplerModel(config).eval()
    merge = vcfg.spatial_merge_size
    from bench.realshape import IMAGE_GRID_WIDTH
    vis_per_sample = int(round(args.seq_len * args.vision_frac / IMAGE_GRID_WIDTH)) * IMAGE_GRID_WIDTH
    rows = max(1, vis_per_sample // IMAGE_GRID_WIDTH)
    grid = torch.tensor([[1, rows * merge, IMAGE_GRID_WIDTH * merge]])
    patches = int(grid.prod())
    pixels = torch.randn(patches, vcfg.in_channels * vcfg.patch_size**2)
    def median_seconds(fn, reps: int = VIT_REPS):
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples), samples

    with torch.no_grad():
        out = vit(pixels, grid).last_hidden_state  # warm-up
        t_block, block_samples = median_seconds(lambda: vit(pixels, grid))
        t_res, res_samples = median_seconds(lambda: resampler(out, grid))
    n_images = math.ceil(args.tokens / args.seq_len)
    return {"patches_per_image": patches, "vision_tokens_per_image": patches // merge**2, "images": n_images,
            "block_seconds_per_image": round(t_block, 3), "resampler_seconds_per_image": round(t_res, 3),
            "block_seconds_samples": [round(x, 3) for x in block_samples],
            "resampler_seconds_samples": [round(x, 3) for x in res_samples],
            "depth": depth, "prefix_seconds_est": round(n_images * (depth * t_block + t_res), 1),
            "formula": "images x (depth x one-block seconds + resampler seconds); patch embed / norms ignored",
            "machine_after": machine_sample()}


# -- orchestration ---------------------------------------------------------------------------------------

def _child_cmd(args, layers: list[int], compare: bool, vit: bool, json_path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "bench.run_bench", "child", "--ckpt", str(args.ckpt), "--json", str(json_path),
           "--layers", ",".join(map(str, layers)), "--tokens", str(args.tokens), "--seq-len", str(args.seq_len),
           "--vision-frac", str(args.vision_frac), "--threads", str(args.threads), "--bits", str(args.bits),
           "--mode", args.mode, "--min-tokens", str(args.min_tokens), "--seed", str(args.seed),
           "--work-dir", str(args.work_dir), "--loop-experts", str(args.loop_experts),
           "--matmul-n", str(args.matmul_n)]
    if compare:
        cmd.append("--compare-loop")
    if vit:
        cmd.append("--vit")
    return cmd


def _run_child(args, layers, compare, vit, name) -> dict:
    json_path = Path(args.work_dir) / f"{name}.json"
    if args.inprocess:
        child = argparse.Namespace(**{**vars(args), "layers": layers, "compare_loop": compare, "vit": vit})
        res = run_config(child)
    else:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
        subprocess.run(_child_cmd(args, layers, compare, vit, json_path), check=True, cwd=REPO, env=env)
        res = json.loads(json_path.read_text())
    res["independent_process"] = not args.inprocess
    return res


def _parse_layers(text: str) -> list[int]:
    return sorted({int(x) for x in str(text).split(",") if x.strip()})


def orchestrate(args) -> dict:
    from bench.realshape import REAL, checkpoint_bytes, bench_config, ensure_checkpoint

    started = time.time()
    configs = _parse_layers(args.layers)
    if not configs or min(configs) < 1:
        raise SystemExit("--layers: MoE layer counts >= 1, e.g. 1,2,3")
    n_moe = max(configs)
    cache_root = Path(args.cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    args.work_dir = Path(tempfile.mkdtemp(prefix="work-", dir=cache_root))
    vocab = args.vocab_size
    t0 = time.perf_counter()
    if args.inprocess:
        ckpt, reused = ensure_checkpoint(cache_root, n_moe, args.size, vocab, args.seed)
    else:  # generate in a child so this process stays small
        code = ("import sys; from bench.realshape import ensure_checkpoint; "
                f"p, r = ensure_checkpoint({str(cache_root)!r}, {n_moe}, {args.size!r}, {vocab!r}, {args.seed}); "
                "print('REUSED' if r else 'GENERATED', p)")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
        out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, capture_output=True,
                             text=True)
        sys.stdout.write(out.stdout)
        last = out.stdout.strip().splitlines()[-1].split(" ", 1)
        reused, ckpt = last[0] == "REUSED", Path(last[1])
    args.ckpt = ckpt
    cfg = bench_config(n_moe, args.size, vocab)
    report = {
        "schema": SCHEMA, "command": args.command_line, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {**machine_info(args.threads), "start": machine_sample()},
        "settings": {"size": args.size, "moe_layer_configs": configs, "dense_layer": args.dense,
                     "tokens": args.tokens, "seq_len": args.seq_len, "vision_frac": args.vision_frac,
                     "bits": args.bits, "profile": f"ernie45-vl-w{args.bits}", "mode": args.mode,
                     "min_tokens": args.min_tokens, "threads": args.threads, "seed": args.seed,
                     "independent_processes": not args.inprocess},
        "checkpoint": {"path": str(ckpt), "reused_from_cache": reused, "bytes": checkpoint_bytes(cfg),
                       "generate_seconds": None if reused else round(time.perf_counter() - t0, 1),
                       "layers": cfg["text_config"]["mlp_layer_types"],
                       "vocab_size": cfg["text_config"]["vocab_size"], "real_shapes": args.size == REAL},
        "runs": {},
    }
    try:
        for i, n in enumerate(configs):
            name = f"moe{n}"
            print(f"bench: configuration {name}: MoE layers 1..{n} in {'this' if args.inprocess else 'a new'} process",
                  flush=True)
            first = i == 0
            report["runs"][name] = _run_child(args, list(range(1, n + 1)), compare=first and args.compare_loop,
                                              vit=first and args.vit, name=name)
        if args.dense:
            print("bench: configuration dense0: the dense layer 0", flush=True)
            report["runs"]["dense0"] = _run_child(args, [0], compare=False, vit=False, name="dense0")
    finally:
        shutil.rmtree(args.work_dir, ignore_errors=True)
        if not args.keep_cache:
            shutil.rmtree(ckpt, ignore_errors=True)
            report["checkpoint"]["deleted_after_run"] = True
    report["machine"]["end"] = machine_sample()
    report["accuracy"] = accuracy_section(Path(args.accuracy_report), args.accuracy_since)
    report["summary"] = summarise(report)
    report["wall_seconds"] = round(time.time() - started, 1)
    return report


# -- aggregation, projection, targets ----------------------------------------------------------------------

def summarise(report: dict) -> dict:
    runs = report["runs"]
    moe_runs = {k: v for k, v in runs.items() if k.startswith("moe")}
    moe_layers = [rec for v in moe_runs.values() for rec in v["layers"] if rec["kind"] == "moe"]
    dense_layers = [rec for rec in runs.get("dense0", {}).get("layers", [])]
    keys = ["total", "load_layer", "forward_hessian", "hessian_accumulate", "read_weights", "solve", "solve_gptq",
            "pack", "write"]

    def mean(recs, key):
        vals = [r["seconds"][key] for r in recs]
        return round(sum(vals) / len(vals), 2) if vals else None

    per_layer = {"moe": {k: mean(moe_layers, k) for k in keys}, "moe_samples": len(moe_layers),
                 "dense": {k: mean(dense_layers, k) for k in keys} if dense_layers else None}
    scaling = {"layers": [], "peak_rss_bytes": []}
    for name in sorted(moe_runs, key=lambda s: int(s[3:])):
        scaling["layers"].append(int(name[3:]))
        scaling["peak_rss_bytes"].append(moe_runs[name]["peak_rss_bytes"])
    if len(scaling["layers"]) >= 2:
        x, y = scaling["layers"], scaling["peak_rss_bytes"]
        mx, my = sum(x) / len(x), sum(y) / len(y)
        slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
        scaling["slope_bytes_per_layer"] = int(slope)
        scaling["spread_bytes"] = max(y) - min(y)
    # solver throughput vs this machine's matmul, layer by layer (both measured in the same process)
    solver = []
    for r in moe_layers + dense_layers:
        mm = r["machine_after"]["matmul_gflops"]["median"]
        solver.append({"layer": r["layer"], "solver_gflops": r["solve"]["gflops"], "matmul_gflops": mm,
                       "ratio": round(r["solve"]["gflops"] / mm, 3) if r["solve"]["gflops"] and mm else None,
                       "cpu_share": r["cpu_share"], "loadavg": r["machine_after"]["loadavg"]})
    ratios = [s["ratio"] for s in solver if s["ratio"]]
    projection = project(report, per_layer)
    loop = next((v["loop_compare"] for v in moe_runs.values() if "loop_compare" in v), None)
    tokens = report["settings"]["tokens"]
    targets = {
        "total_minutes": _target(projection["total_minutes"], TARGETS["total_minutes"], "<="),
        "peak_rss_gib": _target(projection["peak_rss_gib"], TARGETS["peak_rss_gib"], "<="),
        "solver_matmul_ratio": _target(round(statistics.median(ratios), 3) if ratios else None,
                                       TARGETS["solver_matmul_ratio"], ">="),
        "batched_speedup": _target(loop.get("layer_ratio_est") if loop else None, TARGETS["batched_speedup"], ">="),
        "calibration_tokens": _target(tokens, TARGETS["calibration_tokens"], ">="),
    }
    return {"per_layer_seconds": per_layer, "scaling": scaling, "solver_vs_matmul": solver,
            "solver_matmul_ratio_median": round(statistics.median(ratios), 3) if ratios else None,
            "projection": projection, "batched_vs_loop": loop, "targets": targets}


def _target(value, goal, op):
    if value is None:
        return {"value": None, "goal": goal, "met": None}
    met = value <= goal if op == "<=" else value >= goal
    miss = None if met else (round(value / goal, 2) if op == "<=" else round(goal / value, 2))
    return {"value": value, "goal": goal, "op": op, "met": met, "off_by_factor": miss}


def prefix_bytes_fp32(config_dict: dict) -> int:
    """Parameters of the prefix model (embeddings, vision tower, resampler, final norm) x 4 bytes: what
    LayerStream holds (upcast to fp32) while it embeds the samples. Counted on the meta device."""
    import copy

    import torch
    from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

    cfg = copy.deepcopy(config_dict)
    cfg["text_config"]["num_hidden_layers"] = 0
    cfg["text_config"]["mlp_layer_types"] = []
    with torch.device("meta"):
        model = Ernie4_5_VLMoeForConditionalGeneration(Ernie4_5_VLMoeConfig(**cfg))
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return 4 * n


def project(report: dict, per_layer: dict) -> dict:
    """Full ERNIE-4.5-VL-28B-A3B (1 dense + 27 MoE layers) on this machine, from the measured layers."""
    from bench.realshape import bench_config

    settings = report["settings"]
    moe = per_layer["moe"]["total"]
    dense = per_layer["dense"]["total"] if per_layer["dense"] else None
    dense_note = "measured" if dense is not None else "not measured: counted as one MoE layer"
    dense_s = dense if dense is not None else moe
    runs = report["runs"]
    vit = next((v["vit"] for v in runs.values() if "vit" in v), None)
    # the prefix runs on the calibration set once; scale the measured per-image cost to its images
    prefix_s = vit["prefix_seconds_est"] if vit else 0.0
    fin = [v["finalize"] for v in runs.values() if v.get("finalize", {}).get("bytes")]
    hash_rate = sum(f["bytes"] for f in fin) / max(1e-9, sum(f["sha256_seconds"] for f in fin)) if fin else None
    moe_written = [r["written_bytes"] for v in runs.values() for r in v["layers"] if r["kind"] == "moe"]
    dense_written = [r["written_bytes"] for r in runs.get("dense0", {}).get("layers", [])]
    per_moe_bytes = sum(moe_written) / len(moe_written) if moe_written else 0
    variant_bytes = REAL_MOE_LAYERS * per_moe_bytes + (dense_written[0] if dense_written else per_moe_bytes)
    finalize_s = variant_bytes / hash_rate if hash_rate else 0.0
    total = prefix_s + dense_s + REAL_MOE_LAYERS * moe + finalize_s
    moe_recs = [r for v in runs.values() for r in v["layers"] if r["kind"] == "moe"]
    best = min(moe_recs, key=lambda r: r["seconds"]["total"]) if moe_recs else None
    # The writer holds packed tensors until a shard is full (it holds at most one): a measured layer's
    # peak minus what the writer already held, plus one full shard, bounds every layer of a long run.
    shard = SHARD_BYTES
    layer_peak = 0
    for v in runs.values():
        held = 0
        for r in v["layers"]:
            layer_peak = max(layer_peak, r["rss"]["peak_bytes"] - held + shard)
            held += r["written_bytes"]
    measured_peak = max(v["peak_rss_bytes"] for v in runs.values())
    real_cfg = bench_config(REAL_MOE_LAYERS, settings["size"])
    prefix_resident = prefix_bytes_fp32(real_cfg)
    states = max((v["calibration"]["hidden_state_bytes"] for v in runs.values() if "calibration" in v), default=0)
    prefix_phase = 2 * prefix_resident + states
    peak = max(layer_peak, prefix_phase)
    tokens_note = (f"calibration of {settings['tokens']} tokens ({settings['seq_len']}-token samples, "
                   f"{settings['vision_frac']:.0%} vision)")
    return {
        "formula_time": "T = T_prefix + T_dense + 27 x T_moe + (variant bytes / sha256 rate)",
        "terms_seconds": {"T_prefix": prefix_s, "T_dense": dense_s, "T_moe": moe, "moe_layers": REAL_MOE_LAYERS,
                          "T_finalize": round(finalize_s, 1)},
        "dense_layer": dense_note,
        "total_seconds": round(total, 1), "total_minutes": round(total / 60, 1),
        "fastest_moe_layer": None if best is None else {
            "seconds": best["seconds"]["total"], "cpu_share": best["cpu_share"],
            "loadavg": best["machine_after"]["loadavg"],
            "total_minutes": round((prefix_s + dense_s + REAL_MOE_LAYERS * best["seconds"]["total"] + finalize_s) / 60, 1),
            "note": "the same formula with the fastest measured MoE layer as T_moe: what this machine does when "
                    "the benchmark has it (nearly) to itself"},
        "formula_rss": "peak = max(layer phase: max over measured layers of (peak RSS - packed bytes the shard "
                       "writer already held) + one full shard (the writer holds at most one), prefix phase: "
                       "2 x prefix fp32 bytes (state dict + model while transformers loads it) + every sample's "
                       "first-layer hidden states); LayerStream drops the prefix once the samples are embedded",
        "layer_peak_rss_bytes": layer_peak, "measured_peak_rss_bytes": measured_peak, "shard_bytes": shard,
        "prefix_resident_bytes": prefix_resident,
        "prefix_phase_bytes_est": prefix_phase,
        "peak_rss_bytes": peak, "peak_rss_gib": round(peak / 2**30, 2),
        "variant_bytes_est": int(variant_bytes), "calibration": tokens_note,
        "machine_matmul_gflops_median": statistics.median(
            [r["machine_after"]["matmul_gflops"]["median"] for v in runs.values() for r in v["layers"]] or [0]),
        "note": "figures are for this machine under its load at the time (see loadavg / matmul GFLOP/s next to "
                "every layer); T_moe is the mean of every measured MoE layer",
    }


def accuracy_section(path: Path, since: float | None = None) -> dict:
    """GPTQ vs RTN per bit width on the trained reference model, from the profile report (schema
    `quantkit.profile/1`, quantkit/profile/report.py; another engineer's work). This is the hook: when
    `path` exists its variants are folded in (per bit width: GPTQ and RTN KL / top-1 / perplexity / task
    accuracy / isolated MoE error, and GPTQ's KL as a fraction of RTN's); else the section says missing."""
    if not path.is_file():
        return {"status": "missing", "expected_at": str(path),
                "hook": "bench/run_bench.py accuracy_section() folds in build/profile/report/report.json "
                        "(schema quantkit.profile/1) written by `make profile`, which `make bench` runs first "
                        "unless BENCH_ACCURACY=0"}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"status": f"unreadable: {e}", "path": str(path)}
    rows = []
    for v in data.get("variants") or []:
        acc = v.get("accuracy") or {}
        rows.append({"name": v.get("name"), "method": v.get("method"), "bits": v.get("expert_bits"),
                     "kl": (acc.get("kl") or {}).get("all"), "kl_text": (acc.get("kl") or {}).get("text"),
                     "kl_image": (acc.get("kl") or {}).get("image"), "top1": (acc.get("top1") or {}).get("all"),
                     "perplexity": acc.get("perplexity"), "task_accuracy": (acc.get("task") or {}).get("accuracy"),
                     "moe_error_isolated": acc.get("moe_error_mean_isolated")})
    by_bits = {}
    for bits in sorted({r["bits"] for r in rows if r["bits"] is not None}):
        g = next((r for r in rows if r["bits"] == bits and r["method"] == "gptq"), None)
        r_ = next((r for r in rows if r["bits"] == bits and r["method"] == "rtn"), None)
        if g and r_:
            by_bits[str(bits)] = {"gptq": g["name"], "rtn": r_["name"],
                                  "kl_gptq_over_rtn": round(g["kl"] / r_["kl"], 3) if g["kl"] and r_["kl"] else None,
                                  "moe_error_gptq_over_rtn": round(g["moe_error_isolated"] / r_["moe_error_isolated"], 3)
                                  if g["moe_error_isolated"] and r_["moe_error_isolated"] else None}
    mtime = path.stat().st_mtime
    return {"status": "found", "path": str(path), "schema": data.get("schema"), "created": data.get("created"),
            "produced_by_this_run": None if since is None else mtime >= since,
            "reference": (data.get("reference") or {}).get("name"),
            "machine_fp32_gflops": (data.get("machine") or {}).get("fp32_gflops"),
            "rows": rows, "gptq_vs_rtn": by_bits}


# -- Markdown summary ---------------------------------------------------------------------------------------

def _gib(b):
    return f"{b / 2**30:.2f}"


def markdown(report: dict) -> str:
    s, m, st = report["summary"], report["machine"], report["settings"]
    lines = [f"# quantkit benchmark: ERNIE-4.5-VL-28B-A3B real layer shapes, GPTQ {st['bits']}-bit",
             "",
             f"Command: `{report['command']}` ({report['started']}, {report['wall_seconds']:.0f} s wall).",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_bytes'] / 2**30:.0f} GiB, torch {m['torch']} "
             f"({m['cpu_capability']}), {st['threads']} threads. Shared machine: every figure carries the load "
             f"average and the fp32 matmul GFLOP/s ({m['start']['matmul_gflops']['n']}^3, median of 3) measured "
             f"in the same process.",
             f"Start: load {m['start']['loadavg']}, matmul {m['start']['matmul_gflops']['median']} GF/s; end: load "
             f"{m['end']['loadavg']}, matmul {m['end']['matmul_gflops']['median']} GF/s.",
             f"Checkpoint: {'real shapes' if report['checkpoint']['real_shapes'] else 'SMOKE shapes'}, layers "
             f"{report['checkpoint']['layers']}, {report['checkpoint']['bytes'] / 2**30:.2f} GiB bf16, vocab "
             f"{report['checkpoint']['vocab_size']} (synthetic, bench/realshape.py). Calibration: {st['tokens']} "
             f"tokens in {st['seq_len']}-token samples, {st['vision_frac']:.0%} vision, mode {st['mode']}; "
             f"the prefix model is bypassed (synthetic hidden states into the decoder layers).",
             "", "## Per layer (seconds)", "",
             "| run | layer | total | load | fwd+Hessian (of which XᵀX) | read W | solve (GPTQ) | pack | write | "
             "peak RSS GiB | solver GF/s | matmul GF/s | ratio | CPU share | load 1m |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in report["runs"].items():
        for r in run["layers"]:
            sec = r["seconds"]
            mm = r["machine_after"]["matmul_gflops"]["median"]
            g = r["solve"]["gflops"]
            lines.append(f"| {name} | {r['layer']} ({r['kind']}) | {sec['total']} | {sec['load_layer']} | "
                         f"{sec['forward_hessian']} ({sec['hessian_accumulate']}) | {sec['read_weights']} | "
                         f"{sec['solve']} ({sec['solve_gptq']}) | {sec['pack']} | {sec['write']} | "
                         f"{_gib(r['rss']['peak_bytes'])} | {g} | {mm} | {round(g / mm, 2) if g and mm else '-'} | "
                         f"{r['cpu_share']} | {r['machine_after']['loadavg'][0]} |")
    first = next(iter(report["runs"].values()))["layers"]
    tpe = next((r["tokens_per_expert"] for r in first if r["tokens_per_expert"]), {})
    if tpe:
        lines += ["", "Tokens per expert (first MoE layer): " + "; ".join(
            f"{mod}: {v['modality_tokens']} tokens, per expert min {v['min']} / median {v['median']} / max {v['max']}, "
            f"{v['under_min_tokens']} under min_tokens" for mod, v in tpe.items())]
    sc = s["scaling"]
    lines += ["", "## Peak RSS vs layer count (one process per configuration)", "",
              "| MoE layers | peak RSS GiB |", "|---|---|"]
    lines += [f"| {n} | {_gib(b)} |" for n, b in zip(sc["layers"], sc["peak_rss_bytes"])]
    if "slope_bytes_per_layer" in sc:
        lines.append(f"\nLeast-squares growth: {sc['slope_bytes_per_layer'] / 2**20:+.0f} MiB per layer "
                     f"(spread {sc['spread_bytes'] / 2**20:.0f} MiB).")
    p = s["projection"]
    t = p["terms_seconds"]
    lines += ["", "## Projection: full ERNIE-4.5-VL-28B-A3B (28 layers: 1 dense + 27 MoE)", "",
              f"Time: `{p['formula_time']}` = {t['T_prefix']} + {t['T_dense']} + 27 x {t['T_moe']} + "
              f"{t['T_finalize']} = **{p['total_seconds']:.0f} s = {p['total_minutes']} min** "
              f"(dense layer: {p['dense_layer']}; {p['calibration']}).",
              *([f"With the fastest measured MoE layer instead of the mean ({p['fastest_moe_layer']['seconds']} s at CPU "
                 f"share {p['fastest_moe_layer']['cpu_share']}, load {p['fastest_moe_layer']['loadavg'][0]}): "
                 f"**{p['fastest_moe_layer']['total_minutes']} min**."] if p.get("fastest_moe_layer") else []),
              f"Peak RSS: `{p['formula_rss']}` = max({_gib(p['layer_peak_rss_bytes'])}, "
              f"{_gib(p['prefix_phase_bytes_est'])}) = **{p['peak_rss_gib']} GiB**.",
              f"Matmul on this machine during the layers (median): {p['machine_matmul_gflops_median']} GF/s."]
    lines += ["", "## Solver throughput vs this machine's matmul", "",
              "GPTQ FLOPs per [out, in] matrix (error-feedback form, gptq_flops()): in^3/3 (one Cholesky) + per "
              "block a bmm 2·out·bs·i1 + in-block rank-1 2·out·Σ + a unit-triangular solve out·|J|^2 per group "
              "start + 8·out·in; over the solver's own time. gate+up and q/k/v are one matrix each (shared H).", ""]
    lines += [f"- layer {x['layer']}: {x['solver_gflops']} GF/s vs matmul {x['matmul_gflops']} GF/s = "
              f"**{x['ratio']}** (cpu share {x['cpu_share']}, load {x['loadavg'][0]})" for x in s["solver_vs_matmul"]]
    moe_recs = [r for run in report["runs"].values() for r in run["layers"] if r["kind"] == "moe"]
    quiet = max(moe_recs, key=lambda r: r["cpu_share"]) if moe_recs else None
    kinds = quiet["solve"]["by_kind"] if quiet else {}
    if kinds:
        lines += ["", f"By kind, layer {quiet['layer']} of the run with the highest CPU share ({quiet['cpu_share']}, matmul "
                  f"{quiet['machine_after']['matmul_gflops']['median']} GF/s):", "",
                  "| kind | shape [out, in] | matrices | GPTQ s | GF/s |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v.get('shape')} | {int(v['matrices'])} | {v['gptq_seconds']} | {v['gflops']} |"
                  for k, v in kinds.items()]
    loop = s["batched_vs_loop"]
    lines += ["", "## Batched vs per-expert loop (same W and H, same run)", ""]
    if loop and loop.get("kinds"):
        lines += ["| experts | shape | batch | batched s | loop s | loop/batched | codes differ |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['shape']} | {v['experts']} | {v['batched_seconds']} | {v['loop_seconds']} | "
                  f"{v['ratio']} | {v['codes_differ_fraction']:.2e} |" for k, v in loop["kinds"].items()]
        lines.append(f"\nMeasured on these batches: x{loop['measured_ratio']}; extrapolated to the layer's "
                     f"{', '.join(str(v['layer_matrices']) + ' ' + k for k, v in loop['kinds'].items())} matrices "
                     f"(gate+up as one matrix): batched {loop['layer_experts_batched_seconds_est']} s vs loop "
                     f"{loop['layer_experts_loop_seconds_est']} s = **x{loop['layer_ratio_est']}**.")
    else:
        lines.append("not run")
    acc = report["accuracy"]
    lines += ["", "## Accuracy (trained reference model, GPTQ vs RTN per bit width)", ""]
    if acc["status"] == "found" and acc["rows"]:
        fresh = {True: "run by this `make bench`", False: "NOT refreshed by this run", None: "age unknown"}[
            acc.get("produced_by_this_run")]
        if acc.get("folded_in_after_the_run"):
            fresh = f"folded in after the run, at {acc['folded_in_after_the_run']}"
        lines += [f"From {acc['path']} (schema {acc['schema']}, created {acc['created']}, {fresh}; reference "
                  f"{acc['reference']}, `make profile`: same solver code as above).", "",
                  "| variant | method | bits | KL | KL text | KL image | top-1 | ppl | task acc | MoE err (isolated) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        def cell(v):
            return "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
        lines += ["| " + " | ".join(cell(r[k]) for k in
                                    ("name", "method", "bits", "kl", "kl_text", "kl_image", "top1", "perplexity",
                                     "task_accuracy", "moe_error_isolated")) + " |" for r in acc["rows"]]
        for bits, v in acc["gptq_vs_rtn"].items():
            lines.append(f"\n{bits}-bit: GPTQ KL = {v['kl_gptq_over_rtn']} x RTN's; isolated MoE error = "
                         f"{v['moe_error_gptq_over_rtn']} x RTN's.")
    else:
        lines.append(f"{acc['status']}: {acc.get('hook') or acc.get('path')}")
    lines += ["", "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    names = {"total_minutes": "full 28-layer 4-bit GPTQ, minutes", "peak_rss_gib": "peak RSS, GiB",
             "solver_matmul_ratio": "solver / matmul GFLOP/s (median)", "batched_speedup": "batched vs loop (layer)",
             "calibration_tokens": "calibration tokens"}
    for k, v in s["targets"].items():
        met = "n/a" if v["met"] is None else ("yes" if v["met"] else f"NO (x{v['off_by_factor']} off)")
        lines.append(f"| {names[k]} | {v.get('op', '')} {v['goal']} | {v['value']} | {met} |")
    return "\n".join(lines) + "\n"


# -- CLI ---------------------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, default=int(os.environ.get("BENCH_TOKENS", 16384)))
    p.add_argument("--seq-len", type=int, default=int(os.environ.get("BENCH_SEQ_LEN", 1024)))
    p.add_argument("--vision-frac", type=float, default=float(os.environ.get("BENCH_VISION_FRAC", 0.3)))
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--mode", default="auto", choices=["auto", "routed", "all"])
    p.add_argument("--min-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loop-experts", type=int, default=int(os.environ.get("BENCH_LOOP_EXPERTS", 16)))
    p.add_argument("--matmul-n", type=int, default=int(os.environ.get("BENCH_MATMUL_N", 2048)),
                   help="size of the fp32 matmul that measures the machine next to every figure")


def main(argv: list[str] | None = None) -> dict | None:
    global MATMUL_N
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "child":
        p = argparse.ArgumentParser(prog="bench.run_bench child")
        p.add_argument("child")
        p.add_argument("--ckpt", required=True)
        p.add_argument("--json", required=True)
        p.add_argument("--layers", required=True)
        p.add_argument("--work-dir", required=True)
        p.add_argument("--compare-loop", action="store_true")
        p.add_argument("--vit", action="store_true")
        _common(p)
        args = p.parse_args(argv)
        args.layers = [int(x) for x in args.layers.split(",")]
        MATMUL_N = args.matmul_n
        res = run_config(args)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        return None
    if argv and argv[0] == "render":
        # Re-render a result's summary (and optionally fold in the current accuracy report, recorded
        # with its own creation time) without re-running: python -m bench.run_bench render JSON [--accuracy]
        p = argparse.ArgumentParser(prog="bench.run_bench render")
        p.add_argument("render")
        p.add_argument("json")
        p.add_argument("--accuracy", action="store_true", help="re-read the accuracy report into the JSON")
        p.add_argument("--accuracy-report", default=str(DEFAULT_ACCURACY))
        args = p.parse_args(argv)
        path = Path(args.json)
        report = json.loads(path.read_text())
        if args.accuracy:
            report["accuracy"] = {**accuracy_section(Path(args.accuracy_report)),
                                  "folded_in_after_the_run": time.strftime("%Y-%m-%d %H:%M:%S")}
        report["summary"] = summarise(report)
        path.write_text(json.dumps(report, indent=1) + "\n")
        tag = path.stem.split("-", 1)[1] if "-" in path.stem else path.stem
        md = markdown(report)
        (path.parent / f"summary-{tag}.md").write_text(md)
        (path.parent / "summary.md").write_text(md)
        print(md)
        return report
    p = argparse.ArgumentParser(prog="python -m bench.run_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default=os.environ.get("BENCH_SIZE", "real"), choices=["real", "smoke"])
    p.add_argument("--layers", default=os.environ.get("BENCH_LAYERS", "1,2,3"),
                   help="MoE layer counts, one process each (default 1,2,3)")
    p.add_argument("--dense", action=argparse.BooleanOptionalAction,
                   default=os.environ.get("BENCH_DENSE", "1") == "1", help="also measure the dense layer 0")
    p.add_argument("--compare-loop", action=argparse.BooleanOptionalAction,
                   default=os.environ.get("BENCH_LOOP", "1") == "1", help="batched vs per-expert loop")
    p.add_argument("--vit", action=argparse.BooleanOptionalAction, default=os.environ.get("BENCH_VIT", "1") == "1",
                   help="measure one real-shape vision block for the prefix term")
    p.add_argument("--vocab-size", type=int, default=None, help="default: the real 103424")
    p.add_argument("--cache-root", default=os.environ.get("BENCH_CACHE",
                                                          os.path.join(tempfile.gettempdir(), "quantkit-bench")))
    p.add_argument("--keep-cache", action=argparse.BooleanOptionalAction,
                   default=os.environ.get("BENCH_KEEP", "1") == "1",
                   help="keep the generated checkpoint under --cache-root for the next run")
    p.add_argument("--out", default=os.environ.get("BENCH_OUT", str(DEFAULT_OUT)))
    p.add_argument("--accuracy-report", default=str(DEFAULT_ACCURACY))
    p.add_argument("--accuracy-since", type=float, default=float(os.environ.get("BENCH_ACCURACY_SINCE", 0)) or None,
                   help="epoch seconds: the report counts as produced by this run if written after it")
    p.add_argument("--inprocess", action="store_true",
                   help="run every configuration in this process (fast; peak RSS then not independent)")
    _common(p)
    args = p.parse_args(argv)
    args.command_line = "python -m bench.run_bench " + " ".join(argv) if argv else "python -m bench.run_bench"
    if os.environ.get("BENCH_COMMAND"):
        args.command_line = os.environ["BENCH_COMMAND"]
    import torch

    MATMUL_N = args.matmul_n
    torch.set_num_threads(args.threads)
    report = orchestrate(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "moe" + "-".join(map(str, _parse_layers(args.layers)))
    name = f"realshape-{tag}" if args.size == "real" else f"smoke-{tag}"
    md = markdown(report)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"summary-{tag}.md" if args.size == "real" else out / f"summary-smoke-{tag}.md").write_text(md)
    (out / ("summary.md" if args.size == "real" else "summary-smoke.md")).write_text(md)  # the latest run
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
