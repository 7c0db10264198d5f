"""Cost of `--resume`'s per-layer checkpoint at the real ERNIE-4.5-VL-28B-A3B shapes (issue 17).

After each finished layer, quantize on the fly saves (quantkit.runstate.RunProgress.save) the hidden
states entering the next layer (16384 calibration tokens x hidden 2560, fp32, with their per-sample
kwargs) and the shard writer's pending output tensors added since the last checkpoint (one layer's
packed 4-bit output: 64+64 experts x gate/up/down + attention + shared experts). This times exactly
that call on tensors of those sizes, through the product's own RunProgress and ShardWriter, and
prints JSON next to the layer time measured by `make bench` (bench/README.md: ~94 s per MoE layer).

    python -m bench.checkpoint_cost [--tokens 16384] [--samples 32] [--repeat 3] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from quantkit.checkpoint import ShardWriter
from quantkit.formats.gptq.packing import packed_nbytes
from quantkit.runstate import RunProgress

HIDDEN, HEAD_DIM = 2560, 128
# (out, in, count) of one real MoE layer's quantized matrices: 64 text experts [1536, 2560] gate/up and
# [2560, 1536] down, 64 vision experts [512, 2560] / [2560, 512], attention, 2 shared experts (3072 wide).
LAYER_MATRICES = ([(1536, 2560, 128), (2560, 1536, 64), (512, 2560, 128), (2560, 512, 64)]
                  + [(2560, 2560, 2), (512, 2560, 2), (3072, 2560, 2), (2560, 3072, 1)])


def layer_output_bytes(bits: int = 4, group: int = 128) -> int:
    return sum(n * packed_nbytes(o, i, bits, group) for o, i, n in LAYER_MATRICES)


def states(tokens: int, samples: int) -> list:
    per = tokens // samples
    return [(torch.randn(1, per, HIDDEN), {"position_ids": torch.arange(per).view(1, 1, per).expand(3, 1, per).clone(),
                                            "position_embeddings": (torch.randn(1, per, HEAD_DIM),
                                                                    torch.randn(1, per, HEAD_DIM)),
                                            "attention_mask": None})
            for _ in range(samples)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir under $TMPDIR)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="quantkit-ckpt-cost-", dir=args.dir))
    try:
        writer = ShardWriter(root / "result", max_shard_bytes=2 * 10**9)
        (root / "result").mkdir()
        (root / "state").mkdir()
        progress = RunProgress(root / "state", writer.state, writer.restore)
        tree = {"states": states(args.tokens, args.samples), "kernels": {"_attn_implementation": "sdpa"}}
        out_bytes = layer_output_bytes()
        times = []
        for step in range(args.repeat):
            # one layer's packed output arrives, then the checkpoint is taken (as after a real layer)
            writer.add(f"layer{step}.packed", torch.randint(-2**31, 2**31 - 1, (out_bytes // 4,), dtype=torch.int32))
            t0 = time.perf_counter()
            progress.save(step, {"fallbacks": []}, tree)
            times.append(time.perf_counter() - t0)
        state_bytes = sum(p.stat().st_size for p in (root / "state").iterdir())
        result = {"tokens": args.tokens, "hidden_state_bytes": args.tokens * HIDDEN * 4,
                  "layer_output_bytes": out_bytes, "checkpoint_seconds": [round(t, 3) for t in times],
                  "median_seconds": round(sorted(times)[len(times) // 2], 3),
                  "state_dir_bytes_after": state_bytes, "layer_seconds_reference": 94,
                  "share_of_layer": round(sorted(times)[len(times) // 2] / 94, 4)}
        print(json.dumps(result, indent=1))
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
