"""The output-sensitivity pass's cost at the real ERNIE-4.5-VL-28B-A3B shapes (calibrate/sensitivity.py).

What runs, on bench/realshape.py's synthetic checkpoint (real shapes, the real ERNIE-VL class; one dense
and one MoE layer, small vocabulary) and its synthetic calibration states (`--tokens` tokens in samples
of `--seq-len`, a quarter of each sample an image span):
- each layer's calibration forward as `quantkit calibrate` runs it (`LayerStream.step`, statistics hooks);
- each layer's `layer_backward` (the layer rebuilt from the checkpoint, rerun with gradients on the
  saved inputs, backward from a random output gradient, the Fisher hooks and eigendecomposition): the
  sensitivity pass's per-layer work, load included as in the forward;
- the head's share: `head_gradients` (the pass's own head step) with the real tied 103424 x 2560 head
  (random weights) on the same tokens.
Projection for the default `--sensitivity-tokens` (calibrate/sensitivity.py DEFAULT_TOKENS): (DEFAULT_TOKENS / tokens) x
(27 x T_moe + T_dense + T_head), next to the calibration forward over the same tokens and the 4-bit quantize run
(bench/results/realshape-*.json).

    python -m bench.sensitivity_cost [--tokens 4096] [--threads 2] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from quantkit.calibrate.sensitivity import DEFAULT_TOKENS as DEFAULT_SENSITIVITY_TOKENS

RESULTS = Path(__file__).resolve().parent / "results"
REAL_VOCAB = 103424


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(tokens: int, seq_len: int, cache_root: Path) -> dict:
    from quantkit.adapters import adapter_for, real_config
    from quantkit.calibrate.runner import LayerStream
    from quantkit.calibrate.sensitivity import head_gradients, layer_backward
    from quantkit.checkpoint import Checkpoint

    from .allocate_cost import quantize_minutes
    from .realshape import REAL, ensure_checkpoint, synthetic_states

    path, _ = ensure_checkpoint(cache_root, 1, REAL, vocab_size=1024)
    ckpt = Checkpoint.open(path)  # no vision tower written: not open_model's full-config check
    adapter = adapter_for(ckpt.config)
    stream = LayerStream(ckpt, adapter)
    # the kernels prefix_model selects on CPU (no prefix model here; as bench/run_bench.py)
    stream.use_kernels({"_attn_implementation": "sdpa", "_experts_implementation": "grouped_mm"})
    runner = stream.runner
    states = synthetic_states(runner.text_config(), tokens, seq_len, 0.25)
    out: dict = {"tokens": tokens, "seq_len": seq_len, "samples": len(states), "layers": {}}
    for n, kind in ((0, "dense"), (1, "moe")):
        fwd = _seconds(lambda: stream.step(n, states))
        gen = torch.Generator().manual_seed(n)
        grads = [torch.randn(h.shape, generator=gen) * 1e-3 for h, _ in states]
        bwd = _seconds(lambda: layer_backward(runner, runner.build_layer(ckpt, n), n, [h for h, _ in states],
                                              [kw for _, kw in states], grads))
        out["layers"][kind] = {"calibration_forward_s": round(fwd, 2), "sensitivity_backward_s": round(bwd, 2)}
    hidden = adapter.shape.hidden_size
    head = torch.nn.Linear(hidden, REAL_VOCAB, bias=False)
    head.requires_grad_(False)
    # the pass's own head step (the final norm is per position and cheap next to the head: left out)
    out["head_s"] = round(_seconds(lambda: head_gradients(torch.nn.Identity(), head, [h for h, _ in states],
                                                         [None] * len(states))), 2)
    scale = DEFAULT_SENSITIVITY_TOKENS / tokens
    real = adapter_for(real_config("ERNIE-4.5-VL-28B-A3B")).shape
    n_moe, n_dense = len(real.moe_layers), real.num_layers - len(real.moe_layers)
    L = out["layers"]
    sens = scale * (n_moe * L["moe"]["sensitivity_backward_s"] + n_dense * L["dense"]["sensitivity_backward_s"]
                    + out["head_s"])
    fwd = scale * (n_moe * L["moe"]["calibration_forward_s"] + n_dense * L["dense"]["calibration_forward_s"])
    minutes, source = quantize_minutes()
    out.update({"bench_moe_layers": len(adapter.shape.moe_layers), "real_moe_layers": n_moe, "real_dense_layers": n_dense,
                "projected_sensitivity_minutes": round(sens / 60, 1),
                "projected_calibration_forward_minutes_same_tokens": round(fwd / 60, 1),
                "quantize_4bit_minutes": minutes, "quantize_source": source,
                "formula": f"({DEFAULT_SENSITIVITY_TOKENS} / {tokens}) x ({n_moe} x T_moe + {n_dense} x T_dense + T_head)"})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sensitivity_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--cache-root", default=os.environ.get("BENCH_CACHE", os.path.join(tempfile.gettempdir(), "quantkit-bench")))
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    result = measure(a.tokens, a.seq_len, Path(a.cache_root))
    result.update({"threads": a.threads, "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
                   "command": f"python -m bench.sensitivity_cost --tokens {a.tokens} --threads {a.threads}",
                   "load_1m": round(os.getloadavg()[0], 2)})
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "sensitivity-cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
