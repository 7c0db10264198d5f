"""Does the allocator's objective rank units as the model does? (issue 15; `make bench-sensitivity`)

On the trained text reference, for every llama.cpp unit the allocator chooses (layer x stacked
gate/up/down expert tensor) and each of its narrow candidate widths: the objective quantkit.allocate
computes for it from one calibration (RTN error tr(ΔW H ΔWᵀ), token- and routing-weighted, gate/up
carried to the MLP output; the module docstring), and the mean KL(reference || model) measured with
only that tensor round-to-nearest at that width (fp32 transformers model, eval split; KL on the
answer positions and on all positions, and accuracy, as `bench.llama_recipes.score` defines them).
An objective that ranks units right has a per-unit KL / objective ratio that does not depend on the
unit; the report gives those ratios per layer and projection and the rank correlation over all
(unit, width) pairs.

    python -m bench.unit_sensitivity [--items 300] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

NARROW_BITS = (2, 3)  # the widths where the allocator's choices differ


def _rank_correlation(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(model_dir: Path, work: Path, items: int, log=print) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    from quantkit.allocate import allocate
    from quantkit.api import CalibrateOptions, calibrate, open_model
    from quantkit.calibrate.store import CalibrationDir
    from quantkit.loader import load_source
    from quantkit.profiles import resolve_profile
    from quantkit.quantize.rtn import quantize_rtn
    from quantkit.reference import trained_text as tt
    from quantkit.scheme import fit_group, scheme_label

    from .llama_recipes import FIT_PROFILE, score

    table = tt.reference_table(model_dir)
    samples = tt.write_calibration_jsonl(tt.split(table, "calib", 256), work / "calib.jsonl")
    calib, _ = calibrate(CalibrateOptions(model=str(model_dir), out=work / "calib", samples=str(samples)))
    ckpt, adapter = open_model(str(model_dir), None)
    base = resolve_profile(adapter, bits=None, profile=str(FIT_PROFILE), group_size=None, method=None, fmt=None)
    alloc = allocate(ckpt, adapter, base, CalibrationDir(calib), budget=10**12, runtime="llama.cpp")

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = load_source(model_dir).float().eval()
    ids, start, _ = tt.encode(tok, tt.split(table, "eval", items))
    sequences = ids.tolist()

    def logprobs() -> list:  # per sequence, as bench.llama_recipes.score takes them
        with torch.no_grad():
            return list(F.log_softmax(model(input_ids=ids).logits.double(), -1).numpy())

    ref = logprobs()
    params = dict(model.named_parameters())
    rows = []
    for u in alloc.units:
        layer, proj = u.entries[0].role.layer, u.entries[0].role.proj
        stacked = params[f"model.layers.{layer}.mlp.experts.{'down_proj' if proj == 'down' else 'gate_up_proj'}"]
        half = stacked.shape[1] // 2
        rows_of = slice(None) if proj == "down" else (slice(0, half) if proj == "gate" else slice(half, None))
        saved = stacked.detach().clone()
        for i, s in enumerate(u.schemes):
            if s.bits not in NARROW_BITS:
                continue
            fs = fit_group(s, stacked.shape[-1])[0]
            with torch.no_grad():
                for e in range(stacked.shape[0]):
                    stacked[e, rows_of] = quantize_rtn(saved[e, rows_of], fs.bits, fs.group_size, fs.sym).dequantize()
            scored = score(ref, logprobs(), sequences, start)
            with torch.no_grad():
                stacked.copy_(saved)
            rows.append({"unit": u.key, "layer": layer, "proj": proj, "scheme": scheme_label(s),
                         "objective_rtn": u.rtn_error[i], **scored})
            log(f"{u.key:<22} {scheme_label(s):<18} objective {u.rtn_error[i]:9.4g}  KL answer "
                f"{scored['kl_answer']:.3g}  all {scored['kl_all']:.3g}  accuracy {scored['accuracy']:.3f}")
    obj = [r["objective_rtn"] for r in rows]
    ratio = {f"layer {r['layer']} {r['proj']} {r['scheme']}": r["kl_all"] / r["objective_rtn"] for r in rows}
    return {"model": str(model_dir), "items": items, "rows": rows,
            "rank_correlation_kl_all": _rank_correlation(obj, [r["kl_all"] for r in rows]),
            "rank_correlation_kl_answer": _rank_correlation(obj, [r["kl_answer"] for r in rows]),
            "kl_all_per_objective": ratio,
            "kl_all_per_objective_spread": max(ratio.values()) / min(ratio.values())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.unit_sensitivity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=300, help="eval queries (default 300)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = p.parse_args(argv)
    import torch

    from quantkit.reference.trained_text import TRAINED_TEXT_DIR

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(tempfile.mkdtemp(prefix="quantkit-sensitivity-"))
    try:
        t0 = time.perf_counter()
        result = measure(TRAINED_TEXT_DIR, work, a.items)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update({"seconds": round(time.perf_counter() - t0, 1), "command": "python -m bench.unit_sensitivity",
                   "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")})
    print(f"rank correlation objective vs KL (all positions) {result['rank_correlation_kl_all']:.2f}, "
          f"(answer) {result['rank_correlation_kl_answer']:.2f}; KL per unit of objective varies "
          f"{result['kl_all_per_objective_spread']:.0f}x across units")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "unit-sensitivity.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {a.out / 'unit-sensitivity.json'}")


if __name__ == "__main__":
    main()
