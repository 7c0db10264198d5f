"""How low any allocation could go at the size of uniform 3-bit experts on the trained text reference,
measured instead of estimated (issue 15; `make bench-bound`, ~6 min on 2 cores).

quantkit's allocator ranks units by an estimate (quantkit/allocate.py). This bench measures, for each
unit and each candidate width, the KL of a variant that differs from uniform 3-bit experts in that unit
only, and searches every assignment of widths within uniform 3-bit's bytes under the additive model
(the KL of an assignment = uniform's + the sum of its units' measured changes). That gives:
- the bound: the lowest KL an allocation can be expected to reach at that size, for the runtime's units
  and the format's widths (the exact knapsack of quantkit.allocate over the measured changes;
  additivity is an approximation: the measured KL of the bound's assignment is reported beside it);
- the allocator's own choice (`--target-size` at that size), its measured KL and its additive prediction.

Two runtimes, each with the unit the engine reads:
- llama.cpp (GGUF, the base profile of bench/llama_recipes.py): one GGML type per stacked tensor, 3
  layers x gate/up/down = 9 units, the format's candidate widths (Q2_K / Q3_K / Q4_K / Q5_K / Q6_K /
  Q8_0); every model scored in llama.cpp
  against the unquantized GGUF;
- vLLM (GPTQ, profiles/ernie45-moe-w4.yaml at group 128 and 64): one scheme per FusedMoE layer = 3
  units, widths 2 / 3 / 4 / 8 bits; scored with quantkit.load against the bf16 source.
KL per position over the answer positions (value digits and end of sentence) and over all positions,
300 held-out queries, one calibration on 256 other queries.

    python -m bench.allocation_bound [--out bench/results]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from quantkit.allocate import knapsack
from quantkit.formats.gguf import FORMAT as GGUF
from quantkit.formats.gguf.types import type_for_scheme
from quantkit.scheme import QuantScheme, parse_scheme_label

# The GGML type the allocator chooses at each width, narrowest first (Q3_K second: the reference width).
GGUF_BITS = {s.bits: type_for_scheme(s, "candidate").name for s in GGUF.candidate_schemes(QuantScheme(bits=4, method="gptq"))}
GGUF_TYPES = tuple(GGUF_BITS.values())
GPTQ_BITS = (2, 3, 4, 8)
KEYS = ("kl_answer", "kl_all")


def best_assignment(units: list, widths: tuple, base: dict, change: dict, nbytes: dict, key: str) -> dict:
    """The best width per unit within uniform 3-bit's bytes under the additive model (exact knapsack over
    the measured changes in KL and bytes)."""
    capacity = sum(nbytes[(u, widths[1])] for u in units)
    choice, total = knapsack([[(nbytes[(u, w)], change[(u, w)][key]) for w in widths] for u in units], capacity)
    kl = base[key] + total
    return {"predicted": kl, "ratio": kl / base[key],
            "assignment": {str(u): widths[i] for u, i in zip(units, choice)}}


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


def torch_logprobs(model, ids) -> list[np.ndarray]:
    """A transformers model's next-token log-probabilities (float64) per sequence of `ids`, as
    `bench.llama_recipes.score` takes them."""
    import torch

    with torch.no_grad():
        return list(torch.log_softmax(model(input_ids=ids).logits.double(), -1).numpy())


def eval_ids(model: Path, items: int):
    """Token ids [N, T] of `items` eval-split conversations and the first answer position."""
    from transformers import AutoTokenizer

    from quantkit.reference import trained_text as tt

    pairs = tt.split(tt.reference_table(model), "eval", items)
    ids, start, _ = tt.encode(AutoTokenizer.from_pretrained(str(model)), pairs)
    return ids, start


def _variant_profile(base: dict, name: str, default: dict, overrides: list[tuple[str, dict]], work: Path) -> Path:
    """`base` with its routed-expert rule updated by `default`, and a routed-expert rule (tensor-name
    regex, fields) before it for each override; written to `work`/`name`.yaml."""
    import yaml

    prof = copy.deepcopy(base)
    prof["name"] = name
    i = next(j for j, r in enumerate(prof["rules"]) if r.get("role") == "routed_expert")
    prof["rules"][i].update(default)
    for regex, fields in overrides:
        prof["rules"].insert(i, {"role": "routed_expert", "name": regex, "method": "gptq", **fields})
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(prof, sort_keys=False))
    return path


def _bits(label: str) -> int:
    return parse_scheme_label(label).bits


def llama_cpp_bound(model: Path, work: Path, calib: Path, items: int, log=print) -> dict:
    import yaml

    from bench.llama_recipes import fit_profile, llama_logprobs, score, source_gguf, tensor_budget
    from quantkit.api import QuantizeOptions, quantize
    from quantkit.formats.gguf.variant import gguf_file

    work.mkdir(parents=True, exist_ok=True)
    ids, start = eval_ids(model, items)
    seqs = ids.tolist()
    src = source_gguf(model, work)
    ref = llama_logprobs(src, seqs)
    profile = fit_profile(work)
    base_prof = yaml.safe_load(profile.read_text())
    layers = range(json.loads((model / "config.json").read_text())["num_hidden_layers"])
    units = [(layer, proj) for layer in layers for proj in ("gate", "up", "down")]
    cache: dict[tuple, dict] = {}

    def measure(combo: dict) -> dict:
        key = tuple(sorted((u, w) for u, w in combo.items() if w != "Q3_K"))
        if key not in cache:
            name = f"bound-{len(cache)}"
            path = _variant_profile(base_prof, name, {"gguf_type": "Q3_K"},
                                    [(rf"layers\.{layer}\.mlp\.experts\.\d+\.{proj}_proj", {"gguf_type": w})
                                     for (layer, proj), w in key], work)
            out = quantize(QuantizeOptions(model=str(model), out=work / name, profile=str(path), calib=calib,
                                           overwrite=True))
            f = gguf_file(out)
            cache[key] = {**score(ref, llama_logprobs(f, seqs), seqs, start), "bytes": f.stat().st_size}
            shutil.rmtree(out)
        return cache[key]

    base, change, nbytes = each_unit_alone(units, GGUF_TYPES, measure, lambda u: log(f"llama.cpp: {u} measured"))
    alloc = quantize(QuantizeOptions(model=str(model), out=work / "allocated", profile=str(profile), calib=calib,
                                     target_size=tensor_budget(base["bytes"], src), overwrite=True))
    record = json.loads((alloc / "quantkit.json").read_text())["allocation"]
    choice = {u: "Q3_K" for u in units}
    for row in record["units"]:  # "layer 0 down_exps"
        _, layer, tensor = row["unit"].split()
        choice[(int(layer), tensor.split("_")[0])] = GGUF_BITS[_bits(row["scheme"])]
    allocated_row = score(ref, llama_logprobs(gguf_file(alloc), seqs), seqs, start)
    return {"units": "stacked tensor (layer x gate/up/down)", "widths": GGUF_TYPES,
            **_tables(units, GGUF_TYPES, base, change, nbytes, measure, choice, allocated_row)}


def vllm_bound(model: Path, work: Path, calib: Path, items: int, group_size: int, log=print) -> dict:
    import yaml

    from bench.llama_recipes import score
    from quantkit.api import QuantizeOptions, make_plan, quantize
    from quantkit.loader import load, load_source

    work.mkdir(parents=True, exist_ok=True)
    ids, start = eval_ids(model, items)
    seqs = ids.tolist()
    ref = torch_logprobs(load_source(model), ids)
    base_prof = yaml.safe_load((Path(__file__).resolve().parent.parent / "quantkit" / "profiles" /
                                "ernie45-moe-w4.yaml").read_text())
    units = list(range(json.loads((model / "config.json").read_text())["num_hidden_layers"]))
    cache: dict[tuple, dict] = {}

    def measure(combo: dict) -> dict:
        key = tuple(sorted((u, w) for u, w in combo.items() if w != 3))
        if key not in cache:
            name = f"bound-g{group_size}-{len(cache)}"
            path = _variant_profile(base_prof, name, {"bits": 3},
                                    [(rf"layers\.{layer}\.mlp\.experts\.", {"bits": w}) for layer, w in key], work)
            # group_size as an option, as the allocation below gets it: every rule at that group size
            opts = dict(model=str(model), profile=str(path), group_size=group_size)
            out = quantize(QuantizeOptions(out=work / name, calib=calib, overwrite=True, **opts))
            cache[key] = {**score(ref, torch_logprobs(load(out), ids), seqs, start),
                          "bytes": make_plan(QuantizeOptions(out=Path("."), **opts))[2].predicted_bytes}
            shutil.rmtree(out)
        return cache[key]

    base, change, nbytes = each_unit_alone(units, GPTQ_BITS, measure, lambda u: log(f"vllm g{group_size}: layer {u} measured"))
    alloc = quantize(QuantizeOptions(model=str(model), out=work / f"allocated-g{group_size}", calib=calib,
                                     target_size=base["bytes"], group_size=group_size, runtime="vllm", overwrite=True))
    record = json.loads((alloc / "quantkit.json").read_text())["allocation"]
    choice = {int(r["unit"].split()[1]): _bits(r["scheme"]) for r in record["units"]}  # "layer 0 text experts"
    return {"units": "FusedMoE layer", "group_size": group_size, "widths": GPTQ_BITS,
            **_tables(units, GPTQ_BITS, base, change, nbytes, measure, choice,
                      score(ref, torch_logprobs(load(alloc), ids), seqs, start))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.allocation_bound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "quantkit-bound")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = p.parse_args(argv)
    from bench.llama_recipes import calibrate_on_table
    from quantkit.reference.trained_text import TRAINED_TEXT_DIR

    shutil.rmtree(a.work, ignore_errors=True)
    t0 = time.perf_counter()
    result = {"model": str(TRAINED_TEXT_DIR), "eval_items": a.items, "calib_items": 256}
    a.work.mkdir(parents=True)
    calib = calibrate_on_table(TRAINED_TEXT_DIR, 256, a.work)  # one calibration for every runtime
    result["llama.cpp"] = llama_cpp_bound(TRAINED_TEXT_DIR, a.work / "gguf", calib, a.items)
    for g in (128, 64):
        result[f"vllm g{g}"] = vllm_bound(TRAINED_TEXT_DIR, a.work / "gptq", calib, a.items, g)
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
