"""How low any allocation could go at the size of uniform 3-bit experts on the trained text reference,
measured instead of estimated (issue 15; `make bench-bound`, ~6 min on 2 cores).

quantkit's allocator ranks units by an estimate (quantkit/allocate.py). This bench measures, for each
unit and each candidate width, the KL of a variant that differs from uniform 3-bit experts in that unit
only, and searches every assignment of widths within uniform 3-bit's bytes under the additive model
(the KL of an assignment = uniform's + the sum of its units' measured changes). That gives:
- the bound: the lowest KL an allocation can be expected to reach at that size, for the runtime's units
  and the format's widths (additivity is an approximation: the measured KL of the bound's assignment is
  reported beside it);
- the allocator's own choice (`--target-size` at that size), its measured KL and its additive prediction.

Two runtimes, each with the unit the engine reads:
- llama.cpp (GGUF, the base profile of bench/llama_recipes.py): one GGML type per stacked tensor, 3
  layers x gate/up/down = 9 units, widths Q2_K / Q3_K / Q4_0 / Q8_0; every model scored in llama.cpp
  against the unquantized GGUF;
- vLLM (GPTQ, profiles/ernie45-moe-w4.yaml at group 128 and 64): one scheme per FusedMoE layer = 3
  units, widths 2 / 3 / 4 / 8 bits; scored with quantkit.load against the bf16 source.
KL per position over the answer positions (value digits and end of sentence) and over all positions,
300 held-out queries, one calibration on 256 other queries.

    python -m bench.allocation_bound [--out bench/results]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import time
from pathlib import Path


GGUF_TYPES = ("Q2_K", "Q3_K", "Q4_0", "Q8_0")
GGUF_BITS = {2: "Q2_K", 3: "Q3_K", 4: "Q4_0", 8: "Q8_0"}
GPTQ_BITS = (2, 3, 4, 8)
KEYS = ("kl_answer", "kl_all")


def best_assignment(units: list, widths: tuple, base: dict, change: dict, nbytes: dict, key: str) -> dict:
    """Exhaustive search over every width per unit within uniform 3-bit's bytes, additive model."""
    capacity = sum(nbytes[(u, widths[1])] for u in units)
    best = None
    for combo in itertools.product(widths, repeat=len(units)):
        if sum(nbytes[(u, w)] for u, w in zip(units, combo)) > capacity:
            continue
        kl = base[key] + sum(change[(u, w)][key] for u, w in zip(units, combo))
        if best is None or kl < best[0]:
            best = (kl, combo)
    return {"predicted": best[0], "ratio": best[0] / base[key], "assignment": dict(zip(map(str, units), best[1]))}


def predicted(units: list, choice: dict, base: dict, change: dict, key: str) -> float:
    return base[key] + sum(change[(u, choice[u])][key] for u in units)


def each_unit_alone(units: list, widths: tuple, measure, done) -> tuple[dict, dict, dict]:
    """Uniform 3-bit's row, and each unit's change in KL and bytes at each width, the others at 3 bits."""
    base = measure({})
    change, nbytes = {}, {}
    for u in units:
        for w in widths:
            row = measure({u: w})
            change[(u, w)] = {k: row[k] - base[k] for k in KEYS}
            nbytes[(u, w)] = row["bytes"] - base["bytes"]
        done(u)
    return base, change, nbytes


def _tables(units, widths, base, change, nbytes, measure, allocated_choice, allocated_row) -> dict:
    out = {"uniform_3bit": base, "per_unit_change": {f"{u} {w}": {k: change[(u, w)][k] / base[k] for k in KEYS}
                                                     for u in units for w in widths if w != widths[1]}}
    for key in KEYS:
        bound = best_assignment(units, widths, base, change, nbytes, key)
        combo = {u: bound["assignment"][str(u)] for u in units}
        bound["measured"] = measure(combo)[key]
        bound["measured_ratio"] = bound["measured"] / base[key]
        out[f"bound_{key}"] = bound
    out["allocated"] = {"assignment": {str(u): w for u, w in allocated_choice.items()},
                        **{f"{k}_ratio": allocated_row[k] / base[k] for k in KEYS},
                        **{f"{k}_predicted_ratio": predicted(units, allocated_choice, base, change, k) / base[k]
                           for k in KEYS}, "accuracy": allocated_row["accuracy"], "uniform_accuracy": base["accuracy"]}
    return out


def llama_cpp_bound(model: Path, work: Path, items: int, calib_items: int, log=print) -> dict:
    import yaml
    from transformers import AutoTokenizer

    from bench.llama_recipes import fit_profile, llama_logprobs, score, source_gguf
    from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, quantize
    from quantkit.formats.gguf.variant import gguf_file
    from quantkit.reference import trained_text as tt

    work.mkdir(parents=True, exist_ok=True)
    table = tt.reference_table(model)
    ids, start, _ = tt.encode(AutoTokenizer.from_pretrained(str(model)), tt.split(table, "eval", items))
    seqs = ids.tolist()
    src = source_gguf(model, work)
    samples = tt.write_calibration_jsonl(tt.split(table, "calib", calib_items), work / "calib.jsonl")
    calib, _ = calibrate(CalibrateOptions(model=str(model), out=work / "calib", samples=str(samples), overwrite=True))
    ref = llama_logprobs(src, seqs)
    base_prof = yaml.safe_load(fit_profile(work).read_text())
    layers = range(json.loads((model / "config.json").read_text())["num_hidden_layers"])
    units = [(layer, proj) for layer in layers for proj in ("gate", "up", "down")]
    cache: dict[tuple, dict] = {}

    def measure(combo: dict) -> dict:
        key = tuple(sorted((u, w) for u, w in combo.items() if w != "Q3_K"))
        if key not in cache:
            prof = json.loads(json.dumps(base_prof))
            prof["name"] = f"bound-{len(cache)}"
            i = next(j for j, r in enumerate(prof["rules"]) if r.get("role") == "routed_expert")
            prof["rules"][i]["gguf_type"] = "Q3_K"
            for (layer, proj), w in key:
                prof["rules"].insert(i, {"role": "routed_expert", "gguf_type": w, "method": "gptq",
                                         "name": rf"layers\.{layer}\.mlp\.experts\.\d+\.{proj}_proj"})
            path = work / f"{prof['name']}.yaml"
            path.write_text(yaml.safe_dump(prof, sort_keys=False))
            out = quantize(QuantizeOptions(model=str(model), out=work / prof["name"], profile=str(path), calib=calib,
                                           overwrite=True))
            f = gguf_file(out)
            cache[key] = {**score(ref, llama_logprobs(f, seqs), seqs, start), "bytes": f.stat().st_size}
            shutil.rmtree(out)
        return cache[key]

    base, change, nbytes = each_unit_alone(units, GGUF_TYPES, measure, lambda u: log(f"llama.cpp: {u} measured"))
    alloc = quantize(QuantizeOptions(model=str(model), out=work / "allocated", profile=str(fit_profile(work)),
                                     calib=calib, target_size=base["bytes"] - (src.stat().st_size - _tensor_bytes(src))
                                     - 4096, overwrite=True))
    record = json.loads((alloc / "quantkit.json").read_text())["allocation"]
    choice = {u: "Q3_K" for u in units}
    for row in record["units"]:  # "layer 0 down_exps", "gptq-w4g32"
        _, layer, tensor = row["unit"].split()
        choice[(int(layer), tensor.split("_")[0])] = GGUF_BITS[int(row["scheme"].split("-w")[1].split("g")[0])]
    allocated_row = score(ref, llama_logprobs(gguf_file(alloc), seqs), seqs, start)
    return {"units": "stacked tensor (layer x gate/up/down)", "widths": GGUF_TYPES,
            **_tables(units, GGUF_TYPES, base, change, nbytes, measure, choice, allocated_row)}


def vllm_bound(model: Path, work: Path, items: int, calib_items: int, group_size: int, log=print) -> dict:
    import torch
    import yaml
    from transformers import AutoTokenizer

    from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, make_plan, quantize
    from quantkit.loader import load, load_source
    from quantkit.reference import trained_text as tt

    work.mkdir(parents=True, exist_ok=True)
    table = tt.reference_table(model)
    ids, start, length = tt.encode(AutoTokenizer.from_pretrained(str(model)), tt.split(table, "eval", items))
    calib_dir = work / "calib"
    if not calib_dir.exists():
        samples = tt.write_calibration_jsonl(tt.split(table, "calib", calib_items), work / "calib.jsonl")
        calibrate(CalibrateOptions(model=str(model), out=calib_dir, samples=str(samples), overwrite=True))

    def logprobs(m) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(m(input_ids=ids).logits.float(), -1)

    ref = logprobs(load_source(model))

    def score(m) -> dict:
        lp = logprobs(m)
        kl = (ref.exp() * (ref - lp)).sum(-1)[:, :-1]
        correct = (lp[:, start - 1: start - 1 + length].argmax(-1) == ids[:, start: start + length]).all(-1)
        return {"kl_answer": kl[:, start - 1:].mean().item(), "kl_all": kl.mean().item(),
                "accuracy": correct.float().mean().item()}

    base_prof = yaml.safe_load((Path(__file__).resolve().parent.parent / "quantkit" / "profiles" /
                                "ernie45-moe-w4.yaml").read_text())
    units = list(range(json.loads((model / "config.json").read_text())["num_hidden_layers"]))
    cache: dict[tuple, dict] = {}

    def measure(combo: dict) -> dict:
        key = tuple(sorted((u, w) for u, w in combo.items() if w != 3))
        if key not in cache:
            prof = json.loads(json.dumps(base_prof))
            prof["name"] = f"bound-g{group_size}-{len(cache)}"
            i = next(j for j, r in enumerate(prof["rules"]) if r.get("role") == "routed_expert")
            prof["rules"][i].update(bits=3, group_size=group_size)
            for layer, w in key:
                prof["rules"].insert(i, {"role": "routed_expert", "bits": w, "group_size": group_size, "method": "gptq",
                                         "name": rf"layers\.{layer}\.mlp\.experts\."})
            path = work / f"{prof['name']}.yaml"
            path.write_text(yaml.safe_dump(prof, sort_keys=False))
            # group_size as an option, as the allocation below gets it: every rule at that group size
            out = quantize(QuantizeOptions(model=str(model), out=work / prof["name"], profile=str(path),
                                           calib=calib_dir, group_size=group_size, overwrite=True))
            plan_bytes = make_plan(QuantizeOptions(model=str(model), out=Path("."), profile=str(path),
                                                   group_size=group_size))[2].predicted_bytes
            cache[key] = {**score(load(out)), "bytes": plan_bytes}
            shutil.rmtree(out)
        return cache[key]

    base, change, nbytes = each_unit_alone(units, GPTQ_BITS, measure, lambda u: log(f"vllm g{group_size}: layer {u} measured"))
    alloc = quantize(QuantizeOptions(model=str(model), out=work / f"allocated-g{group_size}", calib=calib_dir,
                                     target_size=base["bytes"], group_size=group_size, runtime="vllm", overwrite=True))
    record = json.loads((alloc / "quantkit.json").read_text())["allocation"]
    choice = {int(r["unit"].split()[1]): int(r["scheme"].split("-w")[1].split("g")[0]) for r in record["units"]}
    return {"units": "FusedMoE layer", "group_size": group_size, "widths": GPTQ_BITS,
            **_tables(units, GPTQ_BITS, base, change, nbytes, measure, choice, score(load(alloc)))}


def _tensor_bytes(path: Path) -> int:
    from bench.llama_recipes import _tensor_bytes as tb

    return tb(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.allocation_bound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "quantkit-bound")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = p.parse_args(argv)
    from quantkit.reference.trained_text import TRAINED_TEXT_DIR

    shutil.rmtree(a.work, ignore_errors=True)
    t0 = time.perf_counter()
    result = {"model": str(TRAINED_TEXT_DIR), "eval_items": a.items, "calib_items": 256}
    result["llama.cpp"] = llama_cpp_bound(TRAINED_TEXT_DIR, a.work / "gguf", a.items, 256)
    for g in (128, 64):
        result[f"vllm g{g}"] = vllm_bound(TRAINED_TEXT_DIR, a.work / "gptq", a.items, 256, g)
    result.update({"seconds": round(time.perf_counter() - t0, 1), "command": "python -m bench.allocation_bound",
                   "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")})
    for name in ("llama.cpp", "vllm g128", "vllm g64"):
        r = result[name]
        print(f"{name}: bound answer {r['bound_kl_answer']['ratio']:.3f} (measured {r['bound_kl_answer']['measured_ratio']:.3f}), "
              f"all {r['bound_kl_all']['ratio']:.3f} (measured {r['bound_kl_all']['measured_ratio']:.3f}); allocated "
              f"answer {r['allocated']['kl_answer_ratio']:.3f} (predicted {r['allocated']['kl_answer_predicted_ratio']:.3f}), "
              f"all {r['allocated']['kl_all_ratio']:.3f}; accuracy {r['allocated']['accuracy']:.3f} vs "
              f"{r['allocated']['uniform_accuracy']:.3f}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "allocation-bound.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"written: {a.out / 'allocation-bound.json'} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
